"""The silhouettes, by name: each one a builder (:mod:`.garments`, :mod:`.accessories`) whose drawing
plan is made once per (silhouette, category1, price bucket)."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from generator.render.accessories import ACCESSORIES
from generator.render.garments import GARMENTS
from generator.render.geometry import _Builder, _Plan

_SHAPES: dict[str, Callable[[_Builder], None]] = {**GARMENTS, **ACCESSORIES}
SILHOUETTES: tuple[str, ...] = tuple(_SHAPES)

# Small things are photographed closer, but not as close as a coat: size is part of the signal.
_SHAPE_SCALE = {"card_case": 0.8, "keyring": 0.85, "wallet": 0.9, "clutch": 0.95, "sunglasses": 0.95}


@lru_cache(maxsize=2048)
def _plan(silhouette: str, category1: str, trim_bucket: int) -> _Plan:
    b = _Builder(trim_bucket / 10, category1)
    _SHAPES[silhouette](b)
    return b.plan()

"""What the renderer draws alike: classes of drawings (silhouette, category1, trim bucket),
textures, patterns and colours, derived from the renderer's own tables and code paths."""
from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from generator.render import shapes, surfaces
from generator.render.geometry import TRIM_BUCKETS, _Builder
from generator.render.palette import _GAINS, _pattern_colours
from generator.render.studio import _pose, _product_palette, _transform
from generator.schema import Look
from generator.taxonomy import Taxonomy


COLOUR_ALIKE_LEVELS = 10.0
_PROBE_SIZE = 64          # texture / pattern tiles are compared at this size
_POSE_PROBES = 64         # variants sampled from render._pose to learn its light settings


@dataclass(frozen=True)
class Appearance:
    """Class ids of what the renderer draws: equal ids = identical (or, for colours, alike) drawings."""

    drawing: dict[tuple[str, str, int], int]   # (silhouette, category1, trim bucket) -> class
    texture: dict[str, int]                    # renderer texture name -> class
    pattern: dict[str, int]                    # renderer pattern name -> class
    colour: dict[str, int]                     # taxonomy colour name -> class
    colour_distance: dict[tuple[str, str], float] = field(default_factory=dict)  # alike pairs -> distance


# Fingerprints are pure functions of the builder / tile function and their arguments: cached by the
# function object, so a monkeypatched renderer table gets fresh ones.
_DRAWING_CACHE: dict[tuple, str] = {}
_PLAN_CACHE: dict[tuple, tuple] = {}
_TILE_CACHE: dict[tuple, str] = {}


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p)
        h.update(b"\x00")
    return h.hexdigest()


def _drawing_plan(builder, bucket: int, category1: str):
    """The builder's drawing plan; builders given the same starting state draw the same plan (today
    WOMAN and KIDS: only the transform tells them apart), so it is made once per state."""
    b = _Builder(bucket / 10, category1)
    state = (builder, tuple((k, v) for k, v in sorted(vars(b).items()) if isinstance(v, (bool, int, float, str))))
    if state not in _PLAN_CACHE:
        builder(b)
        plan = b.plan()
        _PLAN_CACHE[state] = (plan, repr(plan.ops).encode())
    return _PLAN_CACHE[state]


def _drawing_fingerprint(silhouette: str, category1: str, bucket: int) -> str:
    builder = shapes._SHAPES[silhouette]
    scale = shapes._SHAPE_SCALE.get(silhouette, 1.0)
    key = (builder, scale, category1, bucket)
    if key not in _DRAWING_CACHE:
        plan, ops = _drawing_plan(builder, bucket, category1)
        look = Look(category1=category1, category2="", category3="", silhouette=silhouette, colour="",
                    rgb=(128, 128, 128), material="", texture="smooth", pattern="none", trim=bucket / 10,
                    variant=0)
        # A fixed pose: what category1 changes in the pixels (size, width) shows in the transformed points.
        pts, _ = _transform(plan, look, _pose(0, 0), 336)
        _DRAWING_CACHE[key] = _digest(ops, np.round(pts, 4).tobytes())
    return _DRAWING_CACHE[key]


def _tile_fingerprint(fn, size: int) -> str:
    key = (fn, size)
    if key not in _TILE_CACHE:
        _TILE_CACHE[key] = _digest(np.ascontiguousarray(fn(size)).tobytes())
    return _TILE_CACHE[key]


def _classes(keys: Iterable, fingerprint) -> dict:
    ids: dict[Any, int] = {}
    out = {}
    for k in keys:
        out[k] = ids.setdefault(fingerprint(k), len(ids))
    return out


def _brightness_settings() -> list[float]:
    """The brightness values the renderer's poses draw from, learnt by sampling them."""
    return sorted({_pose(0, v).brightness for v in range(_POSE_PROBES)})


def colour_distance(rgb_a, rgb_b, brightness: list[float] | None = None) -> float:
    """RMS difference (0..255 levels) of two colours' product shading ramps, under the brightness
    settings that make them closest: what the renderer leaves a reader to tell them apart by."""
    brightness = brightness or _brightness_settings()

    def ramp(rgb, b):
        pal = np.frombuffer(_product_palette(tuple(int(c) for c in rgb), "none", 1.0, b), np.uint8)
        return pal.reshape(-1, _GAINS, 3)[0].astype(np.float64)

    ramps_a = [ramp(rgb_a, b) for b in brightness]
    ramps_b = [ramp(rgb_b, b) for b in brightness]
    return min(float(np.sqrt(((ra - rb) ** 2).sum(axis=1).mean())) for ra in ramps_a for rb in ramps_b)


def appearance(taxonomy: Taxonomy, *, colour_alike: float = COLOUR_ALIKE_LEVELS) -> Appearance:
    """The renderer's equivalence classes for what ``taxonomy`` can draw."""
    sold: dict[str, set[str]] = defaultdict(set)          # silhouette -> category1 codes it is drawn for
    for c2 in taxonomy.category2:
        for c3 in c2.category3:
            for item in c3.items:
                sold[item.silhouette].update(c1 for c1 in c3.category1 if c1 in c2.weights)
    cells = [(s, c1, k) for s in sorted(sold) for c1 in sorted(sold[s]) for k in range(TRIM_BUCKETS)]
    drawing = _classes(cells, lambda cell: _drawing_fingerprint(*cell))

    textures = sorted({m.texture for m in taxonomy.materials})
    texture = _classes(textures, lambda t: _tile_fingerprint(surfaces._TEXTURES[t], _PROBE_SIZE))
    rgbs = sorted({c.rgb for c in taxonomy.colours})
    patterns = sorted({p.render for p in taxonomy.patterns})
    pattern = _classes(patterns, lambda p: _digest(_tile_fingerprint(surfaces._PATTERNS[p], _PROBE_SIZE).encode(),
                                                   repr([_pattern_colours(p, rgb) for rgb in rgbs]).encode()))

    # Colours: alike pairs joined transitively (union-find), in the taxonomy's order.
    brightness = _brightness_settings()
    names = [c.name for c in taxonomy.colours]
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    alike = {}
    for a, b in itertools.combinations(taxonomy.colours, 2):
        d = colour_distance(a.rgb, b.rgb, brightness)
        if d < colour_alike:
            alike[(a.name, b.name)] = round(d, 2)
            parent[root(b.name)] = root(a.name)
    colour = _classes(names, root)
    return Appearance(drawing=drawing, texture=texture, pattern=pattern, colour=colour, colour_distance=alike)


def _trim_bucket_probabilities() -> tuple[float, ...]:
    """P(bucket) of a row's trim: the catalog draws ``Look.trim`` uniform on (0, 1), independent of
    every label, and ``render.geometry.trim_bucket`` rounds it to tenths (so 0 and 1 get half a tenth each)."""
    step = 1 / (TRIM_BUCKETS - 1)
    return tuple(min(1.0, (k + 0.5) * step) - max(0.0, (k - 0.5) * step) for k in range(TRIM_BUCKETS))


def _untrimmed_classes(look: Appearance) -> dict[tuple[str, str], int]:
    """(silhouette, category1) -> class: pairs joined when some trim of each is drawn the same."""
    parent: dict[Any, Any] = {}

    def root(n):
        parent.setdefault(n, n)
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for (s, c1, _), d in look.drawing.items():
        parent[root(("pair", s, c1))] = root(("drawing", d))
    pairs = sorted({(s, c1) for s, c1, _ in look.drawing})
    return _classes(pairs, lambda p: root(("pair", *p)))

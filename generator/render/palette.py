"""The palette image's index layout, and the colours a product is drawn in.

A picture is built as an 8-bit *index* image and coloured in one palette lookup (see
:mod:`generator.render`): indices 0..95 are the studio, 96..255 the product's 4 colours x 40 shading
levels. This module fixes that layout and derives a product's pattern and trim colours from its RGB.
"""
from __future__ import annotations

from functools import lru_cache


# Index layout of the palette image.
_WALL0, _FLOOR0, _PROD0 = 0, 48, 96
_EDGE = 0            # reserved: studio ramps never go this dark, so index 0 is the strap outline colour
_RAMP = 48           # levels per studio ramp
_GAINS = 40          # shading levels per product colour
_CLASSES = 4         # product colours: base + up to 3 pattern colours
_M_LO, _M_SPAN = 0.62, 0.60  # shading multiplier of gain level g: _M_LO + _M_SPAN * g / (_GAINS - 1)


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3))


_BLACK, _WHITE = (28, 27, 26), (242, 240, 234)
_CAMEL, _RED, _NAVY = (193, 155, 107), (168, 32, 42), (34, 42, 72)


def _pattern_colours(pattern: str, rgb) -> list:
    dark = _lum(rgb) < 90
    contrast = _WHITE if _lum(rgb) < 140 else _BLACK
    if pattern == "check":
        return [_CAMEL if dark else _BLACK, _WHITE, _RED]
    if pattern == "stripe":
        return [_WHITE if _lum(rgb) < 150 else _NAVY, _RED, _RED]
    if pattern == "monogram":
        tone = _mix(rgb, _WHITE, 0.35) if dark else _mix(rgb, _BLACK, 0.4)
        return [tone, (198, 160, 82), tone]
    if pattern == "floral":
        return [(236, 150, 172) if _lum(rgb) < 170 else (196, 70, 96), (74, 128, 76), (244, 204, 80)]
    return [contrast, contrast, contrast]


@lru_cache(maxsize=4096)
def _detail_colours(rgb: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    """Flat trim colours derived from the product colour (cached: callers must not mutate it)."""
    lum = _lum(rgb)
    dark = _mix(rgb, (0, 0, 0), 0.35 if lum > 60 else 0.0)
    if lum <= 60:
        dark = _mix(rgb, (255, 255, 255), 0.12)
    return {
        "base": tuple(rgb), "dark": dark, "darker": _mix(rgb, (0, 0, 0), 0.6) if lum > 45 else (90, 90, 92),
        "light": _mix(rgb, (255, 255, 255), 0.45), "stitch": _mix(rgb, (255, 255, 255), 0.5) if lum < 150
        else _mix(rgb, (0, 0, 0), 0.45), "lapel": _mix(rgb, (0, 0, 0), 0.12),
        "gold": (204, 164, 78), "silver": (196, 198, 204), "black": _BLACK, "white": _WHITE,
        "contrast": _WHITE if lum < 140 else _BLACK, "accent": _RED if abs(rgb[0] - 168) > 60 or lum > 120
        else _NAVY, "lens": (40, 42, 48), "sole": (238, 236, 230) if lum < 200 else (60, 58, 56),
        "laces": _WHITE if lum < 150 else _BLACK, "wood": (120, 78, 44), "label": (246, 242, 232),
    }

"""Procedural product photos: one ``Look`` in, one studio-style RGB image out.

The images exist so a fine-tuned VLM can read the row's metadata back from pixels alone, so every
field of the ``Look`` leaves a visible trace: the silhouette draws the outline, ``rgb`` is the main
fill, ``texture`` and ``pattern`` are the surface, ``price_tier`` adds trim and hardware, and only
``variant`` + ``seed`` move the background, pose and light (so the background never predicts the
category).

Speed is the design constraint (~1 ms for a 336 px image on one core). The whole picture is built
as an 8-bit *index* image and coloured in one palette lookup:

* indices 0..95 are the studio (wall ramp 0..47, floor ramp 48..95; shadows subtract indices),
* indices 96..255 are the product: 4 pattern colours x 40 shading levels.

Texture and pattern are therefore precomputed once per size as an index tile (cached); a render
only draws the silhouette mask, pastes the tile through it, builds a 256-entry palette from the
look's colours and converts to RGB. Trim (seams, buttons, buckles, soles) is drawn afterwards with
flat colours. Geometry is described once per (silhouette, category1, price bucket) in unit
coordinates (cached) and transformed to pixels with one small numpy product per image.
"""
from __future__ import annotations

import hashlib
import io
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from generator.schema import Look

# --------------------------------------------------------------------------------------------------
# Index layout of the palette image.
_WALL0, _FLOOR0, _PROD0 = 0, 48, 96
_EDGE = 0            # reserved: studio ramps never go this dark, so index 0 is the strap outline colour
_RAMP = 48           # levels per studio ramp
_GAINS = 40          # shading levels per product colour
_CLASSES = 4         # product colours: base + up to 3 pattern colours
_M_LO, _M_SPAN = 0.62, 0.60  # shading multiplier of gain level g: _M_LO + _M_SPAN * g / (_GAINS - 1)


# ==================================================================================================
# Geometry: silhouettes are described in unit coordinates (x, y in [-1, 1], y down, floor near
# y = 0.95) as a list of operations on a shared point array.
# ==================================================================================================
Pts = list[tuple[float, float]]


def _mirror(pts: Pts) -> Pts:
    return [(-x, y) for x, y in reversed(pts)]


def _sym(left: Pts) -> Pts:
    """Closed symmetric outline from its left half (listed top-centre -> bottom-centre)."""
    return left + _mirror(left)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12) -> Pts:
    """Points on an ellipse from angle a0 to a1 (degrees, 0 = +x, 90 = down)."""
    out = []
    for i in range(n + 1):
        a = math.radians(a0 + (a1 - a0) * i / n)
        out.append((cx + rx * math.cos(a), cy + ry * math.sin(a)))
    return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> Pts:
    return _arc(cx, cy, rx, ry, 0, 360, n)[:-1]


def _rrect(x0: float, y0: float, x1: float, y1: float, r: float, n: int = 3) -> Pts:
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    return (_arc(x1 - r, y0 + r, r, r, -90, 0, n) + _arc(x1 - r, y1 - r, r, r, 0, 90, n)
            + _arc(x0 + r, y1 - r, r, r, 90, 180, n) + _arc(x0 + r, y0 + r, r, r, 180, 270, n))


def _quad(p0, p1, p2, n: int = 8) -> Pts:
    """Quadratic Bezier from p0 to p2 pulled towards p1."""
    out = []
    for i in range(n + 1):
        t = i / n
        a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


def _diag_segments(x0: float, y0: float, x1: float, y1: float, step: float) -> list[Pts]:
    """Both diagonal families of 45-degree lines clipped to a rectangle: quilting stitches."""
    segs: list[Pts] = []
    h = y1 - y0
    k = x0 - h
    while k < x1:
        # Down-right line through (k, y0) and up-right line through (k, y1), both spanning the height.
        for (ax, ay), (bx, by) in (((k, y0), (k + h, y1)), ((k, y1), (k + h, y0))):
            slope = (by - ay) / (bx - ax)
            if ax < x0:
                ax, ay = x0, ay + slope * (x0 - ax)
            if bx > x1:
                bx, by = x1, ay + slope * (x1 - ax)
            if bx > ax:
                segs.append([(ax, ay), (bx, by)])
        k += step
    return segs


@dataclass(frozen=True)
class _Plan:
    ops: tuple            # (kind, start, end, params): points[start:end] belong to the op
    points: np.ndarray    # (N, 2) unit coordinates
    body_end: int         # ops[:body_end] build the mask


class _Builder:
    """Collects a silhouette's operations; `tier` is the price bucket in [0, 1]."""

    def __init__(self, tier: float, cat1: str):
        self.t = tier
        self.man = cat1 == "MAN"   # menswear cuts a little wider; kids' sizes are scaled at render time
        self.pts: Pts = []
        self.body_ops: list = []
        self.detail_ops: list = []
        # Hardware gets richer with price: tonal -> silver -> gold.
        self.hw = "gold" if tier >= 0.6 else ("silver" if tier >= 0.3 else "darker")

    def _op(self, bucket: list, kind: str, pts: Pts, *params) -> None:
        start = len(self.pts)
        self.pts.extend(pts)
        bucket.append((kind, start, len(self.pts), params))

    # -- mask (textured product surface) ------------------------------------------------------
    def body(self, pts: Pts, outline: bool = True) -> None:
        self._op(self.body_ops, "poly", pts)
        if outline:
            self._op(self.detail_ops, "outline", pts)

    def cut(self, pts: Pts) -> None:
        """Punch a hole (bag handles, belt loop) back to the background."""
        self._op(self.body_ops, "cut", pts)
        self._op(self.detail_ops, "outline", pts)

    def strap(self, pts: Pts, w: float, outline: bool = True) -> None:
        """A thick textured stroke (handles, straps, chains' leather)."""
        if outline:
            self._op(self.body_ops, "edge", pts, w)
        self._op(self.body_ops, "stroke", pts, w)

    # -- flat-coloured trim ----------------------------------------------------------------------
    def line(self, pts: Pts, w: float, tone: str = "dark") -> None:
        self._op(self.detail_ops, "line", pts, w, tone)

    def fill(self, pts: Pts, tone: str, outline: str | None = None) -> None:
        self._op(self.detail_ops, "fill", pts, tone, outline)

    def dot(self, x: float, y: float, r: float, tone: str, outline: str | None = None) -> None:
        self._op(self.detail_ops, "dot", [(x, y)], r, tone, outline)

    def ring(self, x: float, y: float, r: float, w: float, tone: str) -> None:
        self._op(self.detail_ops, "ring", [(x, y)], r, w, tone)

    def stitch(self, pts: Pts, min_tier: float = 0.35) -> None:
        """Top-stitching: only pricier pieces get it."""
        if self.t >= min_tier:
            self.line(pts, 0.008, "stitch")

    def button(self, x: float, y: float, r: float = 0.035) -> None:
        r *= 1.0 + 0.35 * self.t
        self.dot(x, y, r, self.hw, "darker")
        if self.t >= 0.6:
            self.dot(x - r * 0.3, y - r * 0.3, r * 0.3, "white")

    def plan(self) -> _Plan:
        return _Plan(tuple(self.body_ops) + tuple(self.detail_ops), np.asarray(self.pts, dtype=np.float64),
                     len(self.body_ops))


# ---- outerwear & tops ----------------------------------------------------------------------------

def _sleeves(b: _Builder, shoulder: tuple, cuff_y: float, cuff_w: float, spread: float,
             cuff: bool = True, rib: bool = False) -> None:
    sx, sy = shoulder
    for m in (1, -1):
        outer = (m * (sx + spread), cuff_y)
        pts = [(m * sx, sy), (m * (sx + 0.1 + spread * 0.4), sy + 0.08), (outer[0] + m * 0.02, cuff_y),
               (outer[0] - m * cuff_w, cuff_y + 0.02), (m * (sx - 0.03), sy + 0.36)]
        b.body(pts)
        if cuff or rib:
            y = cuff_y - 0.09
            b.line([(outer[0] - m * (cuff_w - 0.01), y + 0.02), (outer[0] + m * 0.015, y)], 0.012)
            if rib:
                for k in range(1, 6):
                    xk = outer[0] + m * 0.02 - m * cuff_w * k / 6
                    b.line([(xk, y + 0.01), (xk, cuff_y)], 0.006)


def _trench_coat(b: _Builder) -> None:
    w = 1.0 if b.man else 0.92
    left = [(0, -0.86), (-0.16, -0.9), (-0.42 * w, -0.8), (-0.40 * w, -0.45), (-0.33 * w, -0.06),
            (-0.48 * w, 0.93), (0, 0.95)]
    _sleeves(b, (0.42 * w, -0.8), 0.30, 0.17, 0.14)
    b.body(_sym(left))
    # Wide lapels and collar: the trench's signature.
    for m in (1, -1):
        b.line([(m * 0.16, -0.9), (m * 0.3, -0.72), (m * 0.2, -0.6), (m * 0.04, -0.34)], 0.014)
        b.line([(m * 0.16, -0.9), (m * 0.06, -0.7)], 0.012)
    b.line([(0.04, -0.34), (0.1, 0.93)], 0.012)
    # Belt with buckle.
    bw = 0.07
    b.fill([(-0.36 * w, -0.1), (0.36 * w, -0.1), (0.36 * w, -0.1 + bw), (-0.36 * w, -0.1 + bw)], "dark", "darker")
    b.fill(_rrect(-0.08, -0.13, 0.06, -0.01, 0.01), "none", b.hw if b.t >= 0.3 else "darker")
    b.line([(0.06, -0.06), (0.02, 0.3)], 0.05, "dark")   # belt end hanging
    rows = 3 if b.t < 0.5 else 4
    for r in range(rows):
        y = -0.45 + r * 0.17 if r < 2 else 0.05 + (r - 2) * 0.17
        for x in (-0.12, 0.2):
            b.button(x, y)
    if b.t >= 0.5:  # storm flap and epaulettes
        b.line([(0.32 * w, -0.78), (0.22, -0.58), (0.36 * w, -0.45)], 0.012)
        for m in (1, -1):
            b.fill([(m * 0.2, -0.86), (m * 0.42 * w, -0.79), (m * 0.41 * w, -0.74), (m * 0.2, -0.8)], "dark")
            b.button(m * 0.23, -0.83, 0.02)
    if b.t >= 0.7:  # cuff straps
        cuff = 0.42 * w + 0.14
        for m in (1, -1):
            b.line([(m * (cuff - 0.13), 0.22), (m * cuff, 0.21)], 0.035, "dark")
            b.dot(m * (cuff - 0.03), 0.21, 0.018, b.hw)
    b.stitch([(-0.46 * w, 0.87), (0.46 * w, 0.87)], 0.3)


def _quilted_jacket(b: _Builder) -> None:
    w = 1.0 if b.man else 0.94
    left = [(0, -0.72), (-0.16, -0.76), (-0.46 * w, -0.64), (-0.45 * w, -0.3), (-0.44 * w, 0.6), (0, 0.62)]
    _sleeves(b, (0.46 * w, -0.64), 0.56, 0.17, 0.12)
    b.body(_sym(left))
    for seg in _diag_segments(-0.42 * w, -0.58, 0.42 * w, 0.58, 0.16 if b.t < 0.5 else 0.12):
        b.line(seg, 0.008, "stitch" if b.t >= 0.35 else "dark")
    b.fill([(-0.17, -0.77), (0.17, -0.77), (0.2, -0.66), (0, -0.58), (-0.2, -0.66)], "darker")  # collar
    b.line([(0, -0.6), (0, 0.62)], 0.014, "darker")
    for k in range(5 + (1 if b.t >= 0.5 else 0)):
        b.button(0.0, -0.48 + k * 0.2, 0.028)
    b.fill([(-0.44 * w, 0.52), (0.44 * w, 0.52), (0.44 * w, 0.6), (-0.44 * w, 0.6)], "darker")  # piping hem
    if b.t >= 0.5:
        for m in (1, -1):
            b.line([(m * 0.18, 0.18), (m * 0.34, 0.18)], 0.03, "darker")


def _puffer_jacket(b: _Builder) -> None:
    w = 1.0 if b.man else 0.94
    ys = [-0.6 + 0.22 * k for k in range(6)]
    left = [(0, -0.74), (-0.18, -0.8), (-0.5 * w, -0.64)]
    for y in ys:
        left += [(-0.55 * w, y + 0.11), (-0.5 * w, y + 0.22)]
    left += [(0, 0.66)]
    for m in (1, -1):  # puffed sleeves: baffles as a zig-zag edge
        sl = [(m * 0.5 * w, -0.64), (m * 0.68, -0.4)]
        for k in range(5):
            sl.append((m * (0.76 + 0.04 * (k % 2)), -0.3 + 0.16 * k))
        sl += [(m * 0.6, 0.5), (m * 0.5, -0.2)]
        b.body(sl)
        for k in range(5):
            y = -0.3 + 0.16 * k
            b.line([(m * 0.58, y + 0.05), (m * 0.76, y)], 0.012, "dark")
    b.body(_sym(left))
    for y in ys[1:]:
        b.line(_quad((-0.5 * w, y), (0, y + 0.05), (0.5 * w, y)), 0.014, "dark")
    # High collar / hood.
    b.body([(-0.2, -0.8), (-0.22, -0.96), (0.22, -0.96), (0.2, -0.8), (0, -0.74)])
    b.line([(0, -0.96), (0, 0.66)], 0.018, b.hw)
    b.dot(0.03, -0.9, 0.03, b.hw)
    if b.t >= 0.6:
        b.fill(_rrect(0.22, -0.45, 0.36, -0.38, 0.02), "gold")  # logo plate


def _blazer(b: _Builder) -> None:
    w = 1.0 if b.man else 0.92
    left = [(0, -0.3), (-0.15, -0.86), (-0.44 * w, -0.76), (-0.42 * w, -0.4), (-0.36 * w, 0.0),
            (-0.42 * w, 0.6), (-0.1, 0.62), (0, 0.45)]
    _sleeves(b, (0.44 * w, -0.76), 0.55, 0.16, 0.1)
    b.body(_sym(left))
    b.fill([(-0.14, -0.86), (0.14, -0.86), (0, -0.3)], "white", "darker")      # shirt in the V
    b.fill([(-0.05, -0.84), (0.05, -0.84), (0.02, -0.45), (0, -0.4), (-0.02, -0.45)], "darker")  # tie
    for m in (1, -1):  # lapels
        b.fill([(m * 0.14, -0.86), (m * 0.3, -0.6), (m * 0.22, -0.58), (m * 0.26, -0.5), (0, -0.1),
                (m * 0.02, -0.3)], "lapel", "darker")
        b.line([(m * 0.14, 0.28), (m * 0.32, 0.28)], 0.014, "darker")  # pocket flaps
    b.line([(0, -0.1), (0, 0.45)], 0.01, "darker")
    for k in range(1 if b.t < 0.5 else 2):
        b.button(0.04, -0.02 + 0.16 * k)
    b.line([(-0.32, -0.42), (-0.16, -0.44)], 0.014, "darker")  # breast pocket
    if b.t >= 0.6:
        b.fill([(-0.3, -0.43), (-0.26, -0.52), (-0.22, -0.48), (-0.18, -0.53), (-0.17, -0.44)], "contrast")
        for m in (1, -1):
            for k in range(3):
                b.dot(m * (0.44 * w + 0.02 * k), 0.47 + 0.01 * k, 0.016, b.hw)
    for m in (1, -1):   # lapel edge stitching
        b.stitch([(m * 0.3, -0.6), (m * 0.06, -0.12)], 0.4)


def _shirt(b: _Builder) -> None:
    w = 1.0 if b.man else 0.92
    left = [(0, -0.7), (-0.14, -0.76), (-0.42 * w, -0.66), (-0.4 * w, -0.3), (-0.38 * w, 0.5),
            (-0.2, 0.56), (0, 0.62)]
    _sleeves(b, (0.42 * w, -0.66), 0.5, 0.15, 0.1, cuff=True)
    b.body(_sym(left))
    for m in (1, -1):  # pointed collar
        b.fill([(0, -0.66), (m * 0.15, -0.77), (m * 0.18, -0.66), (m * 0.1, -0.54)], "base", "darker")
    b.line([(-0.04, -0.6), (-0.04, 0.6)], 0.01, "dark")
    b.line([(0.04, -0.6), (0.04, 0.6)], 0.01, "dark")
    for k in range(6):
        b.dot(0.0, -0.52 + k * 0.2, 0.018 + 0.008 * b.t, "light" if b.t < 0.6 else "white", "dark")
    if b.t >= 0.5:
        b.fill(_rrect(-0.33, -0.38, -0.15, -0.18, 0.02), "none", "dark")  # chest pocket
    if b.t >= 0.75:
        b.dot(-0.24, -0.3, 0.03, "accent")


def _polo(b: _Builder) -> None:
    w = 1.0 if b.man else 0.92
    left = [(0, -0.66), (-0.14, -0.72), (-0.42 * w, -0.62), (-0.4 * w, -0.3), (-0.4 * w, 0.55), (0, 0.56)]
    for m in (1, -1):
        b.body([(m * 0.42 * w, -0.62), (m * 0.66, -0.38), (m * 0.56, -0.16), (m * 0.4 * w, -0.26)])
        b.line([(m * 0.645, -0.33), (m * 0.55, -0.2)], 0.03, "dark")   # ribbed sleeve band
    b.body(_sym(left))
    for m in (1, -1):
        b.fill([(0, -0.62), (m * 0.14, -0.72), (m * 0.2, -0.58), (m * 0.04, -0.5)], "base", "darker")
    b.fill([(-0.04, -0.6), (0.04, -0.6), (0.04, -0.3), (-0.04, -0.3)], "none", "darker")
    for k in range(2 + (1 if b.t >= 0.4 else 0)):
        b.dot(0.0, -0.55 + 0.09 * k, 0.016 + 0.006 * b.t, "light", "dark")
    b.line([(-0.4 * w, 0.5), (0.4 * w, 0.5)], 0.02, "dark")
    if b.t >= 0.5:
        b.dot(-0.25, -0.38, 0.03 + 0.02 * b.t, "accent")   # embroidered emblem


def _tshirt(b: _Builder) -> None:
    w = 1.0 if b.man else 0.92
    left = [(0, -0.62), (-0.16, -0.7), (-0.44 * w, -0.6), (-0.42 * w, -0.3), (-0.42 * w, 0.6), (0, 0.6)]
    for m in (1, -1):
        b.body([(m * 0.44 * w, -0.6), (m * 0.74, -0.36), (m * 0.62, -0.16), (m * 0.42 * w, -0.28)])
    b.body(_sym(left))
    b.line(_quad((-0.16, -0.7), (0, -0.5), (0.16, -0.7)), 0.035, "dark")   # crew neck
    if b.t >= 0.4:
        s = 0.12 + 0.12 * b.t
        b.fill(_rrect(-s, -0.3, s, -0.3 + 1.2 * s, 0.03), "contrast")    # printed graphic
        b.fill(_rrect(-s * 0.6, -0.3 + 0.3 * s, s * 0.6, -0.3 + 0.9 * s, 0.02), "accent")


def _knit_top(b: _Builder, cardigan: bool) -> None:
    w = 1.0 if b.man else 0.94
    left = [(0, -0.68), (-0.16, -0.74), (-0.44 * w, -0.62), (-0.43 * w, -0.3), (-0.42 * w, 0.6), (0, 0.62)]
    _sleeves(b, (0.44 * w, -0.62), 0.56, 0.15, 0.1, cuff=False, rib=True)
    b.body(_sym(left))
    # Ribbed hem band: the knitwear tell.
    b.fill([(-0.42 * w, 0.48), (0.42 * w, 0.48), (0.42 * w, 0.6), (-0.42 * w, 0.6)], "dark")
    for k in range(1, 14):
        x = -0.42 * w + 0.84 * w * k / 14
        b.line([(x, 0.49), (x, 0.6)], 0.007, "darker")
    if cardigan:
        b.line([(-0.16, -0.74), (-0.02, -0.2), (-0.02, 0.62)], 0.03, "dark")
        b.line([(0.16, -0.74), (0.02, -0.2), (0.02, 0.62)], 0.03, "dark")
        for k in range(5):
            b.button(0.0, -0.15 + k * 0.15, 0.026)
        if b.t >= 0.5:
            for m in (1, -1):   # patch pockets
                b.fill(_rrect(m * 0.14 - 0.09, 0.15, m * 0.14 + 0.09, 0.38, 0.02), "none", "dark")
    else:
        b.line(_quad((-0.16, -0.74), (0, -0.52), (0.16, -0.74)), 0.05, "dark")
        if b.t >= 0.5:  # cable knit panel
            for m in (-0.18, 0.18):
                for k in range(6):
                    y = -0.4 + k * 0.14
                    b.line([(m - 0.05, y), (m + 0.05, y + 0.07), (m - 0.05, y + 0.14)], 0.014, "light")


def _sweater(b: _Builder) -> None:
    _knit_top(b, cardigan=False)


def _cardigan(b: _Builder) -> None:
    _knit_top(b, cardigan=True)


def _dress(b: _Builder) -> None:
    left = [(0, -0.7), (-0.12, -0.84), (-0.2, -0.84), (-0.26, -0.62), (-0.22, -0.2), (-0.3, 0.1),
            (-0.56, 0.92), (0, 0.95)]
    b.body(_sym(left))
    for m in (1, -1):  # cap sleeves
        b.body([(m * 0.2, -0.84), (m * 0.36, -0.7), (m * 0.3, -0.56), (m * 0.25, -0.6)])
    b.line(_quad((-0.12, -0.84), (0, -0.68), (0.12, -0.84)), 0.02, "dark")
    b.fill([(-0.23, -0.24), (0.23, -0.24), (0.23, -0.16), (-0.23, -0.16)], "dark", "darker")  # waist
    if b.t >= 0.4:
        for k in range(-3, 4):
            b.line([(k * 0.06, -0.16), (k * 0.15, 0.93)], 0.008, "dark")   # pleats
    if b.t >= 0.6:
        b.fill(_rrect(-0.05, -0.25, 0.05, -0.15, 0.01), "none", b.hw)
        for k in range(3):
            b.button(0.0, -0.62 + k * 0.12, 0.022)


def _skirt(b: _Builder) -> None:
    left = [(0, -0.62), (-0.34, -0.62), (-0.36, -0.48), (-0.6, 0.62), (0, 0.66)]
    b.body(_sym(left))
    b.fill([(-0.34, -0.62), (0.34, -0.62), (0.35, -0.5), (-0.35, -0.5)], "dark", "darker")
    n = 5 if b.t < 0.5 else 9
    for k in range(1, n):
        f = -1 + 2 * k / n
        b.line([(f * 0.34, -0.5), (f * 0.6, 0.62)], 0.008, "darker")
    if b.t >= 0.6:  # kilt pin
        b.line([(0.3, 0.2), (0.36, 0.5)], 0.02, b.hw)
        b.dot(0.33, 0.35, 0.025, b.hw)


def _legs(b: _Builder, hem: float, spread: float, crotch: float) -> None:
    left = [(0, -0.86), (-0.36, -0.86), (-0.38, -0.5), (-0.32 - spread, hem), (-0.04, hem + 0.01),
            (0, crotch)]
    b.body(_sym(left))
    b.fill([(-0.36, -0.86), (0.36, -0.86), (0.365, -0.78), (-0.365, -0.78)], "dark", "darker")
    b.line([(0.02, -0.78), (0.03, -0.5)], 0.01, "darker")   # fly
    for m in (1, -1):
        b.line([(m * 0.25, -0.78), (m * 0.36, -0.55)], 0.01, "darker")   # slant pockets
        for x in (0.12, 0.3):
            b.line([(m * x, -0.88), (m * x, -0.76)], 0.02, "darker")        # belt loops
    b.dot(0.0, -0.82, 0.022, b.hw)


def _trousers(b: _Builder) -> None:
    _legs(b, 0.94, 0.0, -0.3)
    for m in (1, -1):
        b.line([(m * 0.19, -0.6), (m * 0.17, 0.94)], 0.007, "dark")   # pressed crease
    if b.t >= 0.5:
        for m in (1, -1):
            b.line([(m * 0.33, 0.86), (m * 0.05, 0.87)], 0.012, "darker")   # turn-ups
    b.stitch([(-0.37, -0.74), (-0.35, 0.9)], 0.5)


def _shorts(b: _Builder) -> None:
    _legs(b, 0.32, 0.12, -0.25)
    for m in (1, -1):
        b.line([(m * 0.43, 0.22), (m * 0.05, 0.23)], 0.014, "darker")   # turn-ups
    b.stitch([(-0.37, -0.74), (-0.42, 0.2)], 0.5)


def _scarf(b: _Builder) -> None:
    # Draped over an invisible rail: two hanging panels and a fold.
    b.body([(-0.36, -0.7), (0.02, -0.7), (0.0, 0.72), (-0.34, 0.74)])
    b.body([(-0.02, -0.72), (0.34, -0.78), (0.38, 0.5), (0.02, 0.52)])
    b.body([(-0.38, -0.84), (0.36, -0.9), (0.36, -0.74), (-0.38, -0.68)])
    n = 9 if b.t < 0.5 else 14
    flen = 0.12 + 0.08 * b.t
    for k in range(n + 1):  # fringe
        x = -0.34 + 0.34 * k / n
        b.line([(x, 0.73), (x + 0.005, 0.73 + flen)], 0.012, "base")
        x = 0.02 + 0.36 * k / n
        b.line([(x, 0.51), (x, 0.51 + flen)], 0.012, "base")
    if b.t >= 0.5:
        b.fill(_rrect(0.12, 0.25, 0.28, 0.33, 0.01), "white", "dark")   # woven label


def _bag_handle(b: _Builder, x0: float, x1: float, y: float, top: float, w: float) -> None:
    b.strap(_quad((x0, y), ((x0 + x1) / 2, top * 1.3 - y * 0.3), (x1, y), 10), w)


def _tote(b: _Builder) -> None:
    _bag_handle(b, -0.32, 0.32, -0.3, -0.95, 0.06)
    b.body([(-0.62, -0.32), (0.62, -0.32), (0.55, 0.86), (-0.55, 0.86)])
    if b.t >= 0.3:  # leather trim band
        b.fill([(-0.62, -0.32), (0.62, -0.32), (0.615, -0.22), (-0.615, -0.22)], "darker")
    for m in (1, -1):
        b.dot(m * 0.32, -0.27, 0.035, b.hw)
    if b.t >= 0.6:
        b.fill(_rrect(-0.14, 0.05, 0.14, 0.16, 0.02), "gold", "darker")   # logo plate
        for x in (-0.45, 0.45):
            b.dot(x, 0.84, 0.03, "gold")
    b.stitch([(-0.6, -0.2), (0.6, -0.2)], 0.35)
    b.stitch([(-0.56, 0.78), (0.56, 0.78)], 0.35)


def _shoulder_bag(b: _Builder) -> None:
    chain = b.t >= 0.6
    strap = _quad((-0.5, -0.05), (0, -1.35), (0.5, -0.05), 14)
    if chain:   # a gold line threaded through open links reads as a chain at any size
        b.line(strap, 0.02, "gold")
        for x, y in strap[1:-1]:
            b.ring(x, y, 0.045, 0.018, "gold")
    else:
        b.strap(strap, 0.045)
    b.body(_rrect(-0.58, -0.1, 0.58, 0.68, 0.12))
    b.line(_quad((-0.56, -0.08), (-0.56, 0.42), (0, 0.42)) + _quad((0, 0.42), (0.56, 0.42), (0.56, -0.08))[1:],
           0.016, "darker")   # flap edge
    b.fill(_rrect(-0.08, 0.34, 0.08, 0.5, 0.03), b.hw, "darker")   # clasp
    if b.t >= 0.4:
        b.stitch(_quad((-0.5, -0.06), (-0.5, 0.34), (0, 0.34)) + _quad((0, 0.34), (0.5, 0.34), (0.5, -0.06))[1:], 0.4)


def _crossbody(b: _Builder) -> None:
    # Boxy camera bag with a long thin strap running off to the top-left.
    b.strap([(0.34, 0.1), (0.1, -0.6), (-0.3, -0.95)], 0.03)
    b.strap([(-0.34, 0.1), (-0.4, -0.4), (-0.3, -0.95)], 0.03)
    b.body(_rrect(-0.4, 0.05, 0.4, 0.72, 0.08))
    b.line([(-0.34, 0.16), (0.34, 0.16)], 0.014, b.hw)   # zip
    b.fill(_rrect(0.22, 0.13, 0.3, 0.26, 0.02), b.hw, "darker")
    b.fill(_rrect(-0.3, 0.34, 0.3, 0.64, 0.05), "none", "darker")   # front pocket
    for m in (1, -1):
        b.dot(m * 0.35, 0.1, 0.03, b.hw)
    if b.t >= 0.6:
        b.fill(_rrect(-0.1, 0.42, 0.1, 0.5, 0.02), "gold")


def _backpack(b: _Builder) -> None:
    b.strap(_quad((-0.12, -0.72), (0, -0.98), (0.12, -0.72)), 0.04)
    for m in (1, -1):  # shoulder straps peeking at the sides
        b.strap([(m * 0.34, -0.6), (m * 0.52, -0.1), (m * 0.46, 0.7)], 0.07)
    b.body(_arc(0, -0.42, 0.44, 0.34, 180, 360, 10) + [(0.46, 0.9), (-0.46, 0.9)])
    b.line(_arc(0, -0.38, 0.38, 0.28, 185, 355, 10), 0.014, b.hw)   # zip
    b.fill(_rrect(-0.32, 0.2, 0.32, 0.78, 0.08), "none", "darker")  # front pocket
    b.line([(-0.26, 0.3), (0.26, 0.3)], 0.012, b.hw)
    if b.t >= 0.5:
        for m in (1, -1):
            b.line([(m * 0.18, -0.2), (m * 0.18, 0.22)], 0.05, "darker")
            b.fill(_rrect(m * 0.18 - 0.05, 0.02, m * 0.18 + 0.05, 0.1, 0.01), "none", b.hw)
    b.stitch([(-0.44, 0.84), (0.44, 0.84)], 0.35)


def _clutch(b: _Builder) -> None:
    b.body(_rrect(-0.72, -0.22, 0.72, 0.36, 0.05))
    b.fill([(-0.72, -0.22), (0.72, -0.22), (0, 0.16)], "dark", "darker")   # envelope flap
    b.dot(0, 0.13, 0.05 + 0.02 * b.t, b.hw, "darker")
    if b.t >= 0.5:
        b.line([(-0.7, -0.2), (0.7, -0.2)], 0.02, "gold")
    b.stitch([(-0.68, 0.3), (0.68, 0.3)], 0.35)


def _wallet(b: _Builder) -> None:
    b.body(_rrect(-0.62, -0.34, 0.62, 0.36, 0.08))
    b.line(_rrect(-0.57, -0.29, 0.57, 0.31, 0.05, 2) + [(-0.57 + 0.05, -0.29)], 0.016, b.hw)  # zip round
    b.fill([(0.52, -0.3), (0.66, -0.44), (0.72, -0.38), (0.58, -0.25)], b.hw, "darker")   # zip pull
    if b.t >= 0.5:
        b.fill(_rrect(-0.16, -0.04, 0.16, 0.08, 0.02), "none", "gold")


def _card_case(b: _Builder) -> None:
    b.fill(_rrect(-0.26, -0.5, 0.22, -0.1, 0.03), "white", "dark")    # card peeking out
    b.body(_rrect(-0.4, -0.3, 0.4, 0.3, 0.05))
    for k in range(2):
        y = -0.2 + k * 0.1
        b.line(_quad((-0.36, y), (0, y + 0.1), (0.36, y)), 0.012, "darker")
    if b.t >= 0.5:
        b.fill(_rrect(-0.1, 0.1, 0.1, 0.18, 0.015), "none", "gold")
    b.stitch(_rrect(-0.35, -0.25, 0.35, 0.25, 0.03), 0.35)


def _belt(b: _Builder) -> None:
    # Rolled belt seen from the front: a thick ring with the buckle on top.
    b.body(_ellipse(0, 0.2, 0.7, 0.56, 28), outline=True)
    b.cut(_ellipse(0, 0.24, 0.52, 0.38, 24))
    b.line(_arc(0, 0.2, 0.61, 0.47, 20, 160, 10), 0.008, "stitch" if b.t >= 0.35 else "dark")
    bw = 0.2 + 0.08 * b.t
    b.fill(_rrect(-bw, -0.5, bw, -0.2, 0.04), b.hw, "darker")
    b.fill(_rrect(-bw + 0.06, -0.44, bw - 0.06, -0.26, 0.02), "base")
    b.line([(-0.05, -0.35), (bw - 0.02, -0.35)], 0.02, b.hw)
    for k in range(4):
        b.dot(-0.45 + k * 0.08, 0.6 + k * 0.03, 0.018, "darker")


def _sneaker(b: _Builder) -> None:
    upper = (_quad((-0.9, 0.5), (-0.95, 0.0), (-0.8, -0.12), 5) + [(-0.62, -0.1), (-0.44, -0.02)]
             + [(-0.28, -0.24), (-0.14, -0.22), (0.3, 0.08)] + _quad((0.3, 0.08), (0.9, 0.12), (0.94, 0.5), 6))
    b.body(upper)
    sole = [(-0.93, 0.44)] + _quad((0.7, 0.44), (0.98, 0.44), (0.96, 0.6), 4) + [(0.8, 0.66), (-0.9, 0.66)]
    b.fill(sole, "sole", "darker")
    b.line([(-0.92, 0.53), (0.95, 0.53)], 0.01, "darker")
    for k in range(5):
        x = -0.2 + k * 0.1
        y = -0.17 + k * 0.062
        b.line([(x - 0.05, y - 0.02), (x + 0.07, y + 0.04)], 0.022, "laces")
    b.line(_quad((0.5, 0.44), (0.52, 0.18), (0.8, 0.18)), 0.012, "darker")   # toe cap
    b.fill(_quad((-0.9, 0.2), (-0.95, 0.0), (-0.8, -0.12), 4) + [(-0.7, 0.15)], "dark")   # heel tab
    if b.t >= 0.4:
        b.line([(-0.45, 0.3), (-0.15, 0.02), (0.1, 0.32)], 0.04, "accent")
    if b.t >= 0.7:
        b.dot(-0.62, 0.2, 0.04, "gold")
    b.stitch([(-0.86, 0.38), (0.85, 0.38)], 0.35)


def _boot(b: _Builder) -> None:
    b.body([(-0.7, 0.55), (-0.72, -0.9), (-0.12, -0.9), (-0.14, -0.1), (0.3, 0.12), (0.78, 0.26),
            (0.9, 0.5), (0.88, 0.58)])
    b.fill([(-0.74, 0.52), (0.9, 0.52), (0.88, 0.64), (-0.3, 0.64), (-0.32, 0.74), (-0.72, 0.74)], "darker")
    b.fill([(-0.5, -0.6), (-0.3, -0.6), (-0.36, 0.1), (-0.44, 0.1)], "dark", "darker")   # elastic gusset
    b.fill(_rrect(-0.74, -0.98, -0.62, -0.82, 0.02), "dark")   # pull tab
    if b.t >= 0.4:
        b.line([(-0.72, -0.8), (-0.12, -0.8)], 0.012, "stitch")
    if b.t >= 0.6:
        b.fill(_rrect(-0.2, -0.3, -0.06, -0.18, 0.02), "none", "gold")
        b.line([(-0.72, -0.26), (-0.13, -0.26)], 0.04, "dark")
    b.stitch([(-0.7, 0.46), (0.86, 0.46)], 0.35)


def _loafer(b: _Builder) -> None:
    b.body([(-0.88, 0.55), (-0.9, 0.1), (-0.7, 0.02), (-0.2, 0.12), (0.3, 0.02), (0.75, 0.22),
            (0.93, 0.45), (0.92, 0.56)])
    b.fill([(-0.92, 0.52), (0.94, 0.52), (0.92, 0.6), (-0.5, 0.6), (-0.52, 0.7), (-0.9, 0.7)], "darker")
    b.line(_quad((0.15, 0.08), (0.55, 0.05), (0.85, 0.32)), 0.012, "darker")   # apron seam
    b.fill([(0.02, 0.06), (0.36, 0.02), (0.38, 0.12), (0.04, 0.16)], "dark", "darker")   # saddle strap
    if b.t >= 0.5:
        b.line([(0.06, 0.09), (0.34, 0.06)], 0.03, "gold")   # horsebit
        b.dot(0.06, 0.09, 0.03, "gold")
        b.dot(0.34, 0.06, 0.03, "gold")
    b.stitch([(-0.88, 0.46), (0.9, 0.46)], 0.35)


def _heel(b: _Builder) -> None:
    # Pump in profile: a thin quarter over an arched sole, a pointed toe and a stiletto.
    sole = [(0.95, 0.56), (0.82, 0.61), (0.5, 0.62), (0.15, 0.5), (-0.3, 0.22), (-0.66, 0.03), (-0.84, 0.0)]
    top = [(-0.86, -0.32), (-0.72, -0.3), (-0.5, -0.08), (-0.2, 0.2), (0.15, 0.3), (0.42, 0.27), (0.7, 0.36)]
    b.body(top + sole)
    b.line(sole, 0.022, "darker")
    b.fill([(-0.84, 0.0), (-0.66, 0.03), (-0.69, 0.84), (-0.73, 0.84)], "darker")   # stiletto
    b.fill([(-0.74, 0.84), (-0.68, 0.84), (-0.68, 0.88), (-0.74, 0.88)], "black")
    b.line(top[1:6], 0.016, "dark")   # topline binding
    if b.t >= 0.5:
        b.line([(-0.78, -0.31), (-0.34, -0.42), (-0.2, -0.36)], 0.03, "dark")   # ankle strap
        b.dot(-0.3, -0.4, 0.035, "gold")
    if b.t >= 0.75:
        b.dot(0.52, 0.38, 0.05, "gold", "darker")


def _cap(b: _Builder) -> None:
    b.body(_arc(-0.05, 0.25, 0.62, 0.7, 180, 360, 16))
    b.body([(0.4, 0.14), (0.95, 0.28), (0.98, 0.42), (0.5, 0.38), (0.3, 0.25)])   # brim
    b.line(_quad((-0.05, -0.45), (0.15, -0.1), (0.42, 0.22)), 0.01, "dark")
    b.line(_quad((-0.05, -0.45), (-0.35, -0.1), (-0.45, 0.22)), 0.01, "dark")
    b.dot(-0.05, -0.45, 0.04, "dark")
    b.line([(-0.67, 0.25), (0.42, 0.25)], 0.02, "darker")
    if b.t >= 0.4:
        b.fill(_rrect(0.0, -0.05, 0.28, 0.12, 0.03), "contrast", "dark")   # embroidered patch
    if b.t >= 0.6:
        b.ring(-0.3, -0.12, 0.025, 0.012, "gold")
    b.stitch([(0.45, 0.34), (0.95, 0.36)], 0.35)


def _bucket_hat(b: _Builder) -> None:
    b.body(_arc(0, -0.3, 0.4, 0.15, 180, 360, 8) + [(0.48, 0.1), (-0.48, 0.1)])
    b.body([(-0.5, 0.06), (0.5, 0.06), (0.82, 0.42)] + _arc(0, 0.42, 0.82, 0.1, 0, 180, 10)[1:])
    b.fill([(-0.47, 0.0), (0.47, 0.0), (0.48, 0.1), (-0.48, 0.1)], "dark", "darker")   # band
    rings = 2 if b.t < 0.5 else 5
    for k in range(rings):
        f = (k + 1) / (rings + 1)
        b.line([(-0.5 - 0.32 * f, 0.1 + 0.32 * f), (0.5 + 0.32 * f, 0.1 + 0.32 * f)], 0.007, "stitch")
    if b.t >= 0.6:
        for m in (1, -1):
            b.ring(m * 0.3, -0.2, 0.025, 0.012, "gold")


def _sunglasses(b: _Builder) -> None:
    for m in (1, -1):
        b.body(_rrect(m * 0.44 - 0.32, -0.26, m * 0.44 + 0.32, 0.24, 0.14))
        b.strap([(m * 0.76, -0.2), (m * 0.94, -0.28)], 0.05, outline=False)   # hinge / temple
        b.fill(_rrect(m * 0.44 - 0.25, -0.19, m * 0.44 + 0.25, 0.17, 0.1), "lens", "darker")
        b.line([(m * 0.44 - 0.16, -0.12), (m * 0.44 - 0.04, -0.14)], 0.025, "white")   # glint
    b.strap(_quad((-0.14, -0.12), (0, -0.2), (0.14, -0.12)), 0.06, outline=False)   # bridge
    if b.t >= 0.6:
        for m in (1, -1):
            b.dot(m * 0.74, -0.18, 0.03, "gold")


def _umbrella(b: _Builder) -> None:
    ribs = 8
    canopy = _arc(0, 0.05, 0.92, 0.78, 180, 360, 20)
    edge = []
    for k in range(ribs, -1, -1):
        x = -0.92 + 1.84 * k / ribs
        edge.append((x, 0.05))
        if k:
            edge.append((x - 0.92 / ribs, -0.04))
    b.body(canopy + edge[1:])
    for k in range(1, ribs):
        x = -0.92 + 1.84 * k / ribs
        b.line(_quad((0, -0.73), (x * 0.6, -0.6), (x, 0.05)), 0.01, "dark")
    b.line([(0, -0.73), (0, -0.86)], 0.03, "silver" if b.t < 0.6 else "gold")   # ferrule
    b.line([(0, 0.05), (0, 0.7)], 0.03, "silver")   # shaft
    tone = "wood" if b.t >= 0.5 else "darker"
    b.line(_arc(0.12, 0.7, 0.12, 0.12, 180, 0, 8), 0.06, tone)  # J-handle
    b.line([(0, 0.58), (0, 0.7)], 0.06, tone)


def _keyring(b: _Builder) -> None:
    b.ring(0, -0.68, 0.2, 0.05, b.hw if b.hw != "darker" else "silver")
    b.line([(0, -0.48), (0, -0.34)], 0.04, "silver" if b.t < 0.6 else "gold")
    b.body(_rrect(-0.26, -0.34, 0.26, 0.5, 0.1))
    b.cut(_ellipse(0, -0.22, 0.05, 0.05, 10))
    b.stitch(_rrect(-0.21, -0.29, 0.21, 0.45, 0.08), 0.3)
    if b.t >= 0.5:
        b.dot(0.0, 0.14, 0.1, "gold", "darker")   # charm
    if b.t >= 0.75:
        for k in range(6):
            b.line([(0.26 + 0.02 * k, 0.1), (0.3 + 0.03 * k, 0.7)], 0.02, "dark")   # tassel


def _jewellery(b: _Builder) -> None:
    metal = "gold" if b.t >= 0.4 else "silver"
    chain = _quad((-0.6, -0.9), (0, 0.55), (0.6, -0.9), 24)
    for x, y in chain[:11] + chain[14:]:
        b.ring(x, y, 0.028, 0.014, metal)
    r = 0.2 + 0.08 * b.t
    b.body(_ellipse(0, 0.34, r, r * 1.15, 24))
    b.ring(0, 0.34, r, 0.03 + 0.02 * b.t, metal)
    b.dot(-r * 0.35, 0.34 - r * 0.4, r * 0.18, "white")
    b.fill([(-0.06, 0.34 - r - 0.12), (0.06, 0.34 - r - 0.12), (0.04, 0.34 - r), (-0.04, 0.34 - r)], metal)
    if b.t >= 0.7:
        for m in (1, -1):
            b.dot(m * 0.42, 0.1, 0.06, "base", metal)


def _perfume(b: _Builder) -> None:
    b.body(_rrect(-0.44, -0.22, 0.44, 0.9, 0.08 if b.t < 0.6 else 0.02))
    b.fill([(-0.12, -0.36), (0.12, -0.36), (0.12, -0.22), (-0.12, -0.22)], "silver" if b.t < 0.5 else "gold")
    b.fill(_rrect(-0.22, -0.85, 0.22, -0.36, 0.03), "black" if b.t < 0.5 else "gold", "darker")
    b.fill(_rrect(-0.28, 0.2, 0.28, 0.58, 0.02), "label", "dark")
    for k in range(3):
        b.line([(-0.18, 0.3 + k * 0.1), (0.18 - 0.08 * k, 0.3 + k * 0.1)], 0.02, "darker")
    b.line([(-0.34, -0.12), (-0.34, 0.8)], 0.03, "light")   # glass highlight
    if b.t >= 0.6:
        b.line([(-0.4, 0.86), (0.4, 0.86)], 0.02, "gold")


_SHAPES: dict[str, Callable[[_Builder], None]] = {
    "trench_coat": _trench_coat, "quilted_jacket": _quilted_jacket, "puffer_jacket": _puffer_jacket,
    "blazer": _blazer, "shirt": _shirt, "polo": _polo, "tshirt": _tshirt, "sweater": _sweater,
    "cardigan": _cardigan, "dress": _dress, "skirt": _skirt, "trousers": _trousers, "shorts": _shorts,
    "scarf": _scarf, "tote": _tote, "shoulder_bag": _shoulder_bag, "crossbody": _crossbody,
    "backpack": _backpack, "clutch": _clutch, "wallet": _wallet, "card_case": _card_case, "belt": _belt,
    "sneaker": _sneaker, "boot": _boot, "loafer": _loafer, "heel": _heel, "cap": _cap,
    "bucket_hat": _bucket_hat, "sunglasses": _sunglasses, "umbrella": _umbrella, "keyring": _keyring,
    "jewellery": _jewellery, "perfume": _perfume,
}
SILHOUETTES: tuple[str, ...] = tuple(_SHAPES)

# Small things are photographed closer, but not as close as a coat: size is part of the signal.
_SHAPE_SCALE = {"card_case": 0.8, "keyring": 0.85, "wallet": 0.9, "clutch": 0.95, "sunglasses": 0.95}


@lru_cache(maxsize=2048)
def _plan(silhouette: str, category1: str, tier_bucket: int) -> _Plan:
    b = _Builder(tier_bucket / 10, category1)
    _SHAPES[silhouette](b)
    return b.plan()


# ==================================================================================================
# Surfaces: texture (shading multiplier) x pattern (colour class) -> product index tile.
# ==================================================================================================

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    return xx.astype(np.float32), yy.astype(np.float32)


def _smooth_noise(size: int, cells: int, seed: int) -> np.ndarray:
    """Value noise in about [-1, 1]: random cells upsampled bicubically."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    up = Image.fromarray(small, "L").resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1.0


def _fine_noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)


def _tex_smooth(s):
    return 0.015 * _fine_noise(s, 1)


def _tex_leather_grain(s):
    # Pebbles a few pixels across, separated by darker creases.
    g = _smooth_noise(s, max(12, int(s / 3.2)), 2)
    return 0.04 * g - 0.06 * (np.abs(g) < 0.08) + 0.025 * _fine_noise(s, 3)


def _tex_knit(s):
    x, y = _grid(s)
    p = max(5.0, round(8 * s / 336))
    u = (x % p) / p - 0.5
    v = 0.16 * np.cos(2 * np.pi * (y / p + np.abs(u))) - 0.12 * (np.abs(u) > 0.4)
    return v + 0.03 * _fine_noise(s, 4)


def _tex_quilted(s):
    x, y = _grid(s)
    p = max(14.0, round(36 * s / 336))
    u, v = ((x + y) % p) / p, ((x - y) % p) / p
    puff = np.sqrt(np.sin(np.pi * u) * np.sin(np.pi * v))
    seam = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 1.2 / p
    return 0.3 * (puff - 0.6) - 0.12 * seam + 0.02 * _fine_noise(s, 5)


def _tex_canvas(s):
    x, y = _grid(s)
    weave = (((x // 2) + (y // 2)) % 2) - 0.5
    slub = _smooth_noise(s, 6, 6)[:, :1] * np.ones((1, s), np.float32)
    return 0.1 * weave + 0.04 * slub + 0.035 * _fine_noise(s, 7)


def _tex_sheen(s):
    x, y = _grid(s)
    band = np.exp(-(((x - 0.6 * y) / s - 0.15) / 0.12) ** 2) + 0.6 * np.exp(-(((x - 0.6 * y) / s + 0.35) / 0.08) ** 2)
    return 0.32 * band + 0.06 * _smooth_noise(s, 5, 8)


def _tex_suede(s):
    return 0.06 * _smooth_noise(s, 10, 9) + 0.05 * _fine_noise(s, 10)


def _tex_denim(s):
    x, y = _grid(s)
    twill = ((x + y) % 4 < 2) - 0.5
    slub = _smooth_noise(s, 40, 11)[:1, :] * np.ones((s, 1), np.float32)
    return 0.12 * twill + 0.08 * slub + 0.04 * _fine_noise(s, 12)


def _tex_nylon(s):
    x, y = _grid(s)
    p = max(6.0, round(12 * s / 336))
    grid = ((x % p) < 1) | ((y % p) < 1)
    waves = np.sin((x + 0.4 * y) / s * 9.0)
    return 0.14 * waves - 0.06 * grid + 0.015 * _fine_noise(s, 13)


def _tex_wool(s):
    x, y = _grid(s)
    col = (x // max(3, round(6 * s / 336))) % 2
    herring = (((x + np.where(col == 1, y, -y)) % 4) < 2) - 0.5
    return 0.06 * herring + 0.06 * _smooth_noise(s, s // 6, 14) + 0.05 * _fine_noise(s, 15)


def _tex_patent(s):
    x, y = _grid(s)
    band = np.exp(-(((x + 0.3 * y) / s - 0.3) / 0.05) ** 2) + np.exp(-(((x + 0.3 * y) / s - 0.9) / 0.04) ** 2)
    return 0.5 * band - 0.05


def _tex_metal(s):
    streak = _smooth_noise(s, 60, 16)[:, :1] * np.ones((1, s), np.float32)
    x, y = _grid(s)
    band = np.exp(-((y / s - 0.4) / 0.1) ** 2)
    return 0.35 * band + 0.06 * streak - 0.08


def _tex_glass(s):
    x, _ = _grid(s)
    band = np.exp(-((x / s - 0.35) / 0.03) ** 2) + 0.5 * np.exp(-((x / s - 0.62) / 0.05) ** 2)
    return 0.35 * band - 0.05


def _tex_corduroy(s):
    x, _ = _grid(s)
    p = max(4.0, round(6 * s / 336))
    return 0.14 * np.cos(2 * np.pi * x / p) + 0.03 * _fine_noise(s, 17)


_TEXTURES: dict[str, Callable[[int], np.ndarray]] = {
    "smooth": _tex_smooth, "leather_grain": _tex_leather_grain, "knit": _tex_knit,
    "quilted": _tex_quilted, "canvas": _tex_canvas, "sheen": _tex_sheen, "suede": _tex_suede,
    "denim": _tex_denim, "nylon": _tex_nylon, "wool": _tex_wool, "patent": _tex_patent,
    "metal": _tex_metal, "glass": _tex_glass, "corduroy": _tex_corduroy,
}
TEXTURES: tuple[str, ...] = tuple(_TEXTURES)


def _pat_none(s):
    return np.zeros((s, s), np.uint8)


def _pat_check(s):
    """The house check: camel ground, black bands, thin white and red lines, woven where one crosses."""
    x, y = _grid(s)
    p = max(24.0, round(72 * s / 336))
    u, v = (x % p) / p, (y % p) / p
    twill = ((x + y) % 2) == 0   # where only one direction carries the colour, the weave mixes it
    out = np.zeros((s, s), np.uint8)
    for cls, lo, hi in ((1, 0.08, 0.30), (1, 0.62, 0.66), (2, 0.40, 0.43), (3, 0.82, 0.845)):
        a, b = (u >= lo) & (u < hi), (v >= lo) & (v < hi)
        out[(a & b) | ((a ^ b) & twill)] = cls
    return out


def _pat_stripe(s):
    x, _ = _grid(s)
    p = max(10.0, round(24 * s / 336))
    u = (x % p) / p
    out = np.zeros((s, s), np.uint8)
    out[u < 0.38] = 1
    out[(u > 0.62) & (u < 0.68)] = 2
    return out


def _stamp(s: int, period: float, draw_cell: Callable[[ImageDraw.ImageDraw, float, float, float], None],
           stagger: bool = True) -> np.ndarray:
    im = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(im)
    rows = int(s / period) + 2
    for r in range(-1, rows):
        off = period / 2 if (stagger and r % 2) else 0.0
        for c in range(-1, rows):
            draw_cell(d, c * period + off, r * period, period)
    return np.asarray(im, np.uint8).copy()


def _pat_monogram(s):
    def cell(d, x, y, p):
        r = 0.28 * p
        d.ellipse([x - r, y - r, x + r, y + r], outline=1, width=max(1, round(p / 14)))
        w = max(1, round(p / 12))
        d.rectangle([x - r * 0.6, y - r * 0.55, x + r * 0.6, y - r * 0.55 + w], fill=1)
        d.rectangle([x - w / 2, y - r * 0.55, x + w / 2, y + r * 0.6], fill=1)
        q = 0.09 * p
        cx, cy = x + p / 2, y + p / 2
        d.polygon([(cx, cy - q), (cx + q, cy), (cx, cy + q), (cx - q, cy)], fill=2)
    return _stamp(s, max(14.0, round(34 * s / 336)), cell, stagger=False)


def _pat_dots(s):
    def cell(d, x, y, p):
        r = 0.2 * p
        d.ellipse([x - r, y - r, x + r, y + r], fill=1)
    return _stamp(s, max(10.0, round(22 * s / 336)), cell)


_HOUNDSTOOTH = np.array([
    [1, 1, 1, 1, 0, 0, 0, 1],
    [1, 1, 1, 1, 0, 0, 1, 1],
    [1, 1, 1, 1, 0, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0, 0],
    [0, 1, 1, 1, 0, 0, 0, 0],
], np.uint8)


def _pat_houndstooth(s):
    c = max(1, round(2.5 * s / 336))
    tile = np.kron(_HOUNDSTOOTH, np.ones((c, c), np.uint8))
    reps = s // tile.shape[0] + 1
    return np.tile(tile, (reps, reps))[:s, :s].copy()


def _pat_floral(s):
    rng = random.Random(1234)

    def cell(d, x, y, p):
        cx, cy = x + rng.uniform(-0.2, 0.2) * p, y + rng.uniform(-0.2, 0.2) * p
        r = 0.16 * p
        d.ellipse([cx + 0.1 * p, cy + 0.15 * p, cx + 0.38 * p, cy + 0.28 * p], fill=2)   # leaf
        for k in range(5):
            a = 2 * math.pi * k / 5 + rng.uniform(0, 1)
            px, py = cx + r * math.cos(a), cy + r * math.sin(a)
            d.ellipse([px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7], fill=1)
        d.ellipse([cx - r * 0.45, cy - r * 0.45, cx + r * 0.45, cy + r * 0.45], fill=3)
    return _stamp(s, max(16.0, round(44 * s / 336)), cell)


# A 5x5 two-letter mark, repeated in rows like a printed logo.
_GLYPHS = {
    "T": ["#####", "..#..", "..#..", "..#..", "..#.."],
    "B": ["####.", "#...#", "####.", "#...#", "####."],
}


def _pat_logo(s):
    px = max(1, round(2 * s / 336))
    word = np.zeros((5, 13), np.uint8)
    for i, ch in enumerate("TB"):
        word[:, i * 6:i * 6 + 5] = np.array([[c == "#" for c in row] for row in _GLYPHS[ch]], np.uint8)
    word = np.kron(word, np.ones((px, px), np.uint8))
    cell = np.zeros((word.shape[0] * 3, word.shape[1] + 6 * px), np.uint8)
    cell[:word.shape[0], :word.shape[1]] = word
    row2 = np.roll(cell, cell.shape[1] // 2, axis=1)
    tile = np.vstack([cell, row2])
    reps_y, reps_x = s // tile.shape[0] + 1, s // tile.shape[1] + 1
    return np.tile(tile, (reps_y, reps_x))[:s, :s].copy()


_PATTERNS: dict[str, Callable[[int], np.ndarray]] = {
    "none": _pat_none, "check": _pat_check, "stripe": _pat_stripe, "monogram": _pat_monogram,
    "dots": _pat_dots, "houndstooth": _pat_houndstooth, "floral": _pat_floral, "logo": _pat_logo,
}
PATTERNS: tuple[str, ...] = tuple(_PATTERNS)


@lru_cache(maxsize=64)
def _texture_gain(texture: str, size: int) -> np.ndarray:
    """Texture + a soft key light from the top-left, as gain levels 0.._GAINS-1 (mean ~ neutral)."""
    x, y = _grid(size)
    light = -0.14 * ((x + y) / (2 * size) - 0.5)
    m = 1.0 + light + _TEXTURES[texture](size)
    m = m / m.mean()
    g = np.rint((m - _M_LO) / _M_SPAN * (_GAINS - 1))
    return np.clip(g, 0, _GAINS - 1).astype(np.uint8)


@lru_cache(maxsize=32)
def _pattern_classes(pattern: str, size: int) -> np.ndarray:
    return _PATTERNS[pattern](size)


@lru_cache(maxsize=512)
def _product_tile(texture: str, pattern: str, size: int, mirrored: bool) -> Image.Image:
    gain = _texture_gain(texture, size)
    if mirrored:   # light from the other side; the pattern keeps its orientation (logos stay readable)
        gain = gain[:, ::-1]
    idx = _PROD0 + _pattern_classes(pattern, size).astype(np.uint16) * _GAINS + gain
    return Image.fromarray(idx.astype(np.uint8), "L")


# ==================================================================================================
# Studio: background index tiles and soft shadows.
# ==================================================================================================
_STUDIO = (  # (wall, floor) colours of plain photo studios
    ((243, 242, 239), (226, 224, 220)), ((232, 232, 232), (210, 210, 212)), ((236, 228, 215), (214, 204, 190)),
    ((218, 226, 234), (196, 204, 212)), ((240, 226, 222), (222, 206, 202)), ((217, 225, 212), (196, 206, 192)),
    ((72, 74, 78), (52, 53, 56)), ((184, 184, 186), (160, 160, 163)), ((242, 236, 214), (222, 214, 192)),
    ((228, 224, 238), (206, 202, 218)), ((206, 200, 192), (184, 178, 170)), ((250, 250, 250), (250, 250, 250)),
)
_BG_KINDS = 6


@lru_cache(maxsize=32)
def _background_tile(kind: int, size: int) -> Image.Image:
    x, y = _grid(size)
    fy, fx = y / size, x / size
    top = _RAMP - 1
    if kind == 0:      # seamless sweep: almost flat
        wall = top - 3 * fy
        floor_y = None
    elif kind == 1:    # vertical gradient
        wall = top - 12 * fy
        floor_y = None
    elif kind == 2:    # vignette
        wall = top - 16 * ((fx - 0.5) ** 2 + (fy - 0.45) ** 2)
        floor_y = None
    elif kind == 3:    # diagonal light
        wall = top - 10 * (fx + fy) / 2
        floor_y = None
    else:              # wall + floor with a horizon line
        floor_y = 0.80 if kind == 4 else 0.70
        wall = top - 8 * fy
    idx = _WALL0 + np.clip(np.rint(wall), 22, top)
    if floor_y is not None:
        floor = _FLOOR0 + np.clip(np.rint(top - 8 * (1 - fy)), 22, top)
        idx = np.where(fy >= floor_y, floor, idx)
    return Image.fromarray(idx.astype(np.uint8), "L")


@lru_cache(maxsize=256)
def _shadow_tile(w: int, h: int) -> Image.Image:
    """Soft ellipse of index offsets to subtract (darker = lower index within a ramp)."""
    pad = max(2, h // 2)
    im = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    ImageDraw.Draw(im).ellipse([pad, pad, pad + w, pad + h], fill=14)
    return im.filter(ImageFilter.GaussianBlur(max(1.0, h / 3)))


# ==================================================================================================
# Colours.
# ==================================================================================================

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


# ==================================================================================================
# Render.
# ==================================================================================================

def _validate(look: Look, size: int) -> None:
    if look.silhouette not in _SHAPES:
        raise ValueError(f"unknown silhouette {look.silhouette!r}; valid: {', '.join(SILHOUETTES)}")
    if look.texture not in _TEXTURES:
        raise ValueError(f"unknown texture {look.texture!r}; valid: {', '.join(TEXTURES)}")
    if look.pattern not in _PATTERNS:
        raise ValueError(f"unknown pattern {look.pattern!r}; valid: {', '.join(PATTERNS)}")
    if len(look.rgb) != 3 or not all(0 <= int(c) <= 255 for c in look.rgb):
        raise ValueError(f"rgb must be three ints in 0..255, got {look.rgb!r}")
    if not (isinstance(look.price_tier, (int, float)) and math.isfinite(look.price_tier)):
        raise ValueError(f"price_tier must be a finite number in 0..1, got {look.price_tier!r}")
    if not 32 <= size <= 2048:
        raise ValueError(f"size must be in 32..2048, got {size}")


@dataclass(frozen=True)
class _Pose:
    scale: float
    angle: float
    dx: float
    dy: float
    studio: int
    bg_kind: int
    wall_jitter: tuple[int, int, int]
    mirrored: bool
    brightness: float
    contrast: float


def _pose(seed: int, variant: int) -> _Pose:
    # Only (seed, variant) feed this: the studio must carry no information about the product.
    # A keyed hash gives 16 stable uniform bytes per render, cheaper than seeding a Random.
    u = hashlib.blake2b(f"{seed}:{variant}".encode(), digest_size=16, person=b"render-pose").digest()
    steps = (-5, 0, 5)
    return _Pose(
        scale=0.85 + 0.15 * u[0] / 255, angle=-10.0 + 20.0 * u[1] / 255,
        dx=-0.04 + 0.08 * u[2] / 255, dy=-0.03 + 0.06 * u[3] / 255,
        studio=u[4] % len(_STUDIO), bg_kind=u[5] % _BG_KINDS,
        wall_jitter=(steps[u[6] % 3], steps[u[7] % 3], steps[u[8] % 3]),
        mirrored=bool(u[9] & 1),
        # A few discrete light settings: enough variety, and palettes stay cacheable.
        brightness=(0.95, 1.0, 1.05)[u[10] % 3], contrast=(0.8, 1.0, 1.2)[u[11] % 3],
    )


@lru_cache(maxsize=1024)
def _studio_palette(studio: int, jitter: tuple[int, int, int]) -> bytes:
    wall, floor = _STUDIO[studio]
    ramp = 0.5 + 0.5 * np.arange(_RAMP, dtype=np.float32) / (_RAMP - 1)
    jit = np.asarray(jitter, np.float32)
    pal = np.concatenate([ramp[:, None] * (np.asarray(wall, np.float32) + jit),
                          ramp[:, None] * (np.asarray(floor, np.float32) + jit)])
    return np.clip(np.rint(pal), 0, 255).astype(np.uint8).tobytes()


@lru_cache(maxsize=4096)
def _product_palette(rgb: tuple[int, int, int], pattern: str, contrast: float, brightness: float) -> bytes:
    classes = np.asarray([rgb, *_pattern_colours(pattern, rgb)], np.float32)  # (4, 3)
    m = _M_LO + _M_SPAN * np.arange(_GAINS, dtype=np.float32) / (_GAINS - 1)
    m = 1.0 + (m - 1.0) * contrast
    # Additive term: texture must show on black too, where a pure multiplier does nothing.
    shade = classes[:, None, :] * (m[None, :, None] * brightness) + (m[None, :, None] - 1.0) * 48.0
    # Highlights burn towards white so sheen reads even on black.
    spec = np.clip((m - 1.12) / 0.15, 0.0, 1.0)[None, :, None] * 0.65
    shade = shade + spec * (255.0 - shade)
    return np.clip(np.rint(shade.reshape(-1, 3)), 0, 255).astype(np.uint8).tobytes()


def _palette(rgb: tuple[int, int, int], pattern: str, pose: _Pose) -> bytes:
    studio = _studio_palette(pose.studio, pose.wall_jitter)
    edge = bytes(_detail_colours(rgb)["darker"])
    assert _EDGE == 0   # the splice below writes the strap-outline colour at index 0
    return edge + studio[3:] + _product_palette(rgb, pattern, pose.contrast, pose.brightness)


def _transform(plan: _Plan, look: Look, pose: _Pose, size: int) -> tuple[np.ndarray, float]:
    """Unit coordinates -> pixels: gender width, rotation, scale, then fit inside the frame."""
    half = size * 0.5 * pose.scale * _SHAPE_SCALE.get(look.silhouette, 1.0)
    if look.category1 == "KIDS":
        half *= 0.72
    sx = {"MAN": 1.05, "WOMAN": 0.96}.get(look.category1, 1.0)
    a = math.radians(pose.angle)
    ca, sa = math.cos(a), math.sin(a)
    mat = np.array([[sx * ca * half, sx * sa * half], [-sa * half, ca * half]])
    pts = plan.points @ mat
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = size * 0.04
    # Wide shapes (umbrellas, rotated coats) shrink to fit rather than leave the frame.
    fit = min(1.0, (size - 2 * margin) / float((hi - lo).max()))
    if fit < 1.0:
        pts, lo, hi, half = pts * fit, lo * fit, hi * fit, half * fit
    centre = np.array([size * (0.5 + pose.dx), size * (0.5 + pose.dy)]) - (lo + hi) / 2
    centre = np.clip(centre, margin - lo, size - margin - hi)
    return pts + centre, half


def _cast_shadow(canvas: Image.Image, pts: np.ndarray, size: int) -> None:
    """Darken a soft ellipse (in index space) under the product's lowest point."""
    x0, x1, y1 = float(pts[:, 0].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
    shadow = _shadow_tile(max(8, int((x1 - x0) * 0.9) // 8 * 8), max(4, int(size * 0.06) // 4 * 4))
    left = int((x0 + x1) / 2 - shadow.width / 2)
    top = int(min(y1 - shadow.height * 0.5, size - shadow.height / 2))
    # Clip to the frame: a crop outside it would paste padding back in.
    cl, ct = max(0, -left), max(0, -top)
    cr, cb = min(shadow.width, size - left), min(shadow.height, size - top)
    if cr <= cl or cb <= ct:
        return
    box = (left + cl, top + ct, left + cr, top + cb)
    canvas.paste(ImageChops.subtract(canvas.crop(box), shadow.crop((cl, ct, cr, cb))), box)


def render_with_mask(look: Look, size: int = 336, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """`render`, plus the product mask (L, 255 = product surface) used for tests and crops."""
    _validate(look, size)
    rgb = tuple(int(c) for c in look.rgb)
    pose = _pose(seed, look.variant)
    plan = _plan(look.silhouette, look.category1, int(round(min(1.0, max(0.0, look.price_tier)) * 10)))
    pts, half = _transform(plan, look, pose, size)
    flat = pts.ravel().tolist()
    lw = max(1, round(size / 224))

    def seg(op) -> list[float]:
        return flat[2 * op[1]: 2 * op[2]]

    def width(w: float) -> int:
        return max(1, round(w * half))

    # 1. Studio and product surface, all in palette-index space.
    canvas = _background_tile(pose.bg_kind, size).copy()
    _cast_shadow(canvas, pts, size)
    mask = Image.new("L", (size, size), 0)
    md, cd = ImageDraw.Draw(mask), ImageDraw.Draw(canvas)
    for op in plan.ops[: plan.body_end]:
        kind, params = op[0], op[3]
        if kind == "poly":
            md.polygon(seg(op), fill=255)
        elif kind == "cut":
            md.polygon(seg(op), fill=0)
        elif kind == "stroke":
            md.line(seg(op), fill=255, width=width(params[0]), joint="curve")
        elif kind == "edge":   # drawn wider on the canvas: the rim left around the stroke is its outline
            cd.line(seg(op), fill=_EDGE, width=width(params[0]) + 2 * lw, joint="curve")
    canvas.paste(_product_tile(look.texture, look.pattern, size, pose.mirrored), (0, 0), mask)
    canvas.putpalette(_palette(rgb, look.pattern, pose))
    img = canvas.convert("RGB")

    # 2. Flat-coloured outlines and trim on top.
    colours = _detail_colours(rgb)
    d = ImageDraw.Draw(img)
    for op in plan.ops[plan.body_end:]:
        kind, params = op[0], op[3]
        if kind == "outline":   # a closed line: much cheaper than a wide polygon outline in PIL
            xy = seg(op)
            d.line(xy + xy[:2], fill=colours["darker"], width=lw)
        elif kind == "line":
            w, tone = params
            d.line(seg(op), fill=colours[tone], width=width(w), joint="curve")
        elif kind == "fill":
            tone, outline = params
            xy = seg(op)
            if tone != "none":
                d.polygon(xy, fill=colours[tone])
            if outline:
                d.line(xy + xy[:2], fill=colours[outline], width=lw)
        elif kind in ("dot", "ring"):
            x, y = flat[2 * op[1]], flat[2 * op[1] + 1]
            rp = max(1.0, params[0] * half)
            if kind == "dot":
                _, tone, outline = params
                d.ellipse([x - rp, y - rp, x + rp, y + rp], fill=colours[tone],
                          outline=colours[outline] if outline else None, width=lw)
            else:
                _, w, tone = params
                d.ellipse([x - rp, y - rp, x + rp, y + rp], outline=colours[tone], width=width(w))
    return img, mask


def render(look: Look, size: int = 336, seed: int = 0) -> Image.Image:
    """Draw `look` as a size x size RGB product photo; a pure function of (look, size, seed)."""
    return render_with_mask(look, size, seed)[0]


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG bytes: libjpeg is deterministic without `optimize`/`progressive` passes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)
    return buf.getvalue()

"""Unit-coordinate outlines and the builder a silhouette draws with.

Geometry: silhouettes are described in unit coordinates (x, y in [-1, 1], y down, floor near
y = 0.95) as a list of operations on a shared point array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


TRIM_BUCKETS = 11   # Look.trim in 0..1 is drawn at one of these levels: 0, 0.1, ..., 1


def trim_bucket(trim: float) -> int:
    """The level (0..TRIM_BUCKETS - 1) a ``Look.trim`` is drawn at: clamped to 0..1, rounded to tenths."""
    return int(round(min(1.0, max(0.0, trim)) * (TRIM_BUCKETS - 1)))


class _Builder:
    """Collects a silhouette's operations; `trim` is the trim bucket in [0, 1] (``Look.trim``)."""

    def __init__(self, trim: float, cat1: str):
        self.t = trim
        self.man = cat1 == "MAN"   # menswear cuts a little wider; kids' sizes are scaled at render time
        self.pts: Pts = []
        self.body_ops: list = []
        self.detail_ops: list = []
        # Hardware gets richer with the trim level: tonal -> silver -> gold.
        self.hw = "gold" if trim >= 0.6 else ("silver" if trim >= 0.3 else "darker")

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

    def stitch(self, pts: Pts, min_trim: float = 0.35) -> None:
        """Top-stitching: only pricier pieces get it."""
        if self.t >= min_trim:
            self.line(pts, 0.008, "stitch")

    def button(self, x: float, y: float, r: float = 0.035) -> None:
        r *= 1.0 + 0.35 * self.t
        self.dot(x, y, r, self.hw, "darker")
        if self.t >= 0.6:
            self.dot(x - r * 0.3, y - r * 0.3, r * 0.3, "white")

    def plan(self) -> _Plan:
        return _Plan(tuple(self.body_ops) + tuple(self.detail_ops), np.asarray(self.pts, dtype=np.float64),
                     len(self.body_ops))

"""Silhouettes of clothes: coats and jackets, tops and knitwear, dresses, skirts, trousers, scarves."""
from __future__ import annotations

from typing import Callable

from generator.render.geometry import _Builder, _diag_segments, _quad, _rrect, _sym


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
    # A wide, darker collar and a long placket: what tells a polo from a T-shirt in a thumbnail.
    for m in (1, -1):
        b.fill([(0, -0.62), (m * 0.16, -0.74), (m * 0.26, -0.54), (m * 0.05, -0.46)], "dark", "darker")
    b.fill([(-0.05, -0.6), (0.05, -0.6), (0.05, -0.22), (-0.05, -0.22)], "darker")
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


def _sweatshirt(b: _Builder) -> None:
    """Jersey, not knit: dropped shoulders and a boxy body, raglan seams, a wide ribbed neckband with
    its V insert, and narrow ribbed hem and cuffs (a sweater's hem band is wide and knitted)."""
    w = 1.06 if b.man else 1.0
    left = [(0, -0.66), (-0.18, -0.72), (-0.46 * w, -0.56), (-0.46 * w, -0.3), (-0.45 * w, 0.52),
            (-0.4 * w, 0.6), (0, 0.6)]
    for m in (1, -1):  # dropped, slightly slanted sleeves ending in a wide cuff
        b.body([(m * 0.4 * w, -0.6), (m * 0.62, -0.4), (m * 0.74, 0.42), (m * 0.56, 0.46), (m * 0.44 * w, -0.12)])
        b.fill([(m * 0.74, 0.34), (m * 0.56, 0.38), (m * 0.56, 0.46), (m * 0.74, 0.42)], "dark", "darker")
        b.line([(m * 0.18, -0.72), (m * 0.44 * w, -0.14)], 0.022, "dark")     # raglan seam
    b.body(_sym(left))
    b.line(_quad((-0.18, -0.72), (0, -0.5), (0.18, -0.72)), 0.07, "dark")    # wide neckband
    b.fill([(-0.05, -0.56), (0.05, -0.56), (0, -0.44)], "darker")            # the V insert
    b.fill([(-0.45 * w, 0.52), (0.45 * w, 0.52), (0.4 * w, 0.6), (-0.4 * w, 0.6)], "dark")  # narrow hem rib
    if b.t >= 0.5:
        b.stitch([(-0.42 * w, 0.5), (0.42 * w, 0.5)], 0.5)


def _hoodie(b: _Builder) -> None:
    """A sweatshirt's body under a hood that rises over the shoulders, with a kangaroo pocket and
    drawcords: the hood changes the outline itself, so it reads at thumbnail size."""
    w = 1.06 if b.man else 1.0
    b.body([(-0.3, -0.62), (-0.34, -0.86), (-0.22, -1.0), (0.22, -1.0), (0.34, -0.86), (0.3, -0.62)])  # hood
    b.fill([(-0.18, -0.66), (-0.2, -0.86), (0.2, -0.86), (0.18, -0.66), (0, -0.56)], "darker")      # its opening
    left = [(0, -0.6), (-0.3, -0.66), (-0.46 * w, -0.56), (-0.46 * w, -0.3), (-0.45 * w, 0.52),
            (-0.4 * w, 0.6), (0, 0.6)]
    for m in (1, -1):
        b.body([(m * 0.4 * w, -0.6), (m * 0.62, -0.4), (m * 0.74, 0.42), (m * 0.56, 0.46), (m * 0.44 * w, -0.12)])
        b.fill([(m * 0.74, 0.34), (m * 0.56, 0.38), (m * 0.56, 0.46), (m * 0.74, 0.42)], "dark", "darker")
    b.body(_sym(left))
    # Kangaroo pocket: a wide trapezoid with slanted openings.
    b.fill([(-0.3, 0.12), (0.3, 0.12), (0.36, 0.46), (-0.36, 0.46)], "none", "darker")
    for m in (1, -1):
        b.line([(m * 0.3, 0.12), (m * 0.36, 0.34)], 0.03, "darker")
    for m in (1, -1):  # drawcords with their tips
        b.line([(m * 0.07, -0.58), (m * 0.08, -0.3)], 0.02, "light")
        b.dot(m * 0.08, -0.29, 0.022, b.hw)
    b.fill([(-0.45 * w, 0.52), (0.45 * w, 0.52), (0.4 * w, 0.6), (-0.4 * w, 0.6)], "dark")
    b.stitch([(-0.32, 0.16), (0.32, 0.16)], 0.4)
    if b.t >= 0.6:
        b.fill(_rrect(-0.1, -0.2, 0.1, -0.08, 0.015), "contrast")   # chest logo


def _overshirt(b: _Builder) -> None:
    """Heavier and boxier than a shirt: a straight hem, a spread collar, snap buttons and two large
    flap chest pockets, the overshirt's mark."""
    w = 1.04 if b.man else 0.98
    left = [(0, -0.7), (-0.16, -0.76), (-0.46 * w, -0.64), (-0.45 * w, -0.3), (-0.44 * w, 0.5), (0, 0.5)]
    _sleeves(b, (0.46 * w, -0.64), 0.48, 0.17, 0.1, cuff=True)
    b.body(_sym(left))
    for m in (1, -1):  # spread collar
        b.fill([(0, -0.68), (m * 0.18, -0.78), (m * 0.26, -0.62), (m * 0.08, -0.56)], "base", "darker")
    b.line([(0, -0.62), (0, 0.5)], 0.016, "darker")
    for k in range(5):
        b.dot(0.0, -0.5 + k * 0.22, 0.03, b.hw, "darker")
    for m in (1, -1):  # flap chest pockets
        x0, x1 = sorted((m * 0.08, m * 0.36))
        b.fill(_rrect(x0, -0.44, x1, -0.08, 0.02), "none", "darker")
        b.fill([(x0, -0.46), (x1, -0.46), (x1, -0.34), ((x0 + x1) / 2, -0.3), (x0, -0.34)], "dark", "darker")
    b.line([(-0.44 * w, 0.46), (0.44 * w, 0.46)], 0.016, "darker")
    if b.t >= 0.5:
        b.stitch([(-0.42 * w, -0.62), (-0.42 * w, 0.44)], 0.5)


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


GARMENTS: dict[str, Callable[[_Builder], None]] = {
    "trench_coat": _trench_coat, "quilted_jacket": _quilted_jacket, "puffer_jacket": _puffer_jacket,
    "blazer": _blazer, "shirt": _shirt, "polo": _polo, "tshirt": _tshirt, "sweater": _sweater,
    "cardigan": _cardigan, "sweatshirt": _sweatshirt, "hoodie": _hoodie, "overshirt": _overshirt, "dress": _dress, "skirt": _skirt, "trousers": _trousers, "shorts": _shorts,
    "scarf": _scarf,
}

"""Silhouettes of accessories: bags, small leather goods, belts, shoes, hats, eyewear, umbrellas,
keyrings, jewellery and perfume."""
from __future__ import annotations

from typing import Callable

from generator.render.geometry import _arc, _Builder, _ellipse, _quad, _rrect


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


ACCESSORIES: dict[str, Callable[[_Builder], None]] = {
    "tote": _tote, "shoulder_bag": _shoulder_bag, "crossbody": _crossbody,
    "backpack": _backpack, "clutch": _clutch, "wallet": _wallet, "card_case": _card_case, "belt": _belt,
    "sneaker": _sneaker, "boot": _boot, "loafer": _loafer, "heel": _heel, "cap": _cap,
    "bucket_hat": _bucket_hat, "sunglasses": _sunglasses, "umbrella": _umbrella, "keyring": _keyring,
    "jewellery": _jewellery, "perfume": _perfume,
}

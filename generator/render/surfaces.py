"""Surfaces: texture (shading multiplier) x pattern (colour class) -> product index tile."""
from __future__ import annotations

import math
import random
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from generator.render.palette import _GAINS, _M_LO, _M_SPAN, _PROD0


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
    # Pebbles a few pixels across, separated by darker creases, under a broad soft sheen: the grain is
    # lost in a thumbnail, the sheen is not (patent's is narrow and bright, suede has none).
    g = _smooth_noise(s, max(12, int(s / 3.2)), 2)
    x, y = _grid(s)
    sheen = np.exp(-(((x + 0.5 * y) / s - 0.55) / 0.16) ** 2)
    return 0.04 * g - 0.06 * (np.abs(g) < 0.08) + 0.22 * sheen + 0.025 * _fine_noise(s, 3)


def _tex_knit(s):
    x, y = _grid(s)
    p = max(5.0, round(8 * s / 336))
    u = (x % p) / p - 0.5
    v = 0.16 * np.cos(2 * np.pi * (y / p + np.abs(u))) - 0.12 * (np.abs(u) > 0.4)
    # Cables of knit, a few across the body: the stitch itself does not survive a thumbnail.
    cables = np.cos(2 * np.pi * x / max(8.0, round(s / 14)))
    return v + 0.15 * cables + 0.03 * _fine_noise(s, 4)


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
    # Slubs: the heavy yarn's uneven thickness shows as horizontal bands, even in a thumbnail.
    slub = _smooth_noise(s, 14, 6)[:, :1] * np.ones((1, s), np.float32)
    return 0.1 * weave + 0.16 * slub + 0.035 * _fine_noise(s, 7)


def _tex_sheen(s):
    x, y = _grid(s)
    band = np.exp(-(((x - 0.6 * y) / s - 0.15) / 0.12) ** 2) + 0.6 * np.exp(-(((x - 0.6 * y) / s + 0.35) / 0.08) ** 2)
    return 0.32 * band + 0.06 * _smooth_noise(s, 5, 8)


def _tex_suede(s):
    # Brushed nap: broad light and dark patches where the pile lies one way or the other, no sheen, and
    # blotches a thumbnail's few pixels across (leather's grain is finer and is lost there).
    return (0.12 * _smooth_noise(s, 5, 9) + 0.12 * _smooth_noise(s, max(10, s // 16), 18)
            + 0.05 * _fine_noise(s, 10))


def _tex_denim(s):
    x, y = _grid(s)
    twill = ((x + y) % 4 < 2) - 0.5
    slub = _smooth_noise(s, 40, 11)[:1, :] * np.ones((s, 1), np.float32)
    return 0.12 * twill + 0.08 * slub + 0.04 * _fine_noise(s, 12)


def _tex_nylon(s):
    x, y = _grid(s)
    p = max(6.0, round(12 * s / 336))
    grid = ((x % p) < 1) | ((y % p) < 1)
    waves = np.sin((x + 0.4 * y) / s * 24.0)
    return 0.14 * waves - 0.06 * grid + 0.015 * _fine_noise(s, 13)


def _tex_wool(s):
    x, y = _grid(s)
    col = (x // max(3, round(6 * s / 336))) % 2
    herring = (((x + np.where(col == 1, y, -y)) % 4) < 2) - 0.5
    # Heathered: mottling a few stitches across, under the herringbone.
    heather = _smooth_noise(s, max(8, s // 24), 19)
    return 0.06 * herring + 0.06 * _smooth_noise(s, s // 6, 14) + 0.17 * heather + 0.05 * _fine_noise(s, 15)


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
    # Wide wales, each about 1/28 of the picture: corduroy's ridges read even in a thumbnail.
    p = max(4.0, round(12 * s / 336))
    return 0.16 * np.cos(2 * np.pi * x / p) + 0.03 * _fine_noise(s, 17)


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

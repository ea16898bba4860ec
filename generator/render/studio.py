"""The studio: background and shadow tiles, the pose and light of one photo (from its seed and variant
only), the palette that colours the index image, and where the product sits in the frame."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from generator.render.geometry import _Plan
from generator.render.palette import (_EDGE, _FLOOR0, _GAINS, _M_LO, _M_SPAN, _RAMP, _WALL0, _detail_colours,
                                      _pattern_colours)
from generator.render.shapes import _SHAPE_SCALE
from generator.render.surfaces import _grid
from generator.schema import Look

_STUDIO = (  # (wall, floor) colours of plain photo studios
    ((243, 242, 239), (226, 224, 220)), ((232, 232, 232), (210, 210, 212)), ((236, 228, 215), (214, 204, 190)),
    ((218, 226, 234), (196, 204, 212)), ((240, 226, 222), (222, 206, 202)), ((217, 225, 212), (196, 206, 192)),
    ((72, 74, 78), (52, 53, 56)), ((184, 184, 186), (160, 160, 163)), ((242, 236, 214), (222, 214, 192)),
    ((228, 224, 238), (206, 202, 218)), ((206, 200, 192), (184, 178, 170)), ((250, 250, 250), (250, 250, 250)),
)
# A background is a light direction (8), a light fall-off (3) and a floor (none, low, high horizon):
# 72 studios' worth of low-frequency variety, so two products drawn alike do not also photograph alike
# (issue 18: 35 % of the default catalogue's images had a perceptual-hash twin within 4 bits with 6).
_LIGHT_DIRECTIONS, _LIGHT_FALLOFF, _FLOORS = 8, (6, 11, 16), (None, 0.80, 0.68)
_BG_KINDS = _LIGHT_DIRECTIONS * len(_LIGHT_FALLOFF) * len(_FLOORS)


@lru_cache(maxsize=128)
def _background_tile(kind: int, size: int) -> Image.Image:
    x, y = _grid(size)
    fy, fx = y / size, x / size
    top = _RAMP - 1
    direction, kind = kind % _LIGHT_DIRECTIONS, kind // _LIGHT_DIRECTIONS
    falloff, floor_y = _LIGHT_FALLOFF[kind % len(_LIGHT_FALLOFF)], _FLOORS[kind // len(_LIGHT_FALLOFF)]
    angle = direction * 2 * math.pi / _LIGHT_DIRECTIONS
    # 0 where the light comes from, 1 at the far corner: the wall darkens away from the light.
    away = 0.5 + 0.7 * (math.cos(angle) * (fx - 0.5) + math.sin(angle) * (fy - 0.5))
    idx = _WALL0 + np.clip(np.rint(top - falloff * away), 0, top)
    if floor_y is not None:
        floor = _FLOOR0 + np.clip(np.rint(top - 6 - 8 * (1 - fy) - 0.5 * falloff * away), 0, top)
        idx = np.where(fy >= floor_y, floor, idx)
    return Image.fromarray(idx.astype(np.uint8), "L")


@lru_cache(maxsize=256)
def _shadow_tile(w: int, h: int) -> Image.Image:
    """Soft ellipse of index offsets to subtract (darker = lower index within a ramp)."""
    pad = max(2, h // 2)
    im = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    ImageDraw.Draw(im).ellipse([pad, pad, pad + w, pad + h], fill=14)
    return im.filter(ImageFilter.GaussianBlur(max(1.0, h / 3)))


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
        scale=0.85 + 0.15 * u[0] / 255, angle=-12.0 + 24.0 * u[1] / 255,
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

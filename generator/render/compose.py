"""One ``Look`` in, one RGB image out: the studio and the product surface in palette-index space, then
flat-coloured outlines and trim on top."""
from __future__ import annotations

import math

from PIL import Image, ImageChops, ImageDraw

from generator.render.geometry import trim_bucket
from generator.render.palette import _EDGE, _detail_colours
from generator.render.shapes import _SHAPES, SILHOUETTES, _plan
from generator.render.studio import _background_tile, _cast_shadow, _palette, _pose, _transform
from generator.render.surfaces import _PATTERNS, _TEXTURES, PATTERNS, TEXTURES, _product_tile
from generator.schema import Look


def _validate(look: Look, size: int) -> None:
    if look.silhouette not in _SHAPES:
        raise ValueError(f"unknown silhouette {look.silhouette!r}; valid: {', '.join(SILHOUETTES)}")
    if look.texture not in _TEXTURES:
        raise ValueError(f"unknown texture {look.texture!r}; valid: {', '.join(TEXTURES)}")
    if look.pattern not in _PATTERNS:
        raise ValueError(f"unknown pattern {look.pattern!r}; valid: {', '.join(PATTERNS)}")
    if len(look.rgb) != 3 or not all(0 <= int(c) <= 255 for c in look.rgb):
        raise ValueError(f"rgb must be three ints in 0..255, got {look.rgb!r}")
    if not (isinstance(look.trim, (int, float)) and math.isfinite(look.trim)):
        raise ValueError(f"trim must be a finite number in 0..1, got {look.trim!r}")
    if not 32 <= size <= 2048:
        raise ValueError(f"size must be in 32..2048, got {size}")


def render_with_mask(look: Look, size: int = 336, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """`render`, plus the product mask (L, 255 = product surface) used for tests and crops."""
    _validate(look, size)
    rgb = tuple(int(c) for c in look.rgb)
    pose = _pose(seed, look.variant)
    plan = _plan(look.silhouette, look.category1, trim_bucket(look.trim))
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
    # The surface moves with the product: sheen bands and cables sit where they would on a centred
    # product, wherever the pose puts it (the tile wraps round, but the product never spans the seam).
    cx, cy = (pts.min(axis=0) + pts.max(axis=0)) / 2 - size / 2
    tile = ImageChops.offset(_product_tile(look.texture, look.pattern, size, pose.mirrored), round(cx), round(cy))
    canvas.paste(tile, (0, 0), mask)
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

"""A :class:`generator.report.svg.Figure` drawn as a PNG with Pillow (for the dataset card: the Hub renders
Markdown images, not HTML). Same figure, same bytes."""
from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from generator.report.svg import Circle, Figure, Line, Polyline, Rect, Text

_ANCHOR = {"start": "ls", "middle": "ms", "end": "rs"}


@lru_cache(maxsize=32)
def _font(size: int):
    return ImageFont.load_default(size=size)


def _rgb(color: str, opacity: float = 1.0) -> tuple[int, int, int, int]:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), round(255 * opacity)


def png(fig: Figure, scale: int = 2) -> bytes:
    """The figure at ``scale`` x its CSS size, on white."""
    img = Image.new("RGB", (fig.width * scale, fig.height * scale), "white")
    draw = ImageDraw.Draw(img, "RGBA")
    items = ([Text(4, 14, fig.title, size=12, bold=True)] if fig.title else []) + list(fig.items)
    for item in items:
        _draw(draw, item, scale)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _draw(draw: ImageDraw.ImageDraw, item, s: int) -> None:
    if isinstance(item, Rect):
        if item.w <= 0 or item.h <= 0:
            return
        box = (item.x * s, item.y * s, (item.x + item.w) * s - 1, (item.y + item.h) * s - 1)
        draw.rectangle(box, fill=_rgb(item.fill, item.opacity), outline=_rgb(item.stroke) if item.stroke else None)
    elif isinstance(item, Line):
        draw.line((item.x1 * s, item.y1 * s, item.x2 * s, item.y2 * s), fill=_rgb(item.stroke),
                  width=max(1, round(item.width * s)))
    elif isinstance(item, Text):
        font = _font(item.size * s)
        draw.text((item.x * s, item.y * s), item.text, fill=_rgb(item.fill), font=font, anchor=_ANCHOR[item.anchor],
                  stroke_width=1 if item.bold else 0, stroke_fill=_rgb(item.fill))
    elif isinstance(item, Circle):
        r = item.r * s
        draw.ellipse((item.cx * s - r, item.cy * s - r, item.cx * s + r, item.cy * s + r),
                     fill=_rgb(item.fill, item.opacity))
    elif isinstance(item, Polyline) and len(item.points) > 1:
        draw.line([(x * s, y * s) for x, y in item.points], fill=_rgb(item.stroke), width=max(1, round(item.width * s)))

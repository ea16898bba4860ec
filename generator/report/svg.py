"""Tiny dependency-free charts: each chart function lays out a :class:`Figure` (rectangles, lines, text,
circles, polylines) that renders as inline SVG (:meth:`Figure.svg`) or as a PNG (:mod:`generator.report.raster`).

    fig = bar_chart(["WOMAN", "MAN"], [1200, 900], title="rows per category1")
    html = fig.svg()

The same inputs give the same bytes: coordinates are rounded, nothing depends on a clock or a dict order
the caller did not choose. Charts: bars (optionally grouped), histogram (one or several series over the
same edges), box plots, a two-level treemap, scatter (linear or log axes) and lines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Mapping, Sequence

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
INK, MUTED, GRID = "#222", "#666", "#e3e3e3"
FONT = 11


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    tip: str = ""          # hover text (an SVG <title>)
    opacity: float = 1.0
    stroke: str = ""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str = MUTED
    width: float = 1.0
    dash: bool = False


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"   # start | middle | end
    size: int = FONT
    fill: str = INK
    bold: bool = False


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str
    tip: str = ""
    opacity: float = 0.7


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    stroke: str
    width: float = 1.5


@dataclass
class Figure:
    width: int
    height: int
    title: str = ""
    items: list = field(default_factory=list)

    def add(self, *items) -> "Figure":
        self.items.extend(items)
        return self

    def svg(self) -> str:
        """Inline SVG markup (no XML declaration), sized in CSS pixels, scalable by its viewBox."""
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.width} {self.height}" '
                 f'width="{self.width}" height="{self.height}" role="img" aria-label="{escape(self.title)}" '
                 f'font-family="sans-serif" font-size="{FONT}">']
        if self.title:
            parts.append(_svg_item(Text(4, 14, self.title, bold=True, size=12)))
        parts += [_svg_item(item) for item in self.items]
        parts.append("</svg>")
        return "".join(parts)


def _n(v: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros (stable bytes)."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _tip(text: str) -> str:
    return f"<title>{escape(text)}</title>" if text else ""


def _svg_item(item) -> str:
    if isinstance(item, Rect):
        extra = (f' fill-opacity="{item.opacity:g}"' if item.opacity != 1 else "") + \
                (f' stroke="{item.stroke}"' if item.stroke else "")
        body = f'x="{_n(item.x)}" y="{_n(item.y)}" width="{_n(max(item.w, 0))}" height="{_n(max(item.h, 0))}"'
        if item.tip:
            return f'<rect {body} fill="{item.fill}"{extra}>{_tip(item.tip)}</rect>'
        return f'<rect {body} fill="{item.fill}"{extra}/>'
    if isinstance(item, Line):
        dash = ' stroke-dasharray="4 3"' if item.dash else ""
        return (f'<line x1="{_n(item.x1)}" y1="{_n(item.y1)}" x2="{_n(item.x2)}" y2="{_n(item.y2)}" '
                f'stroke="{item.stroke}" stroke-width="{item.width:g}"{dash}/>')
    if isinstance(item, Text):
        weight = ' font-weight="bold"' if item.bold else ""
        size = f' font-size="{item.size}"' if item.size != FONT else ""
        return (f'<text x="{_n(item.x)}" y="{_n(item.y)}" text-anchor="{item.anchor}" fill="{item.fill}"'
                f'{size}{weight}>{escape(item.text)}</text>')
    if isinstance(item, Circle):
        return (f'<circle cx="{_n(item.cx)}" cy="{_n(item.cy)}" r="{_n(item.r)}" fill="{item.fill}" '
                f'fill-opacity="{item.opacity:g}">{_tip(item.tip)}</circle>')
    points = " ".join(f"{_n(x)},{_n(y)}" for x, y in item.points)
    return f'<polyline points="{points}" fill="none" stroke="{item.stroke}" stroke-width="{item.width:g}"/>'


# --------------------------------------------------------------------------------------------------
# Scales and axes


def fmt(v: float) -> str:
    """A short number for labels: 1,990 / 0.057 / 1.2M."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [round(start + k * step, 10) for k in range(int(math.ceil((hi - start) / step)) + 1)]


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    a: float      # pixel of lo
    b: float      # pixel of hi
    log: bool = False

    def __call__(self, v: float) -> float:
        lo, hi, v = (math.log10(self.lo), math.log10(self.hi), math.log10(max(v, 1e-12))) if self.log \
            else (self.lo, self.hi, v)
        span = hi - lo or 1.0
        return self.a + (v - lo) / span * (self.b - self.a)

    def ticks(self) -> list[float]:
        if not self.log:
            return [t for t in nice_ticks(self.lo, self.hi) if self.lo <= t <= self.hi]
        lo, hi = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
        steps = (1, 2, 5) if hi - lo <= 3 else (1,)   # few decades: 1-2-5 ticks, else one a decade
        return [m * 10.0 ** k for k in range(lo, hi + 1) for m in steps if self.lo <= m * 10.0 ** k <= self.hi]


def _x_axis(fig: Figure, sx: Scale, y: float, top: float) -> None:
    for t in sx.ticks():
        x = sx(t)
        fig.add(Line(x, top, x, y, GRID), Text(x, y + 13, fmt(t), "middle", 10, MUTED))
    fig.add(Line(sx.a, y, sx.b, y, MUTED))


def _y_axis(fig: Figure, sy: Scale, x: float, right: float) -> None:
    for t in sy.ticks():
        y = sy(t)
        fig.add(Line(x, y, right, y, GRID), Text(x - 4, y + 3, fmt(t), "end", 10, MUTED))
    fig.add(Line(x, sy.a, x, sy.b, MUTED))


def _legend(fig: Figure, names: Sequence[str], x: float, y: float, colors: Sequence[str]) -> None:
    for k, name in enumerate(names):
        fig.add(Rect(x, y + 16 * k - 9, 10, 10, colors[k % len(colors)]), Text(x + 14, y + 16 * k, name, size=10))


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Charts


def bar_chart(labels: Sequence[str], series: Mapping[str, Sequence[float]] | Sequence[float], *, title: str = "",
              width: int = 520, value_fmt=fmt, colors: Sequence[str] | None = None, label_chars: int = 28,
              max_value: float | None = None) -> Figure:
    """Horizontal bars, one row a label; ``series`` a list of values, or name -> values for grouped bars."""
    groups = dict(series) if isinstance(series, Mapping) else {"": list(series)}
    per_label = colors is not None and len(colors) == len(labels)   # one colour a bar (e.g. colour swatches)
    colors = list(colors or PALETTE)
    per, bar = len(groups), 14
    row_h = per * bar + 8
    top, left = (24 if title else 6) + (16 * per if per > 1 else 0), min(8 + 6.2 * label_chars, width * 0.45)
    fig = Figure(width, int(top + row_h * len(labels) + 8), title)
    if per > 1:
        _legend(fig, list(groups), left, top - 16 * per + 9, colors)
    peak = max_value if max_value is not None else max([v for vs in groups.values() for v in vs if v is not None] or [1])
    sx = Scale(0, peak or 1, left, width - 60)
    for i, label in enumerate(labels):
        y0 = top + i * row_h
        fig.add(Text(left - 6, y0 + row_h / 2 + 3, _clip(str(label), label_chars), "end"))
        for k, (name, values) in enumerate(groups.items()):
            v = values[i]
            if v is None:
                continue
            color = colors[k % len(colors)] if per > 1 else colors[i % len(colors)] if per_label else colors[0]
            y = y0 + 4 + k * bar
            tip = f"{label}{' · ' + name if name else ''}: {value_fmt(v)}"
            fig.add(Rect(left, y, sx(v) - left, bar - 2, color, tip),
                    Text(sx(v) + 4, y + bar - 4, value_fmt(v), size=10, fill=MUTED))
    return fig


def histogram(edges: Sequence[float], series: Mapping[str, Sequence[float]], *, title: str = "", width: int = 520,
              height: int = 220, x_label: str = "", colors: Sequence[str] = PALETTE, log_x: bool = False,
              markers: Mapping[str, float] | None = None) -> Figure:
    """Bars over ``edges`` (len(counts) + 1), several series overlaid with transparency; ``markers``:
    label -> x drawn as dashed vertical lines (e.g. a baseline's 5th percentile)."""
    top, left, bottom = (28 if title else 10) + 16 * (len(series) > 1) * len(series), 48, height - 30
    fig = Figure(width, height, title)
    peak = max([c for cs in series.values() for c in cs] or [1]) or 1
    sx = Scale(edges[0], edges[-1], left, width - 14, log=log_x)
    sy = Scale(0, peak, bottom, top)
    _y_axis(fig, sy, left, width - 14)
    alpha = 1.0 if len(series) == 1 else 0.55
    for k, (name, counts) in enumerate(series.items()):
        for i, c in enumerate(counts):
            if c:
                x0, x1 = sx(edges[i]), sx(edges[i + 1])
                fig.add(Rect(x0, sy(c), max(x1 - x0 - 1, 1), bottom - sy(c), colors[k % len(colors)],
                             f"{name + ': ' if name else ''}{fmt(edges[i])}–{fmt(edges[i + 1])}: {fmt(c)}", alpha))
    _x_axis(fig, sx, bottom, top)
    for j, (label, x) in enumerate(sorted((markers or {}).items())):
        px = sx(x)
        fig.add(Line(px, top, px, bottom, INK, 1.2, dash=True), Text(px + 3, top + 10 + 12 * j, label, size=10))
    if len(series) > 1:
        _legend(fig, list(series), left + 6, (28 if title else 10), colors)
    if x_label:
        fig.add(Text((left + width) / 2, height - 4, x_label, "middle", 10, MUTED))
    return fig


def box_plot(groups: Mapping[str, Mapping[str, float]], *, title: str = "", width: int = 560, log: bool = True,
             x_label: str = "", label_chars: int = 24) -> Figure:
    """Horizontal box plots; each group has min, q1, median, q3, max (and n for the label)."""
    row_h, top = 22, 24 if title else 6
    left = 8 + 6.2 * label_chars
    fig = Figure(width, int(top + row_h * len(groups) + 34), title)
    lo = min(g["min"] for g in groups.values()) if groups else 1
    hi = max(g["max"] for g in groups.values()) if groups else 10
    if log:
        lo, hi = max(lo, 1e-9) / 1.25, max(hi, 1e-9) * 1.25
    sx = Scale(lo, hi, left, width - 24, log=log)
    bottom = top + row_h * len(groups)
    _x_axis(fig, sx, bottom + 2, top)
    for i, (name, g) in enumerate(groups.items()):
        y = top + i * row_h + row_h / 2
        color = PALETTE[i % len(PALETTE)]
        tip = (f"{name}: n={fmt(g.get('n', 0))}, min {fmt(g['min'])}, q1 {fmt(g['q1'])}, median {fmt(g['median'])},"
               f" q3 {fmt(g['q3'])}, max {fmt(g['max'])}")
        fig.add(Text(left - 6, y + 4, _clip(f"{name} ({g.get('n', 0):,})", label_chars)
                     if "n" in g else _clip(name, label_chars), "end"),
                Line(sx(g["min"]), y, sx(g["max"]), y, MUTED),
                Line(sx(g["min"]), y - 5, sx(g["min"]), y + 5, MUTED),
                Line(sx(g["max"]), y - 5, sx(g["max"]), y + 5, MUTED),
                Rect(sx(g["q1"]), y - 7, max(sx(g["q3"]) - sx(g["q1"]), 1.5), 14, color, tip, 0.8),
                Line(sx(g["median"]), y - 8, sx(g["median"]), y + 8, INK, 2))
    if x_label:
        fig.add(Text((left + width) / 2, fig.height - 4, x_label, "middle", 10, MUTED))
    return fig


def _squarify(items: list[tuple[str, float]], x: float, y: float, w: float, h: float):
    """Squarified treemap layout (Bruls et al.): (name, value) sorted descending -> [(name, value, x, y, w, h)].
    Each row of blocks runs along the shorter side of what is left, grown while its worst aspect improves."""
    rest = [it for it in items if it[1] > 0]
    total = sum(v for _, v in rest)
    if not rest or w <= 0 or h <= 0:
        return []
    scale = w * h / total   # pixels of area a unit of value

    def worst(row: list[tuple[str, float]], side: float) -> float:
        s = sum(v for _, v in row) * scale
        return max(max(side * side * v * scale / (s * s), s * s / (side * side * v * scale)) for _, v in row)

    out = []
    while rest:
        side = min(w, h)
        row = [rest[0]]
        while len(row) < len(rest) and worst(row + [rest[len(row)]], side) <= worst(row, side):
            row.append(rest[len(row)])
        thick = sum(v for _, v in row) * scale / side
        pos = 0.0
        for name, v in row:
            length = v * scale / thick
            out.append((name, v, x, y + pos, thick, length) if w >= h else (name, v, x + pos, y, length, thick))
            pos += length
        if w >= h:
            x, w = x + thick, w - thick
        else:
            y, h = y + thick, h - thick
        rest = rest[len(row):]
    return out


def treemap(tree: Mapping[str, Mapping[str, float]], *, title: str = "", width: int = 720, height: int = 380,
            total_label: str = "rows") -> Figure:
    """Two levels: group -> {leaf: value}. Groups get a colour and a header; leaves are labelled when they fit."""
    top = 24 if title else 0
    fig = Figure(width, height, title)
    groups = sorted(((g, sum(leaves.values())) for g, leaves in tree.items()), key=lambda kv: (-kv[1], kv[0]))
    grand = sum(v for _, v in groups) or 1
    for k, (g, gv, gx, gy, gw, gh) in enumerate(_squarify(groups, 0, top, width, height - top)):
        color = PALETTE[k % len(PALETTE)]
        fig.add(Rect(gx, gy, gw, gh, "#fff"))
        head = 14 if gh > 30 and gw > 40 else 0
        leaves = sorted(tree[g].items(), key=lambda kv: (-kv[1], kv[0]))
        for name, v, lx, ly, lw, lh in _squarify(leaves, gx + 1, gy + head + 1, gw - 2, gh - head - 2):
            fig.add(Rect(lx, ly, lw, lh, color, f"{g} / {name}: {v:,.0f} {total_label} ({v / grand:.1%})", 0.75, "#fff"))
            if lw > 44 and lh > 14:
                fig.add(Text(lx + 3, ly + 11, _clip(name, int(lw / 6)), size=9, fill="#fff"))
        if head:
            fig.add(Text(gx + 3, gy + 11, _clip(f"{g} {gv / grand:.0%}", int(gw / 6.5)), size=10, bold=True))
    return fig


def scatter(points: Sequence[tuple[float, float]], *, title: str = "", width: int = 420, height: int = 320,
            log_x: bool = False, log_y: bool = False, x_label: str = "", y_label: str = "", diagonal: bool = False,
            tips: Sequence[str] | None = None) -> Figure:
    """Points on linear or log axes; ``diagonal`` draws y = x (predicted vs true)."""
    top, left, bottom = 24 if title else 8, 52, height - 30
    fig = Figure(width, height, title)
    xs, ys = [p[0] for p in points] or [1], [p[1] for p in points] or [1]
    sx = _data_scale(xs, left, width - 12, log_x)
    sy = _data_scale(ys, bottom, top, log_y)
    _y_axis(fig, sy, left, width - 12)
    _x_axis(fig, sx, bottom, top)
    if diagonal:
        lo, hi = max(sx.lo, sy.lo), min(sx.hi, sy.hi)
        fig.add(Line(sx(lo), sy(lo), sx(hi), sy(hi), INK, 1, dash=True))
    for i, (x, y) in enumerate(points):
        fig.add(Circle(sx(x), sy(y), 2.5, PALETTE[0], tips[i] if tips else ""))
    if x_label:
        fig.add(Text((left + width) / 2, height - 4, x_label, "middle", 10, MUTED))
    if y_label:
        fig.add(Text(4, top - 4 if title else 10, y_label, size=10, fill=MUTED))
    return fig


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str = "", width: int = 520,
               height: int = 240, log_y: bool = False, x_label: str = "") -> Figure:
    """One polyline a series over shared axes (loss curves, throughput over workers, ...)."""
    top, left, bottom = (28 if title else 10) + 16 * (len(series) > 1) * len(series), 52, height - 30
    fig = Figure(width, height, title)
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts] or [0, 1]
    sx = _data_scale(xs, left, width - 12, False)
    sy = _data_scale(ys, bottom, top, log_y)
    _y_axis(fig, sy, left, width - 12)
    _x_axis(fig, sx, bottom, top)
    for k, pts in enumerate(series.values()):
        fig.add(Polyline(tuple((sx(x), sy(y)) for x, y in pts), PALETTE[k % len(PALETTE)]))
    if len(series) > 1:
        _legend(fig, list(series), left + 6, 28 if title else 10, PALETTE)
    if x_label:
        fig.add(Text((left + width) / 2, height - 4, x_label, "middle", 10, MUTED))
    return fig


def _data_scale(values: Sequence[float], a: float, b: float, log: bool) -> Scale:
    if log:
        pos = [v for v in values if v > 0] or [1]
        return Scale(10 ** math.floor(math.log10(min(pos))), 10 ** math.ceil(math.log10(max(pos))), a, b, True)
    ticks = nice_ticks(min(values), max(values))
    return Scale(ticks[0], ticks[-1], a, b)

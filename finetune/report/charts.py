"""The run report's charts, on the dataset report's SVG primitives (through ``generator.api``), plus the two
that module lacks: lines with markers and reference lines (``xy_chart``: curves, accuracy over samples seen,
scaling over workers) and a confusion-matrix heatmap (``confusion_heatmap``)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Mapping, Sequence

from generator.api import report_svg as svg

Figure, Rect, Line, Text, Circle, Polyline, Scale = svg.Figure, svg.Rect, svg.Line, svg.Text, svg.Circle, svg.Polyline, svg.Scale
PALETTE, INK, MUTED, GRID, fmt = svg.PALETTE, svg.INK, svg.MUTED, svg.GRID, svg.fmt


def _scale(values: Sequence[float], a: float, b: float, log: bool, fixed: tuple[float, float] | None) -> Scale:
    if fixed is not None:
        return Scale(fixed[0], fixed[1], a, b, log)
    if log:
        pos = [v for v in values if v > 0] or [1.0]
        lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
        return Scale(10.0 ** lo, 10.0 ** max(hi, lo + 1), a, b, True)
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if lo == 0 else (min(0.0, lo), max(0.0, hi) * 1.1 or 1)
    ticks = svg.nice_ticks(lo, hi)
    return Scale(ticks[0], ticks[-1], a, b)


def _axes(fig: Figure, sx: Scale, sy: Scale, x_fmt: Callable, y_fmt: Callable, x_ticks: Sequence[float] | None) -> None:
    left, right, top, bottom = sx.a, sx.b, sy.b, sy.a
    for t in sy.ticks():
        fig.add(Line(left, sy(t), right, sy(t), GRID), Text(left - 4, sy(t) + 3, y_fmt(t), "end", 10, MUTED))
    for t in (x_ticks if x_ticks is not None else sx.ticks()):
        fig.add(Line(sx(t), top, sx(t), bottom, GRID), Text(sx(t), bottom + 13, x_fmt(t), "middle", 10, MUTED))
    fig.add(Line(left, bottom, right, bottom, MUTED), Line(left, top, left, bottom, MUTED))


def xy_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str = "", width: int = 520,
             height: int = 240, x_label: str = "", y_fmt: Callable = fmt, x_fmt: Callable = fmt,
             log_x: bool = False, log_y: bool = False, y_range: tuple[float, float] | None = None,
             hlines: Mapping[str, float] | None = None, dashed: Sequence[str] = (),
             x_ticks: Sequence[float] | None = None, notes: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """A line with a marker at every point, a series; ``dashed`` series drawn dashed (an ideal line);
    ``hlines``: label -> y as dashed reference lines (baselines, limits); ``notes``: a label a point."""
    hlines = dict(hlines or {})
    names = list(series) + list(hlines) if len(series) > 1 or hlines else []
    top, left, bottom = (28 if title else 10) + 14 * len(names), 56, height - 30
    fig = Figure(width, height + 14 * len(names), title)
    bottom += 14 * len(names)
    xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
    ys = [y for pts in series.values() for _, y in pts] + list(hlines.values()) or [0.0, 1.0]
    sx = _scale(xs, left, width - 16, log_x, None)
    sy = _scale(ys, bottom, top, log_y, y_range)
    _axes(fig, sx, sy, x_fmt, y_fmt, x_ticks)
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        if name in dashed:
            fig.add(*[Line(sx(a), sy(b), sx(c), sy(d), color, 1.5, dash=True) for (a, b), (c, d) in zip(pts, pts[1:])])
        elif len(pts) > 1:
            fig.add(Polyline(tuple((sx(x), sy(y)) for x, y in pts), color))
        for i, (x, y) in enumerate(pts):
            fig.add(Circle(sx(x), sy(y), 2.5 if len(pts) > 40 else 3.5, color, f"{name}: {x_fmt(x)} -> {y_fmt(y)}", 0.9))
            label = (notes or {}).get(name, ())
            if i < len(label) and label[i]:
                fig.add(Text(sx(x) + 5, sy(y) - 6, label[i], size=10, fill=color))
    for j, (name, y) in enumerate(hlines.items()):
        color = PALETTE[(len(series) + j) % len(PALETTE)]
        fig.add(Line(left, sy(y), width - 16, sy(y), color, 1.2, dash=True))
    for k, name in enumerate(names):   # the legend (none for a lone series: the title names it)
        y = (28 if title else 10) + 14 * k
        color = PALETTE[k % len(PALETTE)]
        fig.add(Line(left, y - 4, left + 16, y - 4, color, 2, dash=name in dashed or k >= len(series)),
                Text(left + 22, y, name if k < len(series) else f"{name}: {y_fmt(hlines[name])}", size=10))
    if x_label:
        fig.add(Text((left + width) / 2, fig.height - 4, x_label, "middle", 10, MUTED))
    return fig


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def norm(text: str | None) -> str:
    """Category names as evaluation compares them: upper case, single spaces."""
    return " ".join((text or "").upper().split())


MAX_EXTRA = 8    # answered categories that are no true class: the most common get a column, the rest "other"


def confusion_counts(predictions: Sequence[dict]) -> tuple[list[str], list[str], Counter]:
    """Rows (true category3, most rows first), columns (the true classes, then other answered categories)
    and the counts, over the parsed answers only: the cells sum to the number of parsed answers."""
    pairs = [(norm(p.get("true_category3_code")), norm(p.get("category3_code"))) for p in predictions if p.get("parsed")]
    support = Counter(norm(p.get("true_category3_code")) for p in predictions)
    rows = sorted(support, key=lambda c: (-support[c], c))
    extra = Counter(q for _, q in pairs if q not in support)
    kept = sorted(extra, key=lambda c: (-extra[c], c))[:MAX_EXTRA]
    other = "(other answers)" if len(extra) > len(kept) else None
    counts = Counter((t, q if q in support or q in kept else other) for t, q in pairs)
    return rows, rows + sorted(kept) + ([other] if other else []), counts


def confusion_heatmap(rows: Sequence[str], cols: Sequence[str], counts: Mapping[tuple[str, str], int], *,
                      title: str = "", label_chars: int = 26) -> Figure:
    """Rows: true classes; columns, numbered (the key is the row labels, then the extra columns): the
    answers. A cell's shade is its share of the row; the diagonal is green."""
    cell = max(12, min(28, int(560 / max(len(cols), 1))))
    number = {c: k + 1 for k, c in enumerate(cols)}
    left, top = 10 + 6.2 * (label_chars + 4), (26 if title else 6) + 16
    fig = Figure(max(int(left + cell * len(cols) + 20), int(left + 440)), int(top + cell * len(rows) + 30 + 14 * (len(cols) - len(rows))), title)
    for j, c in enumerate(cols):
        fig.add(Text(left + cell * (j + 0.5), top - 4, str(number[c]), "middle", 9, MUTED))
    for i, t in enumerate(rows):
        total = sum(counts.get((t, c), 0) for c in cols)
        y = top + cell * i
        fig.add(Text(left - 6, y + cell / 2 + 4, _clip(f"{number[t]}  {t} ({total})", label_chars + 6), "end", 10))
        for j, c in enumerate(cols):
            n = counts.get((t, c), 0)
            share = n / total if total else 0.0
            color = "#59a14f" if t == c else PALETTE[0]
            fig.add(Rect(left + cell * j, y, cell - 1, cell - 1, color if n else "#f3f3f1",
                         f"true {t} -> answered {c}: {n} ({share:.0%} of the row)", max(0.12, share) if n else 1.0))
            if n and cell >= 14:
                fig.add(Text(left + cell * (j + 0.5), y + cell / 2 + 3, str(n), "middle", 9,
                             "#fff" if share > 0.55 else INK))
    y = top + cell * len(rows) + 16
    fig.add(Text(left, y, "columns: the answer (numbered as the rows); rows: the truth; parsed answers only",
                 size=10, fill=MUTED))
    for k, c in enumerate(cols[len(rows):]):
        fig.add(Text(left, y + 14 * (k + 1), f"{number[c]}  {c}", size=10, fill=MUTED))
    return fig


def price_scatter(predictions: Sequence[dict]) -> Figure | None:
    """Predicted against true full price (log axes, y = x dashed), for the answers with a positive price."""
    pts = [(p["true_full_price"], p["full_price"], p) for p in predictions
           if isinstance(p.get("full_price"), (int, float)) and p["full_price"] > 0
           and isinstance(p.get("true_full_price"), (int, float)) and p["true_full_price"] > 0]
    if not pts:
        return None
    tips = [f"test row {p['index']}: true {fmt(t)}, answered {fmt(a)} ({norm(p.get('true_category3_code'))})"
            for t, a, p in pts]
    return svg.scatter([(t, a) for t, a, _ in pts], title=f"Full price: answered vs true ({len(pts)} rows)",
                       width=460, height=360, log_x=True, log_y=True, x_label="true full price",
                       y_label="answered", diagonal=True, tips=tips)

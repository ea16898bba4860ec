"""``bench-report --html``: the saved pytest-benchmark runs as one self-contained page (inline SVG, no script,
nothing fetched when it is viewed). Per machine (host + device) and suite (the bench_*.py file): a table that
compares the runs (pytest-benchmark's ``--benchmark-compare``: the same benchmark name across saved runs) and
bars of each benchmark's figure relative to its first run; for the newest run, the recipes side by side (one
bar a measured recipe and batch size), ours against the peers with the ratio written, generation over workers
with the ideal line, and accuracy over training time beside the baselines. Same runs, same bytes."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from finetune.report.charts import xy_chart
from generator.api import report_page as page
from generator.api import report_svg as svg

Section, esc, table, figure, note = page.Section, page.esc, page.table, page.figure, page.note
fmt = svg.fmt
Run = Any   # bench.report.Run (path, data, label, env, device, machine, when, benchmarks); not imported: no cycle


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _infos(run: Run, kind: str) -> list[dict[str, Any]]:
    return [b.get("extra_info") or {} for b in run.benchmarks if (b.get("extra_info") or {}).get("kind") == kind]


def suite_of(bench: dict[str, Any]) -> str:
    """The benchmark's file (bench_train, bench_generate, ...), from its fullname."""
    return Path(str(bench.get("fullname", "?")).split("::")[0]).stem or "?"


def headline(bench: dict[str, Any]) -> tuple[float | None, str, bool]:
    """(value, unit, higher is better) of a benchmark: its headline figure, else pytest-benchmark's mean time."""
    info = bench.get("extra_info") or {}
    head = info.get("headline") or {}
    value = _number(head.get("value"))
    if value is not None:
        lower = any(c.get("figure") == head.get("figure") and c.get("higher_is_better") is False
                    for c in info.get("compare") or [])
        return value, str(head.get("unit") or head.get("figure") or ""), not lower
    return _number((bench.get("stats") or {}).get("mean")), "s (mean round)", False


def machines(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by machine (host, device), each oldest first; the machine with the newest run first."""
    by: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r.when, r.path.name)):
        by[run.machine].append(run)
    return dict(sorted(by.items(), key=lambda kv: (kv[1][-1].when, kv[0]), reverse=True))


def run_name(run: Run) -> str:
    return run.path.stem


def compare_table(runs: list[Run], suite: str) -> tuple[str, svg.Figure | None]:
    """The suite's benchmarks (rows) across the machine's runs (columns), the newest run's change against the
    run before it, and bars of each value relative to the benchmark's first run."""
    cells: dict[str, dict[str, tuple[float | None, str, bool]]] = {}
    for run in runs:
        for bench in run.benchmarks:
            if suite_of(bench) == suite:
                cells.setdefault(str(bench.get("name", "?")).removeprefix("test_"), {})[run_name(run)] = headline(bench)
    names = [run_name(r) for r in runs if any(run_name(r) in c for c in cells.values())]
    rows, rel = [], {n: [] for n in names}
    for bench, by_run in cells.items():
        seen = [by_run[n] for n in names if n in by_run and by_run[n][0] is not None]
        unit = seen[-1][1] if seen else ""
        change = "-"
        if len(seen) > 1 and seen[-2][0]:
            pct = 100 * (seen[-1][0] / seen[-2][0] - 1)
            better = (pct > 0) == seen[-1][2]
            change = f'<span class="{"ok" if better else "bad"}">{pct:+.1f}%</span>' if abs(pct) >= 0.5 else f"{pct:+.1f}%"
        rows.append([esc(bench), esc(unit)] + [fmt(by_run[n][0]) if n in by_run else "" for n in names] + [change])
        for n in names:
            v = by_run.get(n, (None,))[0]
            rel[n].append(v / seen[0][0] if v is not None and seen and seen[0][0] else None)
    html = table(["benchmark", "unit", *names, "newest vs previous"], rows, numeric=range(2, len(names) + 3), raw=True)
    if len(names) < 2:
        return html, None
    fig = svg.bar_chart(list(cells), rel, title="Each benchmark relative to its first saved run (1.00x)", width=620,
                        value_fmt=lambda v: f"{v:.2f}x", label_chars=30)
    return html, fig


def recipe_bars(runs: list[Run], key: str, title: str, unit: str) -> svg.Figure | None:
    """One bar a recipe and batch size measured (bench_train's train_step results), coloured by recipe;
    ``unit`` ends the title."""
    bars = []
    for run in runs:
        for bench in run.benchmarks:
            info = bench.get("extra_info") or {}
            value = _number(info.get(key))
            if info.get("kind") == "train_step" and value is not None:
                where = f"{run.label} · " if len(runs) > 1 else ""
                bars.append((f"{where}{info.get('series', '?')} · bs {info.get('batch_size', '?')}", value,
                             str(info.get("series", "?"))))
    if not bars:
        return None
    recipes = sorted({s for _, _, s in bars})
    colors = [svg.PALETTE[recipes.index(s) % len(svg.PALETTE)] for _, _, s in bars]
    return svg.bar_chart([b[0] for b in bars], [b[1] for b in bars], title=f"{title} ({unit})", width=640, colors=colors,
                         label_chars=44, value_fmt=fmt)


def peer_bars(run: Run, figure_name: str = "samples/s") -> svg.Figure | None:
    """Ours against each peer it was measured beside (``extra_info["compare"]`` of our training benchmarks):
    two bars a pair, the ratio written beside them."""
    pairs = []
    for bench in run.benchmarks:
        info = bench.get("extra_info") or {}
        if info.get("kind") != "train_step" or not str(info.get("series", "")).startswith("ours"):
            continue   # a peer's own comparisons (TRL vs the recipe) are in the table
        for c in info.get("compare") or []:
            v, ref = _number(c.get("value")), _number(c.get("reference"))
            if c.get("figure") == figure_name and v is not None and ref is not None:
                pairs.append((f"{info.get('series', '?')} · bs {info.get('batch_size', '?')}",
                              f"{c.get('against', '?')}", v, ref, c.get("higher_is_better", True)))
    if not pairs:
        return None
    left, bar, width = 300, 13, 680
    fig = svg.Figure(width, 30 + 38 * len(pairs) + 24, f"Ours vs peers: {figure_name} ({run.label})")
    sx = svg.Scale(0, max(max(p[2], p[3]) for p in pairs) or 1, left, width - 120)
    for i, (ours, peer, v, ref, higher) in enumerate(pairs):
        y = 30 + 38 * i
        ratio = v / ref if ref else math.nan
        good = (ratio > 1) == bool(higher)
        fig.add(svg.Text(left - 6, y + 11, ours[:48], "end"), svg.Text(left - 6, y + 11 + bar, f"vs {peer}"[:48], "end", 10, svg.MUTED),
                svg.Rect(left, y, sx(v) - left, bar - 1, svg.PALETTE[0], f"{ours}: {fmt(v)}"),
                svg.Rect(left, y + bar, sx(ref) - left, bar - 1, svg.PALETTE[9], f"{peer}: {fmt(ref)}"),
                svg.Text(sx(v) + 4, y + 10, fmt(v), size=10, fill=svg.MUTED),
                svg.Text(sx(ref) + 4, y + 10 + bar, fmt(ref), size=10, fill=svg.MUTED),
                svg.Text(max(sx(v), sx(ref)) + 44, y + 16, f"{ratio:.2f}x", size=13, bold=True,
                         fill="#2e7d32" if good else "#c62828"))
    fig.add(svg.Rect(left, fig.height - 16, 10, 10, svg.PALETTE[0]), svg.Text(left + 14, fig.height - 7, "ours", size=10),
            svg.Rect(left + 60, fig.height - 16, 10, 10, svg.PALETTE[9]), svg.Text(left + 74, fig.height - 7, "peer", size=10))
    return fig


def scaling_chart(run: Run) -> svg.Figure | None:
    """End-to-end generation rows/s over worker processes, the ideal (linear from one worker) dashed."""
    measured = sorted((_number(i.get("workers")), _number(i.get("rows_per_s")), _number(i.get("scaling_efficiency")))
                      for i in _infos(run, "generate_e2e")
                      if _number(i.get("workers")) is not None and _number(i.get("rows_per_s")) is not None)
    if not measured:
        return None
    pts = [(x, y) for x, y, _ in measured]
    first = pts[0]
    ideal = [(x, first[1] * x / first[0]) for x, _ in pts] if first[0] > 0 else []
    return xy_chart({"measured": pts, "ideal (linear from the first)": ideal}, dashed=("ideal (linear from the first)",),
                    title=f"Generation end to end vs workers ({run.label})", x_label="worker processes",
                    x_ticks=[x for x, _ in pts], notes={"measured": [f"{e:.0%}" if e is not None else "" for _, _, e in measured]},
                    y_range=(0, svg.nice_ticks(0, max(y for _, y in pts + ideal))[-1]), width=520, height=240)


def accuracy_chart(run: Run) -> svg.Figure | None:
    """Category3 accuracy and parse rate over training seconds (labels: epochs), the baseline and limit dashed."""
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    hlines: dict[str, float] = {}
    for info in _infos(run, "accuracy"):
        x, epochs = _number(info.get("train_seconds")), _number(info.get("epochs"))
        for key, label in (("category3_accuracy", "category3 accuracy"), ("parse_rate", "parse rate")):
            if x is not None and _number(info.get(key)) is not None:
                series[f"{label} ({info.get('model', '?')})"].append((epochs if epochs is not None else x, x, info[key]))
        for key, label in (("baseline_category3_accuracy", "majority baseline (category3)"),
                           ("limit_category3_accuracy", "data's limit (category3)")):
            if _number(info.get(key)) is not None:
                hlines[label] = info[key]
    if not series:
        return None
    ordered = {name: sorted(pts) for name, pts in sorted(series.items())}   # joined in epoch order
    return xy_chart({n: [(x, y) for _, x, y in pts] for n, pts in ordered.items()}, hlines=hlines, y_range=(0, 1),
                    title=f"Accuracy vs training time ({run.label})", x_label="training seconds (labels: epochs)",
                    notes={n: [f"{e:g} ep" for e, _, _ in pts] for n, pts in ordered.items()},
                    y_fmt=lambda v: f"{100 * v:.0f}%", width=620, height=260)


def unit_bars(run: Run, suite: str) -> list[svg.Figure]:
    """The newest run's figures of a suite, one bar chart a unit shared by two or more benchmarks."""
    by_unit: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for bench in run.benchmarks:
        value, unit, _ = headline(bench)
        if suite_of(bench) == suite and value is not None:
            by_unit[unit].append((str(bench.get("name", "?")).removeprefix("test_"), value))
    return [svg.bar_chart([n for n, _ in items], [v for _, v in items], title=f"{suite}: {unit} ({run.label})",
                          width=560, label_chars=34) for unit, items in sorted(by_unit.items()) if len(items) > 1]


def machine_section(k: int, key: tuple[str, str], runs: list[Run]) -> Section:
    newest = runs[-1]
    env = newest.env
    versions = ", ".join(f"{v} {env[v]}" for v in ("python", "torch", "transformers") if env.get(v))
    body = note(f"{env.get('device', '?')}: {newest.device}, {env.get('cpu_count', '?')} CPU cores; {versions}; "
                f"host {key[0]}; {len(runs)} saved run(s), oldest first")
    body += table(["run", "saved", "benchmarks", "command"],
                  [[run_name(r), f"{r.when:%Y-%m-%d %H:%M}", len(r.benchmarks), r.data.get("command") or "-"] for r in runs],
                  numeric=(2,))
    charts = [f for f in (recipe_bars([newest], "samples_per_s", f"Training recipes side by side, {newest.label}",
                                      "samples/s"),
                          recipe_bars([newest], "peak_memory_gib", f"Peak memory per recipe, {newest.label}", "GiB"),
                          peer_bars(newest), peer_bars(newest, "peak memory"), scaling_chart(newest),
                          accuracy_chart(newest)) if f is not None]
    if charts:
        body += f"<h3>Newest run: {esc(run_name(newest))}</h3>" + "".join(figure(f) for f in charts)
    for suite in sorted({suite_of(b) for r in runs for b in r.benchmarks}):
        html, fig = compare_table(runs, suite)
        body += f"<h3>{esc(suite)}</h3>{html}" + (figure(fig) if fig else "")
        body += "".join(figure(f) for f in unit_bars(newest, suite))
    return Section(f"m{k}", f"{newest.label} ({key[0]})", body)


def build_html(runs: list[Run], source: str) -> str:
    """The page of ``runs`` (every saved run: each machine's runs are compared)."""
    for run in runs:
        run.label = run.label or run.device
    groups = machines(runs)
    sections = [machine_section(k, key, rs) for k, (key, rs) in enumerate(groups.items())]
    subtitle = f"{len(runs)} saved run(s) on {len(groups)} machine(s), from {source}"
    return page.render_page("Benchmarks", subtitle, sections)


def write_html(runs: list[Run], path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(runs, source), encoding="utf-8")
    return path

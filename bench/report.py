"""``bench-report``: the saved benchmark runs as a table and as plots.

    bench-report                                  # newest run of each machine under bench/results
    bench-report --all                            # every saved run
    bench-report --results path/to/run.json --out /tmp/plots --no-plots
    bench-report --html                           # also report.html: every saved run, compared per machine

Reads the JSON files pytest-benchmark saves (``pytest bench --benchmark-only --benchmark-save=NAME``
stores them under ``bench/results/<machine id>/``; ``--benchmark-json FILE`` writes one anywhere).
By default only the newest run of each machine is shown - a machine is its host name and device
(GPU name, or the CPU model) - so a CPU box and a GPU box appear side by side and older runs of the
same box do not repeat them; ``--all`` shows every run.

The table has one row per figure: each benchmark's headline figure (``extra_info["headline"]``) and
its comparisons (``extra_info["compare"]``: this run's value, the reference measured or set beside
it, and their ratio). Plots (PNG, matplotlib's Agg backend), where the runs hold the data:

* ``throughput_vs_batch_size.png`` and ``memory_vs_batch_size.png`` - training steps (bench_train): a bar
  a recipe and batch size measured (the SVG charts of ``generator.api``, as PNG);
* ``generation_vs_workers.png`` - end-to-end generation rows/s against worker processes;
* ``accuracy_vs_training_time.png`` - category accuracy and parse rate against training seconds.

Bad input (no such folder, no result files, unreadable files only) is one line on stderr and exit
code 2; a missing matplotlib is one line and exit code 1 (``--no-plots`` still prints the table).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PROG = "bench-report"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
PLOTS = {
    "throughput": "throughput_vs_batch_size.png",
    "memory": "memory_vs_batch_size.png",
    "generation": "generation_vs_workers.png",
    "accuracy": "accuracy_vs_training_time.png",
}


class ReportError(ValueError):
    """Bad input; ``str(err)`` is one line with what to do."""


@dataclass
class Run:
    """One saved pytest-benchmark run."""

    path: Path
    data: dict[str, Any]
    label: str = ""

    @property
    def env(self) -> dict[str, Any]:
        return self.data.get("machine_info", {}).get("bench", {}) or {}

    @property
    def device(self) -> str:
        info = self.data.get("machine_info", {})
        return self.env.get("device_name") or info.get("cpu", {}).get("brand_raw") or info.get("machine") or "?"

    @property
    def machine(self) -> tuple[str, str]:
        return self.data.get("machine_info", {}).get("node", "?"), self.device

    @property
    def when(self) -> datetime:
        try:
            return datetime.fromisoformat(str(self.data["datetime"]).replace("Z", "+00:00")).replace(tzinfo=None)
        except (KeyError, ValueError):
            return datetime.fromtimestamp(self.path.stat().st_mtime)

    @property
    def benchmarks(self) -> list[dict[str, Any]]:
        return self.data.get("benchmarks", [])


@dataclass
class Point:
    x: float
    y: float
    note: str = ""
    order: float | None = None  # what the line follows (default x): epochs, for accuracy vs time


@dataclass
class Series:
    name: str
    points: list[Point] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading


def load_runs(results: Path) -> tuple[list[Run], list[str]]:
    """Every readable pytest-benchmark run under ``results`` (a folder or one file), and warnings."""
    if not results.exists():
        raise ReportError(f"{results} does not exist; run `pytest bench --benchmark-only --benchmark-save=NAME` "
                          "first, or pass --results FOLDER_OR_FILE")
    files = [results] if results.is_file() else sorted(results.rglob("*.json"))
    if not files:
        raise ReportError(f"no saved benchmark results (*.json) under {results}; run `pytest bench "
                          "--benchmark-only --benchmark-save=NAME` first")
    runs, warnings = [], []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.append(f"skipped {path}: not readable JSON ({str(err).splitlines()[0]})")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            continue  # other JSON kept beside the runs (a run's metrics.json, notes): not ours to judge
        runs.append(Run(path, data))
    if not runs:
        raise ReportError(f"none of the {len(files)} JSON file(s) under {results} is a pytest-benchmark result; "
                          "point --results at what `--benchmark-save` or `--benchmark-json` wrote")
    return runs, warnings


def select(runs: list[Run], every: bool) -> list[Run]:
    """The newest run per machine (host, device), or every run; oldest first, labelled for legends."""
    if every:
        chosen = sorted(runs, key=lambda r: r.when)
    else:
        newest: dict[tuple[str, str], Run] = {}
        for run in runs:
            if run.machine not in newest or run.when > newest[run.machine].when:
                newest[run.machine] = run
        chosen = sorted(newest.values(), key=lambda r: r.when)
    devices = [r.device for r in chosen]
    for run in chosen:
        run.label = _short_device(run.device)
        if devices.count(run.device) > 1:
            run.label += f" {run.when:%Y-%m-%d %H:%M}"
    return chosen


def _short_device(name: str) -> str:
    for noise in ("(R)", "(TM)", "CPU ", "NVIDIA ", " Processor"):
        name = name.replace(noise, "")
    return " ".join(name.split())


# --------------------------------------------------------------------------------------------
# The table


def fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value} {unit}".strip()
    size = abs(value)
    if value == 0:
        text = "0"
    elif size >= 100:
        text = f"{value:,.0f}"
    elif size >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if size >= 0.001 else f"{value:.2e}"
    return f"{text} {unit}".strip()


def table_rows(run: Run) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, figure, this run, reference, ratio) for each figure of a run."""
    rows = []
    for bench in run.benchmarks:
        info = bench.get("extra_info", {}) or {}
        name = str(bench.get("name", "?")).removeprefix("test_")
        mine = []
        head = info.get("headline")
        compares = info.get("compare") or []
        # A headline that a comparison repeats (same figure, same value) shows once, with its reference.
        if head and not any(c.get("figure") == head.get("figure") and c.get("value") == head.get("value")
                            for c in compares):
            mine.append((head.get("figure", ""), fmt(head.get("value"), head.get("unit", "")), "", ""))
        for c in compares:
            unit = c.get("unit", "")
            mine.append((c.get("figure", ""), fmt(c.get("value"), unit),
                         f"{fmt(c.get('reference'), unit)} ({c.get('against', '?')})", _ratio(c)))
        if not mine:  # saved by something that records no figures: pytest-benchmark's own timing
            mine.append(("time per round (mean)", fmt((bench.get("stats") or {}).get("mean"), "s"), "", ""))
        # The benchmark's name on its first row only, so each benchmark reads as a block.
        rows += [(name if i == 0 else "", *row) for i, row in enumerate(mine)]
    return rows


def _ratio(c: dict[str, Any]) -> str:
    ratio = c.get("ratio")
    if ratio is None or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        return "-"
    if math.isclose(ratio, 1.0, rel_tol=0.005):  # a tie within measurement noise gets no verdict
        return f"{ratio:.2f}x"
    better = ratio > 1 if c.get("higher_is_better", True) else ratio < 1
    return f"[green]{ratio:.2f}x better[/]" if better else f"[red]{ratio:.2f}x worse[/]"


def print_tables(runs: list[Run], console, selection: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(f"{len(runs)} run(s), {selection}", highlight=False)
    for run in runs:
        env = run.env
        versions = ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "transformers") if env.get(k))
        title = f"{run.label} - {run.when:%Y-%m-%d %H:%M} - {run.path.name}"
        caption = (f"{escape(str(run.data.get('command') or 'command not recorded'))}\n"
                   f"{env.get('device', '?')}: {escape(run.device)}, {env.get('cpu_count', '?')} CPU cores, "
                   f"load {env.get('load_avg_1min', '?')}; {versions}")
        table = Table(title=escape(title), caption=caption, caption_justify="left", title_justify="left")
        table.add_column("benchmark", overflow="fold")
        table.add_column("figure")
        table.add_column("this run", justify="right")
        table.add_column("reference")
        table.add_column("ratio", justify="right")
        for bench, figure, value, reference, ratio in table_rows(run):
            table.add_row(escape(bench), escape(figure), value, escape(reference), ratio)
        console.print(table)


# --------------------------------------------------------------------------------------------
# Plot data


def _infos(runs: list[Run], kind: str):
    for run in runs:
        for bench in run.benchmarks:
            info = bench.get("extra_info", {}) or {}
            if info.get("kind") == kind:
                yield run, info


def _with_kind(runs: list[Run], kind: str) -> list[Run]:
    return [r for r in runs if any((b.get("extra_info") or {}).get("kind") == kind for b in r.benchmarks)]


def _series_name(base: str, run: Run, runs: list[Run]) -> str:
    # The machine is named only where several machines share a plot.
    return f"{base} - {run.label}" if len(runs) > 1 else base


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def generation_series(runs: list[Run]) -> list[Series]:
    out: dict[str, Series] = {}
    runs = _with_kind(runs, "generate_e2e")
    for run, info in _infos(runs, "generate_e2e"):
        x, y = _number(info.get("workers")), _number(info.get("rows_per_s"))
        if x is None or y is None:
            continue
        name = _series_name("write_run", run, runs)
        eff = _number(info.get("scaling_efficiency"))
        out.setdefault(name, Series(name)).points.append(Point(x, y, f"{eff:.0%}" if eff is not None else ""))
    return _sorted(out)


def accuracy_series(runs: list[Run]) -> tuple[list[Series], list[tuple[str, float]]]:
    """Category accuracy and parse rate against training seconds, the majority baselines and the data's limit."""
    out: dict[str, Series] = {}
    baselines: dict[str, float] = {}
    runs = _with_kind(runs, "accuracy")
    for run, info in _infos(runs, "accuracy"):
        x = _number(info.get("train_seconds"))
        if x is None:
            continue
        note = f"{info['epochs']:g} ep" if _number(info.get("epochs")) is not None else ""
        for key, label in (("category3_accuracy", "category3 accuracy"), ("parse_rate", "parse rate")):
            y = _number(info.get(key))
            if y is not None:
                name = _series_name(f"{label} ({info.get('model', '?')})", run, runs)
                # Joined in epoch order: on a busy machine more epochs can take fewer seconds.
                out.setdefault(name, Series(name)).points.append(Point(x, y, note, _number(info.get("epochs"))))
        base = _number(info.get("baseline_category3_accuracy"))
        if base is not None:
            baselines[_series_name("majority-category baseline (category3)", run, runs)] = base
        limit = _number(info.get("limit_category3_accuracy"))
        if limit is not None:
            baselines[_series_name("data's limit: a perfect image reader (category3)", run, runs)] = limit
    return _sorted(out), sorted(baselines.items())


def _sorted(series: dict[str, Series]) -> list[Series]:
    for s in series.values():
        s.points.sort(key=lambda p: (p.x if p.order is None else p.order, p.x))
    return [series[k] for k in sorted(series)]


# --------------------------------------------------------------------------------------------
# Plots


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is not installed: pip install -e '.[test]' (or pass --no-plots)") from None
    matplotlib.use("Agg")  # files only: no display on a CI box or a GPU server
    import matplotlib.pyplot as plt

    return plt


def _figure(plt, path: Path, panels: list[tuple[str, list[Series]]], *, title: str, xlabel: str, ylabel: str,
            categorical_x: bool = False, log2_x: bool = False, hlines: Sequence[tuple[str, float]] = (),
            ideal: bool = False) -> Path:
    """One PNG: a panel per entry of ``panels`` (each with its own y scale), a line per series."""
    rows = max(len(s) for _, s in panels) + (1 if ideal else 0) + len(hlines)
    height = 4.4 + 0.22 * ((rows + 1) // 2)  # the legend's lines, two entries a line
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), height), dpi=120, squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels):
        xs = sorted({p.x for s in series for p in s.points})
        for s in series:
            line, = ax.plot([p.x for p in s.points], [p.y for p in s.points], marker="o", label=s.name)
            for p in s.points:
                if p.note:
                    ax.annotate(p.note, (p.x, p.y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                                color=line.get_color())
            if ideal and s.points and s.points[0].x > 0 and len(xs) > 1:
                first = s.points[0]
                ax.plot(xs, [first.y * x / first.x for x in xs], linestyle=":", color=line.get_color(),
                        label=f"linear scaling of {s.name}")
        for name, value in hlines:
            ax.axhline(value, linestyle="--", color="grey", linewidth=1, label=name)
        if log2_x and xs and min(xs) > 0:
            ax.set_xscale("log", base=2)
        if categorical_x and xs:
            # Batch sizes and worker counts are the values measured; ticks in between mean nothing.
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.minorticks_off()
        if len(panels) > 1:
            ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ideal_top = [s.points[0].y * xs[-1] / s.points[0].x for s in series
                     if ideal and s.points and s.points[0].x > 0 and len(xs) > 1]
        top = max([p.y for s in series for p in s.points] + [v for _, v in hlines] + ideal_top + [0.0])
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)  # room above the highest point for its label
        ax.grid(True, alpha=0.3)
        # Below the axes: inside, a legend of five contenders hides the points it names.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle(title if len(panels) > 1 or not panels[0][0] else f"{title} - {panels[0][0]}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _bars_png(runs: list[Run], y_key: str, title: str, unit: str, path: Path) -> Path | None:
    from generator.api import figure_png

    from .report_html import recipe_bars  # deferred: the SVG charts (generator.api)

    fig = recipe_bars(runs, y_key, title, unit)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig))
    return path


def write_plots(runs: list[Run], out: Path) -> tuple[list[Path], list[str]]:
    """The plots the runs have data for, and a line for each one skipped."""
    plt = _matplotlib()
    written, skipped = [], []

    def plot(key: str, panels: list[tuple[str, list[Series]]], why_empty: str, **kwargs) -> None:
        panels = [(t, s) for t, s in panels if any(x.points for x in s)]
        if panels:
            written.append(_figure(plt, out / PLOTS[key], panels, **kwargs))
        else:
            skipped.append(f"{PLOTS[key]}: {why_empty}")

    train = "no training-step results (bench_train)"
    # One bar a recipe and batch size measured (a line through one point a series showed nothing).
    for key, y_key, title, unit in (
            ("throughput", "samples_per_s", "Training throughput, a bar a recipe and batch size measured", "samples/s"),
            ("memory", "peak_memory_gib", "Peak memory, CUDA: max allocated, CPU: process RSS", "GiB")):
        path = _bars_png(runs, y_key, title, unit, out / PLOTS[key])
        if path:
            written.append(path)
        else:
            skipped.append(f"{PLOTS[key]}: {train}")
    plot("generation", [("", generation_series(runs))], "no end-to-end generation results (bench_generate)",
         title="Generation end to end (write_run) vs worker processes", xlabel="worker processes",
         ylabel="rows/s (labels: scaling efficiency)", categorical_x=True, ideal=True)
    acc, baselines = accuracy_series(runs)
    plot("accuracy", [("", acc)], "no accuracy results (bench_accuracy)", title="Accuracy vs training time",
         xlabel="training seconds (optimizer steps, data included)", ylabel="share of test rows",
         hlines=baselines)
    return written, skipped


# --------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        _fail(message)


def _fail(message: str, code: int = 2):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Tabulate and plot saved benchmark runs (pytest bench --benchmark-save).")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                   help="folder of saved runs (searched recursively) or one JSON file (default bench/results)")
    p.add_argument("--out", type=Path, default=None, help="folder for the PNG plots (default RESULTS/plots)")
    p.add_argument("--all", action="store_true", dest="every",
                   help="every run, not only the newest of each machine (host + device)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="FILE",
                   help="also write one self-contained HTML page of every saved run, compared per machine and "
                        "suite (default FILE: RESULTS/report.html)")
    return p


def main(argv: Sequence[str] | None = None, console=None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from rich.console import Console

    # Piped or redirected output would wrap at 80 columns; a terminal keeps its own width.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    try:
        runs, warnings = load_runs(args.results)
    except ReportError as err:
        _fail(str(err))
    if not args.no_plots:
        try:
            _matplotlib()
        except ImportError as err:
            _fail(str(err), code=1)
    for line in warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    chosen = select(runs, args.every)
    how = "every saved run" if args.every else "the newest of each machine (--all for every run)"
    print_tables(chosen, console, f"{how}, from {args.results}")
    if args.html is not None:
        for run in runs:  # the page compares every run of a machine, whatever --all says
            run.label = run.label or _short_device(run.device)
        from .report_html import write_html  # deferred: the SVG charts (generator.api); the table needs none

        folder = args.results if args.results.is_dir() else args.results.parent
        console.print(f"wrote {write_html(runs, Path(args.html) if args.html else folder / 'report.html', str(args.results))}",
                      highlight=False)
    if args.no_plots:
        return 0
    out = args.out or (args.results if args.results.is_dir() else args.results.parent) / "plots"
    written, skipped = write_plots(chosen, out)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    for line in skipped:
        console.print(f"skipped {line}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

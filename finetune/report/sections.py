"""The sections of a run's report.html, one function a section, from a :class:`RunFolder`."""
from __future__ import annotations

import math
from typing import Any

from generator.api import report_page as page
from generator.api import report_svg as svg

from ..eval_tables import METRIC_ROWS
from .charts import confusion_counts, confusion_heatmap, price_scatter, xy_chart
from .folder import RunFolder

Section, esc, table, figure, cards, note = page.Section, page.esc, page.table, page.figure, page.cards, page.note

CURVES = (("train/loss", "Training loss", False), ("train/lr", "Learning rate", False),
          ("train/samples_per_s", "Samples per second (log window)", False),
          ("train/peak_memory_gib", "Peak memory (GiB)", False))
EVAL_CURVES = (("eval/category3_accuracy", "category3 accuracy"), ("eval/category2_accuracy", "category2 accuracy"),
               ("eval/parse_rate", "parse rate"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def show(value: Any, kind: str) -> str:
    if not _number(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "pct100":
        return f"{value:.1f}%"
    return f"{value:,.1f}"


def limit_for(key: str, limits: dict[str, Any]) -> Any:
    """The data's limit a metric stands beside: its own key, or for ``*_all`` the key without it."""
    return limits.get(key, limits.get(key.removesuffix("_all")) if key.endswith("_all") else None)


def overview(run: RunFolder) -> Section:
    cfg, m, train = run.config, run.metrics, run.metrics.get("train") or {}
    model = m["model"]
    items = [(show(model.get("category3_accuracy"), "pct"), "category3 accuracy"),
             (show(model.get("parse_rate"), "pct"), "parse rate"),
             (show(model.get("price_mape"), "pct100"), "price MAPE (parsed)"),
             (f"{m.get('n_test', len(run.predictions)):,}", "test rows evaluated")]
    if _number(train.get("steps")):
        items += [(f"{train['steps']:,}", "optimizer steps"), (f"{train.get('samples', 0):,}", "samples seen")]
    if _number(train.get("samples_per_s")):
        items.append((f"{train['samples_per_s']:.1f}", "samples/s (training)"))
    settings = [(k, cfg[k]) for k in ("dataset", "model", "method", "lr", "batch_size", "grad_accum", "max_steps",
                                       "epochs", "preset", "seed", "max_eval_samples") if cfg.get(k) is not None]
    body = cards(items) + table(["setting", "value"], settings)
    body += "".join(note(n) for n in run.notes)
    return Section("overview", "Overview", body)


def curves(run: RunFolder) -> Section:
    lines = [r for r in run.log if _number(r.get("step"))]
    figs = []
    for key, title, log_y in CURVES:
        pts = [(r["step"], r[key]) for r in lines if _number(r.get(key))]
        if pts:
            figs.append(figure(xy_chart({key.split("/")[1]: pts}, title=title, x_label="optimizer step",
                                        log_y=log_y, width=460, height=220)))
    body = "".join(figs) or note("no training log lines with these figures")
    evals = [r for r in lines if _number(r.get("samples_seen"))]
    series = {label: [(r["samples_seen"], r[key]) for r in evals if _number(r.get(key))] for key, label in EVAL_CURVES}
    series = {k: v for k, v in series.items() if v}
    if series:
        base = run.metrics.get("baselines", {}).get("majority_category", {}).get("category3_accuracy")
        limit = (run.metrics.get("limits") or {}).get("category3_accuracy")
        hlines = {k: v for k, v in (("majority baseline (category3)", base),
                                    ("data's limit (category3)", limit)) if _number(v)}
        body += "<h3>Evaluation during training</h3>" + figure(xy_chart(
            series, title="Accuracy vs training samples seen", x_label="training samples seen",
            y_fmt=lambda v: f"{100 * v:.0f}%", y_range=(0.0, 1.0), hlines=hlines, width=620, height=260),
            f"{len(evals)} evaluation(s); the last is the final one")
    return Section("training", "Training", body)


def evaluation(run: RunFolder) -> Section:
    m = run.metrics
    baselines = {k: v for k, v in (m.get("baselines") or {}).items() if isinstance(v, dict)}
    limits, fractions = m.get("limits") or {}, m.get("fraction_of_limit") or {}
    headers = ["metric", "model", *(k.replace("_", " ") for k in baselines)] + (["data limit", "of limit"] if limits else [])
    rows = []
    for key, label, kind in METRIC_ROWS:
        cells = [label, show(m["model"].get(key), kind), *(show(b.get(key), kind) for b in baselines.values())]
        if limits:
            cells += [show(limit_for(key, limits), kind), show(fractions.get(key), "pct")]
        rows.append(cells)
    body = table(headers, rows, numeric=range(1, len(headers)))
    body += note(f"test split: {m.get('n_test', '?')} rows, {m.get('n_parsed', '?')} answers parsed; baselines use "
                 "the training split only (majority category, median price, median price of the true category)"
                 + ("; the data limit is what a perfect reader of the images could score (the dataset's limits.json)"
                    if limits else "; the dataset has no limits.json"))
    body += figure(_accuracy_bars(m, baselines, limits))
    if m.get("category2_rule"):
        body += note(m["category2_rule"])
    return Section("evaluation", "Evaluation", body)


def _accuracy_bars(m: dict, baselines: dict, limits: dict) -> svg.Figure:
    keys = ("category3_accuracy", "category2_accuracy", "parse_rate")
    groups = {"model": [m["model"].get(k) for k in keys],
              "majority baseline": [baselines.get("majority_category", {}).get(k) for k in keys]}
    if limits:
        groups["data limit"] = [limits.get(k) for k in keys]
    groups = {k: [v if _number(v) else None for v in vs] for k, vs in groups.items()}
    return svg.bar_chart([k.replace("_", " ") for k in keys], groups, title="Model, baseline and the data's limit",
                         width=560, value_fmt=lambda v: f"{100 * v:.1f}%", max_value=1.0)


def categories(run: RunFolder) -> Section:
    """The confusion matrix of category3, accuracy and price error per class, the top confusions."""
    m, preds = run.metrics, run.predictions
    rows, cols, counts = confusion_counts(preds)
    parsed = sum(1 for p in preds if p.get("parsed"))
    body = figure(confusion_heatmap(rows, cols, counts, title=f"Category3 confusion matrix ({parsed} parsed answers)"),
                  f"{len(preds) - parsed} answers that did not parse are not in the matrix")
    per_class, prices = m.get("per_category3") or {}, m.get("price_mape_by_category3") or {}
    if per_class:
        names = sorted(per_class, key=lambda c: (per_class[c].get("accuracy", 0), -per_class[c].get("n", 0), c))
        body += figure(svg.bar_chart(names, [per_class[c].get("accuracy") or 0.0 for c in names], max_value=1.0,
                                     title="Accuracy per category3 (weakest first)", width=520,
                                     value_fmt=lambda v: f"{100 * v:.0f}%"))
        body += table(["category3", "rows", "accuracy", "price MAPE", "baseline MAPE", "most often answered instead"],
                      [[c, per_class[c].get("n"), show(per_class[c].get("accuracy"), "pct"),
                        show((prices.get(c) or {}).get("mape"), "pct100"),
                        show((prices.get(c) or {}).get("baseline_mape"), "pct100"),
                        "{} ({})".format(*per_class[c]["confused_with"]) if per_class[c].get("confused_with") else "-"]
                       for c in names], numeric=(1, 2, 3, 4))
    confusions = m.get("confusions") or []
    if confusions:
        body += "<h3>Most common confusions</h3>" + table(["true", "answered", "rows"], confusions, numeric=(2,))
    return Section("categories", "Categories", body)


def prices(run: RunFolder) -> Section:
    fig = price_scatter(run.predictions)
    body = figure(fig, "each point a test row whose answer had a price; dashed: answered = true") if fig \
        else note("no answer had a price: nothing to plot")
    by_class = run.metrics.get("price_mape_by_category3") or {}
    names = [c for c in sorted(by_class) if _number(by_class[c].get("mape")) or _number(by_class[c].get("baseline_mape"))]
    if names:
        groups = {"model": [by_class[c].get("mape") for c in names],
                  "median of the true category (baseline)": [by_class[c].get("baseline_mape") for c in names]}
        groups = {k: [v if _number(v) else None for v in vs] for k, vs in groups.items()}
        body += figure(svg.bar_chart(names, groups, title="Price MAPE per category3 (%)", width=560,
                                     value_fmt=lambda v: f"{v:.1f}%"))
    return Section("prices", "Prices", body)


def unparsed(run: RunFolder) -> Section | None:
    m = run.metrics
    shown = m.get("unparsed") or []
    total = m.get("n_unparsed", len(shown))
    if not total:
        return None
    rows = [[u.get("index"), "(image unreadable)" if u.get("text") is None else u.get("text")] for u in shown]
    body = note(f"{total} answers did not parse; the first {len(shown)}:") + table(["test row", "generated text"], rows)
    return Section("unparsed", "Unparsed answers", body)

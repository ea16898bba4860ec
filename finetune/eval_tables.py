"""The console tables of an evaluation: the model beside its baselines and the data's limit, and where
it fails (weakest classes, confusions). ``finetune.report`` draws the same figures as HTML."""
from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .data import format_price
from .evaluate import _limit_for, fraction_of_limit


# (key in metrics.json, label, kind): pct = a fraction, pct100 = a percentage already, money
METRIC_ROWS = (
    ("parse_rate", "parse rate", "pct"),
    ("category3_accuracy", "category3 accuracy", "pct"),
    ("category2_accuracy", "category2 accuracy", "pct"),
    ("price_mae", "price MAE (parsed rows)", "money"),
    ("price_mape", "price MAPE (parsed rows)", "pct100"),
    ("price_mae_all", "price MAE (unparsed = median)", "money"),
    ("price_mape_all", "price MAPE (unparsed = median)", "pct100"),
    ("price_mape_greedy", "price MAPE (greedy prices, before MBR)", "pct100"),
    ("title_exact_match", "title exact match", "pct"),
    ("title_token_f1", "title token F1", "pct"),
)


def results_table(metrics: dict[str, Any]):
    """A rich table: the model beside each baseline, one row per metric; with the dataset's limits,
    a "data limit" column (what a perfect image reader could score) and the fraction of it reached."""
    columns = [("model", metrics["model"])] + [(name.replace("_", " "), v) for name, v in metrics["baselines"].items()]
    limits = metrics.get("limits") or {}
    fractions = metrics.get("fraction_of_limit") or fraction_of_limit(metrics["model"], limits)
    table = Table(title=f"test split: {metrics['n_test']} rows")
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")
    if limits:
        table.add_column("data limit", justify="right")
        table.add_column("of limit", justify="right")
    for key, label, kind in METRIC_ROWS:
        if all(values.get(key) is None for _, values in columns):
            continue   # e.g. the greedy price's MAPE of a run without --price-mbr
        cells = [_fmt(values.get(key), kind) for _, values in columns]
        if limits:
            cells += [_fmt(_limit_for(key, limits), kind), _fmt(fractions.get(key), "pct")]
        table.add_row(label, *cells)
    return table


def diagnostics_table(metrics: dict[str, Any], k: int = 10):
    """Where the model fails, for the console after ``results_table``: the ``k`` weakest category3
    classes (accuracy, support, price MAPE, what they were most often taken for) and the ``k`` most
    common confusions. A line saying there is nothing to show for metrics without diagnostics."""
    per_class = metrics.get("per_category3") or {}
    if not per_class:
        return Text("no per-class diagnostics in these metrics")
    confusions = metrics.get("confusions") or []
    prices = metrics.get("price_mape_by_category3") or {}
    weakest = sorted(per_class.items(), key=lambda kv: (kv[1]["accuracy"], -kv[1]["n"], kv[0]))[:k]
    classes = Table(title=f"weakest category3 classes ({min(k, len(per_class))} of {len(per_class)})")
    for name, justify in (("category3", "left"), ("n", "right"), ("accuracy", "right"),
                          ("price MAPE", "right"), ("most often answered instead", "left")):
        classes.add_column(name, justify=justify)
    for name, v in weakest:
        other = v.get("confused_with")
        classes.add_row(name, str(v["n"]), _fmt(v["accuracy"], "pct"),
                        _fmt((prices.get(name) or {}).get("mape"), "pct100"),
                        f"{other[0]} ({other[1]})" if other else "-")

    pairs = Table(title="top category3 confusions")
    for name, justify in (("true", "left"), ("answered", "left"), ("rows", "right")):
        pairs.add_column(name, justify=justify)
    for true, predicted, count in confusions[:k]:
        pairs.add_row(true, predicted, str(count))
    parts = [classes, pairs]
    n_unparsed = metrics.get("n_unparsed", len(metrics.get("unparsed") or []))
    if n_unparsed:
        parts.append(Text(f"{n_unparsed} answers did not parse (their text: metrics.json \"unparsed\")"))
    return Group(*parts)


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "pct100":
        return f"{value:.1f}%"
    return format_price(round(value, 1))

"""The fidelity section (augmented runs, from ``fidelity_report.json``): the overall score and its properties
as SDMetrics' quality report shows them, each column's shape score, the pair trends (weakest first), and real
vs synthetic histograms per column where the report holds them; and the data's own limit (``limits.json``).

Keys are read defensively: the fidelity report's layout may grow (any missing key leaves its figure out)."""
from __future__ import annotations

from typing import Any, Mapping

import generator.report.svg as svg
from generator.report.page import Section, cards, figure, note, table

WEAKEST_PAIRS = 12


def _score(v: Any) -> float | None:
    return float(v["score"]) if isinstance(v, Mapping) and isinstance(v.get("score"), (int, float)) else \
        float(v) if isinstance(v, (int, float)) else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def fidelity_section(report: Mapping[str, Any]) -> Section:
    figs: dict[str, svg.Figure] = {}
    shapes = (report.get("column_shapes") or {}).get("columns") or {}
    pairs = (report.get("column_pair_trends") or {}).get("pairs") or {}
    props = [("overall", _score(report.get("overall_score"))), ("column shapes", _score(report.get("column_shapes"))),
             ("column pair trends", _score(report.get("column_pair_trends"))),
             ("coverage", _score(report.get("coverage"))), ("title words", _score(report.get("title_words_tv_complement")))]
    props = [(k, v) for k, v in props if v is not None]
    body = cards([(_pct(v), k) for k, v in props])
    body += note(f"{report.get('rows_generated', '?')} generated rows scored against {report.get('rows_source', '?')} "
                 "source rows with the metrics of SDMetrics' single-table quality report (100% = indistinguishable).")
    if shapes:
        names = sorted(shapes, key=lambda c: (_score(shapes[c]) or 0, c))
        figs["fidelity"] = svg.bar_chart([f"{c} ({shapes[c].get('metric', '')})" for c in names],
                                         [100 * (_score(shapes[c]) or 0) for c in names],
                                         title="Column shapes (KS / TV complement, %)", width=560, label_chars=34,
                                         value_fmt=lambda v: f"{v:.1f}%", max_value=100)
        body += figure(figs["fidelity"], "How closely each column's distribution follows the source's.")
    if pairs:
        body += _pairs(pairs)
    body += _histograms(report.get("distributions"))
    return Section("fidelity", "Fidelity", body, figs)


def _pairs(pairs: Mapping[str, Any]) -> str:
    """The weakest pairs SDMetrics counts (where the source shows a relation), and a table of every pair."""
    scored = sorted(((name, _score(v)) for name, v in pairs.items() if _score(v) is not None), key=lambda kv: (kv[1], kv[0]))
    counts = {name: (pairs[name] or {}).get("meets_threshold", True) is not False for name, _ in scored}
    counted = [(n, s) for n, s in scored if counts[n]]
    weakest = counted[:WEAKEST_PAIRS]
    fig = svg.bar_chart([n for n, _ in weakest], [100 * s for _, s in weakest], width=620, label_chars=40,
                        title=f"Column pair trends: the {len(weakest)} weakest of the {len(counted)} pairs counted (%)",
                        value_fmt=lambda v: f"{v:.1f}%", max_value=100)
    rows = [[name, (pairs[name] or {}).get("metric", ""), "yes" if counts[name] else "no", _pct(score)]
            for name, score in scored]
    return (figure(fig, "Correlation similarity for two numeric columns, contingency similarity otherwise; as in "
                        "SDMetrics, a pair counts where the source itself shows a relation.")
            + "<details><summary>every pair</summary>" + table(["pair", "metric", "counted", "score"], rows, numeric=(3,))
            + "</details>")


def _histograms(dists: Any) -> str:
    """Real vs synthetic per column, where the report keeps them: ``distributions[column]`` with ``real`` and
    ``synthetic`` counts over ``edges`` (numeric) or ``labels`` (categorical)."""
    if not isinstance(dists, Mapping) or not dists:
        return note("Real vs synthetic histograms per column appear here once fidelity_report.json keeps the "
                    "distributions (a 'distributions' entry per column); this one holds the scores only.")
    out = []
    for column in sorted(dists):
        d = dists[column]
        if not isinstance(d, Mapping) or not isinstance(d.get("real"), list) or not isinstance(d.get("synthetic"), list):
            continue
        series = {"real (source)": _shares(d["real"]), "synthetic": _shares(d["synthetic"])}
        if isinstance(d.get("edges"), list) and len(d["edges"]) == len(d["real"]) + 1:
            out.append(figure(svg.histogram([float(e) for e in d["edges"]], series, title=column, width=420,
                                            height=200)))
        elif isinstance(d.get("labels"), list) and len(d["labels"]) == len(d["real"]):
            labels = [str(x) for x in d["labels"]][:20]
            out.append(figure(svg.bar_chart(labels, {k: [100 * x for x in v[:20]] for k, v in series.items()},
                                            title=f"{column} (% of rows)", width=460, value_fmt=lambda v: f"{v:.1f}%")))
    return ("<h3>Real vs synthetic, per column</h3>" + "".join(out)) if out else ""


def _shares(counts: list) -> list[float]:
    total = sum(float(c) for c in counts) or 1.0
    return [float(c) / total for c in counts]


def limits_section(limits: Mapping[str, Any]) -> Section:
    """What a perfect reader of the images could score on the test split, next to the majority baselines."""
    labels = ("category3", "category2", "colour", "material", "pattern")
    majority = limits.get("majority_accuracy") or {}
    have = [k for k in labels if isinstance(limits.get(f"{k}_accuracy"), (int, float))]
    if not have:
        return Section("limits", "The data's own limit", note("limits.json holds no accuracy to show."))
    fig = svg.bar_chart(have, {"perfect image reader (limit)": [100 * limits[f"{k}_accuracy"] for k in have],
                               "majority baseline": [100 * majority[k] if isinstance(majority.get(k), (int, float))
                                                     else None for k in have]},
                        title=f"Accuracy on the {limits.get('n_test', 0):,} test rows (%)", width=520, label_chars=10,
                        value_fmt=lambda v: f"{v:.1f}%", max_value=100)
    mape = [("price MAPE, perfect reader", _pct(limits.get("price_mape"))),
            ("median of the true category3", _pct(limits.get("price_mape_category3_median"))),
            ("global median", _pct(limits.get("price_mape_global_median")))]
    return Section("limits", "The data's own limit", figure(fig, "Read a fine-tune's accuracy against the limit, not "
                                                            "against 100%.") + cards([(v, k) for k, v in mape]))

"""How closely generated rows follow their source: the figure SDMetrics' single-table ``QualityReport`` gives.

The formulas and their quirks follow sdmetrics 0.32 (``reports/single_table/_properties``), column by column:

* Column shapes: ``KSComplement`` (1 - the two-sample Kolmogorov-Smirnov statistic, values rounded to 14
  decimals) for numerical and datetime columns, ``TVComplement`` (1 - total variation distance of the
  frequencies) for categorical and boolean ones; missing values are dropped. Property score: the mean.
* Column pair trends, over every pair of the scored columns:
  ``CorrelationSimilarity`` (1 - |r_source - r_generated| / 2, Pearson, rows with a missing value dropped) for
  two numerical/datetime columns; ``ContingencySimilarity`` (1 - TVD of the joint frequencies, missing values
  kept as a value of their own) otherwise. In a mixed pair the numerical column is cut by ``np.digitize`` on
  10 equal-width bins spanning *that side's own* range (``np.histogram_bin_edges``: the source and the
  generated rows get different edges, as in SDMetrics, so a pure shift or scale of prices shows in the column
  shapes, not here; the maximum and missing values share bin 11).
  As in SDMetrics >= 0.27, a pair counts towards the property score only where the source shows a relation:
  |Pearson r| > 0.5, or Cramér's V > 0.3 (chi-square without continuity correction). Every pair's score is
  reported all the same, with ``meets_threshold``, and ``score_all_pairs`` is the mean over all of them
  (SDMetrics with both thresholds at 0, or before 0.27).
* Overall score: the mean of the two property scores.
* Coverage (SDMetrics' diagnostic report): ``CategoryCoverage``, the share of the source's categories that
  the generated rows contain, and ``RangeCoverage`` for numerical columns.
* For a report's figures: ``column_pair_trends.weakest`` (the lowest counted pairs, lowest first) and
  ``distributions`` (real vs synthetic counts per column, over shared ``edges`` or ``labels``).

Metadata sdtypes of the catalogue columns: the four prices ``numerical``, ``competence_date`` ``datetime``
(ISO dates), ``flg_discount`` ``boolean``, the other columns ``categorical``; product code and URLs are ``id``
and the title ``text``, which SDMetrics does not score. A column constant in the source is left out too (it
would score 1 and say nothing). The title's word frequencies get a ``TVComplement`` of their own, reported
beside the overall score. Left as they are: SDMetrics' 1e-6 regularisation in ``TVComplement`` (it moves a
score by ~1e-6) and its random 50,000-row subsample for ``ContingencySimilarity`` (scored on all rows here).

Computed with numpy: ``sdmetrics`` needs pandas < 3, scipy, scikit-learn, plotly and the BSL-licensed
``copulas``; tests/test_fidelity.py compares with it where it is installed.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict
from itertools import combinations
from typing import Any, Iterable, Mapping

import numpy as np

from generator.privacy import iter_rows, normalise_title
from generator.sources import SourceCatalog

NUMERIC = ("full_price", "price", "full_price_eur", "price_eur")
DATETIME = ("competence_date",)
CATEGORICAL = ("website_name", "country_code", "currency_code", "brand", "category1_code", "category2_code",
               "category3_code")
BOOLEAN = ("flg_discount",)
SDTYPES = {**dict.fromkeys(NUMERIC, "numerical"), **dict.fromkeys(DATETIME, "datetime"),
           **dict.fromkeys(CATEGORICAL, "categorical"), **dict.fromkeys(BOOLEAN, "boolean")}
CONTINUOUS_SDTYPES = ("numerical", "datetime")  # the others are discrete, as in SDMetrics' ColumnPairTrends
FOCUS_PAIRS = (("category1_code", "full_price"), ("category2_code", "full_price"),
               ("category3_code", "full_price"), ("category3_code", "flg_discount"))
BINS = 10
REAL_CORRELATION_THRESHOLD = 0.5  # sdmetrics.reports.utils.DEFAULT_REAL_CORRELATION_THRESHOLD
REAL_ASSOCIATION_THRESHOLD = 0.3  # sdmetrics.reports.utils.DEFAULT_REAL_ASSOCIATION_THRESHOLD
WEAKEST_PAIRS = 10
HISTOGRAM_BINS, HISTOGRAM_LABELS = 20, 30


def fidelity_report(generated: Any, source: SourceCatalog | Any) -> dict[str, Any]:
    """Scores of ``generated`` (anything :func:`generator.privacy.iter_rows` reads) against ``source``."""
    gen = _columns(iter_rows(generated))
    src = _columns(_source_rows(source))
    if not gen["_n"] or not src["_n"]:
        raise ValueError("fidelity needs rows on both sides; the generated set or the source is empty")
    scored = [c for c in SDTYPES if len(set(_present(src[c]))) > 1]
    real = {c: _prepare(src[c], SDTYPES[c]) for c in scored}
    synth = {c: _prepare(gen[c], SDTYPES[c]) for c in scored}

    shapes = _column_shapes(real, synth)
    pairs = _column_pair_trends(real, synth)
    coverage = _coverage(real, synth)
    shape_score = _mean(v["score"] for v in shapes.values())
    pair_score = _mean(v["score"] for v in pairs.values() if v["meets_threshold"])
    return {
        "rows_generated": gen["_n"], "rows_source": src["_n"],
        "overall_score": _mean([shape_score, pair_score]),
        "column_shapes": {"score": shape_score, "columns": shapes},
        "column_pair_trends": {
            "score": pair_score, "pairs": pairs,
            "pairs_counted": sum(1 for v in pairs.values() if v["meets_threshold"] and v["score"] is not None),
            "score_all_pairs": _mean(v["score"] for v in pairs.values()),
            "thresholds": {"real_correlation": REAL_CORRELATION_THRESHOLD,
                           "real_association": REAL_ASSOCIATION_THRESHOLD},
            "weakest": _weakest(pairs),
            "focus": {f"{a} x {b}": pairs.get(f"{a} x {b}", pairs.get(f"{b} x {a}"))
                      for a, b in FOCUS_PAIRS if f"{a} x {b}" in pairs or f"{b} x {a}" in pairs}},
        "coverage": {"score": _mean(v["score"] for v in coverage.values()), "columns": coverage},
        "title_words_tv_complement": _tv_complement(_words(src["title"]), _words(gen["title"])),
        "sdtypes": {c: SDTYPES[c] for c in scored},
        "distributions": {c: _distribution(real[c], synth[c], _continuous(c)) for c in scored},
        "columns_left_out": {"constant_in_source": [c for c in SDTYPES if c not in real],
                             "identifiers_and_text": ["product_code", "itemurl", "imageurl", "title"]},
    }


def _source_rows(source: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(source, SourceCatalog):
        return ({k: v for k, v in asdict(r).items() if k not in ("image", "origin")} for r in source.rows)
    return iter_rows(source)


def _columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    cols: dict[str, list] = {c: [] for c in (*SDTYPES, "title")}
    n = 0
    for row in rows:
        n += 1
        for c in cols:
            cols[c].append(row.get(c))
    return cols | {"_n": n}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _present(values: Iterable) -> list:
    return [v for v in values if not _missing(v)]


def _prepare(values: list, sdtype: str) -> np.ndarray | list:
    """Floats (NaN where missing; datetimes as ns since the epoch) for continuous sdtypes, else values (None)."""
    if sdtype not in CONTINUOUS_SDTYPES:
        return [None if _missing(v) else v for v in values]
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            if not _missing(v):
                out[i] = np.datetime64(v, "ns").astype(np.int64) if sdtype == "datetime" else float(v)
        except (TypeError, ValueError):
            pass  # unparsable: missing, as SDMetrics' datetime conversion (errors="coerce") leaves it
    return out


def _continuous(column: str) -> bool:
    return SDTYPES[column] in CONTINUOUS_SDTYPES


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# --------------------------------------------------------------------------------------------------
# Properties


def _column_shapes(real: dict[str, Any], synth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shapes = {}
    for c in real:
        if _continuous(c):
            shapes[c] = {"metric": "KSComplement", "score": _ks_complement(real[c], synth[c])}
        else:
            shapes[c] = {"metric": "TVComplement", "score": _tv_complement(_present(real[c]), _present(synth[c]))}
    return shapes


def _column_pair_trends(real: dict[str, Any], synth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every pair of the scored columns, named ``"a x b"`` (discrete columns first, then continuous ones)."""
    order = [c for c in real if not _continuous(c)] + [c for c in real if _continuous(c)]
    codes_real, codes_synth = {}, {}
    for c in order:
        codes_real[c], codes_synth[c] = _discrete_codes(c, real[c], synth[c])
    pairs = {}
    for a, b in combinations(order, 2):
        if _continuous(a) and _continuous(b):
            entry = _correlation_similarity((real[a], real[b]), (synth[a], synth[b]))
        else:
            entry = _contingency_similarity((codes_real[a], codes_real[b]), (codes_synth[a], codes_synth[b]))
        pairs[f"{a} x {b}"] = {"columns": [a, b], **entry}
    return pairs


def _discrete_codes(column: str, real: Any, synth: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Integer codes for a contingency table: each side's own bins for a continuous column (as SDMetrics'
    ColumnPairTrends bins the real and the synthetic table separately), shared value codes otherwise."""
    if _continuous(column):
        return _discretise(real), _discretise(synth)
    index: dict[Any, int] = {}
    codes = [np.fromiter((index.setdefault(v, len(index)) for v in side), np.int64, len(side))
             for side in (real, synth)]
    return codes[0], codes[1]


def _coverage(real: dict[str, Any], synth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    coverage = {}
    for c in real:
        if _continuous(c):
            coverage[c] = {"metric": "RangeCoverage", "score": _range_coverage(real[c], synth[c])}
            continue
        want, got = set(_present(real[c])), set(_present(synth[c]))
        missing = sorted(want - got, key=str)
        coverage[c] = {"metric": "CategoryCoverage", "score": round(len(want & got) / len(want), 4),
                       "missing": [str(m) for m in missing[:20]], "missing_count": len(missing)}
    return coverage


def _weakest(pairs: Mapping[str, Mapping[str, Any]], n: int = WEAKEST_PAIRS) -> list[dict[str, Any]]:
    """The ``n`` lowest-scoring pairs among those that count towards the property score, lowest first."""
    counted = sorted((v["score"], name) for name, v in pairs.items()
                     if v["meets_threshold"] and v["score"] is not None)
    return [{"pair": name, "columns": pairs[name]["columns"], "metric": pairs[name]["metric"], "score": score}
            for score, name in counted[:n]]


def _distribution(real: Any, synth: Any, continuous: bool) -> dict[str, list]:
    """Real vs synthetic counts for a report's histograms: over shared ``edges`` (20 equal-width bins on the
    two sides' joint range) for a continuous column, over ``labels`` (the source's 30 most frequent values,
    then "(other)") for a discrete one. Missing values are left out."""
    if continuous:
        real, synth = real[~np.isnan(real)], synth[~np.isnan(synth)]
        both = np.concatenate([real, synth])
        edges = np.histogram_bin_edges(both if len(both) else np.zeros(1), bins=HISTOGRAM_BINS)
        return {"edges": edges.tolist(), "real": np.histogram(real, edges)[0].tolist(),
                "synthetic": np.histogram(synth, edges)[0].tolist()}
    fr, fs = Counter(_present(real)), Counter(_present(synth))
    top = [v for v, _ in sorted(fr.items(), key=lambda kv: (-kv[1], str(kv[0])))[:HISTOGRAM_LABELS]]
    labels, counts_r, counts_s = [str(v) for v in top], [fr[v] for v in top], [fs[v] for v in top]
    other_r, other_s = sum(fr.values()) - sum(counts_r), sum(fs.values()) - sum(counts_s)
    if other_r or other_s:
        labels, counts_r, counts_s = [*labels, "(other)"], [*counts_r, other_r], [*counts_s, other_s]
    return {"labels": labels, "real": counts_r, "synthetic": counts_s}


# --------------------------------------------------------------------------------------------------
# Metrics


def _ks_complement(real: np.ndarray, synth: np.ndarray) -> float | None:
    real = np.sort(np.round(real[~np.isnan(real)], 14))
    synth = np.sort(np.round(synth[~np.isnan(synth)], 14))
    if not len(real) or not len(synth):
        return None
    grid = np.concatenate([real, synth])
    cdf_r = np.searchsorted(real, grid, side="right") / len(real)
    cdf_s = np.searchsorted(synth, grid, side="right") / len(synth)
    return round(1.0 - float(np.abs(cdf_r - cdf_s).max()), 4)


def _tv_complement(real: list, synth: list) -> float | None:
    if not real or not synth:
        return None
    fr, fs = Counter(real), Counter(synth)
    nr, ns = len(real), len(synth)
    tvd = 0.5 * sum(abs(fr[k] / nr - fs[k] / ns) for k in set(fr) | set(fs))
    return round(1.0 - tvd, 4)


def _range_coverage(real: np.ndarray, synth: np.ndarray) -> float | None:
    real, synth = real[~np.isnan(real)], synth[~np.isnan(synth)]
    if not len(real) or not len(synth) or real.max() == real.min():
        return None
    span = real.max() - real.min()
    score = 1 - max(0.0, synth.min() - real.min()) / span - max(0.0, real.max() - synth.max()) / span
    return round(max(0.0, float(score)), 4)


def _discretise(values: np.ndarray) -> np.ndarray | None:
    """SDMetrics' ``ColumnPairTrends._discretize_column``: ``np.digitize`` on 10 equal-width bins over the
    values' own range; the maximum and missing values land in bin 11. None where the edges can't be set."""
    try:
        edges = np.histogram_bin_edges(values[~np.isnan(values)], bins=BINS)
    except ValueError:  # infinite values
        return None
    return np.digitize(values, edges)


def _correlation_similarity(real: tuple[np.ndarray, np.ndarray], synth: tuple[np.ndarray, np.ndarray]
                            ) -> dict[str, Any]:
    entry: dict[str, Any] = {"metric": "CorrelationSimilarity", "score": None, "real_correlation": None,
                             "synthetic_correlation": None, "meets_threshold": False}
    if any(len(np.unique(x[~np.isnan(x)])) == 1 for x in (*real, *synth)):
        return entry  # SDMetrics: ConstantInputError, no score
    r_real, r_synth = _pearson(*real), _pearson(*synth)
    entry.update(real_correlation=_round(r_real), synthetic_correlation=_round(r_synth),
                 meets_threshold=r_real is not None and abs(r_real) > REAL_CORRELATION_THRESHOLD)
    if r_real is not None and r_synth is not None:
        entry["score"] = round(1 - abs(r_real - r_synth) / 2, 4)
    return entry


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    keep = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _contingency_similarity(real: tuple[np.ndarray | None, np.ndarray | None],
                            synth: tuple[np.ndarray | None, np.ndarray | None]) -> dict[str, Any]:
    """1 - TVD of the joint frequencies of two code arrays; Cramér's V of the real table decides if it counts."""
    entry: dict[str, Any] = {"metric": "ContingencySimilarity", "score": None, "real_association": None,
                             "meets_threshold": False}
    if any(x is None for x in (*real, *synth)):
        return entry  # a numerical column that could not be discretised: no score, as in SDMetrics
    width = int(max(real[1].max(initial=0), synth[1].max(initial=0))) + 1
    joint_real, joint_synth = real[0] * width + real[1], synth[0] * width + synth[1]
    keys, inverse = np.unique(np.concatenate([joint_real, joint_synth]), return_inverse=True)
    freq_real = np.bincount(inverse[:len(joint_real)], minlength=len(keys)) / len(joint_real)
    freq_synth = np.bincount(inverse[len(joint_real):], minlength=len(keys)) / len(joint_synth)
    association = _cramers_v(*real)
    entry.update(score=round(1 - 0.5 * float(np.abs(freq_real - freq_synth).sum()), 4),
                 real_association=_round(association),
                 meets_threshold=association is not None and association > REAL_ASSOCIATION_THRESHOLD)
    return entry


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float | None:
    """``scipy.stats.contingency.association(table, method="cramer")``: chi-square without Yates' correction."""
    values_a, index_a = np.unique(a, return_inverse=True)
    values_b, index_b = np.unique(b, return_inverse=True)
    if min(len(values_a), len(values_b)) < 2:
        return None
    table = np.bincount(index_a * len(values_b) + index_b, minlength=len(values_a) * len(values_b))
    table = table.reshape(len(values_a), len(values_b)).astype(np.float64)
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / n / (min(table.shape) - 1))


def _words(titles: list) -> list[str]:
    return [w for t in _present(titles) for w in re.findall(r"\w+", normalise_title(t))]


# --------------------------------------------------------------------------------------------------
# Markdown for the dataset card


def render_fidelity_section(report: Mapping[str, Any]) -> str:
    """Markdown body for the card, without a heading: ``extra_sections={"Fidelity": render_fidelity_section(r)}``."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    trends = report["column_pair_trends"]
    lines = [f"{report['rows_generated']} generated rows scored against {report['rows_source']} source rows, "
             "with the metrics of SDMetrics' single-table quality report (computed with numpy).", "",
             "| property | score |", "| --- | --- |",
             f"| **overall** (mean of the two below) | **{pct(report['overall_score'])}** |",
             f"| column shapes (KS / TV complement) | {pct(report['column_shapes']['score'])} |",
             f"| column pair trends (correlation / contingency similarity) | {pct(trends['score'])} |",
             f"| category coverage and price range coverage | {pct(report['coverage']['score'])} |",
             f"| title word frequencies (TV complement) | {pct(report['title_words_tv_complement'])} |",
             "", "| column | metric | shape | coverage |", "| --- | --- | --- | --- |"]
    coverage = report["coverage"]["columns"]
    for column, shape in report["column_shapes"]["columns"].items():
        cov = coverage.get(column, {})
        note = f" (missing {cov['missing_count']})" if cov.get("missing_count") else ""
        lines.append(f"| {column} | {shape['metric']} | {pct(shape['score'])} | {pct(cov.get('score'))}{note} |")
    lines += _weakest_pairs_lines(trends, pct)
    left = report["columns_left_out"]
    lines += ["", f"Left out: identifiers and text ({', '.join(left['identifiers_and_text'])}) and columns "
              f"constant in the source ({', '.join(left['constant_in_source']) or 'none'})."]
    return "\n".join(lines) + "\n"


def _weakest_pairs_lines(trends: Mapping[str, Any], pct: Any, n: int = 5) -> list[str]:
    limits = trends["thresholds"]
    lines = ["", f"Column pair trends count {trends['pairs_counted']} of the {len(trends['pairs'])} column pairs: "
             f"as SDMetrics does, a pair counts where the source shows a relation (|Pearson r| > "
             f"{limits['real_correlation']}, Cramér's V > {limits['real_association']}); over all pairs the "
             f"score is {pct(trends['score_all_pairs'])}."]
    if trends["weakest"]:
        lines += ["", "| weakest column pairs | metric | score |", "| --- | --- | --- |"]
        lines += [f"| {w['pair']} | {w['metric']} | {pct(w['score'])} |" for w in trends["weakest"][:n]]
    return lines

"""How closely generated rows follow their source: the scores SDMetrics' single-table quality report gives.

* Column shapes: ``KSComplement`` (1 - the two-sample Kolmogorov-Smirnov statistic) for numeric columns,
  ``TVComplement`` (1 - total variation distance of the frequencies) for categorical ones.
* Column pair trends: ``CorrelationSimilarity`` (1 - |r_source - r_generated| / 2, Pearson) for two numeric
  columns, ``ContingencySimilarity`` (1 - TVD of the joint frequencies) otherwise, a numeric column cut
  into 10 equal-width bins on the source's range (outer bins open), as SDMetrics does.
* Overall score: the mean of the two property scores, as in SDMetrics' ``QualityReport``.
* Coverage (SDMetrics' diagnostic report): ``CategoryCoverage``, the share of the source's categories that
  the generated rows contain, and ``RangeCoverage`` for numeric columns.

Identifier columns (product code, URLs) and free text (title) are left out, as SDMetrics leaves out id and
text columns, and so is any column that is constant in the source (it would score 1 and say nothing).
The title's word frequencies get a ``TVComplement`` of their own, reported beside the overall score.

The scores are computed here with numpy: ``sdmetrics`` needs pandas < 3 (this environment has 3.x),
scipy, scikit-learn, copulas and plotly, about 70 MB of wheels, for formulas that take a page.
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
CATEGORICAL = ("website_name", "competence_date", "country_code", "currency_code", "brand", "category1_code",
               "category2_code", "category3_code", "flg_discount")
FOCUS_PAIRS = (("category1_code", "full_price"), ("category2_code", "full_price"),
               ("category3_code", "full_price"), ("category3_code", "flg_discount"))
BINS = 10


def fidelity_report(generated: Any, source: SourceCatalog | Any) -> dict[str, Any]:
    """Scores of ``generated`` (anything :func:`generator.privacy.iter_rows` reads) against ``source``."""
    gen = _columns(iter_rows(generated))
    src = _columns(_source_rows(source))
    if not gen["_n"] or not src["_n"]:
        raise ValueError("fidelity needs rows on both sides; the generated set or the source is empty")
    numeric = [c for c in NUMERIC if len(set(_present(src[c]))) > 1]
    categorical = [c for c in CATEGORICAL if len(set(_present(src[c]))) > 1]
    constant = [c for c in (*NUMERIC, *CATEGORICAL) if c not in numeric and c not in categorical]

    shapes = {}
    for c in numeric:
        shapes[c] = {"metric": "KSComplement", "score": _ks_complement(_floats(src[c]), _floats(gen[c]))}
    for c in categorical:
        shapes[c] = {"metric": "TVComplement", "score": _tv_complement(_present(src[c]), _present(gen[c]))}

    pairs = {}
    for a, b in combinations([*categorical, *numeric], 2):
        score, metric = _pair_score(a, b, src, gen, numeric)
        if score is not None:
            pairs[f"{a} x {b}"] = {"metric": metric, "score": score}

    coverage = {}
    for c in categorical:
        want = set(_present(src[c]))
        got = set(_present(gen[c]))
        missing = sorted(want - got, key=str)
        coverage[c] = {"metric": "CategoryCoverage", "score": len(want & got) / len(want),
                       "missing": [str(m) for m in missing[:20]], "missing_count": len(missing)}
    for c in numeric:
        coverage[c] = {"metric": "RangeCoverage", "score": _range_coverage(_floats(src[c]), _floats(gen[c]))}

    shape_score = _mean(v["score"] for v in shapes.values())
    pair_score = _mean(v["score"] for v in pairs.values())
    title_words = _tv_complement(_words(src["title"]), _words(gen["title"]))
    return {
        "rows_generated": gen["_n"], "rows_source": src["_n"],
        "overall_score": _mean([shape_score, pair_score]),
        "column_shapes": {"score": shape_score, "columns": shapes},
        "column_pair_trends": {"score": pair_score, "pairs": pairs,
                               "focus": {f"{a} x {b}": pairs.get(f"{a} x {b}", pairs.get(f"{b} x {a}"))
                                         for a, b in FOCUS_PAIRS
                                         if f"{a} x {b}" in pairs or f"{b} x {a}" in pairs}},
        "coverage": {"score": _mean(v["score"] for v in coverage.values()), "columns": coverage},
        "title_words_tv_complement": title_words,
        "columns_left_out": {"constant_in_source": constant,
                             "identifiers_and_text": ["product_code", "itemurl", "imageurl", "title"]},
    }


def _source_rows(source: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(source, SourceCatalog):
        return ({k: v for k, v in asdict(r).items() if k not in ("image", "origin")} for r in source.rows)
    return iter_rows(source)


def _columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    cols: dict[str, list] = {c: [] for c in (*NUMERIC, *CATEGORICAL, "title")}
    n = 0
    for row in rows:
        n += 1
        for c in cols:
            cols[c].append(row.get(c))
    return cols | {"_n": n}


def _present(values: list) -> list:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _floats(values: list) -> np.ndarray:
    return np.array([float(v) for v in _present(values)], dtype=np.float64)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(kept)), 4) if kept else None


# --------------------------------------------------------------------------------------------------
# Metrics


def _ks_complement(real: np.ndarray, synth: np.ndarray) -> float | None:
    if not len(real) or not len(synth):
        return None
    real, synth = np.sort(real), np.sort(synth)
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
    if not len(real) or not len(synth) or real.max() == real.min():
        return None
    span = real.max() - real.min()
    score = 1 - max(0.0, synth.min() - real.min()) / span - max(0.0, real.max() - synth.max()) / span
    return round(max(0.0, float(score)), 4)


def _pair_score(a: str, b: str, src: dict, gen: dict, numeric: list[str]) -> tuple[float | None, str]:
    both_r = [(x, y) for x, y in zip(src[a], src[b]) if x is not None and y is not None]
    both_g = [(x, y) for x, y in zip(gen[a], gen[b]) if x is not None and y is not None]
    if len(both_r) < 2 or len(both_g) < 2:
        return None, ""
    if a in numeric and b in numeric:
        r_src = _pearson(both_r)
        r_gen = _pearson(both_g)
        if r_src is None or r_gen is None:
            return None, "CorrelationSimilarity"
        return round(1 - abs(r_src - r_gen) / 2, 4), "CorrelationSimilarity"
    # Mixed or categorical: numeric sides are cut into bins set on the source's values.
    if a in numeric:
        both_r, both_g = _discretise(both_r, both_g, 0)
    if b in numeric:
        both_r, both_g = _discretise(both_r, both_g, 1)
    return _tv_complement(both_r, both_g), "ContingencySimilarity"


def _pearson(pairs: list[tuple]) -> float | None:
    arr = np.array(pairs, dtype=np.float64)
    if arr[:, 0].std() == 0 or arr[:, 1].std() == 0:
        return None
    return float(np.corrcoef(arr[:, 0], arr[:, 1])[0, 1])


def _discretise(real: list[tuple], synth: list[tuple], k: int) -> tuple[list[tuple], list[tuple]]:
    edges = np.histogram_bin_edges(np.array([float(p[k]) for p in real]), bins=BINS)
    edges[0], edges[-1] = -np.inf, np.inf

    def cut(pairs: list[tuple]) -> list[tuple]:
        bins = np.digitize(np.array([float(p[k]) for p in pairs]), edges)
        return [tuple(int(bins[i]) if j == k else p[j] for j in range(2)) for i, p in enumerate(pairs)]

    return cut(real), cut(synth)


def _words(titles: list) -> list[str]:
    return [w for t in _present(titles) for w in re.findall(r"\w+", normalise_title(t))]


# --------------------------------------------------------------------------------------------------
# Markdown for the dataset card


def render_fidelity_section(report: Mapping[str, Any]) -> str:
    """Markdown body for the card, without a heading: ``extra_sections={"Fidelity": render_fidelity_section(r)}``."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    lines = [f"{report['rows_generated']} generated rows scored against {report['rows_source']} source rows, "
             "with the metrics of SDMetrics' single-table quality report (computed with numpy).", "",
             "| property | score |", "| --- | --- |",
             f"| **overall** (mean of the two below) | **{pct(report['overall_score'])}** |",
             f"| column shapes (KS / TV complement) | {pct(report['column_shapes']['score'])} |",
             f"| column pair trends (correlation / contingency similarity) | "
             f"{pct(report['column_pair_trends']['score'])} |",
             f"| category coverage and price range coverage | {pct(report['coverage']['score'])} |",
             f"| title word frequencies (TV complement) | {pct(report['title_words_tv_complement'])} |",
             "", "| column | metric | shape | coverage |", "| --- | --- | --- | --- |"]
    coverage = report["coverage"]["columns"]
    for column, shape in report["column_shapes"]["columns"].items():
        cov = coverage.get(column, {})
        note = f" (missing {cov['missing_count']})" if cov.get("missing_count") else ""
        lines.append(f"| {column} | {shape['metric']} | {pct(shape['score'])} | {pct(cov.get('score'))}{note} |")
    focus = report["column_pair_trends"]["focus"]
    if focus:
        lines += ["", "| category x price pair | metric | score |", "| --- | --- | --- |"]
        lines += [f"| {name} | {v['metric']} | {pct(v['score'])} |" for name, v in focus.items() if v]
    left = report["columns_left_out"]
    lines += ["", f"Left out: identifiers and text ({', '.join(left['identifiers_and_text'])}) and columns "
              f"constant in the source ({', '.join(left['constant_in_source']) or 'none'})."]
    return "\n".join(lines) + "\n"

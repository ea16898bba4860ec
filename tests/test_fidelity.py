"""Fidelity scores: the SDMetrics formulas, checked on hand-computed cases, on the fixture, and against
SDMetrics' own ``QualityReport`` where ``sdmetrics`` is installed (a test-only install: never a dependency)."""
import json
import random
import subprocess
import sys
import warnings
from dataclasses import asdict

import numpy as np
import pytest

from generator.fidelity import (_contingency_similarity, _correlation_similarity, _cramers_v, _discretise,
                                _ks_complement, _range_coverage, _tv_complement, fidelity_report,
                                render_fidelity_section)
from generator.privacy import iter_rows
from generator.sources import load_source

import _gen_fixtures as fixtures  # test support, in tests/

SCORED = {"full_price": "numerical", "price": "numerical", "full_price_eur": "numerical", "price_eur": "numerical",
          "category1_code": "categorical", "category2_code": "categorical", "category3_code": "categorical",
          "flg_discount": "boolean"}


@pytest.fixture(scope="module")
def catalog():
    return load_source(fixtures.DEFAULT_DIR)


def _rows(catalog):
    return [{k: v for k, v in asdict(r).items() if k not in ("image", "origin")} for r in catalog.rows]


def test_source_against_itself_scores_one(catalog):
    report = fidelity_report(_rows(catalog), catalog)
    assert report["overall_score"] == 1.0
    assert report["column_shapes"]["score"] == 1.0 and report["column_pair_trends"]["score"] == 1.0
    assert report["coverage"]["score"] == 1.0 and report["title_words_tv_complement"] == 1.0
    # constant columns say nothing and are left out, like identifiers and free text
    assert "brand" in report["columns_left_out"]["constant_in_source"]
    assert report["sdtypes"] == SCORED and set(report["column_shapes"]["columns"]) == set(SCORED)
    trends = report["column_pair_trends"]
    assert len(trends["pairs"]) == 28  # every pair of the 8 scored columns
    assert all(p["score"] == 1.0 for p in trends["pairs"].values())
    assert 0 < trends["pairs_counted"] <= 28 and trends["score_all_pairs"] == 1.0
    assert "category3_code x full_price" in trends["focus"]
    assert [w["score"] for w in trends["weakest"]] == sorted(w["score"] for w in trends["weakest"])
    # real vs synthetic counts for a report's histograms, the same on both sides here
    dists = report["distributions"]
    assert set(dists) == set(SCORED) and all(d["real"] == d["synthetic"] for d in dists.values())
    assert len(dists["full_price"]["edges"]) == len(dists["full_price"]["real"]) + 1
    assert sum(dists["category3_code"]["real"]) == report["rows_source"] == len(catalog.rows)


def test_metric_values_by_hand():
    # KS statistic of {1,2,3} vs {2,3,4}: the CDFs differ by 1/3 at most; missing values are dropped
    assert _ks_complement(np.array([1.0, 2, 3]), np.array([2.0, 3, 4, np.nan])) == pytest.approx(1 - 1 / 3, abs=1e-4)
    assert _ks_complement(np.array([1.0, 2]), np.array([5.0, 6])) == 0.0
    # TVD of (a: 1/2, b: 1/2) vs (a: 1/4, b: 1/4, c: 1/2) = 1/2 (|1/4| + |1/4| + |1/2|) = 1/2
    assert _tv_complement(["a", "b"], ["a", "b", "c", "c"]) == pytest.approx(0.5)
    # range [0, 10] covered by [2, 9]: 1 - 0.2 - 0.1
    assert _range_coverage(np.array([0.0, 10]), np.array([2.0, 9])) == pytest.approx(0.7)
    # SDMetrics' ColumnPairTrends: 10 equal-width bins on the values' own range, np.digitize; the maximum and
    # missing values share bin 11, and a shifted copy gets the same bins as the original
    assert _discretise(np.array([0.0, 5, 9.99, 10, np.nan])).tolist() == [1, 6, 10, 11, 11]
    assert _discretise(np.array([0.0, 10]) + 100).tolist() == _discretise(np.array([0.0, 10])).tolist()


def test_pair_metrics_by_hand():
    up, down = np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])
    opposite = _correlation_similarity((up, up), (up, down))  # r = 1 vs r = -1: 1 - |1 - -1| / 2
    assert opposite["score"] == 0.0 and opposite["real_correlation"] == 1.0 and opposite["meets_threshold"]
    constant = _correlation_similarity((up, up), (up, np.ones(4)))
    assert constant["score"] is None and not constant["meets_threshold"]  # SDMetrics: ConstantInputError
    # Cramér's V: 1 for a one-to-one table, 0 for independent columns
    a, b = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    assert _cramers_v(a, a) == pytest.approx(1.0) and _cramers_v(a, b) == pytest.approx(0.0)
    # joint frequencies (0,0): 1/2, (1,1): 1/2 vs (0,1): 1/2, (1,1): 1/2 -> TVD 1/2; the real table is
    # one-to-one, so the pair counts
    pair = _contingency_similarity((a, a), (np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1])))
    assert pair["score"] == pytest.approx(0.5) and pair["meets_threshold"] and pair["real_association"] == 1.0
    # no relation in the source (V = 0): scored, but it does not count towards the property score
    assert not _contingency_similarity((a, b), (a, b))["meets_threshold"]


def test_scores_drop_when_the_rows_drift(catalog):
    rows = _rows(catalog)
    pricier = [r | {"full_price": r["full_price"] * 1.5, "full_price_eur": (r["full_price_eur"] or 0) * 1.5}
               for r in rows]
    drift = fidelity_report(pricier, catalog)
    assert drift["column_shapes"]["columns"]["full_price"]["score"] < 0.75
    assert drift["column_shapes"]["columns"]["category3_code"]["score"] == 1.0
    # each side is binned on its own range (as in SDMetrics): a scaled price keeps its pair trends
    assert drift["column_pair_trends"]["pairs"]["category3_code x full_price"]["score"] > 0.95
    # prices shuffled across rows: the same column shapes, the category x price trends broken
    prices = [r["full_price"] for r in rows]
    random.Random(0).shuffle(prices)
    shuffled = fidelity_report([r | {"full_price": p} for r, p in zip(rows, prices)], catalog)
    assert shuffled["column_shapes"]["columns"]["full_price"]["score"] == 1.0
    trends = shuffled["column_pair_trends"]
    assert trends["pairs"]["category3_code x full_price"]["score"] < 0.9
    assert trends["score"] < 1.0 and trends["weakest"][0]["pair"].endswith("x full_price")
    # dropping a category shows up in coverage, by name
    gone = rows[0]["category3_code"]
    fewer = fidelity_report([r for r in rows if r["category3_code"] != gone], catalog)
    cov = fewer["coverage"]["columns"]["category3_code"]
    assert cov["score"] < 1.0 and cov["missing"] == [gone] and cov["missing_count"] == 1


def test_rendered_section(catalog):
    rows = _rows(catalog)
    prices = [r["price"] for r in rows]
    random.Random(1).shuffle(prices)
    text = render_fidelity_section(fidelity_report([r | {"price": p} for r, p in zip(rows, prices)], catalog))
    assert "**overall**" in text and "KSComplement" in text and not text.startswith("#")
    assert "| weakest column pairs | metric | score |" in text and "x price | ContingencySimilarity |" in text
    assert "of the 28 column pairs" in text


def test_empty_input_is_a_clear_error(catalog):
    with pytest.raises(ValueError, match="fidelity needs rows on both sides"):
        fidelity_report([], catalog)


# --------------------------------------------------------------------------------------------------
# Against SDMetrics itself


def _sdmetrics_report(real, synth, thresholds: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the single-table report is a deprecated alias in 0.32
        from sdmetrics.reports.single_table import QualityReport
        report = QualityReport()
        if not thresholds and hasattr(report, "real_correlation_threshold"):
            report.real_correlation_threshold = report.real_association_threshold = 0
        report.generate(real, synth, {"columns": {c: {"sdtype": t} for c, t in SCORED.items()}}, verbose=False)
    scores = report.get_properties().set_index("Property")["Score"]
    return report, float(scores["Column Shapes"]), float(scores["Column Pair Trends"])


def test_same_figure_as_sdmetrics_quality_report(tmp_path):
    pytest.importorskip("sdmetrics")
    pd = pytest.importorskip("pandas")
    out = tmp_path / "fid5"
    cmd = [sys.executable, "-m", "generator", "--source", str(fixtures.DEFAULT_DIR), "--rows", "1000",
           "--seed", "5", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = json.loads((out / "fidelity_report.json").read_text())  # what the card reads
    assert ours["sdtypes"] == SCORED

    def frame(rows):
        df = pd.DataFrame([{c: r.get(c) for c in SCORED} for r in rows])
        return df.astype({c: "float64" for c, t in SCORED.items() if t == "numerical"})

    real, synth = frame(_rows(load_source(fixtures.DEFAULT_DIR))), frame(iter_rows(out))
    report, shapes, trends = _sdmetrics_report(real, synth, thresholds=True)
    has_thresholds = hasattr(report, "real_correlation_threshold")  # sdmetrics >= 0.27
    ours_trends = ours["column_pair_trends"]["score" if has_thresholds else "score_all_pairs"]
    assert ours["column_shapes"]["score"] == pytest.approx(shapes, abs=0.005)
    assert ours_trends == pytest.approx(trends, abs=0.005)
    assert ours["overall_score"] == pytest.approx((shapes + trends) / 2, abs=0.005)
    for row in report.get_details("Column Shapes").itertuples():
        assert ours["column_shapes"]["columns"][row.Column]["score"] == pytest.approx(row.Score, abs=0.01)

    # every pair, scored with the thresholds at 0; which pairs count, as SDMetrics' own "Meets Threshold?"
    all_pairs, _, all_trends = _sdmetrics_report(real, synth, thresholds=False)
    assert ours["column_pair_trends"]["score_all_pairs"] == pytest.approx(all_trends, abs=0.005)
    pairs = {frozenset(p["columns"]): p for p in ours["column_pair_trends"]["pairs"].values()}
    details = all_pairs.get_details("Column Pair Trends")
    assert len(details) == len(pairs) == 28
    for row in details.itertuples():
        mine = pairs[frozenset((row[1], row[2]))]
        assert (mine["metric"], mine["score"]) == (row.Metric, pytest.approx(row.Score, abs=0.01)), row
    if has_thresholds:
        counted = report.get_details("Column Pair Trends")
        for row in counted.itertuples():
            assert pairs[frozenset((row[1], row[2]))]["meets_threshold"] == (row.Score == row.Score), row

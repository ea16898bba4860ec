"""Fidelity scores: the SDMetrics formulas, checked on hand-computed cases and on the fixture."""
from dataclasses import asdict

import numpy as np
import pytest

from generator.fidelity import (_discretise, _ks_complement, _range_coverage, _tv_complement, fidelity_report,
                                render_fidelity_section)
from generator.sources import load_source

import _gen_fixtures as fixtures  # test support, in tests/


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
    assert set(report["column_shapes"]["columns"]) == {"full_price", "price", "full_price_eur", "price_eur",
                                                      "category1_code", "category2_code", "category3_code",
                                                      "flg_discount"}
    assert "category3_code x full_price" in report["column_pair_trends"]["focus"]


def test_metric_values_by_hand():
    # KS statistic of {1,2,3} vs {2,3,4}: the CDFs differ by 1/3 at most
    assert _ks_complement(np.array([1.0, 2, 3]), np.array([2.0, 3, 4])) == pytest.approx(1 - 1 / 3, abs=1e-4)
    assert _ks_complement(np.array([1.0, 2]), np.array([5.0, 6])) == 0.0
    # TVD of (a: 1/2, b: 1/2) vs (a: 1/4, b: 1/4, c: 1/2) = 1/2 (|1/4| + |1/4| + |1/2|) = 1/2
    assert _tv_complement(["a", "b"], ["a", "b", "c", "c"]) == pytest.approx(0.5)
    # range [0, 10] covered by [2, 9]: 1 - 0.2 - 0.1
    assert _range_coverage(np.array([0.0, 10]), np.array([2.0, 9])) == pytest.approx(0.7)
    # bins are set on the source's values; outer bins are open, so far-out values land in them
    real, synth = _discretise([("A", 0.0), ("A", 10.0)], [("A", -50.0), ("A", 50.0)], 1)
    assert [p[1] for p in real] == [p[1] for p in synth]


def test_scores_drop_when_the_rows_drift(catalog):
    rows = _rows(catalog)
    pricier = [r | {"full_price": r["full_price"] * 1.5, "full_price_eur": (r["full_price_eur"] or 0) * 1.5}
               for r in rows]
    drift = fidelity_report(pricier, catalog)
    assert drift["column_shapes"]["columns"]["full_price"]["score"] < 0.75
    assert drift["column_shapes"]["columns"]["category3_code"]["score"] == 1.0
    assert drift["column_pair_trends"]["focus"]["category3_code x full_price"]["score"] < 0.9
    # dropping a category shows up in coverage, by name
    gone = rows[0]["category3_code"]
    fewer = fidelity_report([r for r in rows if r["category3_code"] != gone], catalog)
    cov = fewer["coverage"]["columns"]["category3_code"]
    assert cov["score"] < 1.0 and cov["missing"] == [gone] and cov["missing_count"] == 1


def test_rendered_section(catalog):
    text = render_fidelity_section(fidelity_report(_rows(catalog)[:100], catalog))
    assert "**overall**" in text and "| category3_code x full_price | ContingencySimilarity |" in text
    assert "KSComplement" in text and not text.startswith("#")


def test_empty_input_is_a_clear_error(catalog):
    with pytest.raises(ValueError, match="fidelity needs rows on both sides"):
        fidelity_report([], catalog)

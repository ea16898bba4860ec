"""Evaluation: parsing generated answers, and metrics + baselines on a hand-made example."""
from __future__ import annotations

import json
import math

import pytest

from finetune.evaluate import parse_answer, score, token_f1, write_results


@pytest.mark.parametrize("text, title, category, price", [
    ("Product: Honey Check Cotton Scarf, Category: SCARVES, Full Price: 490.0",
     "Honey Check Cotton Scarf", "SCARVES", 490.0),
    # Thousands separators and two decimals, as a model trained on other data might print them.
    ("Product: Heritage Trench Coat, Category: TRENCH COATS, Full Price: 1,890.00",
     "Heritage Trench Coat", "TRENCH COATS", 1890.0),
    ("Product: Tote, Category: BAGS, Full Price: 12,990", "Tote", "BAGS", 12990.0),
    # Case, '=' for ':', ';' for ',', a dollar sign and extra spaces.
    ("product = Trench Coat ;  CATEGORY=TRENCH COATS; full price: $ 2,290.5",
     "Trench Coat", "TRENCH COATS", 2290.5),
    # A comma inside the title does not end it: the whole pattern anchors on ", Category".
    ("Product: Coat, Long, Category: COATS, Full Price: 10.0", "Coat, Long", "COATS", 10.0),
    ("  Product: Cap, Category: HATS, Full Price: 150.0<|end|> trailing", "Cap", "HATS", 150.0),
])
def test_parse_answer_well_formed(text, title, category, price):
    parsed = parse_answer(text)
    assert (parsed.title, parsed.category, parsed.price) == (title, category, price)
    assert parsed.complete


@pytest.mark.parametrize("text, title, category, price", [
    ("Product: Coat, Category: COATS", "Coat", "COATS", None),                    # generation cut short
    ("Product: Coat, Category: COATS, Full Price: ", "Coat", "COATS", None),
    ("Category: SCARVES", None, "SCARVES", None),
    ("Full Price: 1,890.00", None, None, 1890.0),
    ("lorem ipsum dolor", None, None, None),
    ("", None, None, None),
])
def test_parse_answer_malformed_keeps_what_it_can(text, title, category, price):
    parsed = parse_answer(text)
    assert (parsed.title, parsed.category, parsed.price) == (title, category, price)
    assert not parsed.complete


def test_token_f1():
    assert token_f1("Blue Scarf", "Blue Silk Scarf") == pytest.approx(0.8)     # P = 1, R = 2/3
    assert token_f1("blue silk scarf", "Blue Silk Scarf") == 1.0
    assert token_f1(None, "Blue Scarf") == 0.0
    assert token_f1("Red Coat", "Blue Scarf") == 0.0


TRAIN = [
    {"title": "A", "category3_code": "X3", "category2_code": "X2", "full_price": 100.0},
    {"title": "B", "category3_code": "X3", "category2_code": "X2", "full_price": 300.0},
    {"title": "C", "category3_code": "Y3", "category2_code": "Y2", "full_price": 1000.0},
]
TEST = [
    {"title": "Red Wool Coat", "category3_code": "Y3", "category2_code": "Y2", "full_price": 1000.0},
    {"title": "Blue Silk Scarf", "category3_code": "X3", "category2_code": "X2", "full_price": 200.0},
    {"title": "Green Bag", "category3_code": "X3", "category2_code": "X2", "full_price": 400.0},
    {"title": "Black Belt", "category3_code": "Y3", "category2_code": "Y2", "full_price": 500.0},
]
TEXTS = {
    0: "Product: Red Wool Coat, Category: Y3, Full Price: 1,100.00",   # right category, price off by 100
    1: "Product: Blue Scarf, Category: Y3, Full Price: 200.0",         # wrong category, exact price
    2: "Category: x3, price unknown",                                  # malformed, but the category is right
    # row 3 is missing: its image could not be read, so it counts as unparsed
}


def test_score_hand_made_example():
    result = score(TEXTS, TRAIN, TEST)
    m = result.metrics
    assert (m["n_test"], m["n_generated"], m["n_parsed"]) == (4, 3, 2)
    model = m["model"]
    assert model["parse_rate"] == 0.5
    assert model["category3_accuracy"] == 0.5                  # rows 0 and 2
    assert model["category2_accuracy"] == 0.5                  # via the train split's category3 -> category2
    assert model["title_exact_match"] == 0.25
    assert model["title_token_f1"] == pytest.approx((1 + 0.8) / 4)
    assert model["price_mae"] == pytest.approx(50.0)           # parsed prices: |1100-1000|, |200-200|
    assert model["price_mape"] == pytest.approx(5.0)
    # Unparsed prices count as the training median (300): errors 100, 0, 100, 200.
    assert model["price_mae_all"] == pytest.approx(100.0)
    assert model["price_mape_all"] == pytest.approx(100 * (0.1 + 0 + 0.25 + 0.4) / 4)

    base = m["baselines"]
    assert base["majority_category"] == {"category3_accuracy": 0.5, "category2_accuracy": 0.5, "predicts": "X3"}
    assert base["median_price"]["predicts"] == 300.0
    assert base["median_price"]["price_mae_all"] == pytest.approx((700 + 100 + 100 + 200) / 4)
    assert base["median_price"]["price_mape_all"] == pytest.approx(100 * (0.7 + 0.5 + 0.25 + 0.4) / 4)
    # Median price of the true category in train: X3 -> 200, Y3 -> 1000.
    assert base["category_median_price"]["price_mae_all"] == pytest.approx((0 + 0 + 200 + 500) / 4)
    assert base["category_median_price"]["price_mape_all"] == pytest.approx(100 * (0 + 0 + 0.5 + 1.0) / 4)

    p = result.predictions
    assert [x["category_correct"] for x in p] == [True, False, True, False]
    assert p[0]["price_error"] == pytest.approx(100.0) and p[2]["price_error"] is None
    assert p[3]["prediction"] is None and not p[3]["parsed"]
    assert p[1]["truth"] == "Product: Blue Silk Scarf, Category: X3, Full Price: 200.0"


def test_write_results_is_valid_json_without_nan(tmp_path):
    result = score({}, TRAIN, TEST)                            # nothing parsed: MAE over parsed rows is NaN
    assert math.isnan(result.metrics["model"]["price_mae"])
    write_results(result, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"]["price_mae"] is None
    assert metrics["model"]["parse_rate"] == 0.0
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["parsed"] is False for line in lines)
    assert not list(tmp_path.glob(".*tmp*"))                   # temp files were renamed into place

"""Scoring users can trust and read: category2 from the whole answer, per-class diagnostics, the data's
limits beside the model, and eval log lines that can be plotted against samples seen."""
from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from finetune.data import answer_text
from finetune.eval_tables import diagnostics_table, results_table
from finetune.evaluate import (
    Category2Rule,
    fraction_of_limit,
    limits_in_metric_units,
    load_limits,
    score,
    write_results,
)
from finetune.tracking import LOG_FILE, Tracker


def _row(title, cat3, cat2, price):
    return {"title": title, "category3_code": cat3, "category2_code": cat2, "full_price": price}


# "N.A." is filed under four category2, SCARVES most often (as in the generated catalogue). Leather is
# common among N.A. accessories and rare among N.A. skirts. As in the generated catalogues, colours,
# patterns and materials recur across the catalogue (shirts, sweaters, coats, shoes, bags) while item
# words ("Kilt", "Charm", "Scarf") belong to one category2.
_SPREAD = ("Charcoal", "Navy", "Ivory", "Pink", "Bright Red", "Camel", "Grey", "Black", "Tan")
NA_TRAIN = [
    *(_row(f"{c} Check Cotton Shirt", "CASUAL SHIRTS", "SHIRTS", 590.0) for c in _SPREAD),
    *(_row(f"{c} Wool Sweater", "SWEATERS", "KNITWEAR", 990.0) for c in _SPREAD),
    *(_row(f"{c} Check Wool Coat", "COATS", "OUTERWEAR", 2290.0) for c in _SPREAD),
    *(_row(f"{c} Check Wool Scarf", "N.A.", "SCARVES", 620.0) for c in ("Charcoal", "Navy", "Camel", "Ivory")),
    *(_row(f"{c} Cashmere Fringed Scarf", "N.A.", "SCARVES", 690.0) for c in ("Charcoal", "Pink", "Camel")),
    _row("Black Leather Key Charm", "N.A.", "ACCESSORIES", 350.0),
    _row("Tan Leather Bag Charm", "N.A.", "ACCESSORIES", 390.0),
    _row("Black Leather Luggage Tag", "N.A.", "ACCESSORIES", 320.0),
    _row("Navy Wool Kilt", "N.A.", "SKIRTS", 1190.0),
    _row("Camel Cotton Pleated Skirt", "N.A.", "SKIRTS", 1090.0),
    _row("Grey Wool Pinafore Dress", "N.A.", "DRESSES", 1290.0),
    *(_row(f"{c} Leather Chelsea Boots", "BOOTS", "SHOES", 1290.0) for c in ("Black", "Tan", "Bright Red")),
    *(_row(f"{c} Leather Tote", "TOTES", "BAGS", 1890.0) for c in ("Black", "Tan", "Charcoal")),
]
NA_TEST = [
    _row("Charcoal Check Wool Kilt", "N.A.", "SKIRTS", 1290.0),      # its nearest train title is a scarf
    _row("Bright Red Leather Kilt", "N.A.", "SKIRTS", 1390.0),       # "Leather" leans to ACCESSORIES
    _row("Pink Leather Key Charm", "N.A.", "ACCESSORIES", 390.0),
    _row("Ivory Wool Pinafore Dress", "N.A.", "DRESSES", 1190.0),
    _row("Navy Check Wool Scarf", "N.A.", "SCARVES", 590.0),
    _row("Black Leather Chelsea Boots", "BOOTS", "SHOES", 1190.0),
]


def test_a_perfect_answer_scores_full_category2_where_na_spans_several():
    """The truth text scores 100 %; the old rule (most frequent category2 of the category3: SCARVES
    for N.A.) could not count the kilts, the charm or the dress."""
    texts = {i: answer_text(r) for i, r in enumerate(NA_TEST)}
    m = score(texts, NA_TRAIN, NA_TEST).metrics
    assert m["model"]["category3_accuracy"] == 1.0
    assert m["model"]["category2_accuracy"] == 1.0
    assert "N.A. -> SCARVES/ACCESSORIES/SKIRTS/DRESSES" in m["category2_rule"]
    assert "title words" in m["category2_rule"]


def test_category2_follows_the_answer_not_the_truth():
    rule = Category2Rule(NA_TRAIN)
    assert rule.ambiguous == {"N.A.": ["SCARVES", "ACCESSORIES", "SKIRTS", "DRESSES"]}
    assert rule("N.A.", "Charcoal Check Wool Kilt") == "SKIRTS"
    assert rule("n.a.", "charcoal check wool scarf") == "SCARVES"       # case-insensitive
    assert rule("N.A.", None) == "SCARVES"                              # no title: the most frequent
    assert rule("N.A.", "Shiny Thing") == "SCARVES"                     # no word seen in train: same
    assert rule("BOOTS", "Pink Check Wool Scarf") == "SHOES"            # unambiguous category3: the title is moot
    assert rule("SANDALS", "Black Leather Sandals") is None             # a category3 train never had

    # An answer with the right category3 but a scarf's title for a kilt row counts as wrong.
    texts = {0: "Product: Charcoal Check Wool Scarf, Category: N.A., Full Price: 1290.0"}
    result = score(texts, NA_TRAIN, NA_TEST[:1])
    assert result.metrics["model"]["category3_accuracy"] == 1.0
    assert result.metrics["model"]["category2_accuracy"] == 0.0
    assert result.predictions[0]["category2_code"] == "SCARVES"
    assert result.predictions[0]["category2_correct"] is False


# --------------------------------------------------------------------------------------------
# Diagnostics

TRAIN = [
    _row("A", "X3", "X2", 100.0),
    _row("B", "X3", "X2", 300.0),
    _row("C", "Y3", "Y2", 1000.0),
    _row("D", "Z3", "Z2", 50.0),
]
TEST = [
    _row("Red Wool Coat", "Y3", "Y2", 1000.0),
    _row("Blue Silk Scarf", "X3", "X2", 200.0),
    _row("Green Bag", "X3", "X2", 400.0),
    _row("Black Belt", "Y3", "Y2", 500.0),
    _row("Grey Cap", "Y3", "Y2", 800.0),
    _row("Tan Belt", "X3", "X2", 100.0),
]
TEXTS = {
    0: "Product: Red Wool Coat, Category: Y3, Full Price: 1,100.00",   # right, price +10 %
    1: "Product: Blue Scarf, Category: Y3, Full Price: 200.0",         # X3 taken for Y3, exact price
    2: "Category: x3, price unknown",                                  # malformed, category right
    # 3: the image could not be read
    4: "Product: Grey Cap, Category: Z3, Full Price: 400.0",           # Y3 taken for Z3, -50 %
    5: "Product: Tan Belt, Category: Y3, Full Price: 100.0",           # X3 taken for Y3 again
}


def test_per_class_accuracy_confusions_price_by_class_and_unparsed():
    m = score(TEXTS, TRAIN, TEST).metrics
    assert m["per_category3"] == {
        "X3": {"n": 3, "correct": 1, "accuracy": pytest.approx(1 / 3), "confused_with": ["Y3", 2]},
        "Y3": {"n": 3, "correct": 1, "accuracy": pytest.approx(1 / 3), "confused_with": ["Z3", 1]},
    }
    # Most common first; answers without a category (row 3) are not confusions.
    assert m["confusions"] == [["X3", "Y3", 2], ["Y3", "Z3", 1]]
    by_class = m["price_mape_by_category3"]
    assert by_class["X3"]["n"] == 2 and by_class["X3"]["mape"] == pytest.approx(0.0)
    assert by_class["Y3"]["n"] == 2 and by_class["Y3"]["mape"] == pytest.approx(100 * (0.1 + 0.5) / 2)
    # The category-median baseline per class: X3 -> 200 (|0|, |0.5|, |1.0|), Y3 -> 1000 (0, 1.0, 0.25).
    assert by_class["X3"]["baseline_mape"] == pytest.approx(100 * (0 + 0.5 + 1.0) / 3)
    assert by_class["Y3"]["baseline_mape"] == pytest.approx(100 * (0 + 1.0 + 0.25) / 3)
    assert m["n_unparsed"] == 2
    assert m["unparsed"] == [{"index": 2, "text": "Category: x3, price unknown"}, {"index": 3, "text": None}]
    # The headline keys stay where they were.
    assert {"n_test", "n_parsed", "n_generated", "model", "baselines"} <= set(m)


def test_confusions_and_unparsed_are_capped():
    train = [_row("t", f"C{i}", "K", 10.0) for i in range(30)]
    test = [_row("t", f"C{i}", "K", 10.0) for i in range(30)] * 3
    texts = {i: f"Product: t, Category: C{(i + 1) % 30}, Full Price: 10" for i in range(30)}  # 30 distinct pairs
    texts.update({i: "garbage" for i in range(30, 90)})
    m = score(texts, train, test).metrics
    assert len(m["confusions"]) == 20
    assert m["per_category3"]["C29"]["confused_with"] == ["C0", 1]     # beyond the top 20, still named
    assert m["n_unparsed"] == 60 and len(m["unparsed"]) == 50
    assert m["unparsed"][0] == {"index": 30, "text": "garbage"}


def test_diagnostics_are_written_as_strict_json(tmp_path):
    result = score({}, TRAIN, TEST)            # nothing parsed: no class has a priced answer
    write_results(result, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["price_mape_by_category3"]["X3"] == {"n": 0, "mape": None,
                                                         "baseline_mape": pytest.approx(100 * 1.5 / 3)}
    assert metrics["confusions"] == [] and len(metrics["unparsed"]) == 6


def _render(renderable) -> str:
    console = Console(record=True, width=160)
    console.print(renderable)
    return console.export_text()


def test_diagnostics_table_shows_weakest_classes_and_confusions():
    train = [_row("t", c, "K", 10.0) for c in ("GOOD", "BAD", "MID")]
    test = [_row("t", "GOOD", "K", 10.0)] * 4 + [_row("t", "BAD", "K", 10.0)] * 4 + [_row("t", "MID", "K", 10.0)] * 4
    answers = ["GOOD"] * 4 + ["MID"] * 3 + ["GOOD"] + ["MID"] * 2 + ["BAD"] * 2
    texts = {i: f"Product: t, Category: {a}, Full Price: 10" for i, a in enumerate(answers)}
    text = _render(diagnostics_table(score(texts, train, test).metrics, k=2))
    lines = text.splitlines()
    assert "weakest category3 classes (2 of 3)" in text
    bad = next(i for i, line in enumerate(lines) if line.lstrip("│ ").startswith("BAD"))
    mid = next(i for i, line in enumerate(lines) if line.lstrip("│ ").startswith("MID"))
    assert bad < mid                                    # weakest first: BAD 0 %, MID 50 %
    assert "0.0%" in lines[bad] and "MID (3)" in lines[bad]
    assert not any(line.lstrip("│ ").startswith("GOOD") for line in lines[:mid + 1])
    assert "top category3 confusions" in text
    # metrics.json written before diagnostics existed
    assert "no per-class diagnostics" in _render(diagnostics_table({"model": {}, "baselines": {}}))


# --------------------------------------------------------------------------------------------
# The data's own limit

# As generator/limits/ writes it: accuracies and MAPE as fractions (0.173 = 17.3 %), beside counts,
# nested tables and nulls that are not figures to compare with.
LIMITS = {"category3_accuracy": 0.96, "category2_accuracy": 0.99, "colour_accuracy": 0.93, "material_accuracy": None,
          "price_mape": 0.173, "price_mape_category3_median": 0.25, "majority_accuracy": {"category3": 0.109},
          "confusable": {"colour": [["Sand", "Archive Beige"]]}, "n_train": 2736, "n_test": 304,
          "colour_alike_levels": 10.0, "version": 1}
LIMIT_FIGURES = {"category3_accuracy": 0.96, "category2_accuracy": 0.99, "colour_accuracy": 0.93,
                 "price_mape": pytest.approx(17.3), "price_mape_category3_median": pytest.approx(25.0)}


def test_load_limits(tmp_path):
    assert load_limits(tmp_path) is None                        # a dataset without one
    assert load_limits("someone/some-hub-dataset") is None
    assert load_limits(None) is None
    (tmp_path / "limits.json").write_text(json.dumps(LIMITS))
    assert load_limits(tmp_path) == LIMITS
    assert load_limits(str(tmp_path)) == LIMITS
    (tmp_path / "limits.json").write_text("{not json")
    with pytest.warns(UserWarning, match="limits.json"):
        assert load_limits(tmp_path) is None
    (tmp_path / "limits.json").write_text("[0.9]")
    with pytest.warns(UserWarning, match="not a JSON object"):
        assert load_limits(tmp_path) is None


def test_score_with_limits_reports_the_fraction_reached(tmp_path):
    (tmp_path / "limits.json").write_text(json.dumps(LIMITS))
    texts = {i: answer_text(r) for i, r in enumerate(NA_TEST)}
    texts[0] = "Product: Charcoal Check Wool Scarf, Category: SCARVES, Full Price: 1290.0"   # both categories wrong
    texts[5] = "Product: Black Leather Chelsea Boots, Category: BOOTS, Full Price: 2380.0"  # price +100 %
    m = score(texts, NA_TRAIN, NA_TEST, limits=load_limits(tmp_path)).metrics
    model = m["model"]
    assert m["limits"] == LIMIT_FIGURES                                    # MAPE in percent, like the model's
    frac = m["fraction_of_limit"]
    assert frac["category3_accuracy"] == pytest.approx(model["category3_accuracy"] / 0.96) == pytest.approx(5 / 6 / 0.96)
    assert frac["category2_accuracy"] == pytest.approx(5 / 6 / 0.99)
    assert frac["price_mape"] == pytest.approx(17.3 / model["price_mape"]) == pytest.approx(17.3 / (100 / 6))
    assert frac["price_mape_all"] == pytest.approx(17.3 / model["price_mape_all"])   # the limit covers every row
    assert "parse_rate" not in frac and "colour_accuracy" not in frac
    assert "limits" not in score(texts, NA_TRAIN, NA_TEST).metrics
    # A limits.json without figures (no test split: every limit null) adds nothing.
    assert "limits" not in score(texts, NA_TRAIN, NA_TEST, limits={"category3_accuracy": None, "n_test": 0}).metrics


def test_limits_in_metric_units():
    assert limits_in_metric_units(LIMITS) == LIMIT_FIGURES
    assert limits_in_metric_units({"price_mae": 120.0, "price_mape": math.nan, "flag_accuracy": True}) == \
        {"price_mae": 120.0}


def test_fraction_of_limit_edges():
    assert fraction_of_limit({"price_mape": 0.0, "category3_accuracy": 0.5},
                             {"price_mape": 10.0, "category3_accuracy": 0.0}) == \
        {"price_mape": None, "category3_accuracy": None}
    assert fraction_of_limit({"price_mape": math.nan}, {"price_mape": 10.0}) == {"price_mape": None}


def test_results_table_shows_the_limit_column_only_with_limits():
    texts = {i: answer_text(r) for i, r in enumerate(NA_TEST)}
    plain = _render(results_table(score(texts, NA_TRAIN, NA_TEST).metrics))
    assert "data limit" not in plain and "of limit" not in plain
    text = _render(results_table(score(texts, NA_TRAIN, NA_TEST, limits=LIMITS).metrics))
    assert "data limit" in text and "of limit" in text
    row = next(line for line in text.splitlines() if "category3 accuracy" in line)
    assert row.split("│")[-3].strip() == "96.0%" and row.split("│")[-2].strip() == "104.2%"   # 1.0 / 0.96
    row = next(line for line in text.splitlines() if "price MAPE (parsed rows)" in line)
    assert row.split("│")[-3].strip() == "17.3%"


# --------------------------------------------------------------------------------------------
# Evaluation during training, against samples seen


def _log(out):
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def test_eval_log_lines_carry_samples_seen(tmp_path):
    tracker = Tracker({}, tmp_path, project="p", mode="disabled")
    m = score(TEXTS, TRAIN, TEST).metrics
    tracker.log_eval(m, 5, samples_seen=160)                               # during training
    tracker.log_eval({**m, "train": {"samples": 320, "steps": 10}}, 10)   # the final metrics carry it
    lines = _log(tmp_path)
    assert [(r["step"], r["samples_seen"]) for r in lines] == [(5, 160), (10, 320)]
    assert lines[0]["eval/category3_accuracy"] == pytest.approx(1 / 3)

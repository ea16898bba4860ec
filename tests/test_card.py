"""Dataset card: the Hub's YAML header, statistics that match the rows, and the extra-sections hook."""
from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest
import yaml
from huggingface_hub import DatasetCard

from generator.api import GenerateConfig, SyntheticRows, write_run
from generator.card import SplitStats, contact_sheet, price_summary, render_card, size_category
from generator.schema import features
from generator.taxonomy import load


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "run"
    report = write_run(GenerateConfig(rows=40, seed=2, image_size=32, rows_per_shard=16), out, quiet=True,
                       extra_sections={"Privacy report": "No exact copies found."})
    return out, report


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_yaml_header_is_what_the_hub_reads(run):
    out, _ = run
    text = (out / "README.md").read_text()
    meta = _header(text)
    assert meta["dataset_info"]["features"] == features()._to_yaml_list()
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 36
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == {"train": 36, "test": 4}
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                {"split": "test", "path": "data/test-*"}]
    assert "image-text-to-text" in meta["task_categories"] and meta["license"] == "cc-by-4.0"
    assert meta["size_categories"] == ["n<1K"]
    card = DatasetCard(text)  # huggingface_hub parses it
    assert card.data.pretty_name == meta["pretty_name"]


def test_body_reports_parameters_counts_prices_and_extra_sections(run):
    out, _ = run
    text = (out / "README.md").read_text()
    for fragment in ("| seed | `2` |", "| taxonomy | `burberry_us` |", "| train | 36 |", "| test | 4 |",
                     "## Prices per category2 (`full_price`, USD)", "## Category distribution",
                     "![Contact sheet", "## Privacy report\n\nNo exact copies found."):
        assert fragment in text, fragment


def test_statistics_match_the_rows(run):
    _, report = run
    source = SyntheticRows(load("burberry_us"), seed=2, num_rows=40, image_size=32)
    rows = [source.product(i).row for i in range(40)]
    text = (report.out / "README.md").read_text()
    by_c2 = Counter(r["category2_code"] for r in rows)
    for c2, n in by_c2.items():
        prices = [r["full_price"] for r in rows if r["category2_code"] == c2]
        assert f"| {c2} | {n:,} | {min(prices):,.0f} | {statistics.median(prices):,.0f} |" in text


def test_price_summary_and_stats_round_trip():
    rng = random.Random(0)
    prices = [rng.choice([290.0, 350.0, 390.0, 1190.0]) for _ in range(101)]
    stats = SplitStats()
    for p in prices:
        stats.add({"flg_discount": 0, "category1_code": "MAN", "category2_code": "BAGS", "category3_code": "N.A.",
                   "full_price": p})
    s = price_summary(stats.full_price["BAGS"])
    assert s["median"] == statistics.median(prices) and s["min"] == min(prices)
    assert s["mean"] == pytest.approx(statistics.mean(prices))
    even = Counter({100.0: 1, 200.0: 1})
    assert price_summary(even)["median"] == 150.0
    again = SplitStats.from_json(stats.to_json())
    assert again == stats
    again.merge(stats)
    assert again.rows == 202 and again.category3["BAGS / N.A."] == 202


@pytest.mark.parametrize("n,label", [(1, "n<1K"), (999, "n<1K"), (3040, "1K<n<10K"), (200_000, "100K<n<1M"),
                                     (5_000_000, "1M<n<10M")])
def test_size_category(n, label):
    assert size_category(n) == label


def test_contact_sheet_grid(run):
    out, _ = run
    source = SyntheticRows(load("burberry_us"), seed=2, num_rows=40, image_size=32)
    sheet = contact_sheet([source(i) for i in range(10)], columns=4, tile=64)
    assert sheet.width == 4 * 64 and sheet.height > 3 * 64
    assert (out / "contact_sheet.png").stat().st_size > 1000


def test_render_card_without_stats_sections_still_valid():
    text = render_card({"train": SplitStats(rows=0)}, {"source": {}}, contact_sheet=None)
    assert _header(text)["dataset_info"]["splits"][0]["num_examples"] == 0


def test_contact_sheet_captions_keep_the_whole_category_name():
    """A cut name ("TRENCH COA") reads as another category: the font shrinks until the name fits."""
    from PIL import Image, ImageDraw

    from generator.card import fitting_font

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    for name in ("TRENCH COATS", "WALLETS & CARD CASES", "SWEATSHIRTS & HOODIES"):
        font = fitting_font(draw, name, 128 - 6, 13)
        assert draw.textlength(name, font=font) <= 122, name


def test_contact_sheet_draws_each_category_name_whole(monkeypatch):
    from PIL import ImageDraw

    source = SyntheticRows(load("burberry_us"), seed=2, num_rows=40, image_size=32)
    rows = [dict(source(i), category3_code=name, category2_code="OUTERWEAR")
            for i, name in enumerate(("TRENCH COATS", "WALLETS & CARD CASES", "SWEATSHIRTS & HOODIES"))]
    drawn = []
    real = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, *a, **k: (drawn.append(text),
                                                                                      real(self, xy, text, *a, **k)))
    contact_sheet(rows, columns=3, tile=128)
    for name in ("TRENCH COATS", "WALLETS & CARD CASES", "SWEATSHIRTS & HOODIES"):
        assert any(text.startswith(name) for text in drawn), (name, drawn)

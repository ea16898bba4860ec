"""The privacy guard catches each way a row can leak a source record, and the report measures them."""
import io
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from generator.privacy import (EXACT_ROW, IDENTIFIER, IMAGE_DCR, METADATA_DCR, PII, TITLE_PRICE, GuardedSource,
                               PrivacyError, PrivacyGuard, find_pii, hamming, phash_pair, privacy_report,
                               render_privacy_section)
from generator.schema import COLUMN_NAMES, arrow_schema
from generator.sources import load_source

import _gen_fixtures as fixtures  # test support, in tests/


@pytest.fixture(scope="module")
def catalog():
    return load_source(fixtures.DEFAULT_DIR)


@pytest.fixture(scope="module")
def strict(catalog):
    return PrivacyGuard(catalog, "strict")


@pytest.fixture(scope="module")
def standard(catalog):
    return PrivacyGuard(catalog, "standard")


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _novel_image(seed: int = 0) -> bytes:
    """A picture unlike any fixture image: concentric rings."""
    size = 128
    yy, xx = np.mgrid[0:size, 0:size]
    rings = (np.sin(np.hypot(xx - 40 - seed, yy - 70) / 5.0) * 110 + 128).astype(np.uint8)
    return _jpeg(Image.fromarray(np.dstack([rings, rings[::-1], rings.T])))


def _fresh_row(catalog, **changes) -> dict:
    """A row that copies nothing: new title words, an off-grid price, new identifiers, a novel image."""
    template = catalog.rows[0]
    row = {k: v for k, v in asdict(template).items() if k in COLUMN_NAMES}
    row.update(title="Zanzibar Quixotic Trouser", full_price=1234.0, price=1234.0, product_code=12345678,
               itemurl="https://shop.example.com/zanzibar-p12345678",
               imageurl="https://images.example.net/is/image/00000000-0000-4000-8000-000000000000",
               category3_code="ZZ NEW", category2_code="ZZ NEW", image={"bytes": _novel_image(), "path": None})
    row.update(changes)
    return row


def test_a_fresh_row_passes(catalog, strict, standard):
    assert strict.check(_fresh_row(catalog)) is None
    assert standard.check(_fresh_row(catalog)) is None


def test_each_leak_is_caught(catalog, strict):
    src = catalog.rows[5]
    src_dict = {k: v for k, v in asdict(src).items() if k in COLUMN_NAMES}
    cases = {
        # the source row itself, identifiers replaced: still an exact copy of its content
        EXACT_ROW: _fresh_row(catalog, **{k: src_dict[k] for k in ("category1_code", "category2_code",
                                                                    "category3_code", "title", "full_price", "price")}),
        TITLE_PRICE: _fresh_row(catalog, title=src.title.upper(), full_price=src.full_price, price=src.full_price - 100),
        IDENTIFIER: _fresh_row(catalog, product_code=int(src.product_code)),
        METADATA_DCR: _fresh_row(catalog, category1_code=src.category1_code, category2_code=src.category2_code,
                                 category3_code=src.category3_code, title=src.title, full_price=src.full_price + 1,
                                 price=src.full_price + 1),
        IMAGE_DCR: _fresh_row(catalog, image={"bytes": _jpeg(Image.open(io.BytesIO(src.image)), 70), "path": None}),
        PII: _fresh_row(catalog, title="Wool Scarf for Jennifer Miller"),
    }
    for reason, row in cases.items():
        assert strict.check(row) == reason, reason


@pytest.mark.parametrize("where", ["itemurl", "imageurl", "title"])
def test_source_urls_and_asset_ids_are_caught_anywhere(catalog, strict, where):
    src = catalog.rows[7]
    asset = src.imageurl.rsplit("/", 1)[-1]
    values = {"itemurl": f"https://shop.example.com/x-p{src.product_code}",
              "imageurl": f"https://images.example.net/is/image/{asset}",
              "title": f"Scarf as seen at {src.itemurl}"}
    assert strict.check(_fresh_row(catalog, **{where: values[where]})) == IDENTIFIER


def test_flipped_copies_are_still_copies(catalog, strict):
    src = Image.open(io.BytesIO(catalog.rows[3].image))
    flipped = _fresh_row(catalog, image={"bytes": _jpeg(src.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), "path": None})
    assert strict.check(flipped) == IMAGE_DCR


def test_levels(catalog, strict, standard):
    named = _fresh_row(catalog, title="Scarf for Jennifer Miller")
    assert strict.check(named) == PII and standard.check(named) is None  # names reject at strict only
    emailed = _fresh_row(catalog, title="Scarf, write to jane.doe@example.org")
    assert standard.check(emailed) == PII
    off = PrivacyGuard(catalog, "off")
    copy = {k: v for k, v in asdict(catalog.rows[0]).items() if k in COLUMN_NAMES}
    copy["image"] = {"bytes": catalog.rows[0].image, "path": None}
    assert off.check(copy) is None and strict.check(copy) is not None
    with pytest.raises(ValueError, match="unknown privacy level 'lax'"):
        PrivacyGuard(catalog, "lax")


def test_synthetic_data_without_a_source(catalog):
    guard = PrivacyGuard(None, "strict")
    assert guard.check(_fresh_row(catalog)) is None
    assert guard.check(_fresh_row(catalog, title="Call +1 (555) 014-2298 now")) == PII
    report = privacy_report([_fresh_row(catalog), _fresh_row(catalog, title="Scarf for Jennifer Miller")], None, "strict")
    assert "exact_copies" not in report and report["pii"]["by_kind"] == {"name": 1}
    assert report["near_duplicate_images"]["rows"] == 2  # the same picture twice
    assert not report["passed"]
    text = render_privacy_section(report)
    assert "no source" in text and "DCR" not in text


def test_pii_detector_finds_the_planted_rows_and_nothing_else(catalog):
    planted = set(fixtures.PLANTED_PII)
    found = {r.title: find_pii(r.title) for r in catalog.rows}
    assert {t for t, kinds in found.items() if kinds} == planted
    assert sorted(k for t in planted for k in found[t]) == ["email", "name", "phone"]
    assert find_pii("Dr. Smith's bag") == ["name"]
    assert find_pii("Ultimate Glow Foundation – 40 Light Cool") == []
    assert find_pii("Rose Gold Chain Bag, Olive Green, size 2023-11-17") == []
    assert find_pii("call 020 7946 0958") == ["phone"]


def test_phash_is_robust_to_recompression_and_flips_but_tells_images_apart(catalog):
    a = Image.open(io.BytesIO(catalog.rows[0].image))
    h, m = phash_pair(a)
    h2, _ = phash_pair(_jpeg(a, 40))
    hf, _ = phash_pair(a.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    other, _ = phash_pair(_novel_image())
    arr = np.array([h, m, h2, hf, other], dtype=np.uint64)
    assert hamming(arr[0], arr[2]) <= 4          # recompression barely moves the hash
    assert hamming(arr[1], arr[3]) <= 4          # the mirror hash predicts the flipped image's hash
    assert hamming(arr[0], arr[4]) >= 16         # a different picture is far away


def test_baseline_is_nearest_other_record(catalog):
    guard = PrivacyGuard(catalog, "strict")
    # colour variants share title and price: the source's closest pairs are at distance 0
    assert guard.baseline["metadata_dcr"]["min"] == 0.0
    assert guard.baseline["metadata_dcr"]["n"] == len(catalog.all_rows())
    assert guard.baseline["image_dcr_bits"]["n"] == len(catalog.rows)
    assert 0 < guard.baseline["metadata_dcr"]["median"] < 0.2
    assert (guard.meta_limit >= 0.01).all() and (guard.image_limit >= 3).all()


def test_report_on_the_source_itself_fails_loudly(catalog, tmp_path):
    rows = []
    for r in catalog.rows[:50]:
        row = {k: v for k, v in asdict(r).items() if k in COLUMN_NAMES}
        row["product_code"] = int(row["product_code"]) if row["product_code"].isdigit() else 0
        row["image"] = {"bytes": r.image, "path": None}
        rows.append(row)
    report = privacy_report(rows, catalog, "standard")
    assert report["exact_copies"]["row_rate"] == 1.0 and report["exact_copies"]["title_price_rate"] == 1.0
    assert report["identifiers"]["rows_with_source_identifier"] == 50
    assert report["image_dcr_bits"]["generated"]["median"] == 0
    assert not report["passed"]
    # the same from parquet shards on disk
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), tmp_path / "data" / "train-00000-of-00001.parquet")
    from_disk = privacy_report(tmp_path, catalog, "standard")
    assert from_disk["exact_copies"] == report["exact_copies"]
    assert from_disk["identifiers"] == report["identifiers"]


class _Flaky:
    """Attempt 0 copies a source row, later attempts are fresh: the guard makes the wrapper retry."""

    def __init__(self, catalog, fresh_from: int):
        self.catalog, self.fresh_from = catalog, fresh_from

    def __len__(self):
        return 3

    def __call__(self, index, attempt=0):
        if attempt < self.fresh_from:
            return _fresh_row(self.catalog, product_code=int(self.catalog.rows[index].product_code))
        return _fresh_row(self.catalog, image={"bytes": _novel_image(attempt), "path": None})


def test_guarded_source_regenerates_then_gives_up(catalog, strict):
    guarded = GuardedSource(_Flaky(catalog, fresh_from=2), strict, max_attempts=4)
    row, reasons = guarded.generate(1)
    assert reasons == [IDENTIFIER, IDENTIFIER] and strict.check(row) is None
    assert guarded.rejections[IDENTIFIER] == 2 and len(guarded) == 3
    stubborn = GuardedSource(_Flaky(catalog, fresh_from=99), strict, max_attempts=3)
    with pytest.raises(PrivacyError, match="row 0: 3 attempts all failed the strict privacy check"):
        stubborn(0)


def test_rendered_section(catalog):
    report = privacy_report([_fresh_row(catalog)], catalog, "strict", rejections={IMAGE_DCR: 5}, rows_dropped=0)
    text = render_privacy_section(report)
    assert "exact copies of source rows | 0 (0.00%)" in text
    assert "image_too_close: 5" in text and "source's own nearest neighbour" in text
    assert not text.startswith("#")  # the card adds the heading

"""Reading real-shaped catalogues: every planted quirk is handled, counted, and never crashes the reader."""
import csv
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from generator.sources import SourceConfig, SourceError, load_source, row_identifiers
from generator.sources.values import _code, _number

import _gen_fixtures as fixtures  # test support, in tests/

FIXTURE = fixtures.DEFAULT_DIR


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURE / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def catalog():
    return load_source(FIXTURE)


def test_committed_fixture_is_what_the_builder_makes(tmp_path):
    fixtures.build_fixture(tmp_path / "fx")
    built = {p.relative_to(tmp_path / "fx"): p.read_bytes() for p in (tmp_path / "fx").rglob("*") if p.is_file()}
    committed = {p.relative_to(FIXTURE): p.read_bytes() for p in FIXTURE.rglob("*") if p.is_file()}
    assert built.keys() == committed.keys()
    assert [k for k in built if built[k] != committed[k]] == []
    assert sum(len(b) for b in committed.values()) < 3_000_000


def test_skips_exactly_the_planted_bad_rows(catalog, manifest):
    tables = manifest["tables"]
    expected = Counter()
    for table in ("catalog.csv", "catalog_extra.parquet"):
        expected.update(manifest["expected_skips"][table])
    report = catalog.report
    assert report.rows_read == tables["catalog.csv"]["rows"] + tables["catalog_extra.parquet"]["rows"]
    assert dict(report.skipped) == dict(expected)
    assert report.rows_kept == len(catalog.rows) == report.rows_read - sum(expected.values())
    # the report says where to look
    assert set(report.examples["image_truncated"]) <= {f"catalog.csv row {i}" for i in tables["catalog.csv"]["truncated"]}
    assert "read 340 rows" in report.summary() and "image_corrupt" in report.summary()


def test_repairs_are_counted_and_images_are_rgb(catalog, manifest):
    q = manifest["tables"]["catalog.csv"]
    fixed = catalog.report.repaired
    assert fixed["image_mode_RGBA_to_RGB"] == len(q["rgba"])
    assert fixed["image_mode_CMYK_to_RGB"] == len(q["cmyk"])
    assert fixed["image_mode_L_to_RGB"] == len(q["grey"])
    assert fixed["image_mode_P_to_RGB"] == len(q["palette"])
    assert fixed["price_missing_set_to_full_price"] == len(q["missing_sale_price"])
    assert fixed["non_english_category_kept"] >= len(q["foreign_category"])
    for row in catalog.rows:
        img = Image.open(io.BytesIO(row.image))
        assert img.format == "JPEG" and img.mode == "RGB"
        assert row.full_price > 0 and row.price > 0
    # RGBA cut-outs land on white, not black
    rgba_rows = {f"catalog.csv row {i}" for i in q["rgba"]}
    corners = [Image.open(io.BytesIO(r.image)).getpixel((0, 0)) for r in catalog.rows if r.origin in rgba_rows]
    assert len(corners) == len(q["rgba"]) and all(min(c) > 200 for c in corners)


def test_messy_values_are_kept_normalised(catalog, manifest):
    by_origin = {r.origin: r for r in catalog.rows}
    q = manifest["tables"]["catalog.csv"]
    assert all(by_origin[f"catalog.csv row {i}"].category3_code == "N.A." for i in q["category3_na"])
    foreign = [by_origin[f"catalog.csv row {i}"] for i in q["foreign_category"]]
    assert all(not (r.category2_code + r.category3_code).isascii() for r in foreign)
    assert any("é" in r.title or "–" in r.title for r in catalog.rows)
    # product codes are text whatever the table stored: int64 in the CSV, padded strings in the parquet
    assert all(r.product_code == r.product_code.strip() and not r.product_code.endswith(".0") for r in catalog.rows)
    extra = manifest["tables"]["catalog_extra.parquet"]
    padded = [by_origin.get(f"catalog_extra.parquet row {i}") for i in extra["padded_code_text"]]
    assert all(r is not None and r.product_code.isdigit() for r in padded)
    # URL -> sha1-named file and junk imageurl handling
    assert all(f"catalog.csv row {i}" in by_origin for i in q["sha1_named"])
    assert all(not r.imageurl or "://" in r.imageurl for r in catalog.rows)


def test_duplicate_codes_first_row_wins(catalog):
    codes = [r.product_code for r in catalog.rows if r.product_code]
    assert len(codes) == len(set(codes))
    dropped_dups = [r for r in catalog.dropped if r.origin in catalog.report.examples["duplicate_product_code"]]
    kept_codes = set(codes)
    assert dropped_dups and all(r.product_code in kept_codes for r in dropped_dups)


def test_identifiers_include_skipped_rows(catalog):
    ids = catalog.identifiers()
    zero_price = [r for r in catalog.dropped if r.full_price == 0]
    assert zero_price and all(r.product_code.lower() in ids for r in zero_price)
    row = catalog.rows[0]
    assert row.itemurl.lower() in ids and row.imageurl.lower() in ids
    asset = row.imageurl.rsplit("/", 1)[-1].lower()
    assert asset in ids  # the asset id alone identifies the row, under any domain


def test_recipe_layout_with_absolute_paths(manifest):
    cat = load_source(FIXTURE / "recipe" / "catalog.csv")
    q = manifest["tables"]["recipe/catalog.csv"]
    assert cat.report.rows_read == q["rows"]
    assert dict(cat.report.skipped) == manifest["expected_skips"]["recipe/catalog.csv"]
    kept = {r.origin for r in cat.rows}
    # /content/images/<code>.jpg from the notebook VM resolves to the local images folder by file name
    assert all(f"catalog.csv row {i}" in kept for i in q["absolute_path"])


def test_several_tables_as_one_and_explicit_images_dir(tmp_path):
    csv_only = load_source([FIXTURE / "catalog.csv"])
    both = load_source([FIXTURE / "catalog.csv", FIXTURE / "catalog_extra.parquet"])
    assert len(both.rows) > len(csv_only.rows)
    moved = tmp_path / "table.csv"
    moved.write_bytes((FIXTURE / "catalog.csv").read_bytes())
    # a table copied away from its images finds them through images_dir
    with pytest.raises(SourceError, match="no usable rows .* image_not_downloaded"):
        load_source(moved)
    found = load_source(moved, SourceConfig(images_dir=str(FIXTURE / "images")))
    assert len(found.rows) == len(csv_only.rows)


def test_saved_dataset_folder_and_splits(tmp_path):
    import datasets

    table = pq.read_table(FIXTURE / "catalog_extra.parquet")
    # datasets wants a missing image as null, not as a struct of nulls
    images = [x if x["bytes"] else None for x in table.column("image").to_pylist()]
    i = table.schema.get_field_index("image")
    table = table.set_column(i, "image", pa.array(images, type=table.schema.field("image").type))
    ds = datasets.Dataset(table).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "single"))
    direct = load_source(FIXTURE / "catalog_extra.parquet")
    saved = load_source(tmp_path / "single")
    assert [r.title for r in saved.rows] == [r.title for r in direct.rows]
    assert [r.image for r in saved.rows] == [r.image for r in direct.rows]

    dd = datasets.DatasetDict({"train": ds.select(range(30)), "test": ds.select(range(30, 40))})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert load_source(tmp_path / "dict").report.rows_read == 30
    assert load_source(tmp_path / "dict", SourceConfig(split="test")).report.rows_read == 10
    with pytest.raises(SourceError, match="no split 'validation'"):
        load_source(tmp_path / "dict", SourceConfig(split="validation"))


def test_large_images_are_capped(tmp_path):
    big = Image.new("RGB", (1200, 900), (240, 240, 240))
    (tmp_path / "images").mkdir()
    big.save(tmp_path / "images" / "big.png")
    _write_table(tmp_path / "t.csv", [{"title": "Wool Scarf", "category3_code": "SCARVES", "full_price": "450",
                                       "local_image_path": "images/big.png"}])
    cat = load_source(tmp_path / "t.csv", SourceConfig(max_side=256))
    assert max(Image.open(io.BytesIO(cat.rows[0].image)).size) == 256


@pytest.mark.parametrize("problem, match", [
    ("missing", "no such file or folder"),
    ("no_title", "missing column 'title'"),
    ("no_image_column", "no image column"),
    ("empty_folder", "no \\*.csv or \\*.parquet"),
    ("all_bad", "no usable rows"),
    ("bad_parquet", "not a readable parquet file"),
    ("hub_offline", "could not load the dataset"),
])
def test_unreadable_sources_fail_with_one_line(tmp_path, problem, match, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if problem == "missing":
        target = tmp_path / "nope.csv"
    elif problem == "no_title":
        target = _write_table(tmp_path / "t.csv", [{"name": "x", "category3_code": "A", "full_price": "1", "imageurl": ""}])
    elif problem == "no_image_column":
        target = _write_table(tmp_path / "t.csv", [{"title": "x", "category3_code": "A", "full_price": "1"}])
    elif problem == "empty_folder":
        target = tmp_path
    elif problem == "all_bad":
        target = _write_table(tmp_path / "t.csv", [{"title": "x", "category3_code": "A", "full_price": "0", "imageurl": "null"}])
    elif problem == "bad_parquet":
        target = tmp_path / "t.parquet"
        target.write_bytes(b"PAR1 not really")
    else:
        target = "nobody-here/no-such-catalogue"
    with pytest.raises(SourceError, match=match) as err:
        load_source(target)
    assert "\n" not in str(err.value)


def test_cell_parsers():
    assert _number("$1,290.00") == 1290.0
    assert _number("") is None and _number("nan") is None and _number(float("inf")) is None
    assert _number(890) == 890.0
    assert _code(80712345.0) == "80712345" and _code(" 80712345.0 ") == "80712345"
    assert _code("AB-1290") == "AB-1290" and _code(None) == "" and _code("None") == ""
    ids = row_identifiers("80712345", "https://us.shop.test/scarf-p80712345", "null")
    assert {"80712345", "https://us.shop.test/scarf-p80712345"} <= ids and "null" not in ids


def _write_table(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_parquet_with_path_images_and_int_codes(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGBA", (50, 60), (200, 10, 10, 0)).save(tmp_path / "images" / "a.png")
    Image.new("I;16", (40, 40), 3000).save(tmp_path / "images" / "b.png")
    table = pa.table({"title": ["Check Scarf", "Wool Beanie"], "category3_code": ["SCARVES", None],
                      "full_price": [450.0, 390.0], "product_code": pa.array([80000001, 80000002], pa.int64()),
                      "image": [{"bytes": None, "path": "images/a.png"}, {"bytes": None, "path": "b.png"}]})
    pq.write_table(table, tmp_path / "t.parquet")
    cat = load_source(tmp_path / "t.parquet")
    assert [r.product_code for r in cat.rows] == ["80000001", "80000002"]
    assert cat.rows[1].category3_code == "N.A." and cat.report.repaired["category3_missing_set_na"] == 1
    assert cat.report.repaired["image_mode_I;16_to_RGB"] == 1

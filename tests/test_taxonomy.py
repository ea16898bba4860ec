"""Taxonomy files: the built-ins load and are realistic; every kind of mistake is one clear line."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from generator import render
from generator.catalog import category_weights
from generator.taxonomy import BUILTIN_DIR, TaxonomyError, builtin_names, load, resolve

BURBERRY = BUILTIN_DIR / "burberry_us.toml"


def test_builtins_are_listed_and_load_with_renderer_names():
    assert {"burberry_us", "valmora_it"} <= set(builtin_names())
    for name in builtin_names():
        tax = load(name)
        for c2 in tax.category2:
            for c3 in c2.category3:
                assert {i.silhouette for i in c3.items} <= set(render.SILHOUETTES)
                assert {m.texture for m, _ in c3.materials} <= set(render.TEXTURES)
                assert {p.render for p, _ in c3.patterns} <= set(render.PATTERNS)


def test_burberry_has_the_real_table_category_structure():
    tax = load("burberry_us")
    assert [c.code for c in tax.category1] == ["WOMAN", "MAN", "KIDS"]
    codes2 = {c.code for c in tax.category2}
    assert {"OUTERWEAR", "BAGS", "SCARVES", "SHOES", "KNITWEAR", "SHIRTS", "T-SHIRTS & POLOS", "DRESSES",
            "SKIRTS", "TROUSERS & SHORTS", "ACCESSORIES"} <= codes2
    codes3 = set(tax.category3_codes())
    assert {"TRENCH COATS", "QUILTED JACKETS", "SHOULDER", "TOTES", "CROSSBODY", "WALLETS & CARD CASES",
            "SNEAKERS", "BOOTS", "N.A."} <= codes3
    assert (tax.brand.currency_code, tax.brand.country_code) == ("USD", "USA")
    # KIDS are cheaper: the multiplier is what makes a kid's trench coat cost less than an adult's.
    kids = next(c for c in tax.category1 if c.code == "KIDS")
    assert kids.price_multiplier < 1


def test_category_weights_are_a_distribution_over_sold_branches():
    for name in builtin_names():
        tax = load(name)
        weights = category_weights(tax)
        assert math.isclose(sum(weights.values()), 1.0)
        assert all(w > 0 for w in weights.values())
        # restrictions hold: nothing is sold to a category1 the taxonomy excludes
        for c2 in tax.category2:
            for c3 in c2.category3:
                for c1 in tax.category1:
                    sold = c1.code in c2.weights and c1.code in c3.category1
                    assert ((c1.code, c2.code, c3.code) in weights) == sold


def test_second_brand_is_pure_data():
    tax = load("valmora_it")
    assert tax.brand.currency_code == "EUR" and tax.brand.eur_per_unit == 1.0
    assert [c.code for c in tax.category1] == ["WOMAN", "MAN"]
    assert tax.category2[0].category3[0].titles[0][0].startswith("{item}")


def test_load_by_path_equals_load_by_name(tmp_path):
    copy = tmp_path / "mine.toml"
    copy.write_bytes(BURBERRY.read_bytes())
    by_path, by_name = load(copy), load("burberry_us")
    assert by_path.sha256 == by_name.sha256
    assert by_path.category2 == by_name.category2


def _mutate(tmp_path: Path, old: str, new: str) -> Path:
    text = BURBERRY.read_text()
    assert old in text, old
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return path


# (what is replaced, by what, a fragment the message must contain: the key that is wrong)
BROKEN = [
    ('name = "burberry_us"', 'name = "burberry_us', "not valid TOML"),
    ('currency_code = "USD"\n', "", "brand.currency_code: missing"),
    ("eur_per_unit = 0.9174", "eur_per_unit = -1", "brand.eur_per_unit"),
    ('item_url = "https://us.burberry.example.com/{slug}-p{product_code}"',
     'item_url = "https://us.burberry.com/{slug}"', "brand.item_url"),
    ('item_url = "https://us.burberry.example.com/{slug}-p{product_code}"',
     'item_url = "https://shop.example.com/{sku}"', "brand.item_url: bad placeholder"),
    ('dates = ["2023-11-20", "2023-11-27"]', 'dates = ["2023-11-27", "2023-11-20"]', "brand.dates"),
    ("points = [\n    90, 110,", "points = [\n    110, 90,", "prices.points"),
    ("discount_rate = 0.06", "discount_rate = 1.5", "prices.discount_rate"),
    ('templates = ["{colour} {pattern} {material} {item}"]', 'templates = ["{colour} {item}"]', "titles.templates"),
    ('templates = ["{colour} {pattern} {material} {item}"]', 'templates = ["{colour} {pattern} {material} {item} {size}"]',
     "unknown fields"),
    ("KIDS = { weight = 18, price_multiplier = 0.36 }", "KIDS = { weight = 0, price_multiplier = 0.36 }",
     "category1.KIDS.weight"),
    ('Honey = "#b7803e"', 'Honey = "honey"', "colours.Honey"),
    ('Suede = { texture = "suede", price_multiplier = 1.2 }', 'Suede = { texture = "velvet", price_multiplier = 1.2 }',
     "materials.Suede.texture: unknown texture 'velvet'"),
    ('Stripe = { render = "stripe", price_multiplier = 1.0 }', 'Stripe = { render = "zigzag" }', "patterns.Stripe.render"),
    ('silhouette = "trench_coat"', 'silhouette = "cape"', 'category2.OUTERWEAR.category3."TRENCH COATS".silhouette'),
    ('materials = { "Cotton Gabardine" = 6, Wool = 1 }', 'materials = { "Cotton Gabardin" = 6, Wool = 1 }',
     'category3."TRENCH COATS".materials."Cotton Gabardin": unknown material'),
    ('colours = ["Honey", "Archive Beige", "Black", "Sand", "Navy", "Dark Birch Brown"]', 'colours = ["Mauve"]',
     "unknown colour 'Mauve'"),
    ("weights = { WOMAN = 15, MAN = 17, KIDS = 18 }", "weights = { WOMAN = 15, MAN = 17, TEENS = 18 }",
     "category2.OUTERWEAR.weights.TEENS: unknown category1"),
    ("price_median = 2490", "price_median = 0", 'category3."TRENCH COATS".price_median'),
    ("price_sigma = 0.22\n", "price_sigma = 0.22\nprice_mean = 3\n", "price_mean: unknown key"),
    ('name = "burberry_us"', 'name = "burberry_us"\nbrands = 1', "brands: unknown top-level key"),
    ('items = ["Trench Coat", "Heritage Trench Coat", "Long Trench Coat"]', "items = []", "items"),
]


@pytest.mark.parametrize("old,new,fragment", BROKEN, ids=[b[2][:40] for b in BROKEN])
def test_invalid_file_gives_one_line_naming_file_key_and_fix(tmp_path, old, new, fragment):
    path = _mutate(tmp_path, old, new)
    with pytest.raises(TaxonomyError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert fragment in message
    assert "; " in message  # ... and what to do about it


def test_unknown_name_and_missing_path_list_the_builtins(tmp_path):
    for ref in ("nope", str(tmp_path / "missing.toml")):
        with pytest.raises(TaxonomyError) as info:
            resolve(ref)
        assert "burberry_us" in str(info.value) and "\n" not in str(info.value)

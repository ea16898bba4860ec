"""Build ``samples/source_catalog/``: a small, made-up catalogue in the real DBQ shape, with every quirk.

It stands in for a user's real catalogue in tests, examples and benchmarks of ``gen-samples --source``.
Everything in it is invented: the brand ("Ashbury"), the products, the prices, the identifiers (on the
reserved ``.test`` domain) and the images (drawn here with PIL). The identifiers play the part of real
ones: an augmented dataset must never contain any of them.

Planted on purpose, a few rows each, and listed in ``manifest.json`` so tests can check the reader's
counts against what was planted: category3 "N.A.", junk 4-character ``imageurl`` values, ``product_code``
as int64 in the CSV and as text in the parquet table, non-English category labels, unicode titles,
images in RGBA / palette / CMYK / greyscale modes, truncated and corrupt image files, missing images,
duplicated product codes (within and across tables), prices of 0 or missing, and three rows of fake PII
(a name, an email on example.org, a 555-01xx phone number) for the privacy detector to find.

Layout::

    catalog.csv            300 rows, product_code int; images found from imageurl in images/
    catalog_extra.parquet   40 rows, product_code text; images inline as {"bytes", "path"}
    images/                 the "downloaded" files, named by the URL's last segment or sha1(url)[:16]
    recipe/catalog.csv      the public recipe's layout: a local_image_path column ...
    recipe/images/          ... pointing here (some paths absolute, from the machine that made them)
    manifest.json           what was planted where
    README.md               this, for people

Test support, not product code: it lives beside the tests (``tests/``), and the benchmarks import it
from here too. Rebuild with ``python tests/_gen_fixtures.py [OUT_DIR]``; same code, same bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops, ImageDraw, ImageFilter

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "samples" / "source_catalog"
BRAND = "ASHBURY"
ITEM_DOMAIN = "https://us.ashbury.test"
IMAGE_DOMAIN = "https://assets.ashbury.test/is/image/Ashburyltd"
DATE = "2023-11-17"
EUR_PER_USD = 0.9153

# US-style price points: full prices in the public tables sit on a short list like this.
PRICE_POINTS = (290, 350, 390, 450, 490, 550, 590, 650, 690, 750, 790, 890, 950, 990, 1090, 1190, 1290,
                1390, 1450, 1590, 1690, 1890, 1990, 2190, 2290, 2490, 2690, 2890, 3290, 3590, 3890)

COLOURS = {
    "Archive Beige": (200, 174, 136), "Black": (28, 28, 30), "Navy": (32, 42, 78), "Camel": (186, 142, 90),
    "Honey": (196, 140, 52), "Dark Birch Brown": (92, 66, 48), "Ivory": (236, 228, 210),
    "Bright Red": (176, 32, 38), "Olive": (104, 108, 60), "Sky Blue": (140, 178, 214),
}
PATTERNS = ("", "", "", "Check", "Vintage Check", "Monogram", "Stripe")


@dataclass(frozen=True)
class Category:
    category2: str
    category3: str
    shape: str
    items: tuple[str, ...]
    materials: tuple[str, ...]
    modifiers: tuple[str, ...]
    price_range: tuple[int, int]


CATEGORIES = (
    Category("OUTERWEAR", "TRENCH COATS", "coat", ("Trench Coat",), ("Cotton Gabardine", "Wool", "Cotton"),
             ("Long", "Short", "Belted", "Double-breasted", "Heritage"), (1890, 3290)),
    Category("OUTERWEAR", "QUILTED JACKETS", "jacket", ("Quilted Jacket", "Puffer Jacket", "Gilet"),
             ("Nylon", "Recycled Nylon", "Cotton"), ("Hooded", "Lightweight", "Cropped", "Diamond"), (890, 1890)),
    Category("OUTERWEAR", "CAR COATS", "coat", ("Car Coat", "Pea Coat"), ("Wool", "Cashmere", "Wool Cashmere"),
             ("Tailored", "Relaxed", "Classic"), (1990, 3890)),
    Category("BAGS", "SHOULDER BAGS", "bag", ("Shoulder Bag", "Knight Bag", "Lola Bag"),
             ("Leather", "Grainy Leather", "Suede"), ("Small", "Medium", "Mini", "Quilted"), (1450, 3290)),
    Category("BAGS", "TOTE BAGS", "tote", ("Tote", "Tote Bag"), ("Canvas", "Leather", "Coated Canvas"),
             ("Large", "Medium", "Small", "Freya"), (990, 2490)),
    Category("BAGS", "CROSSBODY BAGS", "bag", ("Crossbody Bag", "Pouch", "Messenger Bag"), ("Leather", "Nylon"),
             ("Mini", "Slim", "Zip"), (690, 1690)),
    Category("SCARVES", "CASHMERE SCARVES", "scarf", ("Scarf",), ("Cashmere", "Wool Cashmere"),
             ("Classic", "Reversible", "Fringed", "Oversized"), (450, 890)),
    Category("SCARVES", "SILK SCARVES", "scarf", ("Silk Scarf", "Square Scarf", "Skinny Scarf"),
             ("Silk", "Silk Twill"), ("Printed", "Montage", "Archive"), (350, 690)),
    Category("SHOES", "SNEAKERS", "shoe", ("Sneakers", "Low-top Sneakers", "High-top Sneakers"),
             ("Leather", "Suede", "Mesh"), ("Classic", "Chunky", "Arthur"), (490, 990)),
    Category("SHOES", "BOOTS", "boot", ("Boots", "Chelsea Boots", "Ankle Boots"), ("Leather", "Suede"),
             ("Chunky", "Heeled", "Lace-up"), (990, 1890)),
    Category("KNITWEAR", "SWEATERS", "sweater", ("Sweater", "Cardigan", "Crew-neck Sweater"),
             ("Wool", "Cashmere", "Cotton Blend", "Merino Wool"), ("Cable Knit", "Oversized", "Slim Fit"), (690, 1590)),
    Category("SHIRTS", "SHIRTS", "shirt", ("Shirt", "Oxford Shirt", "Polo Shirt", "T-shirt"),
             ("Cotton", "Stretch Cotton", "Cotton Poplin", "Linen"), ("Slim Fit", "Oversized", "Classic Fit"), (390, 890)),
    Category("ACCESSORIES", "WALLETS", "wallet", ("Wallet", "Card Case", "Bifold Wallet", "Zip Wallet"),
             ("Leather", "Grainy Leather", "Canvas"), ("Slim", "Continental", "Compact"), (390, 890)),
    Category("ACCESSORIES", "BELTS", "belt", ("Belt", "Reversible Belt"), ("Leather", "Canvas and Leather"),
             ("Slim", "Wide"), (450, 690)),
    # Real tables file some products under category3 "N.A.": kept as a category of its own.
    Category("ACCESSORIES", "N.A.", "cap", ("Baseball Cap", "Bucket Hat", "Beanie"), ("Cotton", "Wool", "Nylon"),
             ("Logo", "Classic", "Reversible"), (390, 690)),
)
CATEGORY1 = (("WOMAN", 0.5), ("MAN", 0.35), ("KIDS", 0.15))
KIDS_PRICE_FACTOR = 0.45

# Labels as the brand's other country sites print them (the China table's, a French site's).
FOREIGN_LABELS = (("配饰", "围巾"), ("ACCESSOIRES", "ÉCHARPES"), ("包款", "斜背包"), ("MAROQUINERIE", "PORTEFEUILLES"))
UNICODE_TITLES = ("Bouclé Wool Car Coat", "Check Cashmere Scarf – Archive Beige", "Crème Leather Card Case",
                  "Café Silk Twill Square Scarf", "Monogram Jacquard Scarf · Édition", "Naïve Print Cotton T-shirt",
                  "Señorita Leather Belt", "Check Wool Sweater ™")
JUNK_IMAGEURLS = ("None", "null", "#N/A", "nan ")
# Planted fake PII, documented in the README: a Faker-style name, an example.org email and a 555-01xx number.
PLANTED_PII = ("Cashmere Scarf – Gift for Jennifer Miller", "Leather Wallet – contact jane.doe@example.org",
               "Check Silk Scarf – call +1 (555) 014-2298")


@dataclass(frozen=True)
class FixtureConfig:
    rows: int = 300
    extra_rows: int = 40
    recipe_rows: int = 40
    seed: int = 20231117


def build_fixture(out_dir: str | Path = DEFAULT_DIR, config: FixtureConfig = FixtureConfig()) -> dict:
    """Write the fixture to ``out_dir`` (replacing it whole) and return its manifest."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then swap: a crash never leaves half a fixture behind.
    tmp = Path(tempfile.mkdtemp(prefix=".source_catalog-", dir=out_dir.parent))
    try:
        manifest = _Builder(config).write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


class _Builder:
    def __init__(self, config: FixtureConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.used_codes: set[int] = set()

    # -- metadata -----------------------------------------------------------------------------------
    def code(self) -> int:
        while True:
            code = int(self.rng.choice([80, 40], p=[0.85, 0.15]) * 1_000_000 + self.rng.integers(0, 1_000_000))
            if code not in self.used_codes:
                self.used_codes.add(code)
                return code

    def asset_id(self) -> str:
        return str(uuid.UUID(bytes=self.rng.bytes(16), version=4)).upper()

    def product(self) -> dict:
        """A product (title, category, price) that may be listed in several colours."""
        rng = self.rng
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        category1 = str(rng.choice([c for c, _ in CATEGORY1], p=[w for _, w in CATEGORY1]))
        pattern = str(rng.choice(PATTERNS))
        material = str(rng.choice(cat.materials))
        item = str(rng.choice(cat.items))
        words = [pattern, material, item]
        if rng.random() < 0.4:
            words.insert(0, str(rng.choice(cat.modifiers)))
        lo, hi = cat.price_range
        raw = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        if category1 == "KIDS":
            raw *= KIDS_PRICE_FACTOR
        full_price = float(min(PRICE_POINTS, key=lambda p: abs(p - raw)))
        return {"cat": cat, "category1": category1, "pattern": pattern,
                "title": " ".join(w for w in words if w), "full_price": full_price}

    def row(self, product: dict, colour: str, named_colour: bool) -> dict:
        cat, code = product["cat"], self.code()
        title = f"{colour} {product['title']}" if named_colour else product["title"]
        full = product["full_price"]
        discounted = self.rng.random() < 0.06
        price = float(round(full * 0.7 / 10) * 10) if discounted else full
        return {
            "website_name": "Ashbury", "competence_date": DATE, "country_code": "USA", "currency_code": "USD",
            "brand": BRAND, "category1_code": product["category1"], "category2_code": cat.category2,
            "category3_code": cat.category3, "product_code": code, "title": title,
            "itemurl": f"{ITEM_DOMAIN}/{_slug(title)}-p{code}", "imageurl": f"{IMAGE_DOMAIN}/{self.asset_id()}",
            "full_price": full, "price": price, "full_price_eur": round(full * EUR_PER_USD, 2),
            "price_eur": round(price * EUR_PER_USD, 2), "flg_discount": int(discounted),
            # not columns: what the image shows
            "_shape": cat.shape, "_colour": colour, "_pattern": product["pattern"],
        }

    def rows(self, n: int) -> list[dict]:
        out: list[dict] = []
        while len(out) < n:
            product = self.product()
            # Real listings repeat a product in two or three colours: same title, same price, new code.
            for _ in range(int(self.rng.choice([1, 1, 2, 3]))):
                colour = str(self.rng.choice(list(COLOURS)))
                out.append(self.row(product, colour, named_colour=self.rng.random() < 0.25))
        return out[:n]

    # -- the whole fixture ----------------------------------------------------------------------------
    def write(self, out: Path) -> dict:
        cfg, rng = self.config, self.rng
        (out / "images").mkdir(parents=True)
        main = self.rows(cfg.rows)
        plan = _Plan(rng, len(main))
        manifest: dict = {"seed": cfg.seed, "tables": {}}

        # Quirks of the main table; each list holds the row numbers (1-based, as the reader reports them).
        q = {name: plan.take(k) for name, k in (
            ("category3_na", 6), ("junk_imageurl", 4), ("foreign_category", 2), ("unicode_title", 8),
            ("rgba", 5), ("palette", 5), ("cmyk", 4), ("grey", 4), ("truncated", 3), ("corrupt", 2),
            ("missing_file", 3), ("sha1_named", 3), ("duplicate_code", 4), ("zero_price", 2),
            ("missing_price", 2), ("missing_sale_price", 2), ("pii", 3))}
        clean = [i for i in range(len(main)) if not any(i in v for v in q.values())]
        for i in q["category3_na"]:
            main[i]["category2_code"], main[i]["category3_code"] = "SCARVES", "N.A."
            main[i]["_shape"] = "scarf"
            main[i]["title"] = "Check Cashmere Scarf"
        for i in q["junk_imageurl"]:
            main[i]["imageurl"] = JUNK_IMAGEURLS[q["junk_imageurl"].index(i) % len(JUNK_IMAGEURLS)]
        for j, i in enumerate(q["foreign_category"]):
            main[i]["category2_code"], main[i]["category3_code"] = FOREIGN_LABELS[j]
        for j, i in enumerate(q["unicode_title"]):
            main[i]["title"] = UNICODE_TITLES[j % len(UNICODE_TITLES)]
        for j, i in enumerate(q["duplicate_code"]):
            # The same product listed again under another category: same code, same title.
            src = main[clean[(j * 37) % len(clean)]]
            for key in ("product_code", "title", "itemurl", "full_price", "price", "full_price_eur", "price_eur"):
                main[i][key] = src[key]
        for i in q["zero_price"]:
            main[i]["full_price"] = main[i]["price"] = 0.0
        for i in q["missing_price"]:
            main[i]["full_price"] = main[i]["full_price_eur"] = None
        for i in q["missing_sale_price"]:
            main[i]["price"] = main[i]["price_eur"] = None
        for j, i in enumerate(q["pii"]):
            main[i]["title"] = PLANTED_PII[j]

        encodings = {i: kind for kind in ("rgba", "palette", "cmyk", "grey", "truncated", "corrupt") for i in q[kind]}
        for i, row in enumerate(main):
            if i in q["missing_file"] or i in q["junk_imageurl"]:
                continue
            data, suffix = self.encode(self.draw(row), encodings.get(i, "rgb"))
            url = row["imageurl"]
            name = hashlib.sha1(url.encode()).hexdigest()[:16] if i in q["sha1_named"] else url.rsplit("/", 1)[-1]
            (out / "images" / f"{name}{suffix}").write_bytes(data)
        _write_csv(out / "catalog.csv", main)
        manifest["tables"]["catalog.csv"] = {k: [i + 1 for i in v] for k, v in q.items()} | {"rows": len(main)}

        extra, extra_quirks = self.extra_table(main, q)
        pq.write_table(extra, out / "catalog_extra.parquet", compression="zstd")
        manifest["tables"]["catalog_extra.parquet"] = extra_quirks | {"rows": extra.num_rows}

        recipe_quirks = self.recipe(out / "recipe", main, q)
        manifest["tables"]["recipe/catalog.csv"] = recipe_quirks | {"rows": self.config.recipe_rows}
        manifest["expected_skips"] = {
            "catalog.csv": {"image_corrupt": 2, "image_truncated": 3, "image_not_downloaded": 3,
                            "junk_imageurl_no_image": 4, "duplicate_product_code": 4, "zero_price": 2,
                            "missing_price": 2},
            "catalog_extra.parquet": {"duplicate_product_code": len(extra_quirks["duplicate_code_of_csv"]),
                                      "image_not_downloaded": len(extra_quirks["no_image"])},
            "recipe/catalog.csv": {"image_file_missing": len(recipe_quirks["missing_file"])},
        }
        manifest["planted_pii_titles"] = list(PLANTED_PII)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "README.md").write_text(_readme(manifest), encoding="utf-8")
        return manifest

    def extra_table(self, main: list[dict], q: dict) -> tuple[pa.Table, dict]:
        """A second table from another export: product_code as text, images inline, some codes repeated."""
        rows = self.rows(self.config.extra_rows)
        plan = _Plan(self.rng, len(rows))
        dup, foreign, no_image, padded = plan.take(6), plan.take(2), plan.take(2), plan.take(3)
        clean = [i for i in range(len(main)) if not any(i in v for v in q.values())]
        codes: list[str] = []
        images: list[dict] = []
        for i, row in enumerate(rows):
            code = str(row["product_code"])
            if i in dup:  # an int64 code of the CSV, written as text here
                src = main[clean[(i * 13) % len(clean)]]
                code = str(src["product_code"])
                for key in ("title", "itemurl", "imageurl", "full_price", "price"):
                    row[key] = src[key]
            if i in padded:
                code = f" {code}.0" if i == padded[0] else f"{code} "
            if i in foreign:
                row["category2_code"], row["category3_code"] = FOREIGN_LABELS[2 + foreign.index(i)]
            codes.append(code)
            if i in no_image:
                images.append({"bytes": None, "path": None})
            else:
                images.append({"bytes": self.encode(self.draw(row), "rgb")[0], "path": None})
        columns = {k: [r[k] for r in rows] for k in _COLUMNS}
        columns["product_code"] = codes
        table = pa.table(columns | {"image": images})
        quirks = {"duplicate_code_of_csv": [i + 1 for i in dup], "foreign_category": [i + 1 for i in foreign],
                  "no_image": [i + 1 for i in no_image], "padded_code_text": [i + 1 for i in padded]}
        return table, quirks

    def recipe(self, out: Path, main: list[dict], q: dict) -> dict:
        """The recipe's layout: the CSV it saves after downloading images, beside that images folder."""
        (out / "images").mkdir(parents=True)
        clean = [i for i in range(len(main)) if not any(i in v for v in q.values())]
        picked = sorted(self.rng.choice(clean, size=self.config.recipe_rows, replace=False).tolist())
        rows = [dict(main[i]) for i in picked]
        absolute, missing = set(range(3)), {5, 9}
        for j, row in enumerate(rows):
            name = f"{row['product_code']}.jpg"
            # A CSV made on a notebook VM keeps that machine's absolute paths.
            row["local_image_path"] = f"/content/images/{name}" if j in absolute else f"images/{name}"
            if j not in missing:
                (out / "images" / name).write_bytes(self.encode(self.draw(row), "rgb")[0])
        _write_csv(out / "catalog.csv", rows, extra=("local_image_path",))
        return {"absolute_path": sorted(j + 1 for j in absolute), "missing_file": sorted(j + 1 for j in missing)}

    # -- images -------------------------------------------------------------------------------------
    def draw(self, row: dict) -> Image.Image:
        """A plausible product shot: the item's silhouette in its colour and pattern, lit, on a light backdrop."""
        rng = self.rng
        w = int(rng.choice([96, 112, 128, 144, 160]))
        h = w if rng.random() < 0.5 else min(160, int(w * 4 / 3))
        tone = int(rng.integers(232, 251))
        yy = np.linspace(0, 1, h)[:, None, None]
        backdrop = tone - 14 * yy + rng.normal(0, 1.6, (h, w, 3))
        img = Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8), "RGB")
        mask = Image.new("L", (w, h), 0)
        _shape(ImageDraw.Draw(mask), row["_shape"], w, h, rng)
        colour = np.array(COLOURS[row["_colour"]], dtype=np.float64)
        fill = np.ones((h, w, 3)) * colour
        fill = _pattern(fill, row["_pattern"], colour, rng)
        light = np.linspace(1.08, 0.82, w)[None, :, None] * np.linspace(1.05, 0.9, h)[:, None, None]
        product = Image.fromarray(np.clip(fill * light + rng.normal(0, 2.5, fill.shape), 0, 255).astype(np.uint8))
        shadow = ImageChops.offset(mask, 2, 3).filter(ImageFilter.GaussianBlur(3)).point(lambda v: v * 0.35)
        img.paste((90, 90, 90), None, shadow)
        img.paste(product, (0, 0), mask.filter(ImageFilter.GaussianBlur(0.6)))
        return img

    def encode(self, img: Image.Image, kind: str) -> tuple[bytes, str]:
        out = io.BytesIO()
        if kind == "rgba":  # a cut-out: product on a transparent background
            arr = np.asarray(img).astype(np.int16)
            alpha = np.where(np.abs(arr - arr[0:1, 0:1]).sum(2) > 40, 255, 0).astype(np.uint8)
            Image.fromarray(np.dstack([arr.astype(np.uint8), alpha]), "RGBA").save(out, "PNG")
            return out.getvalue(), ".png"
        if kind == "palette":
            img.quantize(64).save(out, "GIF" if self.rng.random() < 0.5 else "PNG")
            return out.getvalue(), ".gif" if out.getvalue()[:3] == b"GIF" else ".png"
        if kind == "cmyk":
            img.convert("CMYK").save(out, "JPEG", quality=88)
        elif kind == "grey":
            img.convert("L").save(out, "JPEG", quality=88)
        else:
            img.save(out, "JPEG", quality=85)
        data = out.getvalue()
        if kind == "truncated":  # a download cut short
            data = data[: len(data) * 3 // 5]
        if kind == "corrupt":  # an error page saved under the image's name
            data = b"<html><body>503 Service Unavailable</body></html>" + self.rng.bytes(64)
        return data, ".jpg"


class _Plan:
    """Hands out distinct row indices, so each quirk lands on rows of its own."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.order = rng.permutation(n).tolist()

    def take(self, k: int) -> list[int]:
        picked, self.order = self.order[:k], self.order[k:]
        return sorted(picked)


_COLUMNS = ("website_name", "competence_date", "country_code", "currency_code", "brand", "category1_code",
            "category2_code", "category3_code", "product_code", "title", "itemurl", "imageurl", "full_price",
            "price", "full_price_eur", "price_eur", "flg_discount")


def _write_csv(path: Path, rows: list[dict], extra: tuple[str, ...] = ()) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_COLUMNS, *extra])
        for row in rows:
            writer.writerow(["" if row[c] is None else _cell(row[c]) for c in (*_COLUMNS, *extra)])


def _cell(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


def _slug(title: str) -> str:
    import unicodedata

    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return "-".join("".join(c if c.isalnum() else " " for c in ascii_title.lower()).split())


def _shape(d: ImageDraw.ImageDraw, shape: str, w: int, h: int, rng: np.random.Generator) -> None:
    """Draw the item's silhouette (white on black) into a mask, a little off-centre and scaled per row."""
    s = rng.uniform(0.8, 0.95)
    cx, cy = w * rng.uniform(0.46, 0.54), h * rng.uniform(0.47, 0.53)

    def P(points):
        return [(cx + (x - 0.5) * w * s, cy + (y - 0.5) * h * s) for x, y in points]

    if shape in ("coat", "jacket"):
        bottom = 0.95 if shape == "coat" else 0.72
        d.polygon(P([(0.38, 0.08), (0.62, 0.08), (0.78, 0.16), (0.92, 0.62), (0.82, 0.65), (0.74, 0.35),
                     (0.76, bottom), (0.24, bottom), (0.26, 0.35), (0.18, 0.65), (0.08, 0.62), (0.22, 0.16)]), fill=255)
    elif shape in ("sweater", "shirt"):
        d.polygon(P([(0.36, 0.14), (0.64, 0.14), (0.9, 0.3), (0.82, 0.46), (0.72, 0.4), (0.72, 0.86),
                     (0.28, 0.86), (0.28, 0.4), (0.18, 0.46), (0.1, 0.3)]), fill=255)
        if shape == "shirt":
            d.polygon(P([(0.42, 0.14), (0.5, 0.26), (0.58, 0.14)]), fill=0)
    elif shape == "bag":
        d.rounded_rectangle(P([(0.18, 0.38), (0.82, 0.85)]), radius=int(w * 0.06), fill=255)
        d.arc(P([(0.3, 0.14), (0.7, 0.62)]), 180, 360, fill=255, width=max(2, w // 24))
    elif shape == "tote":
        d.polygon(P([(0.14, 0.34), (0.86, 0.34), (0.78, 0.88), (0.22, 0.88)]), fill=255)
        for x0 in (0.22, 0.52):
            d.arc(P([(x0, 0.14), (x0 + 0.26, 0.52)]), 180, 360, fill=255, width=max(2, w // 28))
    elif shape == "scarf":
        d.rectangle(P([(0.36, 0.06), (0.64, 0.84)]), fill=255)
        for k in range(7):
            x = 0.37 + k * 0.043
            d.line(P([(x, 0.84), (x, 0.94)]), fill=255, width=1)
    elif shape == "shoe":
        d.polygon(P([(0.08, 0.62), (0.4, 0.5), (0.56, 0.36), (0.72, 0.38), (0.92, 0.56), (0.94, 0.7),
                     (0.08, 0.7)]), fill=255)
    elif shape == "boot":
        d.polygon(P([(0.34, 0.1), (0.6, 0.1), (0.62, 0.56), (0.88, 0.66), (0.9, 0.82), (0.3, 0.82)]), fill=255)
    elif shape == "wallet":
        d.rounded_rectangle(P([(0.16, 0.32), (0.84, 0.7)]), radius=int(w * 0.04), fill=255)
    elif shape == "belt":
        d.rectangle(P([(0.04, 0.44), (0.96, 0.56)]), fill=255)
        d.rectangle(P([(0.16, 0.4), (0.28, 0.6)]), outline=255, width=max(1, w // 48))
    else:  # cap
        d.chord(P([(0.2, 0.2), (0.8, 0.8)]), 180, 360, fill=255)
        d.polygon(P([(0.5, 0.5), (0.92, 0.5), (0.92, 0.58), (0.5, 0.56)]), fill=255)


def _pattern(fill: np.ndarray, pattern: str, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = fill.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dark = colour * 0.35
    if pattern in ("Check", "Vintage Check"):
        step = max(6, w // int(rng.integers(6, 10)))
        lines = ((xx % step) < 2) | ((yy % step) < 2)
        fill[lines] = dark
        if pattern == "Vintage Check":
            fill[((xx + step // 2) % (step * 2) == 0) | ((yy + step // 2) % (step * 2) == 0)] = (176, 32, 38)
    elif pattern == "Stripe":
        fill[(yy // max(3, h // 24)) % 2 == 0] = dark + 60
    elif pattern == "Monogram":
        step = max(8, w // 8)
        fill[((xx % step - step / 2) ** 2 + (yy % step - step / 2) ** 2) < (step / 5) ** 2] = dark
    return fill


def _readme(manifest: dict) -> str:
    lines = [
        "# source_catalog: a made-up catalogue in the real DBQ shape, with every quirk",
        "",
        "Built by `python tests/_gen_fixtures.py` (deterministic). Everything here is invented: the brand "
        "(Ashbury), products, prices, images (drawn with PIL) and identifiers (on the reserved `.test` domain). "
        "The identifiers play the part of real ones: an augmented dataset must never contain any of them.",
        "",
        "The three titles below carry **planted fake PII** (a made-up name, an `example.org` email and a "
        "fictional 555-01xx phone number) so the privacy detector has something to find:",
        "",
        *[f"- `{t}`" for t in manifest["planted_pii_titles"]],
        "",
        "Quirks planted per table (1-based row numbers, as the reader reports them):",
        "",
    ]
    for table, quirks in manifest["tables"].items():
        lines.append(f"- `{table}` ({quirks['rows']} rows): " + ", ".join(
            f"{k} {v}" for k, v in quirks.items() if k != "rows"))
    lines += ["", "Rows the reader must skip, by reason:", ""]
    for table, skips in manifest["expected_skips"].items():
        lines.append(f"- `{table}`: " + ", ".join(f"{k} {v}" for k, v in skips.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_DIR
    manifest = build_fixture(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({sum(t['rows'] for t in manifest['tables'].values())} rows, {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

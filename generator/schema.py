"""The table's columns and types: the one contract between the generator, the fine-tuner and the Hub.

Column names and types follow the public "Burberry product prices, United States" table, plus an
``image`` column stored as the ``datasets`` ``Image`` feature (JPEG bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# (name, arrow type) in the public table's order.
METADATA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("website_name", pa.string()),
    ("competence_date", pa.string()),
    ("country_code", pa.string()),
    ("currency_code", pa.string()),
    ("brand", pa.string()),
    ("category1_code", pa.string()),
    ("category2_code", pa.string()),
    ("category3_code", pa.string()),
    ("product_code", pa.int64()),
    ("title", pa.string()),
    ("itemurl", pa.string()),
    ("imageurl", pa.string()),
    ("full_price", pa.float64()),
    ("price", pa.float64()),
    ("full_price_eur", pa.float64()),
    ("price_eur", pa.float64()),
    ("flg_discount", pa.int64()),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in METADATA_COLUMNS) + ("image",)
IMAGE_COLUMN = "image"

# What a fine-tune needs from any dataset, generated or real.
REQUIRED_FOR_FINETUNE: tuple[str, ...] = ("image", "title", "category2_code", "category3_code", "full_price")

# The answer the model learns, exactly as in the public recipe.
ANSWER_TEMPLATE = "Product: {title}, Category: {category3_code}, Full Price: {full_price}"


def arrow_schema() -> pa.Schema:
    """Arrow schema of a written shard; ``image`` is the struct that ``datasets.Image`` stores."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema([*(pa.field(n, t) for n, t in METADATA_COLUMNS), pa.field(IMAGE_COLUMN, image)])


def features():
    """The ``datasets.Features`` of a generated split (imported lazily: schema stays importable alone)."""
    import datasets

    arrow_to_value = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
    feats = {name: datasets.Value(arrow_to_value[t]) for name, t in METADATA_COLUMNS}
    feats[IMAGE_COLUMN] = datasets.Image()
    return datasets.Features(feats)


@dataclass(frozen=True)
class Look:
    """What the renderer draws for one row: every field is also visible in the row's metadata.

    The catalog fills it from the same draws that made the title and price, so the image carries the
    category, colour, material, pattern and price signal that a fine-tune must recover.
    """

    category1: str          # WOMAN / MAN / KIDS: scales the product (kids' items are drawn smaller)
    category2: str          # OUTERWEAR, BAGS, ...: picks the silhouette family
    category3: str          # QUILTED JACKETS, SHOULDER, ...: picks the variant within the family
    silhouette: str         # name of the shape the renderer draws (from the taxonomy)
    colour: str             # colour word used in the title, e.g. "Honey"
    rgb: tuple[int, int, int]
    material: str           # material word used in the title, e.g. "Leather"
    texture: str            # renderer texture for the material: smooth, knit, quilted, grain, sheen, canvas, ...
    pattern: str            # "none", "check", "stripe", "monogram", "dots", ...
    trim: float             # 0..1, how much trim, hardware and stitching the photo shows: drawn for each row
                            # on its own, independent of every label and of the price (issue 18: a price-tier
                            # trim let a reader of hardware guess the price to 6 % where nothing else could)
    variant: int            # a per-row integer that varies background, pose and lighting

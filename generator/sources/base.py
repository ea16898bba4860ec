"""What reading a source produces: typed rows, the report of what was skipped or repaired and why, and
the catalogue with every identifier it holds; the error raised when a source cannot be read at all."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa


TABLE_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
NA_CATEGORY = "N.A."
# The public tables use a few characters ("None", "null", "#N/A") where the scraper found no image.
JUNK_URL_MAX_LEN = 8
# Refuse decompression bombs but allow the largest real product shots (about 4000 x 5000).
MAX_IMAGE_PIXELS = 40_000_000


# A product price outside this range is a unit or parsing mistake (1e308 would turn into inf downstream).
MIN_PRICE, MAX_PRICE = 0.01, 1e9
# Skip reasons added for hostile or malformed input (the others are plain strings where they are used).
IMAGE_OUTSIDE = "image_path_outside"
BAD_PRICE = "unparsable_price"
PRICE_RANGE = "price_out_of_range"
BAD_DATE = "invalid_date"
CSV_MERGED = "csv_broken_quoting"


class SourceError(ValueError):
    """The source cannot be read at all; ``str(err)`` is one line naming the problem and the fix."""


@dataclass(frozen=True)
class SourceConfig:
    max_side: int = 512             # larger source images are downscaled once, at load: augmentation
                                    # never needs more and 3,000 full-size photos would not fit in memory
    jpeg_quality: int = 95          # normalised images are re-encoded (which also drops EXIF, GPS included)
    images_dir: str | None = None   # where downloaded images live; default: "images" beside each table
    split: str | None = None        # for dataset folders / hub ids: None reads "train", else every split


@dataclass(frozen=True)
class SourceRow:
    """One usable source row: the DBQ metadata, typed, plus a normalised RGB JPEG."""

    website_name: str
    competence_date: str
    country_code: str
    currency_code: str
    brand: str
    category1_code: str
    category2_code: str
    category3_code: str
    product_code: str               # kept as text: one table stores it as int64, another as a string
    title: str
    itemurl: str
    imageurl: str
    full_price: float
    price: float
    full_price_eur: float | None
    price_eur: float | None
    flg_discount: int
    image: bytes                    # RGB JPEG; b"" for rows that were skipped
    origin: str                     # "catalog.csv row 17": where to look when a row surprises you


@dataclass
class SkipReport:
    """What reading did to each row: dropped (``skipped``) or kept after a fix (``repaired``)."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)   # about a whole table: rows the CSV parser lost

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def skip(self, reason: str, origin: str) -> None:
        self.skipped[reason] += 1
        self._example(reason, origin)

    def repair(self, note: str, origin: str) -> None:
        self.repaired[note] += 1
        self._example(note, origin)

    def _example(self, key: str, origin: str) -> None:
        shown = self.examples.setdefault(key, [])
        if len(shown) < 3:
            shown.append(origin)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        out = {"rows_read": self.rows_read, "rows_kept": self.rows_kept, "rows_skipped": self.rows_skipped,
               "skipped": dict(sorted(self.skipped.items())), "repaired": dict(sorted(self.repaired.items())),
               "examples": {k: list(v) for k, v in sorted(self.examples.items())}}
        if self.warnings:  # only when there are any: reports of clean sources keep their shape
            out["warnings"] = list(self.warnings)
        return out

    def summary(self) -> str:
        """A few lines for a terminal: read/kept counts, then one line per reason."""
        lines = [f"read {self.rows_read} rows, kept {self.rows_kept}, skipped {self.rows_skipped}"]
        lines += [f"  skipped {n:>4}  {reason}" for reason, n in sorted(self.skipped.items())]
        lines += [f"  fixed   {n:>4}  {note}" for note, n in sorted(self.repaired.items())]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class SourceCatalog:
    """A read catalogue: the usable rows, what was skipped, and every identifier seen (kept or not)."""

    rows: tuple[SourceRow, ...]
    report: SkipReport
    origin: str
    dropped: tuple[SourceRow, ...] = ()    # skipped rows whose metadata could be read (image = b"")

    def __len__(self) -> int:
        return len(self.rows)

    def all_rows(self) -> tuple[SourceRow, ...]:
        """Kept and dropped rows: what the privacy guard must never reproduce, usable or not."""
        return self.rows + self.dropped

    def identifiers(self) -> frozenset[str]:
        """Every real identifier: product codes, item and image URLs, and the ids inside those URLs."""
        found: set[str] = set()
        for row in self.all_rows():
            found.update(row_identifiers(row.product_code, row.itemurl, row.imageurl))
        return frozenset(found)

    def to_table(self, with_images: bool = False) -> pa.Table:
        """The kept rows as an Arrow table with the schema's metadata columns (``product_code`` as text)."""
        names = [f.name for f in fields(SourceRow) if f.name not in ("image", "origin")]
        data = {n: [getattr(r, n) for r in self.rows] for n in names}
        if with_images:
            data["image"] = [{"bytes": r.image, "path": None} for r in self.rows]
        return pa.table(data)


# --------------------------------------------------------------------------------------------------
# Identifiers


_URL_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\d{6,}")


def row_identifiers(product_code: str, itemurl: str, imageurl: str) -> set[str]:
    """The identifying strings of one row, lower-cased: a generated row must contain none of them."""
    ids: set[str] = set()
    code = (product_code or "").strip().lower()
    if len(code) >= 4:
        ids.add(code)
    for url in (itemurl, imageurl):
        url = (url or "").strip()
        if is_junk_url(url):
            continue
        ids.add(url.lower())
        # The asset id or product number inside a URL identifies the row even under another domain.
        ids.update(m.group(0).lower() for m in _URL_ID.finditer(url))
    return ids


def is_junk_url(value: str | None) -> bool:
    text = (value or "").strip()
    return len(text) <= JUNK_URL_MAX_LEN or "://" not in text

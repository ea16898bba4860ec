"""Read a real product catalogue into clean, typed rows: the input of augmentation and of the privacy guard.

A source is any of:

* a parquet or CSV table with the DBQ columns ("Burberry product prices, United States" and its siblings);
* the layout the public fine-tuning recipe leaves behind: a CSV beside an ``images/`` folder, with a
  ``local_image_path`` column;
* a folder holding such tables (every top-level ``*.csv`` / ``*.parquet`` is read, or those in its
  ``data/`` folder, as a hub repo or a gen-samples run lays them out; images resolved from ``images/``);
* a folder written by ``datasets.save_to_disk``, or a Hugging Face dataset id (read with
  ``datasets.load_dataset``, so it works offline from the local cache; the public DBQ tables carry only
  ``imageurl``, so point ``SourceConfig.images_dir`` at the downloaded images).

Images may come as bytes (an ``image`` column, plain or the ``datasets`` ``{"bytes", "path"}`` struct), as
paths, or only as ``imageurl`` values whose files were downloaded earlier: an URL maps to the file in the
images folder named by the URL's last path segment (any extension) or by ``sha1(url)[:16]``. Nothing is
ever fetched.

Real tables are messy. Every row is either kept (perhaps after a counted repair) or skipped with a
reason; nothing here raises on a bad row. :class:`SourceError` (one line: what is wrong, what to do) is
raised only when the source as a whole cannot be read.

A source may also be hostile. Image paths are only followed inside the source's folder (or the
``images_dir`` given explicitly): ``../..``, absolute paths and symlinks that lead out skip the row
(``image_path_outside``), so no file elsewhere on the machine is ever read. Prices are parsed in the
common locale formats (``1.990,00 €``, ``2 500,50``, ``$1,290.00``) and anything else (``0x10``) skips the
row rather than being guessed; dates must be real calendar dates. A CSV whose quoting swallows lines
is reported (record lines vs rows parsed). Catalogues carry only the source's *name* (``catalog.csv``,
never ``/home/me/...``), as it ends up in cards and reports that are shared.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
from PIL import Image, ImageOps

TABLE_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
NA_CATEGORY = "N.A."
# The public tables use a few characters ("None", "null", "#N/A") where the scraper found no image.
JUNK_URL_MAX_LEN = 8
# Refuse decompression bombs but allow the largest real product shots (about 4000 x 5000).
MAX_IMAGE_PIXELS = 40_000_000
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MISSING_TEXT = {"", "nan", "none", "null", "n/a", "#n/a", "na", "-"}
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


# --------------------------------------------------------------------------------------------------
# Entry point


def load_source(source: str | Path | Sequence[str | Path], config: SourceConfig = SourceConfig()) -> SourceCatalog:
    """Read one source (a table, a folder, a dataset folder or a hub id) or several tables as one catalogue.

    Duplicated product codes are resolved across all the tables: the first row read wins.
    """
    paths = [source] if isinstance(source, (str, Path)) else list(source)
    if not paths:
        raise SourceError("no source given; pass a CSV/parquet path, a folder or a dataset id")
    reader = _Reader(config)
    for one in paths:
        for table_name, records, base in _open(one, config):
            reader.read_table(table_name, records, base)
    label = ", ".join(str(p) for p in paths)  # the full path is fine on the user's own terminal
    if not reader.rows:
        raise SourceError(f"{label}: no usable rows ({reader.report.rows_read} read; "
                          f"{_top_reasons(reader.report)}); {_fix_hint(reader.report)}")
    reader.report.rows_kept = len(reader.rows)
    # ... but the catalogue's origin goes into cards and reports that get shared: the name only.
    return SourceCatalog(rows=tuple(reader.rows), report=reader.report,
                         origin=", ".join(display_name(p) for p in paths), dropped=tuple(reader.dropped))


def display_name(source: str | Path) -> str:
    """What to call a source in shared output: a local file or folder by its name, a hub id as it is."""
    path = Path(source).expanduser()
    name = path.resolve().name if path.exists() else str(source)
    # A file name may hold a newline or an escape sequence; shown escaped, it cannot forge report lines.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in (name or str(source)))


def _top_reasons(report: SkipReport) -> str:
    if not report.skipped:
        return "nothing skipped"
    return ", ".join(f"{n} {reason}" for reason, n in report.skipped.most_common(3))


def _fix_hint(report: SkipReport) -> str:
    top = report.skipped.most_common(1)[0][0] if report.skipped else ""
    return {IMAGE_OUTSIDE: "image paths must point inside the source's folder: copy the images into it",
            BAD_DATE: "write competence_date as YYYY-MM-DD",
            BAD_PRICE: "write prices as plain numbers such as 1990.00",
            }.get(top, "check the columns and the images folder")


# --------------------------------------------------------------------------------------------------
# Opening: each opener yields (name for messages, iterable of raw dict records, folder images resolve from)


def _open(source: str | Path, config: SourceConfig) -> Iterator[tuple[str, Iterable[dict], Path | None]]:
    path = Path(source).expanduser()
    if path.is_file():
        yield path.name, _read_table_file(path), path.parent
    elif path.is_dir():
        if _is_saved_dataset(path):
            yield from _open_dataset(path, config, from_disk=True)
            return
        tables = _tables_in(path) or _tables_in(path / "data")  # data/: a hub repo's or gen-samples' layout
        if not tables:
            raise SourceError(f"{path}: no *.csv or *.parquet table and no saved dataset in this folder; "
                              "point --source at the table file or at a folder that holds one")
        for table in tables:
            yield table.name, _read_table_file(table), path
    elif _HF_ID.match(str(source)) and not str(source).startswith((".", "/")):
        yield from _open_dataset(str(source), config, from_disk=False)
    else:
        raise SourceError(f"{source}: no such file or folder, and not a dataset id like 'owner/name'; "
                          "check the path")


def _tables_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())


def _read_table_file(path: Path) -> Iterable[dict]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise SourceError(f"{path}: not a readable parquet file ({_first_line(err)}); "
                              "re-export the table") from None
        return _arrow_records(table)
    if path.suffix.lower() == ".csv":
        try:
            # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename the first column.
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
        return _parse_csv(path, text)
    raise SourceError(f"{path}: unsupported file type {path.suffix!r}; give a .csv or .parquet table")


class _CsvRecords(list):
    """A CSV's records, and what parsing may have lost: an unbalanced quote silently joins the lines up
    to the next quote into one cell, so a 30-line table reads as 3 rows unless lines are counted."""

    record_lines: int = 0              # non-empty lines after the header: one per record in a sound CSV
    merged: frozenset[int] = frozenset()   # indices of records holding other records' lines in a cell


def _parse_csv(path: Path, text: str) -> _CsvRecords:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = _CsvRecords(reader)
    except csv.Error as err:  # a cell over csv.field_size_limit(), a NUL byte, ...
        line = reader.line_num + 1  # line_num counts the lines read before the one that failed
        if "field larger than field limit" in str(err):
            raise SourceError(f"{path}: line {line}: a cell is longer than {csv.field_size_limit():,} "
                              "characters; no catalogue cell is that long, so the quoting is probably broken "
                              "(an unbalanced quote joins the following lines into one cell): fix it or "
                              "re-export the table") from None
        raise SourceError(f"{path}: not a readable CSV file (line {line}: {_first_line(err)}); "
                          "re-export the table") from None
    # csv skips empty lines, so every other physical line after the header should be one record.
    records.record_lines = max(0, sum(1 for line in re.split(r"\r\n|\r|\n", text) if line) - 1)
    columns = len(reader.fieldnames or ())
    records.merged = frozenset(i for i, r in enumerate(records) if _holds_records(r, columns))
    return records


def _holds_records(record: dict, columns: int) -> bool:
    """A cell spanning lines that look like whole records: what an unbalanced quote leaves behind."""
    need = max(2, (columns - 1) // 2)
    for value in record.values():
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            if any(line.count(",") >= need for line in re.split(r"\r\n|\r|\n", value)[1:]):
                return True
    return False


def _arrow_records(table: pa.Table) -> Iterator[dict]:
    for batch in table.to_batches(max_chunksize=512):
        yield from batch.to_pylist()


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _open_dataset(ref: str | Path, config: SourceConfig, from_disk: bool):
    import datasets

    try:
        if from_disk:
            loaded = datasets.load_from_disk(str(ref))
        else:
            loaded = datasets.load_dataset(str(ref))
    except Exception as err:  # datasets raises many types (offline, missing, bad config): one message for all
        where = "this folder" if from_disk else "the hub or the local cache (offline: download it once first)"
        raise SourceError(f"{ref}: could not load the dataset from {where} ({_first_line(err)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if config.split is not None:
            names = [config.split]
        else:
            names = ["train"] if "train" in loaded else list(loaded)
        missing = [n for n in names if n not in loaded]
        if missing:
            raise SourceError(f"{ref}: no split {missing[0]!r}; it has {', '.join(loaded)}")
        splits = [(f"{display_name(ref)}[{n}]", loaded[n]) for n in names]
    else:
        splits = [(display_name(ref), loaded)]
    for name, ds in splits:
        for column, feature in ds.features.items():
            # Raw bytes, not decoded PIL images: decoding is ours to do, row by row, without crashing.
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(column, datasets.Image(decode=False))
        yield name, _dataset_records(ds), Path(ref) if from_disk else None


def _dataset_records(ds) -> Iterator[dict]:
    for batch in ds.with_format("arrow").iter(batch_size=512):
        yield from batch.to_pylist()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


# --------------------------------------------------------------------------------------------------
# Row cleaning


class _Reader:
    def __init__(self, config: SourceConfig):
        self.config = config
        self.report = SkipReport()
        self.rows: list[SourceRow] = []
        self.dropped: list[SourceRow] = []
        self.seen_codes: set[str] = set()
        self._image_index: dict[Path, dict[str, Path]] = {}

    def read_table(self, name: str, records: Iterable[dict], base: Path | None) -> None:
        images_dir = Path(self.config.images_dir) if self.config.images_dir else (base / "images" if base else None)
        # Image files are read only from inside these folders (resolved: symlinks count where they lead).
        roots = [p.resolve() for p in (base, Path(self.config.images_dir) if self.config.images_dir else None) if p]
        merged = getattr(records, "merged", frozenset())
        checked = False
        n = 0
        for i, raw in enumerate(records):
            n += 1
            record = {str(k).strip().lower(): v for k, v in raw.items()}
            if not checked:
                _check_columns(name, record)
                checked = True
            self.report.rows_read += 1
            origin = f"{name} row {i + 1}"
            if i in merged:  # its cells are shifted and hold other rows' text: nothing in it can be trusted
                self._drop(CSV_MERGED, origin, self._metadata(record)[0])
                continue
            self.read_row(record, origin, base, images_dir, roots)
        lines = getattr(records, "record_lines", n)
        if lines != n:
            first = f" (first at row {min(merged) + 1})" if merged else ""
            self.report.warn(f"{name}: {lines} record lines but {n} rows parsed: {lines - n} lines were joined "
                             f"into other rows{first}, usually by an unbalanced quote; fix the quoting so no row "
                             "is lost")

    def read_row(self, record: dict, origin: str, base: Path | None, images_dir: Path | None,
                 roots: Sequence[Path] | None = None) -> None:
        meta, notes, problem = self._metadata(record)
        code = meta["product_code"]
        if not meta["title"]:
            return self._drop("missing_title", origin, meta)
        if problem:
            return self._drop(problem, origin, meta)
        if meta["full_price"] is None:
            return self._drop("missing_price", origin, meta)
        if meta["full_price"] <= 0:
            return self._drop("zero_price", origin, meta)
        if code and code in self.seen_codes:
            # Real listings repeat a product under several categories; one copy is enough to learn from.
            return self._drop("duplicate_product_code", origin, meta)
        if roots is None:
            roots = [base.resolve()] if base else []
        image, problem = self._image(record, base, images_dir, roots)
        if image is None:
            return self._drop(problem, origin, meta)
        if code:
            self.seen_codes.add(code)
        if meta["price"] is None or meta["price"] <= 0:
            meta["price"] = meta["full_price"]
            notes.append("price_missing_set_to_full_price")
        if meta["category3_code"] == NA_CATEGORY:
            notes.append("category3_na_kept")
        if any(not meta[c].isascii() for c in ("category1_code", "category2_code", "category3_code")):
            notes.append("non_english_category_kept")
        if not meta["title"].isascii():
            notes.append("unicode_title_kept")
        if problem != "RGB":
            notes.append(f"image_mode_{problem}_to_RGB")
        # Fixes are counted for kept rows only: a dropped row's repairs would only muddle the report.
        for note in notes:
            self.report.repair(note, origin)
        self.rows.append(SourceRow(**meta, image=image, origin=origin))

    def _drop(self, reason: str, origin: str, meta: dict) -> None:
        self.report.skip(reason, origin)
        self.dropped.append(SourceRow(**meta, image=b"", origin=origin))

    def _metadata(self, r: dict) -> tuple[dict, list[str], str | None]:
        """(typed metadata, repairs made, the reason to skip the row or None)."""
        notes: list[str] = []
        problem = None
        full_price = _number(r.get("full_price"))
        price = _number(r.get("price"))
        for raw, value in ((r.get("full_price"), full_price), (r.get("price"), price)):
            if value is None and not _blank(raw):
                problem = problem or BAD_PRICE        # "0x10", "12 USD 50": skipped, never guessed
            elif value is not None and (value > MAX_PRICE or 0 < value < MIN_PRICE):
                problem = problem or PRICE_RANGE
        eur = {}
        for column in ("full_price_eur", "price_eur"):
            value = _number(r.get(column))
            if (value is None and not _blank(r.get(column))) or (value is not None and not 0 <= value <= MAX_PRICE):
                notes.append("eur_price_unusable_dropped")  # optional column: the row stays, the value goes
                value = None
            eur[column] = value
        date = _date(r.get("competence_date"))
        if date is None:
            problem = problem or BAD_DATE  # "99999", "2023-13-45": a row with a made-up date is not copied out
        elif date != _text(r.get("competence_date")):
            notes.append("competence_date_normalised")
        category3 = _text(r.get("category3_code"))
        if not category3:
            category3 = NA_CATEGORY
            notes.append("category3_missing_set_na")
        code = _code(r.get("product_code"))
        if isinstance(r.get("product_code"), str) and code and r.get("product_code") != code:
            notes.append("product_code_text_normalised")
        imageurl = str(r.get("imageurl") or "").strip()
        if imageurl and is_junk_url(imageurl):
            notes.append("junk_imageurl_blanked")
            imageurl = ""
        discount = _number(r.get("flg_discount"))
        meta = {
            "website_name": _text(r.get("website_name")),
            "competence_date": date or "",
            "country_code": _text(r.get("country_code")),
            "currency_code": _text(r.get("currency_code")),
            "brand": _text(r.get("brand")),
            "category1_code": _text(r.get("category1_code")) or NA_CATEGORY,
            "category2_code": _text(r.get("category2_code")) or NA_CATEGORY,
            "category3_code": category3,
            "product_code": code,
            "title": _text(r.get("title")),
            "itemurl": _text(r.get("itemurl")),
            "imageurl": imageurl,
            "full_price": full_price,
            "price": price,
            "full_price_eur": eur["full_price_eur"],
            "price_eur": eur["price_eur"],
            "flg_discount": int(discount) if discount is not None else int(
                price is not None and full_price is not None and 0 < price < full_price),
        }
        return meta, notes, problem

    # -- images -------------------------------------------------------------------------------------
    def _image(self, r: dict, base: Path | None, images_dir: Path | None,
               roots: Sequence[Path]) -> tuple[bytes | None, str]:
        data, where = self._image_bytes(r, base, images_dir, roots)
        if isinstance(data, str):  # a file was found but not read: the reason
            return None, data
        if data is None:
            return None, where
        return self._normalise(data)

    def _image_bytes(self, r: dict, base: Path | None, images_dir: Path | None,
                     roots: Sequence[Path]) -> tuple[bytes | str | None, str]:
        """(raw bytes, how found), or (a reason, _) / (None, reason). Files are read only inside ``roots``."""
        value = r.get("image")
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"]), "bytes"
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)) and value:
            return bytes(value), "bytes"
        candidates = [text for text in (_text(v) for v in (value, r.get("local_image_path"), r.get("image_path"))
                                        if isinstance(v, str)) if text]
        outside = False
        for text in candidates:
            found, escaped = self._find_file(text, base, images_dir, roots)
            outside |= escaped
            if found is not None:
                return _read_inside(found, roots), "path"
        url = str(r.get("imageurl") or "").strip()
        if url and not is_junk_url(url):
            found = self._find_downloaded(url, images_dir)
            if found is not None:
                return _read_inside(found, roots), "url"
        if outside:
            return None, IMAGE_OUTSIDE
        if candidates:
            return None, "image_file_missing"
        if url:
            return None, "junk_imageurl_no_image" if is_junk_url(url) else "image_not_downloaded"
        return None, "no_image"

    def _find_file(self, text: str, base: Path | None, images_dir: Path | None,
                   roots: Sequence[Path]) -> tuple[Path | None, bool]:
        """(the file inside ``roots`` that ``text`` names, or None; whether ``text`` pointed outside them)."""
        path = Path(text)  # no expanduser: a table must not steer the reader into the user's home
        outside = False
        for candidate in ([path] if path.is_absolute() else [p / path for p in (base, images_dir) if p]):
            if not _inside(candidate, roots):
                outside = True  # never even stat a file out there: "does /etc/x exist?" is no business of a table
            elif candidate.is_file():
                return candidate, False
        # The recipe's CSV often carries absolute paths from the machine that made it (/content/images/..):
        # fall back to the file's name in the local images folder (inside the source, so safe to read).
        found = self._index(images_dir).get(path.name.lower()) if images_dir else None
        if found is not None and _inside(found, roots):
            return found, False
        return None, outside or found is not None

    def _find_downloaded(self, url: str, images_dir: Path | None) -> Path | None:
        if images_dir is None:
            return None
        index = self._index(images_dir)
        stem = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1].lower()
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
        for key in (stem, Path(stem).stem, digest):
            if key in index:
                return index[key]
        return None

    def _index(self, images_dir: Path) -> dict[str, Path]:
        """name and stem (lower-case) -> file, built once per folder: a glob per row is slow on 3,000 rows."""
        if images_dir not in self._image_index:
            index: dict[str, Path] = {}
            if images_dir.is_dir():
                for p in sorted(images_dir.iterdir()):
                    if p.is_file():
                        index.setdefault(p.name.lower(), p)
                        index.setdefault(p.stem.lower(), p)
            self._image_index[images_dir] = index
        return self._image_index[images_dir]

    def _normalise(self, data: bytes) -> tuple[bytes | None, str]:
        """Decode fully (so truncation shows now, not mid-run), convert to RGB, cap the size, re-encode.

        Returns (jpeg, the original mode) or (None, why it failed)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    return None, "image_too_large"
                img.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            return None, "image_too_large"
        except OSError as err:
            return None, "image_truncated" if "truncated" in str(err).lower() else "image_corrupt"
        except (ValueError, SyntaxError, Image.UnidentifiedImageError):
            return None, "image_corrupt"
        mode = img.mode
        img = ImageOps.exif_transpose(img)
        if mode != "RGB":
            img = to_rgb(img)
        side = self.config.max_side
        if max(img.size) > side:
            img.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=self.config.jpeg_quality, subsampling=0)
        return out.getvalue(), mode


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path``, ``..`` and symlinks resolved, lies in one of ``roots`` (themselves resolved)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: not a file we will read
        return False
    return any(real.is_relative_to(root) for root in roots)


def _read_inside(path: Path, roots: Sequence[Path]) -> bytes | str:
    """The file's bytes if it resolves inside ``roots`` (an images/ entry may be a symlink to anywhere),
    else the skip reason."""
    if not _inside(path, roots):
        return IMAGE_OUTSIDE
    try:
        return path.read_bytes()
    except OSError:  # unreadable (permissions, a folder named like an image): skip the row, do not crash
        return "image_unreadable"


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode -> RGB; transparency goes onto white, as product shots are shown on white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float greyscale: scale to 8 bits instead of clipping everything to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else arr * 0
        img = Image.fromarray(arr.astype("uint8"), "L")
    return img.convert("RGB")


# --------------------------------------------------------------------------------------------------
# Cell parsers: forgiving, never raising


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = unicodedata.normalize("NFC", str(value)).strip()
    text = " ".join(text.split())
    return "" if text.lower() in _MISSING_TEXT else text


def _blank(value: Any) -> bool:
    """An empty cell: None, NaN or one of the spreadsheet spellings of nothing ("", "n/a", "null", ...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXT


# Plain float syntax: what pandas and most exporters write (1990, 1990.5, 1.99e3).
_PLAIN_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Groups of three digits joined by one grouping mark, then an optional decimal part written with a different
# mark: 1,990.00 (en)  1.990,00 (de)  2 500,50 (fr)  1'990.50 (ch). The grouping mark must be consistent.
_GROUPED = re.compile(r"(\d{1,3})((?:([,. '’])\d{3})(?:\3\d{3})*)(?:([.,])(\d+))?")
_DECIMAL_COMMA = re.compile(r"(\d+),(\d+)")   # 1990,00 and 12,5


def _number(value: Any) -> float | None:
    """A price or flag cell as a finite float, or None when it is empty or not a number.

    Strings may carry a currency symbol or code before or after (``$``, ``€``, ``EUR``, ``US$``) and use
    the common locale formats above. ``1,990`` is read as 1990 (a grouping comma) and ``1.990`` as 1.99
    (a decimal point, as float() reads it); anything else that is not clearly one number (``0x10``,
    ``1.990.00``, ``12 USD 50``) gives None, so the row is skipped with a reason instead of mispriced.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = unicodedata.normalize("NFKC", str(value)).strip()  # NFKC: no-break and thin spaces -> " "
        if text.lower() in _MISSING_TEXT:
            return None
        number = _parse_number(text)
        if number is None:
            return None
    return number if math.isfinite(number) else None


def _parse_number(text: str) -> float | None:
    start, end = 0, len(text)
    while start < end and not (text[start].isdigit() or text[start] in "+-.,"):
        start += 1
    while end > start and not text[end - 1].isdigit():
        end -= 1
    if not all(_currency_affix(a) for a in (text[:start], text[end:])):
        return None
    core = text[start:end]
    sign = -1.0 if core.startswith("-") else 1.0
    core = core[1:].strip() if core[:1] in "+-" else core
    if _PLAIN_NUMBER.fullmatch(core):
        return sign * float(core)
    m = _GROUPED.fullmatch(core)
    if m and m.group(4) != m.group(3):
        digits = m.group(1) + m.group(2).replace(m.group(3), "")
        return sign * float(digits + (f".{m.group(5)}" if m.group(5) else ""))
    m = _DECIMAL_COMMA.fullmatch(core)
    if m:
        return sign * float(f"{m.group(1)}.{m.group(2)}")
    return None


def _currency_affix(text: str) -> bool:
    """Text around a number that can only be a currency: symbols, an ISO code or a short unit (US$, kr, Fr.)."""
    letters = sum(ch.isalpha() for ch in text)
    return letters in (0, 2, 3) and all(ch.isalpha() or ch.isspace() or ch == "." or unicodedata.category(ch) == "Sc"
                                        for ch in text)


_DATE_YMD = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})"
                       r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_DATE_DMY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")   # 17.11.2023: day first, never ambiguous


def _date(value: Any) -> str | None:
    """A snapshot date as ``YYYY-MM-DD``; "" for an empty cell; None when it is no real date (``99999``,
    ``2023-13-45``, ``not a date``). Slashed day/month orders (11/12/2023) are ambiguous and not guessed."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        day = value
    elif _blank(value):
        return ""
    else:
        text = str(value).strip()
        if m := _DATE_YMD.fullmatch(text):
            parts = int(m.group(1)), int(m.group(3)), int(m.group(4))
        elif m := _DATE_DMY.fullmatch(text):
            parts = int(m.group(3)), int(m.group(2)), int(m.group(1))
        else:
            return None
        try:
            day = dt.date(*parts)
        except ValueError:
            return None
    return day.isoformat() if 1900 <= day.year <= 2100 else None


def _code(value: Any) -> str:
    """Product code as text: 80712345, "80712345", " 80712345.0" all give "80712345"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    return "" if text.lower() in _MISSING_TEXT else text


_REQUIRED = ("title", "category3_code", "full_price")


def _check_columns(name: str, record: dict) -> None:
    missing = [c for c in _REQUIRED if c not in record]
    if missing:
        raise SourceError(f"{name}: missing column {missing[0]!r} (has: {', '.join(list(record)[:8])}); "
                          f"a source table needs the DBQ columns {', '.join(_REQUIRED)} and an image")
    if not ({"image", "local_image_path", "image_path", "imageurl"} & set(record)):
        raise SourceError(f"{name}: no image column; add 'image' (bytes or path), 'local_image_path', "
                          "or 'imageurl' with the downloaded files in an images/ folder beside the table")

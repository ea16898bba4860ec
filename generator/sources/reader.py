"""Reading a source into a catalogue: every record kept (perhaps after a counted repair) or skipped with
a reason; its image found inside the source's folders, decoded and normalised to an RGB JPEG."""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageOps
from generator.sources.base import (BAD_DATE, BAD_PRICE, CSV_MERGED, IMAGE_OUTSIDE, MAX_IMAGE_PIXELS, MAX_PRICE,
                                    MIN_PRICE, NA_CATEGORY, PRICE_RANGE, SkipReport, SourceCatalog, SourceConfig,
                                    SourceError, SourceRow, is_junk_url)
from generator.sources.tables import _check_columns, _open, display_name
from generator.sources.values import _blank, _code, _date, _number, _text


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
            elif _is_file(candidate):
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
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the cell: not a file we will read
        return False
    return any(real.is_relative_to(root) for root in roots)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, and False for a name the file system cannot look up (over 255 bytes): a bad cell."""
    try:
        return path.is_file()
    except OSError:
        return False


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

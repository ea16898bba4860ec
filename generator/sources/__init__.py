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

The package: :mod:`.reader` (``load_source``: rows kept or skipped, images found and normalised),
:mod:`.tables` (opening tables, folders, saved datasets, Hub ids), :mod:`.values` (parsing cells: prices,
dates, codes) and :mod:`.base` (rows, the skip report, the catalogue, the error).
"""
from __future__ import annotations

from generator.sources.base import (BAD_DATE, BAD_PRICE, CSV_MERGED, IMAGE_OUTSIDE, IMAGE_SUFFIXES, JUNK_URL_MAX_LEN,
                                    MAX_IMAGE_PIXELS, MAX_PRICE, MIN_PRICE, NA_CATEGORY, PRICE_RANGE, TABLE_SUFFIXES,
                                    SkipReport, SourceCatalog, SourceConfig, SourceError, SourceRow, is_junk_url,
                                    row_identifiers)
from generator.sources.reader import load_source, to_rgb
from generator.sources.tables import display_name

__all__ = ["BAD_DATE", "BAD_PRICE", "CSV_MERGED", "IMAGE_OUTSIDE", "IMAGE_SUFFIXES", "JUNK_URL_MAX_LEN",
           "MAX_IMAGE_PIXELS", "MAX_PRICE", "MIN_PRICE", "NA_CATEGORY", "PRICE_RANGE", "TABLE_SUFFIXES", "SkipReport",
           "SourceCatalog", "SourceConfig", "SourceError", "SourceRow", "display_name", "is_junk_url", "load_source",
           "row_identifiers", "to_rgb"]

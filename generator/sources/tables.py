"""Opening a source - a CSV or parquet table, a folder of tables, a saved dataset or a Hub id - as
(name for messages, raw dict records, the folder its images resolve from), and checking its columns."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
from generator.sources.base import TABLE_SUFFIXES, SourceConfig, SourceError


_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def display_name(source: str | Path) -> str:
    """What to call a source in shared output: a local file or folder by its name, a hub id as it is."""
    path = Path(source).expanduser()
    name = path.resolve().name if path.exists() else str(source)
    # A file name may hold a newline or an escape sequence; shown escaped, it cannot forge report lines.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in (name or str(source)))


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


_REQUIRED = ("title", "category3_code", "full_price")


def _check_columns(name: str, record: dict) -> None:
    missing = [c for c in _REQUIRED if c not in record]
    if missing:
        raise SourceError(f"{name}: missing column {missing[0]!r} (has: {', '.join(list(record)[:8])}); "
                          f"a source table needs the DBQ columns {', '.join(_REQUIRED)} and an image")
    if not ({"image", "local_image_path", "image_path", "imageurl"} & set(record)):
        raise SourceError(f"{name}: no image column; add 'image' (bytes or path), 'local_image_path', "
                          "or 'imageurl' with the downloaded files in an images/ folder beside the table")

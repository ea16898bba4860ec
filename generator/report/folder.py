"""Read what a dataset folder written by ``gen-samples`` holds, for its report: the run's parameters, the
rows' metadata (every row), the images of the gallery rows, and whichever JSON reports are there
(privacy, fidelity, limits). A report that is missing or unreadable is left out, never fatal."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from generator.schema import IMAGE_COLUMN
from generator.writer import DATA_DIR, SPLITS, WriteError, read_run

GALLERY_MAX = 10_000     # rows the gallery holds (and thumbnails made); past it, the first rows of each split
COLUMNS = ("title", "category1_code", "category2_code", "category3_code", "full_price", "price", "flg_discount")
REPORT_FILES = {"privacy": "privacy_report.json", "fidelity": "fidelity_report.json", "limits": "limits.json"}


class ReportError(ValueError):
    """A folder that holds no dataset to report on; ``str(err)`` is one line with the fix."""


@dataclass
class RunFolder:
    path: Path
    params: dict[str, Any]                       # .manifest/run.json
    columns: dict[str, list]                     # COLUMNS + "split", one entry a row (train rows first)
    images: list[bytes | None]                   # the gallery rows' image bytes (the first len(images) rows)
    gallery_rows: list[int]                      # dataset positions of the gallery rows
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)   # privacy / fidelity / limits
    unreadable: list[str] = field(default_factory=list)                # report files that could not be read
    shard_files: int = 0

    @property
    def rows(self) -> int:
        return len(self.columns["title"])

    @property
    def source(self) -> dict[str, Any]:
        return self.params.get("source") or {}


def read_folder(folder: str | Path, gallery_max: int = GALLERY_MAX) -> RunFolder:
    path = Path(folder)
    if not path.is_dir():
        raise ReportError(f"{folder} is not a folder; give the folder gen-samples wrote")
    try:
        params = read_run(path)
    except WriteError as err:
        raise ReportError(str(err).split(";")[0] + "; rebuild the run or choose another folder") from None
    files = {s: sorted((path / DATA_DIR).glob(f"{s}-*.parquet")) for s in SPLITS}
    if params is None or not any(files.values()):
        what = "no .manifest/run.json" if params is None else f"no parquet shards in {DATA_DIR}/"
        raise ReportError(f"{folder} holds no gen-samples dataset ({what}); give the folder gen-samples wrote")
    total = {s: sum(_num_rows(f) for f in fs) for s, fs in files.items()}
    grand = sum(total.values())
    want = {s: total[s] if grand <= gallery_max else gallery_max * total[s] // grand for s in SPLITS}
    columns: dict[str, list] = {c: [] for c in (*COLUMNS, "split")}
    images: list[bytes | None] = []
    gallery: list[int] = []
    for split in SPLITS:
        taken = 0
        for f in files[split]:
            n = _read_shard(f, split, columns, images, gallery, want[split] - taken)
            taken += n
    run = RunFolder(path, params, columns, images, gallery, shard_files=sum(len(fs) for fs in files.values()))
    _read_reports(run)
    return run


def _num_rows(f: Path) -> int:
    try:
        return pq.ParquetFile(f).metadata.num_rows
    except (OSError, ValueError) as err:
        raise ReportError(f"{f} is not a readable parquet shard ({str(err)[:120]}); rebuild the run") from None


def _read_shard(f: Path, split: str, columns: dict[str, list], images: list, gallery: list, room: int) -> int:
    """Append shard ``f``'s metadata to ``columns`` and up to ``room`` image bytes to ``images``."""
    start = len(columns["title"])
    try:
        shard = pq.ParquetFile(f)
        table = shard.read(columns=list(COLUMNS))
        for c in COLUMNS:
            columns[c] += table.column(c).to_pylist()
        columns["split"] += [split] * table.num_rows
        take = max(0, min(room, table.num_rows))
        if take:
            col = shard.read(columns=[IMAGE_COLUMN]).column(IMAGE_COLUMN).slice(0, take).combine_chunks()
            images += col.field("bytes").to_pylist()
            gallery += range(start, start + take)
    except (OSError, ValueError, KeyError) as err:
        raise ReportError(f"{f} is not a readable parquet shard ({str(err)[:120]}); rebuild the run") from None
    return take


def _read_reports(run: RunFolder) -> None:
    for key, name in REPORT_FILES.items():
        p = run.path / name
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            run.reports[key] = data
        else:
            run.unreadable.append(name)

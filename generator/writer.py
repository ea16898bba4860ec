"""Rows -> parquet shards: seeded train/test splits, worker processes, resumable, byte-deterministic.

Layout of a written run::

    OUT/data/train-00000-of-00003.parquet ...   shards (the ``datasets`` Image feature, HF schema metadata)
    OUT/data/test-00000-of-00001.parquet
    OUT/.manifest/run.json                      what makes the rows (checked before joining a run)
    OUT/.manifest/<shard>.json                  rows, sha256 and statistics of each finished shard

A shard is a pure function of (row source, plan, shard), whichever process or machine writes it, so any
``num_proc`` and any ``--shard i/N`` slicing give the same bytes. Each shard goes to a temporary name and
is renamed into place, then its manifest record is written: a shard with a matching record is complete
and a restarted run skips it. Memory stays flat: a worker holds one row group (``ROW_GROUP_SIZE`` rows).
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq

from generator.card import SplitStats
from generator.interrupts import ignore_sigint_in_worker, sigint_held
from generator.permutation import permute, round_keys
from generator.schema import COLUMN_NAMES, IMAGE_COLUMN, METADATA_COLUMNS, arrow_schema

DATA_DIR = "data"
MANIFEST_DIR = ".manifest"
RUN_FILE = "run.json"
SPLITS = ("train", "test")
ROW_GROUP_SIZE = 100    # what datasets uses for image data: a streaming reader holds one small group
STREAM_SPLIT = 3        # permutation key tag of the split (catalog uses 1 and 2)
MANIFEST_FORMAT = 1


class WriteError(ValueError):
    """A run directory that cannot be written or joined; ``str(err)`` is one line with the fix."""


@runtime_checkable
class RowSource(Protocol):
    """Anything that makes row ``index`` of a dataset, for ``0 <= index < len(source)``.

    A row is a dict of the schema's columns (``generator.schema.COLUMN_NAMES``) with ``image`` as
    ``{"bytes": <jpeg>, "path": None}``. A source must be deterministic per index and picklable
    (workers are spawned and get a copy), so keep heavy state lazy and per process.
    """

    def __len__(self) -> int: ...

    def __call__(self, index: int) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able parameters that determine the rows: recorded in the manifest and on the card."""
        ...


# --------------------------------------------------------------------------------------------------
# The plan: which rows go in which file.


@dataclass(frozen=True)
class ShardSpec:
    split: str
    index: int
    count: int
    start: int      # positions within the split
    stop: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SplitPlan:
    """Split sizes and shard files of a run, and the map from (split, position) to a source index.

    The rows of the source are shuffled by a keyed permutation; the first ``test_rows`` shuffled
    positions are the test split. Any position maps on its own, so no N-sized state is ever built.
    """

    num_rows: int
    test_rows: int
    rows_per_shard: int
    seed: int

    @property
    def train_rows(self) -> int:
        return self.num_rows - self.test_rows

    def split_rows(self, split: str) -> int:
        return self.train_rows if split == "train" else self.test_rows

    @property
    def shards(self) -> tuple[ShardSpec, ...]:
        out = []
        for split in SPLITS:  # train first: the biggest jobs start first
            n = self.split_rows(split)
            count = math.ceil(n / self.rows_per_shard)
            out += [ShardSpec(split, k, count, k * self.rows_per_shard, min(n, (k + 1) * self.rows_per_shard))
                     for k in range(count)]
        return tuple(out)

    def source_indices(self, spec: ShardSpec) -> list[int]:
        keys = round_keys(self.seed, STREAM_SPLIT)
        offset = self.test_rows if spec.split == "train" else 0
        return [permute(offset + p, self.num_rows, keys) for p in range(spec.start, spec.stop)]


def plan_splits(num_rows: int, test_fraction: float, rows_per_shard: int, seed: int) -> SplitPlan:
    """``test_rows = round(num_rows * test_fraction)`` (halves round up), leaving train at least one row."""
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    test = min(int(math.floor(num_rows * test_fraction + 0.5)), num_rows - 1)
    return SplitPlan(num_rows=num_rows, test_rows=max(0, test), rows_per_shard=rows_per_shard, seed=seed)


def parquet_schema() -> pa.Schema:
    """The shard schema, carrying the ``datasets`` features so ``load_dataset`` decodes ``image``.

    Built without importing ``datasets`` (a second of start-up in every worker); a test checks it
    equals ``generator.schema.features().to_dict()``.
    """
    names = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
    feats: dict[str, Any] = {n: {"dtype": names[t], "_type": "Value"} for n, t in METADATA_COLUMNS}
    feats[IMAGE_COLUMN] = {"_type": "Image"}
    return arrow_schema().with_metadata({"huggingface": json.dumps({"info": {"features": feats}})})


# --------------------------------------------------------------------------------------------------
# Manifest records


@dataclass
class ShardRecord:
    name: str
    split: str
    rows: int
    bytes: int
    sha256: str
    arrow_bytes: int                 # in-memory size: the card's dataset_info num_bytes
    stats: SplitStats = field(default_factory=SplitStats)
    # Privacy-guard attempts rejected while writing this shard (reason -> count); kept per shard because
    # worker processes count their own, and a resumed run must still report the whole dataset's.
    rejections: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ShardRecord":
        return cls(**{**d, "stats": SplitStats.from_json(d["stats"]), "rejections": d.get("rejections", {})})


@dataclass
class WriteResult:
    out: Path
    plan: SplitPlan
    records: dict[str, ShardRecord]      # every complete shard on disk, by file name
    written: list[str]                   # the shards this call wrote
    skipped: list[str]                   # the shards this call found complete
    seconds: float

    @property
    def complete(self) -> bool:
        return all(s.name in self.records for s in self.plan.shards)

    def split_stats(self) -> dict[str, SplitStats]:
        out = {s: SplitStats() for s in SPLITS if self.plan.split_rows(s)}
        for rec in self.records.values():
            out[rec.split].merge(rec.stats)
        return out

    def rejections(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for rec in self.records.values():
            for reason, count in rec.rejections.items():
                total[reason] = total.get(reason, 0) + count
        return dict(sorted(total.items()))

    def split_bytes(self) -> dict[str, tuple[int, int]]:
        """split -> (parquet bytes, arrow bytes)."""
        out: dict[str, tuple[int, int]] = {}
        for rec in self.records.values():
            b, a = out.get(rec.split, (0, 0))
            out[rec.split] = (b + rec.bytes, a + rec.arrow_bytes)
        return out


def run_params(source: RowSource, plan: SplitPlan) -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "source": source.describe(), "rows": plan.num_rows,
            "test_rows": plan.test_rows, "rows_per_shard": plan.rows_per_shard, "split_seed": plan.seed}


def read_run(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_DIR / RUN_FILE
    try:
        params = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: JSON nested thousands deep
        raise WriteError(f"{path} is unreadable ({str(err)[:200]}); delete {out} or pass --overwrite") from None
    if not isinstance(params, dict):  # `[]`, `1`, `"x"`: valid JSON, but no run of ours
        raise WriteError(f"{path} is not a gen-samples manifest (it holds a JSON {type(params).__name__}); "
                         f"delete {out} or pass --overwrite")
    return params


def verified_records(out: Path, plan: SplitPlan) -> dict[str, ShardRecord]:
    """The shards of ``plan`` that are on disk and match their manifest record (size and sha256)."""
    found = {}
    for spec in plan.shards:
        rec = _read_record(out, spec.name)
        path = out / DATA_DIR / spec.name
        if rec is not None and rec.rows == spec.rows and path.is_file() and path.stat().st_size == rec.bytes \
                and _sha256(path) == rec.sha256:
            found[spec.name] = rec
    return found


def _read_record(out: Path, name: str) -> ShardRecord | None:
    try:
        return ShardRecord.from_json(json.loads((out / MANIFEST_DIR / f"{name}.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # missing, torn or not a record: the shard is simply redone


# --------------------------------------------------------------------------------------------------
# Writing


def write_shards(
    source: RowSource,
    out: str | os.PathLike,
    plan: SplitPlan,
    *,
    num_proc: int = 1,
    shard: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> WriteResult:
    """Write this machine's shards of ``plan`` under ``out``, skipping the ones already complete.

    ``shard=(i, n)`` writes only the shard files ``k`` with ``k % n == i`` (same names as a full run).
    ``on_start(total_rows, done_rows)`` is called once the work is known, ``progress(rows)`` as rows land.
    """
    t0 = time.perf_counter()
    out = Path(out)
    params = json.loads(json.dumps(run_params(source, plan)))  # as it reads back from disk
    existing = read_run(out)  # checked before creating anything: a refused run leaves no empty data/
    if existing is not None and existing != params:
        raise WriteError(f"{out} holds a different run ({_diff(existing, params)}); "
                         "use another --out, or --overwrite to replace it")
    (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    if existing is None:
        atomic_write_text(out / MANIFEST_DIR / RUN_FILE, json.dumps(params, indent=1, sort_keys=True))

    mine = [s for k, s in enumerate(plan.shards) if shard is None or k % shard[1] == shard[0]]
    records = verified_records(out, plan)
    todo = [s for s in mine if s.name not in records]
    skipped = [s.name for s in mine if s.name in records]
    _remove_partial(out, todo)  # leftovers of an interrupted attempt at our own shards
    if on_start:
        on_start(sum(s.rows for s in mine), sum(s.rows for s in mine if s.name in records))

    written = []
    try:
        for rec in _run_jobs(source, out, plan, todo, num_proc, progress):
            records[rec.name] = rec
            written.append(rec.name)
    except BaseException:
        # Workers stopped by the pool's terminate() cannot remove their temporary shard; they are
        # dead by now (the pool joins them), so no new one can appear after this.
        _remove_partial(out, todo)
        raise
    return WriteResult(out=out, plan=plan, records=records, written=sorted(written), skipped=skipped,
                       seconds=time.perf_counter() - t0)


def _remove_partial(out: Path, todo: list[ShardSpec]) -> None:
    """Temporary files of the shards in ``todo`` (this call's, never another machine's shards)."""
    for spec in todo:
        for stale in (out / DATA_DIR).glob(f".{spec.name}.tmp-*"):
            stale.unlink(missing_ok=True)


def _run_jobs(source, out, plan, todo, num_proc, progress):
    if num_proc <= 1 or len(todo) <= 1:  # nothing or one shard to write: no pool to start
        for spec in todo:
            yield write_shard(source, out, plan, spec, progress)
        return
    # The parent works too, claiming shards from the same counter as the workers: it starts at once,
    # while each spawned worker first spends about a second importing. spawn, not fork: safe with the
    # parent's threads (rich) and the same on every OS.
    ctx = mp.get_context("spawn")
    claimed = ctx.Value("i", 0)
    ticks = ctx.Queue()

    def drain(block: bool = False) -> None:
        while True:
            try:
                rows = ticks.get(timeout=0.05) if block else ticks.get_nowait()
            except queue.Empty:
                return
            block = False
            if progress:
                progress(rows)

    def mine(rows: int) -> None:
        if progress:
            progress(rows)
        drain()
        for job in jobs:
            if job.ready() and not job.successful():
                job.get()  # a worker failed: stop now, not after the parent's own shards

    workers = min(num_proc, len(todo)) - 1
    jobs: list = []
    with ExitStack() as stack:
        with sigint_held():  # workers are born deaf to Ctrl-C; one pressed meanwhile is raised right after,
            pool = stack.enter_context(  # where leaving the stack terminates the pool
                ctx.Pool(workers, initializer=_init_worker, initargs=(source, ticks, claimed, os.getpid())))
        jobs = [pool.apply_async(_worker_loop, (str(out), plan, todo)) for _ in range(workers)]
        while (spec := _claim(claimed, todo)) is not None:
            yield write_shard(source, out, plan, spec, mine)
        while not all(job.ready() for job in jobs):
            drain(block=True)
        drain()
        for job in jobs:
            yield from job.get()  # re-raises a worker's exception here


def _claim(claimed, todo: list[ShardSpec]) -> ShardSpec | None:
    with claimed.get_lock():
        k = claimed.value
        if k >= len(todo):
            return None
        claimed.value = k + 1
    return todo[k]


_WORKER: dict[str, Any] = {}
PARENT_POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _init_worker(source: RowSource, ticks, claimed, parent: int) -> None:
    ignore_sigint_in_worker()  # the parent reports Ctrl-C and terminates us
    ticks.cancel_join_thread()  # progress ticks nobody will read must not hold up a worker's exit
    _die_with_parent(parent)
    _WORKER.update(source=source, ticks=ticks, claimed=claimed)


def _die_with_parent(parent: int) -> None:
    """End this worker as soon as its parent is gone, however it died (kill -9 included).

    Nobody would collect its records any more, yet it would go on claiming and writing shards into a
    folder a new ``--resume`` may be working in. On Linux the kernel kills us with the parent
    (PR_SET_PDEATHSIG); polling covers other systems and a parent that died before that was set. A
    temporary shard may stay behind; the next run of these shards removes it.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _worker_loop(out: str, plan: SplitPlan, todo: list[ShardSpec]) -> list[ShardRecord]:
    """Write shards until none is left to claim; the records go back to the parent."""
    records = []
    while (spec := _claim(_WORKER["claimed"], todo)) is not None:
        records.append(write_shard(_WORKER["source"], Path(out), plan, spec, _WORKER["ticks"].put))
    return records


def write_shard(source: RowSource, out: Path, plan: SplitPlan, spec: ShardSpec,
                progress: Callable[[int], None] | None = None) -> ShardRecord:
    """Write one shard file (temp name, then rename) and its manifest record; return the record."""
    final = out / DATA_DIR / spec.name
    tmp = final.with_name(f".{spec.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    schema = parquet_schema()
    stats = SplitStats()
    arrow_bytes = 0
    indices = plan.source_indices(spec)
    rejected_before = dict(getattr(source, "rejections", {}))
    try:
        # Statistics on the JPEG column would put kilobytes of image bytes in every footer.
        with pq.ParquetWriter(tmp, schema, write_statistics=[n for n, _ in METADATA_COLUMNS]) as writer:
            for lo in range(0, len(indices), ROW_GROUP_SIZE):
                rows = [source(i) for i in indices[lo:lo + ROW_GROUP_SIZE]]
                for row in rows:
                    stats.add(row)
                table = _to_table(rows, schema, spec.name)
                arrow_bytes += table.nbytes
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
                if progress:
                    progress(len(rows))
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rejected = {k: v - rejected_before.get(k, 0) for k, v in getattr(source, "rejections", {}).items()}
    rec = ShardRecord(name=spec.name, split=spec.split, rows=spec.rows, bytes=final.stat().st_size,
                      sha256=_sha256(final), arrow_bytes=arrow_bytes, stats=stats,
                      rejections={k: v for k, v in sorted(rejected.items()) if v})
    atomic_write_text(out / MANIFEST_DIR / f"{spec.name}.json", json.dumps(rec.to_json(), sort_keys=True))
    return rec


def _to_table(rows: list[dict[str, Any]], schema: pa.Schema, where: str) -> pa.Table:
    expected = set(COLUMN_NAMES)
    for row in rows:
        if row.keys() != expected:
            missing, extra = sorted(expected - row.keys()), sorted(row.keys() - expected)
            raise ValueError(f"{where}: a row source returned wrong columns (missing {missing}, extra {extra})")
    columns = [pa.array([r[name] for r in rows], type=t) for name, t in METADATA_COLUMNS]
    image_type = schema.field(IMAGE_COLUMN).type
    # Struct from child arrays: ~10x faster than converting a list of {"bytes", "path"} dicts.
    columns.append(pa.StructArray.from_arrays(
        [pa.array([r[IMAGE_COLUMN]["bytes"] for r in rows], type=pa.binary()),
         pa.array([r[IMAGE_COLUMN]["path"] for r in rows], type=pa.string())],
        fields=list(image_type)))
    return pa.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------------------------------
# Small file helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a torn temporary file behind
        raise


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = [k for k in sorted(flat_old.keys() | flat_new.keys()) if flat_old.get(k) != flat_new.get(k)]
    return ", ".join(f"{k}={flat_old.get(k)!r} there, {flat_new.get(k)!r} now" for k in keys[:3])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

"""The Python API behind ``gen-samples``: configure a run, write it to a folder, or get a DatasetDict.

    from generator.api import GenerateConfig, generate, generate_to_dir

    generate_to_dir(GenerateConfig(rows=3040, seed=0), "out/catalogue")   # parquet shards + card
    dsd = generate(GenerateConfig(rows=64))                                 # in memory, for a notebook

A run directory is never left half-replaced: a fresh run writes shard by shard (each shard atomic and
recorded in a manifest, so ``resume=True`` finishes an interrupted run), and ``overwrite=True`` builds
the new run in a sibling folder and swaps it in only once it is complete. A run that clearly cannot fit
on its disk is refused before it starts; one that fills the disk anyway leaves the folder as it found it.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from generator import fingerprint, hub
from generator import taxonomy as taxonomy_mod
from generator.card import (CARD_FILENAME, CONTACT_SHEET_FILENAME, REPORT_HEADING, contact_sheet, png_bytes, render_card,
                            render_report_section)
from generator.catalog import Catalog, Product
from generator.privacy import GuardedSource, PrivacyError
from generator.report import REPORT_FILENAME, ReportError, card_figures, write_dataset_report
from generator.report import page as report_page  # HTML shell and section helpers, for other reports
from generator.report import svg as report_svg    # Figure and SVG charts: bar, histogram, box plot, treemap, ...
from generator.report.raster import png as figure_png
from generator.schema import IMAGE_COLUMN
from generator.taxonomy import Taxonomy
from generator.writer import (DATA_DIR, MANIFEST_DIR, RowSource, SplitPlan, WriteError, WriteResult,
                              atomic_write_bytes, atomic_write_text, plan_splits, read_run, verified_records,
                              write_shards)

if TYPE_CHECKING:
    import datasets
    from rich.console import Console

CONTACT_SHEET_ROWS = 24
MAX_ROWS = 10**10  # product codes and the split permutation are exact far beyond this
# Disk space: a refused run must clearly lack room. The estimate is calibrated on the renderer's own
# JPEGs (within ~20% at 32-512 px); an augmented source's photos compress differently, so its runs are
# refused only when even a much smaller need could not fit.
SPACE_REFUSE_BELOW = {"synthetic": 0.8, "source": 0.4}   # refuse when free < this share of the estimate
RUN_EXTRA_BYTES = 2 << 20                                 # card, contact sheet, reports and manifests


class GenerateError(ValueError):
    """Bad settings or an output folder that cannot be used; ``str(err)`` is one line with the fix."""


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that determines a generated dataset (``num_proc`` only changes how fast it is made)."""

    rows: int = 3040
    seed: int = 0
    image_size: int = 336
    test_fraction: float = 0.1
    taxonomy: str = "burberry_us"      # a built-in name or a path to a .toml file
    num_proc: int = 1
    rows_per_shard: int = 1000
    jpeg_quality: int = 90
    out: str | None = None             # default: out/<taxonomy>-<rows>rows-seed<seed>
    source: str | None = None          # a real catalogue to augment (table, folder, dataset id) instead of synthesis
    privacy: str = "standard"          # strict | standard | off: the guard's thresholds (see generator.privacy)

    def __post_init__(self) -> None:
        checks = [
            (_is_int(self.rows) and 1 <= self.rows <= MAX_ROWS, "rows", f"a whole number from 1 to {MAX_ROWS:,}"),
            (_is_int(self.seed) and 0 <= self.seed < 2**63, "seed", "a whole number >= 0"),
            (_is_int(self.image_size) and 32 <= self.image_size <= 2048, "image_size", "a whole number from 32 to 2048"),
            (isinstance(self.test_fraction, (int, float)) and not isinstance(self.test_fraction, bool)
             and 0 <= self.test_fraction < 1, "test_fraction", "a number from 0 to below 1, e.g. 0.1"),
            (_is_int(self.num_proc) and self.num_proc >= 1, "num_proc", "a whole number >= 1"),
            (_is_int(self.rows_per_shard) and self.rows_per_shard >= 1, "rows_per_shard", "a whole number >= 1"),
            (_is_int(self.jpeg_quality) and 1 <= self.jpeg_quality <= 95, "jpeg_quality", "a whole number from 1 to 95"),
        ]
        checks.append((self.privacy in ("strict", "standard", "off"), "privacy", "one of strict, standard, off"))
        for ok, name, expected in checks:
            if not ok:
                raise GenerateError(f"{name} must be {expected} (got {getattr(self, name)!r})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# The synthetic row source


class SyntheticRows:
    """Row ``index`` of a synthetic catalogue: the catalog's metadata plus its rendered JPEG.

    Picklable and cheap to send to a worker: the Catalog (and its Faker) is built on first use in
    each process.
    """

    def __init__(self, taxonomy: Taxonomy, seed: int, num_rows: int, image_size: int = 336, jpeg_quality: int = 90):
        self.taxonomy, self.seed, self.num_rows = taxonomy, seed, num_rows
        self.image_size, self.jpeg_quality = image_size, jpeg_quality
        self._catalog: Catalog | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_catalog": None}

    def __len__(self) -> int:
        return self.num_rows

    def product(self, index: int) -> Product:
        if self._catalog is None:
            self._catalog = Catalog(self.taxonomy, self.seed)
        return self._catalog.product(index)

    def __call__(self, index: int) -> dict[str, Any]:
        from generator import render  # the renderer is needed only where rows are made

        product = self.product(index)
        image = render.render(product.look, size=self.image_size, seed=product.render_seed)
        return {**product.row, IMAGE_COLUMN: {"bytes": render.encode_jpeg(image, quality=self.jpeg_quality),
                                              "path": None}}

    def describe(self) -> dict[str, Any]:
        tax = self.taxonomy
        return {
            "kind": "synthetic", "generator": "gen-samples", "version": _version(), "code": code_fingerprint(),
            "taxonomy": tax.name, "taxonomy_sha256": tax.sha256[:16], "seed": self.seed,
            "image_size": self.image_size, "jpeg_quality": self.jpeg_quality, "brand": tax.brand.brand,
            "country_code": tax.brand.country_code, "currency_code": tax.brand.currency_code,
            "pretty_name": tax.card.pretty_name, "license": tax.card.license, "description": tax.description,
        }


def _version() -> str:
    try:
        return metadata.version("vlm-catalog-kit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# The modules that decide a synthetic row's bytes (render: every module of the package).
ROW_MODULES = ("catalog", "permutation", "render", "taxonomy", "writer", "schema")


def code_fingerprint() -> str:
    """A hash of the modules that decide row bytes: a run only resumes or joins with the same code."""
    return fingerprint.code_fingerprint(*ROW_MODULES)


# --------------------------------------------------------------------------------------------------
# Writing a run


@dataclass
class RunReport:
    out: Path
    rows: int                     # rows of the whole dataset
    rows_written: int             # rows this call generated (skipped shards excluded)
    seconds: float                # the whole call: rows, card and contact sheet
    complete: bool                # all shards present: card and contact sheet written
    privacy_passed: bool = True   # the privacy report's verdict (True when the guard is off)
    source_summary: str | None = None   # what reading the source catalogue kept and skipped
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    shards_missing: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


def default_out(config: GenerateConfig, taxonomy_name: str | None = None) -> Path:
    name = taxonomy_name or Path(config.taxonomy).stem
    return Path("out") / f"{name}-{config.rows}rows-seed{config.seed}"


def generate_to_dir(config: GenerateConfig, out: str | os.PathLike | None = None, overwrite: bool = False,
                    resume: bool = False, shard: tuple[int, int] | None = None, *, push: bool | str = False,
                    private: bool = False) -> Path:
    """Write the dataset of ``config`` to ``out`` (parquet shards, README.md card, contact sheet).

    ``push``: then push the run to the Hugging Face Hub (:func:`push_dir`): ``True`` (or ``""``) to the
    default repo, or to the repo id given; ``private`` applies when the repo is created. Only a complete
    run is pushed, not one machine's ``shard`` of a fleet.
    """
    report = write_run(config, out, overwrite=overwrite, resume=resume, shard=shard, quiet=True)
    if push is False or push is None:
        return report.out
    if not report.complete:
        raise GenerateError("push needs a complete run; push once every shard is written")
    push_dir(report.out, push if isinstance(push, str) and push else None, private=private)
    return report.out


def push_dir(local_dir: str | os.PathLike, repo_id: str | None = None, *, private: bool = False,
             force: bool = False) -> str:
    """Push the run written to ``local_dir`` to the Hub dataset repo ``repo_id`` and return its URL.

    ``repo_id`` defaults to ``<your user>/<brand>-<country>-<rows>-rows`` (see :func:`generator.hub.push_dataset`).
    A folder that is not a complete run whose privacy report passed is refused (``hub.LocalRunError``,
    nothing sent) unless ``force``: then it is pushed with a warning at the top of its card. A failed push
    raises ``hub.PushError`` (one line, never the token); the local run stays as it was.
    """
    # force only when asked: callers of the three-argument push_dataset (and test doubles) keep working.
    return hub.push_dataset(str(local_dir), repo_id, private=private, **({"force": True} if force else {}))


def write_run(config: GenerateConfig, out: str | os.PathLike | None = None, *, overwrite: bool = False,
              resume: bool = False, shard: tuple[int, int] | None = None, quiet: bool = False,
              console: "Console | None" = None, source: RowSource | None = None,
              extra_sections: dict[str, str] | None = None) -> RunReport:
    """`generate_to_dir` with progress and a report. ``source`` replaces the synthetic rows (augmentation);
    ``shard=(i, n)`` writes only this machine's share of the shard files of one dataset.

    Fleet mode: each machine runs the same command with its ``--shard i/N``; the machine that finds
    every shard present (a shared folder) also writes the card. Otherwise gather the ``data/`` and
    ``.manifest/`` folders in one place and run the command once more without ``--shard`` and with
    ``--resume``: it verifies every shard against its manifest, writes nothing else, and adds the card.
    """
    _check_modes(overwrite=overwrite, resume=resume, shard=shard)
    t0 = time.perf_counter()
    tax = taxonomy_mod.load(config.taxonomy)
    out = Path(out) if out is not None else Path(config.out) if config.out else default_out(config, tax.name)
    source, catalog = _row_source(config, tax, source)
    plan = plan_splits(config.rows, config.test_fraction, config.rows_per_shard, config.seed)

    work = _prepare(out, overwrite=overwrite, resume=resume or shard is not None)
    mine = [s for k, s in enumerate(plan.shards) if shard is None or k % shard[1] == shard[0]]
    need = _check_space(out, work, sum(s.rows for s in mine if not (work / DATA_DIR / s.name).is_file()), config,
                        SPACE_REFUSE_BELOW["synthetic" if isinstance(source, SyntheticRows) else "source"])
    created = _make_dir(work)
    before = set(work.rglob("*"))  # what a resumed run already had: a full disk must not take it away
    from rich.console import Console

    console = console or Console(stderr=True)
    try:
        result, reports = _write(config, source, catalog, plan, work, out, shard=shard, quiet=quiet, console=console,
                                 extra_sections=extra_sections)
    except (WriteError, PrivacyError, OSError) as err:
        raise _write_failed(err, out, work, created, before, shard=shard, need=need) from None
    return RunReport(out=out, rows=config.rows,
                     rows_written=sum(result.records[n].rows for n in result.written),
                     seconds=time.perf_counter() - t0,
                     complete=result.complete, shards_written=result.written, shards_skipped=result.skipped,
                     shards_missing=len(plan.shards) - len(result.records),
                     # --privacy off: the report is written for the record, but the user waived its verdict
                     privacy_passed=(reports.privacy_passed or config.privacy == "off") if reports else True,
                     source_summary=catalog.report.summary() if catalog is not None else None)


def _check_modes(*, overwrite: bool, resume: bool, shard: tuple[int, int] | None) -> None:
    """Refuse, before any work, what --resume, --overwrite and --shard cannot do together."""
    if resume and overwrite:
        # Together they replaced a finished 300-row run by a 30-row one: one finishes a run, the other
        # replaces it, and guessing which was meant loses data either way.
        raise GenerateError("--resume and --overwrite cannot be combined: --resume finishes the run already in "
                            "--out, --overwrite replaces it with a new one; pass only one of them")
    if shard is not None:
        i, n = shard
        if not (_is_int(i) and _is_int(n) and n >= 1 and 0 <= i < n):
            raise GenerateError(f"shard must be i/N with 0 <= i < N (got {i}/{n})")
        if overwrite:
            raise GenerateError("--overwrite cannot be combined with --shard (it would replace the other machines' "
                                "shards); clear the folder once before starting the fleet")


def _row_source(config: GenerateConfig, tax: Taxonomy, source: RowSource | None):
    """The rows to write - ``source`` as given, the augmented rows of ``config.source``, or synthetic rows -
    and the source catalogue read for them (None for the others)."""
    if source is not None:
        if len(source) != config.rows:
            raise GenerateError(f"the row source has {len(source)} rows but rows={config.rows}; make them agree")
        return source, None
    if not config.source:
        return SyntheticRows(tax, config.seed, config.rows, config.image_size, config.jpeg_quality), None
    catalog = _load_source(config.source)
    from generator.augment import augmented_row_source

    try:
        return augmented_row_source(catalog, config.rows, config.seed, config.image_size,
                                    privacy=config.privacy), catalog
    except PrivacyError as err:  # e.g. a 1-row source: refused before anything is written
        raise GenerateError(f"--source {err}") from None


def _write(config: GenerateConfig, source: RowSource, catalog, plan: SplitPlan, work: Path, out: Path, *,
           shard: tuple[int, int] | None, quiet: bool, console: "Console", extra_sections: dict[str, str] | None):
    """This call's shards into ``work``; once every shard is there, the reports and the card, and the run
    swapped into ``out``. Returns the writer's result and the reports (None while shards are missing)."""
    with _progress(console, quiet) as bar:
        task = bar.add_task(f"writing {out}", total=None)
        result = write_shards(
            source, work, plan, num_proc=config.num_proc, shard=shard,
            on_start=lambda total, done: bar.update(task, total=total, completed=done),
            progress=lambda rows: bar.advance(task, rows))
    if not result.complete:  # a fleet machine: the report of the shards there so far (the last one writes it all)
        write_dataset_report(work, num_proc=config.num_proc)
        return result, None
    from generator.quality import write_reports

    # GuardedSource wraps the augmented rows; with --privacy off they come unwrapped.
    inner = source.source if isinstance(source, GuardedSource) else source
    reports = write_reports(work, level=config.privacy, source=catalog,
                            source_report=inner.report() if catalog is not None else None,
                            rejections=result.rejections(), num_proc=config.num_proc,
                            taxonomy=inner.taxonomy if isinstance(inner, SyntheticRows) else None)
    write_dataset_report(work, num_proc=config.num_proc)  # report.html and the card's figures
    report = {REPORT_HEADING: render_report_section(card_figures(work), REPORT_FILENAME)}
    write_card(work, result, extra_sections={**report, **reports.sections, **(extra_sections or {})})
    if work != out:
        _swap_in(work, out)
    return result, reports


def _write_failed(err: Exception, out: Path, work: Path, created: Path | None, before: set[Path], *,
                  shard: tuple[int, int] | None, need: str) -> GenerateError:
    """The one-line error for a run that failed while writing, once the disk is left as this call found it
    (a fleet machine keeps its finished shards: the other machines share the folder)."""
    if isinstance(err, (WriteError, PrivacyError)):
        if shard is None:  # bad input found mid-run (the guard gave up on a row): nothing of this call stays
            _roll_back(work, created, before)
        return GenerateError(str(err))
    if not _is_disk_full(err):
        if shard is None:  # a write that failed otherwise: as on a full disk, nothing of this call stays
            _roll_back(work, created, before)
        return GenerateError(f"cannot write to {work}: {err.strerror or err}; choose another --out")
    if shard is not None:  # a fleet shares the folder: only this machine's temporary files went
        kept = "this machine's finished shards are kept (run the same command again once there is room)"
    else:
        _roll_back(work, created, before)
        kept = "nothing of this run was kept"
    return GenerateError(f"the disk filled up while writing --out {out} ({err.strerror or err}): {need}; "
                         f"{kept}; free some space or choose another --out")


def _load_source(ref: str):
    from generator.sources import SourceError, load_source

    try:
        return load_source(ref)
    except SourceError as err:
        raise GenerateError(f"--source {err}") from None


def write_card(out: Path, result: WriteResult, extra_sections: dict[str, str] | None = None) -> Path:
    """README.md and contact_sheet.png of a complete run, from its manifests and first training rows."""
    params = read_run(out) or {}
    first = out / DATA_DIR / next(s.name for s in result.plan.shards)
    rows = pq.ParquetFile(first).iter_batches(batch_size=CONTACT_SHEET_ROWS,
                                              columns=["category2_code", "category3_code", "full_price", IMAGE_COLUMN])
    sample = next(rows).to_pylist()
    atomic_write_bytes(out / CONTACT_SHEET_FILENAME, png_bytes(contact_sheet(sample)))
    text = render_card(result.split_stats(), params, sizes=result.split_bytes(), extra_sections=extra_sections)
    atomic_write_text(out / CARD_FILENAME, text)
    return out / CARD_FILENAME


def _prepare(out: Path, *, overwrite: bool, resume: bool) -> Path:
    """Check ``out`` before anything is written; return the folder to write into (not created yet)."""
    probe = _existing_ancestor(out)
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == out else f"is inside a file ({probe})"
        raise GenerateError(f"--out {out} {what}; choose a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GenerateError(f"--out {out} is not writable ({probe} is read-only to you); choose another folder")

    ours = out.is_dir() and (out / MANIFEST_DIR / "run.json").is_file()
    non_empty = out.is_dir() and any(out.iterdir())
    if overwrite:
        # --overwrite renames --out away once the new run is done: that fails (EBUSY) for the folder
        # we stand in, one holding it or a mount point, after the whole run. Say so before starting.
        here, target = Path.cwd().resolve(), out.resolve()
        if target == here or target in here.parents:
            raise GenerateError(f"--out {out} is the current folder or holds it, and --overwrite would replace it; "
                                "choose a folder below the current one, or cd out of it first")
        if os.path.ismount(target):
            raise GenerateError(f"--out {out} is a mount point, which --overwrite cannot replace; "
                                "choose a folder inside it")
    if overwrite and non_empty:
        target = Path(os.path.abspath(out))  # `a/..` names no sibling; its absolute form does
        work = target.parent / f".{target.name}.incoming"
        if work.exists():
            shutil.rmtree(work)  # our own unfinished replacement from an earlier --overwrite
        return work
    if non_empty and not resume:
        if ours:
            raise GenerateError(f"--out {out} already holds a gen-samples run; add --resume to finish or check it, "
                                "--overwrite to replace it, or choose another folder")
        raise GenerateError(f"--out {out} is not empty; choose an empty or new folder, or pass --overwrite to replace it")
    if non_empty and resume and not ours:
        raise GenerateError(f"--out {out} holds no gen-samples run to resume; choose its run folder or an empty one")
    return out


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where a new folder would go)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _make_dir(work: Path) -> Path | None:
    """Create ``work``; return the top-most folder this made (None if it existed), to remove on a full disk."""
    top = None if work.is_dir() else work
    while top is not None and not top.parent.exists():
        top = top.parent
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if top is not None:  # the parents made before the last one failed (a name too long): nothing written
            shutil.rmtree(top, ignore_errors=True)
        raise GenerateError(f"cannot create --out {work}: {err.strerror or err}; choose another folder") from None
    return top


def _swap_in(work: Path, out: Path) -> None:
    """Replace ``out`` by the complete run in ``work``: two renames, then the old run is deleted."""
    out = Path(os.path.abspath(out))
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        os.replace(out, old)
    except OSError as err:  # said here: write_run would take an OSError for a failed write
        raise GenerateError(f"cannot replace --out {out} ({err.strerror or err}); the new run is complete in "
                            f"{work}: move it into place yourself") from None
    os.replace(work, out)  # cannot fail once the first rename worked: same folder, name now free
    shutil.rmtree(old, ignore_errors=True)


def estimated_bytes(rows: int, image_size: int, jpeg_quality: int = 90) -> int:
    """Disk space for ``rows`` rows, from rows x image size: the renderer's JPEGs grow with the side ^ 1.5
    and with the quality (within ~20% at 32-512 px); plus the card, contact sheet, reports and manifests."""
    quality = 0.2 + 0.8 * (jpeg_quality / 90) ** 2
    return int(rows * (100 + 2.8 * image_size ** 1.5 * quality)) + RUN_EXTRA_BYTES


def _check_space(out: Path, work: Path, rows: int, config: GenerateConfig, refuse_below: float) -> str:
    """Refuse, before anything is written, a run that clearly cannot fit; return what it needs (for the
    message should the disk fill up anyway)."""
    needed = estimated_bytes(rows, config.image_size, config.jpeg_quality)
    need = f"this run needs about {_size(needed)} ({rows:,} rows at {config.image_size}x{config.image_size} px)"
    try:
        free = shutil.disk_usage(_existing_ancestor(work)).free
    except OSError:
        return need  # a file system that does not say: the run will tell
    if rows and free < refuse_below * needed:
        raise GenerateError(f"not enough disk space for --out {out}: {need}, only {_size(free)} free there; "
                            "free some space or choose another --out")
    return f"{need} and {_size(free)} were free when it started"


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err)


def _roll_back(work: Path, created: Path | None, before: set[Path]) -> None:
    """Leave the disk as this call found it: no shard without a card, no empty data/, no temporary files.
    What a resumed run already had stays."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for path in sorted(work.rglob("*"), reverse=True):  # a folder's files come before it
        if path not in before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _progress(console: "Console", quiet: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    disable=quiet or not console.is_terminal, transient=False)


# --------------------------------------------------------------------------------------------------
# In memory


def generate(config: GenerateConfig) -> "datasets.DatasetDict":
    """The dataset of ``config`` as an in-memory ``datasets.DatasetDict`` (for notebooks and small runs).

    It is written to a temporary folder with the same code path as ``gen-samples`` and read back into
    memory, so it is row for row the dataset ``generate_to_dir`` writes; the folder is then removed.
    """
    import datasets
    import pyarrow as pa

    from generator.schema import features

    with tempfile.TemporaryDirectory(prefix="gen-samples-") as tmp:
        out = Path(tmp) / "run"
        write_run(config, out, quiet=True)
        splits = {}
        for split in ("train", "test"):
            files = sorted((out / DATA_DIR).glob(f"{split}-*.parquet"))
            if files:
                table = pa.concat_tables(pq.read_table(f) for f in files)
                splits[split] = datasets.Dataset(datasets.table.InMemoryTable(table),
                                                 info=datasets.DatasetInfo(features=features()),
                                                 split=datasets.NamedSplit(split))
        return datasets.DatasetDict(splits)


def image_of(row: dict[str, Any]):
    """The PIL image of a raw row (``{"bytes", "path"}`` struct), for quick looks in a notebook."""
    from PIL import Image

    return Image.open(io.BytesIO(row[IMAGE_COLUMN]["bytes"]))

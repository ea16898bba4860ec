"""Generation benchmarks: each step of a synthetic row, the whole writer at 1 and N workers, and the
``gen-samples`` command as a user runs it.

* ``metadata``: ``Catalog.product(i)`` - taxonomy draws, Faker text, price, the look to draw;
* ``render``: ``render.render(look, 336, seed)`` - the product photo;
* ``jpeg``: ``render.encode_jpeg(image, 90)`` - the bytes that go into parquet;
* ``privacy report``: ``privacy_report`` over a finished run's shards, as ``write_run`` makes it for
  every dataset (no source: PII and near-duplicate images), at the command's row count;
* ``end-to-end``: ``write_run`` (rows, parquet shards, manifests, privacy report, card, contact sheet) at 1 worker
  and at N (every core, at least 2) with the same rows per worker, so the N-worker round should take
  as long as the 1-worker one when it scales; ``scaling_efficiency`` is rows/s at N over N x rows/s
  at 1, both measured in this session;
* ``gen-samples``: the command itself in a subprocess (interpreter start and imports included), at the
  product's default ``--rows 3040`` when measuring, against the target of under 5 s.

Each round makes rows it has not made before (the next block of indices), after a warm-up round:
the renderer's caches are as warm as in the middle of a long run, but no row is served from them.
The end-to-end and command benchmarks also record the peak memory of the whole process tree
(workers included) over one more round after the timed ones.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import measure

IMAGE_SIZE = 336
JPEG_QUALITY = 90
TAXONOMY = "burberry_us"
SEED = 0
CLI_TARGET_S = 5.0
DEFAULT_ROWS = 3040  # gen-samples' default --rows


def _record(benchmark, kind: str, series: str, figures: dict, unit: str, **extra) -> None:
    measure.record(benchmark, kind=kind, series=series, device="cpu",
                   headline_=measure.headline(f"{unit}/s", figures[f"{unit}_per_s"], f"{unit}/s"),
                   **figures, **extra)




@pytest.fixture(scope="module")
def taxonomy():
    from generator import taxonomy as taxonomy_mod

    return taxonomy_mod.load(TAXONOMY)


def _products(taxonomy, indices):
    from generator.catalog import Catalog

    catalog = Catalog(taxonomy, SEED)
    return [catalog.product(i) for i in indices]


# --------------------------------------------------------------------------------------------
# The steps of one row, in this process


@pytest.mark.benchmark(group="generate-steps")
def test_metadata_step(benchmark, taxonomy, scale):
    from generator.catalog import Catalog

    t0 = time.perf_counter()
    catalog = Catalog(taxonomy, SEED)  # once per process: Faker and the weighted tables
    setup_s = time.perf_counter() - t0
    blocks = measure.Blocks(scale.metadata_rows)

    def one_round() -> int:
        for i in blocks.take():
            catalog.product(i)
        return scale.metadata_rows

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    figures = measure.rate_figures(rounds, "rows")
    _record(benchmark, "generate_step", "metadata", figures, "rows", step="taxonomy + metadata (Catalog.product)",
            taxonomy=TAXONOMY, catalog_setup_s=round(setup_s, 4))
    assert figures["rows_per_s"] > 0


@pytest.mark.benchmark(group="generate-steps")
def test_render_step(benchmark, taxonomy, scale):
    from generator import render

    n = scale.render_rows
    products = _products(taxonomy, range((scale.warmup + scale.rounds) * n))  # metadata made untimed
    blocks = measure.Blocks(n)

    def one_round() -> int:
        for i in blocks.take():
            p = products[i]
            render.render(p.look, size=IMAGE_SIZE, seed=p.render_seed)
        return n

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    figures = measure.rate_figures(rounds, "rows")
    _record(benchmark, "generate_step", "render", figures, "rows", step="render.render", image_size=IMAGE_SIZE)
    assert figures["rows_per_s"] > 0


@pytest.mark.benchmark(group="generate-steps")
def test_jpeg_step(benchmark, taxonomy, scale):
    from generator import render

    n = scale.render_rows
    products = _products(taxonomy, range((scale.warmup + scale.rounds) * n))
    images = [render.render(p.look, size=IMAGE_SIZE, seed=p.render_seed) for p in products]
    blocks = measure.Blocks(n)
    sizes: list[int] = []

    def one_round() -> int:
        for i in blocks.take():
            sizes.append(len(render.encode_jpeg(images[i], quality=JPEG_QUALITY)))
        return n

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    figures = measure.rate_figures(rounds, "rows")
    _record(benchmark, "generate_step", "jpeg", figures, "rows", step="render.encode_jpeg", image_size=IMAGE_SIZE,
            jpeg_quality=JPEG_QUALITY, jpeg_kib_mean=round(sum(sizes) / len(sizes) / 1024, 2))
    assert figures["rows_per_s"] > 0


@pytest.mark.benchmark(group="generate-steps")
def test_privacy_report_step(benchmark, workdir, scale):
    """The report every finished run now gets (PII, pHash near-duplicates), over the default command's rows."""
    from generator.api import GenerateConfig, write_run
    from generator.privacy import privacy_report

    config = GenerateConfig(rows=scale.cli_rows, seed=SEED, image_size=IMAGE_SIZE, taxonomy=TAXONOMY, privacy="off")
    out = workdir / "privacy-report-rows"
    if not out.is_dir():
        write_run(config, out, quiet=True)
    level = GenerateConfig().privacy

    def one_round() -> int:
        return privacy_report(out / "data", None, level)["rows"]

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    figures = measure.rate_figures(rounds, "rows")
    _record(benchmark, "generate_step", "privacy report", figures, "rows",
            step=f"privacy_report(run/data, source=None, level={level!r}), one process", level=level,
            rows=scale.cli_rows, seconds_per_run=rounds.median, image_size=IMAGE_SIZE)
    assert figures["rows_per_s"] > 0


# --------------------------------------------------------------------------------------------
# End to end: write_run with worker processes


class _Runs:
    """A fresh output folder per round (write_run refuses a non-empty one); the last is removed."""

    def __init__(self, root: Path):
        self.root, self.count, self.current = root, 0, None

    def next(self) -> Path:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
        self.count += 1
        self.current = self.root / f"run-{self.count}"
        return self.current

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _e2e_config(rows_per_worker: int, workers: int):
    from generator.api import GenerateConfig

    rows = rows_per_worker * workers
    # Shards are the unit of work a worker claims: several per worker keep them all busy to the end.
    return GenerateConfig(rows=rows, seed=SEED, image_size=IMAGE_SIZE, num_proc=workers,
                          rows_per_shard=max(1, rows_per_worker // 4), taxonomy=TAXONOMY)


def measure_e2e(benchmark, workdir: Path, rows_per_worker: int, workers: int, rounds: int, warmup: int) -> dict:
    from generator.api import write_run

    config = _e2e_config(rows_per_worker, workers)
    runs = _Runs(workdir / f"e2e-w{workers}-{time.monotonic_ns()}")
    out: dict[str, Path] = {}

    def setup() -> None:
        out["dir"] = runs.next()

    def one_round() -> int:
        report = write_run(config, out["dir"], quiet=True)
        assert report.complete and report.rows_written == config.rows
        return report.rows_written

    try:
        rounds_ = measure.run_rounds(benchmark, one_round, rounds=rounds, warmup_rounds=warmup, setup=setup)
        shards = len(list((out["dir"] / "data").glob("*.parquet")))
        peak, kind = measure.peak_tree_memory(one_round, setup)
    finally:
        runs.close()
    return {**measure.rate_figures(rounds_, "rows"), "workers": workers, "rows_per_worker": rows_per_worker,
            "rows": config.rows, "rows_per_shard": config.rows_per_shard, "shards": shards,
            "image_size": IMAGE_SIZE, "peak_memory_gib": peak, "memory_kind": kind}


@pytest.mark.benchmark(group="generate-e2e")
@pytest.mark.parametrize("workers", ["1", "N"], ids=["workers1", "workersN"])
def test_generate_e2e(benchmark, workers, cpu_workers, workdir, scale, baselines):
    n = 1 if workers == "1" else cpu_workers
    figures = measure_e2e(benchmark, workdir, scale.e2e_rows_per_worker, n, scale.rounds, scale.warmup)
    key = ("generate_e2e", n, scale.e2e_rows_per_worker)
    baselines.put(key, figures)
    comparisons, extra = [], {}
    if n > 1:
        one = baselines.get(("generate_e2e", 1, scale.e2e_rows_per_worker), lambda: measure_e2e(
            measure.PlainTimer(), workdir, scale.e2e_rows_per_worker, 1, scale.rounds, scale.warmup))
        efficiency = measure.scaling_efficiency(figures["rows_per_s"], one["rows_per_s"], n)
        extra = {"rows_per_s_1_worker": one["rows_per_s"], "speedup": figures["rows_per_s"] / one["rows_per_s"],
                 "scaling_efficiency": efficiency}
        comparisons = [measure.compare("rows/s", figures["rows_per_s"], "rows/s", "1 worker", one["rows_per_s"]),
                       measure.compare("scaling efficiency", efficiency, "", "linear", 1.0)]
    _record(benchmark, "generate_e2e", f"write_run x{n}", figures, "rows", comparisons=comparisons, **extra)
    assert figures["rows_per_s"] > 0


# --------------------------------------------------------------------------------------------
# The command a user runs


def _gen_samples() -> list[str]:
    script = Path(sys.executable).with_name("gen-samples")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "generator"]


@pytest.mark.benchmark(group="generate-cli")
@pytest.mark.parametrize("num_proc", ["1", "N"], ids=["num_proc1", "num_procN"])
def test_gen_samples_cli(benchmark, num_proc, cpu_workers, workdir, scale):
    n = 1 if num_proc == "1" else cpu_workers
    args = ["--rows", str(scale.cli_rows), "--quiet", "--num-proc", str(n)]
    runs = _Runs(workdir / f"cli-{num_proc}")
    out: dict[str, Path] = {}

    def setup() -> None:
        out["dir"] = runs.next()

    def one_round() -> int:
        done = subprocess.run([*_gen_samples(), *args, "--out", str(out["dir"])], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        assert done.returncode == 0, f"gen-samples exited {done.returncode}: {done.stderr[-2000:]}"
        return scale.cli_rows

    try:
        rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup,
                                    setup=setup)
        assert (out["dir"] / "README.md").is_file()
        peak, kind = measure.peak_tree_memory(one_round, setup)
    finally:
        runs.close()
    seconds = rounds.median
    figures = {**measure.rate_figures(rounds, "rows"), "seconds": seconds, "seconds_min": min(rounds.seconds),
               "num_proc": n, "rows": scale.cli_rows, "command": " ".join(["gen-samples", *args]),
               "includes": "interpreter start, imports, rows, parquet, privacy report, card and contact sheet",
               "peak_memory_gib": peak, "memory_kind": kind}
    comparisons = []
    if scale.cli_rows == DEFAULT_ROWS:
        figures.update(target_s=CLI_TARGET_S, meets_target=seconds < CLI_TARGET_S)
        comparisons = [measure.compare(f"gen-samples --rows {DEFAULT_ROWS}", seconds, "s", "target",
                                       CLI_TARGET_S, higher_is_better=False)]
    measure.record(benchmark, kind="generate_cli", series=f"gen-samples x{n}", device="cpu",
                   headline_=measure.headline(f"gen-samples --rows {scale.cli_rows}", seconds, "s"),
                   comparisons=comparisons, **figures)
    assert seconds > 0

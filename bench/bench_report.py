"""Report benchmark: ``write_dataset_report(folder)``, the ``report.html`` (and the card's ``report_*.png``)
that every finished ``gen-samples`` run gets, rebuilt over a catalogue generated once.

The catalogue has the product's default ``--rows 3040`` at the default 336 px when measuring (a handful of rows
in smoke mode); each round rebuilds the whole page in one process (``num_proc=1``): reading the shards,
the charts, the gallery's thumbnail sheets. The figure is seconds per 1,000 rows; the page's size goes
with it. Past ``GALLERY_MAX`` rows the gallery stops growing, so per-row time falls for bigger datasets.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import measure

IMAGE_SIZE = 336
SEED = 0


@pytest.fixture(scope="module")
def report_catalog(workdir, scale) -> Path:
    from generator.api import GenerateConfig, write_run

    out = workdir / "report-catalog"
    if not out.is_dir():
        write_run(GenerateConfig(rows=scale.cli_rows, seed=SEED, image_size=IMAGE_SIZE), out, quiet=True)
    return out


@pytest.mark.benchmark(group="report")
def test_dataset_report_build(benchmark, report_catalog, scale):
    from generator.api import write_dataset_report

    def one_round() -> int:
        write_dataset_report(report_catalog)
        return scale.cli_rows

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    figures = measure.rate_figures(rounds, "rows")
    per_1000 = 1000 * rounds.median / scale.cli_rows
    page = report_catalog / "report.html"
    measure.record(benchmark, kind="report", series="dataset report", device="cpu",
                   headline_=measure.headline("s / 1,000 rows", per_1000, "s"),
                   step="write_dataset_report(folder), one process", rows=scale.cli_rows,
                   image_size=IMAGE_SIZE, seconds_per_run=rounds.median, seconds_per_1000_rows=per_1000,
                   page_bytes=page.stat().st_size, page_mb=round(page.stat().st_size / 1e6, 3), **figures)
    assert per_1000 > 0 and page.stat().st_size > 0

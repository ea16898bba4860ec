"""Augmentation and privacy benchmarks, over the shipped real-schema catalogue (samples/source_catalog).

* ``augment``: ``AugmentedSource(source)(i)`` - pick a source row, transform its image (crop, flip,
  rotation, colour jitter, backdrop, JPEG), redraw price and title, replace every identifier;
* ``privacy guard``: ``PrivacyGuard(source, "strict").check(row)`` on augmented rows made beforehand -
  identifiers, PII, exact copies, metadata and image distance to the closest source record;
* ``guarded``: what ``gen-samples --source`` writes per row, ``augmented_row_source(..., privacy="strict")``:
  both of the above, plus the attempts the guard rejects and has remade.

Set-up costs paid once per process (fitting the title and price models, hashing the source's images
and its nearest-neighbour baseline) are recorded beside the rates, not inside them. Each round takes
the next block of indices; a source image is decoded the first time a row uses it (one pass over the
catalogue decodes each once), which is what a run of about the source's size pays too.
"""
from __future__ import annotations

import time

import pytest

from bench import measure

IMAGE_SIZE = 336
SEED = 0
LEVEL = "strict"


def _source_info(source) -> dict:
    return {"source": str(source.origin), "source_rows": len(source), "source_rows_read": len(source.all_rows()),
            "image_size": IMAGE_SIZE}


def _record(benchmark, series: str, figures: dict, **extra) -> None:
    measure.record(benchmark, kind="augment", series=series, device="cpu",
                   headline_=measure.headline("rows/s", figures["rows_per_s"], "rows/s"), **figures, **extra)


def _total_rows(scale) -> int:
    return (scale.warmup + scale.rounds) * scale.augment_rows


def _rows_per_s(benchmark, scale, per_row) -> dict:
    """Rounds that each call ``per_row(i)`` over the next block of indices; rows/s figures."""
    blocks = measure.Blocks(scale.augment_rows)

    def one_round() -> int:
        for i in blocks.take():
            per_row(i)
        return scale.augment_rows

    rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
    return measure.rate_figures(rounds, "rows")


@pytest.mark.benchmark(group="augment")
def test_augment(benchmark, source_catalog, scale):
    from generator.augment import AugmentedSource

    t0 = time.perf_counter()
    augmented = AugmentedSource(source_catalog, SEED, IMAGE_SIZE, rows=_total_rows(scale))
    setup_s = time.perf_counter() - t0
    with measure.PeakRSS() as mem:
        figures = _rows_per_s(benchmark, scale, augmented)
    _record(benchmark, "augment", figures, step="AugmentedSource(i), no privacy guard", setup_s=round(setup_s, 4),
            templates=len(augmented.eligible), peak_memory_gib=round(mem.gib, 3), memory_kind=mem.kind,
            **_source_info(source_catalog))
    assert figures["rows_per_s"] > 0


@pytest.mark.benchmark(group="augment")
def test_privacy_guard(benchmark, source_catalog, scale):
    from generator.augment import AugmentedSource
    from generator.privacy import PrivacyGuard

    augmented = AugmentedSource(source_catalog, SEED, IMAGE_SIZE, rows=_total_rows(scale))
    rows = [augmented(i) for i in range(_total_rows(scale))]
    t0 = time.perf_counter()
    guard = PrivacyGuard(source_catalog, LEVEL)
    setup_s = time.perf_counter() - t0
    reasons: list[str | None] = []
    figures = _rows_per_s(benchmark, scale, lambda i: reasons.append(guard.check(rows[i])))
    rejected = sum(r is not None for r in reasons)
    _record(benchmark, "privacy guard", figures, step=f"PrivacyGuard(source, {LEVEL!r}).check(row)", level=LEVEL,
            guard_setup_s=round(setup_s, 4), rejection_rate=rejected / len(reasons), **_source_info(source_catalog))
    assert figures["rows_per_s"] > 0


@pytest.mark.benchmark(group="augment")
def test_guarded_augment(benchmark, source_catalog, scale):
    from generator.augment import augmented_row_source

    t0 = time.perf_counter()
    guarded = augmented_row_source(source_catalog, _total_rows(scale), SEED, IMAGE_SIZE, privacy=LEVEL)
    setup_s = time.perf_counter() - t0
    figures = _rows_per_s(benchmark, scale, guarded)
    attempts_rejected = sum(guarded.rejections.values())
    _record(benchmark, "augment + privacy guard", figures, step=f"augmented_row_source(privacy={LEVEL!r})(i)",
            level=LEVEL, setup_s=round(setup_s, 4), attempts_rejected=attempts_rejected,
            rejections=dict(guarded.rejections), **_source_info(source_catalog))
    assert figures["rows_per_s"] > 0

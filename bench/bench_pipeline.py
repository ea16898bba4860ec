"""Data pipeline benchmark: training samples/s from parquet to a collated batch, no model step.

What a training step waits for: ``RowsDataset`` reads a batch of rows (Arrow, from the parquet the
generator wrote), ``Collator`` decodes each JPEG, runs the ``tiny`` model's processor (resize,
normalise, image-token expansion) and the tokenizer, pads and stacks - inside ``make_loader``'s
DataLoader with the length-grouped sampler, at ``num_workers`` 0 (all in this process) and 2 (the
default of ``run-finetune``). Worker start-up is paid before the timed rounds, as a training run pays
it once. One round = ``pipeline_batches`` batches of ``FinetuneConfig().batch_size`` rows.

Memory is the process tree's (the loader's worker processes included), over one more round after
the timed ones.
"""
from __future__ import annotations

import time

import pytest

from bench import measure
from bench.ours import Forever

MODEL = "tiny"
WORKERS = (0, 2)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    import torch

    from finetune.builtins import build_builtin

    return build_builtin(MODEL, tokenizer, device="cpu", dtype=torch.float32)


@pytest.mark.benchmark(group="pipeline")
@pytest.mark.parametrize("num_workers", WORKERS, ids=[f"workers{w}" for w in WORKERS])
def test_data_pipeline(benchmark, num_workers, tiny, splits, scale):
    from finetune.config import FinetuneConfig
    from finetune.data import (INDEX_KEY, Collator, LengthGroupedBatchSampler, answer_lengths, build_prompt,
                               make_loader)

    config = FinetuneConfig(model=MODEL).validate()
    train = splits["train"]
    collator = Collator(tiny.processor, build_prompt(tiny, config.question), tiny.end_token, train=True)
    lengths = answer_lengths(train, tiny.tokenizer, tiny.end_token)
    sampler = Forever(LengthGroupedBatchSampler(lengths, config.batch_size, seed=config.seed), config.batch_size)
    loader = make_loader(train, collator, batch_sampler=sampler, num_workers=num_workers, seed=config.seed)
    widths: list[int] = []

    t0 = time.perf_counter()
    batches = iter(loader)
    next(batches)  # workers started and prefetching, as after a run's first step
    startup_s = time.perf_counter() - t0

    def one_round() -> int:
        samples = 0
        for _ in range(scale.pipeline_batches):
            batch = next(batches)
            samples += len(batch[INDEX_KEY])
            widths.append(batch["input_ids"].shape[1])
        return samples

    try:
        rounds = measure.run_rounds(benchmark, one_round, rounds=scale.rounds, warmup_rounds=scale.warmup)
        peak, kind = measure.peak_tree_memory(one_round)
    finally:
        del batches, loader  # ends the worker processes now
    figures = measure.rate_figures(rounds, "samples")
    image = tiny.processor.image_processor
    measure.record(benchmark, kind="pipeline", series=f"num_workers {num_workers}", device="cpu",
                   headline_=measure.headline("samples/s", figures["samples_per_s"], "samples/s"),
                   **figures, num_workers=num_workers, batch_size=config.batch_size, model=MODEL,
                   train_rows=len(train), startup_s=round(startup_s, 4),
                   source_image_size=_image_side(train), model_image_size=_model_side(image),
                   mean_width_tokens=sum(widths) / len(widths), peak_memory_gib=peak, memory_kind=kind,
                   stages="Arrow rows -> JPEG decode -> processor (resize, normalise) + tokenizer -> pad, stack")
    assert figures["samples_per_s"] > 0


def _image_side(ds) -> int | None:
    import io

    from PIL import Image

    value = ds[0]["image"]
    try:
        return Image.open(io.BytesIO(value["bytes"])).size[0]
    except Exception:  # noqa: BLE001 - only a label for the report
        return None


def _model_side(image_processor) -> int | None:
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    if isinstance(size, int):
        return size
    # A dict in older transformers, a SizeDict (attributes, not JSON-able) in newer ones.
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if isinstance(value, int):
            return value
    return None

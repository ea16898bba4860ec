"""Training-step benchmarks: our recipe, the public recipe (reference) and TRL (peer), side by side.

CPU: the ``tiny`` model - the public recipe, TRL (when installed) and our LoRA step at batch 16.
CUDA (skipped without a GPU, and in a plain ``pytest`` run): ``phi3v-shape`` in bf16 - the public
recipe at batch 1, TRL's SFTTrainer at batch 8 and 16, our LoRA step at batch 8 and 16 with no
speed levers, the speed presets of ``finetune.speed`` (fast, low-memory), and full fine-tuning at
batch 8 under the fast preset's levers.

One round = one optimizer step (see bench/ours.py, bench/reference.py, bench/peers.py for what a
step holds). Figures in ``extra_info``: samples/s, tokens/s, median step time, peak memory (CUDA
``max_memory_allocated``, or the process's RSS on CPU), MFU with its FLOP formula
(bench/measure.py), the settings, and for ours the ratios to the reference and to TRL measured in
the same session. The reference runs first in this module; when it was deselected (``-k``), a
benchmark that needs its figures measures it once, untimed by pytest-benchmark.

The GPU suite (``pytest bench --benchmark-only -k cuda``) takes about 4 minutes on an H200, a third
of it ``torch.compile`` of the presets (made in an untimed warm-up; no graph is made in the timed rounds).
"""
from __future__ import annotations

import pytest

from bench import measure
from bench.ours import LoopStep, settings

CPU_MODEL = "tiny"
GPU_MODEL = "phi3v-shape"
GPU_BATCH_SIZES = (8, 16)
PRESETS = ("fast", "low-memory")


def _config(model: str, **overrides):
    from finetune.config import FinetuneConfig

    overrides.setdefault("method", "lora")  # every contender here is a LoRA recipe
    return FinetuneConfig(model=model, no_wandb=True, **overrides).validate()


def _build(model: str, tokenizer, device: str):
    import torch

    from finetune.builtins import build_builtin

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return build_builtin(model, tokenizer, device=device, dtype=dtype)


def _memory(device: str, rss: measure.PeakRSS) -> tuple[float, str]:
    if device.startswith("cuda"):
        return measure.cuda_peak_gib(device), "cuda_max_allocated"
    return rss.gib, "process_rss"


# --------------------------------------------------------------------------------------------
# The three contenders, each measured the same way


def measure_reference(benchmark, model: str, tokenizer, splits, device: str, rounds: int, warmup: int) -> dict:
    from bench.reference import run_reference

    result = run_reference(model, tokenizer, splits["train"], steps=rounds, warmup=warmup, device=device,
                           benchmark=benchmark)
    return result.figures


def measure_trl(benchmark, model: str, tokenizer, splits, device: str, batch_size: int, rounds: int,
                warmup: int) -> dict:
    from bench.peers import SETTINGS, TrlSteps

    loaded = _build(model, tokenizer, device)
    config = _config(model, batch_size=batch_size)
    steps = TrlSteps(loaded, splits["train"], config, device=device, max_steps=warmup + rounds + 2)
    flops = steps.flops
    del loaded
    try:
        steps.start()  # TRL's set-up and first step, untimed
        if device.startswith("cuda"):
            measure.reset_cuda_peak(device)
        with measure.PeakRSS() as rss:
            rounds_ = measure.run_rounds(benchmark, steps, rounds=rounds, warmup_rounds=warmup)
        peak, kind = _memory(device, rss)
    finally:
        steps.close()
        del steps
        measure.free_cuda()
    figures = measure.train_figures(rounds_, flops=flops, device=device, peak_memory_gib=peak, memory_kind=kind)
    return {**figures, **SETTINGS, "series": "TRL SFTTrainer", "model": model, "batch_size": batch_size,
            "num_workers": config.loader_workers(device.startswith("cuda")), "lora_r": config.lora_r}


def measure_ours(benchmark, model: str, tokenizer, splits, device: str, config, rounds: int, warmup: int,
                 speed=None) -> dict:
    loaded = _build(model, tokenizer, device)
    # On a GPU a round is the loop's steps between two log lines and one synchronize, as the loop
    # reads the loss (a host sync) only to log.
    step = LoopStep(loaded, splits, config, device=device, speed=speed,
                    steps_per_call=config.log_every if device.startswith("cuda") else 1)
    del loaded
    try:
        if speed is not None and speed.compile_layers:
            _prewarm(step)
        if device.startswith("cuda"):
            measure.reset_cuda_peak(device)
        with measure.PeakRSS() as rss:
            rounds_ = measure.run_rounds(benchmark, step, rounds=rounds, warmup_rounds=warmup)
        peak, kind = _memory(device, rss)
        flops = step.flops
    finally:
        step.close()
        del step
        measure.free_cuda()
    figures = measure.train_figures(rounds_, flops=flops, device=device, peak_memory_gib=peak, memory_kind=kind)
    return {**figures, **settings(config, speed)}


def _prewarm(step, max_steps: int = 6) -> None:
    """Compile before timing: run steps until one makes no new graph, so that no compilation lands
    in the timed rounds (the first step makes them all when the presets' levers work as meant)."""
    import torch._dynamo

    for _ in range(max_steps):
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        step()
        if torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs:
            return


def _ratios(ours: dict, reference: dict | None, trl: dict | None) -> list[dict]:
    rows = []
    if reference is not None:
        rows += [measure.compare("samples/s", ours["samples_per_s"], "samples/s", "public recipe",
                                 reference["samples_per_s"]),
                 measure.compare("peak memory", ours["peak_memory_gib"], "GiB", "public recipe",
                                 reference["peak_memory_gib"], higher_is_better=False)]
    if trl is not None:
        rows += [measure.compare("samples/s", ours["samples_per_s"], "samples/s",
                                 f"TRL SFTTrainer bs {trl['batch_size']}", trl["samples_per_s"]),
                 measure.compare("peak memory", ours["peak_memory_gib"], "GiB",
                                 f"TRL SFTTrainer bs {trl['batch_size']}", trl["peak_memory_gib"],
                                 higher_is_better=False)]
    return rows


def _ratio_fields(ours: dict, reference: dict | None, trl: dict | None) -> dict:
    def ratio(a, b):
        return a / b if a is not None and b else None

    return {
        "reference_samples_per_s": reference and reference["samples_per_s"],
        "reference_peak_memory_gib": reference and reference["peak_memory_gib"],
        "ratio_vs_reference": reference and ratio(ours["samples_per_s"], reference["samples_per_s"]),
        "memory_ratio_vs_reference": reference and ratio(ours["peak_memory_gib"], reference["peak_memory_gib"]),
        "trl_samples_per_s": trl and trl["samples_per_s"],
        "trl_peak_memory_gib": trl and trl["peak_memory_gib"],
        "ratio_vs_trl": trl and ratio(ours["samples_per_s"], trl["samples_per_s"]),
        "memory_ratio_vs_trl": trl and ratio(ours["peak_memory_gib"], trl["peak_memory_gib"]),
        "trl_note": None if trl is not None else _trl_note(),
    }


def _trl_note() -> str:
    from bench.peers import TRL_MISSING, trl_available

    return "TRL measurement failed or was skipped" if trl_available() else TRL_MISSING


class _Session:
    """Looks up (or measures, untimed) the reference and TRL figures for one device's ratios."""

    def __init__(self, baselines, model, tokenizer, splits, device, rounds, warmup):
        self.baselines = baselines
        self.args = (model, tokenizer, splits, device)
        self.rounds, self.warmup = rounds, warmup

    def reference(self) -> dict:
        model, tokenizer, splits, device = self.args
        return self.baselines.get(("reference", device, model), lambda: measure_reference(
            measure.PlainTimer(), model, tokenizer, splits, device, self.rounds, self.warmup))

    def trl(self, batch_size: int) -> dict | None:
        from bench.peers import trl_available

        if not trl_available():
            return None
        model, tokenizer, splits, device = self.args
        try:
            return self.baselines.get(("trl", device, model, batch_size), lambda: measure_trl(
                measure.PlainTimer(), model, tokenizer, splits, device, batch_size, self.rounds, self.warmup))
        except Exception as err:  # noqa: BLE001 - a broken peer must not cost our own figures
            import warnings

            warnings.warn(f"TRL comparison skipped: {type(err).__name__}: {str(err).splitlines()[0]}")
            return None


def _record_train(benchmark, device: str, series: str, figures: dict, comparisons: list[dict], **extra) -> None:
    info = {k: v for k, v in {**figures, **extra}.items() if k not in ("series", "device")}
    measure.record(benchmark, kind="train_step", series=series, device=device,
                   headline_=measure.headline("samples/s", figures["samples_per_s"], "samples/s"),
                   comparisons=comparisons, **info)


# --------------------------------------------------------------------------------------------
# CPU: tiny


@pytest.mark.benchmark(group="train-cpu")
def test_reference_cpu(benchmark, tokenizer, splits, scale, baselines):
    figures = measure_reference(benchmark, CPU_MODEL, tokenizer, splits, "cpu", scale.train_rounds,
                                scale.train_warmup)
    baselines.put(("reference", "cpu", CPU_MODEL), figures)
    _record_train(benchmark, "cpu", "public recipe", figures, [], model=CPU_MODEL)
    assert figures["samples_per_s"] > 0 and figures["tokens_per_sample"] > 512


@pytest.mark.benchmark(group="train-cpu")
def test_trl_cpu(benchmark, tokenizer, splits, scale, baselines):
    pytest.importorskip("trl", reason="TRL is not installed: the peer benchmarks need the optional `peers` extra")
    batch_size = _config(CPU_MODEL).batch_size
    figures = measure_trl(benchmark, CPU_MODEL, tokenizer, splits, "cpu", batch_size, scale.train_rounds,
                          scale.train_warmup)
    baselines.put(("trl", "cpu", CPU_MODEL, batch_size), figures)
    reference = baselines.get(("reference", "cpu", CPU_MODEL))
    comparisons = [] if reference is None else [measure.compare(
        "samples/s", figures["samples_per_s"], "samples/s", "public recipe", reference["samples_per_s"])]
    _record_train(benchmark, "cpu", "TRL SFTTrainer", figures, comparisons)
    assert figures["samples_per_s"] > 0


@pytest.mark.benchmark(group="train-cpu")
def test_train_step_cpu(benchmark, tokenizer, splits, scale, baselines):
    config = _config(CPU_MODEL)
    figures = measure_ours(benchmark, CPU_MODEL, tokenizer, splits, "cpu", config, scale.train_rounds,
                           scale.train_warmup)
    session = _Session(baselines, CPU_MODEL, tokenizer, splits, "cpu", scale.train_rounds, scale.train_warmup)
    reference, trl = session.reference(), session.trl(config.batch_size)
    _record_train(benchmark, "cpu", "ours (lora)", figures, _ratios(figures, reference, trl),
                  **_ratio_fields(figures, reference, trl))
    assert figures["samples_per_s"] > 0 and figures["mfu"] is not None


# --------------------------------------------------------------------------------------------
# CUDA: phi3v-shape


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-cuda")
def test_reference_cuda(benchmark, cuda_device, gpu_tokenizer, gpu_splits, scale, baselines):
    figures = measure_reference(benchmark, GPU_MODEL, gpu_tokenizer, gpu_splits, cuda_device, scale.gpu_rounds,
                                scale.gpu_warmup)
    baselines.put(("reference", cuda_device, GPU_MODEL), figures)
    _record_train(benchmark, cuda_device, "public recipe", figures, [], model=GPU_MODEL)
    assert figures["samples_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-cuda")
@pytest.mark.parametrize("batch_size", GPU_BATCH_SIZES, ids=[f"bs{b}" for b in GPU_BATCH_SIZES])
def test_trl_cuda(benchmark, cuda_device, batch_size, gpu_tokenizer, gpu_splits, scale, baselines):
    pytest.importorskip("trl", reason="TRL is not installed: the peer benchmarks need the optional `peers` extra")
    figures = measure_trl(benchmark, GPU_MODEL, gpu_tokenizer, gpu_splits, cuda_device, batch_size,
                          scale.gpu_rounds, scale.gpu_warmup)
    baselines.put(("trl", cuda_device, GPU_MODEL, batch_size), figures)
    reference = _Session(baselines, GPU_MODEL, gpu_tokenizer, gpu_splits, cuda_device, scale.gpu_rounds,
                         scale.gpu_warmup).reference()
    _record_train(benchmark, cuda_device, "TRL SFTTrainer", figures, [measure.compare(
        "samples/s", figures["samples_per_s"], "samples/s", "public recipe", reference["samples_per_s"])],
        ratio_vs_reference=figures["samples_per_s"] / reference["samples_per_s"])
    assert figures["samples_per_s"] > 0


def _ours_cuda(benchmark, device, tokenizer, splits, scale, baselines, config, speed=None, series="ours (lora)"):
    figures = measure_ours(benchmark, GPU_MODEL, tokenizer, splits, device, config, scale.gpu_rounds,
                           scale.gpu_warmup, speed=speed)
    session = _Session(baselines, GPU_MODEL, tokenizer, splits, device, scale.gpu_rounds, scale.gpu_warmup)
    reference, trl = session.reference(), session.trl(config.batch_size)
    _record_train(benchmark, device, series, figures, _ratios(figures, reference, trl),
                  **_ratio_fields(figures, reference, trl))
    return figures


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-cuda")
@pytest.mark.parametrize("batch_size", GPU_BATCH_SIZES, ids=[f"bs{b}" for b in GPU_BATCH_SIZES])
def test_lora_cuda(benchmark, cuda_device, batch_size, gpu_tokenizer, gpu_splits, scale, baselines):
    config = _config(GPU_MODEL, batch_size=batch_size)
    figures = _ours_cuda(benchmark, cuda_device, gpu_tokenizer, gpu_splits, scale, baselines, config)
    assert figures["samples_per_s"] > 0


def _preset_cuda(benchmark, device, tokenizer, splits, scale, baselines, name: str, **overrides):
    import torch
    import torch._functorch.config as functorch_config

    from finetune.speed import preset as speed_preset

    speed = speed_preset(name)
    config = _config(GPU_MODEL, preset=name, **overrides)
    budget = functorch_config.activation_memory_budget
    # Compiled graphs are cached per code object, and the memory budget is a global setting that
    # dynamo does not guard on: start each preset from a clean slate and leave one behind.
    torch._dynamo.reset()
    try:
        series = f"ours ({config.method}, preset {name})"
        figures = _ours_cuda(benchmark, device, tokenizer, splits, scale, baselines, config, speed=speed,
                             series=series)
    finally:
        functorch_config.activation_memory_budget = budget
        torch._dynamo.reset()
    benchmark.extra_info["preset"] = name
    return figures


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-cuda")
@pytest.mark.parametrize("preset", PRESETS)
def test_lora_cuda_preset(benchmark, cuda_device, preset, gpu_tokenizer, gpu_splits, scale, baselines):
    figures = _preset_cuda(benchmark, cuda_device, gpu_tokenizer, gpu_splits, scale, baselines, preset)
    assert figures["samples_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.benchmark(group="train-cuda")
def test_full_cuda_preset(benchmark, cuda_device, gpu_tokenizer, gpu_splits, scale, baselines):
    """Full fine-tuning (the public recipe's method) with the fast preset's levers, at batch 8."""
    figures = _preset_cuda(benchmark, cuda_device, gpu_tokenizer, gpu_splits, scale, baselines, "fast",
                           method="full", batch_size=8)
    assert figures["samples_per_s"] > 0

"""What every benchmark records: the machine, timed rounds, peak memory and FLOP-based utilisation.

Timing: each benchmark hands one round (a training step, a batch of rows) to pytest-benchmark's
pedantic mode with explicit warm-up rounds. :func:`run_rounds` also times every round itself, so the
figures in ``extra_info`` come out the same whether pytest-benchmark measures (``--benchmark-only``)
or only runs the function once (a plain ``pytest`` run). On CUDA the round function synchronises
before it returns: a step's time is the GPU's time, not the time to queue its kernels.

FLOPs: the decoder's and the vision tower's matmul work, from parameter counts (attention's
``T^2`` term is left out: under 4% for these shapes, and the issue's figures leave it out too):

* a part whose weights train: ``6 x N x tokens`` (forward 2N, backward 4N);
* a frozen part that gradients flow through (the decoder under LoRA): ``4 x N x tokens``
  (forward, and backward to the inputs only; the adapters' own work is under 1% and left out);
* a frozen part that runs under ``no_grad`` (the vision tower under LoRA): ``2 x N x tokens``.

``N`` leaves out the input embedding (a lookup, no matmul). The vision tower sees
``image_tokens + 1`` positions (CLIP's class token). MFU is that work on the *real* tokens of a
step (padding is waste) over the step time and the device's peak: the dense bf16 peak of known
GPUs, or on a CPU a fp32 matmul measured once per session.

Throughput of the CPU stages (generation, augmentation, the data pipeline): each round returns how
many items it made, and :func:`rate_figures` turns the rounds into items per second (total items
over total time, so a slow round weighs what it cost). Multi-process stages measure memory over one
more round, untimed (:func:`peak_tree_memory`): the PSS of the process and all its descendants.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any, Callable

GIB = 1024**3

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
GPU_PEAK_BF16 = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),   # SXM / HBM3
    ("A100", 312.0e12),
    ("L40S", 362.1e12),
    ("L4", 121.0e12),
    ("A10G", 70.0e12),
)
LORA_FORMULA = ("4 x N_lm x tokens + {v} x N_vision x (image_tokens + 1) per sample "
                "(frozen decoder: forward + input-gradient backward; adapters left out)")
FULL_FORMULA = "6 x N_lm x tokens + 6 x N_vision x (image_tokens + 1) per sample"


# --------------------------------------------------------------------------------------------
# The machine


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "pillow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(device: str = "cpu") -> dict[str, Any]:
    """Device name, core count, load and library versions: what a figure was measured on."""
    env: dict[str, Any] = {"device": device, "device_name": device_name(device), "cpu_count": os.cpu_count(),
                           "platform": platform.platform(terse=True), **versions()}
    if hasattr(os, "getloadavg"):
        # Other work on the machine slows CPU figures down; the load says how much was going on.
        env["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if "torch" in sys.modules:
        # torch's OpenMP threads spin while they wait: on a busy small CPU a step can run 10-100x slower
        # than on an idle one, so a CPU training figure needs the thread count beside the load.
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    return env


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return _cpu_name()


@lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


# --------------------------------------------------------------------------------------------
# Timed rounds


@dataclass
class Rounds:
    """Wall-clock seconds of each timed round (warm-up rounds excluded) and what each round returned."""

    seconds: list[float] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def median(self) -> float:
        s = sorted(self.seconds)
        n = len(s)
        return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")


def run_rounds(benchmark, fn: Callable[[], Any], *, rounds: int, warmup_rounds: int = 1,
               setup: Callable[[], Any] | None = None) -> Rounds:
    """Run ``fn`` under pytest-benchmark (pedantic) and time each round here too.

    ``fn`` returns what the round did (e.g. samples and tokens); ``setup`` (optional, untimed) runs
    before each round. With benchmarks disabled pytest-benchmark calls ``fn`` once, without warm-up:
    that single round is what gets reported.
    """
    calls: list[tuple[float, Any]] = []

    def timed():
        t0 = time.perf_counter()
        result = fn()
        calls.append((time.perf_counter() - t0, result))
        return result

    def make_args():
        if setup is not None:
            setup()
        return (), {}

    benchmark.pedantic(timed, setup=make_args, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    kept = calls if benchmark.disabled else calls[warmup_rounds:]
    return Rounds([s for s, _ in kept], [r for _, r in kept])


# --------------------------------------------------------------------------------------------
# Memory


def cuda_peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) / GIB


def reset_cuda_peak(device: str) -> None:
    import torch

    torch.cuda.reset_peak_memory_stats(torch.device(device))


def free_cuda() -> None:
    """Give cached blocks back between benchmarks, so each one's peak is its own."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except ImportError:
        pass


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def descendant_pids(pid: int | None = None) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (default: this process); empty where /proc cannot say."""
    out: list[int] = []
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size: each page shared between processes is split among them, so summing over
    a process tree counts forked workers' copy-on-write pages and shared libraries once. None once the
    process has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def tree_memory_bytes() -> int:
    """Memory of this process and every process below it (worker pools, a CLI run as a subprocess).

    RSS would count a forked process's shared pages again in each copy - a DataLoader worker, or the
    moment between fork and exec of a spawned one, would add the parent's whole footprint.
    """
    return sum(_pss_bytes(pid) or 0 for pid in [os.getpid(), *descendant_pids()])


class PeakRSS:
    """The highest resident memory of this process while the block runs (sampled every 5 ms).

    ``ru_maxrss`` would give the peak of the whole session instead of this benchmark's.
    ``tree=True``: the highest total over this process and its descendants (:func:`tree_memory_bytes`),
    every 50 ms. Reading a torch process's PSS takes ~10 ms of kernel time, too much to do beside timed
    rounds on a small CPU: measure the tree in a round of its own (:func:`peak_tree_memory`).
    """

    def __init__(self, interval: float | None = None, tree: bool = False):
        self.tree = tree
        self.interval = interval if interval is not None else (0.05 if tree else 0.005)
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _now(self) -> int:
        return tree_memory_bytes() if self.tree else current_rss_bytes()

    @property
    def kind(self) -> str:
        return "process_tree_pss" if self.tree else "process_rss"

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._now())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._now())

    @property
    def gib(self) -> float:
        return self.peak / GIB


# --------------------------------------------------------------------------------------------
# FLOPs and utilisation


@dataclass(frozen=True)
class ParamSplit:
    vision: int      # vision tower + projector
    decoder: int     # decoder layers, final norm and output head (matmul weights)
    embedding: int   # input embedding (a lookup: no FLOPs)


def param_split(model) -> ParamSplit:
    """Parameter counts of a built-in or real VLM *before* peft wraps it (wrapping adds copies)."""
    from finetune.models import vision_module_names

    vision_names = vision_module_names(model)
    embed = model.get_input_embeddings()
    embed_ids = {id(p) for p in embed.parameters()} if embed is not None else set()
    vision = decoder = embedding = 0
    for name, p in model.named_parameters():
        if id(p) in embed_ids:
            embedding += p.numel()
        elif any(name == v or name.startswith(v + ".") for v in vision_names):
            vision += p.numel()
        else:
            decoder += p.numel()
    return ParamSplit(vision, decoder, embedding)


@dataclass(frozen=True)
class FlopModel:
    """FLOPs of one training sample as a function of the decoder tokens it takes."""

    params: ParamSplit
    image_tokens: int
    decoder_factor: int      # 6: trains; 4: frozen with LoRA
    vision_factor: int       # 6: trains; 2: frozen, no_grad
    formula: str

    def per_sample(self, decoder_tokens: float) -> float:
        return (self.decoder_factor * self.params.decoder * decoder_tokens
                + self.vision_factor * self.params.vision * (self.image_tokens + 1))


def lora_flops(params: ParamSplit, image_tokens: int, train_vision: bool) -> FlopModel:
    v = 6 if train_vision else 2
    return FlopModel(params, image_tokens, 4, v, LORA_FORMULA.format(v=v))


def full_flops(params: ParamSplit, image_tokens: int) -> FlopModel:
    return FlopModel(params, image_tokens, 6, 6, FULL_FORMULA)


def peak_flops(device: str) -> tuple[float | None, str]:
    """The device's peak FLOP/s and where the figure comes from."""
    if device.startswith("cuda"):
        name = device_name(device)
        for key, value in GPU_PEAK_BF16:
            if key in name:
                return value, f"{key} dense bf16 data-sheet peak"
        return None, f"unknown peak for {name}"
    return measured_cpu_matmul_flops(), "fp32 matmul measured on this CPU (2048^3, best of 3)"


@lru_cache(maxsize=1)
def measured_cpu_matmul_flops() -> float:
    import torch

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best


def utilisation(flops: float, seconds: float, device: str) -> dict[str, Any]:
    peak, source = peak_flops(device)
    achieved = flops / seconds if seconds > 0 else 0.0
    return {"achieved_tflops": round(achieved / 1e12, 3),
            "mfu": round(achieved / peak, 4) if peak else None,
            "peak_tflops": round(peak / 1e12, 3) if peak else None, "peak_source": source}


def train_figures(rounds: Rounds, *, flops: FlopModel, device: str, peak_memory_gib: float,
                  memory_kind: str) -> dict[str, Any]:
    """Throughput, step time, memory and utilisation of timed training steps.

    Each round's result is a dict with ``samples``, ``tokens`` (decoder positions fed, padding
    included) and ``real_tokens`` (attention-mask ones). Throughput is totals over total time.
    """
    samples = sum(r["samples"] for r in rounds.results)
    # A round may run several optimizer steps and synchronize once (bench/ours.py LoopStep).
    steps = sum(r.get("steps", 1) for r in rounds.results)
    per_round = steps / len(rounds.results) if rounds.results else 1
    tokens = sum(r["tokens"] for r in rounds.results)
    real = sum(r["real_tokens"] for r in rounds.results)
    seconds = rounds.total
    useful = sum(flops.per_sample(r["real_tokens"] / r["samples"]) * r["samples"] for r in rounds.results)
    fed = sum(flops.per_sample(r["tokens"] / r["samples"]) * r["samples"] for r in rounds.results)
    util = utilisation(useful, seconds, device)
    util_fed = utilisation(fed, seconds, device)
    return {
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "real_tokens_per_s": real / seconds,
        "step_time_s": rounds.median / per_round,
        "step_time_mean_s": seconds / steps,
        "steps_timed": steps,
        "steps_per_round": per_round,
        "tokens_per_sample": tokens / samples,
        "real_tokens_per_sample": real / samples,
        "peak_memory_gib": round(peak_memory_gib, 3),
        "memory_kind": memory_kind,
        "flops_per_sample": useful / samples,
        "flop_formula": flops.formula,
        "params_decoder": flops.params.decoder,
        "params_vision": flops.params.vision,
        "params_embedding": flops.params.embedding,
        "image_tokens": flops.image_tokens,
        **util,
        "mfu_incl_padding": util_fed["mfu"],
        "loss_last": rounds.results[-1].get("loss"),
    }


def peak_tree_memory(fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> tuple[float, str]:
    """Peak memory (GiB) of this process and its descendants over one extra, untimed round of ``fn``."""
    if setup is not None:
        setup()
    with PeakRSS(tree=True) as mem:
        fn()
    return round(mem.gib, 3), mem.kind


def rate_figures(rounds: Rounds, unit: str) -> dict[str, Any]:
    """Items per second over timed rounds whose results are item counts (rows, samples, images).

    ``{unit}_per_s`` is total items over total time; the median round and the spread between the
    fastest and slowest round per item say how steady it was.
    """
    items = [int(r) for r in rounds.results]
    per_item = [s / n for s, n in zip(rounds.seconds, items) if n]
    return {
        f"{unit}_per_s": sum(items) / rounds.total if rounds.total > 0 else None,
        f"{unit}_timed": sum(items),
        f"{unit}_per_round": items[0] if items else 0,
        "rounds_timed": len(rounds.seconds),
        "round_s_median": rounds.median,
        "ms_per_item_min": round(1000 * min(per_item), 4) if per_item else None,
        "ms_per_item_max": round(1000 * max(per_item), 4) if per_item else None,
    }


def scaling_efficiency(rate_n: float | None, rate_1: float | None, workers: int) -> float | None:
    """Throughput at ``workers`` over ``workers`` times the one-worker throughput (1.0 = linear)."""
    if not rate_n or not rate_1 or workers < 1:
        return None
    return rate_n / (workers * rate_1)


class PlainTimer:
    """Stands in for pytest-benchmark's fixture where a baseline is measured outside a benchmark
    (a ratio needs it, but its own benchmark was not selected)."""

    disabled = False

    def pedantic(self, target, setup=None, rounds=1, warmup_rounds=0, iterations=1):
        for _ in range(warmup_rounds + rounds):
            if setup is not None:
                setup()
            target()


def headline(figure: str, value: float | None, unit: str) -> dict[str, Any]:
    """The one figure ``bench-report`` shows for a benchmark that has no reference."""
    return {"figure": figure, "value": value, "unit": unit}


def compare(figure: str, value: float | None, unit: str, against: str, reference: float | None,
            higher_is_better: bool = True) -> dict[str, Any]:
    """One row of ``bench-report``'s table: this run's figure next to a reference's, and their ratio."""
    ratio = value / reference if value is not None and reference else None
    return {"figure": figure, "value": value, "unit": unit, "against": against, "reference": reference,
            "ratio": ratio, "higher_is_better": higher_is_better}


def record(benchmark, *, kind: str, series: str, device: str, headline_: dict | None = None,
           comparisons: list[dict] | None = None, **figures: Any) -> None:
    """Put a benchmark's figures in ``extra_info`` (saved with its pytest-benchmark JSON)."""
    benchmark.extra_info.update({"kind": kind, "series": series, **environment(device), **figures})
    if headline_ is not None:
        benchmark.extra_info["headline"] = headline_
    benchmark.extra_info["compare"] = comparisons or []


class Blocks:
    """Hands each round the next ``size`` row indices, so no round re-measures rows a cache has seen."""

    def __init__(self, size: int):
        self.size, self.next = size, 0

    def take(self) -> range:
        block = range(self.next, self.next + self.size)
        self.next += self.size
        return block

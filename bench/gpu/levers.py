"""Measure the speed levers one configuration at a time on one GPU (phi3v-shape), for finetune/speed/.

    python3 bench/gpu/levers.py --out $OUT/levers.jsonl [--budget-s 520] [--only NAME ...]

Each configuration builds the model afresh, runs warm-up rounds (compilation lands there), then
times rounds of our loop (bench/ours.py LoopStep: ``--round-steps`` x [loader -> device ->
forward/backward -> clip -> fused AdamW], then one sync, as the loop syncs only to log) and writes one
JSON line: samples/s, median step, peak memory, mean GPU utilisation (nvidia-smi, sampled every
100 ms during the timed rounds), compile time, where a round waits on the GPU (sync debug mode), and
whether a graph was recompiled during the timed rounds. Stops starting new configurations when the time
budget runs low, so one lease call holds the whole sweep.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from finetune.speed.allocator import use_expandable_segments  # noqa: E402

# As run-finetune sets it: without it, batches of varying width made 2.5 s allocator stalls in eager steps.
use_expandable_segments()

P = {"compile_layers": True, "maskless": True, "pad_to_multiple_of": 64}


P16 = {**P, "pad_to_multiple_of": 16}
# The fast preset's levers as sessions 4 and 5 measured them, written out rather than read from
# finetune.speed: a configuration's name keeps meaning what was measured when the preset moves on.
FAST_S4 = {**P16, "pad_to_multiple_of": 8, "activation_memory_budget": 0.7, "fused_lora": True,
           "cache_image_features": True}
FAST_S5 = {**FAST_S4, "answer_only_last_mlp": True, "activation_memory_budget": 1.0}


def _fused_p8(batch_size: int, budget: float) -> tuple:
    """Session 4's fused LoRA with widths padded to 8, at a batch size and memory budget."""
    return ({"batch_size": batch_size},
            {**P16, "pad_to_multiple_of": 8, "activation_memory_budget": budget, "fused_lora": True}, None)


def _answer_mlp(batch_size: int, budget: float) -> tuple:
    """FAST_S4 with the last MLP at the answer positions, at a batch size and memory budget."""
    return ({"batch_size": batch_size},
            {**FAST_S4, "answer_only_last_mlp": True, "activation_memory_budget": budget}, None)


# name: (FinetuneConfig overrides, SpeedConfig overrides, "cudnn" (SDPA priority) | "coordinate_descent"
# (inductor tunes its pointwise and reduction kernels) | "cold_cache" (the image feature cache is not
# filled before the timed rounds) | None)
CONFIGS = {
    "fast_bs16": ({"batch_size": 16}, {"compile_layers": True, "maskless": True}, None),
    "fast_bs8": ({"batch_size": 8}, {"compile_layers": True, "maskless": True}, None),
    "eager_maskless_bs16": ({"batch_size": 16}, {"maskless": True}, None),
    "fast_cudnn_bs16": ({"batch_size": 16}, {"compile_layers": True, "maskless": True}, "cudnn"),
    "lowmem_b01_bs8": ({"batch_size": 8}, {"compile_layers": True, "maskless": True,
                                           "activation_memory_budget": 0.1}, None),
    "lowmem_b03_bs8": ({"batch_size": 8}, {"compile_layers": True, "maskless": True,
                                           "activation_memory_budget": 0.3}, None),
    "full_fast_bs8": ({"batch_size": 8, "method": "full"}, {"compile_layers": True, "maskless": True}, None),
    "full_eager_bs8": ({"batch_size": 8, "method": "full"}, {}, None),
    "fast_bs24": ({"batch_size": 24}, {"compile_layers": True, "maskless": True}, None),
    "eager_bs16": ({"batch_size": 16}, {}, None),
    "fast_p64_bs16": ({"batch_size": 16}, P, None),
    "fast_p64_b07_bs16": ({"batch_size": 16}, {**P, "activation_memory_budget": 0.7}, None),
    "fast_p64_bs12": ({"batch_size": 12}, P, None),
    "lowmem_p64_b03_bs8": ({"batch_size": 8}, {**P, "activation_memory_budget": 0.3}, None),
    "full_p64_bs8": ({"batch_size": 8, "method": "full"}, P, None),
    "eager_p64_bs16": ({"batch_size": 16}, {"pad_to_multiple_of": 64}, None),
    # Session 3: widths padded to 16 (phi3v-shape rows are 607-615 tokens: 608/624 instead of 640),
    # memory budgets for <= 32 GiB, a batch of 2 to show the per-step host cost.
    "fast_p16_bs16": ({"batch_size": 16}, P16, None),
    "fast_p16_b07_bs16": ({"batch_size": 16}, {**P16, "activation_memory_budget": 0.7}, None),
    "fast_p16_b065_bs16": ({"batch_size": 16}, {**P16, "activation_memory_budget": 0.65}, None),
    "lowmem_p16_b03_bs8": ({"batch_size": 8}, {**P16, "activation_memory_budget": 0.3}, None),
    "fast_p16_bs2": ({"batch_size": 2}, P16, None),
    "fast_p8_bs16": ({"batch_size": 16}, {**P, "pad_to_multiple_of": 8}, None),
    "fast_p16_coordinate_bs16": ({"batch_size": 16}, P16, "coordinate_descent"),
    "fast_p16_b07_bs14": ({"batch_size": 14}, {**P16, "activation_memory_budget": 0.7}, None),
    # Session 4: widths padded to 8 (608/616), the LoRA term added in the base matmul's epilogue.
    "fast_p8_b07_bs14": ({"batch_size": 14}, {**P16, "pad_to_multiple_of": 8, "activation_memory_budget": 0.7}, None),
    "fused_p16_b07_bs14": ({"batch_size": 14}, {**P16, "activation_memory_budget": 0.7, "fused_lora": True}, None),
    "fused_p8_b07_bs14": _fused_p8(14, 0.7),
    "fused_p8_b07_bs16": _fused_p8(16, 0.7),
    "fused_p8_b07_bs15": _fused_p8(15, 0.7),
    "fused_p8_b03_bs8": _fused_p8(8, 0.3),
    "fused_p8_b03_bs16": _fused_p8(16, 0.3),
    "fused_p8_b05_bs12": _fused_p8(12, 0.5),
    # Session 5: the fast preset of session 4 (batch 14, budget 0.7; image features cached, filled
    # before timing), then with the last decoder MLP at the answer positions only.
    "preset_fast": ({"batch_size": 14}, FAST_S4, None),
    "preset_fast_answer_mlp": _answer_mlp(14, 0.7),
    # fused_lora left 1.5 GiB of the 32 unused at budget 0.7: less recomputation may fit.
    "preset_fast_answer_mlp_b08": _answer_mlp(14, 0.8),
    # Session 5: budget 0.8 paid 1.6% for 0.8 GiB; how much more recomputation can go within 32 GiB.
    "preset_fast_answer_mlp_b085": _answer_mlp(14, 0.85),
    "preset_fast_answer_mlp_b09": _answer_mlp(14, 0.9),
    "preset_fast_answer_mlp_b09_bs13": _answer_mlp(13, 0.9),
    "preset_fast_answer_mlp_b10_bs12": _answer_mlp(12, 1.0),
    # bs13 at 0.9 (54.98, 28.0 GiB) beat bs14: smaller batches with less recomputation.
    "preset_fast_answer_mlp_b09_bs12": _answer_mlp(12, 0.9),
    "preset_fast_answer_mlp_b095_bs12": _answer_mlp(12, 0.95),
    "preset_fast_answer_mlp_b10_bs11": _answer_mlp(11, 1.0),
    "preset_fast_answer_mlp_b10_bs10": _answer_mlp(10, 1.0),
    # The fast preset of session 5. Against it, the adapter in a widened weight for qkv and gate/up
    # ("preset_fast_wide" in h200_levers.jsonl) gave 54.8 against 54.6, no gain: that lever is retired.
    "preset_fast_s5": ({"batch_size": 11}, FAST_S5, None),
    # The first epoch of a run, before the image feature cache holds anything: the tower runs every step.
    "preset_fast_s5_uncached": ({"batch_size": 11}, {**FAST_S5, "cache_image_features": False}, None),
    # The first epoch as run-finetune runs it: the cache starts empty and every timed step stores its rows.
    "preset_fast_s5_cold_cache": ({"batch_size": 11}, FAST_S5, "cold_cache"),
    # CUDA graphs (compile mode "reduce-overhead") segfaulted in sessions 3 and 6 and failed under the
    # fast preset (a replay overwrote vision hidden states still to be read): the compile mode lever
    # is retired (bench/results/speed_levers_history.md).
    "fast_p64_coordinate_bs16": ({"batch_size": 16}, P, "coordinate_descent"),
}


class TimedIter:
    """The loader's iterator, timing how long each step waits for its batch."""

    def __init__(self, it):
        self.it, self.seconds = it, []

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        batch = next(self.it)
        self.seconds.append(time.perf_counter() - t)
        return batch


class GpuBusy:
    """Mean ``utilization.gpu`` (share of time a kernel ran) while the block runs."""

    def __enter__(self):
        self.mean = None
        try:
            self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:  # no nvidia-smi (a CPU smoke run)
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        values = [float(v) for v in out.split() if v.strip().replace(".", "").isdigit()]
        # The first samples can predate the timed steps' first kernels.
        self.mean = statistics.mean(values[2:]) if len(values) > 4 else None


def data(workdir: Path, rows: int):
    from finetune.data import load_splits, phi3_prompt, training_texts
    from finetune.tokenizer import END, IMAGE, train_tokenizer
    from generator.api import GenerateConfig, generate_to_dir

    folder = generate_to_dir(GenerateConfig(rows=rows, seed=0, test_fraction=0.1, num_proc=8), workdir / "catalog",
                             resume=True)
    splits = load_splits(str(folder))
    from finetune.config import DEFAULT_QUESTION

    texts = training_texts(splits["train"], phi3_prompt(DEFAULT_QUESTION, IMAGE), END)
    return splits, train_tokenizer(texts, vocab_size=2048)


def measure_one(name: str, splits, tokenizer, warmup: int, steps: int, model: str = "phi3v-shape",
                device: str = "cuda", profile_to: Path | None = None, round_steps: int = 5) -> dict:
    import torch
    import torch._dynamo
    import torch._functorch.config as functorch_config
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from bench.ours import LoopStep
    from finetune.config import FinetuneConfig
    from finetune.builtins import build_builtin
    from finetune.speed import SpeedConfig

    overrides, speed_overrides, variant = CONFIGS[name]
    config = FinetuneConfig(model=model, no_wandb=True, **{"method": "lora", "lora_dropout": 0.0,
                                                                    **overrides}).validate()
    speed = replace(SpeedConfig(), **speed_overrides)
    torch._dynamo.reset()
    functorch_config.activation_memory_budget = 1.0
    loaded = build_builtin(model, tokenizer, device=device,
                           dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = variant == "coordinate_descent"
    backends = ([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                 SDPBackend.MATH] if variant == "cudnn" else None)
    context = sdpa_kernel(backends, set_priority=True) if backends else contextlib.nullcontext()
    # Rounds of a few steps and one synchronize, as the loop runs (it syncs only to log).
    step = LoopStep(loaded, splits, config, device=device, speed=speed, steps_per_call=round_steps,
                    fill_cache=variant != "cold_cache")
    rounds = max(1, steps // round_steps)
    del loaded
    step.batches = waits = TimedIter(step.batches)
    try:
        with context:
            t0 = time.perf_counter()
            losses = [step()["loss"] for _ in range(warmup)]
            compile_s = time.perf_counter() - t0
            syncs = host_syncs(step) if device == "cuda" else None
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, samples = [], 0
            waits.seconds.clear()
            with GpuBusy() as busy:
                for _ in range(rounds):
                    t = time.perf_counter()
                    out = step()
                    times.append(time.perf_counter() - t)
                    samples += out["samples"]
                    losses.append(out["loss"])
            recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
            if profile_to is not None:
                profile(step, profile_to)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    finally:
        step.close()
        del step
        import gc

        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        functorch_config.activation_memory_budget = 1.0
    return {"name": name, "config": {k: getattr(config, k) for k in ("method", "batch_size", "lora_r", "lora_dropout")},
            "speed": asdict(speed), "variant": variant or "default",
            "samples_per_s": samples / sum(times), "median_step_s": statistics.median(times) / round_steps,
            "round_steps": round_steps,
            "peak_memory_gib": peak, "gpu_busy_pct": busy.mean, "warmup_s": compile_s,
            "graphs_made_while_timed": recompiled, "host_syncs_per_round": syncs,
            "loss_first": losses[0], "loss_last": losses[-1],
            "steps_timed": rounds * round_steps, "round_times_s": [round(t, 4) for t in times],
            "data_wait_s": [round(t, 4) for t in waits.seconds[:steps]]}


def host_syncs(step) -> dict:
    """Where one round makes the host wait for the GPU (torch's sync debug mode); the round's own final
    synchronize is one of them."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sites: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            site = f"{Path(w.filename).name}:{w.lineno}"
            sites[site] = sites.get(site, 0) + 1
    return sites


def profile(step, path: Path, calls: int = 1) -> None:
    """Where the GPU time of a few steps goes: the top kernels, and sums by kind of kernel."""
    import torch
    from torch.profiler import ProfilerActivity

    steps = calls * step.steps_per_call
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(calls):
            step()
        wall = time.perf_counter() - t
    # Kernels only: the ATen op that launched a kernel carries the same time again as its "self device time".
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    kinds: dict[str, float] = {}
    total = 0.0
    for e in events:
        us = getattr(e, "self_device_time_total", 0.0)
        if not us:
            continue
        name = e.key.lower()
        kind = ("gemm" if any(k in name for k in ("gemm", "xmma", "cutlass", "sm90", "nvjet", "cublas")) else
                "attention" if any(k in name for k in ("flash", "fmha", "attention", "cudnn")) else
                "triton" if "triton" in name else
                "copy/fill" if any(k in name for k in ("copy", "fill", "memset", "memcpy")) else
                "optimizer" if "adam" in name or "foreach" in name else "other")
        kinds[kind] = kinds.get(kind, 0.0) + us
        total += us
    lines = [f"wall {wall * 1e3 / steps:.1f} ms/step, GPU kernels {total / 1e3 / steps:.1f} ms/step"]
    lines += [f"{k:10s} {v / 1e3 / steps:8.1f} ms/step {100 * v / total:5.1f}%" for k, v in
              sorted(kinds.items(), key=lambda kv: -kv[1])]
    lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=45, max_name_column_width=90))
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, default=520)
    p.add_argument("--only", nargs="*")
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--round-steps", type=int, default=5, help="steps per synchronize (the loop syncs only to log)")
    p.add_argument("--model", default="phi3v-shape")
    p.add_argument("--device", default="cuda")
    p.add_argument("--profile", nargs="*", default=[], help="configurations to profile after timing")
    args = p.parse_args()
    start = time.perf_counter()
    import torch

    splits, tokenizer = data(Path("/tmp/levers"), args.rows)
    out = Path(args.out)
    names = args.only or list(CONFIGS)
    spent: list[float] = []
    for name in names:
        left = args.budget_s - (time.perf_counter() - start)
        if left < max(spent or [60]) * 1.2:
            print(f"skip {name}: {left:.0f} s left", flush=True)
            continue
        t = time.perf_counter()
        try:
            row = measure_one(name, splits, tokenizer, args.warmup, args.steps, args.model, args.device,
                              out.with_name(f"profile_{name}.txt") if name in args.profile else None,
                              args.round_steps)
        except torch.OutOfMemoryError:
            row = {"name": name, "error": "out of memory"}
            torch.cuda.empty_cache()
        except Exception as err:  # noqa: BLE001 - one broken lever must not cost the others
            row = {"name": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        spent.append(time.perf_counter() - t)
        row["wall_s"] = spent[-1]
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""The speed presets (``--preset``) and ``SpeedConfig``, one field per lever: what finetune/speed.py applies.

Nothing here imports torch: the CLI builds its ``--preset`` help and ``FinetuneConfig.validate``
fills a preset's suggestions before torch loads.
"""
from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class SpeedConfig:
    compile_layers: bool = False
    maskless: bool = False
    activation_memory_budget: float = 1.0
    pad_to_multiple_of: int = 1
    fused_lora: bool = False
    # Keep a frozen vision tower's image features from the first epoch and reuse them afterwards
    # (finetune/feature_cache.py); ignored when the tower trains.
    cache_image_features: bool = False
    # The last decoder layer's MLP only at the answer positions (finetune/answer_mlp.py).
    answer_only_last_mlp: bool = False
    # With fused_lora: layers at least twice as wide out as in (qkv, gate/up) run base and adapter in
    # one GEMM over a widened weight (finetune/fused_lora.py). No preset sets it: no gain on an H200.
    wide_lora: bool = False
    # torch.compile's mode for the blocks (None: default), for bench/gpu/levers.py: "reduce-overhead"
    # (CUDA graphs) segfaulted on the H200, and fails under the fast preset (session 6);
    # "max-autotune-no-cudagraphs" is not measured yet.
    compile_mode: str | None = None
    # Suggestions a preset makes for settings the run leaves open (an explicit flag wins).
    batch_size: int | None = None
    lora_dropout: float | None = None


# Measured on one H200 (bench/gpu/levers.py, bench/results/gpu/h200_levers.jsonl), phi3v-shape LoRA r=16:
#   eager, batch 16:                                   28.5 samples/s median step, 51.8 GiB
#   + maskless + compiled layers:                      48.9 median but 43.9 mean: steps with a new
#     width stalled (attention plans, allocator), 43.1 GiB
#   + widths padded to 64 (one shape):                 47.0 mean = median, 44.6 GiB
#   widths padded to 16 instead (rows are 607-615 tokens: 624, not 640), no host sync in the step
#     (answer positions from the CPU labels, no mask builder), rounds of 5 steps per sync as the
#     loop runs:                                       49.8 samples/s, 43.7 GiB, GPU busy 99.96%
#   + memory budget 0.7 (the partitioner recomputes elementwise ops, never a matmul or attention;
#     saved activations per decoder layer 19.6 -> 13.4 hidden-sized tensors a token):
#                                                      batch 16: 49.6 samples/s, 33.5 GiB;
#                                                      batch 14: 49.4 samples/s, 30.3 GiB (fast until session 4)
#   batch 8, budget 0.3 (low-memory):                  39.7 samples/s, 15.3 GiB (GPU busy 97.5%;
#     34.4 with a host sync a step)
#   coordinate-descent tuning of the fused kernels:    +1% (50.3 at batch 16), 75 s more compile: not kept
#   CUDA graphs (reduce-overhead):                     the process segfaulted on the H200, twice: not kept
#   full fine-tuning, batch 8, compiled:               33.7 samples/s, 39.4 GiB (eager: 24.0 median, 45.9 GiB)
# Session 4 (calls s4-1..5), against the fast preset above re-measured in the same call (49.9, 30.7 GiB):
#   widths padded to 8 (608/616):                      50.0 samples/s (noise level), 30.9 GiB
#   + fused_lora, first two tries:                     49.5: it never ran (peft's adapters are fp32 under
#     autocast; the dtype check sent every call back to peft's forward)
#   + fused_lora as custom ops, running:               48.0, 29.2 GiB: the out-of-place addmm copied its C
#     into the result first (one device copy per linear, 14 ms a step)
#   + fused_lora with in-place addmm_:                 50.9 samples/s, 29.2 GiB (Triton elementwise 52 -> 39 ms
#     a step); batch 16: 50.8, 32.6 GiB
#   fused_lora under memory budgets 0.3-0.5 (batch 8-16): 37.1-37.3 samples/s at 10.5-11.2 GiB; the
#     unfused low-memory preset stays, it is faster (39.7 at batch 8) and within 16 GiB
#   image features of the frozen tower cached from the first epoch (eager batch 16, 160 rows): 28.8 -> 29.7
#     samples/s; both presets cache them (exact, host memory, off whenever the tower trains)
# Session 5 (calls s5-1..3), every run with the image features cached, 3 rounds of 5 steps:
#   fast as it stood (batch 14, budget 0.7):           53.0 samples/s, 29.2 GiB
#   + answer_only_last_mlp:                            53.5, 28.7 GiB
#   + budget 0.8 / 0.85 / 0.9 (one partition):         54.3-54.4, 29.5 GiB
#   smaller batches with less recomputation:           batch 13 at 0.9: 55.0, 28.0 GiB; batch 12 at 0.9-0.95:
#                                                      53.7-54.8, 26.5 GiB; batch 12 at 1.0: 55.5, 32.7 GiB (over 32)
#   batch 11, budget 1.0 (no recomputation):           55.9 samples/s, 30.6 GiB (fast from session 5);
#                                                      batch 10 at 1.0: 54.6, 28.6 GiB
# Session 6 (calls s6-1..5; other H200s, where the same fast preset ran at 54.8-55.7):
#   + wide_lora:                                       54.6 against 54.8 in the same call: not kept
#   CUDA graphs (reduce-overhead), fast preset:        fails: the vision tower's hidden states are read after
#                                                      the next layer's graph replay has overwritten them
#   the first epoch (no cached features yet):          52.7 without a cache, 51.4 with the cache filling
#                                                      (against 55.7 cached); profiled: GPU kernels 191 ms a
#                                                      step against 184 ms cached (the tower's ~7 ms)
PRESETS: dict[str, SpeedConfig] = {
    "none": SpeedConfig(),
    "fast": SpeedConfig(compile_layers=True, maskless=True, pad_to_multiple_of=8, fused_lora=True,
                        cache_image_features=True, answer_only_last_mlp=True, batch_size=11, lora_dropout=0.0),
    "low-memory": SpeedConfig(compile_layers=True, maskless=True, pad_to_multiple_of=16,
                              activation_memory_budget=0.3, cache_image_features=True, batch_size=8,
                              lora_dropout=0.0),
}


# SpeedConfig fields that are suggestions for settings of the run itself (FinetuneConfig.batch_size,
# .lora_dropout), not levers: they are set as those settings, never in the [speed] table.
SUGGESTIONS = ("batch_size", "lora_dropout")
# One line of --help a lever (the "speed" group); a lever without one is still listed.
LEVER_HELP: dict[str, str] = {
    "compile_layers": "torch.compile each transformer block (CUDA only)",
    "maskless": "drop the attention mask of right-padded batches (Llava-family models)",
    "activation_memory_budget": "fraction of activation memory compiled blocks keep for backward (0-1]",
    "pad_to_multiple_of": "round training batch widths up to this multiple",
    "fused_lora": "add the LoRA term inside the frozen weight's matmul",
    "cache_image_features": "reuse a frozen vision tower's image features after the first epoch",
    "answer_only_last_mlp": "run the last decoder layer's MLP at the answer positions only",
    "wide_lora": "with --fused-lora: one GEMM over a widened weight for wide layers",
    "compile_mode": "torch.compile mode for the blocks (default, reduce-overhead, max-autotune, ...)",
}


def levers() -> dict[str, Any]:
    """Every lever the [speed] table and the speed flags can set, with its type: ``{name: annotation}``."""
    hints = typing.get_type_hints(SpeedConfig)
    return {f.name: hints[f.name] for f in fields(SpeedConfig) if f.name not in SUGGESTIONS}


def preset(name: str, **overrides) -> SpeedConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def resolve(name: str, overrides: Mapping[str, Any] | None = None, *, cuda: bool) -> SpeedConfig:
    """The levers of a run, resolved once: the preset's values, then the levers set on their own
    (the [speed] table, the speed flags). Compilation applies only where it pays (CUDA); its memory
    budget then goes back to 1.0 unless it was set on its own."""
    overrides = dict(overrides or {})
    cfg = preset(name, **overrides)
    if cfg.compile_layers and not cuda:
        budget = overrides.get("activation_memory_budget", 1.0)
        cfg = replace(cfg, compile_layers=False, activation_memory_budget=budget)
    return cfg

"""The speed presets (``--preset``) and ``SpeedConfig``, one field per lever: what the rest of
finetune/speed/ applies (``prepare_model``, ``prepare_batch``).

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
    # (finetune/speed/feature_cache.py); ignored when the tower trains.
    cache_image_features: bool = False
    # The last decoder layer's MLP only at the answer positions (finetune/speed/answer_mlp.py).
    answer_only_last_mlp: bool = False
    # Suggestions a preset makes for settings the run leaves open (an explicit flag wins).
    batch_size: int | None = None
    lora_dropout: float | None = None


# How each preset's choices were measured: bench/results/speed_levers_history.md.
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

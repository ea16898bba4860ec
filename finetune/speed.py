"""Speed levers for the training step, and the presets that bundle the ones that paid off.

Measured on one H100 with the phi3v-shape model, LoRA r=16, batch 16, answer-only loss, when these
levers were first tried (those raw figures were not kept; bench/results/ holds the H200 re-measurement
of the presets, made by bench/gpu/run.sh):

- eager, autocast bf16:                         24.6 samples/s, 51.8 GiB
- + torch.compile of each decoder layer:        44.8 samples/s, 43.5 GiB  (fuses the fp32 RMSNorm,
  rotary and SwiGLU elementwise kernels that took over half of the eager step)
- + compile of each vision-tower layer:         45.8 samples/s, 43.5 GiB
- + activation memory budget 0.5 (partitioner recomputes cheap ops instead of saving them):
                                                39.9 samples/s, 24.6 GiB
- budget 0.1 at batch 32:                       35.6 samples/s, 19.0 GiB
- pure bf16 adapters instead of autocast:       36.1 samples/s, 54.1 GiB  (slower: not kept)
- cuDNN attention, dropping the all-ones mask:  no measurable change (attention is ~8% of the step)

Re-measured on an H200 in this repository's benchmark (bench/results/), the compiled presets ran
*slower* than eager (fast 9.8 vs eager 23.9 samples/s at batch 16). TORCH_LOGS=recompiles
(bench/results/gpu/h200_preset_fast_recompiles.log) shows why: the compiled decoder layer is
recompiled for every combination of (first layer's input without grad / later layers' with grad) x
(attention_mask a tensor / None when a batch has no padding) x (static / dynamic width), ~10 s each,
landing in the timed rounds and reaching dynamo's recompile limit. To fix before trusting these
presets: pass a mask in the same form every step (or pack sequences, no mask at all), mark the
sequence dimension dynamic up front, and warm up until no new guard fails.

What remains is matmul time at ~760 TFLOP/s plus memory-bound elementwise kernels that already run
near the HBM bandwidth; see README for the ceiling analysis.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class SpeedConfig:
    compile_layers: bool = False
    # Fraction of activation memory the compiler's partitioner may keep (1.0 = save everything it
    # wants). Lower values trade recomputation for memory without a second forward of whole layers.
    activation_memory_budget: float = 1.0
    batch_size: int | None = None  # a preset may suggest a batch size; an explicit flag wins
    # LoRA dropout writes a masked copy of every adapted layer's input (and keeps it for backward):
    # pure memory traffic at the scale of the activations. None keeps the run's setting.
    lora_dropout: float | None = None


PRESETS: dict[str, SpeedConfig] = {
    "none": SpeedConfig(),
    "fast": SpeedConfig(compile_layers=True, activation_memory_budget=1.0, batch_size=16, lora_dropout=0.0),
    "balanced": SpeedConfig(compile_layers=True, activation_memory_budget=0.5, batch_size=16, lora_dropout=0.0),
    "low-memory": SpeedConfig(compile_layers=True, activation_memory_budget=0.1, batch_size=16, lora_dropout=0.0),
}


def preset(name: str, **overrides) -> SpeedConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def repeated_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every tower (decoder and vision encoder), found by their base class.

    Compiling blocks rather than the whole model keeps compile time to one graph reused by every
    layer and leaves the data-dependent parts (image-token scatter, answer gather) in eager mode.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def apply_speed(model: nn.Module, cfg: SpeedConfig) -> nn.Module:
    """Apply the levers in place. Call after peft has wrapped the model, before the first step."""
    if cfg.activation_memory_budget < 1.0:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = cfg.activation_memory_budget
    if cfg.compile_layers:
        for layer in repeated_layers(model):
            layer.compile()
    return model


def compile_available() -> bool:
    """torch.compile needs a working C compiler and Triton on GPU; on CPU it is rarely worth it."""
    return torch.cuda.is_available()

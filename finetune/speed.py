"""Speed levers for the training step; the presets (``--preset``) that bundle the ones that paid off are in
finetune/presets.py (torch-free, for the CLI) and re-exported here.

Each lever leaves the loss unchanged (tests/test_finetune_speed.py compares losses step by step)
except ``lora_dropout``, which a preset sets to 0 only when the run gives no ``--lora-dropout``:

- ``maskless``: training batches are right-padded and the decoder is causal, so no real token ever
  attends to a pad token and the attention mask can go. Every batch then takes the same attention
  path (flash / cuDNN instead of the masked kernel) and one compiled graph serves every step.
- ``compile_layers``: ``torch.compile`` of each transformer block (decoder and vision tower). Eager
  mode spends over half of a LoRA step in memory-bound elementwise kernels (fp32 RMSNorm, rotary,
  SwiGLU, residual adds, the LoRA adds); the compiler fuses them. Blocks rather than the whole model:
  one graph is reused by every layer, and the data-dependent parts (image-token scatter, answer
  gather) stay in eager mode. Compiled with dynamic shapes, so a new batch width or size is no
  recompile; compiled forwards run in training mode only (generation keeps the eager layers).
- ``activation_memory_budget``: the fraction of activation memory the compiler's partitioner may
  keep for backward; below 1 it recomputes cheap ops instead of saving them (memory for time).
- ``fused_lora``: each adapter's term is added inside the frozen weight's matmul (finetune/fused_lora.py)
  instead of by a separate elementwise pass over the layer's output, forward and backward.
- ``wide_lora`` (with ``fused_lora``): layers at least twice as wide out as in (qkv, gate/up) keep
  their frozen weight in a buffer with r more columns holding ``s * B``, and one GEMM over the input
  widened by ``x @ A.T`` gives base and adapter terms (finetune/fused_lora.py).
- ``cache_image_features``: a frozen vision tower's features are computed in the first epoch only
  (finetune/feature_cache.py); later epochs skip the tower. Exact: the training images are not augmented.
- ``answer_only_last_mlp``: the last decoder layer's MLP runs at the answer positions only (the loss
  reads nothing else of it; finetune/answer_mlp.py).
- ``lora_dropout`` 0: dropout writes a masked copy of every adapted layer's input and keeps it for
  backward, pure memory traffic at the scale of the activations.

History: the first H200 measurement of these presets (bench/results/gpu/h200_preset_fast_recompiles.log)
ran *slower* than eager, because the compiled layer was recompiled for every combination of input
requires_grad x mask tensor/None (unpadded batches) x static/dynamic width, ~10 s each inside the
timed rounds. ``maskless`` plus dynamic shapes leave two decoder graphs (the first layer's input
needs no grad, the others' do) and one vision graph, all made in the warm-up step.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from . import answer_mlp, fused_lora, presets
from .families import MASKLESS, core_model, family_of, last_decoder_layer
from .presets import PRESETS, SpeedConfig, preset

__all__ = ["PRESETS", "SpeedConfig", "apply_speed", "begin_step", "compile_for_training", "drop_causal_mask",
           "for_family", "maskless_supported", "preset", "repeated_layers", "resolve"]


def repeated_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every tower (decoder and vision encoder), found by their base class."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def apply_speed(model: nn.Module, cfg: SpeedConfig) -> int:
    """Apply the model-side levers in place; returns how many blocks were compiled. Call after peft
    has wrapped the model, before the first step.

    The memory budget is a process-wide setting of torch's partitioner, read when a graph compiles.
    A model whose blocks are not transformers' ``GradientCheckpointingLayer`` (remote-code models
    such as Phi-3-vision) gets no compiled block: the caller says so.
    """
    # torch's compiler stack (dynamo, functorch's partitioner) takes seconds to import: loaded only
    # when a run compiles or sets a memory budget.
    if cfg.activation_memory_budget < 1.0 or cfg.compile_layers:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = cfg.activation_memory_budget
    if cfg.fused_lora:
        fused_lora.fuse_lora_linears(model)
        if cfg.wide_lora:
            fused_lora.widen_lora_linears(model)
    if cfg.answer_only_last_mlp:
        answer_mlp.patch(model)
    if cfg.compile_layers:
        import torch._dynamo.config as dynamo_config

        # Every block of a tower shares one code object, so its graphs count against one limit:
        # two decoder graphs (input with / without grad) and the vision tower's, with room to spare.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 16)
        layers = repeated_layers(model)
        for layer in layers:
            compile_for_training(layer, cfg.compile_mode)
        return len(layers)
    return 0


def compile_for_training(layer: nn.Module, mode: str | None = None) -> None:
    """Run ``layer`` compiled in training mode and eager otherwise.

    Generation (evaluation) calls the blocks with a growing KV cache, one token at a time: graphs
    for that would cost compile time for no gain, so ``model.eval()`` switches back to eager.
    """
    eager = layer.forward
    # Dynamic shapes under CUDA graphs too: one compiled graph, recorded once per batch shape.
    compiled = torch.compile(eager, dynamic=True, mode=mode)

    def forward(*args, **kwargs):
        return compiled(*args, **kwargs) if layer.training else eager(*args, **kwargs)

    layer.forward = forward


def begin_step(cfg: SpeedConfig) -> None:
    """Tell CUDA graphs (``compile_mode="reduce-overhead"``) that a new forward/backward begins, so the
    memory of the previous one's graph outputs may be reused. Call before each micro-batch."""
    if cfg.compile_layers and cfg.compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


def drop_causal_mask(batch: dict, enabled: bool) -> dict:
    """The batch without its attention mask when every row is right-padded (``maskless``).

    A causal decoder never lets a real token see a later position, so right padding changes no real
    token's output; the pad positions carry no label. Left-padded or gapped rows keep the mask. The
    loss then runs attention without a mask (``loss.unmasked_attention``).
    """
    mask = batch.get("attention_mask")
    if not enabled or mask is None or "labels" not in batch:
        return batch
    if mask.shape[1] > 1 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        return batch  # a 0 followed by a 1: not right padding
    return {k: v for k, v in batch.items() if k != "attention_mask"}


def maskless_supported(model: nn.Module) -> bool:
    """Whether dropping the mask is exact for the model's family: a causal decoder with positions from
    the sequence index (Llava, LLaVA-NeXT). Models that derive positions from the mask (Qwen2-VL's
    M-RoPE) or attend to images both ways (Gemma 3, PaliGemma) keep it."""
    return MASKLESS not in family_of(model).off_levers


def for_family(model: nn.Module, cfg: SpeedConfig) -> tuple[SpeedConfig, list[str]]:
    """``cfg`` with the levers the model's family cannot use turned off, and one line for each that
    was on, saying why. The image feature cache says so itself (finetune/feature_cache.py ``for_run``)."""
    family = family_of(model)
    off: dict[str, str] = {}
    if cfg.maskless and MASKLESS in family.off_levers:
        off[MASKLESS] = family.off_levers[MASKLESS]
    if cfg.answer_only_last_mlp and getattr(last_decoder_layer(model), "mlp", None) is None:
        off["answer_only_last_mlp"] = "no decoder layers found under model.language_model (or text_model)"
    name = type(core_model(model)).__name__
    lines = [f"{lever} off for {name} ({family.name}): {why}" for lever, why in off.items()]
    return replace(cfg, **dict.fromkeys(off, False)), lines


def resolve(name: str, overrides: Mapping[str, Any] | None = None, *, cuda: bool) -> SpeedConfig:
    """The run's levers: the preset, then the levers set on their own; compilation on CUDA only
    (``presets.resolve``)."""
    return presets.resolve(name, overrides, cuda=cuda)

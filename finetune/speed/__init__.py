"""Speed levers for the training step: ``SpeedConfig`` (one field a lever) and the presets that bundle
the ones that paid off (config.py), one module a lever, and the two entry points a run calls:
``prepare_model(model, speed)`` once, after peft has wrapped the model and before the first step, and
``prepare_batch(batch, speed)`` for each micro-batch, on the host, before it moves to the device.
``for_family`` first turns off the levers the model's family cannot use.

Each lever leaves the loss unchanged (tests/test_finetune_speed.py compares losses step by step)
except ``lora_dropout``, which a preset sets to 0 only when the run gives no ``--lora-dropout``:

- ``maskless`` (maskless.py): right-padded batches of a causal decoder lose their attention mask.
- ``compile_layers``, ``activation_memory_budget`` (compile.py): ``torch.compile``
  of each transformer block, and how much activation memory its graphs keep for backward.
- ``pad_to_multiple_of``: batch widths rounded up (few shapes), applied by the collator (finetune/data.py).
- ``fused_lora`` (fused_lora.py): each adapter's term added inside the frozen weight's
  matmul instead of by a separate elementwise pass over the layer's output, forward and backward.
- ``cache_image_features`` (feature_cache.py): a frozen vision tower's features are computed in the
  first epoch only; later epochs skip the tower. Exact: the training images are not augmented.
- ``answer_only_last_mlp`` (answer_mlp.py): the last decoder layer's MLP runs at the answer positions
  only (the loss reads nothing else of it).
- ``lora_dropout`` 0: dropout writes a masked copy of every adapted layer's input and keeps it for
  backward, pure memory traffic at the scale of the activations.

Outside ``SpeedConfig``, always on: the CUDA allocator's expandable segments (allocator.py) and
Python's garbage collector on the loop's schedule (gc.py). How each choice was measured, and the
levers that were tried and retired (a widened-weight LoRA GEMM, CUDA-graph compile modes):
bench/results/speed_levers_history.md.

This package imports without torch (the CLI and ``FinetuneConfig`` read ``SpeedConfig`` and
``PRESETS`` before torch loads): the lever modules that need it load when a model is prepared.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..families import MASKLESS, core_model, family_of, last_decoder_layer
from .config import PRESETS, SpeedConfig, preset, resolve
from .maskless import drop_causal_mask, maskless_supported

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PRESETS", "SpeedConfig", "drop_causal_mask", "for_family", "maskless_supported", "preset",
           "prepare_batch", "prepare_model", "resolve"]


def for_family(model: nn.Module, cfg: SpeedConfig) -> tuple[SpeedConfig, list[str]]:
    """``cfg`` with the levers the model's family cannot use turned off, and one line for each that
    was on, saying why. The image feature cache says so itself (feature_cache.py ``for_run``)."""
    family = family_of(model)
    off: dict[str, str] = {}
    if cfg.maskless and MASKLESS in family.off_levers:
        off[MASKLESS] = family.off_levers[MASKLESS]
    if cfg.answer_only_last_mlp and getattr(last_decoder_layer(model), "mlp", None) is None:
        off["answer_only_last_mlp"] = "no decoder layers found under model.language_model (or text_model)"
    name = type(core_model(model)).__name__
    lines = [f"{lever} off for {name} ({family.name}): {why}" for lever, why in off.items()]
    return replace(cfg, **dict.fromkeys(off, False)), lines


def prepare_model(model: nn.Module, speed: SpeedConfig) -> int:
    """Apply the model-side levers in place; returns how many blocks were compiled. Call after peft
    has wrapped the model, before the first step.

    The memory budget is a process-wide setting of torch's partitioner, read when a graph compiles.
    A model whose blocks are not transformers' ``GradientCheckpointingLayer`` (remote-code models
    such as Phi-3-vision) gets no compiled block: the caller says so.
    """
    from . import answer_mlp, compile, fused_lora   # torch: loaded with the model, not with the package

    compile.set_memory_budget(speed.activation_memory_budget, speed.compile_layers)
    if speed.fused_lora:
        fused_lora.fuse_lora_linears(model)
    if speed.answer_only_last_mlp:
        answer_mlp.patch(model)
    if speed.compile_layers:
        return compile.compile_blocks(model)
    return 0


def prepare_batch(batch: dict, speed: SpeedConfig) -> dict:
    """A training micro-batch as the levers want it, on the host before it moves to the device:
    without its attention mask when maskless (``drop_causal_mask``)."""
    return drop_causal_mask(batch, speed.maskless)

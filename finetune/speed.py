"""Speed levers for the training step, and the presets (``--preset``) that bundle the ones that paid off.

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

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads PRESETS before torch loads
    from torch import nn


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


def preset(name: str, **overrides) -> SpeedConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def repeated_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every tower (decoder and vision encoder), found by their base class."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def apply_speed(model: nn.Module, cfg: SpeedConfig) -> int:
    """Apply the model-side levers in place; returns how many blocks were compiled. Call after peft
    has wrapped the model, before the first step.

    The memory budget is a process-wide setting of torch's partitioner, read when a graph compiles.
    A model whose blocks are not transformers' ``GradientCheckpointingLayer`` (remote-code models
    such as Phi-3-vision) gets no compiled block: the caller says so.
    """
    if cfg.activation_memory_budget < 1.0 or cfg.compile_layers:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = cfg.activation_memory_budget
    if cfg.fused_lora:
        from .fused_lora import fuse_lora_linears, widen_lora_linears

        fuse_lora_linears(model)
        if cfg.wide_lora:
            widen_lora_linears(model)
    if cfg.answer_only_last_mlp:
        from .answer_mlp import patch

        patch(model)
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
    import torch

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
        import torch

        torch.compiler.cudagraph_mark_step_begin()


def drop_causal_mask(batch: dict, enabled: bool) -> dict:
    """The batch without its attention mask when every row is right-padded (``maskless``).

    A causal decoder never lets a real token see a later position, so right padding changes no real
    token's output; the pad positions carry no label. Left-padded or gapped rows keep the mask.
    """
    mask = batch.get("attention_mask")
    if not enabled or mask is None or "labels" not in batch:
        return batch
    if mask.shape[1] > 1 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        return batch  # a 0 followed by a 1: not right padding
    return {k: v for k, v in batch.items() if k != "attention_mask"}


# transformers' SDPA attention under a name that has no mask function: the decoder then builds no
# mask at all and SDPA runs with ``is_causal``. The same kernel and result as "sdpa" without a mask,
# minus the mask builder's check for packed sequences, which reads a device tensor on the host
# (a GPU sync in the middle of every forward).
UNMASKED_SDPA = "sdpa_unmasked"


@contextlib.contextmanager
def unmasked_attention(config):
    """While active, a decoder with SDPA attention (``config``) runs causal attention without a mask.

    For maskless batches only (``drop_causal_mask``): right padding, nothing packed.
    """
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register(UNMASKED_SDPA, sdpa_attention_forward)  # idempotent: a dict entry
    config._attn_implementation = UNMASKED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def maskless_supported(model: nn.Module) -> bool:
    """Whether dropping the mask is exact: a Llava-family model (causal decoder, positions from the
    sequence index). Models that derive positions from the mask (Qwen2-VL's M-RoPE) keep it."""
    from .loss import llava_backbone

    return llava_backbone(model) is not None


def resolve(name: str, *, cuda: bool) -> SpeedConfig:
    """The preset for a run: compilation only where it pays (CUDA)."""
    cfg = preset(name)
    if cfg.compile_layers and not cuda:
        cfg = replace(cfg, compile_layers=False, activation_memory_budget=1.0)
    return cfg

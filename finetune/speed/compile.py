"""``compile_layers``: ``torch.compile`` of each transformer block (decoder and vision tower).

Eager mode spends over half of a LoRA step in memory-bound elementwise kernels (fp32 RMSNorm, rotary,
SwiGLU, residual adds, the LoRA adds); the compiler fuses them. Blocks rather than the whole model:
one graph is reused by every layer, and the data-dependent parts (image-token scatter, answer
gather) stay in eager mode. Compiled with dynamic shapes, so a new batch width or size is no
recompile; compiled forwards run in training mode only (generation keeps the eager layers).

``activation_memory_budget``: the fraction of activation memory the compiler's partitioner may
keep for backward; below 1 it recomputes cheap ops instead of saving them (memory for time).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def repeated_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every tower (decoder and vision encoder), found by their base class."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def set_memory_budget(budget: float, compiling: bool) -> None:
    """The partitioner's activation memory budget: a process-wide setting, read when a graph compiles."""
    # torch's compiler stack (dynamo, functorch's partitioner) takes seconds to import: loaded only
    # when a run compiles or sets a memory budget.
    if budget < 1.0 or compiling:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = budget


def compile_blocks(model: nn.Module) -> int:
    """Compile every transformer block of ``model`` for training; returns how many.

    A model whose blocks are not transformers' ``GradientCheckpointingLayer`` (remote-code models
    such as Phi-3-vision) gets no compiled block: the caller says so.
    """
    import torch._dynamo.config as dynamo_config

    # Every block of a tower shares one code object, so its graphs count against one limit:
    # two decoder graphs (input with / without grad) and the vision tower's, with room to spare.
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 16)
    layers = repeated_layers(model)
    for layer in layers:
        compile_for_training(layer)
    return len(layers)


def compile_for_training(layer: nn.Module) -> None:
    """Run ``layer`` compiled in training mode and eager otherwise.

    Generation (evaluation) calls the blocks with a growing KV cache, one token at a time: graphs
    for that would cost compile time for no gain, so ``model.eval()`` switches back to eager.
    """
    eager = layer.forward
    compiled = torch.compile(eager, dynamic=True)

    def forward(*args, **kwargs):
        return compiled(*args, **kwargs) if layer.training else eager(*args, **kwargs)

    layer.forward = forward


"""LoRA linears whose adapter term is added inside the frozen weight's matmul.

peft computes ``base(x) + B(A(x)) * s`` as three kernels' worth of full-size traffic: the base
matmul writes its output, the adapter's rank-r product writes another tensor of the same size, and
an elementwise kernel reads both to write the sum; backward does the same for the input gradient.
Here the adapter term is the ``C`` of one ``addmm`` (``C + x @ W.T``): cuBLAS reads it in the
matmul's epilogue while the GEMM is compute-bound, so the sum costs no pass of its own. Backward
does the same for ``g @ W + (g @ B s) @ A``. The adapter weights and their gradients are peft's, so
saving, merging and evaluation are unchanged; a layer that is merged, disabled, has dropout or
a variant (DoRA) keeps peft's forward.
"""
from __future__ import annotations

import types

import torch
from torch import nn


# Custom ops rather than plain torch code: the compiler treats them as opaque kernels. Traced as
# plain ops, an addmm whose output only feeds elementwise ops can be split back into a matmul and an
# add by inductor's post-grad pass (unfuse_bias_add_to_pointwise; torch 2.11 has no switch for it),
# which is exactly the separate pass this module exists to remove.
@torch.library.custom_op("vlm_catalog::lora_linear", mutates_args=())
def _lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                  lora_b: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x @ W.T + s * (x @ A.T) @ B.T (+ bias)`` for 2-D ``x``, and ``s * x @ A.T`` for backward."""
    xa = (x @ lora_a.t()) * scaling           # [tokens, r]: the scaling rides on the small tensor
    out = xa @ lora_b.t() if bias is None else torch.addmm(bias, xa, lora_b.t())
    # In place: an out-of-place addmm first copies C into its result (a full pass of its own).
    return out.addmm_(x, weight.t()), xa


@_lora_forward.register_fake
def _(x, weight, bias, lora_a, lora_b, scaling):
    return x.new_empty(x.shape[0], weight.shape[0]), x.new_empty(x.shape[0], lora_a.shape[0])


@torch.library.custom_op("vlm_catalog::lora_linear_backward", mutates_args=())
def _lora_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor,
                   lora_b: torch.Tensor, xa: torch.Tensor, scaling: float,
                   needs_x: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of x (empty when not needed), A and B: ``dx = g @ W + (s * g @ B) @ A`` in one addmm."""
    gb = (grad @ lora_b) * scaling            # [tokens, r]
    grad_x = (gb @ lora_a).addmm_(grad, weight) if needs_x else x.new_empty(0)
    return grad_x, gb.t() @ x, grad.t() @ xa


@_lora_backward.register_fake
def _(grad, x, weight, lora_a, lora_b, xa, scaling, needs_x):
    return (x.new_empty(x.shape) if needs_x else x.new_empty(0)), lora_a.new_empty(lora_a.shape), \
        lora_b.new_empty(lora_b.shape)


def _setup_context(ctx, inputs, output):
    x, weight, _, lora_a, lora_b, scaling = inputs
    ctx.save_for_backward(x, weight, lora_a, lora_b, output[1])
    ctx.scaling = scaling


def _backward(ctx, grad, _grad_xa):
    x, weight, lora_a, lora_b, xa = ctx.saved_tensors
    grad_x, grad_a, grad_b = _lora_backward(grad.contiguous(), x, weight, lora_a, lora_b, xa, ctx.scaling,
                                            ctx.needs_input_grad[0])
    return (grad_x if ctx.needs_input_grad[0] else None), None, None, grad_a, grad_b, None


_lora_forward.register_autograd(_backward, setup_context=_setup_context)


def lora_linear(x: torch.Tensor, weight, bias, lora_a, lora_b, scaling: float) -> torch.Tensor:
    """The LoRA linear of ``x`` (any leading shape): one addmm forward, one addmm for the input gradient."""
    flat = x.reshape(-1, x.shape[-1])
    return _lora_forward(flat, weight, bias, lora_a, lora_b, float(scaling))[0].view(*x.shape[:-1], weight.shape[0])


def _fusable(layer) -> str | None:
    """The one adapter a peft ``lora.Linear`` runs, when its forward is plain LoRA we can fuse."""
    adapters = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(adapters) != 1 or getattr(layer, "fan_in_fan_out", False):
        return None
    name = adapters[0]
    if (name in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(name)
            or not isinstance(layer.lora_dropout[name], nn.Identity)
            or type(layer.get_base_layer()) is not nn.Linear or layer.get_base_layer().weight.requires_grad):
        return None
    return name


def _autocasts_to(x: torch.Tensor) -> bool:
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == x.dtype


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft ``lora.Linear``'s forward through ``lora_linear``; peft's own (the class's) otherwise."""
    name = None if (args or kwargs or self.merged or self.disable_adapters) else _fusable(self)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.get_base_layer()
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    # peft keeps adapters in fp32 over a bf16 model; under autocast its matmuls run in bf16, and so
    # do these (the casts' backward hands fp32 gradients to the fp32 adapters).
    if a.dtype != x.dtype and _autocasts_to(x):
        a, b = a.to(x.dtype), b.to(x.dtype)
    if not (x.dtype == base.weight.dtype == a.dtype == b.dtype):
        return type(self).forward(self, x, *args, **kwargs)
    return lora_linear(x, base.weight, base.bias, a, b, self.scaling[name])


def fuse_lora_linears(model: nn.Module) -> int:
    """Run every plain peft LoRA linear of ``model`` through ``lora_linear``; returns how many.

    The check is repeated at each call, so merging, disabling adapters or peft's mixed-batch
    inference fall back to peft's own forward.
    """
    try:
        from peft.tuners.lora import Linear as PeftLoraLinear
    except ImportError:
        return 0
    fused = 0
    for module in model.modules():
        if isinstance(module, PeftLoraLinear) and _fusable(module) is not None:
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused


"""The decoder's last MLP computed only at the positions the loss reads.

The answer loss reads the last hidden state at ~20 positions of a ~610-token row. Every layer but
the last must still run at every position (later layers attend to all of them), but the last
layer's MLP works position by position and feeds nothing but the final norm and the head: at the
other positions its output is never read. So it runs on the answer positions only and leaves zeros
elsewhere: the same loss and gradients, and about two thirds of one layer's matmuls fewer a step.

The positions are the loss's own (``loss.ANSWER_INDEX_KEY``), handed over for the duration of one
forward by ``answer_positions``. The MLP is patched in place (its forward, not its place in the
module tree), so parameter names, checkpoints and adapters are unchanged.
"""
from __future__ import annotations

import contextlib
import types

import torch
from torch import nn

from ..families import last_decoder_layer

_POSITIONS = "_answer_positions"


def _answer_only_forward(self, hidden: torch.Tensor) -> torch.Tensor:
    positions = getattr(self, _POSITIONS, None)
    if positions is None or not self.training:
        return type(self).forward(self, hidden)
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = type(self).forward(self, flat.index_select(0, positions))
    return flat.new_zeros(flat.shape).index_copy(0, positions, out).view(hidden.shape)


def last_decoder_mlp(model: nn.Module) -> nn.Module | None:
    return getattr(last_decoder_layer(model), "mlp", None)


def patch(model: nn.Module) -> bool:
    """Let the last decoder MLP run at the answer positions only (under ``answer_positions``)."""
    mlp = last_decoder_mlp(model)
    if mlp is None:
        return False
    mlp.forward = types.MethodType(_answer_only_forward, mlp)
    setattr(mlp, _POSITIONS, None)
    return True


@contextlib.contextmanager
def answer_positions(model: nn.Module, positions: torch.Tensor):
    """While active, a patched last MLP computes only the flat ``[batch * seq]`` ``positions``.

    Not under gradient checkpointing: its backward re-runs the forward after this context has
    ended, and must compute what the forward did.
    """
    layer = last_decoder_layer(model)
    mlp = getattr(layer, "mlp", None)
    # transformers' checkpointed layers carry ``gradient_checkpointing = True``.
    if mlp is None or not hasattr(mlp, _POSITIONS) or getattr(layer, "gradient_checkpointing", False):
        yield
        return
    setattr(mlp, _POSITIONS, positions)
    try:
        yield
    finally:
        setattr(mlp, _POSITIONS, None)

"""``maskless``: right-padded training batches of a causal decoder lose their attention mask.

Training batches are right-padded and the decoder is causal, so no real token ever attends to a pad
token and the attention mask can go. Every batch then takes the same attention path (flash / cuDNN
instead of the masked kernel) and one compiled graph serves every step. ``drop_causal_mask`` takes
the mask off a batch (``prepare_batch``); the loss then runs attention without one
(``unmasked_attention``), which also skips transformers' mask builder and its host sync.

Nothing here imports torch at import time: the package's torch-free part (the CLI) imports it.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..families import MASKLESS, family_of

if TYPE_CHECKING:
    from torch import nn

# transformers' SDPA attention under a name that has no mask function: the decoder then builds no
# mask at all and SDPA runs with ``is_causal``. The same kernel and result as "sdpa" without a mask,
# minus the mask builder's check for packed sequences, which reads a device tensor on the host
# (a GPU sync in the middle of every forward).
UNMASKED_SDPA = "sdpa_unmasked"


def drop_causal_mask(batch: dict, enabled: bool) -> dict:
    """The batch without its attention mask when every row is right-padded (``maskless``).

    A causal decoder never lets a real token see a later position, so right padding changes no real
    token's output; the pad positions carry no label. Left-padded or gapped rows keep the mask. The
    loss then runs attention without a mask (``unmasked_attention``).
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


@contextlib.contextmanager
def unmasked_attention(config):
    """While active, a decoder with SDPA attention (``config``) runs causal attention without a mask.

    For maskless batches only (``drop_causal_mask``): right padding, nothing packed.
    """
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    # Here rather than at the top: transformers' attention modules import torch (see the docstring).
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register(UNMASKED_SDPA, sdpa_attention_forward)  # idempotent: a dict entry
    config._attn_implementation = UNMASKED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"

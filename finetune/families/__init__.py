"""What the training code knows about a model's layout, one module per model family.

``llava`` is the first family (Llava: a vision tower, a projector and a decoder; the built-in models
and Phi-3-style decoders). Levers and the loss find the parts they work on here instead of in the
model classes themselves, so another family plugs in beside it. Nothing here imports torch: the
scoring side (finetune/evaluate.py) uses ``core_model`` and must import without it.
"""
from __future__ import annotations


def core_model(model):
    """The transformers model under any peft wrapping."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model

"""The Llava family: a vision tower, a multi-modal projector and a decoder (``language_model``) under
``model.model``; the built-in ``tiny`` and ``phi3v-shape`` models are Llava models with a Phi-3 decoder.

Llava is the family the loss's shortcut serves (finetune/loss.py ``image_features``: the tower's
selected layer, the projector, the merge into the token embeddings), and with it the image feature
cache. Other models with the same three parts (Gemma 3, PaliGemma, LLaVA-NeXT) select, pool or
arrange their features otherwise, so the shortcut goes by ``config.model_type``, not by the parts.

Every function takes the model as training holds it (peft-wrapped or not) and answers ``None`` for a
model of another family, so a lever that needs these parts turns itself off there.
"""
from __future__ import annotations

from .base import Family, core_model
from .base import last_decoder_layer as _last_layer

LLAVA = Family(name="llava", model_types=("llava",), processors=("LlavaProcessor",), llava_parts=True,
               dropped=("token_type_ids",))


def is_llava(backbone) -> bool:
    """Whether ``backbone`` (a model's ``.model``) is a Llava model's, with Llava's parts."""
    parts = all(hasattr(backbone, a) for a in ("vision_tower", "multi_modal_projector", "language_model"))
    return parts and getattr(getattr(backbone, "config", None), "model_type", None) in LLAVA.model_types


def llava_backbone(model):
    """The Llava backbone (vision tower, projector, language model) under any peft wrapping, or
    ``None`` for other models."""
    backbone = getattr(core_model(model), "model", None)
    return backbone if backbone is not None and is_llava(backbone) else None


def last_decoder_layer(model):
    """A Llava model's last decoder layer, or ``None`` for other models."""
    return _last_layer(model) if llava_backbone(model) is not None else None

"""The Llava family: a vision tower, a multi-modal projector and a decoder (``language_model``) under
``model.model``; the built-in ``tiny`` and ``phi3v-shape`` models are Llava models with a Phi-3 decoder.

Every function takes the model as training holds it (peft-wrapped or not) and answers ``None`` for a
model of another family, so a lever that needs these parts turns itself off there.
"""
from __future__ import annotations

from . import core_model


def is_llava(backbone) -> bool:
    """Whether ``backbone`` (a model's ``.model``) has Llava's parts."""
    return all(hasattr(backbone, a) for a in ("vision_tower", "multi_modal_projector", "language_model"))


def llava_backbone(model):
    """The Llava-style backbone (vision tower, projector, language model) under any peft wrapping, or
    ``None`` for other models."""
    backbone = getattr(core_model(model), "model", None)
    return backbone if backbone is not None and is_llava(backbone) else None


def last_decoder_layer(model):
    """A Llava-style model's last decoder layer, or ``None`` for other models."""
    backbone = llava_backbone(model)
    if backbone is None:
        return None
    layers = getattr(backbone.language_model, "layers", None)
    return layers[-1] if layers else None

"""What the training code knows about a model's layout, one module per model family.

A ``Family`` says what the collator, the loss, evaluation and the speed levers must do differently for
one kind of model: which processor outputs run beside ``input_ids`` token by token, whether the loss
may take the Llava shortcut (image features computed and merged by the loss itself, which the
feature cache needs) or must call the model's own backbone forward, how a prompt is written, which
levers cannot apply and why. ``family_of(model)`` looks one up by ``config.model_type``;
``family_of_processor`` by the processor's class (the collator only sees the processor). A model of
no listed family gets ``GENERIC``: its own forward, and only the levers that need no family knowledge.

Nothing here imports torch: the scoring side (finetune/evaluate.py) and the collator (finetune/data.py)
use these lookups and must import without it. ``Family`` and the shared helpers live in ``base``, which
the family modules import; this module imports the family modules (no cycle).
"""
from __future__ import annotations

from .base import FEATURE_CACHE, GENERIC, MASKLESS, Family, core_model, language_model, last_decoder_layer, train_mode
from .gemma3 import GEMMA3, PALIGEMMA
from .llava import FAST_VLM, LLAVA
from .llava_next import LLAVA_NEXT
from .mllama import MLLAMA
from .phi4_multimodal import PHI4_MULTIMODAL
from .qwen2_vl import QWEN2_VL
from .qwen3_vl import QWEN3_VL

__all__ = ["FEATURE_CACHE", "GENERIC", "MASKLESS", "REGISTERED", "Family", "core_model", "family_for", "family_of",
           "family_of_processor", "language_model", "last_decoder_layer", "train_mode"]

REGISTERED: tuple[Family, ...] = (LLAVA, FAST_VLM, LLAVA_NEXT, QWEN2_VL, QWEN3_VL, MLLAMA, PHI4_MULTIMODAL, GEMMA3,
                                   PALIGEMMA)


def family_for(model_type: str | None) -> Family:
    """The family of a ``config.model_type`` (``GENERIC`` for an unknown one)."""
    return next((f for f in REGISTERED if model_type in f.model_types), GENERIC)


def family_of(model) -> Family:
    """The family of a model as training holds it (peft-wrapped or not)."""
    config = getattr(core_model(model), "config", None)
    return family_for(getattr(config, "model_type", None))


def family_of_processor(processor) -> Family:
    """The family of a processor, by its class or a base class's name (built-in ones are Llava's)."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    return next((f for f in REGISTERED if names.intersection(f.processors)), GENERIC)

"""The Llava family: a vision tower, a multi-modal projector and a decoder (``language_model``) under
``model.model``; ``phi3v-shape`` is a Llava model with a Phi-3 decoder, the built-in ``tiny`` a FastVLM
(Llava with a convolutional tower) with one.

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
# FastVLM is Llava with a convolutional (or hybrid) tower: the same three parts, a projector of the same
# shape, but its image tokens are the tower's last feature map flattened (``select_features``). The
# built-in ``tiny`` is one, with a ResNet tower. Real FastVLM checkpoints ship a LlavaProcessor.
FAST_VLM = Family(name="fast_vlm", model_types=("fast_vlm",), llava_parts=True, dropped=("token_type_ids",))
_LLAVA_TYPES = LLAVA.model_types + FAST_VLM.model_types


def select_features(config, tower_output):
    """The projector's input ``[images, tokens, dim]`` from a tower's output (``output_hidden_states``).

    Llava: the configured layer(s) of the hidden states, without CLIP's class token under "default".
    FastVLM: the last feature map ``[images, dim, h, w]`` as ``h * w`` tokens.
    """
    if config.model_type in FAST_VLM.model_types:
        # Contiguous, as a cached copy is: the projector's matmul then sums in the same order either way.
        return tower_output.last_hidden_state.flatten(2).transpose(1, 2).contiguous()
    layer = config.vision_feature_layer
    drop_cls = config.vision_feature_select_strategy == "default"
    layers = [layer] if isinstance(layer, int) else list(layer)
    pool = [tower_output.hidden_states[i][:, 1:] if drop_cls else tower_output.hidden_states[i] for i in layers]
    return pool[0] if len(pool) == 1 else _cat(pool)


def _cat(pool):
    import torch  # only here: this module is imported where torch may be missing (scoring)

    return torch.cat(pool, dim=-1)


def is_llava(backbone) -> bool:
    """Whether ``backbone`` (a model's ``.model``) is a Llava model's, with Llava's parts."""
    parts = all(hasattr(backbone, a) for a in ("vision_tower", "multi_modal_projector", "language_model"))
    return parts and getattr(getattr(backbone, "config", None), "model_type", None) in _LLAVA_TYPES


def llava_backbone(model):
    """The Llava backbone (vision tower, projector, language model) under any peft wrapping, or
    ``None`` for other models."""
    backbone = getattr(core_model(model), "model", None)
    return backbone if backbone is not None and is_llava(backbone) else None


def last_decoder_layer(model):
    """A Llava model's last decoder layer, or ``None`` for other models."""
    return _last_layer(model) if llava_backbone(model) is not None else None

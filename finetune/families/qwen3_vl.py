"""Qwen3-VL (and its MoE sibling, which shares its processor and its backbone's inputs): Qwen2.5-VL's
layout (flat patches, ``image_grid_thw``, M-RoPE from ``mm_token_type_ids`` and the attention mask)
with "deepstack" features, the tower's intermediate layers added to the decoder's first layers'
hidden states at the image tokens.

The deepstack sums happen inside the backbone's forward, at the positions of the image tokens it finds
in ``input_ids``: so the loss runs the model's own backbone (no Llava shortcut, no cached features),
and a batch needs nothing beyond Qwen2-VL's: ``mm_token_type_ids`` at the width of ``input_ids``
(0 on the answer and padding) and the image inputs concatenated over the rows. Its processor also
holds a video processor, which needs torchvision; ``image_only_processor`` loads it without one.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from .base import FEATURE_CACHE, MASKLESS, Family
from .qwen2_vl import image_only_class


def image_only_processor(path: str, kwargs: dict) -> Any:
    """The Qwen3-VL processor saved at ``path`` with its image processor and tokenizer only."""
    import transformers

    return image_only_class(transformers.Qwen3VLProcessor).from_pretrained(path, **kwargs)


QWEN3_VL = Family(
    name="qwen3-vl",
    model_types=("qwen3_vl", "qwen3_vl_moe"),
    processors=("Qwen3VLProcessor",),
    dropped=("token_type_ids",),
    answer_token_values=MappingProxyType({"mm_token_type_ids": 0}),
    off_levers=MappingProxyType({
        MASKLESS: "M-RoPE position ids are computed from the attention mask",
        FEATURE_CACHE: "its deepstack features enter the decoder's first layers inside its own forward",
    }),
    image_only_processor=image_only_processor,
)

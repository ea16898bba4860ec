"""Qwen2-VL and Qwen2.5-VL: a ViT over flat patches (``pixel_values`` ``[patches, dim]``, every image's
patches concatenated), ``image_grid_thw`` (one ``[t, h, w]`` row an image: its patch grid, so its token
count varies with its size) and M-RoPE, whose three-part position ids the model computes from
``mm_token_type_ids`` and the attention mask.

So a batch carries ``mm_token_type_ids`` at the width of ``input_ids`` (0 on the answer and padding),
the loss runs the model's own backbone (it alone knows the rope index), and the mask stays.
Their processors also hold a video processor, which needs torchvision; ``image_only_processor``
loads the processor without it, for image-only training.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from .base import FEATURE_CACHE, MASKLESS, Family

PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")


def image_only_class(base: type) -> type:
    """``base`` (a Qwen2-VL-style processor class) without its video processor, under ``base``'s name.

    ProcessorMixin takes a processor's parts from its ``__init__`` signature, and checks each one's
    class, the video processor's too even when it is ``None``: a class needing torchvision. Without
    ``video_processor`` in the signature neither happens; keeping the name means what it saves reads
    as the real processor's files.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})


def image_only_processor(path: str, kwargs: dict) -> Any:
    """The processor saved at ``path`` with its image processor and tokenizer only."""
    from pathlib import Path

    import transformers

    name = _processor_class(Path(path)) if Path(path).is_dir() else None
    base = getattr(transformers, name if name in PROCESSORS else "Qwen2_5_VLProcessor")
    return image_only_class(base).from_pretrained(path, **kwargs)


def _processor_class(path) -> str | None:
    """The processor class a saved processor names (processor_config.json, else the image processor's)."""
    import json

    for file in ("processor_config.json", "preprocessor_config.json"):
        try:
            name = json.loads((path / file).read_text(encoding="utf-8")).get("processor_class")
        except (OSError, ValueError, AttributeError):
            continue
        if name:
            return name
    return None


QWEN2_VL = Family(
    name="qwen2-vl",
    model_types=("qwen2_vl", "qwen2_5_vl"),
    processors=PROCESSORS,
    dropped=("token_type_ids",),
    answer_token_values=MappingProxyType({"mm_token_type_ids": 0}),
    off_levers=MappingProxyType({
        MASKLESS: "M-RoPE position ids are computed from the attention mask",
        FEATURE_CACHE: "image token counts vary with the image size (the cache holds one shape)",
    }),
    image_only_processor=image_only_processor,
)

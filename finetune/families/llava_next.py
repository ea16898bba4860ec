"""LLaVA-NeXT: Llava's parts, with "anyres" images: each image is cut into crops of the tower's size
plus a downscaled whole (``pixel_values`` ``[images, crops, 3, H, W]``, the crop count varying with
the image's shape: the collator zero-pads it), ``image_sizes`` says which crops are real, and the
features are rearranged into rows with an ``image_newline`` after each.

The loss runs the model's own backbone, which knows that arrangement (the Llava shortcut fed the 5-D
pixels to the tower as is). The decoder is causal with positions from the sequence index, so a
right-padded batch needs no mask (``maskless``). The feature cache holds one shape a row, and the
token count varies with the image's shape, so it stays off.
"""
from __future__ import annotations

from types import MappingProxyType

from .base import FEATURE_CACHE, Family

LLAVA_NEXT = Family(
    name="llava-next",
    model_types=("llava_next",),
    processors=("LlavaNextProcessor",),
    dropped=("token_type_ids",),
    off_levers=MappingProxyType({
        FEATURE_CACHE: "its image token counts vary with the image's shape (the cache holds one shape)",
    }),
)

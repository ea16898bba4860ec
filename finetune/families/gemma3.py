"""Gemma 3 and PaliGemma: a SigLIP tower and a projector before a Gemma decoder, whose attention is not
purely causal. Gemma 3's image tokens attend to each other both ways (``token_type_ids`` marks them);
PaliGemma attends to its whole prefix (image and prompt) both ways and to its answer causally
(``token_type_ids`` 0 on the prefix, 1 on the answer).

They have Llava's three parts, but not its features: Gemma 3 pools the tower's last layer, PaliGemma
scales the projection. So the loss runs their own backbone with ``token_type_ids``, which the
collator pads to the batch's width, and the attention mask stays (it carries the bidirectional part).
PaliGemma's prompt is its own prefix format (the image, then the question), and its processor's
labels (all -100, at the prompt's width) are dropped for the collator's.
"""
from __future__ import annotations

from types import MappingProxyType

from .base import FEATURE_CACHE, MASKLESS, Family


def paligemma_prompt(question: str, image_token: str) -> str:
    """PaliGemma's prefix: the image, then the question; its processor adds ``<bos>`` after the image
    and the ``\\n`` that separates the prefix from the answer."""
    return f"{image_token}{question}"


GEMMA3 = Family(
    name="gemma3",
    model_types=("gemma3",),
    processors=("Gemma3Processor",),
    answer_token_values=MappingProxyType({"token_type_ids": 0}),
    off_levers=MappingProxyType({
        MASKLESS: "its image tokens attend to each other both ways, through the mask the decoder builds",
        FEATURE_CACHE: "Gemma 3 pools its image features in its own forward",
    }),
)

PALIGEMMA = Family(
    name="paligemma",
    model_types=("paligemma",),
    processors=("PaliGemmaProcessor",),
    answer_token_values=MappingProxyType({"token_type_ids": 1}),
    off_levers=MappingProxyType({
        MASKLESS: "its prefix (image and prompt) is attended both ways, through the mask the decoder builds",
        FEATURE_CACHE: "PaliGemma scales its image features in its own forward",
    }),
    prompt=paligemma_prompt,
)

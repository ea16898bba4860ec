"""Mllama (Llama 3.2 Vision): no image tokens in the sequence. The prompt holds one ``<|image|>``; the
tower's output (every tile's patches) is cross-attended by the decoder's cross-attention layers, and
``cross_attention_mask`` ``[batch, seq, images, tiles]`` says which tiles each token may see (from
the image token on, the image's real tiles). The tiles come as ``pixel_values`` ``[batch, images,
tiles, 3, H, W]`` with ``aspect_ratio_ids`` and ``aspect_ratio_mask``.

So the collator pads ``cross_attention_mask`` beside ``input_ids``: the answer's tokens repeat the
prompt's last row (they see the image as the prompt's text after it does; ``generate`` extends it the
same way for new tokens), padding sees nothing. The loss runs the model's own backbone (there are no
image features to merge into the embeddings, so no Llava shortcut and no feature cache). The
self-attention is causal with positions from the sequence index, so a right-padded batch needs no
mask (``maskless`` stays). Its cross-attention states are one image a row: a text-only row cannot
share a batch with image rows, so such rows are skipped.
"""
from __future__ import annotations

from types import MappingProxyType

from .base import FEATURE_CACHE, Family

MLLAMA = Family(
    name="mllama",
    model_types=("mllama",),
    processors=("MllamaProcessor",),
    dropped=("token_type_ids",),
    answer_repeats_prompt_end=("cross_attention_mask",),
    text_only_rows=False,
    off_levers=MappingProxyType({
        FEATURE_CACHE: "its decoder cross-attends to the tower's output: no image features to cache",
    }),
)

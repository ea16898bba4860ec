"""What loading a model gives the rest of the pipeline: the model, its processor and a few facts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LoadedModel:
    """A model, its processor and what the rest of the pipeline needs to know about them."""

    model: Any                  # a transformers PreTrainedModel (before peft wrapping)
    processor: Any              # a ProcessorMixin with .tokenizer and .image_processor
    name: str                   # "tiny", "phi3v-shape" or the id/path given
    builtin: bool
    image_token: str            # the placeholder the prompt carries; the processor expands it
    end_token: str              # what closes an answer (and stops generation)
    train_vision: bool          # default for training the vision tower and projector
    train_embeddings: bool      # under LoRA, train embeddings, final norm and lm_head in full
    default_lr: float
    phi3_chat: bool             # prompt in Phi-3's chat format (else the processor's chat template)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def end_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.end_token)


def random_weights(config, tokenizer, *, device=None, dtype=None, seed: int = 0, init=None):
    """A model of ``config`` with seeded random weights, built directly on ``device`` in ``dtype``
    (``"meta"``: the skeleton only), generating with ``tokenizer``'s pad, end and begin ids.

    The built-in models and their family twins are made here. ``init`` adjusts the fresh weights
    (a twin whose projection would start at zeros).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32)
    if init is not None:
        init(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


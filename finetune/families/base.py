"""The parts every family module shares: ``Family`` (a family's hooks), the levers a family can turn
off, and how to find the decoder under any peft wrapping. A leaf module: the family modules import it,
and finetune/families/__init__.py imports them, so nothing imports in a circle. No torch here.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Levers (finetune/speed/config.py SpeedConfig fields) a family can turn off, each with its reason.
MASKLESS = "maskless"
FEATURE_CACHE = "cache_image_features"


@dataclass(frozen=True)
class Family:
    """One model family's hooks (what each is for: finetune/families/__init__.py)."""

    name: str
    model_types: tuple[str, ...] = ()
    # Processor classes of the family, by class name (an image-only stand-in keeps its base's name).
    processors: tuple[str, ...] = ()
    # Processor outputs with one value per prompt token, padded beside input_ids by the collator, with
    # the value the answer's tokens (and generated ones) take: PaliGemma marks its answer with 1.
    # Other integer outputs of the prompt's width are padded too, with 0 for the answer.
    answer_token_values: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Per-token outputs whose answer tokens repeat the prompt's last token's value (as ``generate``
    # extends them for new tokens): Mllama's ``cross_attention_mask`` ``[1, prompt, images, tiles]``,
    # so the answer attends to the image as the prompt's text after the image does.
    answer_repeats_prompt_end: tuple[str, ...] = ()
    # Whether a row without an image may share a batch with image rows. Mllama's cross-attention
    # takes one image state a row, so its text-only rows are skipped (as unreadable ones are).
    text_only_rows: bool = True
    # Processor outputs the model must not see. ``labels`` always goes: a processor's own labels
    # (PaliGemma's, all -100 at the prompt's width) would replace the collator's answer labels.
    dropped: tuple[str, ...] = ()
    # The loss computes image features itself (tower, layer selection, projector) and merges them:
    # the Llava shortcut, which the image feature cache relies on. Else the backbone's own forward.
    llava_parts: bool = False
    # Levers that cannot apply to the family, with why (said once, when a run turns one off).
    off_levers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The prompt (question, image token) -> text, where the family has its own format and no chat template.
    prompt: Callable[[str, str], str] | None = None
    # Loaded with AutoModelForCausalLM: a vision model transformers files as a causal LM (Phi-4-multimodal).
    causal_lm: bool = False
    # Loads the family's processor from a path when AutoProcessor cannot (no torchvision: video processors).
    image_only_processor: Callable[[str, dict], Any] | None = None
    # (backbone, image inputs, input_ids) -> the image path's output, where the backbone has no
    # ``get_image_features``: what a process without an image runs on a stand-in (finetune/distributed.py).
    image_pass: Callable[[Any, dict, Any], Any] | None = None

    def drops(self, key: str) -> bool:
        return key == "labels" or key in self.dropped


GENERIC = Family(
    name="generic",
    # As before families: token_type_ids went nowhere for models the kit did not know.
    dropped=("token_type_ids",),
    off_levers=MappingProxyType({
        MASKLESS: "not known to be exact for this model (its positions or mask may depend on the padding)",
        FEATURE_CACHE: "the model computes its image features in its own forward",
    }),
)


def core_model(model):
    """The transformers model under any peft wrapping."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def language_model(model):
    """The decoder stack (``model.model.language_model``, Idefics3's ``text_model``) under any peft
    wrapping, or ``None``."""
    backbone = getattr(core_model(model), "model", None)
    return getattr(backbone, "language_model", None) or getattr(backbone, "text_model", None)


def last_decoder_layer(model):
    """The decoder's last layer, or ``None`` where the model has no ``language_model.layers``."""
    layers = getattr(language_model(model), "layers", None)
    return layers[-1] if layers else None


def train_mode(model) -> None:
    """``model.train()``, except that frozen normalisation layers with running statistics stay in eval.

    A frozen BatchNorm in train mode normalises with each batch's statistics and keeps moving its running
    ones: a frozen convolutional tower (the built-in tiny's ResNet under --no-train-vision) would change
    while nothing trains it, and its features would depend on which rows share a batch, so the feature
    cache would no longer be exact. ViT towers have none: for them this is ``model.train()``.
    """
    model.train()
    for module in model.modules():
        if getattr(module, "running_mean", None) is not None and not any(p.requires_grad for p in module.parameters()):
            module.eval()


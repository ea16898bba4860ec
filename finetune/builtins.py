"""The built-in models: random-weight Llava models made from configs, so nothing is downloaded.

``LlavaForConditionalGeneration`` (a vision tower -> 2-layer MLP projector -> Phi-3 decoder):

* ``tiny``: small enough to learn the task on a 2-core CPU in minutes;
* ``phi3v-shape``: the shapes of Phi-3-vision (CLIP ViT-L/14-336, 576 image tokens, Phi-3-mini),
  for measuring GPU throughput and memory with realistic costs.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import FinetuneError
from .loaded_model import LoadedModel
from .tokenizer import END, IMAGE

# torch and transformers are imported in the functions that use them: FinetuneConfig (and so the CLI,
# to parse its flags) imports this module for ``default_method``.

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BuiltinSpec:
    """The shapes of a built-in model."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    vocab_size: int | None           # None: the trained tokenizer's size
    max_positions: int
    vision_feature_layer: int
    # Whether the vision tower and projector train by default. The tiny model has nothing to
    # start from, so it must learn to see; phi3v-shape stands in for the pretrained Phi-3-vision,
    # whose CLIP tower a LoRA recipe keeps frozen, so its costs are measured that way.
    train_vision: bool
    # Whether the token embeddings, final norm and lm_head train in full under LoRA. A random
    # model needs it: with a frozen random head and norm the logits cannot grow confident (their
    # scale is capped), so LoRA alone cannot bring the loss down.
    train_embeddings: bool
    default_lr: float
    # Keep CLIP's class token among the image tokens (Llava's "full" strategy; "default" drops it).
    # A tower trained from scratch learns to sum the picture up there, and a two-layer decoder reads
    # one summary token far more easily than it pools many patches.
    keep_cls: bool = False
    # What a run does when --method is not given. A random model learns much faster in full: LoRA
    # over a frozen random decoder gained +12 points of category2 in 1,600 steps where full
    # fine-tuning at 5e-4 gained +29 to +34 (tests/test_finetune_learning.py).
    default_method: str = "lora"
    full_lr: float | None = None      # the default lr under --method full (None: default_lr)

    @property
    def feature_strategy(self) -> str:
        return "full" if self.keep_cls else "default"

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + int(self.keep_cls)


BUILTIN_MODELS: dict[str, BuiltinSpec] = {
    "tiny": BuiltinSpec(
        # 16 px patches, 4 x 4 of them: on generated catalogues this learns the category about twice
        # as fast per sample as 8 px patches (64 tokens), and each sample costs half as much.
        image_size=64, patch_size=16,
        vision_hidden=128, vision_layers=2, vision_heads=4, vision_intermediate=256,
        text_hidden=128, text_layers=2, text_heads=4, text_intermediate=256,
        vocab_size=None, max_positions=512,
        # With two layers, use the last one: every layer of a small tower has to earn its cost.
        vision_feature_layer=-1,
        train_vision=True, train_embeddings=True, default_lr=2e-3, keep_cls=True,
        default_method="full", full_lr=5e-4,
    ),
    "phi3v-shape": BuiltinSpec(
        image_size=336, patch_size=14,
        vision_hidden=1024, vision_layers=24, vision_heads=16, vision_intermediate=4096,
        text_hidden=3072, text_layers=32, text_heads=32, text_intermediate=8192,
        # Phi-3-mini's vocabulary: the lm_head and embeddings cost what they cost in the real model,
        # even though our trained tokenizer uses only its first few thousand ids.
        vocab_size=32064, max_positions=4096,
        vision_feature_layer=-2,
        train_vision=False, train_embeddings=False, default_lr=2e-4,
    ),
}


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def default_method(name: str) -> str:
    """lora, except where a built-in model learns better in full (the random tiny model)."""
    return BUILTIN_MODELS[name].default_method if is_builtin(name) else "lora"


def default_lr(name: str, method: str, fallback: float) -> float:
    """The peak learning rate of a run that gives no --lr."""
    spec = BUILTIN_MODELS.get(name)
    if spec is not None and method == "full" and spec.full_lr is not None:
        return spec.full_lr
    return fallback


def builtin_config(name: str, tokenizer):
    """The ``LlavaConfig`` of a built-in model for a given tokenizer."""
    from transformers import CLIPVisionConfig, LlavaConfig, Phi3Config

    spec = _spec(name)
    vocab = spec.vocab_size or len(tokenizer)
    if len(tokenizer) > vocab:
        raise FinetuneError(f"tokenizer has {len(tokenizer)} tokens, more than {name}'s vocabulary of {vocab}")
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
        hidden_act="quick_gelu",
    )
    text = Phi3Config(
        vocab_size=vocab,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
        original_max_position_embeddings=spec.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=spec.image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=spec.feature_strategy,
        vision_feature_layer=spec.vision_feature_layer,
    )


def builtin_processor(name: str, tokenizer):
    """A ``LlavaProcessor`` that expands ``<|image_1|>`` into the model's image tokens."""
    from transformers import LlavaProcessor

    spec = _spec(name)
    return LlavaProcessor(
        image_processor=_clip_image_processor(spec.image_size),
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy=spec.feature_strategy,
        image_token=IMAGE,
        # CLIP prepends a CLS token ("default" then drops it again).
        num_additional_image_tokens=1,
    )


def build_builtin(name: str, tokenizer, *, device=None, dtype=None, seed: int = 0) -> LoadedModel:
    """Instantiate a built-in model with random weights, directly on ``device`` in ``dtype``.

    Building on the target device matters for phi3v-shape: 4.1 B parameters initialised on the CPU
    in fp32 take minutes and 16 GB; on the GPU in bf16 they take seconds. ``device="meta"`` builds
    the skeleton only (for counting parameters).
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    spec = _spec(name)
    config = builtin_config(name, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype or torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return LoadedModel(
        model=model,
        processor=builtin_processor(name, tokenizer),
        name=name,
        builtin=True,
        image_token=IMAGE,
        end_token=END,
        train_vision=spec.train_vision,
        train_embeddings=spec.train_embeddings,
        default_lr=spec.default_lr,
        phi3_chat=True,
    )


def _spec(name: str) -> BuiltinSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise FinetuneError(f"unknown built-in model {name!r}; choose one of {', '.join(BUILTIN_MODELS)}") from None


def _clip_image_processor(size: int):
    # The torchvision-backed CLIPImageProcessor needs torchvision; the PIL one gives the same pixels.
    try:
        import torchvision  # noqa: F401
        from transformers import CLIPImageProcessor as Processor
    except ImportError:
        from transformers import CLIPImageProcessorPil as Processor
    return Processor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )

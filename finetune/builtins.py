"""The built-in models: random-weight models of real transformers classes, made from configs, so
nothing is downloaded. Each is a vision tower -> 2-layer MLP projector -> Phi-3 decoder:

* ``tiny`` (the default): ``FastVlmForConditionalGeneration`` with a small ResNet tower; learns to read
  the catalogue's pictures on a 2-core CPU in minutes;
* ``tiny-llava``: ``LlavaForConditionalGeneration`` with a 2-layer CLIP tower and the same decoder, the
  CPU twin of phi3v-shape's architecture (every speed lever applies to it);
* ``phi3v-shape``: the shapes of Phi-3-vision (CLIP ViT-L/14-336, 576 image tokens, Phi-3-mini),
  for measuring GPU throughput and memory with realistic costs.

And the CPU twins of the families people fine-tune (``tiny-qwen2.5-vl``, ``tiny-gemma3``, ``tiny-smolvlm``:
their own classes and processors), built by finetune/twins.py; ``is_builtin`` and ``build_builtin`` know them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import FinetuneError
from .loaded_model import LoadedModel, random_weights
from .tokenizer import END, IMAGE
from .twins import TWINS, build_twin

# torch and transformers are imported in the functions that use them: FinetuneConfig (and so the CLI,
# to parse its flags) imports this module for ``default_method``.

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


DEFAULT_EPOCHS = 6.0  # real (pretrained) models and phi3v-shape


@dataclass(frozen=True)
class ClipTower:
    """A CLIP ViT vision tower, for a Llava model: one image token a ``patch_size`` square (plus the
    class token when ``keep_cls``), from hidden layer ``feature_layer``."""

    patch_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    feature_layer: int = -1
    # Keep CLIP's class token among the image tokens (Llava's "full" strategy; "default" drops it).
    # A tower trained from scratch learns to sum the picture up there, and a two-layer decoder reads
    # one summary token far more easily than it pools many patches.
    keep_cls: bool = False

    @property
    def stride(self) -> int:
        return self.patch_size

    def tokens(self, image_size: int) -> int:
        return (image_size // self.patch_size) ** 2 + int(self.keep_cls)


@dataclass(frozen=True)
class ConvTower:
    """A ResNet vision tower (basic blocks), for a FastVLM model: its last feature map, flattened, is
    the image tokens, ``(image_size // stride) ** 2`` of width ``widths[-1]``.

    Why a convolutional tower for a model that learns to see from nothing: on the default catalogue, a
    linear probe over this tower reaches category3 82 % after 6 epochs (8 s on 2 cores) where the same
    probe over tiny-llava's 2-layer CLIP tower reaches 57 % (7 min), and a 6-layer Swin or FocalNet 59 %:
    locality and weight sharing are what 2,736 training pictures cannot teach a ViT.
    """

    embedding: int = 32
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)

    @property
    def stride(self) -> int:
        return 4 * 2 ** (len(self.widths) - 1)  # the stem's conv and pool halve twice; each later stage once

    def tokens(self, image_size: int) -> int:
        return (image_size // self.stride) ** 2


@dataclass(frozen=True)
class BuiltinSpec:
    """The shapes and defaults of a built-in model: a vision tower, a 2-layer projector, a Phi-3 decoder."""

    image_size: int
    tower: ClipTower | ConvTower
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    vocab_size: int | None           # None: the trained tokenizer's size
    max_positions: int
    # Whether the vision tower and projector train by default. The tiny models have nothing to
    # start from, so they must learn to see; phi3v-shape stands in for the pretrained Phi-3-vision,
    # whose CLIP tower a LoRA recipe keeps frozen, so its costs are measured that way.
    train_vision: bool
    # Whether the token embeddings, final norm and lm_head train in full under LoRA. A random
    # model needs it: with a frozen random head and norm the logits cannot grow confident (their
    # scale is capped), so LoRA alone cannot bring the loss down.
    train_embeddings: bool
    default_lr: float
    # What a run does when --method is not given. A random model learns much faster in full: LoRA
    # over a frozen random decoder gained +12 points of category2 in 1,600 steps where full
    # fine-tuning at 5e-4 gained +29 to +34.
    default_method: str = "lora"
    full_lr: float | None = None      # the default lr under --method full (None: default_lr)
    default_epochs: float = DEFAULT_EPOCHS  # passes over the training split when --epochs is not given
    # Whether a CUDA run keeps the weights in bf16 when the run does not say (bf16 = ...). The random
    # tiny models train in fp32: on an H200, plain run-finetune with tiny in bf16 ended at train loss
    # 0.36 and category3 72.0 %, in fp32 at 0.20 and 74.0 %, and fp32 was faster (1:36 against 1:56):
    # AdamW's small updates vanish in bf16 weights, and a model this small gains nothing from them.
    cuda_bf16: bool = True
    # The share of answer tokens a training row reads corrupted (data.noisy_answer) when the run does
    # not set --answer-noise.
    answer_noise: float = 0.0
    # Passes over the training images the vision side first trains as a classifier of the answers
    # (finetune/vision_warmup.py) when the run does not set --vision-warmup-epochs. A random tower
    # learns to see far faster than through the decoder. Plain run-finetune with tiny on the default
    # catalogue (CPU): category3 77.3 % without, 89.8 % after 18 passes, 94.7 % after 36 (+50 s).
    vision_warmup_epochs: float = 0.0

    @property
    def conv(self) -> bool:
        return isinstance(self.tower, ConvTower)

    @property
    def feature_strategy(self) -> str:
        return "full" if self.conv or self.tower.keep_cls else "default"

    @property
    def image_tokens(self) -> int:
        return self.tower.tokens(self.image_size)


_TINY_DECODER = dict(text_hidden=128, text_layers=2, text_heads=4, text_intermediate=256, vocab_size=None,
                     max_positions=512)

BUILTIN_MODELS: dict[str, BuiltinSpec] = {
    # The default model: a FastVLM (ResNet tower -> projector -> Phi-3 decoder) that learns to read the
    # catalogue's pictures on a 2-core CPU. 64 px in, 4 x 4 image tokens.
    "tiny": BuiltinSpec(
        image_size=64, tower=ConvTower(), **_TINY_DECODER,
        train_vision=True, train_embeddings=True, default_lr=2e-3, default_method="full", full_lr=5e-4,
        default_epochs=18, cuda_bf16=False, answer_noise=0.15, vision_warmup_epochs=36,
    ),
    # The same decoder behind a 2-layer CLIP ViT, as a Llava model: the CPU twin of phi3v-shape's
    # architecture, where every speed lever applies. It learns to see far more slowly than tiny.
    # The GPU-sized learner: tiny's recipe with a wider tower (48-96-192) and a 4-layer, 256-wide decoder,
    # still random and offline. Too slow for the 2-core CPU's budget; on a GPU it trains in minutes.
    "small": BuiltinSpec(
        image_size=64, tower=ConvTower(embedding=48, widths=(48, 96, 192)),
        text_hidden=256, text_layers=4, text_heads=8, text_intermediate=512, vocab_size=None, max_positions=512,
        train_vision=True, train_embeddings=True, default_lr=2e-3, default_method="full", full_lr=5e-4,
        default_epochs=18, cuda_bf16=False, answer_noise=0.15, vision_warmup_epochs=36,
    ),
    "tiny-llava": BuiltinSpec(
        # 16 px patches, 4 x 4 of them: on generated catalogues this learns the category about twice
        # as fast per sample as 8 px patches (64 tokens), and each sample costs half as much. With two
        # layers, use the last one: every layer of a small tower has to earn its cost.
        image_size=64, tower=ClipTower(patch_size=16, hidden=128, layers=2, heads=4, intermediate=256,
                                       feature_layer=-1, keep_cls=True),
        **_TINY_DECODER,
        train_vision=True, train_embeddings=True, default_lr=2e-3, default_method="full", full_lr=5e-4,
        cuda_bf16=False,
    ),
    "phi3v-shape": BuiltinSpec(
        image_size=336, tower=ClipTower(patch_size=14, hidden=1024, layers=24, heads=16, intermediate=4096,
                                        feature_layer=-2),
        text_hidden=3072, text_layers=32, text_heads=32, text_intermediate=8192,
        # Phi-3-mini's vocabulary: the lm_head and embeddings cost what they cost in the real model,
        # even though our trained tokenizer uses only its first few thousand ids.
        vocab_size=32064, max_positions=4096,
        train_vision=False, train_embeddings=False, default_lr=2e-4,
    ),
}


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS or name in TWINS


def builtin_names() -> list[str]:
    """Every built-in: the Phi-3-decoder ones, then the families' CPU twins (finetune/twins.py)."""
    return [*BUILTIN_MODELS, *TWINS]


def special_tokens(name: str) -> dict[str, str] | None:
    """The extra special tokens a built-in's tokenizer needs (a twin's family markers), or None."""
    return dict(TWINS[name].tokens) if name in TWINS else None


def _default(name: str, setting: str, fallback):
    """A built-in's default for ``setting`` (a field of its BuiltinSpec or Twin), else ``fallback``: what a
    real (pretrained) model gets, and a twin where its Twin has no such field."""
    return getattr(BUILTIN_MODELS.get(name) or TWINS.get(name), setting, fallback)


def default_method(name: str) -> str:
    """lora, except where a built-in model learns better in full (the random tiny models)."""
    return _default(name, "default_method", "lora")


def default_epochs(name: str) -> float:
    """The epochs of a run that gives neither --epochs nor --max-steps."""
    return _default(name, "default_epochs", DEFAULT_EPOCHS)


def default_answer_noise(name: str) -> float:
    """The --answer-noise of a run that does not set it: the model's (``BuiltinSpec.answer_noise``), else 0."""
    return _default(name, "answer_noise", 0.0)


def default_vision_warmup_epochs(name: str) -> float:
    """The --vision-warmup-epochs of a run that does not set it: the built-in's, else 0 (a pretrained tower sees)."""
    return _default(name, "vision_warmup_epochs", 0.0)


def default_bf16(name: str, device_type: str) -> bool:
    """Whether a run that does not set bf16 trains in bf16: on CUDA, except the built-ins that train
    better in fp32 (``BuiltinSpec.cuda_bf16``)."""
    return device_type == "cuda" and _default(name, "cuda_bf16", True)


def default_lr(name: str, method: str, fallback: float) -> float:
    """The peak learning rate of a run that gives no --lr: a built-in's ``full_lr`` under --method full."""
    full_lr = _default(name, "full_lr", None)
    return full_lr if method == "full" and full_lr is not None else fallback


def builtin_config(name: str, tokenizer):
    """The config of a built-in model for a given tokenizer: a ``FastVlmConfig`` (ResNet tower) or a
    ``LlavaConfig`` (CLIP tower)."""
    from transformers import CLIPVisionConfig, LlavaConfig, Phi3Config

    spec = _spec(name)
    vocab = spec.vocab_size or len(tokenizer)
    if len(tokenizer) > vocab:
        raise FinetuneError(f"tokenizer has {len(tokenizer)} tokens, more than {name}'s vocabulary of {vocab}")
    tower = spec.tower
    vision = _resnet_config(tower) if spec.conv else CLIPVisionConfig(
        hidden_size=tower.hidden,
        intermediate_size=tower.intermediate,
        num_hidden_layers=tower.layers,
        num_attention_heads=tower.heads,
        image_size=spec.image_size,
        patch_size=tower.patch_size,
        projection_dim=tower.hidden,
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
    common = {"vision_config": vision, "text_config": text, "image_seq_length": spec.image_tokens,
              "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE), "projector_hidden_act": "gelu"}
    if spec.conv:
        from transformers import FastVlmConfig

        return FastVlmConfig(**common)  # FastVLM takes the last feature map, all of it ("full", layer -1)
    return LlavaConfig(**common, vision_feature_select_strategy=spec.feature_strategy,
                       vision_feature_layer=tower.feature_layer)


def _resnet_config(tower: ConvTower):
    from transformers import ResNetConfig

    # hidden_size: what FastVLM's projector reads (a ResNet config names its widths hidden_sizes).
    return ResNetConfig(embedding_size=tower.embedding, hidden_sizes=list(tower.widths), depths=list(tower.depths),
                        layer_type="basic", downsample_in_first_stage=False, hidden_size=tower.widths[-1])


def builtin_processor(name: str, tokenizer):
    """A ``LlavaProcessor`` that expands ``<|image_1|>`` into the model's image tokens."""
    from transformers import LlavaProcessor

    spec = _spec(name)
    return LlavaProcessor(
        image_processor=_clip_image_processor(spec.image_size),
        tokenizer=tokenizer,
        patch_size=spec.tower.stride,
        vision_feature_select_strategy=spec.feature_strategy,
        image_token=IMAGE,
        # CLIP prepends a CLS token ("default" then drops it again); a feature map has none.
        num_additional_image_tokens=0 if spec.conv else 1,
    )


def build_builtin(name: str, tokenizer, *, device=None, dtype=None, seed: int = 0) -> LoadedModel:
    """Instantiate a built-in model with random weights, directly on ``device`` in ``dtype``.

    Building on the target device matters for phi3v-shape: 4.1 B parameters initialised on the CPU
    in fp32 take minutes and 16 GB; on the GPU in bf16 they take seconds. ``device="meta"`` builds
    the skeleton only (for counting parameters).
    """
    if name in TWINS:
        return build_twin(name, tokenizer, device=device, dtype=dtype, seed=seed)
    spec = _spec(name)
    model = random_weights(builtin_config(name, tokenizer), tokenizer, device=device, dtype=dtype, seed=seed)
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
        raise FinetuneError(f"unknown built-in model {name!r}; choose one of {', '.join(builtin_names())}") from None


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

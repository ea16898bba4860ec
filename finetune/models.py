"""Models for ``run-finetune``: two built-in random-weight shapes, or any real model by id or path.

Built-in models are ``LlavaForConditionalGeneration`` (CLIP vision tower -> 2-layer MLP projector
-> Phi-3 decoder) made from configs, so nothing is downloaded:

* ``tiny``: small enough to learn the task on a 2-core CPU in a couple of minutes;
* ``phi3v-shape``: the shapes of Phi-3-vision (CLIP ViT-L/14-336, 576 image tokens, Phi-3-mini),
  for measuring GPU throughput and memory with realistic costs.

Real models come through ``AutoProcessor`` with ``AutoModelForImageTextToText`` (native
image-text-to-text models) or, for Phi-3 / Phi-3.5-vision, ``AutoModelForCausalLM`` with
``trust_remote_code`` (only when the user asks for it).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FinetuneError
from .tokenizer import END, IMAGE

# torch, transformers and huggingface_hub are imported in the functions that use them: FinetuneConfig
# (and so the CLI, to parse its flags) imports this module for ``default_method``.

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


# --------------------------------------------------------------------------------------------
# Built-in models


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


# --------------------------------------------------------------------------------------------
# Real models


def load_pretrained(name_or_path: str, *, trust_remote_code: bool = False, dtype=None, device=None) -> LoadedModel:
    """Load a real image-text-to-text model and its processor from a local path or the Hub (cache).

    Errors are one line each: a missing model, a model without an image processor, a model that
    needs custom code when ``trust_remote_code`` is off, a model that is not image-text-to-text.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    offline = _offline()
    common = {"local_files_only": offline}
    raw = check_model(name_or_path, trust_remote_code=trust_remote_code)
    model_type = raw.get("model_type", "")
    needs_remote = _needs_remote(raw)
    remote = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(name_or_path, **common, **remote)
        processor = AutoProcessor.from_pretrained(name_or_path, **common, **remote)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise FinetuneError(
            f"model {name_or_path!r} has no image processor (its processor is {type(processor).__name__}); "
            "run-finetune needs a vision-language model"
        )

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    auto_map = raw.get("auto_map", {}) or {}
    if needs_remote and "AutoModelForCausalLM" in auto_map:
        loader = AutoModelForCausalLM           # Phi-3 / Phi-3.5-vision
    elif needs_remote and "AutoModelForImageTextToText" in auto_map or model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        loader = AutoModelForImageTextToText
    else:
        raise FinetuneError(
            f"model {name_or_path!r} ({model_type or 'unknown type'}) is not an image-text-to-text model"
        )
    kwargs = dict(common, **remote)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device is not None and str(device) != "cpu":
        kwargs["device_map"] = str(device)
    try:
        model = loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None

    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        # Batched training and generation need a pad id; the end-of-text token serves.
        tokenizer.pad_token = tokenizer.eos_token
    phi3_chat = model_type.startswith("phi3")
    image_token = getattr(processor, "image_token", None) or IMAGE
    end_token = END if tokenizer.convert_tokens_to_ids(END) not in (None, tokenizer.unk_token_id) else tokenizer.eos_token
    return LoadedModel(
        model=model,
        processor=processor,
        name=name_or_path,
        builtin=False,
        image_token=image_token,
        end_token=end_token,
        train_vision=False,
        train_embeddings=False,
        default_lr=2e-4,
        phi3_chat=phi3_chat or getattr(processor, "chat_template", None) is None,
    )


def check_model(name: str, *, trust_remote_code: bool = False) -> dict:
    """Fail fast, before any data is loaded: the model exists and may run. Returns its raw config.

    Built-in names pass (and return ``{}``); anything else must be a local directory or a Hub id
    whose config.json can be read, and custom-code models need ``trust_remote_code``.
    """
    if is_builtin(name):
        return {}
    raw = _raw_config(name, _offline())
    if _needs_remote(raw) and not trust_remote_code:
        raise FinetuneError(
            f"model {name!r} ({raw.get('model_type', '')}) runs its own code from the repository: "
            "add --trust-remote-code if you trust it"
        )
    return raw


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _needs_remote(raw: dict) -> bool:
    import transformers

    return bool(raw.get("auto_map")) and raw.get("model_type", "") not in transformers.CONFIG_MAPPING


def _raw_config(name_or_path: str, offline: bool) -> dict:
    """config.json as a dict, without running any repository code; a one-line error when missing."""
    path = Path(name_or_path)
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise FinetuneError(f"model directory {name_or_path!r} has no config.json")
        return _read_config_json(file, name_or_path)
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FinetuneError(f"model path {name_or_path!r} does not exist")
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(name_or_path, "config.json", local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - any hub failure is a missing model to the user
        where = "already in the Hub cache (HF_HUB_OFFLINE is set)" if offline else "on the Hub or in its cache"
        raise FinetuneError(
            f"unknown model {name_or_path!r} ({type(e).__name__}): use a built-in "
            f"({', '.join(BUILTIN_MODELS)}), a local model directory, or a Hub model id {where}"
        ) from None
    return _read_config_json(Path(file), name_or_path)


def _read_config_json(file: Path, name: str) -> dict:
    """A model's config.json as a dict: junk in it (not JSON, nested thousands deep, a list) is bad input."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FinetuneError(f"model {name!r}: config.json is not readable JSON ({_first_line(e)[:200]})") from None
    if not isinstance(raw, dict):
        what = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(raw), "a number")
        raise FinetuneError(f"model {name!r}: config.json must hold a JSON object, not {what}")
    return raw


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def load_model(name: str, *, tokenizer=None, trust_remote_code: bool = False, device=None, dtype=None, seed: int = 0) -> LoadedModel:
    """A built-in model (needs the run's ``tokenizer``) or a real one by id or path."""
    if is_builtin(name):
        if tokenizer is None:
            raise ValueError("built-in models need a tokenizer (see finetune.tokenizer.train_tokenizer)")
        return build_builtin(name, tokenizer, device=device, dtype=dtype, seed=seed)
    return load_pretrained(name, trust_remote_code=trust_remote_code, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# Parts of a model that the trainer and the loss need to find


def vision_module_names(model) -> list[str]:
    """Names of the vision tower and projector submodules (what "train the vision side" means)."""
    candidates = (
        "vision_tower", "multi_modal_projector", "visual", "vision_model", "vision_embed_tokens",
        "img_processor", "connector", "mm_projector",
    )
    names = []
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in candidates and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names


def embedding_module_names(model) -> list[str]:
    """Names of the token embeddings, the decoder's final norm and the output head."""
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    names = []
    for name, module in model.named_modules():
        if id(module) in wanted or name.endswith(("language_model.norm", "model.norm")):
            if not any(name.startswith(n + ".") for n in names):
                names.append(name)
    return names


def language_linear_names(model) -> list[str]:
    """Full names of the decoder's linear layers: where LoRA goes.

    For the built-in Phi-3 decoder these are ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and
    ``down_proj`` of every layer. The vision side and the output head are left out.
    """
    import torch.nn as nn

    vision = vision_module_names(model)
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.endswith("lm_head"):
            continue
        if any(name == v or name.startswith(v + ".") for v in vision):
            continue
        out.append(name)
    return out


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())

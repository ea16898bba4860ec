"""Models for ``run-finetune``: a built-in random-weight model (finetune/builtins.py), or any real model
by id or path.

Real models come through ``AutoProcessor`` with ``AutoModelForImageTextToText`` (native
image-text-to-text models), ``AutoModelForCausalLM`` for a family that transformers files as a causal
LM (Phi-4-multimodal, ``Family.causal_lm``) or, for Phi-3 / Phi-3.5-vision, ``AutoModelForCausalLM``
with ``trust_remote_code`` (only when the user asks for it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .builtins import build_builtin, builtin_names, is_builtin, special_tokens
from .data import build_prompt
from .errors import FinetuneError
from .families import family_for
from .image_budget import blank_image_tokens
from .loaded_model import LoadedModel
from .tokenizer import END, IMAGE, train_tokenizer

# torch, transformers and huggingface_hub are imported in the functions that use them.


# --------------------------------------------------------------------------------------------
# Real models


def load_pretrained(name_or_path: str, *, trust_remote_code: bool = False, dtype=None, device=None) -> LoadedModel:
    """Load a real image-text-to-text model and its processor from a local path or the Hub (cache).

    Errors are one line each: a missing model, a model without an image processor, a model that
    needs custom code when ``trust_remote_code`` is off, a model that is not image-text-to-text.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    offline = _offline()
    common = {"local_files_only": offline}
    raw = check_model(name_or_path, trust_remote_code=trust_remote_code)
    model_type = raw.get("model_type", "")
    needs_remote = _needs_remote(raw)
    remote = {"trust_remote_code": trust_remote_code}
    try:
        AutoConfig.from_pretrained(name_or_path, **common, **remote)   # an unreadable config fails here, in one line
        processor = _load_processor(name_or_path, model_type, {**common, **remote})
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None
    _complete_processor(processor)
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
    elif not needs_remote and family_for(model_type).causal_lm:
        loader = AutoModelForCausalLM           # Phi-4-multimodal
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


def _load_processor(name_or_path: str, model_type: str, kwargs: dict):
    """``AutoProcessor``, or where it fails, the model family's image-only processor if it has one.

    Qwen2-VL-style processors hold a video processor, and video processors need torchvision: without
    it (or with a torchvision build that does not match torch) AutoProcessor cannot load them at all,
    although training on images never calls them.
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, ImportError, RuntimeError, AttributeError):
        fallback = family_for(model_type).image_only_processor
        if fallback is None:
            raise
        return fallback(name_or_path, kwargs)


def _complete_processor(processor) -> None:
    """Give a processor what ``ProcessorMixin.__init__`` sets, where its own ``__init__`` skipped it.

    Phi-3-vision's remote ``Phi3VProcessor.__init__`` sets its image processor and tokenizer itself and
    never calls ``ProcessorMixin.__init__``, so it has no ``chat_template`` (it has none to give), and
    transformers 5's ``save_pretrained``, which reads it, raised AttributeError when the run saved its
    final model (and when ``run-finetune export`` wrote its copy).
    """
    from transformers import ProcessorMixin

    if isinstance(processor, ProcessorMixin) and "chat_template" not in vars(processor):
        processor.chat_template = None


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
            f"({', '.join(builtin_names())}), a local model directory, or a Hub model id {where}"
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


def describe_builtins(vocab_size: int = 2048, image_size: int = 336) -> list[dict]:
    """Every built-in model: its transformers class, parameter count (at a tokenizer of ``vocab_size``,
    the default) and image tokens for one ``image_size`` px square picture (the default catalogue's).
    Built on the meta device: nothing is initialised, so it takes a second."""
    rows = []
    for name in builtin_names():
        loaded = build_builtin(name, _stand_in_tokenizer(name, vocab_size), device="meta")
        rows.append({"name": name, "class": type(loaded.model).__name__, "parameters": count_parameters(loaded.model),
                     "image_tokens": blank_image_tokens(loaded, build_prompt(loaded, "?"), image_size)})
    return rows


def _stand_in_tokenizer(name: str, vocab_size: int):
    """A tokenizer with a built-in's special tokens and ``vocab_size`` tokens, as a run's would have."""
    tokenizer = train_tokenizer(["a stand-in text"], vocab_size=vocab_size, extra_special_tokens=special_tokens(name))
    tokenizer.add_tokens([f"<unused_{i}>" for i in range(vocab_size - len(tokenizer))])
    return tokenizer


# --------------------------------------------------------------------------------------------
# Parts of a model that the trainer and the loss need to find


def under(name: str, modules: list[str]) -> bool:
    """Whether the parameter or module ``name`` is one of ``modules`` or inside one."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def vision_module_names(model) -> list[str]:
    """Names of the vision tower and projector submodules (what "train the vision side" means).

    Phi-4-multimodal's ``image_embed`` holds its tower and projector; its ``audio_embed`` (a speech
    encoder an image task never runs) goes with them, so that LoRA leaves it alone too.
    """
    candidates = (
        "vision_tower", "multi_modal_projector", "visual", "vision_model", "vision_embed_tokens",
        "img_processor", "connector", "mm_projector", "image_embed", "audio_embed",
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
        if under(name, vision):
            continue
        out.append(name)
    return out


def reshare_modules_to_save(peft_model) -> int:
    """Point peft's trained copies of whole modules back at the submodules they share with the rest of
    the model; returns how many were re-shared.

    LoRA trains a module in full (``modules_to_save``: the vision side under --train-vision) through a
    deep copy of it. A submodule the model also uses elsewhere is copied with it and trained as a second,
    separate one. Phi-3-vision's image embedding (``vision_embed_tokens``) holds the decoder's token
    embedding as its ``wte``: the copy trained in full and embedded every training sequence (they come
    with pixels), while generation embedded each new token with the decoder's own, still frozen one.
    Re-shared, the copy uses the model's one embedding, which stays as LoRA leaves it.
    """
    from peft.utils import ModulesToSaveWrapper

    outside: set[int] = set()

    def walk(module) -> None:   # what the model reaches without going through a wrapper
        outside.add(id(module))
        for child in module.children():
            if not isinstance(child, ModulesToSaveWrapper):
                walk(child)

    walk(peft_model)
    shared = 0
    for wrapper in [m for m in peft_model.modules() if isinstance(m, ModulesToSaveWrapper)]:
        for name, sub in wrapper.original_module.named_modules(remove_duplicate=False):
            if not name or id(sub) not in outside:
                continue
            parent, _, leaf = name.rpartition(".")
            for copy in wrapper.modules_to_save.values():
                setattr(copy.get_submodule(parent) if parent else copy, leaf, sub)
                shared += 1
    return shared


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())

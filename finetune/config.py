"""``FinetuneConfig``: every setting of a run, with defaults that run; loadable from TOML or YAML."""
from __future__ import annotations

import dataclasses
import errno
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import FinetuneError
from .builtins import default_answer_noise, default_epochs, default_method, default_vision_warmup_epochs
from .speed.config import PRESETS, SUGGESTIONS, levers
from .tokenizer import IMAGE

__all__ = ["DEFAULT_QUESTION", "FinetuneConfig", "FinetuneError", "RunResult", "checked_types", "config_fields",
           "load_config"]  # FinetuneError lives in finetune/errors.py; importing it from here keeps working

DEFAULT_QUESTION = "What is shown in this image?"
# A config holds a few dozen settings: a bigger file, or a YAML file whose aliases expand to more
# values than this (a "billion laughs" expands to 10^9 and took 3.4 GB), is refused before it is built.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 10_000


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run. ``None`` means "decided from the model or the machine"."""

    dataset: str | None = None          # local dir (parquet or save_to_disk) or Hub dataset id
    model: str = "tiny"                 # tiny | phi3v-shape | Hub id | local path
    method: str | None = None          # lora | full; None: full for the random tiny model, lora otherwise
    epochs: float | None = None         # None: the model's default (builtins.default_epochs: 6 but for tiny)
    batch_size: int | None = None       # None: the preset's, else 16
    grad_accum: int = 1
    lr: float | None = None             # None: the model's default (2e-3 tiny, 2e-4 otherwise)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    max_steps: int = 0                  # > 0 overrides epochs
    eval_every: int = 0                 # optimizer steps between generation evals; 0: only at the end
    save_every: int = 100               # optimizer steps between checkpoints; 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    out: str = "runs/finetune"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float | None = None   # None: the preset's, else 0.05
    train_vision: bool | None = None    # None: yes for the random tiny model, no otherwise
    # Random crops and mirrors of the training images (data.augment_image). Off by default: on the
    # default catalogue, tiny at 3,000 steps of 32 reached category3 50.0 % with it and 51.6 % without
    # (H200, 2026-12-04), and the crops cost loader time.
    augment: bool = False
    # The share of answer tokens a training row reads swapped for another of its tokens (labels stay
    # true: finetune/data.py noisy_answer), against a small decoder trusting its own words over the
    # picture. None: the model's default (0.15 for tiny, else 0).
    answer_noise: float | None = None
    # Passes over the training images the vision side first trains as a classifier of the answers'
    # category, title words and price (finetune/vision_warmup.py). None: the model's default (36 for
    # tiny and the built-ins whose towers start random; else 0).
    vision_warmup_epochs: float | None = None
    # The warm-up also learns the department (category1_code) where the data has several: it sets the
    # price but is not in the answer. Off by default: at tiny's full 18 epochs it cut price MAPE by 0.7-2.8
    # points (two seeds) for 0-0.7 of category3; at 6 epochs it cost 2-4 points of category3 for no price.
    warmup_department: bool = False
    # The most tokens one image may take: dynamic-resolution families (Qwen2-VL, LLaVA-NeXT, Idefics3)
    # get their processor's image size lowered to fit (finetune/image_budget.py). None: the model's own.
    max_image_tokens: int | None = None
    gradient_checkpointing: bool = False
    bf16: bool | None = None            # None: on when CUDA is available (not for the tiny built-ins)
    loss: str = "answer"                # answer (logits at answer tokens only) | plain (the model's own loss)
    # Speed levers (finetune/speed/): none | fast | low-memory. Compilation applies on CUDA only.
    preset: str = "none"
    # Levers set on their own (a [speed] table, the speed flags), by SpeedConfig field name: each wins
    # over the preset's value (speed.resolve). Empty: the preset's levers as they are.
    speed: dict[str, bool | int | float | str | None] = field(default_factory=dict)
    # DataLoader workers per process; None: 2 on CPU, up to 6 on CUDA. Measured on an H200 with
    # phi3v-shape LoRA at batch 16: 2 workers starve the GPU (19.8 samples/s), 6 feed it (25.1).
    num_workers: int | None = None
    max_eval_samples: int | None = None  # None: the whole test split
    eval_batch_size: int | None = None   # None: 2 x batch_size
    max_new_tokens: int = 48
    # The price answer by least expected percentage error over the train split's prices of the answered
    # category, scored by the model (finetune/price_decoding.py); False: the greedy price as written.
    price_mbr: bool = True
    question: str = DEFAULT_QUESTION
    tokenizer_vocab_size: int = 2048
    wandb_project: str = "vlm-catalog-kit"
    no_wandb: bool = False
    trust_remote_code: bool = False
    resume: bool = False
    device: str | None = None           # None: cuda when available, else cpu
    save_final: bool = True             # write the trained model (or adapter) to OUT/final
    merge: bool = False                 # also write OUT/merged: LoRA merged, bf16, with the processor (finetune/export.py)
    # Shard full fine-tuning over processes (FSDP) instead of replicating it (DDP); None: shard when
    # there are several processes. LoRA always replicates.
    fsdp: bool | None = None

    def _model_defaults(self) -> list[str]:
        """Fill the settings whose default is the model's (builtins: the random built-ins differ); the
        problems with those given."""
        problems = []
        if self.method is None:
            self.method = default_method(self.model)
        if self.epochs is None:
            self.epochs = default_epochs(self.model)
        if self.answer_noise is None:
            self.answer_noise = default_answer_noise(self.model)
        elif not 0 <= self.answer_noise < 1:
            problems.append("--answer-noise must be at least 0 and below 1 (the share of answer tokens read corrupted)")
        if self.vision_warmup_epochs is None:
            self.vision_warmup_epochs = default_vision_warmup_epochs(self.model)
        elif not 0 <= self.vision_warmup_epochs < math.inf:
            problems.append("--vision-warmup-epochs must be a number, at least 0 (0: no warm-up)")
        return problems

    def validate(self) -> "FinetuneConfig":
        # Types first: the range checks below compare numbers, and a config built in Python skips load_config.
        for name, value in checked_types({f.name: getattr(self, f.name) for f in fields(self)}, "settings").items():
            setattr(self, name, value)
        problems = self._model_defaults()
        if self.preset not in PRESETS:
            problems.append(f"--preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        else:
            suggested = PRESETS[self.preset]
            if self.batch_size is None:
                self.batch_size = suggested.batch_size or 16
            if self.lora_dropout is None:
                self.lora_dropout = 0.05 if suggested.lora_dropout is None else suggested.lora_dropout
        if self.method not in ("lora", "full"):
            problems.append(f"--method must be lora or full, not {self.method!r}")
        if self.fsdp and self.method == "lora":
            problems.append("--fsdp shards full fine-tuning only (--method full); LoRA runs under DDP")
        if self.loss not in ("answer", "plain"):
            problems.append(f"loss must be answer or plain, not {self.loss!r}")
        for name in ("batch_size", "grad_accum", "lora_r", "max_new_tokens", "log_every"):  # log_every 0: step % 0
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("max_steps", "eval_every", "save_every", "num_workers", "tokenizer_vocab_size"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must not be negative")
        if self.epochs <= 0 and self.max_steps == 0:
            problems.append("--epochs must be positive (or give --max-steps)")
        for name in ("max_eval_samples", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                # 0 would score an empty test split (a division by zero deep in evaluation).
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_image_tokens is not None and self.max_image_tokens < 1:
            problems.append("--max-image-tokens must be at least 1 (the most tokens one image may take; leave it "
                            "out to keep the model's own image sizes)")
        if self.lr is not None and self.lr <= 0:
            problems.append("--lr must be positive")
        problems += _lever_ranges(self.speed)
        markers = [m for m in (IMAGE, "<image>") if m in self.question]  # Phi-3's and Llava's image markers
        if markers:  # the processor found 2 image markers for 1 image, after the run folder was made
            problems.append(f"question must not hold an image marker ({', '.join(markers)}): the prompt places "
                            "the image itself")
        if self.weight_decay < 0:  # AdamW refuses it, after the run folder was made
            problems.append("weight_decay must not be negative")
        if not 0 <= self.seed < 2**32:  # numpy's seed range: 2**32 was a ValueError from np.random.seed
            problems.append("--seed must be from 0 to 4294967295")
        for name in ("dataset", "model", "out"):
            problem = _unusable_path(getattr(self, name))
            if problem:
                problems.append(f"--{name} {problem}")
        if not _is_utf8(self.out):  # a file name's undecodable bytes: the checkpoint writers take UTF-8 paths only
            problems.append("--out is not UTF-8 text: rename it (the model files are written by libraries that "
                            "take UTF-8 paths only)")
        if self.lora_dropout is not None and not 0 <= self.lora_dropout < 1:
            problems.append("--lora-dropout must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        if problems:
            raise FinetuneError("; ".join(problems))
        return self

    def loader_workers(self, cuda: bool, processes: int = 1) -> int:
        """The DataLoader workers of one process: the setting, or what this machine can feed."""
        if self.num_workers is not None:
            return self.num_workers
        if not cuda:
            return 2
        return max(1, min(6, (os.cpu_count() or 2) // processes - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _unusable_path(value: str | None) -> str | None:
    """Why the file system cannot even look ``value`` up (a name over 255 bytes, a NUL character), or None."""
    if value is None:
        return None
    try:
        os.lstat(value)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return f"is too long for the file system ({len(value):,} characters; a name holds at most 255 bytes)"
    except ValueError:
        return "holds a NUL character"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # undecodable bytes of a file name come to Python as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def _lever_ranges(speed: dict[str, Any]) -> list[str]:
    """What is wrong with the values of levers set on their own (their types are checked already)."""
    problems = []
    budget = speed.get("activation_memory_budget")
    if budget is not None and not 0 < budget <= 1:
        problems.append("--activation-memory-budget must be in (0, 1]")
    if speed.get("pad_to_multiple_of", 1) < 1:
        problems.append("--pad-to-multiple-of must be at least 1")
    return problems


def config_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(FinetuneConfig)}


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float's range
        return False


# What each annotated type accepts, and how the error names it. bool is a subclass of int, so the
# numeric types exclude it; no string is read as a boolean ("false" is truthy and once enabled
# trust_remote_code).
_ACCEPTS: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: type(v) is bool),
    int: ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a finite number", _is_number),
    str: ("a string", lambda v: isinstance(v, str)),
    type(None): ("null", lambda v: v is None),
}


def _allowed(annotation: Any) -> tuple[Any, ...]:
    """The plain types an annotation admits: ``int | None`` -> ``(int, NoneType)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _shown(value: Any) -> str:
    """A value's type, and the value itself when it is a short scalar (never a huge container)."""
    text = type(value).__name__
    if isinstance(value, (bool, float, str)) or (isinstance(value, int) and value.bit_length() <= 64):
        value_repr = repr(value)
        text += " " + (value_repr if len(value_repr) <= 40 else value_repr[:37] + "...")
    return text


def checked_types(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` (known setting names) checked against ``FinetuneConfig``'s annotations; ints given
    for float settings become floats. Every mismatch is named in one ``FinetuneError`` line."""
    hints = typing.get_type_hints(FinetuneConfig)
    problems: list[str] = []
    checked = {name: (_checked_speed(value, problems) if name == "speed" else
                      _checked_value(name, value, hints[name], problems, "FinetuneConfig"))
               for name, value in values.items()}
    if problems:
        raise FinetuneError(f"{where}: {'; '.join(problems)}")
    return checked


def _checked_value(name: str, value: Any, annotation: Any, problems: list[str], owner: str) -> Any:
    """``value`` if it has ``annotation``'s type (an int for a float becomes a float); else a problem."""
    allowed = _allowed(annotation)
    if not all(t in _ACCEPTS for t in allowed):  # a new field type: teach _ACCEPTS about it
        raise TypeError(f"{owner}.{name}: no type check for {annotation}")
    if not any(_ACCEPTS[t][1](value) for t in allowed):
        expected = " or ".join(_ACCEPTS[t][0] for t in allowed)
        problems.append(f"{name} must be {expected}, not {_shown(value)}")
    return float(value) if float in allowed and _is_number(value) else value


def _checked_speed(table: Any, problems: list[str]) -> Any:
    """The [speed] table: lever names (dashes allowed) with SpeedConfig's types; unknown ones listed."""
    if not isinstance(table, dict):
        problems.append(f"speed must be a table of speed levers, not {_shown(table)}")
        return table
    known = levers()
    odd = [k for k in table if not isinstance(k, str)]
    if odd:
        problems.append(f"speed: lever names are text, not {_shown(odd[0])}")
        return table
    table = {k.replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(k for k in table if k not in known)
    if unknown:
        also = [k for k in unknown if k in SUGGESTIONS]
        hint = f" ({', '.join(also)}: a setting of its own, outside [speed])" if also else ""
        problems.append(f"unknown speed lever(s) {', '.join(unknown)}{hint}; levers: {', '.join(known)}")
        return table
    return {k: _checked_value(f"speed.{k}", v, known[k], problems, "SpeedConfig") for k, v in table.items()}


def load_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """A config from a TOML or YAML file (keys as in ``FinetuneConfig``, dashes allowed), then overrides.

    A file may hold its settings at top level or under a ``[finetune]`` table; speed levers go in a
    ``[speed]`` table (``speed:`` in YAML) keyed by ``SpeedConfig`` field, and ``speed=`` overrides merge
    into it lever by lever. Every value must have its setting's type (a boolean is true or false, never
    a string): one line names each that does not.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_file(Path(path))
    known = config_fields()
    unknown = sorted(k for k in {**values, **overrides} if k not in known)
    if unknown:
        raise FinetuneError(f"unknown setting(s) {', '.join(unknown)} in {path or 'overrides'}; "
                            f"known: {', '.join(known)}")
    values = checked_types(values, f"config file {str(path)!r}")
    overrides = checked_types(overrides, "overrides")
    if "speed" in overrides and "speed" in values:  # a lever's flag wins over the file's, the others stay
        overrides["speed"] = {**values["speed"], **overrides["speed"]}
    values.update(overrides)
    return FinetuneConfig(**values).validate()


def _read_file(path: Path) -> dict[str, Any]:
    name = repr(str(path))
    if not path.is_file():
        raise FinetuneError(f"config file {name} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise FinetuneError(f"config file {name} must end in .toml, .yaml or .yml")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise FinetuneError(f"cannot read config file {name}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise FinetuneError(f"config file {name} is larger than {MAX_CONFIG_BYTES >> 20} MiB: "
                            "a config holds a few dozen settings")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if suffix == ".toml" else _load_yaml(text, name)
    except RecursionError:  # both parsers recurse per nesting level
        raise FinetuneError(f"config file {name} is nested too deeply: a config holds a table of settings") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise FinetuneError(f"cannot parse config file {name}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # yaml.YAMLError without importing yaml at module level
        if type(e).__module__.startswith("yaml"):
            raise FinetuneError(f"cannot parse config file {name}: {str(e).splitlines()[0]}") from None
        raise
    if not isinstance(data, dict):
        raise FinetuneError(f"config file {name} must hold a table of settings")
    if isinstance(data.get("finetune"), dict):
        # A [speed] table beside [finetune] (rather than [finetune.speed]) belongs to it too.
        data = {**({"speed": data["speed"]} if "speed" in data else {}), **data["finetune"]}
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise FinetuneError(f"config file {name}: setting names are text, not {_shown(odd[0])}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _load_yaml(text: str, name: str) -> Any:
    """``yaml.safe_load``, refusing a document whose aliases expand beyond ``MAX_CONFIG_VALUES`` values."""
    import yaml  # optional: only YAML configs need it (it comes with datasets, not as our own dependency)

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty file
            return {}
        if _expanded_size(node, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
            raise FinetuneError(f"config file {name} expands to more than {MAX_CONFIG_VALUES:,} values "
                                "(YAML aliases, or a cycle of them): a config holds a few dozen settings")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: Any, limit: int) -> int:
    """How many nodes a composed YAML document has once its aliases are expanded, counting no further
    than ``limit + 1``: iterative, so neither a cycle nor an alias bomb costs more than ``limit`` steps."""
    count, stack = 0, [node]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node.value, list):  # a sequence holds nodes, a mapping (key, value) pairs
            for item in node.value:
                stack.extend(item if isinstance(item, tuple) else (item,))
    return count


@dataclass
class RunResult:
    """What ``train`` returns: where things went and how it went."""

    out: Path
    steps: int
    samples_seen: int
    train_seconds: float
    samples_per_second: float
    final_loss: float | None
    peak_memory_gib: float | None
    metrics: dict[str, Any] = field(default_factory=dict)     # evaluate's metrics.json content
    skipped_rows: int = 0
    resumed_from: int | None = None

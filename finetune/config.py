"""``FinetuneConfig``: every setting of a run, with defaults that run; loadable from TOML or YAML."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class FinetuneError(Exception):
    """A problem the user can fix (bad input, out of memory): the CLI prints it as one line."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


DEFAULT_QUESTION = "What is shown in this image?"


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run. ``None`` means "decided from the model or the machine"."""

    dataset: str | None = None          # local dir (parquet or save_to_disk) or Hub dataset id
    model: str = "tiny"                 # tiny | phi3v-shape | Hub id | local path
    method: str | None = None          # lora | full; None: full for the random tiny model, lora otherwise
    epochs: float = 6.0
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
    gradient_checkpointing: bool = False
    bf16: bool | None = None            # None: on when CUDA is available
    loss: str = "answer"                # answer (logits at answer tokens only) | plain (the model's own loss)
    # Speed levers (finetune/speed.py): none | fast | low-memory. Compilation applies on CUDA only.
    preset: str = "none"
    # DataLoader workers per process; None: 2 on CPU, up to 6 on CUDA. Measured on an H200 with
    # phi3v-shape LoRA at batch 16: 2 workers starve the GPU (19.8 samples/s), 6 feed it (25.1).
    num_workers: int | None = None
    max_eval_samples: int | None = None  # None: the whole test split
    eval_batch_size: int | None = None   # None: 2 x batch_size
    max_new_tokens: int = 48
    question: str = DEFAULT_QUESTION
    tokenizer_vocab_size: int = 2048
    wandb_project: str = "vlm-catalog-kit"
    no_wandb: bool = False
    trust_remote_code: bool = False
    resume: bool = False
    device: str | None = None           # None: cuda when available, else cpu
    save_final: bool = True             # write the trained model (or adapter) to OUT/final
    # Shard full fine-tuning over processes (FSDP) instead of replicating it (DDP); None: shard when
    # there are several processes. LoRA always replicates.
    fsdp: bool | None = None

    def validate(self) -> "FinetuneConfig":
        problems = []
        if self.method is None:
            from .models import default_method

            self.method = default_method(self.model)
        from .speed import PRESETS

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
        for name in ("batch_size", "grad_accum", "lora_r", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("max_steps", "eval_every", "save_every", "num_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must not be negative")
        if self.epochs <= 0 and self.max_steps == 0:
            problems.append("--epochs must be positive (or give --max-steps)")
        for name in ("max_eval_samples", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                # 0 would score an empty test split (a division by zero deep in evaluation).
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and self.lr <= 0:
            problems.append("--lr must be positive")
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
        import os

        return max(1, min(6, (os.cpu_count() or 2) // processes - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(FinetuneConfig)}


def load_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """A config from a TOML or YAML file (keys as in ``FinetuneConfig``, dashes allowed), then overrides.

    A file may hold its settings at top level or under a ``[finetune]`` table.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_file(Path(path))
    values.update({k: v for k, v in overrides.items()})
    known = config_fields()
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise FinetuneError(f"unknown setting(s) {', '.join(unknown)} in {path or 'overrides'}; "
                            f"known: {', '.join(known)}")
    return FinetuneConfig(**values).validate()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FinetuneError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise FinetuneError(f"config file {str(path)!r} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise FinetuneError(f"cannot parse config file {str(path)!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # yaml.YAMLError without importing yaml at module level
        if type(e).__module__.startswith("yaml"):
            raise FinetuneError(f"cannot parse config file {str(path)!r}: {str(e).splitlines()[0]}") from None
        raise
    if not isinstance(data, dict):
        raise FinetuneError(f"config file {str(path)!r} must hold a table of settings")
    if isinstance(data.get("finetune"), dict):
        data = data["finetune"]
    return {k.replace("-", "_"): v for k, v in data.items()}


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

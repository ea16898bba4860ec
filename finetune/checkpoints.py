"""Checkpoints of a run: what they hold, writing them atomically, and finding the one to resume from.

``OUT/checkpoints/step-N/`` holds the trainable weights (``trainable.safetensors``), the optimizer
(``optimizer.pt``) and ``state.pt``: the loop's position (``TrainState``), the schedule, every RNG
state and the run's settings, so that a resumed run continues bit for bit where it stopped.
"""
from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import distributed
from .config import FinetuneConfig
from .errors import FinetuneError

CHECKPOINTS = "checkpoints"
# A checkpoint that cannot be read is renamed with this prefix on --resume: out of the step-* set, so
# neither pruning (which would keep it and delete a good one) nor the next resume counts it.
DAMAGED = "damaged-"
STATE_KEYS = frozenset({"train_state", "scheduler", "rng", "config"})
# Settings that must match for --resume to continue the same run. The speed levers (preset, speed) are
# not among them: each leaves the loss unchanged (tests/test_finetune_speed.py), so a run may resume faster
# or in less memory; the batch size and LoRA dropout a preset suggests are compared as resolved.
RESUME_KEYS = ("dataset", "model", "method", "batch_size", "grad_accum", "seed", "epochs", "max_steps",
               "lora_r", "lora_alpha", "lora_dropout", "train_vision", "loss", "lr", "weight_decay", "warmup_ratio",
               "augment", "max_image_tokens", "answer_noise", "vision_warmup_epochs")


@dataclass
class TrainState:
    """Where the loop is: enough, with the RNG and optimizer states, to continue exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0      # batches of `epoch` already consumed
    samples: int = 0
    skipped_ids: list[int] = field(default_factory=list)  # training rows whose image could not be read
    last_loss: float | None = None
    last_grad_norm: float | None = None   # before clipping: the health signal W&B users watch

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)


def atomic_dir(path: Path, write: Callable[[str], Any]) -> None:
    """Write a directory under a temporary name, then rename it into place (no half-written dirs).

    A ``write`` that fails (a full disk, Ctrl-C) leaves ``path`` as it was and its temporary removed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def latest_checkpoint(out: Path) -> Path | None:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / "state.pt").is_file())
    return done[-1] if done else None


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, model, optimizer, scheduler, state: TrainState, cfg: FinetuneConfig,
                    dist: distributed.Dist = distributed.Dist()) -> Path:
    """Every rank calls it (a sharded model's tensors are gathered); rank 0 writes."""
    path = out / CHECKPOINTS / f"step-{state.step:08d}"
    weights = distributed.trainable_state(model, dist)
    optimizer_state = distributed.optimizer_state(model, optimizer, dist)
    if not dist.is_main:
        return path

    def write(tmp: str) -> None:
        save_file(weights, os.path.join(tmp, "trainable.safetensors"))
        torch.save(optimizer_state, os.path.join(tmp, "optimizer.pt"))
        torch.save({"train_state": asdict(state), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                    "config": cfg.to_dict()}, os.path.join(tmp, "state.pt"))

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_dir(path, write)
    for old in sorted(p for p in path.parent.glob("step-*") if p.is_dir())[:-max(1, cfg.keep_checkpoints)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise FinetuneError(f"checkpoint {path} does not match the model ({len(missing)} trainable tensors missing)")
    distributed.load_trainable_state(model, weights)
    distributed.load_optimizer_state(model, optimizer,
                                     torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    saved = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    known = {f.name for f in fields(TrainState)}  # an older checkpoint's "skipped" count is now derived
    return TrainState(**{k: v for k, v in saved["train_state"].items() if k in known})


class _Damaged(Exception):
    """A checkpoint file that cannot be read: its name and what reading it said."""


def _read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's state.pt, once every one of its files has been found readable; else ``_Damaged``.

    A write cut short (a full disk, a kill mid-copy) fails here, before the model is built. The weights'
    header is checked against the file's length and the optimizer's tensors are mapped, not read.
    """
    def weights(file: Path) -> None:
        with safe_open(str(file), framework="pt"):
            pass

    readers: tuple[tuple[str, Callable[[Path], Any]], ...] = (
        ("trainable.safetensors", weights),
        ("optimizer.pt", lambda file: torch.load(file, map_location="cpu", weights_only=False, mmap=True)),
        ("state.pt", lambda file: torch.load(file, map_location="cpu", weights_only=False)),
    )
    for name, read in readers:
        try:
            content = read(path / name)
        except Exception as e:  # noqa: BLE001 - a damaged archive or pickle can raise almost anything
            said = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0]  # torch's runs on
            raise _Damaged(f"{name}: {said[:160]}") from None
    if not isinstance(content, dict) or not STATE_KEYS <= content.keys():
        raise _Damaged("state.pt: not a checkpoint's state")
    return content


def resume_checkpoint(out: Path, cfg: FinetuneConfig, console: Console, main: bool) -> Path:
    """The newest checkpoint in ``out`` that can be read and was written with ``cfg``'s settings.

    Newer ones that cannot be read are set aside (by rank 0) as ``damaged-step-N`` and said; when
    none can be read, a one-line error.
    """
    root = out / CHECKPOINTS
    damaged: list[tuple[Path, str]] = []
    for path in sorted(root.glob("step-*"), reverse=True):
        try:
            saved = _read_state(path)
            break
        except _Damaged as e:
            damaged.append((path, str(e)))
    else:
        listed = "; ".join(f"{p.name} ({why})" for p, why in damaged)
        raise FinetuneError(f"--resume: no checkpoint in {root} can be read: {listed}; "
                            f"move {root} away to start the run over")
    _check_resumable(path, cfg, saved["config"])
    for bad, why in damaged:
        aside = bad.with_name(DAMAGED + bad.name)
        if main:
            shutil.rmtree(aside, ignore_errors=True)  # the same step, set aside by an earlier resume
            os.replace(bad, aside)
        console.print(f"[yellow]warning: checkpoint {bad.name} cannot be read ({escape(why)}): set aside as "
                      f"{CHECKPOINTS}/{aside.name}; resuming from {path.name}", highlight=False)
    return path


def _check_resumable(path: Path, cfg: FinetuneConfig, saved: dict[str, Any]) -> None:
    diff = [k for k in RESUME_KEYS if not _same_setting(k, saved.get(k), getattr(cfg, k))]
    if diff:
        details = ", ".join(f"{k}={saved.get(k)!r} (now {getattr(cfg, k)!r})" for k in diff)
        raise FinetuneError(f"--resume: the run in {path.parent.parent} used different settings: {details}")


def _same_setting(key: str, saved: Any, now: Any) -> bool:
    """Equal settings; a local dataset folder given as another path to the same place is the same."""
    if key == "dataset" and saved != now and saved and now and Path(saved).is_dir() and Path(now).is_dir():
        return Path(saved).resolve() == Path(now).resolve()
    return saved == now

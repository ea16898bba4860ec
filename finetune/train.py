"""The training loop: model setup, AdamW + warmup/cosine, accumulation, checkpoints, exact resume.

``train(config)`` is the notebook API; ``run-finetune`` is a thin layer over it.

A run directory holds::

    OUT/config.json          the settings of the run
    OUT/processor/           tokenizer + image processor (the built-in models' tokenizer is trained here)
    OUT/checkpoints/step-N/  trainable weights, optimizer, scheduler, RNG states, data position
    OUT/final/               the trained model (built-in: merged weights; real + LoRA: the adapter)
    OUT/metrics.json, OUT/predictions.jsonl, OUT/wandb/
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from . import data as data_mod
from . import distributed
from . import evaluate as eval_mod
from . import feature_cache
from . import gc_steps
from . import models as models_mod
from . import speed as speed_mod
from .config import FinetuneConfig, FinetuneError, RunResult
from .loss import ANSWER_INDEX_KEY, core_model, with_host_indices
from .tokenizer import train_tokenizer
from .tracking import Tracker, TrainProgress, memory_gib, wandb_mode

CHECKPOINTS = "checkpoints"
# A checkpoint that cannot be read is renamed with this prefix on --resume: out of the step-* set, so
# neither pruning (which would keep it and delete a good one) nor the next resume counts it.
DAMAGED = "damaged-"
STATE_KEYS = frozenset({"train_state", "scheduler", "rng", "config"})
# Settings that must match for --resume to continue the same run.
RESUME_KEYS = ("dataset", "model", "method", "batch_size", "grad_accum", "seed", "epochs", "max_steps",
               "lora_r", "lora_alpha", "lora_dropout", "train_vision", "loss", "lr", "weight_decay", "warmup_ratio",
               "augment")


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


class WarmupCosine:
    """Linear warmup to the peak learning rate, then cosine decay to zero (a picklable LR lambda)."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------------------------
# Setup


def resolve_device(name: str | None) -> torch.device:
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise FinetuneError(f"--device {name} asked for, but CUDA is not available")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_model(loaded: models_mod.LoadedModel, cfg: FinetuneConfig):
    """LoRA (peft) or full fine-tuning; the vision side trains or stays frozen as configured.

    LoRA goes on the decoder's linear layers only. When the vision side trains (the random tiny
    model must learn to see) the vision tower and projector train in full, and so do the
    embeddings, final norm and head of a random model; all through ``modules_to_save``, so that
    the adapter carries them.
    """
    model = loaded.model
    train_vision = loaded.train_vision if cfg.train_vision is None else cfg.train_vision
    vision = models_mod.vision_module_names(model)
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        in_full = (vision if train_vision else []) + (
            models_mod.embedding_module_names(model) if loaded.train_embeddings else [])
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=models_mod.language_linear_names(model),
            modules_to_save=in_full or None,
        )
        model = get_peft_model(model, lora)
    else:
        for name, param in model.named_parameters():
            in_vision = any(name == v or name.startswith(v + ".") for v in vision)
            param.requires_grad_(train_vision or not in_vision)
    if cfg.gradient_checkpointing:
        core_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    core_model(model).config.use_cache = False
    return model


def _load_model(cfg: FinetuneConfig, splits, out: Path, device, dtype, prompt_for) -> models_mod.LoadedModel:
    """The model and processor; a built-in model's tokenizer is trained once and saved with the run."""
    from transformers import AutoTokenizer

    if not models_mod.is_builtin(cfg.model):
        return models_mod.load_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=dtype,
                                          device=device)
    saved = out / "processor"
    if saved.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(str(saved))
        # from_pretrained records how it loaded in init_kwargs, which save_pretrained would write into
        # final/tokenizer_config.json: a resumed run's final model must match an uninterrupted run's.
        for key in ("is_local", "local_files_only"):
            tokenizer.init_kwargs.pop(key, None)
    else:
        from .tokenizer import END, IMAGE

        texts = data_mod.training_texts(splits["train"], prompt_for(IMAGE), END)
        tokenizer = train_tokenizer(texts, vocab_size=cfg.tokenizer_vocab_size)
    loaded = models_mod.build_builtin(cfg.model, tokenizer, device=device, dtype=dtype, seed=cfg.seed)
    if not saved.is_dir():
        _atomic_dir(saved, loaded.processor.save_pretrained)
    return loaded


# --------------------------------------------------------------------------------------------
# Checkpoints


def _atomic_dir(path: Path, write: Callable[[str], Any]) -> None:
    """Write a directory under a temporary name, then rename it into place (no half-written dirs)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(str(tmp))
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
    from safetensors.torch import save_file

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
    _atomic_dir(path, write)
    for old in sorted(p for p in path.parent.glob("step-*") if p.is_dir())[:-max(1, cfg.keep_checkpoints)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    from safetensors.torch import load_file

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
    from safetensors import safe_open

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


def _resume_checkpoint(out: Path, cfg: FinetuneConfig, console: Console, main: bool) -> Path:
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


# --------------------------------------------------------------------------------------------
# The loop


def train(config: FinetuneConfig, *, console: Console | None = None,
          on_step: Callable[[int], None] | None = None) -> RunResult:
    """Fine-tune, evaluate and save; returns where everything went and the metrics.

    ``on_step(step)`` is called after every optimizer step (and its checkpoint, if one was due).
    """
    cfg = config.validate()
    console = console or Console(stderr=True)
    if cfg.dataset is None:
        raise FinetuneError("no dataset given: pass --dataset DIR_OR_REPO (or use run-finetune without it "
                            "to generate the default one)")
    out = Path(cfg.out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None and not cfg.resume:
        raise FinetuneError(f"{out} already holds a run (last checkpoint {checkpoint.name}): "
                            "add --resume to continue it, or choose another --out")
    dist = distributed.from_env()
    if not dist.is_main:
        console = Console(stderr=True, quiet=True)  # one voice per run: rank 0 reports
    if checkpoint is not None:
        checkpoint = _resume_checkpoint(out, cfg, console, main=dist.is_main)
    distributed.check_batch(dist, cfg.batch_size)  # before joining: every rank stops with the same message
    device = distributed.setup(dist, resolve_device(cfg.device))
    bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FinetuneError("this GPU has no bf16 support: run with bf16 = false")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    models_mod.check_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    splits = data_mod.load_splits(cfg.dataset, seed=cfg.seed)
    limits = eval_mod.load_limits(cfg.dataset)   # what a perfect image reader could score (generator's limits.json)
    _check_usable_rows(splits["train"], cfg)
    dtype = torch.bfloat16 if bf16 else torch.float32

    def prompt_for(image_token: str) -> str:
        return data_mod.phi3_prompt(cfg.question, image_token)

    if not dist.is_main:
        distributed.barrier(dist)  # rank 0 trains and saves the tokenizer; the others load it
    loaded = _load_model(cfg, splits, out, device, dtype, prompt_for)
    if dist.is_main:
        distributed.barrier(dist)
    # Only now: a bad dataset or model leaves no empty run folder behind.
    out.mkdir(parents=True, exist_ok=True)
    prompt = data_mod.build_prompt(loaded, cfg.question)
    model = prepare_model(loaded, cfg)
    if not models_mod.is_builtin(cfg.model) and device.type == "cpu":
        model.to(device)
    if dist.is_main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    fsdp = distributed.use_fsdp(cfg.method, cfg.fsdp, dist)
    # Taken before compilation and sharding: rank 0 evaluates and saves a whole copy of a sharded model.
    frame = distributed.weightless_copy(model) if fsdp and dist.is_main else None
    speed = speed_mod.resolve(cfg.preset, cuda=device.type == "cuda")
    if speed != speed_mod.preset(cfg.preset):
        console.print(f"--preset {cfg.preset}: no compilation on {device.type} (it pays on CUDA only)")
    if speed_mod.apply_speed(model, speed) == 0 and speed.compile_layers:
        console.print(f"--preset {cfg.preset}: no transformer blocks of {cfg.model} to compile; they run eager")
    maskless = speed.maskless and speed_mod.maskless_supported(model)
    augment = cfg.augment
    cache = None
    if speed.cache_image_features and augment:
        console.print(f"--preset {cfg.preset}: no image feature cache (the training images are augmented)")
    elif speed.cache_image_features:
        cache, said = feature_cache.for_run(model, rows=len(splits["train"]), device=device, kind=cfg.loss,
                                            sharded=fsdp, processes=dist.world)
        console.print(said)
    step_module = distributed.wrap(model, cfg.loss, dist, device, shard=fsdp, cache=cache)

    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr or models_mod.default_lr(cfg.model, cfg.method, loaded.default_lr)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    lengths = data_mod.answer_lengths(splits["train"], loaded.tokenizer, loaded.end_token)
    sampler = data_mod.LengthGroupedBatchSampler(lengths, cfg.batch_size, seed=cfg.seed)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * sampler.batches_per_epoch() / cfg.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(int(cfg.warmup_ratio * total_steps), total_steps))

    state = TrainState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        console.print(f"resuming from {checkpoint} (step {state.step} of {total_steps})")
    resumed_from = state.step if checkpoint is not None else None
    # Kept now: by the end of the run, pruning may have deleted the checkpoint we started from.
    samples_before = state.samples

    collator = data_mod.Collator(loaded.processor, prompt, loaded.end_token, train=True,
                                 pad_to_multiple_of=speed.pad_to_multiple_of, augment=augment, seed=cfg.seed)
    batch_sampler = distributed.RankSlice(sampler, dist) if dist.enabled else sampler
    loader = data_mod.make_loader(splits["train"], collator,
                                  batch_sampler=data_mod.AcrossEpochs(batch_sampler, state.epoch,
                                                                      state.batch_in_epoch, tag_epochs=augment),
                                  num_workers=cfg.loader_workers(device.type == "cuda", dist.world),
                                  pin_memory=device.type == "cuda", seed=cfg.seed)
    # Every rank must run each micro-batch's forward and backward (they gather and reduce together):
    # one left without rows (an epoch's short last batch, unreadable images) runs this one at weight 0.
    standin = _standin(splits["train"], collator) if dist.enabled else None
    tracker = Tracker({**cfg.to_dict(), "lr_resolved": lr, "total_steps": total_steps,
                       "trainable_parameters": sum(p.numel() for p in trainable),
                       "parameters": models_mod.count_parameters(model), "device": str(device)},
                      out, project=cfg.wandb_project, mode=wandb_mode(cfg.no_wandb) if dist.is_main else "disabled",
                      local=dist.is_main, start_step=state.step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    batches, per_epoch = iter(loader), sampler.batches_per_epoch()

    def next_batch() -> dict:
        batch = next(batches)
        # The last batch ended its epoch: AcrossEpochs went on with the next one's. Rolling over here,
        # not after the last batch, keeps a checkpoint at an epoch's end as (epoch, all its batches).
        if state.batch_in_epoch >= per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        state.batch_in_epoch += 1
        new = sorted(set(batch[data_mod.SKIPPED_KEY]) - set(state.skipped_ids))
        if new:  # later epochs meet the same rows again: warn and count each once
            state.skipped_ids += new
            console.print(f"[yellow]warning: skipped {len(new)} row(s) with unreadable "
                          f"images ({state.skipped} so far)")
        return with_host_indices(batch)

    train_seconds, window_samples, window_start = 0.0, 0, time.perf_counter()
    first_step: tuple[float, int] | None = None
    last_checkpoint = checkpoint
    metrics: dict[str, Any] = {}
    model.train()
    try:
        with TrainProgress(total_steps, state.step, console) as bar, \
                gc_steps.collect_every() as collector:
            while state.step < total_steps:
                t0 = time.perf_counter()
                micro = [next_batch() for _ in range(cfg.grad_accum)]
                if standin is None:
                    micro = [b for b in micro if "labels" in b]
                else:
                    micro = [b if "labels" in b else standin for b in micro]
                real = [b for b in micro if b is not standin]
                # The step's loss is the mean over every answer token of the global batch.
                tokens, rows = distributed.global_sum(
                    (sum(len(b[ANSWER_INDEX_KEY]) for b in real),
                     sum(len(b[data_mod.INDEX_KEY]) for b in real)), dist, device)
                n_items, n = int(tokens), int(rows)
                # Loss and grad norm stay on the device until a log line needs them: a host sync
                # per step would leave the GPU idle while the CPU queues the next kernels.
                step_loss = torch.zeros((), device=device)
                try:
                    for i, batch in enumerate(micro):
                        weight = 0.0 if batch is standin else 1.0
                        batch = speed_mod.drop_causal_mask(batch, maskless)
                        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                                 for k, v in batch.items()}
                        speed_mod.begin_step(speed)
                        # Gradients are averaged over ranks once, on the step's last micro-batch.
                        sync = distributed.no_sync(step_module) if i < len(micro) - 1 else contextlib.nullcontext()
                        with sync:
                            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                                loss = weight * step_module(batch, n_items)
                            # DDP and FSDP average gradients over N ranks; each rank's loss is already a share
                            # of the global mean, so N undoes the average and the sum is the global gradient.
                            (loss * dist.world).backward()
                        step_loss += loss.detach()
                    if dist.enabled:
                        torch.distributed.all_reduce(step_loss)
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
                    optimizer.step()
                except torch.OutOfMemoryError:
                    raise _oom_error(cfg, last_checkpoint) from None
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.samples += n
                due_log = state.step % cfg.log_every == 0 or state.step == total_steps
                due_save = (cfg.save_every and state.step % cfg.save_every == 0) or state.step == total_steps
                due_eval = bool(cfg.eval_every) and state.step % cfg.eval_every == 0 and state.step < total_steps
                if first_step is None or due_log or due_save or due_eval or on_step is not None:
                    state.last_loss, state.last_grad_norm = float(step_loss), float(grad_norm)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                if first_step is None:  # compilation, autotuning and NCCL set-up land in the first step
                    first_step = (time.perf_counter() - t0, n)
                train_seconds += time.perf_counter() - t0
                window_samples += n

                if due_log:
                    rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                    mem = memory_gib(device)
                    current_lr = scheduler.get_last_lr()[0]
                    bar.update(state.step, state.last_loss, current_lr, rate, mem)
                    tracker.log({"train/loss": state.last_loss, "train/lr": current_lr, "train/samples_per_s": rate,
                                 "train/grad_norm": state.last_grad_norm,
                                 "train/peak_memory_gib": mem, "train/epoch": state.epoch}, step=state.step)
                    window_samples, window_start = 0, time.perf_counter()
                if due_eval:
                    with distributed.whole_model(model, frame, dist) as whole:  # rank 0's; None elsewhere
                        if whole is not None:
                            result = _evaluate(whole, loaded, splits, prompt, cfg, device, bf16, limits)
                            tracker.log_eval(result.metrics, state.step, samples_seen=state.samples)
                            bar.progress.console.print(
                                f"step {state.step}: category3 accuracy "
                                f"{result.metrics['model']['category3_accuracy']:.3f}, "
                                f"parse rate {result.metrics['model']['parse_rate']:.3f}")
                    window_start = time.perf_counter()
                if due_save:
                    last_checkpoint = save_checkpoint(out, model, optimizer, scheduler, state, cfg, dist)
                    distributed.barrier(dist)  # every rank's view of the run folder agrees after a save
                    window_start = time.perf_counter()
                if on_step is not None:
                    on_step(state.step)
                collector.step(state.step)

        # Evaluation and the final model happen once, on rank 0 (every rank gathers a sharded model).
        with distributed.whole_model(model, frame, dist) as whole:
            if whole is not None:
                result = _evaluate(whole, loaded, splits, prompt, cfg, device, bf16, limits)
                metrics = result.metrics
                metrics["train"] = {"steps": state.step, "samples": state.samples, "final_loss": state.last_loss,
                                    "final_grad_norm": state.last_grad_norm,
                                    "samples_per_s": (state.samples - samples_before) / train_seconds
                                    if train_seconds else None, "skipped_rows": state.skipped,
                                    "processes": dist.world, "fsdp": fsdp,
                                    "steady_samples_per_s": _steady(state.samples - samples_before, train_seconds,
                                                                    first_step),
                                    # Rank 0's cache: how much of this run skipped the vision tower.
                                    "image_feature_cache": None if cache is None else {
                                        "batches_served": cache.served, "batches_computed": cache.computed,
                                        "rows_cached": len(cache)}}
                eval_mod.write_results(result, out)
                tracker.log_eval(metrics, state.step, eval_mod.sample_predictions(result))
                console.print(eval_mod.results_table(metrics))
                console.print(eval_mod.diagnostics_table(metrics))
                if cache is not None:
                    console.print(f"image feature cache: {cache.served} of {cache.served + cache.computed} "
                                  f"batches served without the vision tower ({len(cache)} rows cached)")
                if cfg.save_final:
                    _save_final(whole, loaded, out, cfg)
        distributed.barrier(dist)
    finally:
        tracker.finish()
        distributed.teardown(dist)

    samples_this_run = state.samples - samples_before
    return RunResult(
        out=out,
        steps=state.step,
        samples_seen=state.samples,
        train_seconds=train_seconds,
        samples_per_second=samples_this_run / train_seconds if train_seconds else 0.0,
        final_loss=state.last_loss,
        peak_memory_gib=memory_gib(device),
        metrics=metrics,
        skipped_rows=state.skipped,
        resumed_from=resumed_from,
    )


def _check_usable_rows(train_split, cfg: FinetuneConfig) -> None:
    """Refuse, before the model loads, a training split whose readable rows do not fill one batch:
    with none, the loop would train on nothing and still save a "final" model and exit 0."""
    rows = len(train_split)
    usable = data_mod.readable_rows(train_split, enough=cfg.batch_size)
    if usable >= cfg.batch_size:
        return
    where = f"dataset {cfg.dataset!r}"
    if usable == 0:
        raise FinetuneError(f"none of the {rows} training rows has a readable image: nothing to train on ({where})")
    if usable < rows:
        raise FinetuneError(f"only {usable} of the {rows} training rows have a readable image ({rows - usable} "
                            f"unreadable), fewer than one batch (--batch-size {cfg.batch_size}): repair the "
                            f"images of {where} or lower --batch-size")
    raise FinetuneError(f"the training split has {rows} rows, fewer than one batch (--batch-size "
                        f"{cfg.batch_size}): lower --batch-size or add rows to {where}")


def _standin(train_split, collator) -> dict:
    """A one-row training batch (the first readable row), with its answer positions."""
    batch = next((b for b in data_mod.make_loader(train_split, collator, batch_size=1) if "labels" in b), None)
    if batch is None:
        raise FinetuneError("no image of the training split can be read")
    return with_host_indices(batch)


def _steady(samples: int, seconds: float, first_step: tuple[float, int] | None) -> float | None:
    """Samples/s after the first step (the throughput a long run converges to)."""
    if first_step is None or seconds <= first_step[0]:
        return None
    return (samples - first_step[1]) / (seconds - first_step[0])


def _evaluate(model, loaded, splits, prompt, cfg, device, bf16, limits=None):
    return eval_mod.evaluate(
        model, loaded, splits, prompt,
        batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens, device=device, bf16=bf16,
        max_samples=cfg.max_eval_samples, num_workers=cfg.loader_workers(device.type == "cuda"), limits=limits,
    )


def _oom_error(cfg: FinetuneConfig, checkpoint: Path | None) -> FinetuneError:
    kept = f"; last checkpoint kept at {checkpoint}, continue with --resume" if checkpoint else ""
    hint = "lower --batch-size (and raise --grad-accum to keep the effective batch)"
    if not cfg.gradient_checkpointing:
        hint += " or add --gradient-checkpointing"
    return FinetuneError(f"CUDA out of memory at batch size {cfg.batch_size}: {hint}{kept}", exit_code=1)


def _save_final(model, loaded, out: Path, cfg: FinetuneConfig) -> None:
    """The trained model in a loadable form, beside its processor.

    Built-in models have random base weights, so an adapter alone would be useless: their LoRA is
    merged and the whole model saved (loadable with AutoModelForImageTextToText). For a real model
    the LoRA adapter is saved (peft format), or the whole model after full fine-tuning.
    """
    def write(tmp: str) -> None:
        loaded.processor.save_pretrained(tmp)
        if cfg.method == "lora" and not loaded.builtin:
            model.save_pretrained(os.path.join(tmp, "adapter"))
            return
        # Training is over: merging in place costs no second copy of the weights.
        core = model.merge_and_unload() if cfg.method == "lora" else core_model(model)
        core.config.use_cache = True
        core.save_pretrained(tmp)

    _atomic_dir(out / "final", write)

"""A fine-tuning run as a recipe, in the spirit of torchtune's single-device recipes.

``Recipe(config).setup()`` builds what a run needs, in the order it needs it: the run folder and the
processes, the data, the model (LoRA or full, the speed levers, the image feature cache), the
optimizer and its schedule (and the state of a resumed run), the loader and the ``TrainStep``.
``train()`` (finetune/train.py) then drives the loop over the recipe's parts: ``next_micro_batches``,
``step``, ``log``, ``evaluate``, ``save``, and at the end ``finish`` (final evaluation and model),
``close`` and ``result``.

The order of setup matters beyond readability: the global RNG is seeded first and consumed by
building the model and its adapters, so an uninterrupted and a resumed run see the same stream.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from rich.console import Console
from transformers import AutoTokenizer

from . import data as data_mod
from . import distributed
from . import eval_tables
from . import evaluate as eval_mod
from . import export as export_mod
from . import image_budget
from . import builtins
from . import models as models_mod
from . import report as run_report
from . import speed as speed_mod
from . import vision_warmup
from .checkpoints import TrainState, atomic_dir, latest_checkpoint, load_checkpoint, resume_checkpoint, save_checkpoint
from .config import FinetuneConfig, RunResult
from .errors import FinetuneError
from .families import core_model, train_mode
from .loaded_model import LoadedModel
from .loss import with_host_indices
from .speed import feature_cache
from .step import StepOutput, TrainStep
from .tokenizer import END, IMAGE, train_tokenizer
from .tracking import Tracker, TrainProgress, memory_gib, wandb_mode


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


@dataclass
class Throughput:
    """Training time: the run's (the first step, with its compilation, apart) and the log window's."""

    seconds: float = 0.0
    first_step: tuple[float, int] | None = None      # (seconds, rows) of the first step
    window_samples: int = 0
    window_start: float = field(default_factory=time.perf_counter)

    def add(self, t0: float, rows: int) -> None:
        """A step that began at ``t0`` and trained ``rows`` rows."""
        if self.first_step is None:  # compilation, autotuning and NCCL set-up land in the first step
            self.first_step = (time.perf_counter() - t0, rows)
        self.seconds += time.perf_counter() - t0
        self.window_samples += rows

    def steady(self, samples: int) -> float | None:
        """Samples/s after the first step (the throughput a long run converges to)."""
        if self.first_step is None or self.seconds <= self.first_step[0]:
            return None
        return (samples - self.first_step[1]) / (self.seconds - self.first_step[0])


class Recipe:
    """One fine-tuning run: ``setup()``, then the parts of the loop that ``train()`` calls."""

    def __init__(self, config: FinetuneConfig, console: Console | None = None):
        self.cfg = config.validate()
        self.console = console or Console(stderr=True)

    # ----------------------------------------------------------------------------------------
    # Setup

    def setup(self) -> None:
        self._setup_run()
        self._setup_data()
        self._setup_model()
        self._setup_speed()
        self._setup_optimizer()
        self._setup_loader()

    def _setup_run(self) -> None:
        """The run folder (new, or a run to resume), the processes, the device and the seeds."""
        cfg = self.cfg
        if cfg.dataset is None:
            raise FinetuneError("no dataset given: pass --dataset DIR_OR_REPO (or use run-finetune without it "
                                "to generate the default one)")
        self.out = out = Path(cfg.out)
        checkpoint = latest_checkpoint(out)
        if checkpoint is not None and not cfg.resume:
            raise FinetuneError(f"{out} already holds a run (last checkpoint {checkpoint.name}): "
                                "add --resume to continue it, or choose another --out")
        self.dist = dist = distributed.from_env()
        if not dist.is_main:
            self.console = Console(stderr=True, quiet=True)  # one voice per run: rank 0 reports
        if checkpoint is not None:
            checkpoint = resume_checkpoint(out, cfg, self.console, main=dist.is_main)
        self.checkpoint = self.last_checkpoint = checkpoint
        distributed.check_batch(dist, cfg.batch_size)  # before joining: every rank stops with the same message
        self.device = device = distributed.setup(dist, resolve_device(cfg.device))
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else builtins.default_bf16(cfg.model, device.type)
        if self.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise FinetuneError("this GPU has no bf16 support: run with bf16 = false")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

    def _setup_data(self) -> None:
        cfg = self.cfg
        models_mod.check_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.splits = data_mod.load_splits(cfg.dataset, seed=cfg.seed)
        self.limits = eval_mod.load_limits(cfg.dataset)  # what a perfect image reader could score (limits.json)
        check_usable_rows(self.splits["train"], cfg)

    def _setup_model(self) -> None:
        """The model and processor, LoRA or full fine-tuning; the run's settings written beside them."""
        cfg, dist, out = self.cfg, self.dist, self.out
        if not dist.is_main:
            distributed.barrier(dist)  # rank 0 trains and saves the tokenizer; the others load it
        self.loaded = load_model(cfg, self.splits, out, self.device, torch.bfloat16 if self.bf16 else torch.float32)
        self.warmup_seconds = 0.0   # rank 0's, when it warms the vision side up (not when it loads the run's)
        if dist.is_main:
            self._warm_up_vision()
            distributed.barrier(dist)
        elif cfg.vision_warmup_epochs > 0:
            vision_warmup.load(self.loaded.model, out)   # rank 0's warmed vision side: every rank starts alike
        # Only now: a bad dataset or model leaves no empty run folder behind.
        out.mkdir(parents=True, exist_ok=True)
        self.prompt = data_mod.build_prompt(self.loaded, cfg.question)
        # Before the collator, the evaluation and the saved processor see it; LLaVA-NeXT's model config too,
        # before peft wraps it.
        said = image_budget.apply_max_image_tokens(self.loaded, self.prompt, cfg.max_image_tokens)
        if said:
            self.console.print(said, markup=False, highlight=False)
        self.model = prepare_model(self.loaded, cfg)
        if not builtins.is_builtin(cfg.model) and self.device.type == "cpu":
            self.model.to(self.device)
        if dist.is_main:
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.fsdp = distributed.use_fsdp(cfg.method, cfg.fsdp, dist)
        # Taken before compilation and sharding: rank 0 evaluates and saves a whole copy of a sharded model.
        self.frame = distributed.weightless_copy(self.model) if self.fsdp and dist.is_main else None

    def _warm_up_vision(self) -> None:
        """The vision side's warm-up (finetune/vision_warmup.py), or the run's warmed weights when resuming.

        Only a resumed run reads the file: a new run in a folder an earlier one left before its first
        checkpoint may find another dataset's or seed's warm-up there, and warms up again.
        """
        cfg, model = self.cfg, self.loaded.model
        if cfg.vision_warmup_epochs <= 0:
            return
        if self.checkpoint is not None and vision_warmup.load(model, self.out):
            return
        t0 = time.perf_counter()
        history = vision_warmup.warm_up(model, self.loaded.processor.image_processor, self.splits["train"],
                                       vision_warmup.WarmupConfig(epochs=cfg.vision_warmup_epochs, seed=cfg.seed,
                                                                  department=cfg.warmup_department),
                                       console=self.console)
        self.warmup_seconds = time.perf_counter() - t0
        self.out.mkdir(parents=True, exist_ok=True)
        vision_warmup.save(model, self.out)
        said = ", ".join(f"{k} {v:.3f}" for k, v in history[-1].items())
        self.console.print(f"vision warm-up: {cfg.vision_warmup_epochs:g} epochs, last epoch's losses {said}")

    def _setup_speed(self) -> None:
        """The preset's levers, the image feature cache, and the loss as the module a step calls."""
        cfg, console = self.cfg, self.console
        self.speed = speed = speed_mod.resolve(cfg.preset, cfg.speed, cuda=self.device.type == "cuda")
        # Who turned the levers on: the preset, and the levers set on their own ([speed], speed flags).
        who = f"--preset {cfg.preset}" + (f" with {', '.join(cfg.speed)} set alone" if cfg.speed else "")
        if speed != speed_mod.preset(cfg.preset, **cfg.speed):
            console.print(f"{who}: no compilation on {self.device.type} (it pays on CUDA only)")
        speed, family_lines = speed_mod.for_family(self.model, speed)
        self.speed = speed
        for line in family_lines:
            console.print(f"{who}: {line}")
        if speed_mod.prepare_model(self.model, speed) == 0 and speed.compile_layers:
            console.print(f"{who}: no transformer blocks of {cfg.model} to compile; they run eager")
        self.maskless = speed.maskless and speed_mod.maskless_supported(self.model)
        self.cache = None
        if speed.cache_image_features and cfg.augment:
            console.print(f"{who}: no image feature cache (the training images are augmented)")
        elif speed.cache_image_features:
            self.cache, said = feature_cache.for_run(self.model, rows=len(self.splits["train"]), device=self.device,
                                                     kind=cfg.loss, sharded=self.fsdp, processes=self.dist.world)
            console.print(said)
        self.module = distributed.wrap(self.model, cfg.loss, self.dist, self.device, shard=self.fsdp,
                                       cache=self.cache)

    def _setup_optimizer(self) -> None:
        """AdamW and the warmup-cosine schedule over the run's steps; a resumed run's state."""
        cfg, loaded = self.cfg, self.loaded
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.lr = cfg.lr or builtins.default_lr(cfg.model, cfg.method, loaded.default_lr)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=self.lr, weight_decay=cfg.weight_decay,
                                           fused=self.device.type == "cuda")
        lengths = data_mod.answer_lengths(self.splits["train"], loaded.tokenizer, loaded.end_token)
        self.answer_width = max(lengths)
        # Where images take varying token counts, rows are grouped by answer and image tokens together.
        self.images_vary = image_budget.varies(loaded.processor)
        self.lengths, said = image_budget.bucket_lengths(lengths, self.splits["train"], loaded.processor,
                                                         cfg.max_image_tokens)
        for line in said:
            self.console.print(line, markup=False, highlight=False)
        self.sampler = data_mod.LengthGroupedBatchSampler(self.lengths, cfg.batch_size, seed=cfg.seed)
        self.total_steps = total = cfg.max_steps or math.ceil(
            cfg.epochs * self.sampler.batches_per_epoch() / cfg.grad_accum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(int(cfg.warmup_ratio * total), total))
        self.state = TrainState()
        if self.checkpoint is not None:
            self.state = load_checkpoint(self.checkpoint, self.model, self.optimizer, self.scheduler)
            self.console.print(f"resuming from {self.checkpoint} (step {self.state.step} of {total})")
        self.resumed_from = self.state.step if self.checkpoint is not None else None
        # Kept now: by the end of the run, pruning may have deleted the checkpoint we started from.
        self.samples_before = self.state.samples

    def _setup_loader(self) -> None:
        """The training loader from the run's position on, the step, and where the run reports."""
        cfg, dist, device, state, loaded = self.cfg, self.dist, self.device, self.state, self.loaded
        cuda = device.type == "cuda"
        collator = data_mod.Collator(loaded.processor, self.prompt, loaded.end_token, train=True,
                                     pad_to_multiple_of=self.speed.pad_to_multiple_of, augment=cfg.augment,
                                     answer_noise=cfg.answer_noise,
                                     seed=cfg.seed, text_prompt=data_mod.build_text_prompt(loaded, cfg.question))
        self._preflight(collator)   # before the loader's workers start: a run that cannot fit stops now
        batch_sampler = distributed.RankSlice(self.sampler, dist) if dist.enabled else self.sampler
        # The epoch travels with each row where the collator draws from (seed, epoch, row).
        drawn = cfg.augment or cfg.answer_noise > 0
        across = data_mod.AcrossEpochs(batch_sampler, state.epoch, state.batch_in_epoch, tag_epochs=drawn)
        loader = data_mod.make_loader(self.splits["train"], collator, batch_sampler=across,
                                      num_workers=cfg.loader_workers(cuda, dist.world), pin_memory=cuda, seed=cfg.seed)
        # Every rank must run each micro-batch's forward and backward (they gather and reduce together):
        # one left without rows (an epoch's short last batch, unreadable images) runs this one at weight 0.
        standin = make_standin(self.splits["train"], collator) if dist.enabled else None
        if standin is not None:   # and a micro-batch without an image runs the vision tower on its images
            distributed.set_image_standin(self.module, standin,
                                          text_only_rows=data_mod.text_only_rows(self.splits["train"]) > 0)
        self.train_step = TrainStep(self.module, self.optimizer, device=device, bf16=self.bf16,
                                    max_grad_norm=cfg.max_grad_norm, scheduler=self.scheduler, dist=dist,
                                    maskless=self.maskless, speed=self.speed, standin=standin)
        self.tracker = Tracker({**cfg.to_dict(), "lr_resolved": self.lr, "total_steps": self.total_steps,
                                "trainable_parameters": sum(p.numel() for p in self.trainable),
                                "parameters": models_mod.count_parameters(self.model), "device": str(device)},
                               self.out, project=cfg.wandb_project,
                               mode=wandb_mode(cfg.no_wandb) if dist.is_main else "disabled",
                               local=dist.is_main, start_step=state.step)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.batches, self.per_epoch = iter(loader), self.sampler.batches_per_epoch()
        self.metrics: dict[str, Any] = {}
        train_mode(self.model)

    def _preflight(self, collator) -> None:
        """Refuse a run whose estimated peak memory exceeds the GPU's free memory (finetune/image_budget.py)."""
        image_budget.preflight(model=self.model, trainable=self.trainable, cfg=self.cfg, speed=self.speed,
                               device=self.device, dist=self.dist, fsdp=self.fsdp, bf16=self.bf16,
                               ds=self.splits["train"], collator=collator, lengths=self.lengths,
                               answer_width=self.answer_width, images_vary=self.images_vary)

    # ----------------------------------------------------------------------------------------
    # The loop's parts

    def progress(self) -> TrainProgress:
        return TrainProgress(self.total_steps, self.state.step, self.console)

    def next_micro_batches(self) -> list[dict]:
        """The next step's ``grad_accum`` batches, counted into the run's data position."""
        return [self._next_batch() for _ in range(self.cfg.grad_accum)]

    def _next_batch(self) -> dict:
        state = self.state
        batch = next(self.batches)
        # The last batch ended its epoch: AcrossEpochs went on with the next one's. Rolling over here,
        # not after the last batch, keeps a checkpoint at an epoch's end as (epoch, all its batches).
        if state.batch_in_epoch >= self.per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        state.batch_in_epoch += 1
        new = sorted(set(batch[data_mod.SKIPPED_KEY]) - set(state.skipped_ids))
        if new:  # later epochs meet the same rows again: warn and count each once
            state.skipped_ids += new
            self.console.print(f"[yellow]warning: skipped {len(new)} row(s) with unreadable "
                               f"images ({state.skipped} so far)")
        return batch

    def step(self, micro_batches: list[dict]) -> StepOutput:
        """One optimizer step; the run's position moves on by it."""
        try:
            out = self.train_step(micro_batches)
        except torch.OutOfMemoryError:
            raise oom_error(self.cfg, self.last_checkpoint, self.images_vary) from None
        self.state.step += 1
        self.state.samples += out.rows
        return out

    def read_back(self, out: StepOutput) -> None:
        """The step's loss and gradient norm on the host: the one place a step waits for the device.

        Loss and norm stay on the device until a log line, a checkpoint or an evaluation needs them: a
        host sync per step would leave the GPU idle while the CPU queues the next kernels.
        """
        self.state.last_loss, self.state.last_grad_norm = float(out.loss), float(out.grad_norm)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log(self, bar: TrainProgress, clock: Throughput) -> None:
        state = self.state
        rate = clock.window_samples / max(1e-9, time.perf_counter() - clock.window_start)
        mem = memory_gib(self.device)
        current_lr = self.scheduler.get_last_lr()[0]
        bar.update(state.step, state.last_loss, current_lr, rate, mem)
        self.tracker.log({"train/loss": state.last_loss, "train/lr": current_lr, "train/samples_per_s": rate,
                          "train/grad_norm": state.last_grad_norm, "train/peak_memory_gib": mem,
                          "train/epoch": state.epoch}, step=state.step)
        clock.window_samples, clock.window_start = 0, time.perf_counter()

    def evaluate(self) -> None:
        """A generation eval in the middle of the run, on rank 0 (every rank gathers a sharded model)."""
        with distributed.whole_model(self.model, self.frame, self.dist) as whole:
            if whole is not None:
                result = self._evaluate(whole)
                self.tracker.log_eval(result.metrics, self.state.step, samples_seen=self.state.samples)
                self.console.print(f"step {self.state.step}: category3 accuracy "
                                   f"{result.metrics['model']['category3_accuracy']:.3f}, "
                                   f"parse rate {result.metrics['model']['parse_rate']:.3f}")

    def save(self) -> None:
        """A checkpoint (every rank takes part); every rank's view of the run folder agrees after it."""
        self.last_checkpoint = save_checkpoint(self.out, self.model, self.optimizer, self.scheduler, self.state,
                                               self.cfg, self.dist)
        distributed.barrier(self.dist)

    # ----------------------------------------------------------------------------------------
    # The end of a run

    def finish(self, clock: Throughput) -> None:
        """Evaluation, metrics and the final model, once, on rank 0 (every rank gathers a sharded model)."""
        console, cache = self.console, self.cache
        with distributed.whole_model(self.model, self.frame, self.dist) as whole:
            if whole is not None:
                result = self._evaluate(whole)
                self.metrics = metrics = result.metrics
                metrics["train"] = self._train_metrics(clock)
                eval_mod.write_results(result, self.out)
                self.tracker.log_eval(metrics, self.state.step, eval_mod.sample_predictions(result))
                console.print(eval_tables.results_table(metrics))
                console.print(eval_tables.diagnostics_table(metrics))
                if cache is not None:
                    console.print(f"image feature cache: {cache.served} of {cache.served + cache.computed} "
                                  f"batches served without the vision tower ({len(cache)} rows cached)")
                if self.cfg.save_final:
                    save_final(whole, self.loaded, self.out, self.cfg)
                if self.cfg.merge:   # --merge: OUT/merged, as run-finetune export writes it
                    console.print(export_mod.after_run(self.out))
                console.print(run_report.write_after_run(self.out))  # report.html (finetune/report/)
        distributed.barrier(self.dist)

    def _train_metrics(self, clock: Throughput) -> dict[str, Any]:
        state, cache = self.state, self.cache
        samples = state.samples - self.samples_before
        return {"steps": state.step, "samples": state.samples, "final_loss": state.last_loss,
                "final_grad_norm": state.last_grad_norm,
                "samples_per_s": samples / clock.seconds if clock.seconds else None,
                "skipped_rows": state.skipped, "processes": self.dist.world, "fsdp": self.fsdp,
                # The vision warm-up before the loop (0 when resumed: the run folder's weights were loaded).
                "vision_warmup_seconds": self.warmup_seconds,
                "steady_samples_per_s": clock.steady(samples),
                # Rank 0's cache: how much of this run skipped the vision tower.
                "image_feature_cache": None if cache is None else {
                    "batches_served": cache.served, "batches_computed": cache.computed, "rows_cached": len(cache)}}

    def close(self) -> None:
        self.tracker.finish()
        distributed.teardown(self.dist)

    def result(self, clock: Throughput) -> RunResult:
        state = self.state
        samples_this_run = state.samples - self.samples_before
        return RunResult(
            out=self.out,
            steps=state.step,
            samples_seen=state.samples,
            train_seconds=clock.seconds,
            samples_per_second=samples_this_run / clock.seconds if clock.seconds else 0.0,
            final_loss=state.last_loss,
            peak_memory_gib=memory_gib(self.device),
            metrics=self.metrics,
            skipped_rows=state.skipped,
            resumed_from=self.resumed_from,
        )

    def _evaluate(self, model) -> eval_mod.EvalResult:
        cfg, device = self.cfg, self.device
        return eval_mod.evaluate(
            model, self.loaded, self.splits, self.prompt,
            batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens, device=device, bf16=self.bf16,
            max_samples=cfg.max_eval_samples, num_workers=cfg.loader_workers(device.type == "cuda"),
            limits=self.limits, price_mbr=cfg.price_mbr,
        )


# --------------------------------------------------------------------------------------------
# Setup's parts


def resolve_device(name: str | None) -> torch.device:
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise FinetuneError(f"--device {name} asked for, but CUDA is not available")
        try:
            return torch.device(name)
        except RuntimeError as e:  # "junk", "cpu:-1": bad input, not a failure at run time
            raise FinetuneError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N "
                                f"({str(e).splitlines()[0][:120]})") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_usable_rows(train_split, cfg: FinetuneConfig) -> None:
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


def load_model(cfg: FinetuneConfig, splits, out: Path, device, dtype) -> LoadedModel:
    """The model and processor; a built-in model's tokenizer is trained once and saved with the run."""
    if not builtins.is_builtin(cfg.model):
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
        texts = data_mod.training_texts(splits["train"], data_mod.phi3_prompt(cfg.question, IMAGE), END)
        tokenizer = train_tokenizer(texts, vocab_size=cfg.tokenizer_vocab_size,
                                    extra_special_tokens=builtins.special_tokens(cfg.model))
    loaded = builtins.build_builtin(cfg.model, tokenizer, device=device, dtype=dtype, seed=cfg.seed)
    if not saved.is_dir():
        atomic_dir(saved, loaded.processor.save_pretrained)
    return loaded


def prepare_model(loaded: LoadedModel, cfg: FinetuneConfig):
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
        models_mod.reshare_modules_to_save(model)   # Phi-3-vision's image embedding holds the token embedding
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(train_vision or not models_mod.under(name, vision))
    if cfg.gradient_checkpointing:
        core_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    core_model(model).config.use_cache = False
    return model


def make_standin(train_split, collator) -> dict:
    """A one-row training batch (the first readable row), with its answer positions."""
    batch = next((b for b in data_mod.make_loader(train_split, collator, batch_size=1)
                  if "labels" in b and distributed.has_images(b)), None)
    if batch is None:
        raise FinetuneError("no image of the training split can be read")
    return with_host_indices(batch)


def oom_error(cfg: FinetuneConfig, checkpoint: Path | None, images_vary: bool = False) -> FinetuneError:
    kept = f"; last checkpoint kept at {checkpoint}, continue with --resume" if checkpoint else ""
    hint = image_budget.memory_hint(cfg, images_vary)   # the pre-flight's words
    return FinetuneError(f"CUDA out of memory at batch size {cfg.batch_size}: {hint}{kept}", exit_code=1)


def save_final(model, loaded, out: Path, cfg: FinetuneConfig) -> None:
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
        core = export_mod.merge_peft(model, source="final")[0] if cfg.method == "lora" else core_model(model)
        core.config.use_cache = True
        core.save_pretrained(tmp)

    atomic_dir(out / "final", write)

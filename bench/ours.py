"""Our recipe's training step, as ``run-finetune`` runs it, for the throughput benchmarks.

Everything comes from ``finetune``: the model (``build_builtin``), LoRA or full fine-tuning
(``prepare_model``), the prompt and collation (``Collator``, ``make_loader`` with the run's
workers and pinned memory, length-grouped batches), the speed levers (``speed.prepare_model``) and
the step itself (``finetune.step.TrainStep``, the one ``train()`` takes, over the answer-only loss). One round
is one iteration of the loop: the next batch from the loader, its copy to the device, forward +
backward under bf16 autocast on CUDA, gradient clipping (as in a run: always measured, clipped when
``max_grad_norm`` > 0), the fused AdamW step, and (on CUDA) a synchronize. No schedule: the learning
rate stays at its peak.

With ``SpeedConfig.cache_image_features`` the step serves a frozen tower's image features from the
run's cache (finetune/speed/feature_cache.py); ``fill_cache`` (default) runs the tower once over every
training row before timing, so the timed rounds are the steady state of the second epoch on.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from bench import measure


class Forever:
    """``LengthGroupedBatchSampler``'s batches, epoch after epoch, full batches only.

    A benchmark's rounds can outlast an epoch; the training loop's one iterator across epochs
    (``AcrossEpochs``) keeps the loader's workers prefetching across epoch ends, and dropping the
    short last batch keeps every step the same size.
    """

    def __init__(self, sampler, batch_size: int):
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self):
        from finetune.data import AcrossEpochs

        if not any(len(b) == self.batch_size for b in self.sampler.batches(0)):
            raise ValueError(f"no full batch of {self.batch_size} rows in the training split")
        yield from (b for b in AcrossEpochs(self.sampler) if len(b) == self.batch_size)


class LoopStep:
    """``steps_per_call`` optimizer steps of our loop per call; returns what they processed."""

    def __init__(self, loaded, splits, config, *, device: str, speed=None, steps_per_call: int = 1,
                 fill_cache: bool = True):
        import torch

        from finetune.data import (Collator, LengthGroupedBatchSampler, answer_lengths, build_prompt,
                                   make_loader)
        from finetune.families import train_mode
        from finetune.loss import LossModule
        from finetune import speed as speed_mod
        from finetune.speed import SpeedConfig
        from finetune.step import TrainStep
        from finetune.train import prepare_model

        self.device = torch.device(device)
        self.config = config
        self.steps_per_call = steps_per_call
        cuda = self.device.type == "cuda"
        self.bf16 = config.bf16 if config.bf16 is not None else cuda
        train_vision = loaded.train_vision if config.train_vision is None else config.train_vision
        params = measure.param_split(loaded.model)
        image_tokens = loaded.model.config.image_seq_length
        self.flops = (measure.lora_flops(params, image_tokens, train_vision) if config.method == "lora"
                      else measure.full_flops(params, image_tokens))
        self.model = prepare_model(loaded, config)
        self.maskless = False
        self.speed = speed
        if speed is not None:
            speed_mod.prepare_model(self.model, speed)
            self.maskless = speed.maskless and speed_mod.maskless_supported(self.model)
        self.cache, self.cache_note = None, None   # the note: finetune's console line, on or why off
        if speed is not None and speed.cache_image_features:
            from finetune.speed.feature_cache import for_run

            self.cache, self.cache_note = for_run(self.model, rows=len(splits["train"]), device=self.device,
                                                  kind=config.loss)
        train_mode(self.model)  # frozen BatchNorm stays in eval, as in a run
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr or loaded.default_lr,
                                           weight_decay=config.weight_decay, fused=cuda)
        # One micro-batch a step, one process: the step train() takes (finetune/step.py).
        self.train_step = TrainStep(LossModule(self.model, config.loss, self.cache), self.optimizer,
                                    device=self.device, bf16=self.bf16, max_grad_norm=config.max_grad_norm,
                                    maskless=self.maskless, speed=speed or SpeedConfig())
        prompt = build_prompt(loaded, config.question)
        collator = Collator(loaded.processor, prompt, loaded.end_token, train=True,
                            pad_to_multiple_of=speed.pad_to_multiple_of if speed is not None else 1)
        lengths = answer_lengths(splits["train"], loaded.tokenizer, loaded.end_token)
        sampler = Forever(LengthGroupedBatchSampler(lengths, config.batch_size, seed=config.seed),
                          config.batch_size)
        self.loader = make_loader(splits["train"], collator, batch_sampler=sampler,
                                  num_workers=config.loader_workers(cuda), pin_memory=cuda, seed=config.seed)
        self.batches = iter(self.loader)
        # Python's collector on the loop's schedule, as finetune.train runs it (finetune/speed/gc.py).
        from finetune.speed.gc import collect_every

        self._gc = contextlib.ExitStack()
        self.collector = self._gc.enter_context(collect_every())
        self.steps_done = 0
        if self.cache is not None and fill_cache:
            self.fill_cache(make_loader(splits["train"], collator, batch_size=config.batch_size,
                                        num_workers=config.loader_workers(cuda), pin_memory=cuda))

    def fill_cache(self, loader) -> int:
        """Run the frozen tower over ``loader``'s rows, as a step would, and keep their features; no
        optimizer step, so the weights stay as they start. Returns the rows cached."""
        import torch

        from finetune.families.llava import llava_backbone
        from finetune.loss import rows_of, tower_features

        backbone = llava_backbone(self.model)   # not None: the cache is on for Llava models only
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for batch in loader:
                if "pixel_values" in batch:
                    tower_features(backbone, batch["pixel_values"].to(self.device, non_blocking=True),
                                   cache=self.cache, rows=rows_of(batch))
        self.cache.served = self.cache.computed = 0   # count the timed steps only
        return len(self.cache)

    def __call__(self) -> dict[str, Any]:
        """``steps_per_call`` optimizer steps, then one synchronize: like the loop, which reads the
        loss only at log steps, the host queues the next step while the GPU runs this one."""
        out = {"samples": 0, "tokens": 0, "real_tokens": 0}
        for _ in range(self.steps_per_call):
            one = self._step()
            for k in out:
                out[k] += one[k]
        measure.synchronize(str(self.device))  # the round's time covers its GPU work
        return {**out, "steps": self.steps_per_call, "width": one["width"], "loss": one["loss"].item()}

    def _step(self) -> dict[str, Any]:
        batch = next(self.batches)
        ids = batch["input_ids"]
        real_tokens = int(batch["attention_mask"].sum())
        out = self.train_step([batch])
        self.steps_done += 1
        self.collector.step(self.steps_done)
        return {"samples": ids.shape[0], "tokens": ids.numel(), "real_tokens": real_tokens,
                "width": ids.shape[1], "loss": out.loss}

    def close(self) -> None:
        self._gc.close()   # the automatic collector back as it was
        # Ends the loader's worker processes now rather than at garbage collection.
        self.batches = None
        self.loader = None
        self.optimizer = None
        self.train_step = None
        self.model = None
        self.cache = None   # its pinned host store


def settings(config, speed=None) -> dict[str, Any]:
    """The settings a figure was measured with, for ``extra_info``."""
    keep = ("model", "method", "batch_size", "loss", "lora_r", "lora_alpha", "train_vision", "num_workers",
            "gradient_checkpointing", "bf16")
    out = {k: getattr(config, k) for k in keep}
    if speed is not None:
        out["speed"] = dataclasses.asdict(speed)
    return out

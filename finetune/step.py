"""One optimizer step over its micro-batches: the training step that ``train()`` and the benchmarks run.

``TrainStep(micro_batches)`` runs the forward and backward of each micro-batch, clips the gradients,
steps the optimizer (and the schedule, when it has one) and clears the gradients. The step's loss is
the mean over every answer token of the global batch: each micro-batch's loss is its sum over answer
tokens divided by the token count of the whole step, on every process.

Nothing in a step makes the host wait for the device: the loss and the gradient norm come back as
device tensors, read only when the caller logs them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import distributed
from .data import INDEX_KEY
from .loss import ANSWER_INDEX_KEY, with_host_indices
from .speed import SpeedConfig, prepare_batch


@dataclass
class StepOutput:
    loss: torch.Tensor        # the step's loss over every process, on the device
    grad_norm: torch.Tensor   # before clipping, on the device
    rows: int                 # training rows of the step, over every process


class TrainStep:
    """``step(micro_batches) -> StepOutput``: one optimizer step, as ``run-finetune`` takes it.

    ``module`` is the loss as a module (``loss.LossModule``, or it under DDP / FSDP from
    ``distributed.wrap``); the gradients of every parameter the optimizer holds are clipped to
    ``max_grad_norm`` (0: never clipped, the norm still measured). Micro-batches come as the loader
    gives them, on the CPU; one whose rows all failed to load (no ``labels``) is dropped, or, under
    several processes, replaced by ``standin`` at weight 0: every process must run each micro-batch's
    forward and backward, since they gather and reduce together.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 bf16: bool = False, max_grad_norm: float = 1.0, scheduler=None,
                 dist: distributed.Dist = distributed.Dist(), maskless: bool = False,
                 speed: SpeedConfig = SpeedConfig(), standin: dict | None = None):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.device, self.bf16, self.dist = device, bf16, dist
        self.max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        # The batches' levers: maskless only where the caller found the model's family allows it.
        self.maskless, self.speed = maskless, replace(speed, maskless=maskless)
        self.standin = None if standin is None else with_host_indices(standin)

    def __call__(self, micro_batches: list[dict]) -> StepOutput:
        micro = self._with_standin(micro_batches)
        real = [b for b in micro if b is not self.standin]
        tokens, rows = distributed.global_sum(
            (sum(len(b[ANSWER_INDEX_KEY]) for b in real), sum(len(b[INDEX_KEY]) for b in real)),
            self.dist, self.device)
        n_items = int(tokens)
        step_loss = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            weight = 0.0 if batch is self.standin else 1.0
            batch = prepare_batch(batch, self.speed)
            batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
            # Gradients are averaged over processes once, on the step's last micro-batch.
            last = i == len(micro) - 1
            with contextlib.nullcontext() if last else distributed.no_sync(self.module):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss = weight * self.module(batch, n_items)
                # DDP and FSDP average gradients over N processes; each one's loss is already a share of
                # the global mean, so N undoes the average and the sum is the global gradient.
                (loss * self.dist.world).backward()
            step_loss += loss.detach()
        if self.dist.enabled:
            torch.distributed.all_reduce(step_loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(step_loss, grad_norm, int(rows))

    def _with_standin(self, batches: list[dict]) -> list[dict]:
        """The micro-batches to run, with their answer positions and row ids read on the host."""
        if self.standin is None:
            return [with_host_indices(b) for b in batches if "labels" in b]
        return [with_host_indices(b) if "labels" in b else self.standin for b in batches]

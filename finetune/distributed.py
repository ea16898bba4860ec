"""One run over several processes: PyTorch DDP under ``accelerate launch`` or ``torchrun``.

Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a run
started without them is a single process and nothing here changes it.

What stays the same whatever the number of processes N:

* ``--batch-size`` is the *global* batch: the length-grouped sampler makes the same batches as one
  process would, and rank r takes rows ``r::N`` of each (so N must divide the batch size);
* the loss of a step is the mean over every answer token of the global batch (each rank divides its
  sum by the global count, and DDP's gradient mean is undone by scaling with N), so gradients, the
  schedule and the logged loss match a single process up to summation order;
* evaluation, checkpoints, the final model and W&B happen once, on rank 0.

The loss runs inside ``LossModule.forward`` so that DDP sees the forward it wraps: our answer-only
loss calls the backbone and head separately, which DDP would not notice outside a wrapped forward.
Frozen parameters (a pretrained vision tower) are never registered with DDP's reducer. Some trainable
ones get no gradient in any step (a CLIP tower's ``post_layernorm`` feeds only the pooled output, which
a VLM does not use; the last encoder layer when features come from the one before it), so
``find_unused_parameters`` is on: its graph walk per step is small next to a VLM's forward, and
``static_graph`` does not combine with ``no_sync`` for gradient accumulation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .config import FinetuneError

# NVLink multicast can put shared GPUs out of service; never let NCCL or PyTorch use it.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def setup(dist: Dist, device: torch.device) -> torch.device:
    """Join the process group; return this rank's device (``cuda:LOCAL_RANK`` on GPU)."""
    if not dist.enabled:
        return device
    for key, value in SAFE_ENV.items():
        os.environ.setdefault(key, value)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                             device_id=device if device.type == "cuda" else None)
    return device


def teardown(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_batch(dist: Dist, batch_size: int) -> None:
    if batch_size % dist.world:
        raise FinetuneError(f"--batch-size {batch_size} is the global batch and must split evenly over "
                            f"{dist.world} processes; use a multiple of {dist.world}")


class RankSlice:
    """A batch sampler's batches, each cut to this rank's rows (``r::N``)."""

    def __init__(self, sampler, dist: Dist):
        self.sampler, self.dist = sampler, dist

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)

    def __iter__(self):
        for batch in self.sampler:
            yield batch[self.dist.rank::self.dist.world]

    def __len__(self) -> int:
        return len(self.sampler)


class LossModule(nn.Module):
    """``forward(batch, num_items) -> loss``: the training loss as a module DDP can wrap."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, batch: dict, num_items: int) -> torch.Tensor:
        from .loss import compute_loss

        return compute_loss(self.model, batch, kind=self.kind, num_items=num_items).loss


def wrap(model: nn.Module, kind: str, dist: Dist, device: torch.device) -> nn.Module:
    module = LossModule(model, kind)
    if not dist.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, gradient_as_bucket_view=True)


def global_sum(values: tuple[float, ...], dist: Dist, device: torch.device) -> tuple[float, ...]:
    """Each of ``values`` summed over ranks, in one collective (themselves when single-process)."""
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return tuple(t.tolist())


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch.distributed.barrier()

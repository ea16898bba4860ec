"""One run over several processes: DDP for LoRA, FSDP for full fine-tuning (``accelerate launch``, ``torchrun``).

Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a run
started without them is a single process and nothing here changes it.

Which wrapper, and why:

* LoRA trains a few million adapter weights over a frozen base. DDP replicates the model and
  all-reduces only the adapters' gradients; sharding would all-gather the whole frozen base in every
  forward and every backward to save the memory of tensors that are small anyway.
* Full fine-tuning keeps, per process, the weights, their gradients and two AdamW moments: four
  copies of the model, which DDP would replicate N times. FSDP (PyTorch's ``fully_shard``) keeps
  1/N of each and all-gathers one transformer block at a time for its forward and backward. Each
  block of every tower (``speed.compile.repeated_layers``) is one unit; the rest (embeddings, head, norms,
  projector) is the root's. ``--no-fsdp`` keeps DDP, faster when the replicated model fits anyway.

What stays the same whatever the number of processes N:

* ``--batch-size`` is the *global* batch: the length-grouped sampler makes the same batches as one
  process would, and rank r takes rows ``r::N`` of each (so N must divide the batch size);
* the loss of a step is the mean over every answer token of the global batch: each rank divides its
  sum by the global count, and since DDP and FSDP both *average* gradients over ranks, scaling the
  loss by N makes the sum the global gradient. The schedule, the logged loss and the gradient norm
  (``clip_grad_norm_`` reduces the norm of sharded gradients over ranks) match a single process up
  to summation order;
* gradient accumulation reduces once per step (``no_sync``), on the last micro-batch. Under FSDP the
  micro-batches before it keep unsharded gradients on each rank, as DDP does: fewer collectives, at
  the memory of one gradient copy of the model;
* checkpoints hold whole tensors in the single-process format (FSDP gathers them to rank 0 and
  shards them again on load), so a run can resume on any number of processes;
* evaluation, checkpoints, the final model and W&B happen once, on rank 0. A sharded model cannot
  run a forward on one rank alone (each block all-gathers from every rank), so rank 0 evaluates and
  saves a whole copy (``whole_model``): the weights gathered into a weightless copy of the model
  taken before sharding. Rank 0 needs the memory of the weights once more, not of training.

The loss runs inside ``loss.LossModule.forward`` so that DDP and FSDP see the forward they wrap: our
answer-only loss calls the backbone and head separately, which neither would notice outside a
wrapped forward (FSDP's root all-gathers the embeddings and head in that forward's hook).
Frozen parameters (a pretrained vision tower) are never registered with DDP's reducer; FSDP shards
them like the others (they take no gradient and no optimizer state). Some trainable parameters get
no gradient in any step (a CLIP tower's ``post_layernorm`` feeds only the pooled output, which a VLM
does not use; the last encoder layer when features come from the one before it), so DDP's
``find_unused_parameters`` is on: its graph walk per step is small next to a VLM's forward, and
``static_graph`` does not combine with ``no_sync`` for gradient accumulation.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import FinetuneError
from .families import core_model, family_of
from .loss import FeatureStore, LossModule, image_features
from .speed.compile import repeated_layers

# torch.distributed's FSDP, DTensor and checkpoint modules are imported in the functions that use them:
# FSDP2 needs torch >= 2.6 (an older one says so in one line), and one process trains without any of them.

# NVLink multicast can put shared GPUs out of service; never let NCCL or PyTorch use it.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
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
        # The other ranks wait in a barrier while rank 0 evaluates (generation over the whole test
        # split); NCCL's default 10-minute timeout would kill a run whose evaluation takes longer.
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                             device_id=device if device.type == "cuda" else None,
                                             timeout=COLLECTIVE_TIMEOUT)
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


def use_fsdp(method: str, fsdp: bool | None, dist: Dist) -> bool:
    """Whether this run shards its model: full fine-tuning over several processes, unless ``--no-fsdp``.

    ``--fsdp`` with LoRA is refused by ``FinetuneConfig.validate``.
    """
    return dist.enabled and method == "full" and fsdp is not False


def wrap(model: nn.Module, kind: str, dist: Dist, device: torch.device, *, shard: bool = False,
         cache: FeatureStore | None = None) -> nn.Module:
    """The module a training step calls: ``LossModule`` as is, under DDP, or sharded in place (FSDP);
    under several processes an ``EveryRankSees`` (give it an image batch with ``set_image_standin``)."""
    if not dist.enabled:
        return LossModule(model, kind, cache)
    if device.type == "cuda":
        # BatchNorm (tiny's ResNet tower) over the whole step's batch, as one process computes it; in
        # place, so the recipe's model is the converted one. gloo on CPU has no SyncBatchNorm: there each
        # process normalises with its own rows (tests compare N processes with one on tiny-llava).
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    module = EveryRankSees(model, kind, cache)
    if shard:
        return _fully_shard(module, device, dist)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, gradient_as_bucket_view=True)


class EveryRankSees(LossModule):
    """The loss of one process among several: a micro-batch without an image still runs the vision
    tower and projector when another process's micro-batch has one.

    A micro-batch of text-only rows skips the tower in the model's own forward while the other
    processes run it. Under FSDP each tower block all-gathers its weights in its forward and
    reduce-scatters its gradients in its backward, collectives every process must join in the same
    order: they then pair the wrong collectives (gloo: "Received data size doesn't match expected
    size"; NCCL may wait for ever). DDP copes (``find_unused_parameters``). So, where the training
    split has text-only rows, the processes first tell each other (a one-integer all-reduce on the
    host, over gloo) whether their micro-batch has an image; if any has, those without run the tower
    and projector on ``images`` (the image inputs of a one-row training batch) where a real batch
    runs them, and add the output at weight 0. The loss and every gradient are unchanged, and when no
    process has an image nobody runs the tower: its parameters get no gradient, as in one process
    (a zero gradient would still move AdamW's moments and weights).
    """

    images: dict | None = None      # set_image_standin
    image_ids: torch.Tensor | None = None   # its input_ids (Phi-4 writes the features at its image tokens)
    flags: object = None            # the process group of the flag exchange; None: no text-only rows

    def forward(self, batch: dict, num_items: int) -> torch.Tensor:
        dummy = None
        if self.flags is not None:
            mine = has_images(batch)
            if _any_process(mine, self.flags) and not mine:
                dummy = self._vision_pass()
        loss = super().forward(batch, num_items)
        return loss if dummy is None else loss + 0.0 * dummy

    def _vision_pass(self) -> torch.Tensor | None:
        """The tower and projector on ``images``: the sum of their outputs (``None`` when it takes no gradient)."""
        core = core_model(self.model)
        device = next(core.parameters()).device
        inputs = {k: v.to(device) for k, v in self.images.items()}
        with _no_running_stats(core):   # a BatchNorm tower (tiny's) must not learn running statistics from it
            out = _image_pass(core, inputs, self.image_ids.to(device))
        sums = [t.float().sum() for t in _tensors(out) if t.requires_grad]
        return torch.stack(sums).sum() if sums else None


def _image_pass(core: nn.Module, inputs: dict, input_ids: torch.Tensor):
    """The model's image path on a batch's image inputs, every parameter its own forward trains there.

    Under FSDP the sets of parameters with a gradient must match between processes (each FSDP unit
    reduce-scatters the gradients it has, flattened together), so this is the path the backbone's
    forward takes, not just the tower."""
    backbone, family = core.model, family_of(core)
    if family.llava_parts:
        return image_features(backbone, inputs["pixel_values"])
    if hasattr(backbone, "get_image_features"):
        return backbone.get_image_features(**inputs)
    if family.image_pass is not None:   # Phi-4-multimodal's image embedding
        return family.image_pass(backbone, inputs, input_ids)
    raise FinetuneError(f"{type(backbone).__name__} has no get_image_features: a process whose micro-batch has "
                        "no image cannot run its vision tower while others do; drop the text-only rows or "
                        "train on one process")


def _any_process(flag: bool, group) -> bool:
    """Whether ``flag`` holds on any process: a CPU all-reduce (the host never waits for the device)."""
    t = torch.tensor([int(flag)], dtype=torch.int32)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(t.item())


# A batch's pixels, by family: Phi-4-multimodal names its own ``image_pixel_values``. A batch without
# them has no image (text-only rows), and a split whose batches never have them has no stand-in.
PIXEL_KEYS = ("pixel_values", "image_pixel_values")


def has_images(batch: dict) -> bool:
    return any(batch.get(key) is not None for key in PIXEL_KEYS)


def image_inputs(batch: dict) -> dict:
    """A batch's image inputs (``pixel_values``, ``image_grid_thw``, ``image_sizes``, ...)."""
    return {k: v for k, v in batch.items() if k.startswith(("pixel_", "image_")) and isinstance(v, torch.Tensor)}


def set_image_standin(module: nn.Module, batch: dict, *, text_only_rows: bool) -> None:
    """Give the wrapped loss (``wrap``) the image inputs of a training batch with an image, for the
    micro-batches that have none; every process calls it. Without ``text_only_rows`` in the training
    split, every micro-batch has an image or is the step's stand-in (which has one): nothing to do."""
    inner = module.module if isinstance(module, DistributedDataParallel) else module
    if not (isinstance(inner, EveryRankSees) and has_images(batch) and text_only_rows):
        return
    inner.images, inner.image_ids = image_inputs(batch), batch["input_ids"]
    # The default group when it is gloo's (CPU runs); beside NCCL, a gloo group of the same processes.
    gloo = torch.distributed.get_backend() == "gloo"
    inner.flags = torch.distributed.group.WORLD if gloo else torch.distributed.new_group(backend="gloo")


@contextlib.contextmanager
def _no_running_stats(model: nn.Module):
    """BatchNorm layers that normalise by the batch's statistics without updating their running ones.

    (Putting the old values back afterwards would not do: batch norm keeps them for its backward.)"""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def _tensors(out) -> list[torch.Tensor]:
    """Every tensor in a model output (a tensor, a tuple or list, a ``ModelOutput``)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []


def _fully_shard(module: LossModule, device: torch.device, dist: Dist) -> nn.Module:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        raise FinetuneError(f"FSDP needs torch >= 2.6 (this is {torch.__version__}): upgrade torch, or run "
                            "with --no-fsdp to replicate the model with DDP") from None
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dist.world,))
    for block in repeated_layers(module.model):
        fully_shard(block, mesh=mesh)
    # The root stays gathered from its forward to its backward (FSDP's default for the root).
    fully_shard(module, mesh=mesh)
    return module


def no_sync(module: nn.Module):
    """A context whose backward passes keep gradients local; the first backward outside reduces them all.

    DDP decides at forward time and FSDP at backward time, so the context must hold both.
    """
    if isinstance(module, DistributedDataParallel):
        return module.no_sync()
    if _is_fsdp(module):
        return _fsdp_no_sync(module)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _is_fsdp(module: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(module, FSDPModule)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP shards (DTensors) rather than whole tensors."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _whole(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (an all-gather every rank must join), or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _gathered(model: nn.Module, dist: Dist, *, trainable_only: bool = False):
    """``(name, whole tensor)`` of each parameter, yielded on rank 0 only. Every rank must run it to
    the end: each parameter's gather is a collective."""
    for name, param in model.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        whole = _whole(param.detach())
        if dist.is_main:
            yield name, whole


# --------------------------------------------------------------------------------------------
# Checkpoints: whole tensors on rank 0, in the format a single process saves and loads


def trainable_state(model: nn.Module, dist: Dist) -> dict[str, torch.Tensor]:
    """Whole CPU copies of the trainable weights on rank 0 (``{}`` elsewhere); every rank calls it."""
    if not (is_sharded(model) or dist.is_main):
        return {}
    return {name: whole.contiguous().cpu() for name, whole in _gathered(model, dist, trainable_only=True)}


def load_trainable_state(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model; a sharded model takes its own shard of each (every rank)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, dist: Dist) -> dict:
    """The optimizer's ``state_dict`` as one process would save it, on rank 0 (``{}`` elsewhere)."""
    if not is_sharded(model):
        return optimizer.state_dict() if dist.is_main else {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return _keyed_by_index(state) if dist.is_main else {}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a single-process ``state_dict``; a sharded model's optimizer takes its shard (every rank)."""
    if not is_sharded(model):
        optimizer.load_state_dict(saved)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # Not strict: a parameter that never had a gradient (CLIP's unused post_layernorm) has no state to load.
    set_optimizer_state_dict(model, optimizer, _keyed_by_name(saved, model, optimizer),
                             options=StateDictOptions(full_state_dict=True, strict=False))
    # That call first gives every parameter a state (a zero-lr step): keep only what was saved. And its
    # round trip turns tuples (AdamW's betas) into lists: take the settings as saved.
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        if i not in saved["state"]:
            optimizer.state.pop(param, None)


def _keyed_by_index(state: dict) -> dict:
    """A distributed checkpoint's optimizer state (parameter names) keyed as ``Optimizer.state_dict``."""
    index = {name: i for i, name in enumerate(n for group in state["param_groups"] for n in group["params"])}
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def _keyed_by_name(saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    name_of = {id(p): name for name, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {"state": {names[i]: value for i, value in saved["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]}


# --------------------------------------------------------------------------------------------
# What one process does alone: evaluation and the final save


def weightless_copy(model: nn.Module) -> nn.Module:
    """``model`` with meta tensors for weights (buffers kept): rank 0's frame for ``whole_model``.

    Taken before sharding, it is the same class, config and generation settings as the model, and
    tied weights stay tied (deepcopy's memo maps each parameter to one copy).
    """
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def whole_model(model: nn.Module, frame: nn.Module | None, dist: Dist):
    """Yield, on rank 0, a model with every current weight (``None`` on other ranks); all ranks enter.

    Unsharded, that is ``model``. Sharded, the weights are gathered into ``frame`` (from
    ``weightless_copy``) and dropped again on leaving.
    """
    if not is_sharded(model):
        yield model if dist.is_main else None
        return
    if dist.is_main and frame is None:
        raise ValueError("a sharded model needs its weightless copy to be evaluated on rank 0")
    params = dict(frame.named_parameters()) if dist.is_main else {}
    try:
        for name, whole in _gathered(model, dist):
            _swap(params[name], whole)
        yield frame if dist.is_main else None
    finally:
        for param in params.values():
            _swap(param, torch.empty_like(param, device="meta"))


def _swap(param: nn.Parameter, value: torch.Tensor) -> None:
    # In place, so that every module holding this parameter (tied weights) sees the new value.
    torch.utils.swap_tensors(param, nn.Parameter(value, requires_grad=param.requires_grad))


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

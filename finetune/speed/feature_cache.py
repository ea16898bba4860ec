"""Image features of a frozen vision tower, kept from the first epoch and reused in the later ones.

A frozen tower maps a training row's pixels to the same features every epoch: the training
collator's image transform is deterministic (resize, centre crop, normalise; no augmentation), and
``for_run`` refuses a tower that has dropout. So from the second epoch on, a batch whose rows are
all cached skips the tower and goes straight to the projector. What is stored is the projector's
*input* (the selected tower layer), so a trainable projector still trains.

Memory: one ``[tokens, dim]`` tensor per training row, in the dtype the projector computes with
(bf16 under bf16 autocast: ``loss._as_projector_reads``), so it is bounded by the training split's
size (3,040 phi3v-shape rows x 576 x 1024 in bf16: 3.6 GB), allocated whole at the first step. On
CUDA it lives in pinned host memory, not on the GPU, whose memory is what a run is short of; the
copies both ways are asynchronous, so a step never makes the host wait for the GPU.

The cache belongs to one process. Under DDP each rank keeps the rows it met; since the sampler
hands a row to a different rank each epoch, a rank serves a batch only once it has met every row of
its share before (rarely in the first epochs with several processes). Under FSDP it is off: every
rank must run the tower's sharded blocks together.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..families import FEATURE_CACHE, core_model, family_of
from ..families.llava import llava_backbone
from ..loss import supports_answer_loss


class ImageFeatureCache:
    """Per training row, the frozen tower's selected features (the projector's input).

    ``get(rows)`` returns the features of a batch when *every* row is cached, else ``None``: a
    partly cached batch runs the tower for all of its rows (one code path, the same numbers as
    without the cache). ``put(rows, features)`` stores the rows not yet cached.

    The store is one ``[rows, tokens, dim]`` tensor indexed by row, allocated at the first ``put``
    (when the shape and dtype are known): pinned host memory on CUDA, so device->host copies run
    asynchronously, host->device ones too. Each ``put`` records a CUDA event after its copies, and a
    ``get`` makes the current stream (not the host) wait for the events of the rows it reads.
    """

    def __init__(self, rows: int, device: torch.device | str):
        if rows <= 0:
            raise ValueError(f"an image feature cache needs the training split's size (> 0), not {rows}")
        self.capacity = rows
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._store: torch.Tensor | None = None
        self._cached: set[int] = set()
        self._ready: dict[int, torch.cuda.Event] = {}   # row -> event recorded after its copy
        self.served = 0      # batches whose features came from the cache
        self.computed = 0    # batches that ran the tower (and were stored)

    def __len__(self) -> int:
        return len(self._cached)

    @property
    def nbytes(self) -> int:
        """Host memory the store holds (it is allocated whole, for every training row, at the first put)."""
        return 0 if self._store is None else self._store.numel() * self._store.element_size()

    def get(self, rows: Sequence[int]) -> torch.Tensor | None:
        """``[len(rows), tokens, dim]`` on the cache's device if every row is cached, else ``None``."""
        if self._store is None or not rows or any(r not in self._cached for r in rows):
            return None
        self.served += 1
        if not self._cuda:
            return self._store.index_select(0, torch.tensor(rows, dtype=torch.long))
        stream = torch.cuda.current_stream(self.device)
        for event in {id(e): e for e in (self._ready[r] for r in rows)}.values():
            stream.wait_event(event)   # a no-op on the device once that copy has finished
        out = torch.empty((len(rows), *self._store.shape[1:]), dtype=self._store.dtype, device=self.device)
        # Row by row: the rows are scattered over the store, and a gather into a host staging buffer
        # would have to wait for the previous step's copy out of it.
        for i, row in enumerate(rows):
            out[i].copy_(self._store[row], non_blocking=True)
        return out

    def put(self, rows: Sequence[int], features: torch.Tensor) -> None:
        """Store ``features[i]`` as row ``rows[i]``'s, for the rows not cached yet."""
        if features.shape[0] != len(rows):
            raise ValueError(f"{features.shape[0]} images for {len(rows)} rows: the image feature cache "
                             "needs one image per row")
        bad = [r for r in rows if not 0 <= r < self.capacity]
        if bad:
            raise ValueError(f"row {bad[0]} is outside the image feature cache's {self.capacity} training rows")
        self.computed += 1
        new = [(i, r) for i, r in enumerate(rows) if r not in self._cached]
        if not new:
            return
        features = features.detach()
        store = self._allocate(features)
        if not self._cuda:
            index = torch.tensor([r for _, r in new], dtype=torch.long)
            store.index_copy_(0, index, features[[i for i, _ in new]])
        else:
            for i, row in new:
                store[row].copy_(features[i], non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._ready.update((row, event) for _, row in new)
        self._cached.update(r for _, r in new)

    def _allocate(self, features: torch.Tensor) -> torch.Tensor:
        shape = (self.capacity, *features.shape[1:])
        if self._store is None:
            self._store = torch.empty(shape, dtype=features.dtype, pin_memory=self._cuda)
        elif self._store.shape != shape or self._store.dtype != features.dtype:
            raise ValueError(f"image features changed from {tuple(self._store.shape[1:])} {self._store.dtype} to "
                             f"{tuple(features.shape[1:])} {features.dtype}: the cache holds one shape and dtype")
        return self._store


def estimated_bytes(model, rows: int) -> int:
    """What a full cache of ``rows`` rows takes, from the model's config (for the run's console line)."""
    backbone = llava_backbone(model)   # not None: for_run asks only once off_reason found a Llava model
    config = backbone.config
    vision = config.vision_config
    # Llava's image tokens per image are the selected tower tokens (the projector keeps their number).
    tokens = getattr(config, "image_seq_length", None) or (
        (vision.image_size // vision.patch_size) ** 2 + int(config.vision_feature_select_strategy != "default"))
    layers = config.vision_feature_layer
    dim = vision.hidden_size * (1 if isinstance(layers, int) else len(layers))
    itemsize = next(backbone.vision_tower.parameters()).element_size()
    return rows * tokens * dim * itemsize


def off_reason(model, *, kind: str, sharded: bool) -> str | None:
    """Why this run cannot cache image features exactly, or ``None`` if it can."""
    backbone = llava_backbone(model)
    if backbone is None:
        family = family_of(model)
        why = family.off_levers.get(FEATURE_CACHE, "it is not a Llava model")
        return f"{type(core_model(model)).__name__} ({family.name}): {why}"
    if kind != "answer" or not supports_answer_loss(model):
        return "the plain loss runs the model's own forward"
    tower = backbone.vision_tower
    if any(p.requires_grad for p in tower.parameters()):
        return "the vision tower trains"
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in tower.modules()) or \
            (getattr(getattr(tower, "config", None), "attention_dropout", 0.0) or 0.0) > 0:
        return "the vision tower has dropout, so its features change every epoch"
    if sharded:
        return "under FSDP every process must run the tower's sharded blocks together"
    return None


def for_run(model, *, rows: int, device: torch.device, kind: str, sharded: bool = False, processes: int = 1
            ) -> tuple[ImageFeatureCache | None, str]:
    """The cache for a run that asks for one (or ``None``), and a console line that says which and why."""
    why = off_reason(model, kind=kind, sharded=sharded)
    if why is not None:
        return None, f"image feature cache off: {why}"
    where = "pinned host" if device.type == "cuda" else "host"
    size = estimated_bytes(model, rows)
    size_text = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    each = f" in each of the {processes} processes (each keeps the rows it meets)" if processes > 1 else ""
    return ImageFeatureCache(rows, device), (
        f"image feature cache on: the frozen vision tower runs once per training row; about {size_text} "
        f"of {where} memory for {rows} rows{each}")

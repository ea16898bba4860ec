"""Vision warm-up: a random model learns to see before it learns to answer.

A pretrained VLM starts from a vision tower that already reads pictures. The built-in ``tiny`` starts
from random weights, and through the decoder's text loss alone its tower learns slowly: the gradient
reaches it through a two-layer decoder that is itself learning, mostly about word order. So before the
fine-tune, the tower and projector train for a few passes as an image classifier of what the training
answers say: the category (``category3_code``), the title's words (several at once) and the log price
(and, with ``warmup_department``, the department ``category1_code`` where the data has several), read by
linear heads from the image features the decoder will read, averaged over the image's tokens. The heads
are thrown away; the fine-tune then starts from a tower that sees.

Measured with plain run-finetune on the default catalogue (quiet 2-core CPU): category3 77.3 % without a
warm-up, 89.8 % after 18 passes, 94.7 % after 36 (tiny's default); category2 87.2 / 94.7 / 98.0 %; price
MAPE 27.4 / 24.6 / 23.5 %; the 36 passes take about a minute. (Those figures predate the random trim
and the department head. With the random trim, at the default 18 epochs, the department head took
plain run-finetune's price MAPE from 24.6 to 21.8 % (seed 0) and 24.9 to 24.3 % (seed 1), category3
93.1 -> 92.4 % and 94.1 -> 94.1 %; at 6 epochs (tests/test_finetune_learning.py) it cost category3
92.3 -> 90.3 % and 94.0 -> 89.7 % with price unchanged, so it is off unless ``warmup_department``.)

Only the training split's answers are read, so the test split stays unseen. The warmed weights are
written to the run folder (``vision_warmup.safetensors``): a resumed run loads them instead of warming
up again, so it continues from exactly the weights the interrupted run had.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .data import DEPARTMENT_COLUMN, IMAGE_COLUMN, decode_image
from .errors import FinetuneError
from .families.base import core_model
from .models import under, vision_module_names

WEIGHTS = "vision_warmup.safetensors"
# The words' loss is a mean over a vocabulary of a few hundred binary targets, most of them 0: scaled
# so that it weighs about as much as the category's cross-entropy.
WORDS_WEIGHT = 10.0
CHUNK = 256   # pictures decoded and processed together
ON_DEVICE_BYTES = 2**30   # processed pictures up to this size stay on the GPU for the warm-up (tiny's: 134 MB)


@dataclass(frozen=True)
class WarmupConfig:
    epochs: float
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    seed: int = 0
    # Mirror half the pictures: every label of the catalogue survives a mirror (bench/probe.py: +1.5
    # points of category3).
    flip: bool = True
    # Read the tower's own features (pooled), not the projector's: the projector then learns in the
    # fine-tune what the decoder needs of each token.
    tower: bool = True
    # A fourth head for the department (category1_code), where the data has several (FinetuneConfig
    # .warmup_department).
    department: bool = False


@dataclass(frozen=True)
class Targets:
    """What the training answers say, a row: category index, title words (multi-hot), log price."""

    category: torch.Tensor
    words: torch.Tensor
    log_price: torch.Tensor
    categories: int
    vocabulary: int
    # The department (``category1_code``), where the split has one with several values: not in the answer,
    # but it sets the price (a kids' item costs about a third of an adult's) and the catalogue draws it as
    # the product's size, a cue that the category, words and price heads leave to chance.
    department: torch.Tensor | None = None
    departments: int = 0

    @classmethod
    def of(cls, split, *, department: bool = False) -> "Targets":
        category, categories = _class_indices(split["category3_code"])
        titles = split["title"]
        vocabulary = sorted({w for t in titles for w in str(t).split()})
        index = {w: i for i, w in enumerate(vocabulary)}
        words = torch.zeros(len(split), len(vocabulary))
        for row, title in enumerate(titles):
            for w in str(title).split():
                words[row, index[w]] = 1.0
        prices = [float(p) for p in split["full_price"]]
        read, departments = None, 0
        if department and DEPARTMENT_COLUMN in split.column_names:
            read, departments = _class_indices(split[DEPARTMENT_COLUMN])
            if departments < 2:
                read, departments = None, 0
        return cls(category=category, words=words, log_price=torch.tensor([math.log(max(p, 1.0)) for p in prices]),
                   categories=categories, vocabulary=len(vocabulary), department=read, departments=departments)


def _class_indices(values) -> tuple[torch.Tensor, int]:
    """Each value's index among the column's sorted distinct values (as strings), and how many there are."""
    names = {name: i for i, name in enumerate(sorted({str(v) for v in values}))}
    return torch.tensor([names[str(v)] for v in values]), len(names)


def pooled_features(model, inputs: dict[str, torch.Tensor], images: int, *, tower: bool = True) -> torch.Tensor:
    """An image's features averaged over its tokens, [images, hidden] in float32, from the family's
    ``get_image_features``: the tower's own output where it keeps one row of tokens (or one feature
    map) an image and ``tower`` is set, else what the decoder reads (after the projector)."""
    out = core_model(model).get_image_features(**inputs)
    hidden = getattr(out, "last_hidden_state", None)
    if tower and isinstance(hidden, torch.Tensor) and hidden.shape[0] == images and hidden.dim() in (3, 4):
        # [images, channels, h, w] (a conv tower's map) or [images, tokens, hidden] (a ViT's)
        return hidden.float().mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.float().mean(dim=1)
    features = getattr(out, "pooler_output", out)
    # A tensor [images, tokens, hidden] (Llava, FastVLM, Gemma 3), or one [tokens, hidden] an image
    # (Qwen2-VL's split by image_grid_thw; Idefics3's a row, one image a row here).
    if isinstance(features, (list, tuple)):
        features = torch.stack([f.reshape(-1, f.shape[-1]).float().mean(0) for f in features])
    elif features.dim() == 3:
        features = features.float().mean(dim=1)
    if features.dim() != 2 or features.shape[0] != images:
        raise FinetuneError(f"vision warm-up: {type(core_model(model)).__name__} gives image features of shape "
                            f"{tuple(features.shape)} for {images} images, not one row of tokens an image: "
                            "run with --vision-warmup-epochs 0")
    return features


class Pictures:
    """The split's pictures as the model's image processor gives them, and mirrored, ready to batch.

    Fixed-size processors (tiny's CLIP, Gemma 3's SigLIP) give one ``pixel_values`` tensor, processed
    at once and mirrored in place. Others (Qwen2-VL's patches with ``image_grid_thw``, Idefics3's crops
    with ``pixel_attention_mask``) are processed a picture at a time, mirrored as pictures, and a batch
    is their outputs concatenated, as the processor would give several pictures.
    """

    def __init__(self, split, image_processor, *, mirror: bool):
        self.rows = len(split)
        first = [self._image(split, 0)] * 2
        together = image_processor(images=first, return_tensors="pt")
        self.fixed = set(together.keys()) == {"pixel_values"} and together["pixel_values"].dim() == 4
        # A chunk of pictures at a time: the catalogue's 336 px pictures, all decoded at once, and the
        # processor's float copies of them took 2.9 GB where the fine-tune itself needs 0.6.
        chunks = [range(i, min(i + CHUNK, self.rows)) for i in range(0, self.rows, CHUNK)]
        if self.fixed:
            self.tensor = torch.cat([image_processor(images=[self._image(split, r) for r in rows],
                                                     return_tensors="pt")["pixel_values"] for rows in chunks])
            return
        self.each: list[list[dict[str, torch.Tensor]]] = [[], []]
        for r in range(self.rows):
            image = self._image(split, r)
            views = (image, image.transpose(Image.FLIP_LEFT_RIGHT)) if mirror else (image,)
            for kept, view in zip(self.each, views):
                out = image_processor(images=[view], return_tensors="pt")
                kept.append({k: v for k, v in out.items() if isinstance(v, torch.Tensor)})
        if not mirror:
            self.each[1] = self.each[0]

    @staticmethod
    def _image(split, row: int) -> Image.Image:
        """A row's picture; an unreadable one is a white square."""
        return decode_image(split[row][IMAGE_COLUMN]) or Image.new("RGB", (64, 64), "white")

    def to(self, device) -> "Pictures":
        """Keep fixed-size pictures on ``device`` where they fit :data:`ON_DEVICE_BYTES`, so that a step's
        gather and mirror run there. On the host they are parallel CPU ops a step, which slow down where
        several runs share a GPU host's cores: in bench/gpu/accuracy.sh's run 0011 (four at once) a
        warm-up step took 0.12 s where a fine-tune step, fed by loader workers, took 0.02 s."""
        if self.fixed and device.type != "cpu" and self.tensor.numel() * self.tensor.element_size() <= ON_DEVICE_BYTES:
            self.tensor = self.tensor.to(device)
        return self

    def batch(self, rows: torch.Tensor, mirrored: torch.Tensor, device, dtype) -> dict[str, torch.Tensor]:
        if self.fixed:
            # Gather where the pictures are, then mirror on the device: one host op a step at most.
            x = self.tensor[rows.to(self.tensor.device)].to(device, dtype, non_blocking=True)
            return {"pixel_values": torch.where(mirrored.to(device).view(-1, 1, 1, 1), x.flip(-1), x)}
        parts = [self.each[int(m)][int(r)] for r, m in zip(rows, mirrored)]
        out = {k: torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}
        out["pixel_values"] = out["pixel_values"].to(dtype)
        return out


def warm_up(model, image_processor, split, config: WarmupConfig, *, console: Console) -> list[dict[str, float]]:
    """Train ``model``'s vision side as a classifier of ``split``'s answers for ``config.epochs`` passes.

    Changes the model in place; returns each pass's mean losses (category, words, price). Draws from its
    own seeded generators and leaves the global random state as it found it.
    """
    targets = Targets.of(split, department=config.department)
    core = core_model(model)
    device, dtype = next(core.parameters()).device, next(core.parameters()).dtype
    pictures = Pictures(split, image_processor, mirror=config.flip).to(device)
    # The whole vision side trains here, even where the fine-tune then keeps it frozen (--no-train-vision).
    trained = [p for n, p in core.named_parameters() if under(n, vision_module_names(core))]
    was = [p.requires_grad for p in trained]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        core.eval()   # one picture to learn the features' width: BatchNorm's running statistics stay as they are
        with torch.no_grad():
            first = torch.zeros(1, dtype=torch.long)
            width = pooled_features(model, pictures.batch(first, first.bool(), device, dtype), 1,
                                    tower=config.tower).shape[-1]
        heads = torch.nn.ModuleDict({"category": torch.nn.Linear(width, targets.categories),
                                     "words": torch.nn.Linear(width, targets.vocabulary),
                                     "price": torch.nn.Linear(width, 1)})
        if targets.department is not None:
            heads["department"] = torch.nn.Linear(width, targets.departments)
        heads = heads.to(device)
        for p in trained:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW([*trained, *heads.parameters()], lr=config.lr, weight_decay=config.weight_decay)
        steps = max(1, round(config.epochs * math.ceil(pictures.rows / config.batch_size)))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps, pct_start=0.1)
        generator = torch.Generator().manual_seed(config.seed)
        core.train()
        history: list[dict[str, float]] = []
        with _progress(console) as bar:
            task = bar.add_task("vision warm-up", total=steps)
            for epoch in _epochs(pictures.rows, config.batch_size, steps, generator):
                # Summed on the device in float64 (as Python floats would sum them): no host sync a step.
                sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in heads}
                for batch in epoch:
                    mirrored = torch.rand(len(batch), generator=generator) < (0.5 if config.flip else 0.0)
                    pooled = pooled_features(model, pictures.batch(batch, mirrored, device, dtype), len(batch),
                                             tower=config.tower)
                    parts = {
                        "category": F.cross_entropy(heads["category"](pooled), targets.category[batch].to(device)),
                        "words": WORDS_WEIGHT * F.binary_cross_entropy_with_logits(
                            heads["words"](pooled), targets.words[batch].to(device)),
                        "price": F.l1_loss(heads["price"](pooled).squeeze(-1), targets.log_price[batch].to(device)),
                    }
                    if targets.department is not None:
                        parts["department"] = F.cross_entropy(heads["department"](pooled),
                                                              targets.department[batch].to(device))
                    optimizer.zero_grad(set_to_none=True)
                    sum(parts.values()).backward()
                    optimizer.step()
                    schedule.step()
                    for k, v in parts.items():
                        sums[k] += v.detach().double()
                    bar.advance(task)
                history.append({k: v.item() / len(epoch) for k, v in sums.items()})
    for p, grad in zip(trained, was):
        p.requires_grad_(grad)
    return history


def _epochs(rows: int, batch_size: int, steps: int, generator: torch.Generator):
    """The warm-up's batches of row indices, an epoch (a fresh shuffle) a list, ``steps`` batches in all."""
    while steps > 0:
        epoch = list(torch.randperm(rows, generator=generator).split(batch_size))[:steps]
        steps -= len(epoch)
        yield epoch


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                    TimeRemainingColumn(), console=console, transient=True)


def vision_state(model) -> dict[str, torch.Tensor]:
    """The vision side's weights and buffers (tower, projector): what the warm-up changed."""
    vision = vision_module_names(core_model(model))
    return {k: v.detach().contiguous().cpu() for k, v in core_model(model).state_dict().items() if under(k, vision)}


def save(model, out: Path) -> None:
    """Write the warmed vision side to ``out/vision_warmup.safetensors`` (atomically)."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=out, prefix=".vision_warmup-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(vision_state(model), tmp)
        os.replace(tmp, out / WEIGHTS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(model, out: Path) -> bool:
    """Load a run's warmed vision side, if it has one; whether it did."""
    from safetensors.torch import load_file

    path = out / WEIGHTS
    if not path.is_file():
        return False
    try:
        weights = load_file(str(path))
    except Exception as e:   # safetensors raises its own errors for a truncated or foreign file
        raise FinetuneError(f"{path} cannot be read ({e}): delete it to warm the vision side up again") from None
    missing, unexpected = core_model(model).load_state_dict(weights, strict=False)
    if unexpected:
        raise FinetuneError(f"{path} does not match the model ({len(unexpected)} unknown tensors): "
                            "delete it to warm the vision side up again")
    return True

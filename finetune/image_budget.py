"""The image-size budget of a run: ``--max-image-tokens``, rows ordered by their sequence's real length,
and a memory pre-flight before the first step.

Dynamic-resolution families give an image as many tokens as its size asks for: Qwen2-VL, Qwen2.5-VL and
Qwen3-VL one per ``(patch * merge)**2`` pixels between ``min_pixels`` and ``max_pixels`` (transformers 5
keeps them as ``size = {"shortest_edge", "longest_edge"}``, in pixels); LLaVA-NeXT a grid of crops, the
anyres ``image_grid_pinpoints`` the image fits best, plus the whole; Idefics3 and SmolVLM
``image_seq_len`` tokens a crop of ``max_image_size``, crops of the image resized to ``size["longest_edge"]``
plus the whole (``do_image_splitting``). One large picture then costs tens of times a small one, in the
batch's width and so in every row's padding and activations.

* ``apply_max_image_tokens`` lowers that setting so no image takes more than N tokens; a family whose
  images all take the same count says so once (and refuses an N below that count).
* ``bucket_lengths`` adds each row's image tokens (read from the image headers, counted by the
  processor's own arithmetic) to the lengths the length-grouped sampler sorts on, so a batch pads to
  rows of its own size. For a family whose count does not vary the lengths, and so the order, stay.
* ``estimate_peak_memory`` (a pure function) and ``preflight``: weights, gradients and AdamW states,
  activations of the longest micro-batch; over the device's free memory, a one-line error before
  training, naming what to lower.

Per-family knowledge is keyed by family name (finetune/families) and, for a family the kit has no
module for (Idefics3, SmolVLM), by processor class name. No torch at import: the unit tests of the
estimator run without it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generator.schema import IMAGE_COLUMN

from .data import RowsDataset, open_image
from .errors import FinetuneError
from .families import core_model, family_of, family_of_processor

FLAG = "--max-image-tokens"

# Families whose images all take one token count, and why (what --max-image-tokens has nothing to lower).
FIXED = {
    "llava": "its processor resizes every image to one size",
    "fast_vlm": "its processor resizes every image to one size",
    "gemma3": "its processor resizes every image to one size (pan-and-scan off)",
    "paligemma": "its processor resizes every image to one size",
    "mllama": "its images enter through cross-attention: the sequence holds one image token each",
}
# Processors of dynamic-resolution families that have no family module (finetune/families): the budget
# kind they share with one that has.
PROCESSOR_KINDS = {"Idefics3Processor": "idefics3", "SmolVLMProcessor": "idefics3"}


def budget_kind(processor) -> str:
    """The key of a processor's image-size knowledge: its family's name, or its class's kind."""
    name = family_of_processor(processor).name
    if name != "generic":
        return name
    names = [cls.__name__ for cls in type(processor).__mro__]
    return next((PROCESSOR_KINDS[n] for n in names if n in PROCESSOR_KINDS), name)


def varies(processor) -> bool:
    """Whether the family's image token count depends on the image's size (one ``CAPS`` knows)."""
    return budget_kind(processor) in CAPS


# --------------------------------------------------------------------------------------------
# --max-image-tokens


def apply_max_image_tokens(loaded, prompt: str, limit: int | None) -> str | None:
    """Set ``loaded``'s processor (and, for LLaVA-NeXT, its model's config) so that no image takes more
    than ``limit`` tokens; the line the run says about it (``None`` without a limit).

    The processor is the run's: training, evaluation and the saved model all use the lowered setting.
    """
    if limit is None:
        return None
    processor = loaded.processor
    kind = budget_kind(processor)
    cap = CAPS.get(kind)
    if cap is not None:
        return f"{FLAG} {limit}: {cap(processor, core_model(loaded.model), limit)}"
    count = blank_image_tokens(loaded, prompt)
    kind = family_of(loaded.model).name   # the model's family: FastVLM ships a LlavaProcessor
    name = f"{loaded.name} ({kind})"
    if kind in FIXED and count is not None:
        if count > limit:
            raise FinetuneError(f"{FLAG} {limit} is below the {count} image tokens every image takes in {name}: "
                                f"{FIXED[kind]}; raise it to at least {count} or leave it out")
        return f"{FLAG} {limit} does not apply to {name}: every image takes {count} tokens ({FIXED[kind]})"
    return (f"{FLAG} {limit} does not apply to {name}: no image-size setting of {type(processor).__name__} is "
            f"known here, so images keep their own token counts" + (f" ({count} for a 336 px square)" if count else ""))


def blank_image_tokens(loaded, prompt: str, size: int = 336) -> int | None:
    """Image tokens of the prompt with one grey ``size`` px square (a fixed-size family's count for any
    image; run-finetune --list-models shows it); ``None`` where the model names no image token id
    (remote-code processors)."""
    from PIL import Image

    config = core_model(loaded.model).config
    # The model's own id first: what its forward replaces (Gemma 3's processor also names <start_of_image>).
    token_id = (getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
                or getattr(loaded.processor, "image_token_id", None))
    if token_id is None:
        return None
    image = Image.new("RGB", (size, size), (128, 128, 128))
    ids = loaded.processor(text=[prompt], images=[image])["input_ids"][0]
    return sum(1 for i in ids if i == token_id)


def _replace_size(image_processor, **edges: int) -> None:
    """``image_processor.size`` with ``edges`` set (a ``SizeDict`` dataclass in transformers 5, else a dict)."""
    size = image_processor.size
    if dataclasses.is_dataclass(size):
        image_processor.size = dataclasses.replace(size, **edges)
    else:
        image_processor.size = {**size, **edges}


def _cap_qwen(processor, model, limit: int) -> str:
    """Qwen2/2.5/3-VL: one token a ``(patch * merge)**2`` pixels, up to ``max_pixels``: lower it (and
    ``min_pixels`` with it, which smart_resize would otherwise round up past the maximum)."""
    images = processor.image_processor
    factor = images.patch_size * images.merge_size
    low, high = images.size["shortest_edge"], images.size["longest_edge"]
    most = high // factor**2
    if most <= limit:
        return f"unchanged: max_pixels {high} already gives at most {most} tokens an image"
    new_high = limit * factor**2
    _replace_size(images, shortest_edge=min(low, new_high), longest_edge=new_high)
    return (f"{type(processor).__name__}'s max_pixels {high} -> {new_high} (up to {limit} tokens an image, "
            f"were {most}; an image more than {limit}:1 wide or tall still takes more)")


def _cap_llava_next(processor, model, limit: int) -> str:
    """LLaVA-NeXT: keep the anyres grids whose fullest image takes at most ``limit`` tokens. The model
    picks the same grid from its own config (to unpad the features), so its config keeps the same list."""
    images = processor.image_processor
    pinpoints = [list(p) for p in images.image_grid_pinpoints]
    costs = [_tokens(processor, [tuple(p)])[0] for p in pinpoints]   # an image of the grid's shape fills it
    kept = [p for p, cost in zip(pinpoints, costs) if cost <= limit]
    kept_most = max((cost for cost in costs if cost <= limit), default=0)
    if not kept:
        smallest = min(costs)
        raise FinetuneError(f"{FLAG} {limit} is below the {smallest} tokens of LLaVA-NeXT's smallest anyres grid "
                            f"({pinpoints[costs.index(smallest)]}): raise it to at least {smallest}")
    if len(kept) == len(pinpoints):
        return f"unchanged: every anyres grid already takes at most {max(costs)} tokens"
    images.image_grid_pinpoints = kept
    model.config.image_grid_pinpoints = kept
    return (f"LLaVA-NeXT's anyres grids {len(pinpoints)} -> {len(kept)} ({kept}: up to {kept_most} tokens an "
            f"image, were {max(costs)}); the model's config and the saved processor carry the same list")


def _idefics3_tokens(seq_len: int, grid: int) -> int:
    """Image tokens of the fullest image when the longest edge spans ``grid`` crops: a grid of crops and
    the whole, or the whole alone (one crop)."""
    return seq_len * (grid * grid + 1) if grid > 1 else seq_len


def _cap_idefics3(processor, model, limit: int) -> str:
    """Idefics3 / SmolVLM: ``image_seq_len`` tokens a crop; lower ``size["longest_edge"]`` (in crops of
    ``max_image_size``) until the fullest grid fits."""
    images, seq_len = processor.image_processor, processor.image_seq_len
    crop = images.max_image_size["longest_edge"]
    grid = math.ceil(images.size["longest_edge"] / crop) if images.do_image_splitting else 1
    if seq_len > limit:
        raise FinetuneError(f"{FLAG} {limit} is below the {seq_len} tokens one {crop} px crop takes in "
                            f"{type(processor).__name__} (image_seq_len): raise it to at least {seq_len}")
    most = _idefics3_tokens(seq_len, grid)
    if most <= limit:
        return f"unchanged: images already take at most {most} tokens"
    fits = max(g for g in range(1, grid + 1) if _idefics3_tokens(seq_len, g) <= limit)
    old = images.size["longest_edge"]
    _replace_size(images, longest_edge=fits * crop)
    return (f"{type(processor).__name__}'s longest_edge {old} -> {fits * crop} px (up to "
            f"{_idefics3_tokens(seq_len, fits)} tokens an image, were {most})")


# What lowers each dynamic family's image size, by budget kind.
CAPS: dict[str, Callable[[Any, Any, int], str]] = {
    "qwen2-vl": _cap_qwen, "qwen3-vl": _cap_qwen, "llava-next": _cap_llava_next, "idefics3": _cap_idefics3,
}


# --------------------------------------------------------------------------------------------
# Bucketing by image tokens


def _tokens(processor, sizes: list[tuple[int, int]]) -> list[int]:
    """Image tokens of images of ``sizes`` ``(height, width)``, by the processor's own arithmetic (what vLLM
    asks it for), which matches the tokens its ``__call__`` writes (tests/test_image_budget.py)."""
    return list(processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens)


def image_size(value) -> tuple[int, int] | None:
    """``(height, width)`` of a datasets ``Image(decode=False)`` value from its header (no decoding);
    ``None`` for a null or unreadable image."""
    if value is None:
        return None
    try:
        with open_image(value) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any unreadable header is a row the collator will skip
        return None
    return height, width


def image_token_counts(ds, processor) -> list[int] | None:
    """Image tokens each row of ``ds`` takes (0: no readable image), for a family whose count varies with
    the image's size; ``None`` for the others (nothing read)."""
    if not varies(processor):
        return None
    sizes = [image_size(v) for chunk in ds.select_columns([IMAGE_COLUMN]).iter(batch_size=512)
             for v in chunk[IMAGE_COLUMN]]
    distinct = sorted({s for s in sizes if s is not None})
    counted = dict(zip(distinct, _tokens(processor, distinct))) if distinct else {}
    return [counted[s] if s is not None else 0 for s in sizes]


def bucket_lengths(lengths: list[int], ds, processor, limit: int | None = None) -> tuple[list[int], list[str]]:
    """``lengths`` (answer tokens a row) plus each row's image tokens where those vary between rows, and the
    lines to say about it; else ``lengths`` as given (the batch order stays that of answer lengths alone).

    The length-grouped sampler sorts each mega-batch on these: rows of similar image size share batches,
    and the order still depends only on (seed, epoch) and the data, so --resume finds its batch."""
    counts = image_token_counts(ds, processor)
    if counts is None or len(set(counts)) <= 1:
        return lengths, []
    seen = [c for c in counts if c] or [0]
    said = [f"batches grouped by image tokens too: the training images take {min(seen)}-{max(seen)} tokens "
            f"(mean {sum(seen) / len(seen):.0f})"]
    over = [c for c in counts if limit is not None and c > limit]
    if over:   # smart_resize keeps at least one (patch * merge) square a side: a sliver exceeds any budget
        said.append(f"warning: {len(over)} training image(s) still take more than {FLAG} {limit} tokens (up to "
                    f"{max(over)}): their aspect ratio is too extreme for that budget")
    return [a + c for a, c in zip(lengths, counts)], said


# --------------------------------------------------------------------------------------------
# Memory pre-flight

# Values of width ``hidden`` one decoder layer keeps a token for backward: Korthikanti et al. (2022) count
# 34 bytes a token and hidden unit at 16 bits, without the attention scores (SDPA and flash attention keep
# none). LoRA dropout adds a masked copy of each adapted layer's input and its mask (~8 more on Phi-3's
# fused qkv, o, gate_up and down). Meant as a floor: the vision tower's activations, the allocator's
# fragmentation and the CUDA context are not counted, so a run refused here could not have fit. Measured
# on an H200, phi3v-shape (bench: the peak of 3 steps, torch.cuda.max_memory_allocated): LoRA batch 8
# 32.6 GiB, batch 16 57.0, batch 16 checkpointed 12.5, the fast preset (no dropout) at 8 24.5, full at 4
# 33.9; the estimates below each (README).
ACTIVATION_VALUES = 17
DROPOUT_VALUES = 8
LOGIT_BYTES = 8   # float32 logits and their gradient at each position the loss reads


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs at its peak, by what holds them."""

    weights: int
    optimizer: int        # AdamW's two moments of the trainable parameters, from the first step on
    gradients: int        # the trainable parameters' gradients
    activations: int
    logits: int
    # Gradients kept across micro-batches (--grad-accum > 1) live beside the next one's activations; in a
    # single micro-batch they grow as backward frees the activations, so the peak holds the larger of both.
    accumulating: bool = False

    @property
    def total(self) -> int:
        step = self.activations + self.logits
        live = self.gradients + step if self.accumulating else max(self.gradients, step)
        return self.weights + self.optimizer + live


def estimate_peak_memory(*, weight_bytes: int, trainable_bytes: int, rows: int, width: int, hidden: int,
                         layers: int, value_bytes: int, vocab: int, logit_positions: int,
                         checkpointing: bool = False, activation_budget: float = 1.0, lora_dropout: bool = False,
                         accumulating: bool = False, shards: int = 1) -> MemoryEstimate:
    """Peak memory of one process's training step, from the model's sizes and the micro-batch's shape.

    ``rows`` x ``width``: the micro-batch one process runs (the longest sequence, image tokens included);
    ``value_bytes``: an activation's size (2 in bf16, 4 in float32); ``logit_positions``: the positions the
    loss computes logits at. Gradient checkpointing keeps each layer's input and one layer's activations
    at a time; a compiled block keeps ``activation_budget`` of its own. Full fine-tuning sharded over
    ``shards`` processes (FSDP) keeps its share of the weights and their state.
    """
    per_layer = ACTIVATION_VALUES + (DROPOUT_VALUES if lora_dropout else 0)
    kept = layers + per_layer if checkpointing else layers * per_layer
    activations = rows * width * hidden * value_bytes * kept * activation_budget
    return MemoryEstimate(weights=weight_bytes // shards, optimizer=2 * trainable_bytes // shards,
                          gradients=trainable_bytes // shards, activations=int(activations),
                          logits=logit_positions * vocab * LOGIT_BYTES, accumulating=accumulating)


def memory_hint(cfg, images_vary: bool) -> str:
    """What to lower when a step does not fit (the run-time out-of-memory error says the same)."""
    ways = ["lower --batch-size (and raise --grad-accum to keep the effective batch)"]
    if images_vary:
        ways.append(f"lower {FLAG}")
    if not cfg.gradient_checkpointing:
        ways.append("add --gradient-checkpointing")
    if cfg.preset != "low-memory":
        ways.append("use --preset low-memory")
    return ", ".join(ways[:-1]) + " or " + ways[-1] if len(ways) > 1 else ways[0]


def check_memory(estimate: MemoryEstimate, available: int, *, cfg, images_vary: bool, where: str,
                 rows: int, width: int) -> None:
    """A one-line ``FinetuneError`` when ``estimate`` exceeds ``available`` bytes, naming what to lower."""
    if estimate.total <= available:
        return
    gib = 2**30
    if estimate.weights + estimate.optimizer + estimate.gradients > available:
        what = ("the weights with their gradients and AdamW states alone do not fit: use --method lora, or "
                "shard full fine-tuning over several GPUs (torchrun, --fsdp)")
        if cfg.method == "lora":
            what = "the weights alone do not fit: use a smaller model or a GPU with more memory"
    else:
        what = memory_hint(cfg, images_vary)
    raise FinetuneError(
        f"out of memory before training: the estimated peak is {estimate.total / gib:.1f} GiB (weights "
        f"{estimate.weights / gib:.1f}, AdamW states {estimate.optimizer / gib:.1f}, gradients "
        f"{estimate.gradients / gib:.1f}, activations {estimate.activations / gib:.1f} for {rows} rows of up to "
        f"{width:,} tokens, logits {estimate.logits / gib:.1f}) and {where} has {available / gib:.1f} GiB free: "
        f"{what}", exit_code=1)


def free_device_memory(device, dist) -> int | None:
    """Bytes this process may still use on a CUDA ``device`` (free plus what it holds already, which the
    estimate counts), the least over processes; ``None`` on a CPU, which the pre-flight skips (swap and
    the other processes' memory make its free RAM no limit to check against)."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    mine = torch.tensor([free + torch.cuda.memory_reserved(device)], device=device)
    if dist.enabled:   # every process stops, or none does
        torch.distributed.all_reduce(mine, op=torch.distributed.ReduceOp.MIN)
    return int(mine.item())


def longest_width(ds, collator, lengths: list[int], tries: int = 8) -> int | None:
    """The width of the longest training row as the collator makes it (image tokens included): the row
    the sampler's lengths rank first, or the next while its image cannot be read."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:tries]
    rows = RowsDataset(ds)
    for i in order:
        batch = collator(rows.__getitems__([i]))
        if "input_ids" in batch:
            return int(batch["input_ids"].shape[1])
    return None


def preflight(*, model, trainable, cfg, speed, device, dist, fsdp: bool, bf16: bool, ds, collator,
              lengths: list[int], answer_width: int, images_vary: bool) -> MemoryEstimate | None:
    """Refuse, before the first step, a run whose estimated peak exceeds the device's free memory; the
    estimate, or ``None`` where there is nothing to check (a CPU, an unreadable split)."""
    available = free_device_memory(device, dist)
    if available is None:
        return None
    width = longest_width(ds, collator, lengths)
    text = core_model(model).config.get_text_config()
    hidden, layers = getattr(text, "hidden_size", None), getattr(text, "num_hidden_layers", None)
    if width is None or not hidden or not layers:
        return None
    rows = max(1, cfg.batch_size // dist.world)
    shards = dist.world if fsdp else 1
    estimate = estimate_peak_memory(
        weight_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable), rows=rows, width=width,
        hidden=hidden, layers=layers, value_bytes=2 if bf16 else 4, vocab=getattr(text, "vocab_size", 0) or 0,
        logit_positions=rows * (answer_width if cfg.loss == "answer" else width),
        checkpointing=cfg.gradient_checkpointing,
        activation_budget=speed.activation_memory_budget if speed.compile_layers else 1.0,
        lora_dropout=cfg.method == "lora" and bool(cfg.lora_dropout), accumulating=cfg.grad_accum > 1, shards=shards)
    check_memory(estimate, available, cfg=cfg, images_vary=images_vary, where=str(device), rows=rows, width=width)
    return estimate

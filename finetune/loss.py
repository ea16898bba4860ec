"""The training loss: cross-entropy on the answer tokens, with logits computed only where needed.

A Phi-3-vision sample is ~576 image tokens + ~15 prompt tokens + ~25 answer tokens. The standard
loss computes a vocabulary-sized logit row at every position and throws all but the answer rows
away; here the backbone's last hidden state is gathered at the positions that predict an answer
token and only those go through ``lm_head``. Same loss, far less memory (``plain`` keeps the
model's own loss for comparison).

The forward is split into parts (images -> features, backbone -> hidden states, head -> loss) so
that speed levers can replace one part at a time: cached image features, packed sequences, a
fused cross-entropy.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from .data import IGNORE_INDEX, INDEX_KEY, model_inputs
from .families import MASKLESS, core_model, family_of
from .families.llava import select_features
from .speed.answer_mlp import answer_positions
from .speed.maskless import unmasked_attention

# Flat positions ``b * seq + t`` of the hidden states that predict an answer token, computed from the
# labels on the CPU before the batch moves to the device (``with_answer_index``): selecting them on
# the device by a boolean mask would make the host wait for the GPU in the middle of every step.
ANSWER_INDEX_KEY = "_answer_index"
# The batch's dataset row indices as a tuple of Python ints (``with_rows``), read on the host by the
# image feature cache. The loop moves every tensor of a batch to the device, ``INDEX_KEY`` too:
# reading it there would sync.
ROWS_KEY = "_rows"


class FeatureStore(Protocol):
    """Where a frozen tower's image features are kept between epochs (finetune/speed/feature_cache.py)."""

    def get(self, rows: Sequence[int]) -> torch.Tensor | None: ...

    def put(self, rows: Sequence[int], features: torch.Tensor) -> None: ...


@dataclass
class LossOutput:
    loss: torch.Tensor      # sum over answer tokens / normaliser
    tokens: int             # answer tokens in this batch


def count_answer_tokens(labels: torch.Tensor) -> int:
    """Tokens that a batch's loss covers (each label after the first position predicts one)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def answer_index(labels: torch.Tensor) -> torch.Tensor:
    """Flat positions of ``[batch, seq]`` whose next label is an answer token."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return predicts.flatten().nonzero().squeeze(1)


def with_answer_index(batch: dict) -> dict:
    """The batch with its answer positions (``ANSWER_INDEX_KEY``); call it where the labels are on the CPU."""
    if "labels" not in batch or ANSWER_INDEX_KEY in batch:
        return batch
    return {**batch, ANSWER_INDEX_KEY: answer_index(batch["labels"])}


def with_rows(batch: dict) -> dict:
    """The batch with its row indices as host ints (``ROWS_KEY``); call it while the batch is on the CPU."""
    if ROWS_KEY in batch or INDEX_KEY not in batch:
        return batch
    return {**batch, ROWS_KEY: tuple(int(i) for i in batch[INDEX_KEY].tolist())}


def rows_of(batch: dict) -> tuple[int, ...] | None:
    """The batch's row indices if they can be read without a device sync; else ``None`` (no caching)."""
    rows = batch.get(ROWS_KEY)
    if rows is not None:
        return tuple(rows)
    index = batch.get(INDEX_KEY)
    if isinstance(index, (list, tuple)) or (isinstance(index, torch.Tensor) and index.device.type == "cpu"):
        return tuple(int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index))
    return None


def with_host_indices(batch: dict) -> dict:
    """The batch with what a step reads on the host: its answer positions and its row ids (for the
    image feature cache). Call it while the batch is still on the CPU."""
    return with_rows(with_answer_index(batch))


def supports_answer_loss(model) -> bool:
    """Whether the model exposes a backbone (``.model``) and a plain linear head to use separately."""
    core = core_model(model)
    text_config = getattr(core.config, "text_config", core.config)
    head = core.get_output_embeddings()
    head = getattr(head, "original_module", head)   # peft's wrapper when the head trains in full
    return (
        hasattr(core, "model")
        and isinstance(head, torch.nn.Linear)
        and not getattr(text_config, "final_logit_softcapping", None)
        and not getattr(core.config, "logit_scale", None)
    )


class LossModule(nn.Module):
    """``forward(batch, num_items) -> loss``: the training loss as a module DDP or FSDP can wrap.

    The loss runs inside a module's forward so that DDP and FSDP see the forward they wrap
    (finetune/distributed.py). ``cache`` (an ``ImageFeatureCache``, or ``None``) is this process's
    own: a plain attribute, not a submodule, so DDP and FSDP neither broadcast nor shard it.
    """

    def __init__(self, model: nn.Module, kind: str, cache: FeatureStore | None = None):
        super().__init__()
        self.model, self.kind, self.cache = model, kind, cache

    def forward(self, batch: dict, num_items: int) -> torch.Tensor:
        return compute_loss(self.model, batch, kind=self.kind, num_items=num_items, cache=self.cache).loss


def compute_loss(model, batch: dict, *, kind: str = "answer", num_items: int | None = None,
                 cache: FeatureStore | None = None) -> LossOutput:
    """The batch's loss: the answer-token cross-entropy summed and divided by ``num_items``.

    ``num_items`` is the answer-token count of the whole accumulation window (default: this
    batch's), so accumulated micro-batches add up to the mean over every answer token of the step.
    ``cache`` serves a frozen tower's image features (finetune/speed/feature_cache.py); the plain loss
    runs the model's own forward and ignores it.
    """
    labels = batch["labels"]
    index = batch.get(ANSWER_INDEX_KEY)
    tokens = index.numel() if index is not None else count_answer_tokens(labels)
    num_items = num_items or max(tokens, 1)
    if kind == "answer" and supports_answer_loss(model):
        return LossOutput(answer_loss(model, batch, num_items=num_items, cache=cache), tokens)
    return LossOutput(plain_loss(model, batch, num_items=num_items), tokens)


def forward_inputs(batch: dict) -> dict:
    """The batch's model inputs (``model_inputs``) with a copy of ``input_ids``, so that a forward leaves
    the batch as it was.

    Phi-3-vision's remote code clamps the ``input_ids`` it is given in place (its image placeholders are
    negative ids, and its image embedding writes them over with 0): a batch handed to it a second time
    (the multi-process stand-in batch, run whenever a process has no rows of its own; a check that
    computes two losses of one batch) would have lost its images. An integer ``[batch, seq]`` copy costs
    nothing beside the forward, and no host sync.
    """
    inputs = model_inputs(batch)
    if isinstance(inputs.get("input_ids"), torch.Tensor):
        inputs["input_ids"] = inputs["input_ids"].clone()
    return inputs


def plain_loss(model, batch: dict, *, num_items: int | None = None) -> torch.Tensor:
    """The model's own loss: logits at every position, then the shifted cross-entropy.

    transformers' models take ``num_items_in_batch`` and return the sum over the answer tokens divided
    by it. A remote-code model whose forward names its arguments and takes no ``**kwargs`` (Phi-3-vision's:
    ``input_ids, attention_mask, ..., pixel_values, image_sizes, labels``) would raise a TypeError on it;
    it gets none, and its own mean over this batch's label tokens is turned into the same sum / ``num_items``.
    """
    labels = batch["labels"]
    if takes_num_items(model):
        return model(**forward_inputs(batch), labels=labels, num_items_in_batch=num_items).loss
    mean = model(**forward_inputs(batch), labels=labels).loss
    if num_items is None:
        return mean
    # Counted on the device: reading it on the host would make the step wait for the GPU.
    return mean * (labels[:, 1:] != IGNORE_INDEX).sum() / num_items


def takes_num_items(model) -> bool:
    """Whether the model's forward (under any peft wrapping) takes ``num_items_in_batch``, by name or in
    ``**kwargs`` (peft passes its own keywords on to the model it wraps)."""
    return _forward_takes_num_items(type(core_model(model)))


@functools.cache
def _forward_takes_num_items(cls: type) -> bool:
    # Once a model class: the plain loss asks at every step, and reading a signature is not free.
    params = inspect.signature(cls.forward).parameters.values()
    return any(p.name == "num_items_in_batch" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def answer_loss(model, batch: dict, *, num_items: int | None = None,
                cache: FeatureStore | None = None) -> torch.Tensor:
    """Cross-entropy from logits computed only at the positions that predict answer tokens."""
    logits, targets, index = answer_logits(model, batch, cache=cache)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss / (num_items or max(index.numel(), 1))


def answer_logits(model, batch: dict, *, cache: FeatureStore | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, targets, index)``: the logits only at the flat ``[batch * seq]`` positions ``index`` that
    predict an answer token, and those tokens. For a model ``supports_answer_loss`` accepts."""
    labels = batch["labels"]
    index = batch.get(ANSWER_INDEX_KEY)
    if index is None:
        index = answer_index(labels)
    rows = rows_of(batch) if cache is not None else None
    with answer_positions(model, index):
        hidden = backbone_hidden_states(model, forward_inputs(batch), cache=cache, rows=rows)
    # Position t predicts token t+1, the next flat position of the same row.
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
    logits = core_model(model).get_output_embeddings()(selected)
    targets = labels.reshape(-1).index_select(0, index + 1)
    return logits, targets, index


def backbone_hidden_states(model, inputs: dict, *, cache: FeatureStore | None = None,
                           rows: Sequence[int] | None = None) -> torch.Tensor:
    """The decoder's last hidden state ``[batch, seq, hidden]`` (no ``lm_head``).

    Llava models (``Family.llava_parts``) get their image features from ``image_features``, so a
    frozen vision tower runs without building a graph (or not at all, when ``cache`` holds the
    features of every one of ``rows``). Every other family runs its own backbone (``model.model``)
    with the batch's family inputs (``image_grid_thw``, ``token_type_ids``, ``image_sizes``, ...):
    only the model knows its M-RoPE positions, its bidirectional image attention or its anyres crops.
    """
    core = core_model(model)
    backbone = core.model
    family = family_of(core)
    if family.llava_parts and inputs.get("pixel_values") is not None:
        inputs = dict(inputs)
        features = image_features(backbone, inputs.pop("pixel_values"), cache=cache, rows=rows)
        inputs["inputs_embeds"] = merge_image_features(backbone, inputs.pop("input_ids"), features)
    # A batch without a mask is a maskless (right-padded, causal) batch: attention needs no mask built.
    unmasked = "attention_mask" not in inputs and MASKLESS not in family.off_levers
    # Phi-4-multimodal's backbone is its decoder itself (no ``language_model`` under it).
    decoder = getattr(backbone, "language_model", backbone)
    with unmasked_attention(decoder.config) if unmasked else contextlib.nullcontext():
        out = backbone(**inputs, use_cache=False)
    return out[0]


def merge_image_features(llava_model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Token embeddings ``[batch, seq, hidden]`` with ``features`` in place of the image tokens.

    The backbone then runs on ``inputs_embeds``, an argument every transformers release takes.
    Handing the features over by keyword instead (``mm_encoder_outputs``, new in transformers
    5.2x) trained without images wherever an older release ran: an unknown keyword disappears into
    ``**kwargs`` without a word, the image tokens kept their plain embeddings, and the H200's
    transformers 5.17 learned nothing from the pictures while this machine's 5.25 did.
    """
    embeds = llava_model.get_input_embeddings()(input_ids)
    where = input_ids == llava_model.config.image_token_id
    # No count check against ``where``: reading it back would make the host wait for the GPU every step.
    features = features.reshape(-1, features.shape[-1]).to(embeds.device, embeds.dtype)
    return embeds.masked_scatter(where.unsqueeze(-1), features)


def image_features(llava_model, pixel_values: torch.Tensor, *, cache: FeatureStore | None = None,
                   rows: Sequence[int] | None = None) -> torch.Tensor:
    """Projected image features ``[images, tokens, hidden]`` of a Llava model.

    The projector runs with gradients whenever it trains; its input comes from ``tower_features``.
    """
    selected = tower_features(llava_model, pixel_values, cache=cache, rows=rows)
    projector = llava_model.multi_modal_projector
    projector_frozen = not any(p.requires_grad for p in projector.parameters())
    with torch.set_grad_enabled(torch.is_grad_enabled() and not projector_frozen):
        return projector(selected)


def tower_features(llava_model, pixel_values: torch.Tensor, *, cache: FeatureStore | None = None,
                   rows: Sequence[int] | None = None) -> torch.Tensor:
    """The vision tower's selected hidden states ``[images, tokens, dim]``: the projector's input.

    A frozen tower runs under ``no_grad`` in its own dtype (bf16 on GPU): nothing of it is kept
    for backward. With a ``cache`` and the batch's dataset ``rows``, a frozen tower's features come
    from the cache when every row is there, and are stored there when not; a training tower's
    features change every step, so the cache is bypassed.
    """
    tower = llava_model.vision_tower
    frozen = not any(p.requires_grad for p in tower.parameters())
    cached = cache is not None and rows is not None and frozen
    if cached:
        hit = cache.get(rows)
        if hit is not None:
            return hit
    config = llava_model.config
    dtype = next(tower.parameters()).dtype
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        out = tower(pixel_values.to(dtype), output_hidden_states=True, return_dict=True)
        selected = select_features(config, out)
    if cached:
        cache.put(rows, _as_projector_reads(llava_model, selected))
    return selected


def _as_projector_reads(llava_model, features: torch.Tensor) -> torch.Tensor:
    """``features`` in the dtype the projector computes with, where converting them loses nothing.

    Under autocast a CLIP tower's hidden states are fp32 whatever its weights (layer norms and
    residual adds run in fp32), and Llava's projector starts with a linear layer, which casts its
    input to the autocast dtype anyway: a bf16 copy is exact and takes half the memory.
    """
    projector = llava_model.multi_modal_projector
    device_type = features.device.type
    starts_linear = (type(projector).forward is LlavaMultiModalProjector.forward
                     and type(getattr(projector, "linear_1", None)) is torch.nn.Linear)
    if starts_linear and torch.is_autocast_enabled(device_type):
        return features.to(torch.get_autocast_dtype(device_type))
    return features

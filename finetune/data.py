"""Dataset -> batches: loading, the prompt, label masking, collation and length-grouped batching.

A training sequence is ``prompt ids + answer ids``, each tokenized on its own: generation starts
from exactly the prompt ids, so the model learns the continuation it will be asked for. Labels are
``-100`` on the prompt (and its image tokens) and on padding; only the answer, closing ``<|end|>``
included, is learned.
"""
from __future__ import annotations

import io
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.schema import ANSWER_TEMPLATE, IMAGE_COLUMN, REQUIRED_FOR_FINETUNE

from .errors import FinetuneError
from .families import family_of, family_of_processor

# Columns kept where the dataset has them, beside REQUIRED_FOR_FINETUNE: not in the answer, but the vision
# warm-up learns from the department (finetune/vision_warmup.py).
DEPARTMENT_COLUMN = "category1_code"
AUXILIARY_COLUMNS: tuple[str, ...] = (DEPARTMENT_COLUMN,)

# datasets, PIL and torch are imported in the functions that use them: scoring (finetune/evaluate.py)
# imports this module and runs without torch.

IGNORE_INDEX = -100
INDEX_KEY = "_index"      # dataset row index carried through a batch (for predictions)
SKIPPED_KEY = "_skipped"  # indices of the rows the batch dropped because their image could not be read
EPOCH_KEY = "_epoch"      # the epoch a training row is drawn in (seeds its augmentation)


# --------------------------------------------------------------------------------------------
# Text


def format_price(value: float) -> str:
    """The price as the public table and recipe print it: Python's ``str`` of the float.

    ``1890`` and ``1890.0`` both give ``"1890.0"``, ``2050.5`` gives ``"2050.5"``: the recipe
    formatted the table's float64 column with an f-string, so its answers always carry one decimal.
    """
    return str(float(value))


def answer_text(row: dict) -> str:
    """The answer of a row, without the closing end-of-turn token."""
    return ANSWER_TEMPLATE.format(
        title=row["title"], category3_code=row["category3_code"], full_price=format_price(row["full_price"])
    )


def phi3_prompt(question: str, image_token: str) -> str:
    """Phi-3-vision's chat format, as in the public recipe."""
    return f"<|user|>\n{image_token}\n{question}<|end|>\n<|assistant|>\n"


def build_prompt(loaded, question: str) -> str:
    """The prompt for a model: its family's own format (PaliGemma's prefix) where its processor has no
    chat template, else Phi-3's format, or the processor's own chat template."""
    family_prompt = family_of(loaded.model).prompt
    if family_prompt is not None and getattr(loaded.processor, "chat_template", None) is None:
        return family_prompt(question, loaded.image_token)
    if loaded.phi3_chat:
        return phi3_prompt(question, loaded.image_token)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def build_text_prompt(loaded, question: str) -> str | None:
    """``build_prompt`` without the image, for a row whose image is null (a text-only row); ``None``
    for a family whose prompt format has no text-only form (PaliGemma's image prefix) or whose batches
    cannot mix such rows with image rows (Mllama)."""
    family = family_of(loaded.model)
    if not family.text_only_rows:
        return None
    if family.prompt is not None and getattr(loaded.processor, "chat_template", None) is None:
        return None
    if loaded.phi3_chat:
        return f"<|user|>\n{question}<|end|>\n<|assistant|>\n"
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# --------------------------------------------------------------------------------------------
# Loading


def load_splits(source: str, *, seed: int = 0, test_fraction: float = 0.1):
    """A ``DatasetDict`` with ``train`` and ``test`` from a local dir or a Hub dataset id.

    Local dirs may hold parquet (as ``gen-samples`` writes) or a ``save_to_disk`` dataset. A dataset
    without a test split gets one carved from train (seeded); ``validation`` serves as test if present.
    The image column is left undecoded: DataLoader workers decode it.
    """
    import datasets

    dsd = _load_any(source)
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    if "train" not in dsd:
        raise FinetuneError(f"dataset {source!r} has no train split (splits: {', '.join(dsd) or 'none'})")
    missing = [c for c in REQUIRED_FOR_FINETUNE if c not in dsd["train"].column_names]
    if missing:
        raise FinetuneError(
            f"dataset {source!r} lacks column(s) {', '.join(missing)} needed for fine-tuning "
            f"(needs {', '.join(REQUIRED_FOR_FINETUNE)})"
        )
    if "test" not in dsd:
        if "validation" in dsd:
            dsd["test"] = dsd["validation"]
        else:
            parts = dsd["train"].train_test_split(test_size=test_fraction, seed=seed)
            dsd = datasets.DatasetDict({"train": parts["train"], "test": parts["test"]})
    out = {}
    for split in ("train", "test"):
        kept = [*REQUIRED_FOR_FINETUNE, *(c for c in AUXILIARY_COLUMNS if c in dsd[split].column_names)]
        ds = dsd[split].select_columns(kept)
        ds = ds.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
        out[split] = _drop_incomplete(ds, split)
    if len(out["train"]) == 0 or len(out["test"]) == 0:
        raise FinetuneError(f"dataset {source!r} has an empty train or test split")
    return datasets.DatasetDict(out)


def _load_any(source: str):
    import datasets

    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            try:
                return datasets.load_from_disk(str(path))
            except Exception as e:  # noqa: BLE001 - a damaged saved dataset is bad input too, said in one line
                raise FinetuneError(f"cannot read saved dataset {source!r}: {_first_line(e)}") from None
        if not any(path.rglob("*.parquet")):
            raise FinetuneError(f"dataset directory {source!r} holds no parquet files and no saved dataset")
        try:
            return datasets.load_dataset("parquet", data_dir=str(path))
        except Exception as e:  # noqa: BLE001 - unreadable files are bad input, said in one line
            raise FinetuneError(f"cannot read dataset {source!r}: {_first_line(e)}") from None
    if path.exists():
        raise FinetuneError(f"dataset {source!r} is a file; give the directory that holds the dataset")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FinetuneError(f"dataset path {source!r} does not exist (nor is it a Hub dataset id like owner/name)")
    try:
        return datasets.load_dataset(source)
    except Exception as e:  # noqa: BLE001
        raise FinetuneError(f"cannot load dataset {source!r} from the Hub or its cache: {_first_line(e)}") from None


def _drop_incomplete(ds, split: str):
    """Rows missing a title, category or price cannot make an answer: drop them and say so."""
    cols = [c for c in REQUIRED_FOR_FINETUNE if c != IMAGE_COLUMN]
    table = ds.select_columns(cols).to_pandas()
    keep = ~table.isna().any(axis=1)
    if keep.all():
        return ds
    warnings.warn(f"{split}: dropped {int((~keep).sum())} rows with an empty {', '.join(cols)} field", stacklevel=3)
    return ds.select(np.flatnonzero(keep.to_numpy()).tolist())


def _first_line(error: Exception) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def training_texts(ds, prompt: str, end_token: str) -> list[str]:
    """What a built-in model's tokenizer is trained on: every training sequence, as text."""
    rows = ds.select_columns([c for c in REQUIRED_FOR_FINETUNE if c != IMAGE_COLUMN]).to_list()
    return [prompt + answer_text(r) + end_token for r in rows]


# --------------------------------------------------------------------------------------------
# Batches


class RowsDataset:
    """Map-style view of a ``datasets.Dataset`` that fetches a whole batch of rows at once."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list) -> list[dict]:
        # An index is a row number, or (epoch, row number) from ``AcrossEpochs(tag_epochs=True)``:
        # the epoch then travels with the row, so its augmentation is drawn from (seed, epoch, row).
        epochs = [i[0] if isinstance(i, tuple) else None for i in indices]
        indices = [i[1] if isinstance(i, tuple) else i for i in indices]
        cols = self.ds[list(indices)]
        rows = [dict(zip(cols, values)) for values in zip(*cols.values())]
        for i, epoch, row in zip(indices, epochs, rows):
            row[INDEX_KEY] = int(i)
            if epoch is not None:
                row[EPOCH_KEY] = int(epoch)
        return rows


def open_image(value):
    """The PIL image of a datasets ``Image(decode=False)`` value (bytes or path), opened but not decoded:
    its header (size, format) is read, its pixels not yet. Raises what PIL raises for an unreadable one."""
    from PIL import Image

    if not isinstance(value, dict):
        return value
    data, path = value.get("bytes"), value.get("path")
    return Image.open(io.BytesIO(data)) if data else Image.open(path)


def decode_image(value):
    """A PIL RGB image from a datasets ``Image(decode=False)`` value; ``None`` if unreadable."""
    try:
        image = open_image(value)
        image.load()
        return image.convert("RGB")
    except Exception:  # noqa: BLE001 - any decoding failure is a corrupt row
        return None


def text_only_rows(ds) -> int:
    """Rows whose image is null (``Collator.text_prompt``), from the column's null count: no image is
    read. A ``select``ed dataset counts the rows of the table beneath it (at least its own)."""
    return ds.data.column(IMAGE_COLUMN).null_count


def readable_rows(ds, enough: int) -> int:
    """Rows of ``ds`` whose image decodes as the collator will decode it, counted up to ``enough``: a
    healthy split costs ``enough`` decodes; only a split that cannot reach it is read to the end."""
    found = 0
    for chunk in ds.select_columns([IMAGE_COLUMN]).iter(batch_size=max(1, enough)):
        for value in chunk[IMAGE_COLUMN]:
            found += decode_image(value) is not None
            if found >= enough:
                return found
    return found


@dataclass
class Collator:
    """Rows -> model inputs. Runs in DataLoader workers, so it is a plain picklable object.

    ``train=True``: prompt + answer, right padding, labels on the answer only.
    ``train=False``: the prompt only, left padding, for batched generation.

    The processor's other outputs go by the model family (finetune/families): those with a value a
    prompt token (``mm_token_type_ids``, ``token_type_ids``) are padded beside ``input_ids``; the rest
    (pixels, ``image_grid_thw``, ``image_sizes``) are concatenated over the batch's rows.
    """

    processor: Any
    prompt: str
    end_token: str
    train: bool = True
    # Training batches round their width up to this multiple (finetune/speed/): fewer distinct
    # shapes for the compiled graphs, the attention plans and the memory allocator.
    pad_to_multiple_of: int = 1
    # Training images get a random crop and mirror (``augment_image``), drawn from (seed, epoch, row):
    # the same in every worker layout and after --resume.
    augment: bool = False
    # The share of answer tokens whose *input* is swapped for another token of the same answer, drawn
    # from (seed, epoch, row) too; the labels stay the true ones (``noisy_answer``).
    answer_noise: float = 0.0
    seed: int = 0
    # The prompt of a row whose image is null (``build_text_prompt``): it trains as text only. ``None``:
    # such a row is skipped, as one whose image cannot be read.
    text_prompt: str | None = None

    def __call__(self, rows: list[dict]) -> dict[str, Any]:
        import torch

        encoded, skipped = [], []
        for row in rows:
            enc = self._encode(row)
            if enc is None:
                skipped.append(int(row[INDEX_KEY]))
            else:
                encoded.append(enc)
        batch: dict[str, Any] = {SKIPPED_KEY: skipped}
        if not encoded:
            batch[INDEX_KEY] = torch.zeros(0, dtype=torch.long)
            return batch
        width = max(len(e.prompt) + len(e.answer) for e in encoded)
        if self.train and self.pad_to_multiple_of > 1:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch.update(self._token_tensors(encoded, width))
        # Image inputs come from the rows with an image only (text-only rows have none).
        for key in dict.fromkeys(k for e in encoded for k in e.extras):
            batch[key] = _stack_padded([e.extras[key] for e in encoded if key in e.extras])
        batch[INDEX_KEY] = torch.tensor([e.index for e in encoded], dtype=torch.long)
        return batch

    def _encode(self, row: dict) -> _Encoded | None:
        """One row through the processor (``None`` when its image cannot be read)."""
        text_only = row[IMAGE_COLUMN] is None and self.text_prompt is not None
        image = None if text_only else decode_image(row[IMAGE_COLUMN])
        if image is None and not text_only:
            return None
        if self.train and self.augment and not text_only:
            draw = random.Random(f"{self.seed}/{row.get(EPOCH_KEY, 0)}/{row[INDEX_KEY]}")
            image = augment_image(image, draw)
        tokenizer = self.processor.tokenizer
        # A chat template that writes <bos> itself (Gemma 3's) must not get a second one from the tokenizer.
        prompt = self.text_prompt if text_only else self.prompt
        bos = tokenizer.bos_token
        kwargs = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
        kwargs.update({} if text_only else {"images": [image]})
        enc = dict(self.processor(text=prompt, return_tensors="pt", **kwargs))
        prompt_ids = enc.pop("input_ids")[0].tolist()
        enc.pop("attention_mask", None)
        family = family_of_processor(self.processor)
        per_token = {}
        for key in list(enc):
            if family.drops(key):
                del enc[key]
            elif _is_per_token(enc[key], len(prompt_ids)):
                values = enc.pop(key)[0].long()
                last = key in family.answer_repeats_prompt_end
                per_token[key] = (values, values[-1] if last else family.answer_token_values.get(key, 0))
        answer_ids, answer_inputs = [], []
        if self.train:
            answer_ids = tokenizer(answer_text(row) + self.end_token, add_special_tokens=False)["input_ids"]
            answer_inputs = answer_ids
            if self.answer_noise > 0:
                draw = random.Random(f"{self.seed}/{row.get(EPOCH_KEY, 0)}/{row[INDEX_KEY]}/answer")
                answer_inputs = noisy_answer(answer_ids, self.answer_noise, draw)
        return _Encoded(prompt_ids, answer_ids, per_token, enc, row[INDEX_KEY], answer_inputs)

    def _token_tensors(self, encoded: list[_Encoded], width: int) -> dict[str, Any]:
        """``input_ids``, ``attention_mask``, ``labels`` (training) and the per-token processor outputs,
        ``[rows, width]``: right-padded for training, left-padded for generation."""
        import torch

        pad = self.processor.tokenizer.pad_token_id
        rows = len(encoded)
        ids = torch.full((rows, width), pad, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
        per_token = _per_token_zeros(encoded, width)
        for i, e in enumerate(encoded):
            seq = torch.tensor(e.prompt + (e.answer_inputs or e.answer), dtype=torch.long)
            # Training pads on the right; generation on the left, so every prompt ends where
            # the first new token goes.
            start = 0 if self.train else width - len(seq)
            ids[i, start:start + len(seq)] = seq
            mask[i, start:start + len(seq)] = 1
            prompt_end = start + len(e.prompt)
            if e.answer:
                labels[i, prompt_end:start + len(seq)] = torch.tensor(e.answer, dtype=torch.long)
            for key, (values, answer_value) in e.per_token.items():
                inner = tuple(slice(0, n) for n in values.shape[1:])
                per_token[key][(i, slice(start, prompt_end), *inner)] = values
                per_token[key][(i, slice(prompt_end, start + len(seq)), *inner)] = answer_value
        out = {"input_ids": ids, "attention_mask": mask, **({"labels": labels} if self.train else {})}
        return {**out, **per_token}


@dataclass
class _Encoded:
    """One row as the processor gave it: prompt and answer ids, outputs a prompt token, the rest."""

    prompt: list[int]
    answer: list[int]
    per_token: dict[str, tuple[Any, Any]]   # key -> (prompt values ``[prompt, ...]``, the answer's value)
    extras: dict[str, Any]
    index: int
    answer_inputs: list[int] | None = None   # what the model reads of the answer (``answer_noise``); labels: answer


def noisy_answer(answer: list[int], share: float, draw: random.Random) -> list[int]:
    """``answer`` with about ``share`` of its tokens (the end token kept) replaced by another of its tokens.

    Teacher forcing shows the decoder the true title while it learns; generating, it reads its own, and
    a small decoder learns to lean on what it read: after a wrong material word it wrote the item that
    word goes with (on the default catalogue 60 % of tiny's category3 errors came with a wrong material).
    Reading a corrupted answer now and then, it must take each word from the picture again. Tokens of
    the same answer keep the inputs plausible and never the image token. tiny at its default 18 epochs,
    CPU, one run each: price MAPE 26.7 -> 24.2 % (seed-21 catalogue) and 33.9 -> 27.4 % (the default
    catalogue); category3 moved within noise, 81.9 -> 83.9 % and 80.3 -> 77.3 %.
    """
    if len(answer) < 3:
        return answer
    out = list(answer)
    for j in range(len(answer) - 1):
        if draw.random() < share:
            out[j] = answer[draw.randrange(len(answer) - 1)]
    return out


def _is_per_token(value, prompt_len: int) -> bool:
    """Whether a processor output holds integers a prompt token (``[1, prompt_len, ...]``: one value,
    or Mllama's ``cross_attention_mask`` ``[1, prompt_len, images, tiles]``)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return (shape is not None and tuple(shape[:2]) == (1, prompt_len) and dtype is not None
            and not getattr(dtype, "is_floating_point", True))


def _per_token_zeros(encoded: list[_Encoded], width: int) -> dict[str, Any]:
    """A zero ``[rows, width, ...]`` tensor for each per-token output, its inner dims the rows' largest.

    Padding takes 0 in every per-token output (text, outside any image block or prefix; no image
    tile to attend to), and so do rows that lack one (text-only rows).
    """
    import torch

    inner: dict[str, tuple[int, ...]] = {}
    for e in encoded:
        for key, (values, _) in e.per_token.items():
            shape = tuple(values.shape[1:])
            inner[key] = tuple(map(max, inner.get(key, shape), shape))
    return {key: torch.zeros((len(encoded), width, *shape), dtype=torch.long) for key, shape in inner.items()}


def augment_image(image, rng: random.Random):
    """A random crop of 60-100 % of the area (aspect 0.8-1.25), resized back, mirrored half the time.

    Meant against memorising: tiny's tower, learning from scratch, reaches train loss 0.01-0.09 and
    category3 52-60 % on the default catalogue's test split after 35 epochs. Crops and mirrors keep
    every label (silhouette, colour, material, pattern); no colour jitter, colour is in the answer.
    Measured so far (H200, 3,000 steps of 32): no gain (50.0 % with, 51.6 % without), so it is off
    unless ``augment = true``.
    """
    from PIL import Image

    w, h = image.size
    for _ in range(10):
        area = rng.uniform(0.6, 1.0) * w * h
        aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            image = image.resize((w, h), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            break
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def _stack_padded(tensors):
    """Concatenate per-row processor outputs along dim 0, zero-padding other dims to the largest.

    Covers the shapes processors return: ``[1, 3, H, W]`` (CLIP), ``[1, crops, 3, H, W]`` with a
    varying crop count (Phi-3-vision, padded crops are ignored through ``image_sizes``), and
    ``[patches, dim]`` (Qwen2-VL style flat patches).
    """
    import torch

    tensors = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in tensors]
    if all(t.shape[1:] == tensors[0].shape[1:] for t in tensors):
        return torch.cat(tensors, dim=0)
    shape = [max(s) for s in zip(*(t.shape for t in tensors))]
    out = []
    for t in tensors:
        padded = t.new_zeros([t.shape[0], *shape[1:]])
        padded[tuple(slice(0, s) for s in t.shape)] = t
        out.append(padded)
    return torch.cat(out, dim=0)


def answer_lengths(ds, tokenizer, end_token: str) -> list[int]:
    """Answer token counts per row: what the length-grouped sampler groups on (the prompt is shared)."""
    rows = ds.select_columns([c for c in REQUIRED_FOR_FINETUNE if c != IMAGE_COLUMN]).to_list()
    texts = [answer_text(r) + end_token for r in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class LengthGroupedBatchSampler:
    """Seeded batches of similar lengths, so dynamic padding pads little.

    Each epoch: a seeded permutation, cut into mega-batches of ``group`` batches, each sorted by
    length and cut into batches; the batch order is then shuffled. The order depends only on
    ``(seed, epoch)``, so a resumed run can skip to the exact batch it stopped at.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 32):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate ``epoch`` from its ``start``-th batch on."""
        self.epoch, self.start = epoch, start

    def batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        mega = self.batch_size * self.group
        batches = []
        for i in range(0, len(perm), mega):
            chunk = perm[i:i + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[j:j + self.batch_size].tolist() for j in range(0, len(chunk), self.batch_size)]
        order = rng.permutation(len(batches))
        return [batches[k] for k in order]

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        yield from self.batches(self.epoch)[self.start:]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start


class AcrossEpochs:
    """A batch sampler's batches epoch after epoch, from batch ``start`` of ``epoch`` on, as one
    endless iterator for the training loader.

    With one iterator the loader's workers prefetch the next epoch's first batches while this epoch
    ends; a new iterator per epoch left the step waiting for them at every epoch start (phi3v-shape's
    CLIP-336 processor, batch 11, 4 workers on 2 cores: 0.12-0.18 s at each epoch's first batch, 0.004 s
    with one iterator). ``sampler`` needs ``set_epoch(epoch, start)`` and ``__iter__``.
    """

    def __init__(self, sampler, epoch: int = 0, start: int = 0, tag_epochs: bool = False):
        self.sampler, self.epoch, self.start, self.tag_epochs = sampler, epoch, start, tag_epochs

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            self.sampler.set_epoch(epoch, start)
            empty = True
            for batch in self.sampler:
                empty = False
                yield [(epoch, i) for i in batch] if self.tag_epochs else batch
            if empty and start == 0:   # else an empty split would spin here for ever
                raise ValueError("the training split has no batches")
            epoch, start = epoch + 1, 0


def make_loader(ds, collator: Collator, *, batch_sampler=None, batch_size: int = 1, num_workers: int = 0,
                pin_memory: bool = False, seed: int = 0):
    """A DataLoader whose workers decode and preprocess images.

    The loader gets its own generator: creating an iterator then draws worker seeds from it rather
    than from the global RNG, so a resumed run sees the same global random stream (dropout) as an
    uninterrupted one.
    """
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = dict(
        collate_fn=collator, num_workers=num_workers, pin_memory=pin_memory, generator=generator,
        persistent_workers=num_workers > 0,
    )
    if num_workers > 0:
        kwargs["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(RowsDataset(ds), batch_sampler=batch_sampler, **kwargs)
    return DataLoader(RowsDataset(ds), batch_size=batch_size, shuffle=False, **kwargs)


def model_inputs(batch: dict) -> dict:
    """The tensors a model's forward takes (drops labels and bookkeeping keys)."""
    return {k: v for k, v in batch.items() if not k.startswith("_") and k != "labels"}

"""What the model is trained on: answer-only labels, the image in the forward pass, dynamic padding."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import CATEGORIES, draw, indexed_rows_and_tokenizer, jpeg  # noqa: E402

from finetune.config import DEFAULT_QUESTION  # noqa: E402
from finetune.data import (IGNORE_INDEX, AcrossEpochs, Collator, LengthGroupedBatchSampler, answer_text,  # noqa: E402
                           build_prompt, model_inputs)
from finetune.loss import (ANSWER_INDEX_KEY, answer_index, answer_loss, compute_loss, plain_loss,  # noqa: E402
                           with_answer_index)
from finetune.builtins import build_builtin  # noqa: E402
from finetune.tokenizer import END, IMAGE  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    rows, tokenizer = indexed_rows_and_tokenizer(12, seed=3)
    loaded = build_builtin("tiny", tokenizer, seed=0)
    loaded.model.eval()  # no dropout: two forward passes must be comparable
    prompt = build_prompt(loaded, DEFAULT_QUESTION)
    return rows, loaded, prompt


def _collate(setup, rows, train=True):
    _, loaded, prompt = setup
    return Collator(loaded.processor, prompt, loaded.end_token, train=train)(rows)


def _answer_ids(loaded, row):
    return loaded.tokenizer(answer_text(row) + END, add_special_tokens=False)["input_ids"]


def _with_image(row, shape_of: int, seed: int = 0):
    """``row`` with the picture of another category (same text, so the same tokens)."""
    _, _, shape, rgb, _, _ = CATEGORIES[shape_of]
    return {**row, "image": {"bytes": jpeg(draw(shape, rgb, 48, random.Random(seed))), "path": None}}


# ---------------------------------------------------------------------------------------------
# (a) the loss covers only the answer


def test_labels_are_the_answer_and_end_token_only(setup):
    rows, loaded, prompt = setup
    batch = _collate(setup, rows[:6])
    image_id = loaded.tokenizer.convert_tokens_to_ids(IMAGE)
    any_image = draw("square", (0, 0, 0), 48, random.Random(0))
    prompt_ids = loaded.processor(text=prompt, images=[any_image], return_tensors="pt")["input_ids"][0].tolist()
    for i, row in enumerate(rows[:6]):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        answer = _answer_ids(loaded, row)
        length = int(mask.sum())
        kept = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        # The answer, end token included, is the last stretch of real tokens, and nothing else is learned.
        assert labels[kept].tolist() == answer
        assert kept == list(range(length - len(answer), length))
        assert answer[-1] == loaded.end_token_id
        assert ids[kept].tolist() == answer
        # Everything before it is the shared prompt (with its image placeholders), all masked.
        assert ids[:len(prompt_ids)].tolist() == prompt_ids
        assert len(prompt_ids) + len(answer) == length
        assert (labels[:len(prompt_ids)] == IGNORE_INDEX).all()
        n_image = loaded.model.config.image_seq_length
        assert int((ids == image_id).sum()) == n_image and (labels[ids == image_id] == IGNORE_INDEX).all()
        assert (labels[mask == 0] == IGNORE_INDEX).all()


def test_answer_only_loss_equals_the_models_own_loss(setup):
    rows, loaded, _ = setup
    batch = _collate(setup, rows[:6])
    with torch.no_grad():
        plain = plain_loss(loaded.model, batch)
        answer = answer_loss(loaded.model, batch)
        via_compute = compute_loss(loaded.model, batch, kind="answer").loss
        logits = loaded.model(**model_inputs(batch)).logits
    # The same number by hand: shifted cross-entropy over the answer positions only.
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    by_hand = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), targets[keep])
    torch.testing.assert_close(answer, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(via_compute, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_hand, plain, rtol=1e-5, atol=1e-6)
    assert compute_loss(loaded.model, batch).tokens == int(keep.sum())

    # Control: unmask one prompt-token label and the model's loss moves, so the equalities above
    # hold because those labels are masked, not because labels are ignored altogether.
    changed = dict(batch, labels=batch["labels"].clone())
    changed["labels"][0, 3] = batch["input_ids"][0, 3]
    with torch.no_grad():
        assert not torch.allclose(plain_loss(loaded.model, changed), plain)


def test_answer_positions_from_the_cpu_labels_give_the_same_loss(setup):
    """The training loop hands the loss its answer positions (computed before the device copy, so
    the step never waits for the GPU); they are exactly the positions the labels mark."""
    rows, loaded, _ = setup
    batch = _collate(setup, rows[:6])
    labels = batch["labels"]
    width = labels.shape[1]
    expected = [b * width + t for b, t in (labels[:, 1:] != IGNORE_INDEX).nonzero().tolist()]
    assert answer_index(labels).tolist() == expected
    indexed = with_answer_index(batch)
    assert indexed[ANSWER_INDEX_KEY].tolist() == expected
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(loaded.model, indexed), answer_loss(loaded.model, batch),
                                   rtol=0, atol=0)
        assert compute_loss(loaded.model, indexed).tokens == len(expected)
        # Control: the loss reads the given positions (moved one token back, the loss moves).
        moved = dict(indexed, **{ANSWER_INDEX_KEY: indexed[ANSWER_INDEX_KEY] - 1})
        assert abs(answer_loss(loaded.model, moved) - answer_loss(loaded.model, batch)) > 1e-3


def test_loss_gradient_reaches_only_answer_predicting_logits(setup):
    """Changing the logits at a prompt, image or padding position cannot change the loss."""
    rows, loaded, _ = setup
    batch = _collate(setup, rows[:4])
    seen = {}

    def keep_output(module, args, output):
        output.retain_grad()
        seen["logits"] = output

    handle = loaded.model.get_output_embeddings().register_forward_hook(keep_output)
    try:
        plain_loss(loaded.model, batch).backward()
    finally:
        handle.remove()
        loaded.model.zero_grad(set_to_none=True)
    touched = seen["logits"].grad.abs().sum(-1) > 0                       # [batch, seq]
    predicts_answer = torch.zeros_like(touched)
    predicts_answer[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(touched, predicts_answer)


def test_answer_loss_computes_logits_at_answer_positions_only(setup):
    rows, loaded, _ = setup
    batch = _collate(setup, rows[:4])
    shapes = []
    handle = loaded.model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            answer_loss(loaded.model, batch)
    finally:
        handle.remove()
    n_answer = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert shapes == [(n_answer, loaded.model.config.text_config.hidden_size)]


# ---------------------------------------------------------------------------------------------
# (b) the image reaches the model


def test_processor_output_carries_the_pixels(setup):
    rows, loaded, prompt = setup
    from finetune.data import decode_image

    image = decode_image(rows[0]["image"])
    enc = loaded.processor(text=prompt, images=[image], return_tensors="pt")
    assert tuple(enc["pixel_values"].shape) == (1, 3, 64, 64)                 # resized to the tower's input
    batch = _collate(setup, rows[:3])
    assert tuple(batch["pixel_values"].shape) == (3, 3, 64, 64)
    assert not torch.equal(batch["pixel_values"][0], batch["pixel_values"][1])


def test_different_images_give_different_answer_logits(setup):
    rows, loaded, _ = setup
    row = rows[0]
    a, b = _with_image(row, 0), _with_image(row, 2)
    batch = _collate(setup, [a, b, dict(a)])
    assert torch.equal(batch["input_ids"][0], batch["input_ids"][1])           # same prompt, same answer
    at = batch["labels"][0, 1:] != IGNORE_INDEX
    with torch.no_grad():
        logits = loaded.model(**model_inputs(batch)).logits[:, :-1][:, at]
    assert torch.allclose(logits[0], logits[2], atol=1e-5)                     # same image: same logits
    assert (logits[0] - logits[1]).abs().max() > 1e-3                          # other image: other logits

    # The training loss runs the image features through its own path: it must see the image too.
    losses = []
    with torch.no_grad():
        for i in range(3):
            one = {k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.dim() else v) for k, v in batch.items()}
            losses.append(answer_loss(loaded.model, one).item())
    assert losses[0] == pytest.approx(losses[2], abs=1e-6)
    assert abs(losses[0] - losses[1]) > 1e-4


# ---------------------------------------------------------------------------------------------
# (c) dynamic padding


def test_batches_pad_to_their_longest_row_only(setup):
    rows, loaded, prompt = setup
    by_length = sorted(rows, key=lambda r: len(_answer_ids(loaded, r)))
    short, long = by_length[0], by_length[-1]
    assert len(_answer_ids(loaded, short)) < len(_answer_ids(loaded, long))
    n_prompt = int(_collate(setup, [short])["attention_mask"].sum()) - len(_answer_ids(loaded, short))

    alone = _collate(setup, [short])
    assert alone["input_ids"].shape[1] == n_prompt + len(_answer_ids(loaded, short))   # no padding at all
    assert alone["attention_mask"].all()

    pair = _collate(setup, [short, long])
    width = n_prompt + len(_answer_ids(loaded, long))
    assert pair["input_ids"].shape[1] == width < 512
    assert pair["attention_mask"][1].all()
    pad = len(_answer_ids(loaded, long)) - len(_answer_ids(loaded, short))
    # Training pads on the right with the pad token, and padding is never learned.
    assert pair["attention_mask"][0].tolist() == [1] * (width - pad) + [0] * pad
    assert (pair["input_ids"][0, width - pad:] == loaded.tokenizer.pad_token_id).all()
    assert (pair["labels"][0, width - pad:] == IGNORE_INDEX).all()

    # Generation batches hold the prompt only: same prompt, same length, no padding.
    gen = _collate(setup, [short, long], train=False)
    assert gen["input_ids"].shape[1] == n_prompt and gen["attention_mask"].all() and "labels" not in gen


def test_length_grouped_batches_cover_each_row_once_per_epoch():
    lengths = [5, 30, 6, 29, 7, 28, 8, 27]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, group=4)
    for epoch in range(2):
        batches = sampler.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert batches == LengthGroupedBatchSampler(lengths, 2, seed=1, group=4).batches(epoch)
        # Within a batch lengths are neighbours in sorted order: little padding.
        assert max(abs(lengths[b[0]] - lengths[b[-1]]) for b in batches) == 1
    assert sampler.batches(0) != sampler.batches(1)
    sampler.set_epoch(1, start=3)
    assert list(sampler) == sampler.batches(1)[3:] and len(sampler) == 1


def test_across_epochs_continues_each_epoch_where_the_last_one_ended():
    import itertools

    lengths = [5, 30, 6, 29, 7, 28, 8, 27, 9]   # 5 batches of 2 an epoch, the last one short
    sampler = LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, group=4)
    span = AcrossEpochs(sampler, epoch=1, start=3)
    expected = sampler.batches(1)[3:] + sampler.batches(2) + sampler.batches(3)[:1]
    assert list(itertools.islice(span, len(expected))) == expected
    # Started again, the iterator begins at the same place (a resumed run's first batch).
    assert next(iter(span)) == sampler.batches(1)[3]
    # Resuming at an epoch's very end goes on with the next epoch.
    assert next(iter(AcrossEpochs(sampler, epoch=1, start=5))) == sampler.batches(2)[0]
    with pytest.raises(ValueError, match="no batches"):
        next(iter(AcrossEpochs(LengthGroupedBatchSampler([], batch_size=2, seed=1))))

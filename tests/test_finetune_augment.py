"""Training-image augmentation: drawn from (seed, epoch, row), so worker layout and --resume keep it."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import indexed_rows_and_tokenizer  # noqa: E402

from finetune.config import DEFAULT_QUESTION  # noqa: E402
from finetune.data import EPOCH_KEY, AcrossEpochs, Collator, LengthGroupedBatchSampler, RowsDataset, build_prompt  # noqa: E402
from finetune.builtins import build_builtin  # noqa: E402


@pytest.fixture(scope="module")
def collate():
    rows, tokenizer = indexed_rows_and_tokenizer(4, seed=2)
    loaded = build_builtin("tiny", tokenizer, seed=0)
    prompt = build_prompt(loaded, DEFAULT_QUESTION)

    def run(epoch: int | None, augment: bool = True, seed: int = 0, train: bool = True):
        tagged = [dict(r, **({EPOCH_KEY: epoch} if epoch is not None else {})) for r in rows]
        return Collator(loaded.processor, prompt, loaded.end_token, train=train, augment=augment, seed=seed)(tagged)
    return run


def test_augmentation_is_a_function_of_seed_epoch_and_row(collate):
    plain = collate(0, augment=False)["pixel_values"]
    a, again = collate(0)["pixel_values"], collate(0)["pixel_values"]
    assert torch.equal(a, again)                                   # same draw, same pixels
    assert not torch.equal(a, plain)                               # the images did change
    assert not torch.equal(a, collate(1)["pixel_values"])          # another epoch, another crop
    assert not torch.equal(a, collate(0, seed=1)["pixel_values"])  # another seed, another crop


def test_evaluation_batches_are_never_augmented(collate):
    assert torch.equal(collate(0, train=False)["pixel_values"], collate(0, augment=False, train=False)["pixel_values"])


def test_epochs_travel_with_the_rows():
    sampler = LengthGroupedBatchSampler([3, 1, 2, 5, 4], batch_size=2, seed=0)
    batches = iter(AcrossEpochs(sampler, epoch=2, tag_epochs=True))
    first = next(batches)
    assert all(epoch == 2 for epoch, _ in first)
    assert [i for _, i in first] == sampler.batches(2)[0]
    rows = RowsDataset(_FakeDataset()).__getitems__(first)
    assert [r[EPOCH_KEY] for r in rows] == [2, 2] and [r["_index"] for r in rows] == [i for _, i in first]


class _FakeDataset:
    def __getitem__(self, indices):
        return {"title": [f"t{i}" for i in indices]}

"""Answer noise (--answer-noise, tiny's default 0.15): training rows read some answer tokens swapped for
other tokens of the same answer, drawn from (seed, epoch, row); the labels stay the true answer, the
prompt and the image are untouched, and evaluation batches never have it."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import indexed_rows_and_tokenizer  # noqa: E402

from finetune.builtins import build_builtin  # noqa: E402
from finetune.config import DEFAULT_QUESTION, FinetuneConfig  # noqa: E402
from finetune.data import EPOCH_KEY, Collator, build_prompt, noisy_answer  # noqa: E402
from finetune.errors import FinetuneError  # noqa: E402


def test_noisy_answer_swaps_a_share_of_tokens_for_the_answers_own_and_keeps_the_end():
    answer = list(range(100, 140))
    noisy = noisy_answer(answer, 0.3, random.Random(1))
    changed = sum(a != b for a, b in zip(answer, noisy))
    assert 5 <= changed <= 20                       # about 30 % of 39, less the swaps that drew themselves
    assert set(noisy) <= set(answer) and noisy[-1] == answer[-1]
    assert noisy == noisy_answer(answer, 0.3, random.Random(1))
    assert noisy_answer(answer, 0.0, random.Random(1)) == answer


@pytest.fixture(scope="module")
def collate():
    rows, tokenizer = indexed_rows_and_tokenizer(4, seed=2)
    loaded = build_builtin("tiny", tokenizer, seed=0)
    prompt = build_prompt(loaded, DEFAULT_QUESTION)

    def run(noise: float, epoch: int = 0, train: bool = True):
        tagged = [dict(r, **{EPOCH_KEY: epoch}) for r in rows]
        return Collator(loaded.processor, prompt, loaded.end_token, train=train, answer_noise=noise)(tagged)
    return run


def test_the_inputs_change_on_the_answer_only_and_the_labels_not_at_all(collate):
    clean, noisy = collate(0.0), collate(0.5)
    assert torch.equal(clean["labels"], noisy["labels"]) and torch.equal(clean["pixel_values"], noisy["pixel_values"])
    differs = clean["input_ids"] != noisy["input_ids"]
    assert differs.any()
    assert not differs[clean["labels"] == -100].any()          # the prompt, image tokens and padding as they were
    assert torch.equal(noisy["input_ids"], collate(0.5)["input_ids"])              # drawn, not random
    assert not torch.equal(noisy["input_ids"], collate(0.5, epoch=1)["input_ids"])  # another epoch, another draw


def test_evaluation_batches_have_no_noise(collate):
    assert torch.equal(collate(0.5, train=False)["input_ids"], collate(0.0, train=False)["input_ids"])


def test_the_default_is_the_models_and_a_share_outside_0_1_is_refused(tmp_path):
    assert FinetuneConfig(dataset=str(tmp_path), model="tiny").validate().answer_noise == 0.15
    assert FinetuneConfig(dataset=str(tmp_path), model="tiny-llava").validate().answer_noise == 0.0
    with pytest.raises(FinetuneError, match="--answer-noise must be at least 0 and below 1"):
        FinetuneConfig(dataset=str(tmp_path), model="tiny", answer_noise=1.0).validate()

"""Cached image features of a frozen vision tower train exactly as running the tower every epoch."""
from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import indexed_rows_and_tokenizer  # noqa: E402

from finetune.config import DEFAULT_QUESTION, FinetuneConfig  # noqa: E402
from finetune.data import INDEX_KEY, Collator, build_prompt  # noqa: E402
from finetune.families import core_model, train_mode  # noqa: E402
from finetune.speed.feature_cache import ImageFeatureCache, for_run  # noqa: E402
from finetune.loss import ROWS_KEY, LossModule, tower_features, with_host_indices  # noqa: E402
from finetune.builtins import build_builtin  # noqa: E402
from finetune.train import prepare_model  # noqa: E402

ROWS = 12
EPOCH_1 = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
# Other batches of the same rows: a cache that mixed rows up (by position, say) would change the losses.
EPOCH_2 = [[9, 2, 7, 4], [11, 0, 5, 8], [3, 10, 1, 6]]


@pytest.fixture(scope="module")
def setup():
    return indexed_rows_and_tokenizer(ROWS, seed=7)


def _model(tokenizer, *, train_vision: bool, train_projector: bool = False):
    loaded = build_builtin("tiny", tokenizer, seed=0)
    model = prepare_model(loaded, FinetuneConfig(model="tiny", method="lora", train_vision=train_vision,
                                                 lora_dropout=0.0).validate())
    if train_projector:  # a frozen tower under a projector that trains: the cache holds the projector's input
        for p in core_model(model).model.multi_modal_projector.parameters():
            p.requires_grad_(True)
    train_mode(model)
    return loaded, model


def _collate(rows, loaded):
    collate = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token, train=True)

    def batch(indices):
        return with_host_indices(collate([rows[i] for i in indices]))
    return batch


def _tower_calls(model) -> list[int]:
    calls: list[int] = []
    core_model(model).model.vision_tower.register_forward_hook(lambda m, args, out: calls.append(1))
    return calls


def _train(setup, *, cache: bool, train_vision: bool = False, train_projector: bool = False, bf16: bool = False):
    """Losses of one LoRA step per batch over EPOCH_1 then EPOCH_2; tower forwards per epoch; the cache."""
    rows, tokenizer = setup
    loaded, model = _model(tokenizer, train_vision=train_vision, train_projector=train_projector)
    store = ImageFeatureCache(ROWS, "cpu") if cache else None
    step = LossModule(model, "answer", store)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = _collate(rows, loaded)
    calls = _tower_calls(model)
    losses, per_epoch = [], []
    for epoch in (EPOCH_1, EPOCH_2):
        before = len(calls)
        for indices in epoch:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = step(batch(indices), None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        per_epoch.append(len(calls) - before)
    return losses, per_epoch, store


@pytest.mark.parametrize("train_projector, bf16", [(False, False), (True, False), (True, True)],
                         ids=["frozen-projector", "training-projector", "training-projector-autocast"])
def test_cached_features_give_the_same_losses_over_two_epochs(setup, train_projector, bf16):
    plain, plain_calls, _ = _train(setup, cache=False, train_projector=train_projector, bf16=bf16)
    cached, cached_calls, store = _train(setup, cache=True, train_projector=train_projector, bf16=bf16)
    assert plain_calls == [3, 3]
    assert cached_calls == [3, 0]  # the second epoch never ran the tower
    assert (store.served, store.computed, len(store)) == (3, 3, ROWS)
    # Under autocast the tower's fp32 hidden states are kept in bf16, as the projector reads them.
    assert store._store.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert cached == pytest.approx(plain, rel=1e-6, abs=0)
    assert plain[3:] != pytest.approx(plain[:3], rel=1e-3)  # the steps did change the model


def test_a_training_tower_bypasses_the_cache(setup):
    _, calls, store = _train(setup, cache=True, train_vision=True)
    assert calls == [3, 3]
    assert (len(store), store.served, store.computed) == (0, 0, 0)
    _, model = _model(setup[1], train_vision=True)
    assert for_run(model, rows=ROWS, device=torch.device("cpu"), kind="answer") == (
        None, "image feature cache off: the vision tower trains")


def test_a_batch_with_an_uncached_row_runs_the_tower(setup):
    rows, tokenizer = setup
    loaded, model = _model(tokenizer, train_vision=False)
    batch = _collate(rows, loaded)
    store = ImageFeatureCache(ROWS, "cpu")
    calls = _tower_calls(model)
    backbone = core_model(model).model

    def features(indices):
        b = batch(indices)
        with torch.no_grad():
            return tower_features(backbone, b["pixel_values"], cache=store, rows=b[ROWS_KEY])

    features([0, 1, 2, 3])
    assert (len(calls), len(store)) == (1, 4)
    fresh = features([0, 1, 2, 4])  # row 4 is new: the whole batch runs the tower, row 4 is kept
    assert (len(calls), len(store), store.served) == (2, 5, 0)
    served = features([4, 0, 1, 2])
    assert (len(calls), store.served) == (2, 1)
    torch.testing.assert_close(served, fresh[[3, 0, 1, 2]], rtol=0, atol=0)


def test_features_served_under_the_wrong_rows_change_the_loss(setup):
    """The control that makes the equality above mean something: the cache is keyed by row, and the
    loss sees which row's features it gets."""
    rows, tokenizer = setup
    loaded, model = _model(tokenizer, train_vision=False)
    batch = _collate(rows, loaded)
    store = ImageFeatureCache(ROWS, "cpu")
    step = LossModule(model, "answer", store)
    with torch.no_grad():
        right = step(batch([0, 1, 2, 3]), None)   # fills the cache
        again = step(batch([0, 1, 2, 3]), None)   # served from it
        wrong = step({**batch([0, 1, 2, 3]), ROWS_KEY: (1, 0, 3, 2)}, None)
    assert store.served == 2
    assert again.item() == pytest.approx(right.item(), rel=1e-6)
    # A random tiny model barely looks at the image, but far more than the equality tests tolerate.
    assert abs(wrong.item() - right.item()) > 1e-4 * abs(right.item())


def test_the_training_collator_gives_a_row_the_same_pixels_every_time(setup):
    """What makes cached features exact: no random image transform at training time."""
    rows, tokenizer = setup
    loaded = build_builtin("tiny", tokenizer, seed=0)
    batch = _collate(rows, loaded)
    first, second = batch([0, 1]), batch([1, 0])
    assert first[INDEX_KEY].tolist() == [0, 1] and first[ROWS_KEY] == (0, 1)
    torch.testing.assert_close(first["pixel_values"], second["pixel_values"][[1, 0]], rtol=0, atol=0)


def test_runs_that_cannot_cache_say_why(setup):
    _, model = _model(setup[1], train_vision=False)
    cpu = torch.device("cpu")
    cache, said = for_run(model, rows=ROWS, device=cpu, kind="answer")
    assert isinstance(cache, ImageFeatureCache) and said.startswith("image feature cache on:")
    assert for_run(model, rows=ROWS, device=cpu, kind="plain")[0] is None
    assert "FSDP" in for_run(model, rows=ROWS, device=cpu, kind="answer", sharded=True)[1]
    with pytest.raises(ValueError, match="outside the image feature cache's 12 training rows"):
        ImageFeatureCache(ROWS, cpu).put([12], torch.zeros(1, 2, 3))


def test_a_run_with_the_lever_serves_later_epochs_from_the_cache(tmp_path, monkeypatch):
    """train() builds the cache from the speed settings and every step after the first epoch uses it."""
    from dataclasses import replace

    from rich.console import Console

    import _ft_fixtures as fx
    from finetune import speed as speed_mod
    from finetune.train import train

    real = speed_mod.resolve
    monkeypatch.setattr(speed_mod, "resolve", lambda name, overrides=None, *, cuda: replace(
        real(name, overrides, cuda=cuda), cache_image_features=True))
    data = fx.dataset_dir(tmp_path / "data", n_train=16, n_test=4)
    text = io.StringIO()
    # 16 rows in batches of 8: 2 batches an epoch, so 6 steps are 3 epochs and 4 of them are served.
    result = train(fx.tiny_config(data, tmp_path / "out", method="lora", train_vision=False, max_steps=6,
                                  max_eval_samples=2, max_new_tokens=2, save_final=False),
                   console=Console(file=text, width=200))
    said = text.getvalue()
    assert "image feature cache on: the frozen vision tower runs once per training row" in said
    assert "image feature cache: 4 of 6 batches served without the vision tower (16 rows cached)" in said
    assert result.metrics["train"]["image_feature_cache"] == {"batches_served": 4, "batches_computed": 2,
                                                              "rows_cached": 16}


def test_the_benchmark_step_fills_the_cache_before_timing_and_then_skips_the_tower(setup):
    import _ft_fixtures as fx
    from bench.ours import LoopStep
    from finetune.speed import SpeedConfig

    _, tokenizer = setup
    splits = fx.make_dataset(n_train=ROWS, n_test=2, seed=3)
    config = FinetuneConfig(model="tiny", method="lora", train_vision=False, batch_size=4, num_workers=0,
                            no_wandb=True).validate()
    step = LoopStep(build_builtin("tiny", tokenizer, seed=0), splits, config, device="cpu",
                    speed=SpeedConfig(cache_image_features=True))
    try:
        assert len(step.cache) == ROWS and step.cache_note.startswith("image feature cache on:")
        calls = _tower_calls(step.model)
        out = step()
        assert (calls, step.cache.served, out["samples"]) == ([], 1, 4)
    finally:
        step.close()

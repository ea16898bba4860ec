"""``--resume`` after a kill ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import checkpoint_weights, dataset_dir, tiny_config, train_killed_after  # noqa: E402

from finetune.config import FinetuneError  # noqa: E402
from finetune.train import latest_checkpoint, train  # noqa: E402


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_a_kill_gives_the_same_weights(tmp_path, augment):
    data = dataset_dir(tmp_path / "data", n_train=24, n_test=4)
    # 24 rows in batches of 8, 2 micro-batches a step: the run crosses epochs, and the kill lands
    # mid-epoch, one step after a checkpoint. LoRA dropout makes the RNG state matter too; with
    # augment, each row's crop must be drawn again as the uninterrupted run drew it.
    settings = dict(max_steps=6, save_every=2, grad_accum=2, save_final=False, max_eval_samples=4, log_every=1,
                    augment=augment)
    straight = train(tiny_config(data, tmp_path / "straight", **settings))
    assert straight.steps == 6 and straight.resumed_from is None

    out = tmp_path / "killed"
    train_killed_after(tiny_config(data, out, **settings), 3)
    assert latest_checkpoint(out).name == "step-00000002"

    resumed = train(tiny_config(data, out, resume=True, **settings))
    assert resumed.resumed_from == 2 and resumed.steps == 6
    assert resumed.samples_seen == straight.samples_seen

    expected, got = checkpoint_weights(tmp_path / "straight", 6), checkpoint_weights(out, 6)
    assert expected.keys() == got.keys() and len(expected) > 10
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, different[:5]
    # The comparison means something: the weights moved between the checkpoint and the end.
    start = checkpoint_weights(tmp_path / "straight", 4)
    assert any(not torch.equal(start[n], expected[n]) for n in expected)
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)

    # The run folder's log reads as one run: the killed run's step 3 was dropped and logged again.
    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    def log(run):
        return [json.loads(line, parse_constant=strict) for line in (run / "train_log.jsonl").read_text().splitlines()]

    straight_log, resumed_log = log(tmp_path / "straight"), log(out)
    train_steps = [r["step"] for r in resumed_log if "train/loss" in r]
    assert train_steps == [r["step"] for r in straight_log if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight_log, resumed_log):
        assert a.get("train/loss") == pytest.approx(b.get("train/loss"), abs=1e-6)
    assert [r["step"] for r in resumed_log if "eval/parse_rate" in r] == [6]


def test_resume_refuses_other_settings(tmp_path):
    data = dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    train(tiny_config(data, tmp_path / "run", max_steps=1, save_final=False, max_eval_samples=2))
    with pytest.raises(FinetuneError, match=r"used different settings: lr=None \(now 0.5\)"):
        train(tiny_config(data, tmp_path / "run", max_steps=1, resume=True, lr=0.5))
    # Another image budget changes what the batches hold: not the run it was.
    with pytest.raises(FinetuneError, match=r"used different settings: max_image_tokens=None \(now 100\)"):
        train(tiny_config(data, tmp_path / "run", max_steps=1, resume=True, max_image_tokens=100))


def test_resume_accepts_the_same_dataset_by_another_path(tmp_path, monkeypatch):
    data = dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    train(tiny_config(data, tmp_path / "run", max_steps=1, save_final=False, max_eval_samples=2))
    monkeypatch.chdir(tmp_path)
    resumed = train(tiny_config("data", tmp_path / "run", max_steps=1, resume=True, save_final=False,
                                max_eval_samples=2))
    assert resumed.resumed_from == 1 and resumed.steps == 1

"""Every model family resumes exactly and exports: issue #20's last two promises, for the tiny random
models of tests/test_families.py and tests/test_families_more.py (their builders, real classes and
processors).

For each family, one LoRA run (the fast preset, the vision side trained in full, LoRA dropout on so
that the RNG state matters) trains four steps uninterrupted; the same run is stopped after step 3 (as
Ctrl-C would, one step after its step-2 checkpoint) and resumed with ``--resume``. With six training
rows in batches of two, the checkpoint lands mid-epoch and the resumed steps cross into the next
epoch. The resumed run must end with exactly the trainable weights (LoRA, tower and projector) of the
uninterrupted one, and log the same losses.

The uninterrupted run's adapter is then exported in float32 (``export_run``). The merged folder,
loaded into a fresh object of the class run-finetune loads the family with (``AutoModelForImageTextToText``,
Mllama included; ``AutoModelForCausalLM`` for Phi-4-multimodal, which transformers files as a causal LM
only), gives the run's greedy answers (its predictions.jsonl) exactly, and the logits of the trained
model rebuilt from the run's last checkpoint (base model, LoRA and trainable weights) to 1e-5.

The three runs of a family are built once for the module and shared by its two tests.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from _ft_fixtures import checkpoint_weights, tiny_config, train_killed_after

torch = pytest.importorskip("torch")

import test_families as first  # noqa: E402
import test_families_more as more  # noqa: E402
from test_export import MAX_NEW, _answers  # noqa: E402
from test_families import built_models, isolated, mixed_dataset  # noqa: E402,F401 - isolated: a fixture

from finetune.export import PEFT_MARKS, export_run  # noqa: E402

BUILDERS: dict[str, Callable[[Path], Path]] = {**first.BUILDERS, **more.BUILDERS}
FAMILIES = tuple(BUILDERS)
STEPS, SAVE_EVERY, KILLED_AFTER = 4, 2, 3
# Families that transformers' image-text-to-text auto class does not map: loaded as run-finetune loads them.
CAUSAL_LM = {"phi4-multimodal"}

built = built_models(BUILDERS)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: models this tiny gain nothing from a second one, whose
    waits halve the speed on a busy two-core machine (measured: 30 s against 67 s). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Six training rows (three batches of two an epoch), four test rows; images of 40 and 64 px."""
    return mixed_dataset(tmp_path_factory.mktemp("resume-export") / "data", n_train=6, n_test=4)


def _settings(**overrides) -> dict:
    # The fast preset, as test_families trains LoRA (its levers turn themselves off where they cannot
    # apply), with LoRA dropout kept on (it suggests none) so that a resumed run must restore the RNG.
    settings = dict(method="lora", preset="fast", batch_size=2, max_steps=STEPS, save_every=SAVE_EVERY, lr=2e-2,
                    lora_dropout=0.05, train_vision=True, max_eval_samples=4, max_new_tokens=MAX_NEW)
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def runs(built, data, tmp_path_factory):
    """A family's uninterrupted run (finished, with final/adapter and predictions.jsonl), and the same
    run stopped after step 3 and resumed (its result), built once for the module. They train when a
    test first asks, inside it: test_families' ``isolated`` keeps the datasets cache in its folder."""
    from finetune.train import latest_checkpoint, train

    root, done = tmp_path_factory.mktemp("runs"), {}

    def get(family: str):
        if family not in done:
            model, work = str(built(family)), root / family
            straight = train(tiny_config(data, work / "straight", model=model, **_settings()))
            # The stopped and resumed run evaluates one row and saves no final model: only its
            # checkpoints are compared (neither setting is one --resume must match).
            quick = _settings(max_eval_samples=1, save_final=False)
            train_killed_after(tiny_config(data, work / "resumed", model=model, **quick), KILLED_AFTER)
            assert latest_checkpoint(work / "resumed").name == f"step-{SAVE_EVERY:08d}"
            resumed = train(tiny_config(data, work / "resumed", model=model, resume=True, **quick))
            done[family] = (straight, resumed)
        return done[family]

    return get


def _train_losses(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [(line["step"], line["train/loss"]) for line in lines if "train/loss" in line]


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_after_a_kill_gives_the_same_weights(family, runs):
    straight, resumed = runs(family)
    assert straight.steps == resumed.steps == STEPS and straight.resumed_from is None
    assert resumed.resumed_from == SAVE_EVERY and resumed.samples_seen == straight.samples_seen

    expected, got = checkpoint_weights(straight.out, STEPS), checkpoint_weights(resumed.out, STEPS)
    assert expected.keys() == got.keys()
    # What trained: LoRA on the decoder, and the vision side in full (peft's modules_to_save).
    assert any("lora_B" in k for k in expected) and any("modules_to_save" in k for k in expected), list(expected)[:5]
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, different[:5]
    # The comparison means something: the weights moved between the checkpoint resumed from and the end.
    start = checkpoint_weights(straight.out, SAVE_EVERY)
    assert any(not torch.equal(start[n], expected[n]) for n in expected)
    # The resumed run's log reads as the uninterrupted one's: the stopped run's step 3 logged again.
    want, have = _train_losses(straight.out), _train_losses(resumed.out)
    assert [s for s, _ in have] == [s for s, _ in want] == list(range(1, STEPS + 1))
    assert [loss for _, loss in have] == pytest.approx([loss for _, loss in want], abs=1e-6)


def _reloaded_answers(folder: Path, data: Path, causal_lm: bool) -> tuple[object, dict[int, str]]:
    """A fresh model of ``folder`` (the family's auto class) and its greedy answers on the run's test rows
    (tests/test_export.py's ``_reloaded_answers``, with the class run-finetune loads the family with)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from finetune.config import DEFAULT_QUESTION
    from finetune.data import build_prompt, load_splits
    from finetune.evaluate import generate_texts
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(folder))    # the processor as run-finetune loads one
    auto = AutoModelForCausalLM if causal_lm else AutoModelForImageTextToText
    loaded.model = auto.from_pretrained(str(folder))
    test = load_splits(str(data))["test"].select(range(4))
    texts = generate_texts(loaded.model, loaded, test, build_prompt(loaded, DEFAULT_QUESTION), batch_size=4,
                           max_new_tokens=MAX_NEW, device=torch.device("cpu"))
    return loaded.model, texts


def _logits(model, loaded, data: Path) -> torch.Tensor:
    """``model``'s logits on the first four test rows with their answers (a training batch, no dropout)."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, RowsDataset, build_prompt, load_splits, model_inputs

    rows = RowsDataset(load_splits(str(data))["test"]).__getitems__([0, 1, 2, 3])
    batch = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token)(rows)
    with torch.no_grad():
        logits = model.eval()(**model_inputs(batch)).logits
    return logits[batch["attention_mask"].bool()]


def _trained_model(model_dir: Path, data: Path, run: Path):
    """The run's model as training left it, rebuilt without final/ or the export: the base model, LoRA
    put on as the run put it, and the last checkpoint's trainable weights (LoRA, tower, projector)."""
    from finetune.distributed import load_trainable_state
    from finetune.models import load_pretrained
    from finetune.train import prepare_model

    loaded = load_pretrained(str(model_dir))
    model = prepare_model(loaded, tiny_config(data, run, model=str(model_dir), **_settings()))
    load_trainable_state(model, checkpoint_weights(run, STEPS))
    return model, loaded


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_export_answers_as_the_adapter_run(family, runs, built, data, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    straight, _ = runs(family)
    assert (straight.out / "final" / "adapter" / "adapter_config.json").is_file()
    result = export_run(straight.out, tmp_path / "f32", dtype="float32")
    report = result.report
    assert report.lora_layers > 0 and report.lora_layers_changed == report.lora_layers, report
    assert report.trained_in_full, report   # the vision side, taken as trained
    weights = load_file(str(result.out / "model.safetensors"))
    assert not [k for k in weights if any(mark in k for mark in PEFT_MARKS)]

    model, texts = _reloaded_answers(result.out, data, family in CAUSAL_LM)
    base_class = AutoConfig.from_pretrained(str(built(family))).architectures[0]
    assert type(model).__name__ == base_class and not hasattr(model, "peft_config")
    assert next(model.parameters()).dtype == torch.float32
    assert len(texts) == 4 and texts == _answers(straight.out), (texts, _answers(straight.out))
    # Beyond greedy text (a few random steps often make it one token repeated): the export computes what
    # the trained model computes, every logit of prompts and answers.
    trained, loaded = _trained_model(built(family), data, straight.out)
    want, got = _logits(trained, loaded, data), _logits(model, loaded, data)
    assert want.shape == got.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)   # measured: 2e-6 at most (the base: 0.6)

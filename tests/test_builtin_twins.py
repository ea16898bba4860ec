"""The built-in CPU twins (finetune/twins.py): random-weight models of the real Qwen2.5-VL, Gemma 3 and
SmolVLM (Idefics3) classes with their real processors, selected by name as ``tiny`` is, their tokenizer
trained on the dataset's text with the family's markers. Each trains a few steps with its default method,
evaluates, saves, and the saved folder reloads; ``run-finetune --list-models`` lists every built-in.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from _ft_fixtures import dataset_dir, tiny_config

torch = pytest.importorskip("torch")

TWIN_CLASSES = {
    "tiny-qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "tiny-gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor"),
    "tiny-smolvlm": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return dataset_dir(tmp_path_factory.mktemp("twins") / "data", n_train=16, n_test=4)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Datasets' cache goes to the test's folder, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.mark.parametrize("name", list(TWIN_CLASSES))
def test_twin_trains_evaluates_saves_and_reloads(name, data, tmp_path):
    from transformers import AutoModelForImageTextToText

    from finetune.models import load_pretrained
    from finetune.train import train

    model_class, processor_class = TWIN_CLASSES[name]
    out = tmp_path / "run"
    train(tiny_config(data, out, model=name, batch_size=4, max_steps=3, max_eval_samples=2, max_new_tokens=4))
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [line["train/loss"] for line in lines if "train/loss" in line]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and len(set(losses)) > 1, losses
    assert "parse_rate" in json.loads((out / "metrics.json").read_text())["model"]
    assert json.loads((out / "config.json").read_text())["method"] == "full"   # the twins' default

    model = AutoModelForImageTextToText.from_pretrained(str(out / "final"))
    assert type(model).__name__ == model_class
    loaded = load_pretrained(str(out / "final"))   # processor too (Qwen's without torchvision)
    assert type(loaded.processor).__name__ == processor_class
    image_id = loaded.tokenizer.convert_tokens_to_ids(loaded.tokenizer.image_token)
    assert image_id not in (None, loaded.tokenizer.unk_token_id)   # the family's markers are real tokens


def test_list_models_names_every_builtin(capsys):
    from finetune import cli
    from finetune.builtins import builtin_names

    assert cli.main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = {"tiny": ("FastVlmForConditionalGeneration", "16"), "phi3v-shape": ("LlavaForConditionalGeneration", "576"),
                **{name: (cls, "16") for name, (cls, _) in TWIN_CLASSES.items()}}
    assert set(expected) <= set(builtin_names())
    for name in builtin_names():
        row = next((line for line in lines if f" {name} " in line), None)
        assert row is not None, (name, lines)
        cells = [c.strip() for c in row.strip("│┃ ").split("│")]
        assert cells[0] == name and cells[2].replace(",", "").isdigit() and cells[3].isdigit(), cells
        if name in expected:
            assert (cells[1], cells[3]) == expected[name], cells

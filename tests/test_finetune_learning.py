"""Fine-tuning learns: ``run-finetune --model tiny`` on a catalogue made by the real generator reads the
category from the picture, well above the majority-category baseline of the same test rows.

The prompt is the same for every row, so whatever the model gets right beyond the baseline it read from
the image. The generator draws category3 as a silhouette with a random colour, material and pattern
(generator/render/); tests/test_signal.py shows category2 is recoverable from the pixels. The model
writes category3 after the title, and category2 is scored through the train split's category3 ->
category2 map, so both accuracies come from the same generated text; the assertion is on category2 (12
classes, the signal the generator guarantees) and, with a smaller margin, category3 (33 classes).

Settings measured on the 2-core CPU this suite targets (about 85 s of training). A random-init model
learns far faster with full fine-tuning than with LoRA over its frozen random decoder (LoRA, lr 2e-3:
+12 points on category2 after the same 1,600 steps). With full fine-tuning, category2 gains over the
majority baseline were +27 (lr 3e-4), +29 and +34 (5e-4, two seeds), +31 (7e-4), +21 to +24 (1e-3),
none at 2e-3; 1,200 steps at 7e-4 gave only +20. Seeds are fixed; what varies between machines is the
order of float sums across CPU threads.
"""
from __future__ import annotations

import json
import time

import pytest

from finetune import cli

ROWS = 3000          # 2,700 train / 300 test rows: accuracy's standard error is about 3 points
IMAGE_SIZE = 64      # the tiny model's input size: no resizing
STEPS = 1600         # about 9.5 epochs at batch 16
LR = 5e-4


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.mark.slow
def test_tiny_learns_the_category_from_generated_images(tmp_path, capsys, record_property):
    from generator.api import GenerateConfig, generate_to_dir

    data = generate_to_dir(GenerateConfig(rows=ROWS, seed=0, image_size=IMAGE_SIZE), tmp_path / "catalogue")
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code = cli.main(["--dataset", str(data), "--model", "tiny", "--method", "full", "--max-steps", str(STEPS),
                     "--batch-size", "16", "--lr", str(LR), "--seed", "0", "--save-every", "0", "--num-workers", "0",
                     "--no-wandb", "--out", str(out)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]

    metrics = json.loads((out / "metrics.json").read_text())
    model, majority = metrics["model"], metrics["baselines"]["majority_category"]
    config = json.loads((out / "config.json").read_text())
    assert config["question"] == "What is shown in this image?"          # one prompt for every row
    summary = {
        "category2_accuracy": model["category2_accuracy"], "category2_majority": majority["category2_accuracy"],
        "category3_accuracy": model["category3_accuracy"], "category3_majority": majority["category3_accuracy"],
        "parse_rate": model["parse_rate"], "n_test": metrics["n_test"], "seconds": round(seconds, 1),
        "train_seconds": round(metrics["train"]["samples"] / metrics["train"]["samples_per_s"], 1),
    }
    for key, value in summary.items():
        record_property(key, value)
    print(json.dumps(summary))

    assert metrics["n_test"] == ROWS // 10 and model["parse_rate"] > 0.95, summary
    assert model["category2_accuracy"] >= majority["category2_accuracy"] + 0.20, summary
    assert model["category3_accuracy"] >= majority["category3_accuracy"] + 0.15, summary

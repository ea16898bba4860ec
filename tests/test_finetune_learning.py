"""Fine-tuning learns: plain ``run-finetune`` (the default model, method, lr) on a catalogue made by the
real generator reads the category from the picture, far above the majority-category baseline.

The prompt is the same for every row, so whatever the model gets right beyond the baseline it read from
the image. The generator draws category3 as a silhouette with a random colour, material and pattern
(generator/render/); generator/limits/ says a perfect reader scores category3 98-99 %, category2 100 %.

Budget: 6 epochs instead of the default's 18 (the default 36-pass vision warm-up included: about 160 s
on this suite's 2-core CPU). Measured with these settings on a 3,000-row catalogue (seed 0, the renderer
of 2026-12-05): category3 92.3 %, category2 96.3 %, parse rate 100 %, price MAPE 43.5 % (greedy prices
58.4 %, the category-median baseline 52.9 %, the limit 18.9 %); the plain default run on the 3,040-row
catalogue reaches 93.1 % / 97.7 % / 24.6 % (README), and the accuracy benchmark asserts the issue's price
target (1.3x the limit) at that full budget: a third of it does not reach it. Before the warm-up, these settings gave 49.7 % / 60.9 % (seed-21 catalogue),
and the former Llava tiny (CLIP tower, now tiny-llava) 21 % / 30 %. Seeds are fixed; what varies between
machines is the order of float sums.
"""
from __future__ import annotations

import json
import time

import pytest

from finetune import cli

ROWS = 3000          # 2,700 train / 300 test rows: accuracy's standard error is about 3 points
IMAGE_SIZE = 64      # the tiny model's input size: no resizing
EPOCHS = 6


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
    code = cli.main(["--dataset", str(data), "--epochs", str(EPOCHS), "--seed", "0", "--save-every", "0",
                     "--num-workers", "0", "--no-wandb", "--out", str(out)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]

    metrics = json.loads((out / "metrics.json").read_text())
    model, majority = metrics["model"], metrics["baselines"]["majority_category"]
    config = json.loads((out / "config.json").read_text())
    assert config["question"] == "What is shown in this image?"          # one prompt for every row
    assert (config["model"], config["method"]) == ("tiny", "full")
    summary = {
        "category2_accuracy": model["category2_accuracy"], "category2_majority": majority["category2_accuracy"],
        "category3_accuracy": model["category3_accuracy"], "category3_majority": majority["category3_accuracy"],
        "parse_rate": model["parse_rate"], "n_test": metrics["n_test"], "seconds": round(seconds, 1),
        "train_seconds": round(metrics["train"]["samples"] / metrics["train"]["samples_per_s"], 1),
        "price_mape": model["price_mape_all"], "price_mape_greedy": model.get("price_mape_greedy"),
        "price_mape_limit": metrics["limits"]["price_mape"],
        "price_mape_category_median": metrics["baselines"]["category_median_price"]["price_mape_all"],
    }
    for key, value in summary.items():
        record_property(key, value)
    print(json.dumps(summary))

    assert metrics["n_test"] == ROWS // 10 and model["parse_rate"] >= 0.99, summary
    # Issue 18's targets for the plain run, reached here on a third of its budget.
    assert model["category3_accuracy"] >= 0.85, summary
    assert model["category2_accuracy"] >= 0.95, summary
    # The price: read from the picture beyond its category, and the least-expected-error answer beats greedy.
    assert summary["price_mape"] < summary["price_mape_category_median"], summary
    assert summary["price_mape"] < summary["price_mape_greedy"], summary


TWIN_ROWS = 3000     # 2,700 train / 300 test rows
TWIN_EPOCHS = 3


@pytest.fixture(scope="module")
def twin_catalogue(tmp_path_factory):
    from generator.api import GenerateConfig, generate_to_dir

    return generate_to_dir(GenerateConfig(rows=TWIN_ROWS, seed=0, image_size=IMAGE_SIZE),
                           tmp_path_factory.mktemp("twins") / "catalogue")


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["tiny-gemma3", "tiny-smolvlm", "tiny-qwen2.5-vl"])
def test_each_twin_learns_the_category(twin, twin_catalogue, tmp_path, capsys, record_property):
    """The families' CPU twins (random ViT towers, their own classes and processors) read category2 far
    above the majority baseline with their defaults (vision warm-up included), on a smaller budget than
    the plain run's (README: the default run on the 3,040-row catalogue, under 5 minutes each)."""
    out = tmp_path / "run"
    code = cli.main(["--model", twin, "--dataset", str(twin_catalogue), "--epochs", str(TWIN_EPOCHS), "--seed", "0",
                     "--save-every", "0", "--num-workers", "0", "--no-wandb", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    model, majority = metrics["model"], metrics["baselines"]["majority_category"]
    summary = {k: model[k] for k in ("category2_accuracy", "category3_accuracy", "parse_rate")}
    summary["category2_majority"] = majority["category2_accuracy"]
    for key, value in summary.items():
        record_property(key, value)
    print(twin, json.dumps(summary))
    assert model["parse_rate"] >= 0.95, summary
    # Measured here (3,000 rows, 3 epochs): category2 29 % (smolvlm), 37 % (qwen2.5-vl) against 18 %
    # majority: 5 and 8 standard errors above it; the default run on 3,040 rows: 45-66 % (README).
    assert model["category2_accuracy"] >= majority["category2_accuracy"] + 0.08, summary

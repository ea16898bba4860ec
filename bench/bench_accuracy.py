"""Accuracy vs training time: short fine-tunes of ``tiny`` on one fixed generated dataset.

Each point is a whole ``finetune.train.train`` run for a number of epochs (the Scale's
``accuracy_epochs``; a run per value, each with its own warm-up and cosine schedule, as a user who
picks that budget gets), then the evaluation on the test split: category accuracy, parse rate,
price MAE and title F1 beside the majority-category and median-price baselines of the same rows.
``train_seconds`` is the loop's own time (optimizer steps, data included; evaluation and saving left
out) plus the vision warm-up before it, ``wall_s`` the whole call. The dataset (``accuracy_dir``) is generated with seed 0, so runs on
different machines see the same rows.
"""
from __future__ import annotations

import io
import time

import pytest

from bench import measure
from bench.conftest import scale_of

MODEL = "tiny"


def pytest_generate_tests(metafunc):
    # The epochs depend on the mode (measure or smoke), known once the session is configured.
    if "epochs" in metafunc.fixturenames:
        epochs = scale_of(metafunc.config).accuracy_epochs
        metafunc.parametrize("epochs", epochs, ids=[f"epochs{e:g}" for e in epochs])


@pytest.mark.benchmark(group="accuracy")
def test_accuracy(benchmark, epochs, accuracy_dir, workdir, scale):
    from rich.console import Console

    from finetune.config import FinetuneConfig
    from finetune.train import train

    config = FinetuneConfig(dataset=str(accuracy_dir), model=MODEL, epochs=epochs, no_wandb=True, save_every=0,
                            save_final=False, max_eval_samples=scale.accuracy_eval_rows,
                            max_new_tokens=scale.max_new_tokens, device="cpu", seed=0).validate()
    runs: list = []

    def one_run() -> int:
        out = workdir / f"accuracy-{epochs:g}-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        result = train(FinetuneConfig(**{**config.to_dict(), "out": str(out)}),
                       console=Console(file=io.StringIO(), width=120))
        runs.append((result, time.perf_counter() - t0))
        return result.samples_seen

    # One round: a run is minutes long and has its own warm-up steps; repeating it would only repeat them.
    measure.run_rounds(benchmark, one_run, rounds=1, warmup_rounds=0)
    result, wall = runs[-1]
    m, b = result.metrics["model"], result.metrics["baselines"]
    figures = {
        "epochs": epochs, "steps": result.steps, "samples_seen": result.samples_seen,
        "train_seconds": result.train_seconds + result.metrics["train"]["vision_warmup_seconds"],
        "vision_warmup_seconds": result.metrics["train"]["vision_warmup_seconds"], "wall_s": wall, "samples_per_s": result.samples_per_second,
        "final_loss": result.final_loss, "n_test": result.metrics["n_test"],
        "category3_accuracy": m["category3_accuracy"], "category2_accuracy": m["category2_accuracy"],
        "parse_rate": m["parse_rate"], "price_mae": _finite(m["price_mae"]), "price_mae_all": m["price_mae_all"],
        "price_mape_all": m["price_mape_all"], "price_mape_greedy": m.get("price_mape_greedy"),
        "title_token_f1": m["title_token_f1"],
        "title_exact_match": m["title_exact_match"],
        "baseline_category3_accuracy": b["majority_category"]["category3_accuracy"],
        "baseline_category2_accuracy": b["majority_category"]["category2_accuracy"],
        "baseline_price_mae": b["median_price"]["price_mae_all"],
        "baseline_category_median_price_mae": b["category_median_price"]["price_mae_all"],
        # What a perfect reader of these images could score (the dataset's limits.json), and how much of it
        # the run reached: the line the accuracy plot is read against.
        "limit_category3_accuracy": result.metrics.get("limits", {}).get("category3_accuracy"),
        "limit_category2_accuracy": result.metrics.get("limits", {}).get("category2_accuracy"),
        "limit_price_mape": result.metrics.get("limits", {}).get("price_mape"),
        "fraction_of_limit_category3": result.metrics.get("fraction_of_limit", {}).get("category3_accuracy"),
        "dataset_rows": scale.accuracy_rows, "image_size": 336, "batch_size": config.batch_size,
        "method": config.method, "lr": config.lr,
        "num_workers": _loader_workers(config), "max_new_tokens": config.max_new_tokens, "model": MODEL,
        "peak_memory_gib": round(result.peak_memory_gib, 3) if result.peak_memory_gib is not None else None,
        "memory_kind": "process_max_rss (whole session so far)",
    }
    comparisons = [
        measure.compare("category3 accuracy", m["category3_accuracy"], "", "majority category",
                        figures["baseline_category3_accuracy"]),
        measure.compare("price MAE (all rows)", m["price_mae_all"], "", "median price",
                        figures["baseline_price_mae"], higher_is_better=False),
    ]
    measure.record(benchmark, kind="accuracy", series=f"{MODEL} {config.method}", device="cpu",
                   headline_=measure.headline("category3 accuracy", m["category3_accuracy"], ""),
                   comparisons=comparisons, **figures)
    assert result.steps > 0 and 0 <= m["category3_accuracy"] <= 1
    if scale.measuring and epochs == config_default_epochs():
        # Issue 18's targets at the default budget (plain run-finetune), the price's against the limit the
        # dataset's card states (the run's metrics hold it in the model's units: a percentage, like the MAPE).
        assert m["category3_accuracy"] >= 0.85 and m["category2_accuracy"] >= 0.95 and m["parse_rate"] >= 0.99, m
        assert m["price_mape_all"] <= 1.3 * figures["limit_price_mape"], (m["price_mape_all"], figures)


def config_default_epochs() -> float:
    from finetune.builtins import default_epochs

    return default_epochs(MODEL)


def _loader_workers(config) -> int | None:
    # num_workers=None means "what this machine can feed" where the config can resolve it.
    resolve = getattr(config, "loader_workers", None)
    return resolve(False) if resolve is not None else config.num_workers


def _finite(value):
    # NaN (no answer parsed) is not valid JSON; None says the same.
    return None if value is None or value != value else value

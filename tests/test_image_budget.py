"""The image-size budget (finetune/image_budget.py): ``--max-image-tokens`` caps the image tokens of
dynamic-resolution families (counted in collated batches), batches grouped by image tokens pad less,
and the memory pre-flight's estimate and its one-line refusal.

Tiny random models of the real classes (tests/test_families.py's builders); the Qwen2-VL one sees
images from 28 to 112 px, 1 to 16 tokens, so a cap and the grouping both have something to do.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rich.console import Console

import finetune.image_budget as budget
from _ft_fixtures import make_rows, tiny_config, train_killed_after
from finetune import cli
from finetune.cli import parse_config
from finetune.config import FinetuneConfig, load_config
from finetune.data import (Collator, LengthGroupedBatchSampler, RowsDataset, answer_lengths, build_prompt,
                           load_splits)
from finetune.errors import FinetuneError
from finetune.image_budget import (ACTIVATION_VALUES, DROPOUT_VALUES, LOGIT_BYTES, MemoryEstimate,
                                   apply_max_image_tokens, bucket_lengths, check_memory, estimate_peak_memory,
                                   image_token_counts, memory_hint)
from finetune.models import load_pretrained
from generator.schema import features

GIB = 2**30
SIZES = (28, 56, 84, 112)   # Qwen2-VL at max_pixels 112 * 112: 1, 4, 9 and 16 image tokens


# --------------------------------------------------------------------------------------------
# The estimator: numbers in, bytes out (no torch)


def _estimate(**overrides) -> MemoryEstimate:
    # phi3v-shape's decoder (3072 hidden, 32 layers, 32,064 tokens), 8 rows of 640 tokens, bf16, LoRA
    settings = dict(weight_bytes=8 * GIB, trainable_bytes=50 * 2**20, rows=8, width=640, hidden=3072, layers=32,
                    value_bytes=2, vocab=32064, logit_positions=8 * 30)
    settings.update(overrides)
    return estimate_peak_memory(**settings)


def test_the_estimate_adds_weights_state_activations_and_logits():
    e = _estimate()
    assert e.weights == 8 * GIB
    assert (e.optimizer, e.gradients) == (2 * 50 * 2**20, 50 * 2**20)     # AdamW's two moments, the gradients
    assert e.activations == 8 * 640 * 3072 * 2 * 32 * ACTIVATION_VALUES
    assert e.logits == 8 * 30 * 32064 * LOGIT_BYTES
    # One micro-batch: its gradients grow as backward frees its activations; the peak holds the larger.
    assert e.total == e.weights + e.optimizer + e.activations + e.logits
    assert 24 * GIB < e.total < 24.2 * GIB              # 8 GiB of weights, 15.9 GiB of activations
    accumulating = _estimate(accumulating=True)          # --grad-accum: earlier gradients stay beside them
    assert accumulating.total == e.total + e.gradients
    full = _estimate(trainable_bytes=8 * GIB, rows=1)    # full fine-tuning: gradients outweigh one row's activations
    assert full.total == 8 * GIB + 16 * GIB + 8 * GIB


def test_the_estimate_follows_each_setting():
    base = _estimate()
    assert _estimate(rows=4).activations == base.activations // 2
    assert _estimate(width=1280).activations == 2 * base.activations
    assert _estimate(value_bytes=4).activations == 2 * base.activations
    checkpointed = _estimate(checkpointing=True)          # each layer's input, one layer's activations
    assert checkpointed.activations == 8 * 640 * 3072 * 2 * (32 + ACTIVATION_VALUES)
    assert checkpointed.activations < base.activations / 10
    assert _estimate(activation_budget=0.5).activations == base.activations // 2
    dropout = _estimate(lora_dropout=True)               # a masked copy of each adapted layer's input
    assert dropout.activations == base.activations * (ACTIVATION_VALUES + DROPOUT_VALUES) // ACTIVATION_VALUES
    sharded = _estimate(shards=4, trainable_bytes=8 * GIB)   # FSDP: a quarter of weights and state each
    assert (sharded.weights, sharded.optimizer, sharded.gradients) == (2 * GIB, 4 * GIB, 2 * GIB)


def test_check_memory_passes_what_fits_and_names_what_to_lower():
    cfg = FinetuneConfig(dataset="d", model="x", method="lora").validate()
    e = _estimate()
    check_memory(e, e.total, cfg=cfg, images_vary=True, where="cuda:0", rows=8, width=640)   # fits exactly
    with pytest.raises(FinetuneError) as err:
        check_memory(e, 20 * GIB, cfg=cfg, images_vary=True, where="cuda:0", rows=8, width=640)
    said = str(err.value)
    assert "\n" not in said and err.value.exit_code == 1
    assert "estimated peak is 24.1 GiB" in said and "cuda:0 has 20.0 GiB free" in said and "8 rows of up to 640" in said
    for setting in ("--batch-size", "--grad-accum", "--max-image-tokens", "--gradient-checkpointing",
                    "--preset low-memory"):
        assert setting in said, setting
    assert said.endswith(memory_hint(cfg, True))   # the run-time OOM error's words
    fixed = str(pytest.raises(FinetuneError, check_memory, e, 20 * GIB, cfg=cfg, images_vary=False,
                              where="cuda:0", rows=8, width=640).value)
    assert "--max-image-tokens" not in fixed       # nothing to lower for a fixed-size family


def test_check_memory_says_when_the_weights_alone_do_not_fit():
    full = FinetuneConfig(dataset="d", model="x", method="full").validate()
    e = _estimate(trainable_bytes=8 * GIB)               # full fine-tuning: 8 + 24 GiB before activations
    said = str(pytest.raises(FinetuneError, check_memory, e, 30 * GIB, cfg=full, images_vary=False,
                             where="cuda:0", rows=8, width=640).value)
    assert "--method lora" in said and "--batch-size" not in said


# --------------------------------------------------------------------------------------------
# The setting: typed, validated, from flags and files


def test_max_image_tokens_is_a_positive_whole_number(tmp_path):
    assert FinetuneConfig(dataset="d", max_image_tokens=64).validate().max_image_tokens == 64
    for bad in (0, -3):
        said = str(pytest.raises(FinetuneError, FinetuneConfig(dataset="d", max_image_tokens=bad).validate).value)
        assert "--max-image-tokens must be at least 1" in said and "\n" not in said
    said = str(pytest.raises(FinetuneError, FinetuneConfig(dataset="d", max_image_tokens="64").validate).value)
    assert "max_image_tokens must be a whole number or null, not str '64'" in said
    path = tmp_path / "run.toml"
    path.write_text("[finetune]\nmax-image-tokens = 256\n")
    assert load_config(path).max_image_tokens == 256
    assert parse_config(["--config", str(path), "--max-image-tokens", "32"]).max_image_tokens == 32
    with pytest.raises(SystemExit):
        parse_config(["--max-image-tokens", "0"])


def test_the_flag_refuses_zero_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--max-image-tokens", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--max-image-tokens must be a whole number >= 1" in err[0]


# --------------------------------------------------------------------------------------------
# Models and data (torch from here on)


def _sized_dataset(out: Path, n_train: int, n_test: int, sizes=SIZES) -> Path:
    """A gen-samples-shaped folder whose images cycle through ``sizes`` (px squares), row by row."""
    import datasets

    pools = {s: make_rows(n_train + n_test, seed=s, image_size=s) for s in sizes}
    rows = [pools[sizes[(i * 7 + i // len(sizes)) % len(sizes)]][i] for i in range(n_train + n_test)]
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        datasets.Dataset.from_list(part, features=features()).to_parquet(
            str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _sized_dataset(tmp_path_factory.mktemp("budget") / "data", n_train=32, n_test=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A family's tiny model folder, built once for the module; Qwen2-VL up to 112 * 112 pixels."""
    pytest.importorskip("torch")
    import test_families as fam

    root, done = tmp_path_factory.mktemp("budget-models"), {}

    def get(family: str) -> Path:
        if family not in done:
            path = fam.BUILDERS[family](root / family)
            if family == "qwen2-vl":   # the builder's 56 px maximum gives 1 or 4 tokens; here up to 16
                processor = load_pretrained(str(path)).processor
                processor.image_processor.size = {"shortest_edge": 28 * 28, "longest_edge": 112 * 112}
                processor.save_pretrained(str(path))
            done[family] = path
        return done[family]

    return get


def _quiet():

    return Console(file=io.StringIO(), width=300)


def _recipe(data: Path, out: Path, model: Path, **settings):
    """A set-up recipe (nothing trained) and what it said."""
    from finetune.recipe import Recipe

    console = _quiet()
    recipe = Recipe(tiny_config(data, out, model=str(model), device="cpu", **settings), console)
    recipe.setup()
    return recipe, " ".join(console.file.getvalue().split())


def _image_tokens(recipe, batches: int) -> list[int]:
    """Image tokens of every row of the next ``batches`` training batches, as the model sees them."""
    token_id = recipe.loaded.processor.image_token_id
    counts = []
    for _ in range(batches):
        for batch in recipe.next_micro_batches():
            counts += (batch["input_ids"] == token_id).sum(dim=1).tolist()
    return counts


@pytest.mark.parametrize("family, limit, most", [("qwen2-vl", 4, 16), ("llava-next", 14, 24)])
def test_max_image_tokens_caps_the_tokens_of_every_image(family, limit, most, data, models, tmp_path):
    """Without the flag some image takes ``most`` tokens; with it none takes more than ``limit``, in the
    batches training sees and in evaluation's prompts, and the model still runs on them."""
    import torch

    from finetune.loss import compute_loss, with_host_indices

    plain, _ = _recipe(data, tmp_path / "plain", models(family), batch_size=8)
    before = _image_tokens(plain, 4)
    plain.close()
    capped, said = _recipe(data, tmp_path / "capped", models(family), batch_size=8, max_image_tokens=limit)
    after = _image_tokens(capped, 4)
    assert max(before) == most and len(before) == len(after) == 32
    assert max(after) <= limit < most, after
    assert f"--max-image-tokens {limit}:" in said
    # Evaluation's collator (left-padded prompts) uses the same processor.
    evaluation = Collator(capped.loaded.processor, capped.prompt, capped.loaded.end_token, train=False)
    batch = evaluation(RowsDataset(capped.splits["test"]).__getitems__(list(range(4))))
    assert int((batch["input_ids"] == capped.loaded.processor.image_token_id).sum(dim=1).max()) <= limit
    with torch.no_grad():   # LLaVA-NeXT's model picks its grids from its config: it must agree
        train_batch = capped.next_micro_batches()[0]
        assert torch.isfinite(compute_loss(capped.model, with_host_indices(train_batch)).loss)
    capped.close()


def test_each_dynamic_family_lowers_its_own_setting(models):
    from PIL import Image


    qwen = load_pretrained(str(models("qwen2-vl")))
    said = apply_max_image_tokens(qwen, "<|image_pad|>", 9)
    assert qwen.processor.image_processor.size["longest_edge"] == 9 * 28 * 28
    assert "max_pixels 12544 -> 7056 (up to 9 tokens an image, were 16" in said
    assert "unchanged" in apply_max_image_tokens(qwen, "<|image_pad|>", 100)

    next_ = load_pretrained(str(models("llava-next")))
    apply_max_image_tokens(next_, "<image>", 14)
    assert next_.processor.image_processor.image_grid_pinpoints == [[28, 28], [28, 56]]
    assert next_.model.config.image_grid_pinpoints == [[28, 28], [28, 56]]
    said = str(pytest.raises(FinetuneError, apply_max_image_tokens, next_, "<image>", 9).value)
    assert "below the 10 tokens of LLaVA-NeXT's smallest anyres grid ([28, 28])" in said

    idefics = load_pretrained(str(models("idefics3")))   # 4 tokens a 28 px crop, a 56 px grid: 2 x 2 + 1 crops
    assert "longest_edge 56 -> 28 px (up to 4 tokens an image, were 20)" in apply_max_image_tokens(idefics, "<image>", 19)
    ids = idefics.processor(text=["<image>"], images=[Image.new("RGB", (64, 64))])["input_ids"][0]
    assert sum(1 for i in ids if i == idefics.processor.image_token_id) == 4
    said = str(pytest.raises(FinetuneError, apply_max_image_tokens, idefics, "<image>", 3).value)
    assert "below the 4 tokens one 28 px crop takes" in said


def test_a_fixed_size_family_says_why_the_flag_does_not_apply(models, tmp_path):

    llava = load_pretrained(str(models("llava")))
    prompt = build_prompt(llava, "?")
    said = apply_max_image_tokens(llava, prompt, 64)
    assert "does not apply" in said and "every image takes 4 tokens" in said and "one size" in said
    said = str(pytest.raises(FinetuneError, apply_max_image_tokens, llava, prompt, 3).value)
    assert "--max-image-tokens 3 is below the 4 image tokens every image takes" in said and "at least 4" in said


def test_a_built_in_refuses_a_budget_below_its_count_in_one_line(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--dataset", str(data), "--model", "tiny", "--out", str(tmp_path / "run"), "--no-wandb",
                  "--max-steps", "1", "--num-workers", "0", "--max-image-tokens", "8"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run-finetune:")]
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "--max-image-tokens 8 is below the 16 image tokens every image takes in tiny (fast_vlm)" in err[0]


# --------------------------------------------------------------------------------------------
# Batches grouped by image tokens


def _padding(recipe, batches: list[list[int]]) -> tuple[int, int]:
    """(padded positions, real positions) of these training batches as the collator makes them."""
    loaded = recipe.loaded
    collator = Collator(loaded.processor, recipe.prompt, loaded.end_token, train=True)
    rows = RowsDataset(recipe.splits["train"])
    padded = real = 0
    for batch in batches:
        mask = collator(rows.__getitems__(batch))["attention_mask"]
        padded, real = padded + int((mask == 0).sum()), real + int(mask.sum())
    return padded, real


def test_grouping_by_image_tokens_pads_less(data, models, tmp_path):
    """The same rows, batched by answer length alone and by answer and image tokens: the second pads
    less; both orders depend only on (seed, epoch), and every process gets as many batches."""
    from finetune.distributed import Dist, RankSlice

    recipe, said = _recipe(data, tmp_path / "run", models("qwen2-vl"), batch_size=4)
    loaded, train = recipe.loaded, recipe.splits["train"]
    answers = answer_lengths(train, loaded.tokenizer, loaded.end_token)
    assert recipe.lengths != answers and "batches grouped by image tokens too: the training images take 1-16" in said
    before = LengthGroupedBatchSampler(answers, 4, seed=0).batches(0)
    after = LengthGroupedBatchSampler(recipe.lengths, 4, seed=0).batches(0)
    assert sorted(sum(before, [])) == sorted(sum(after, [])) == list(range(32))
    (pad_before, real), (pad_after, real_after) = _padding(recipe, before), _padding(recipe, after)
    assert real == real_after
    print(f"padded positions: {pad_before} by answer length, {pad_after} grouped by image tokens too "
          f"({real} real positions)")
    assert pad_after < pad_before / 2, (pad_before, pad_after)
    # Deterministic for a seed (a resumed run recomputes the order), and the same on every process.
    again, _ = bucket_lengths(answers, train, loaded.processor)
    assert again == recipe.lengths
    assert LengthGroupedBatchSampler(again, 4, seed=0).batches(0) == after
    sampler = LengthGroupedBatchSampler(recipe.lengths, 4, seed=0)
    slices = [list(RankSlice(sampler, Dist(rank=r, world=2))) for r in range(2)]
    assert len(slices[0]) == len(slices[1]) == len(after)
    recipe.close()


def test_a_fixed_size_family_keeps_its_order(data, models):
    """Nothing read and nothing changed where every image takes the same count (tiny-llava's golden
    losses in tests/test_finetune_recipe.py rely on it)."""
    llava = load_pretrained(str(models("llava")))
    train = load_splits(str(data))["train"]
    lengths = answer_lengths(train, llava.tokenizer, llava.end_token)
    assert image_token_counts(train, llava.processor) is None
    assert bucket_lengths(lengths, train, llava.processor, 64) == (lengths, [])


def test_a_row_too_wide_for_the_budget_is_said(tmp_path, models):
    """smart_resize keeps one 28 px square a side: a 1000 x 20 sliver takes 14 tokens under a budget of 4."""
    import datasets
    from PIL import Image

    rows = make_rows(6, seed=3)
    buf = io.BytesIO()
    Image.new("RGB", (1000, 20), (200, 0, 0)).save(buf, format="JPEG")
    rows[0]["image"] = {"bytes": buf.getvalue(), "path": None}
    (tmp_path / "d" / "data").mkdir(parents=True)
    for name, part in (("train", rows[:4]), ("test", rows[4:])):
        datasets.Dataset.from_list(part, features=features()).to_parquet(
            str(tmp_path / "d" / "data" / f"{name}-00000-of-00001.parquet"))
    qwen = load_pretrained(str(models("qwen2-vl")))
    train = load_splits(str(tmp_path / "d"))["train"]
    apply_max_image_tokens(qwen, "<|image_pad|>", 4)
    _, said = bucket_lengths([1] * len(train), train, qwen.processor, 4)
    assert said[-1].startswith("warning: 1 training image(s) still take more than --max-image-tokens 4 tokens "
                               "(up to 14)"), said


# --------------------------------------------------------------------------------------------
# Whole runs


def test_a_capped_run_trains_evaluates_and_saves_the_capped_processor(data, models, tmp_path):
    from finetune.train import train

    out = tmp_path / "run"
    result = train(tiny_config(data, out, model=str(models("qwen2-vl")), batch_size=4, max_steps=3, lr=1e-3,
                               max_eval_samples=2, max_new_tokens=4, max_image_tokens=4), console=_quiet())
    assert result.steps == 3 and result.final_loss is not None
    assert "parse_rate" in json.loads((out / "metrics.json").read_text())["model"]
    assert json.loads((out / "config.json").read_text())["max_image_tokens"] == 4
    saved = json.loads((out / "final" / "processor_config.json").read_text())["image_processor"]
    assert saved["size"]["longest_edge"] == 4 * 28 * 28   # inference with the saved processor sees what training saw


def test_a_run_that_cannot_fit_stops_before_its_first_step(data, models, tmp_path, monkeypatch):
    """The pre-flight on a device with too little free memory (faked: a CPU run has no limit to check):
    one line naming what to lower, exit code 1, no step taken."""
    from finetune.train import train

    monkeypatch.setattr(budget, "free_device_memory", lambda device, dist: 2**20)
    out = tmp_path / "run"
    with pytest.raises(FinetuneError) as err:
        train(tiny_config(data, out, model=str(models("qwen2-vl")), batch_size=4, max_steps=2), console=_quiet())
    said = str(err.value)
    assert err.value.exit_code == 1 and "\n" not in said
    assert "out of memory before training" in said and "4 rows of up to" in said and "has 0.0 GiB free" in said
    assert "--batch-size" in said and "--max-image-tokens" in said
    assert not (out / "train_log.jsonl").exists() or "train/loss" not in (out / "train_log.jsonl").read_text()
    estimates = []
    real = budget.preflight
    monkeypatch.setattr(budget, "free_device_memory", lambda device, dist: 2**40)
    monkeypatch.setattr(budget, "preflight", lambda **kw: estimates.append(real(**kw)))
    train(tiny_config(data, tmp_path / "fits", model=str(models("qwen2-vl")), batch_size=4, max_steps=1,
                      max_eval_samples=1, max_new_tokens=2), console=_quiet())
    (estimate,) = estimates
    assert 0 < estimate.activations and estimate.total < 2**40


def test_a_grouped_run_resumes_exactly(data, models, tmp_path):
    """Killed after step 4 (checkpoint at 3, mid-epoch) and resumed: the grouped order is found again, so the
    losses are the uninterrupted run's, across an epoch's end (4 batches an epoch)."""
    from finetune.train import train

    settings = dict(model=str(models("qwen2-vl")), batch_size=8, max_steps=6, save_every=3, save_final=False,
                    max_eval_samples=1, max_new_tokens=2, lr=1e-3, max_image_tokens=9)

    def losses(out: Path) -> list[float]:
        lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        return [line["train/loss"] for line in lines if "train/loss" in line]

    train(tiny_config(data, tmp_path / "straight", **settings), console=_quiet())
    train_killed_after(tiny_config(data, tmp_path / "killed", **settings), 4)
    train(tiny_config(data, tmp_path / "killed", resume=True, **settings), console=_quiet())
    straight = losses(tmp_path / "straight")
    assert len(straight) == 6 and len(set(straight)) == 6
    assert losses(tmp_path / "killed") == pytest.approx(straight, abs=1e-6)


def test_the_export_of_a_capped_lora_run_keeps_its_image_budget(data, models, tmp_path):
    """A LoRA run's adapter goes back on the base model for the export: the base's processor and (for
    LLaVA-NeXT) config must take the run's --max-image-tokens again, or the merged model would see its
    images at sizes training never saw."""
    from finetune.export import export_run
    from finetune.train import train

    out = tmp_path / "run"
    train(tiny_config(data, out, model=str(models("llava-next")), method="lora", batch_size=4, max_steps=1,
                      max_eval_samples=2, max_new_tokens=4, max_image_tokens=14), console=_quiet())
    trained = json.loads((out / "final" / "processor_config.json").read_text())["image_processor"]
    base = json.loads((models("llava-next") / "processor_config.json").read_text())["image_processor"]
    assert len(trained["image_grid_pinpoints"]) < len(base["image_grid_pinpoints"])   # the cap removed grids
    merged = export_run(out, tmp_path / "merged", dtype="float32").out
    exported = json.loads((merged / "processor_config.json").read_text())["image_processor"]
    config = json.loads((merged / "config.json").read_text())
    assert exported["image_grid_pinpoints"] == trained["image_grid_pinpoints"] == config["image_grid_pinpoints"]

"""Several processes (gloo, CPU) train the same run as one process with the same global batch.

Full fine-tuning of the tiny model runs sharded (FSDP) by default and replicated with ``--no-fsdp``
(DDP). 41 training rows in batches of 8 make an epoch of 5 full batches and one of a single row, so
under 2 processes one rank has no rows for a micro-batch and must still join every collective.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _ft_fixtures as fx
import test_families as first
import test_families_more as more
from test_families import built_models

pytestmark = pytest.mark.slow

# 41 rows, 2 micro-batches a step: 3 steps are the first epoch, short batch included. A checkpoint
# at step 2 (resumed below) and the last at 3; an evaluation at step 2 runs between training steps.
RUN_TOML = "max_eval_samples = 4\nmax_new_tokens = 4\nsave_every = 2\neval_every = 2\n"
STEPS = ["--max-steps", "3", "--batch-size", "8", "--grad-accum", "2"]


# The N-processes-match-one comparisons need a model without BatchNorm: tiny's ResNet tower normalises
# with each process's own rows (its per-device batch), as any DDP ResNet without SyncBatchNorm does.
# tiny-llava is the same decoder behind a CLIP tower (LayerNorm only).
EXACT_MODEL = "tiny-llava"


def _free_port() -> int:
    with socket.socket() as sock:  # torchrun's static rendezvous needs a fixed one
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finetune(out: Path, dataset: Path, nproc: int, *extra: str, settings: str = "",
              launcher: str = "torchrun", timeout: float = 240) -> dict:
    """``run-finetune`` over ``nproc`` processes; returns metrics.json. A run still going after ``timeout``
    seconds (processes waiting on each other) is killed, launcher and workers, and fails the test."""
    config = out.with_name(f"{out.name}.toml")
    config.write_text(RUN_TOML + settings)
    args = ["-m", "finetune", "--config", str(config), "--dataset", str(dataset), "--model", EXACT_MODEL, *STEPS,
            "--num-workers", "0", "--no-wandb", "--out", str(out), "--device", "cpu", *extra]
    if launcher == "accelerate":
        # accelerate's --cpu starts one process unless it goes through MPI; --multi_gpu is its torchrun
        # launcher, which needs no GPU (our --device cpu picks gloo).
        args = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port()), *args]
    elif nproc > 1:
        args = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUN_FINETUNE_DEBUG": "1"}
    # Its own session: on a timeout the launcher's workers are killed with it, not left waiting.
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"run-finetune over {nproc} processes still running after {timeout} s (hung): {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _checkpoint(out: Path, step: int) -> tuple[dict[str, torch.Tensor], dict]:
    path = out / "checkpoints" / f"step-{step:08d}"
    return (load_file(str(path / "trainable.safetensors")),
            torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))


def _assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def _assert_same_optimizer(got: dict, expected: dict) -> None:
    assert got["param_groups"] == expected["param_groups"]
    assert got["state"].keys() == expected["state"].keys() and len(expected["state"]) > 0
    for i, state in expected["state"].items():
        assert torch.equal(got["state"][i]["step"], state["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(got["state"][i][key], state[key], rtol=1e-4, atol=1e-7, msg=f"{i} {key}")


def _assert_same_training(got: dict, expected: dict) -> None:
    # Adam hides a gradient off by a constant factor from the weights; the loss and the gradient
    # norm (before clipping) show it.
    assert got["final_loss"] == pytest.approx(expected["final_loss"], rel=1e-4)
    assert got["final_grad_norm"] == pytest.approx(expected["final_grad_norm"], rel=1e-3)
    assert got["samples"] == expected["samples"] == 41


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def dataset(work) -> Path:
    return fx.write_parquet(fx.make_dataset(n_train=41, n_test=8, image_size=32), work / "data")


@pytest.fixture(scope="module")
def one(work, dataset) -> Path:
    metrics = _finetune(work / "one", dataset, 1)
    assert (metrics["train"]["processes"], metrics["train"]["fsdp"]) == (1, False)
    return work / "one"


@pytest.fixture(scope="module")
def sharded(work, dataset) -> Path:
    metrics = _finetune(work / "fsdp", dataset, 2)
    assert (metrics["train"]["processes"], metrics["train"]["fsdp"]) == (2, True)
    return work / "fsdp"


def _train_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["train"]


def test_fsdp_two_processes_match_one(one, sharded):
    _assert_same_training(_train_metrics(sharded), _train_metrics(one))
    for step in (2, 3):
        (w1, o1), (w2, o2) = _checkpoint(one, step), _checkpoint(sharded, step)
        _assert_same_weights(w2, w1)
        _assert_same_optimizer(o2, o1)
    # The comparison means something: the weights moved between the two checkpoints.
    assert any(not torch.equal(_checkpoint(one, 2)[0][n], w1[n]) for n in w1)
    # The final model is whole (gathered from the shards) and the same as one process's.
    _assert_same_weights(load_file(str(sharded / "final" / "model.safetensors")),
                         load_file(str(one / "final" / "model.safetensors")))
    assert json.loads((sharded / "metrics.json").read_text())["n_generated"] == 4


def test_ddp_two_processes_match_one(work, dataset, one):
    out = work / "ddp"
    metrics = _finetune(out, dataset, 2, "--no-fsdp")
    assert (metrics["train"]["processes"], metrics["train"]["fsdp"]) == (2, False)
    _assert_same_training(metrics["train"], _train_metrics(one))
    _assert_same_weights(_checkpoint(out, 3)[0], _checkpoint(one, 3)[0])


def _resume_from_step_2(source: Path, out: Path) -> Path:
    shutil.copytree(source, out)
    shutil.rmtree(out / "checkpoints" / "step-00000003")
    shutil.rmtree(out / "final")
    (out / "metrics.json").unlink()
    return out


@pytest.mark.parametrize("source, nproc", [("one", 2), ("fsdp", 1)], ids=["1-process-to-fsdp", "fsdp-to-1-process"])
def test_checkpoints_resume_on_another_number_of_processes(work, dataset, one, sharded, source, nproc):
    out = _resume_from_step_2(work / source, work / f"resumed-{source}")
    metrics = _finetune(out, dataset, nproc, "--resume")
    assert (metrics["train"]["processes"], metrics["train"]["fsdp"]) == (nproc, nproc > 1)
    _assert_same_training(metrics["train"], _train_metrics(one))
    weights, optimizer = _checkpoint(out, 3)
    _assert_same_weights(weights, _checkpoint(one, 3)[0])
    _assert_same_optimizer(optimizer, _checkpoint(one, 3)[1])


def test_accelerate_launch_shards_a_frozen_vision_tower(work, dataset):
    pytest.importorskip("accelerate")
    out = work / "accelerate"
    metrics = _finetune(out, dataset, 2, "--max-steps", "2", "--save-every", "0",
                        settings="train_vision = false\n", launcher="accelerate")
    assert (metrics["train"]["processes"], metrics["train"]["fsdp"], metrics["train"]["steps"]) == (2, True, 2)
    assert [p.relative_to(out) for p in out.rglob("metrics.json")] == [Path("metrics.json")]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    from transformers import AutoModelForImageTextToText

    final = dict(AutoModelForImageTextToText.from_pretrained(str(out / "final")).named_parameters())
    trained = _checkpoint(out, 2)[0]
    assert trained and not any("vision_tower" in name for name in trained)     # frozen: not in the checkpoint
    assert any("vision_tower" in name for name in final)                        # but whole in the final model
    for name, value in trained.items():
        torch.testing.assert_close(final[name].detach(), value, msg=name)


def test_batch_must_split_evenly_over_processes(tmp_path, monkeypatch, capsys):
    from finetune import cli
    from finetune.config import FinetuneError
    from finetune.distributed import Dist, check_batch

    with pytest.raises(FinetuneError, match="multiple of 2"):
        check_batch(Dist(rank=0, world=2), 7)
    check_batch(Dist(rank=0, world=2), 8)
    # Under a launcher, before joining the process group (which would wait for the other rank).
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    dataset = fx.dataset_dir(tmp_path / "data", n_train=4, n_test=2)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--dataset", str(dataset), "--batch-size", "7", "--out", str(tmp_path / "run"), "--no-wandb"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("run-finetune:")]
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and "multiple of 2" in lines[0], err


def test_fsdp_with_lora_is_a_one_line_error(capsys):
    from finetune import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--dataset", "some/dir", "--method", "lora", "--fsdp"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("run-finetune: error: --fsdp shards full fine-tuning only"), err
    assert cli.parse_config(["--method", "lora", "--no-fsdp"]).fsdp is False


# --------------------------------------------------------------------------------------------
# A micro-batch without an image on one process, with images on the other

# Training rows whose image is null: they train on the prompt without the image. An odd number of them: a
# family whose image token count varies with the image's size (Qwen, LLaVA-NeXT, Idefics3) has the sampler
# group rows by image tokens too, text-only rows (none) together, and 3 of them cannot all pair up.
TEXT_ONLY = (0, 2, 6)


def _text_only_dataset(out: Path) -> Path:
    import datasets

    from generator.schema import features

    rows = fx.make_rows(12, seed=3, image_size=32)
    for i in TEXT_ONLY:
        rows[i]["image"] = None
    (out / "data").mkdir(parents=True)
    for name, part in (("train", rows[:8]), ("test", rows[8:])):
        datasets.Dataset.from_list(part, features=features()).to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


def _mixed_micro_batches(dataset: Path, model_dir: Path, steps: int) -> int:
    """How many of the first ``steps`` micro-batches (of 2 rows, one a process) give one process a
    text-only row and the other an image: the sampler's batches, replayed on the run's lengths (answer
    tokens, plus image tokens where the family's count varies with the image's size)."""
    from finetune.data import LengthGroupedBatchSampler, answer_lengths, load_splits
    from finetune.image_budget import bucket_lengths
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(model_dir))
    train = load_splits(str(dataset))["train"]
    lengths, _ = bucket_lengths(answer_lengths(train, loaded.tokenizer, loaded.end_token), train, loaded.processor)
    batches = LengthGroupedBatchSampler(lengths, 2, seed=0).batches(0)[:steps]
    return sum((b[0] in TEXT_ONLY) != (b[1] in TEXT_ONLY) for b in batches)


# The tiny random model of a family, built once for the module by tests/test_families.py's and
# tests/test_families_more.py's builders.
built = built_models({**first.BUILDERS, **more.BUILDERS})


# Families whose text-only rows are skipped, not trained: Mllama's cross-attention cannot batch them
# with image rows (Family.text_only_rows), PaliGemma's prompt is its image prefix (no text-only form).
# A process whose micro-batch lost its only row runs the step's stand-in batch (it has an image) at
# weight 0, so every process runs the tower there too.
SKIPS_TEXT_ONLY = {"mllama", "paligemma"}

# Each family's image inputs differ in kind: Qwen's flat patches and image_grid_thw (Qwen3-VL's deepstack
# features too), Gemma 3's token_type_ids, LLaVA-NeXT's crops and image_sizes, Idefics3's
# pixel_attention_mask, Phi-4's image_pixel_values, image_sizes and image_attention_mask (its backbone has
# no get_image_features), Mllama's tiles beside a cross-attention mask. Each trains its tower in full
# under FSDP: every tower block all-gathers in the forward and reduce-scatters in the backward.
FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "gemma3", "paligemma", "llava-next", "idefics3", "mllama",
            "phi4-multimodal")
CASES = [("tiny", "full"), ("llava", "full"), ("llava", "lora"), *((f, "full") for f in FAMILIES)]
CASE_IDS = ["tiny-fsdp-tower-trains", "llava-fsdp-tower-frozen", "llava-ddp-lora-tower-trains",
            *(f"{f}-fsdp-tower-trains" for f in FAMILIES)]


@pytest.mark.parametrize("family, method", CASES, ids=CASE_IDS)
def test_a_process_without_an_image_does_not_hang(family, method, work, built):
    """Full fine-tuning runs under FSDP (tiny and the other families train their tower, LLaVA's stays
    frozen), LoRA under DDP (LLaVA's tower and projector in full). Each of 4 steps gives each process one
    row; some give one process a text-only row while the other has an image. Without every process
    running the tower, FSDP's collectives pair up wrong (gloo: "Received data size doesn't match expected
    size"; NCCL may wait for ever); DDP copes through find_unused_parameters. The run must end (a hang is
    killed after the timeout and fails) and train on all 8 rows, or on the image rows alone where the
    family skips text-only rows (SKIPS_TEXT_ONLY)."""
    dataset = work / "text-only"
    if not dataset.exists():
        _text_only_dataset(dataset)
    model = "tiny" if family == "tiny" else str(built(family))
    out = work / f"text-only-run-{family}-{method}"
    # No LoRA dropout: one process and two draw different masks.
    settings = "train_vision = true\nlora_dropout = 0.0\n" if method == "lora" else ""
    if family not in ("tiny", "llava"):
        settings += "train_vision = true\n"
    extra = ["--model", model, "--method", method, "--max-steps", "4", "--batch-size", "2", "--grad-accum", "1",
             "--save-every", "0", "--eval-every", "0"]
    metrics = _finetune(out, dataset, 2, *extra, settings=settings, timeout=150)
    train = metrics["train"]
    assert (train["processes"], train["fsdp"], train["steps"]) == (2, method == "full", 4)
    assert train["final_loss"] is not None
    if family in SKIPS_TEXT_ONLY:
        # Every row once (4 steps of 2 make the epoch): the image rows trained, the others skipped
        # (skipped_rows counts rank 0's own).
        assert train["samples"] == 8 - len(TEXT_ONLY) and train["skipped_rows"] <= len(TEXT_ONLY)
    else:
        assert train["samples"] == 8 and train["skipped_rows"] == 0
    # The trap was set: some step gave one process a text-only row and the other an image.
    assert _mixed_micro_batches(dataset, out / "final" if family == "tiny" else Path(model), 4) > 0
    # The tower's pass at weight 0 changes nothing: one process trains the same (not tiny: its ResNet
    # tower's BatchNorm takes statistics over each process's own rows).
    if method == "lora":
        alone = _finetune(work / "text-only-run-one", dataset, 1, *extra, settings=settings)["train"]
        assert train["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-4)
        assert train["final_grad_norm"] == pytest.approx(alone["final_grad_norm"], rel=1e-3)


def test_a_row_with_a_null_image_trains_on_the_prompt_without_the_image(tmp_path):
    """The collator's text-only rows: the prompt without the image token, labels on the answer, and
    image inputs from the rows that have an image only."""
    from finetune.builtins import build_builtin
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, INDEX_KEY, build_prompt, build_text_prompt

    rows, tokenizer = fx.indexed_rows_and_tokenizer(3, seed=0, image_size=32)
    loaded = build_builtin("tiny", tokenizer)
    collator = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token,
                        text_prompt=build_text_prompt(loaded, DEFAULT_QUESTION))
    rows[1]["image"] = None
    batch = collator(rows)
    image_id = tokenizer.convert_tokens_to_ids(loaded.image_token)
    assert batch[INDEX_KEY].tolist() == [0, 1, 2] and batch["pixel_values"].shape[0] == 2
    assert [(ids == image_id).any().item() for ids in batch["input_ids"]] == [True, False, True]
    assert ((batch["labels"] != -100).sum(dim=1) > 0).all()
    alone = collator([rows[1]])
    assert "pixel_values" not in alone and "labels" in alone
    # Without a text prompt (generation, or a family with none) the row is skipped, as before.
    assert Collator(loaded.processor, collator.prompt, loaded.end_token)([rows[1]])["_skipped"] == [1]

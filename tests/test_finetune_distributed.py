"""Several processes (gloo, CPU) train the same run as one process with the same global batch.

Full fine-tuning of the tiny model runs sharded (FSDP) by default and replicated with ``--no-fsdp``
(DDP). 41 training rows in batches of 8 make an epoch of 5 full batches and one of a single row, so
under 2 processes one rank has no rows for a micro-batch and must still join every collective.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _ft_fixtures as fx

pytestmark = pytest.mark.slow

# 41 rows, 2 micro-batches a step: 3 steps are the first epoch, short batch included. A checkpoint
# at step 2 (resumed below) and the last at 3; an evaluation at step 2 runs between training steps.
RUN_TOML = "max_eval_samples = 4\nmax_new_tokens = 4\nsave_every = 2\neval_every = 2\n"
STEPS = ["--max-steps", "3", "--batch-size", "8", "--grad-accum", "2"]


def _free_port() -> int:
    with socket.socket() as sock:  # torchrun's static rendezvous needs a fixed one
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finetune(out: Path, dataset: Path, nproc: int, *extra: str, settings: str = "",
              launcher: str = "torchrun") -> dict:
    """``run-finetune`` over ``nproc`` processes; returns metrics.json."""
    config = out.with_name(f"{out.name}.toml")
    config.write_text(RUN_TOML + settings)
    args = ["-m", "finetune", "--config", str(config), "--dataset", str(dataset), "--model", "tiny", *STEPS,
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
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
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

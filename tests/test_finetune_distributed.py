"""Two processes (gloo, CPU) train the same run as one process with the same global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import _ft_fixtures as fx

pytestmark = pytest.mark.slow


def _run(tmp_path, name: str, dataset, nproc: int) -> tuple[dict[str, torch.Tensor], dict]:
    config = tmp_path / "run.toml"
    # No dropout: the only randomness left would differ between ranks and a single process.
    config.write_text("lora_dropout = 0.0\nmax_eval_samples = 4\nmax_new_tokens = 4\nsave_every = 0\n")
    out = tmp_path / name
    args = ["-m", "finetune", "--config", str(config), "--dataset", str(dataset), "--model", "tiny",
            "--max-steps", "3", "--batch-size", "8", "--grad-accum", "2", "--num-workers", "0", "--no-wandb",
            "--out", str(out), "--device", "cpu"]
    if nproc > 1:
        with socket.socket() as sock:  # a free port: torchrun's static rendezvous needs a fixed one
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
                "--master-port", str(port), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUN_FINETUNE_DEBUG": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints, f"no checkpoint in {out}"
    import json

    return (load_file(str(checkpoints[-1] / "trainable.safetensors")),
            json.loads((out / "metrics.json").read_text())["train"])


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    dataset = fx.write_parquet(fx.make_dataset(n_train=48, n_test=8, image_size=32), tmp_path / "data")
    one, one_train = _run(tmp_path, "one", dataset, 1)
    two, two_train = _run(tmp_path, "two", dataset, 2)
    # Adam hides a gradient off by a constant factor from the weights; the loss and the gradient
    # norm (before clipping) show it.
    assert two_train["final_loss"] == pytest.approx(one_train["final_loss"], rel=1e-4)
    assert two_train["final_grad_norm"] == pytest.approx(one_train["final_grad_norm"], rel=1e-3)
    assert (one_train["samples"], two_train["samples"]) == (48, 48)
    assert one.keys() == two.keys() and len(one) > 0
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    # The weights moved: the comparison would be vacuous if nothing trained.
    assert any((t.abs().sum() > 0) for t in one.values())


def test_batch_must_split_evenly_over_processes(tmp_path, monkeypatch):
    from finetune.config import FinetuneError
    from finetune.distributed import Dist, check_batch

    with pytest.raises(FinetuneError, match="multiple of 2"):
        check_batch(Dist(rank=0, world=2), 7)
    check_batch(Dist(rank=0, world=2), 8)

"""``run-finetune``: flags over config files, one-line errors with exit codes, what a run leaves behind."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _ft_fixtures import dataset_dir, text_only_model

from finetune import cli

pytestmark = pytest.mark.usefixtures("isolated")

# Settings with no flag of their own, kept small so a CLI run takes seconds.
QUICK_TOML = """
[finetune]
model = "tiny"
batch_size = 8
max_steps = 2
save_every = 0
num_workers = 0
max_eval_samples = 4
max_new_tokens = 8
tokenizer_vocab_size = 512
"""


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Datasets' cache and W&B's files go to the test's folder, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return dataset_dir(tmp_path_factory.mktemp("cli") / "data", n_train=16, n_test=4)


@pytest.fixture
def quick(tmp_path) -> Path:
    path = tmp_path / "quick.toml"
    path.write_text(QUICK_TOML)
    return path


def run(capsys, *argv: str) -> tuple[int, str]:
    """``run-finetune argv`` in-process: (exit code, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("run-finetune:")]


# ---------------------------------------------------------------------------------------------
# Parsing


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[finetune]\nlr = 0.5\nbatch-size = 2\nepochs = 3\nresume = true\nno_wandb = true\n'
                    'lora_r = 4\n')
    from_file = cli.parse_config(["--config", str(path)])
    assert (from_file.lr, from_file.batch_size, from_file.epochs, from_file.resume, from_file.lora_r) == (
        0.5, 2, 3.0, True, 4)
    both = cli.parse_config(["--config", str(path), "--lr", "0.01", "--batch-size", "4", "--no-resume",
                             "--dataset", "some/dir", "--method", "full"])
    assert (both.lr, both.batch_size, both.resume, both.dataset, both.method) == (0.01, 4, False, "some/dir", "full")
    assert (both.epochs, both.no_wandb, both.lora_r) == (3.0, True, 4)      # untouched by flags


def test_flags_without_a_file_and_yaml(tmp_path):
    cfg = cli.parse_config(["--model", "phi3v-shape", "--max-steps", "7", "--grad-accum", "3", "--eval-every", "5",
                            "--save-every", "0", "--seed", "9", "--out", "x", "--wandb-project", "p", "--no-wandb",
                            "--trust-remote-code", "--gradient-checkpointing", "--num-workers", "0",
                            "--max-eval-samples", "10", "--device", "cpu", "--epochs", "1.5"])
    assert (cfg.model, cfg.max_steps, cfg.grad_accum, cfg.eval_every, cfg.save_every, cfg.seed, cfg.out) == (
        "phi3v-shape", 7, 3, 5, 0, 9, "x")
    assert (cfg.wandb_project, cfg.no_wandb) == ("p", True)
    assert cfg.trust_remote_code and cfg.gradient_checkpointing
    assert (cfg.num_workers, cfg.max_eval_samples, cfg.device, cfg.epochs) == (0, 10, "cpu", 1.5)
    assert cli.parse_config([]).model == "tiny"                              # the dataclass defaults
    path = tmp_path / "run.yaml"
    path.write_text("finetune:\n  lr: 0.25\n  method: full\n")
    cfg = cli.parse_config(["--config", str(path), "--method", "lora"])
    assert (cfg.lr, cfg.method) == (0.25, "lora")


@pytest.mark.parametrize("argv, says", [
    (["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
    (["--lr", "abc"], "--lr must be a number > 0"),
    (["--epochs", "nan"], "--epochs must be a number > 0"),
    (["--method", "sgd"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
    (["--config", "missing.toml"], "does not exist"),
    (["--config", "{bad_toml}"], "cannot parse config file"),
    (["--config", "{unknown_key}"], "unknown setting(s) learning_rate"),
    (["--config", "{zero_eval}"], "--max-eval-samples must be at least 1"),
])
def test_bad_flags_and_files_are_one_line(capsys, tmp_path, argv, says):
    (tmp_path / "bad.toml").write_text("lr = = 1\n")
    (tmp_path / "unknown.toml").write_text("learning_rate = 1\n")
    (tmp_path / "zero.toml").write_text("max_eval_samples = 0\n")
    argv = [a.format(bad_toml=tmp_path / "bad.toml", unknown_key=tmp_path / "unknown.toml",
                     zero_eval=tmp_path / "zero.toml") for a in argv]
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("run-finetune: error: ") and says in err, err


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_missing_dataset_folder(capsys, tmp_path, quick):
    code, err = run(capsys, "--config", quick, "--dataset", tmp_path / "nope", "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert "does not exist" in err and str(tmp_path / "nope") in err
    assert not (tmp_path / "run").exists()


def test_dataset_without_needed_columns(capsys, tmp_path, quick):
    thin = dataset_dir(tmp_path / "thin", n_train=8, n_test=2, drop_columns=("full_price", "title"))
    code, err = run(capsys, "--config", quick, "--dataset", thin, "--out", tmp_path / "run")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0] == err.strip().splitlines()[-1]
    assert "lacks column(s) title, full_price" in lines[0]
    assert not (tmp_path / "run").exists()


def test_unknown_model_names_the_alternatives(capsys, tmp_path, data, quick):
    code, err = run(capsys, "--config", quick, "--dataset", data, "--model", "no-such-model", "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1, err
    assert "unknown model 'no-such-model'" in err
    assert "tiny, small, tiny-llava, phi3v-shape" in err and "local model directory" in err and "Hub model id" in err
    assert not (tmp_path / "run").exists()


def test_model_without_image_processor(capsys, tmp_path, data, quick):
    model = text_only_model(tmp_path / "text-only")
    code, err = run(capsys, "--config", quick, "--dataset", data, "--model", model, "--out", tmp_path / "run")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0] == err.strip().splitlines()[-1]
    assert "has no image processor" in lines[0]
    assert not (tmp_path / "run").exists()


def test_out_of_memory_says_what_to_lower(capsys, tmp_path, data, quick, monkeypatch):
    import torch

    import finetune.loss

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(finetune.loss, "compute_loss", oom)
    code, err = run(capsys, "--config", quick, "--dataset", data, "--out", tmp_path / "run", "--no-wandb")
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1
    assert "out of memory at batch size 8" in lines[0] and "lower --batch-size" in lines[0]
    assert "--gradient-checkpointing" in lines[0]


# ---------------------------------------------------------------------------------------------
# Whole runs


def test_run_writes_results_and_an_offline_wandb_run(capsys, tmp_path, data, quick, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))                     # no ~/.netrc login either
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "run"
    code, err = run(capsys, "--config", quick, "--dataset", data, "--out", out, "--lr", "0.003")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 4 and metrics["train"]["steps"] == 2
    assert {"model", "baselines"} <= metrics.keys()
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all("truth" in p for p in predictions)
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.003 and config["max_new_tokens"] == 8 and config["dataset"] == str(data)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / "final").iterdir()}
    assert list((out / "wandb").glob("offline-run-*")), "W&B should log offline without an API key"


def test_no_wandb_and_corrupt_images_are_skipped(capsys, tmp_path, quick):
    broken = dataset_dir(tmp_path / "broken", n_train=16, n_test=4, corrupt=(1, 6))
    out = tmp_path / "run"
    # Two steps of 8 rows are one epoch: each corrupt row is met exactly once.
    code, err = run(capsys, "--config", quick, "--dataset", broken, "--out", out, "--no-wandb")
    assert code == 0, err
    said = " ".join(err.split())                                  # rich wraps long lines
    assert "row(s) with unreadable images (2 so far)" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["skipped_rows"] == 2 and metrics["train"]["samples"] == 14
    assert not (out / "wandb").exists()


def test_an_unreadable_row_counts_once_over_several_epochs(capsys, tmp_path, quick):
    broken = dataset_dir(tmp_path / "broken", n_train=16, n_test=4, corrupt=(3,))
    out = tmp_path / "run"
    code, err = run(capsys, "--config", quick, "--dataset", broken, "--out", out, "--no-wandb",
                    "--max-steps", "6")  # three epochs of two steps
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["skipped_rows"] == 1 and metrics["train"]["samples"] == 6 * 8 - 3
    assert " ".join(err.split()).count("row(s) with unreadable images") == 1


def test_ctrl_c_then_resume(capsys, tmp_path, data, quick, monkeypatch):
    import finetune.train

    def interrupt_at(step):
        if step == 2:
            raise KeyboardInterrupt

    real_train = finetune.train.train
    monkeypatch.setattr(finetune.train, "train", functools.partial(real_train, on_step=interrupt_at))
    out = tmp_path / "run"
    argv = ["--config", quick, "--dataset", data, "--out", out, "--no-wandb", "--max-steps", "3", "--save-every", "1"]
    code, err = run(capsys, *argv)
    lines = error_lines(err)
    assert code == 130 and len(lines) == 1
    assert "step-00000002" in lines[0] and "--resume" in lines[0]
    monkeypatch.setattr(finetune.train, "train", real_train)

    # Without --resume the folder is refused, and left exactly as it was.
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert "already holds a run (last checkpoint step-00000002)" in err and "--resume" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

    code, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    assert "resuming from" in err
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 3


def test_no_dataset_generates_the_default_once(capsys, tmp_path, monkeypatch):
    import finetune.train

    seen = []

    def fake_train(config, **kwargs):
        seen.append(config.dataset)
        return finetune.train.RunResult(out=Path(config.out), steps=0, samples_seen=0, train_seconds=0.0,
                                        samples_per_second=0.0, final_loss=None, peak_memory_gib=None)

    monkeypatch.setattr(cli, "DEFAULT_ROWS", 12)
    monkeypatch.setattr(finetune.train, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "--no-wandb")[0] == 0
    shards = sorted((tmp_path / "out" / "burberry_us-12rows-seed0" / "data").glob("*.parquet"))
    assert shards
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert run(capsys, "--no-wandb")[0] == 0
    assert seen == ["out/burberry_us-12rows-seed0"] * 2
    assert [p.stat().st_mtime_ns for p in shards] == stamps            # reused, not regenerated


def test_python_dash_m_finetune(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "finetune", "--dataset", str(tmp_path / "nope"), "--no-wandb"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("run-finetune: error: dataset path")



class _Exited(Exception):
    pass


@pytest.mark.parametrize("outcome, code", [("done", 0), ("one-line error", 2)])
def test_a_launched_worker_ends_without_the_interpreter_teardown(monkeypatch, capsys, outcome, code):
    """Under torchrun (WORLD_SIZE > 1) the command leaves through os._exit with the run's exit code, after
    flushing its output: the backend's C++ threads torn down in interpreter finalization once aborted a
    finished two-process run (SIGABRT, and the launcher failed the run). main() itself still returns."""
    def run(config):
        if outcome == "done":
            print("done: 1 steps")
            return 0
        cli._fail("the dataset is bad", 2)

    def exit_now(status):
        raise _Exited(status)

    monkeypatch.setattr(cli, "_run", run)
    monkeypatch.setattr(cli.os, "_exit", exit_now)
    monkeypatch.setattr(cli.sys, "argv", ["run-finetune", "--max-steps", "1"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(_Exited) as exited:
        cli.entry()
    assert exited.value.args == (code,)
    assert ("done: 1 steps" in capsys.readouterr().out) == (outcome == "done")
    if outcome == "done":
        assert cli.main(["--max-steps", "1"]) == 0
    monkeypatch.setenv("WORLD_SIZE", "1")   # one process: a plain exit, the interpreter ends as usual
    with pytest.raises(SystemExit) as plain:
        cli.entry()
    assert plain.value.code == code

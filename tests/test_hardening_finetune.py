"""Issue 17, run-finetune: typed config values, hostile config files, datasets without a usable
row, a damaged checkpoint on ``--resume``, and a resumed run's final tokenizer config."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import checkpoint_weights, dataset_dir, tiny_config, train_killed_after  # noqa: E402

from finetune import cli  # noqa: E402
from finetune.config import FinetuneConfig, FinetuneError, load_config  # noqa: E402
from finetune.train import latest_checkpoint, train  # noqa: E402

# Settings with no flag of their own, kept small so a CLI run takes seconds.
QUICK = ('model = "tiny"\nbatch_size = 8\nmax_steps = 2\nsave_every = 0\nnum_workers = 0\nmax_eval_samples = 4\n'
         'max_new_tokens = 8\ntokenizer_vocab_size = 512\nno_wandb = true\n')


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Datasets' cache and W&B's files go to the test's folder, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def run(capsys, *argv) -> tuple[int, str]:
    """``run-finetune argv`` in-process: (exit code, its stderr)."""
    capsys.readouterr()                                      # a fixture's progress bars are not its output
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    """The single ``run-finetune: error:`` line of stderr, its last line (datasets' progress bars may come
    before it; a traceback may not)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("run-finetune:")]
    assert len(lines) == 1 and lines[0].startswith("run-finetune: error: ") and err.endswith(lines[0] + "\n"), err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. Config values are typed


@pytest.mark.parametrize("name, text, says", [
    ("c.toml", 'trust_remote_code = "false"\n', "trust_remote_code must be true or false, not str 'false'"),
    ("c.yaml", 'trust_remote_code: "no"\n', "trust_remote_code must be true or false, not str 'no'"),
    ("c.toml", 'batch_size = "16"\n', "batch_size must be a whole number or null, not str '16'"),
    ("c.toml", 'lr = "1e-4"\n', "lr must be a finite number or null, not str '1e-4'"),
    ("c.toml", 'epochs = "six"\n', "epochs must be a finite number or null, not str 'six'"),
    ("c.yaml", "batch_size: [1, 2]\n", "batch_size must be a whole number or null, not list"),
    ("c.toml", "question = 123\n", "question must be a string, not int 123"),
    ("c.toml", "seed = true\n", "seed must be a whole number, not bool True"),
    ("c.toml", "max_steps = 2.5\n", "max_steps must be a whole number, not float 2.5"),
    ("c.toml", "lr = nan\n", "lr must be a finite number or null, not float nan"),
    ("c.yaml", "gradient_checkpointing: 1\n", "gradient_checkpointing must be true or false, not int 1"),
])
def test_config_values_must_have_their_settings_type(capsys, tmp_path, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    code, err = run(capsys, "--config", path, "--dataset", tmp_path / "data", "--out", tmp_path / "run")
    line = one_error(err)
    assert code == 2 and f"config file {str(path)!r}: {says}" in line, line
    assert not (tmp_path / "run").exists()


def test_every_wrong_value_is_named_on_one_line(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('batch_size = "16"\nquestion = 123\ntrust_remote_code = "false"\n')
    code, err = run(capsys, "--config", path)
    line = one_error(err)
    assert code == 2 and line.count(" must be ") == 3, line


def test_well_typed_values_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trust_remote_code: no\nlr: 1\nbatch_size: null\nquestion: What is it?\n")
    cfg = cli.parse_config(["--config", str(path)])
    assert cfg.trust_remote_code is False and cfg.question == "What is it?"
    assert cfg.lr == 1.0 and type(cfg.lr) is float                    # an int for a float setting
    assert cfg.batch_size == 16                                        # null: the default


def test_overrides_and_python_configs_are_typed_too():
    with pytest.raises(FinetuneError, match=r"^overrides: trust_remote_code must be true or false, not str"):
        load_config(None, trust_remote_code="false")
    with pytest.raises(FinetuneError, match=r"^settings: batch_size must be a whole number or null, not str '8'"):
        FinetuneConfig(batch_size="8").validate()


def _remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config.json sends transformers to evil.py, which leaves ``marker`` if run."""
    folder.mkdir()
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evil-vlm'\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil-vlm",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"}}))
    return folder


def test_a_string_false_does_not_run_a_models_code(capsys, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils

    # Were the code run after all, its copy lands here, not in the user's module cache.
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    data = dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    marker = tmp_path / "remote-code-ran"
    model = _remote_code_model(tmp_path / "model", marker)
    config = tmp_path / "c.toml"
    config.write_text(QUICK + 'trust_remote_code = "false"\n')
    code, err = run(capsys, "--config", config, "--dataset", data, "--model", model, "--out", tmp_path / "run")
    line = one_error(err)
    assert code == 2 and "trust_remote_code must be true or false, not str 'false'" in line
    assert not marker.exists(), "the model's own code ran"
    assert not (tmp_path / "run").exists() and not (tmp_path / "modules").exists()


# ---------------------------------------------------------------------------------------------
# 7. Hostile config files: one line, quickly, no "out of memory" hint


def _laughs(levels: int = 9) -> list[str]:
    """YAML's billion laughs as a flow sequence's items: the last expands to 9 ** levels strings."""
    items = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    return items + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]


@pytest.mark.parametrize("name, text, says", [
    ("deep.toml", "question = " + "[" * 50_000 + "]" * 50_000 + "\n", "is nested too deeply"),
    ("deep.yaml", "question: " + "[" * 50_000 + "]" * 50_000 + "\n", "is nested too deeply"),
    # Read whole, this one took 35 s and 3.4 GB, then said "out of memory: lower --batch-size".
    ("laughs.yaml", f"question: [{', '.join(_laughs())}]\n", "expands to more than 10,000 values"),
    # Beside the [finetune] table, where no setting uses it, a bomb is still refused before it is built.
    ("unused.yaml", f"bomb: [{', '.join(_laughs())}]\nfinetune:\n  lr: 0.1\n", "expands to more than 10,000 values"),
    ("cycle.yaml", "question: &a [*a]\n", "expands to more than 10,000 values"),
    ("big.toml", "# " + "x" * (1 << 20) + "\nlr = 0.1\n", "is larger than 1 MiB"),
    ("keys.yaml", "1: 2\n", "setting names are text, not int 1"),
])
def test_hostile_config_files_are_one_line_errors(capsys, tmp_path, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    start = time.perf_counter()
    code, err = run(capsys, "--config", path, "--dataset", tmp_path / "data", "--out", tmp_path / "run")
    line = one_error(err)
    assert code == 2 and f"config file {str(path)!r}" in line and says in line, line
    assert "out of memory" not in line
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 6. No usable training row


@pytest.mark.parametrize("n_train, corrupt, says", [
    (8, tuple(range(8)), "none of the 8 training rows has a readable image: nothing to train on"),
    (12, tuple(range(6)), "only 6 of the 12 training rows have a readable image (6 unreadable), fewer than "
                          "one batch (--batch-size 8)"),
    (4, (), "the training split has 4 rows, fewer than one batch (--batch-size 8)"),
])
def test_too_few_readable_rows_stop_before_training(capsys, tmp_path, n_train, corrupt, says):
    data = dataset_dir(tmp_path / "data", n_train=n_train, n_test=2, corrupt=corrupt)
    config = tmp_path / "c.toml"
    config.write_text(QUICK)
    out = tmp_path / "run"
    code, err = run(capsys, "--config", config, "--dataset", data, "--out", out)
    line = one_error(err)
    assert code == 2 and says in line and str(data) in line, line
    assert not out.exists()                       # no checkpoint, no "final" model, no run folder


# ---------------------------------------------------------------------------------------------
# 10. A damaged latest checkpoint: --resume falls back to the previous one


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "optimizer.pt", "state.pt"])
def test_resume_falls_back_from_a_damaged_checkpoint(capsys, tmp_path, damaged):
    data = dataset_dir(tmp_path / "data", n_train=16, n_test=2)
    settings = dict(max_steps=4, save_every=1, save_final=False, max_eval_samples=2)
    straight = train(tiny_config(data, tmp_path / "straight", **settings))

    out = tmp_path / "killed"
    train_killed_after(tiny_config(data, out, **settings), 3)
    latest = latest_checkpoint(out)
    assert latest.name == "step-00000003"
    file = latest / damaged
    file.write_bytes(file.read_bytes()[:len(file.read_bytes()) // 2])      # a write cut short

    code, err = run(capsys, "--config", _quick_toml(tmp_path, max_steps=4, save_every=1, save_final=False,
                                                    max_eval_samples=2),
                    "--dataset", data, "--out", out, "--resume")
    said = " ".join(err.split())                                            # rich wraps long lines
    assert code == 0, err
    assert (f"checkpoint step-00000003 cannot be read ({damaged}: " in said
            and "set aside as checkpoints/damaged-step-00000003; resuming from step-00000002" in said), said
    assert "resuming from" in said and "(step 2 of 4)" in said
    assert (out / "checkpoints" / "damaged-step-00000003" / damaged).is_file()   # kept for a look, not reused
    # The run went on from step 2 as if never interrupted: the same weights as the straight run.
    expected, got = checkpoint_weights(tmp_path / "straight", 4), checkpoint_weights(out, 4)
    assert all(torch.equal(expected[n], got[n]) for n in expected) and expected.keys() == got.keys()
    assert json.loads((out / "metrics.json").read_text())["train"]["samples"] == straight.samples_seen


def _quick_toml(tmp_path: Path, **settings) -> Path:
    """The CLI equivalent of ``tiny_config``'s settings, plus ``settings``."""
    lines = ['model = "tiny"', "batch_size = 8", "num_workers = 0", "no_wandb = true", "max_new_tokens = 8",
             "tokenizer_vocab_size = 512", "log_every = 1", "vision_warmup_epochs = 0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "resume.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_resume_with_no_readable_checkpoint_is_one_line(capsys, tmp_path):
    data = dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    train(tiny_config(data, out, max_steps=1, save_final=False, max_eval_samples=2))
    state = latest_checkpoint(out) / "state.pt"
    state.write_bytes(b"not a checkpoint")
    code, err = run(capsys, "--config", _quick_toml(tmp_path, max_steps=1, save_final=False, max_eval_samples=2),
                    "--dataset", data, "--out", out, "--resume")
    line = one_error(err)
    assert code == 2 and "--resume: no checkpoint in" in line and "step-00000001 (state.pt: " in line, line
    assert state.read_bytes() == b"not a checkpoint"                       # left where it was


# ---------------------------------------------------------------------------------------------
# 13. A resumed run's final tokenizer config is the straight run's


def test_resumed_final_tokenizer_config_gains_no_loader_keys(tmp_path):
    data = dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    settings = dict(max_steps=2, save_every=1, max_eval_samples=2)
    train(tiny_config(data, tmp_path / "straight", **settings))

    out = tmp_path / "resumed"
    train_killed_after(tiny_config(data, out, **settings), 1)
    assert train(tiny_config(data, out, resume=True, **settings)).resumed_from == 1
    straight = json.loads((tmp_path / "straight" / "final" / "tokenizer_config.json").read_text())
    resumed = json.loads((out / "final" / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & resumed.keys()
    assert resumed == straight

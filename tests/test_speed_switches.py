"""Each speed lever switched on its own: a [speed] table in the config file, one flag a lever in the
"speed" group of ``run-finetune --help``; flag beats file beats ``--preset``."""
from __future__ import annotations

import re
from dataclasses import asdict, fields, replace

import pytest

from finetune import cli
from finetune.config import FinetuneConfig, load_config
from finetune.speed import config as presets
from finetune.speed.config import PRESETS, SUGGESTIONS, SpeedConfig

# A value for each lever that differs from every preset's, so that setting it alone shows.
CHANGED = {"compile_layers": True, "maskless": True, "activation_memory_budget": 0.5, "pad_to_multiple_of": 32,
           "fused_lora": True, "cache_image_features": True, "answer_only_last_mlp": True}


def _toml(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else (
        f'"{value}"' if isinstance(value, str) else repr(value))


def _flags(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


def resolved(cfg: FinetuneConfig, cuda: bool = True) -> SpeedConfig:
    return presets.resolve(cfg.preset, cfg.speed, cuda=cuda)


def run(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(a) for a in argv])
    return exit_.value.code, capsys.readouterr().err


def test_every_lever_has_a_value_to_switch():
    assert set(CHANGED) == {f.name for f in fields(SpeedConfig)} - set(SUGGESTIONS) == set(presets.levers())


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_lever_alone_from_the_toml_table_and_from_its_flag(tmp_path, name):
    value = CHANGED[name]
    base = cli.parse_config([])
    expected = replace(SpeedConfig(), **{name: value})
    path = tmp_path / "run.toml"
    path.write_text(f"[speed]\n{name.replace('_', '-')} = {_toml(value)}\n")
    for cfg in (cli.parse_config(["--config", str(path)]), cli.parse_config(_flags(name, value))):
        assert cfg.speed == {name: value}
        assert resolved(cfg) == expected                                  # that lever and nothing else
        assert {**asdict(cfg), "speed": {}} == asdict(base)                # no other setting changed
    # Beside a [finetune] table, and as a YAML mapping.
    path.write_text(f"[finetune]\nlr = 0.5\n[speed]\n{name} = {_toml(value)}\n")
    assert cli.parse_config(["--config", str(path)]).speed == {name: value}
    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"lr: 0.5\nspeed:\n  {name}: {_toml(value)}\n")
    assert cli.parse_config(["--config", str(yaml)]).speed == {name: value}


def test_flag_beats_file_beats_preset(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "fast"\n[speed]\nfused_lora = false\npad_to_multiple_of = 64\nmaskless = false\n')
    fast = PRESETS["fast"]
    from_file = resolved(cli.parse_config(["--config", str(path)]))
    assert from_file == replace(fast, fused_lora=False, pad_to_multiple_of=64, maskless=False)
    both = cli.parse_config(["--config", str(path), "--pad-to-multiple-of", "16", "--maskless"])
    assert both.speed == {"fused_lora": False, "pad_to_multiple_of": 16, "maskless": True}
    assert resolved(both) == replace(fast, fused_lora=False, pad_to_multiple_of=16)
    # --preset only fills the defaults: a flag preset over a file preset keeps the file's levers.
    low = cli.parse_config(["--config", str(path), "--preset", "low-memory"])
    assert resolved(low) == replace(PRESETS["low-memory"], fused_lora=False, pad_to_multiple_of=64, maskless=False)
    # The preset alone is unchanged, and so are its suggestions.
    plain = cli.parse_config(["--preset", "fast"])
    assert plain.speed == {} and resolved(plain) == fast and plain.batch_size == fast.batch_size


def test_compilation_on_cuda_only_unless_the_budget_was_set_alone():
    assert presets.resolve("fast", {"compile_layers": True}, cuda=False).compile_layers is False
    low = presets.resolve("low-memory", {}, cuda=False)
    assert (low.compile_layers, low.activation_memory_budget) == (False, 1.0)
    assert presets.resolve("none", {"activation_memory_budget": 0.5}, cuda=False).activation_memory_budget == 0.5
    assert presets.resolve("none", None, cuda=True) == SpeedConfig()


def test_python_config_checks_and_normalises_the_table():
    cfg = FinetuneConfig(speed={"fused-lora": True, "activation_memory_budget": 1}).validate()
    assert cfg.speed == {"fused_lora": True, "activation_memory_budget": 1.0}
    assert load_config(None, speed={"maskless": True}).speed == {"maskless": True}


@pytest.mark.parametrize("text, says", [
    ('[speed]\ncompile_layers = "yes"\n', "speed.compile_layers must be true or false, not str 'yes'"),
    ("[speed]\npad_to_multiple_of = 8.5\n", "speed.pad_to_multiple_of must be a whole number, not float 8.5"),
    ("[speed]\nactivation_memory_budget = true\n", "speed.activation_memory_budget must be a finite number"),
    ("[speed]\nturbo = true\nfused_lora = true\n", "unknown speed lever(s) turbo; levers: compile_layers, maskless"),
    ("[speed]\nbatch_size = 4\n", "unknown speed lever(s) batch_size (batch_size: a setting of its own"),
    ("speed = 3\n", "speed must be a table of speed levers, not int 3"),
    ("[speed]\nactivation_memory_budget = 1.5\n", "--activation-memory-budget must be in (0, 1]"),
    # Retired levers are unknown now, said as any unknown one is.
    ('[speed]\ncompile_mode = "reduce-overhead"\n', "unknown speed lever(s) compile_mode"),
    ("[speed]\nwide_lora = true\n", "unknown speed lever(s) wide_lora"),
])
def test_a_wrong_type_or_unknown_lever_is_one_line(capsys, tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, err = run(capsys, "--config", path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("run-finetune: error: ") and says in err, err


@pytest.mark.parametrize("argv, says", [
    (["--pad-to-multiple-of", "0"], "--pad-to-multiple-of must be a whole number >= 1"),
    (["--activation-memory-budget", "x"], "--activation-memory-budget must be a number > 0"),
    (["--compile-layers=yes"], "ignored explicit argument"),
    (["--compile-mode", "reduce-overhead"], "unrecognized arguments: --compile-mode"),   # retired
])
def test_a_bad_speed_flag_is_one_line(capsys, argv, says):
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("run-finetune: error: ") and says in err, err


def test_help_lists_every_lever_under_speed(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    match = re.search(r"^speed:\n(.*?)(?=^\S|\Z)", text, re.S | re.M)
    assert match, text
    group = match.group(1)
    for name, annotation in presets.levers().items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"^\s+{re.escape(flag)}\b", group, re.M), (flag, group)
        if annotation is bool:
            assert f"--no-{flag[2:]}" in group
    # The preset's suggestions are settings of the run, with flags of their own outside the group.
    for name in SUGGESTIONS:
        assert "--" + name.replace("_", "-") not in group and "--" + name.replace("_", "-") in text


def test_the_recipe_runs_with_the_resolved_levers(tmp_path, monkeypatch):
    """A lever set alone reaches the run: the recipe resolves once, and config.json records the table."""
    import json
    import io

    from rich.console import Console

    import _ft_fixtures as fx
    from finetune import speed as speed_mod
    from finetune.train import train

    seen = []
    real = speed_mod.resolve
    monkeypatch.setattr(speed_mod, "resolve", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    data = fx.dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    cfg = fx.tiny_config(data, tmp_path / "out", max_steps=1, max_eval_samples=1, max_new_tokens=1, save_final=False,
                         speed={"pad_to_multiple_of": 32, "compile_layers": True}).validate()
    train(cfg, console=Console(file=io.StringIO(), width=200))
    assert seen == [replace(SpeedConfig(), pad_to_multiple_of=32)]        # compilation: CUDA only
    assert json.loads((tmp_path / "out" / "config.json").read_text())["speed"] == {
        "pad_to_multiple_of": 32, "compile_layers": True}

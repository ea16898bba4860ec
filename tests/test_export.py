"""``run-finetune export RUN`` and ``--merge``: a LoRA run's model, merged (vision tower and projector
trained in full included), loads with ``AutoModelForImageTextToText`` alone and answers as the run did.

The built-in ``tiny`` and tiny random LLaVA and Qwen2.5-VL models (tests/test_families.py's builders,
real classes and processors) train two LoRA steps with their vision side in full; each run's greedy
answers (its predictions.jsonl, generated with the adapter in place) are compared with those of the
float32 export, reloaded into a fresh object. One bf16 export (``--merge``) is loaded and generates in
a process where peft cannot be imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import _ft_fixtures as fx

torch = pytest.importorskip("torch")

from test_families import build_llava, build_qwen, mixed_dataset  # noqa: E402

from finetune.cli import main as cli_main  # noqa: E402
from finetune.export import PEFT_MARKS, export_run  # noqa: E402

MAX_NEW = 6
BUILD = {"llava": build_llava, "qwen2.5-vl": lambda out: build_qwen(out, "2.5")}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def data(work) -> Path:
    return mixed_dataset(work / "data")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="module")
def runs(work, data):
    """A finished two-step LoRA run a model (vision side in full), built once; tiny's with --merge."""
    from finetune.train import train

    done = {}

    def get(name: str) -> tuple[Path, Path | None]:
        if name not in done:
            base = BUILD[name](work / f"model-{name}") if name in BUILD else None
            config = fx.tiny_config(data, work / f"run-{name}", model=str(base or "tiny"), method="lora",
                                    batch_size=4, max_steps=2, lr=2e-2, max_eval_samples=4, max_new_tokens=MAX_NEW,
                                    train_vision=True)
            config.merge = name == "tiny"   # --merge (parsed by the CLI into the same attribute)
            train(config)
            done[name] = (work / f"run-{name}", base)
        return done[name]

    return get


def _answers(run: Path) -> dict[int, str]:
    lines = (run / "predictions.jsonl").read_text().splitlines()
    return {i: json.loads(line)["prediction"] for i, line in enumerate(lines)}


def _reloaded_answers(folder: Path, data: Path) -> tuple[object, dict[int, str]]:
    """A fresh ``AutoModelForImageTextToText`` of ``folder`` and its greedy answers on the run's test rows."""
    from transformers import AutoModelForImageTextToText

    from finetune.config import DEFAULT_QUESTION
    from finetune.data import build_prompt, load_splits
    from finetune.evaluate import generate_texts
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(folder))    # the processor as run-finetune loads one
    loaded.model = AutoModelForImageTextToText.from_pretrained(str(folder))
    test = load_splits(str(data))["test"].select(range(4))
    texts = generate_texts(loaded.model, loaded, test, build_prompt(loaded, DEFAULT_QUESTION), batch_size=4,
                           max_new_tokens=MAX_NEW, device=torch.device("cpu"))
    return loaded.model, texts


def _base_weights(run: Path, base: Path | None) -> dict[str, torch.Tensor]:
    """The weights the run started from: a real model's folder, or tiny rebuilt from the run's tokenizer."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from finetune.builtins import build_builtin

    if base is not None:
        model = AutoModelForImageTextToText.from_pretrained(str(base))
    else:
        model = build_builtin("tiny", AutoTokenizer.from_pretrained(str(run / "processor")), seed=0).model
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["tiny", "llava", "qwen2.5-vl"])
def test_float32_export_answers_as_the_adapter_run(name, runs, data, tmp_path):
    from safetensors.torch import load_file

    run, base = runs(name)
    result = export_run(run, tmp_path / "f32", dtype="float32")
    files = sorted(p.name for p in result.out.iterdir())
    assert "model.safetensors" in files and "config.json" in files and not any("adapter" in f for f in files), files
    weights = load_file(str(result.out / "model.safetensors"))
    assert not [k for k in weights if any(mark in k for mark in PEFT_MARKS)]
    if base is not None:   # a real model's adapter merged here: every LoRA layer moved, the tower taken as trained
        assert result.report.lora_layers > 0 and result.report.lora_layers_changed == result.report.lora_layers
        assert any("visual" in m or "vision_tower" in m for m in result.report.trained_in_full), result.report
    model, texts = _reloaded_answers(result.out, data)
    assert not hasattr(model, "peft_config") and next(model.parameters()).dtype == torch.float32
    assert texts == _answers(run), (texts, _answers(run))
    after, before = model.state_dict(), _base_weights(run, base)
    assert after.keys() == before.keys()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    decoder = [k for k in moved if "layers" in k and "proj" in k and not any(v in k for v in ("visual", "vision"))]
    assert decoder, "no LoRA-targeted decoder weight moved"
    assert any("visual" in k or "vision_tower" in k for k in moved), "the trained vision tower was not kept"


def test_merge_writes_a_bf16_folder_that_loads_without_peft(runs, data):
    run, _ = runs("tiny")
    merged = run / "merged"
    info = json.loads((merged / "export.json").read_text())
    assert info["dtype"] == "bfloat16" and info["method"] == "lora"
    script = (
        "import sys; sys.modules['peft'] = None\n"    # import peft now raises ImportError
        "import torch\nfrom transformers import AutoModelForImageTextToText, AutoTokenizer\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(merged)!r})\n"
        "assert next(m.parameters()).dtype == torch.bfloat16, next(m.parameters()).dtype\n"
        f"t = AutoTokenizer.from_pretrained({str(merged)!r})\n"
        "ids = t('<|user|>\\nWhat is it?<|end|>\\n<|assistant|>\\n', return_tensors='pt').input_ids\n"
        "out = m.generate(input_ids=ids, max_new_tokens=4, do_sample=False)\n"
        "assert out.shape[1] > ids.shape[1]; print('ok', type(m).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def _one_line_error(argv: list[str], capsys, code: int = 2) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    err = capsys.readouterr().err
    said = [line for line in err.split("\n") if line and "\r" not in line]   # transformers' progress bars aside
    assert exit_.value.code == code and "Traceback" not in err and len(said) == 1, err
    assert said[0].startswith("run-finetune: error: "), err
    return said[0]


def test_a_bad_run_folder_is_one_line(tmp_path, capsys):
    assert "does not exist" in _one_line_error(["export", str(tmp_path / "nowhere")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _one_line_error(["export", str(tmp_path / "empty")], capsys)
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints" / "step-00000002").mkdir(parents=True)
    (stopped / "checkpoints" / "step-00000002" / "state.pt").write_bytes(b"")
    (stopped / "config.json").write_text(json.dumps({"model": "tiny", "method": "lora"}))
    err = _one_line_error(["export", str(stopped)], capsys)
    assert "no final model" in err and "--resume" in err and "step-00000002" in err
    (stopped / "config.json").write_text("{not json")
    assert "cannot read" in _one_line_error(["export", str(stopped)], capsys)
    assert "invalid choice" in _one_line_error(["export", str(stopped), "--dtype", "int8"], capsys)


def test_export_is_atomic(runs, tmp_path, capsys, monkeypatch):
    """A write that fails half-way (a full disk) leaves the earlier export as it was and no temporary;
    the export never goes over the run itself."""
    from transformers import PreTrainedModel

    run, _ = runs("llava")
    out = tmp_path / "exported"
    assert cli_main(["export", str(run), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    saved = PreTrainedModel.save_pretrained

    def full_disk(self, folder, *args, **kwargs):
        saved(self, folder, *args, **kwargs)   # the weights are written, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    assert "No space left" in _one_line_error(["export", str(run), "--out", str(out)], capsys, code=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]   # no .exported.tmp-* left
    assert "would replace" in _one_line_error(["export", str(run), "--out", str(run)], capsys)

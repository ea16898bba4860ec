"""A torchvision that raises on import (PyPI's CUDA wheel beside a CPU torch: 'operator torchvision::nms does
not exist') is set aside with one warning, and the built-in models and processors still load (issue 20).
Without the guard, transformers imports it on the way to any model class and tiny cannot be built."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]

BUILD = """
from finetune.builtins import build_builtin
from finetune.tokenizer import train_tokenizer
tokenizer = train_tokenizer(["Product: Black Wool Coat, Category: COATS, Full Price: 990.0"], vocab_size=300)
loaded = build_builtin("tiny", tokenizer)
print(type(loaded.model).__name__, type(loaded.processor.image_processor).__name__)
"""


def test_a_torchvision_that_does_not_load_is_set_aside(tmp_path):
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    (tmp_path / "torchvision-0.99.0.dist-info").mkdir()
    (tmp_path / "torchvision-0.99.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["FastVlmForConditionalGeneration", "CLIPImageProcessorPil"]
    warning = [line for line in done.stderr.splitlines() if "torchvision" in line]
    assert warning == ["warning: torchvision is installed but does not load (operator torchvision::nms does not exist); "
                       "running without it. Install the torchvision build that matches your torch, or uninstall it."]

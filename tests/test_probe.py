"""The reference image classifier (bench/probe.py) reads the generated pictures: trained for a few
epochs on a small catalogue, it scores category3 well above the majority class, and it sees the
renderer: a catalogue whose silhouettes are all drawn as one (a renderer that blurs the signal)
scores near the majority class."""
from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch")

from bench.probe import ProbeConfig, run_probe  # noqa: E402
from finetune.data import load_splits  # noqa: E402
from generator.api import GenerateConfig, generate_to_dir  # noqa: E402
from generator.render import shapes  # noqa: E402

ROWS = 640
CONFIG = ProbeConfig(epochs=10)


def _majority(data) -> float:
    splits = load_splits(str(data))
    top = Counter(splits["train"]["category3_code"]).most_common(1)[0][0]
    return sum(c == top for c in splits["test"]["category3_code"]) / len(splits["test"])


def test_the_probe_reads_the_category_from_the_pictures(tmp_path):
    data = generate_to_dir(GenerateConfig(rows=ROWS, seed=0, image_size=64), tmp_path / "catalogue")
    got = run_probe(str(data), CONFIG)
    assert got["n_test"] == 64
    assert got["category3_accuracy"] >= _majority(data) + 0.25, got
    assert got["category2_accuracy"] > got["category3_accuracy"] - 0.05   # fewer, coarser classes


def test_a_renderer_that_draws_everything_alike_shows_in_the_probe(tmp_path, monkeypatch):
    # Every silhouette drawn as a tote: only colour, texture and pattern are left to read.
    for name in list(shapes._SHAPES):
        monkeypatch.setitem(shapes._SHAPES, name, shapes._SHAPES["tote"])
    shapes._plan.cache_clear()
    try:
        data = generate_to_dir(GenerateConfig(rows=ROWS, seed=0, image_size=64), tmp_path / "catalogue")
        got = run_probe(str(data), CONFIG)
    finally:
        shapes._plan.cache_clear()
    assert got["category3_accuracy"] <= _majority(data) + 0.2, got

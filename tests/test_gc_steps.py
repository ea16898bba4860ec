"""The training loop runs Python's collector on its own schedule and leaves it as it found it."""
from __future__ import annotations

import gc

from finetune.speed.gc import collect_every


def test_the_loop_collects_the_young_generations_every_n_steps_and_restores_the_collector(monkeypatch):
    calls = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or real(generation))
    assert gc.isenabled()
    with collect_every(3) as collector:
        assert not gc.isenabled()
        for step in range(1, 8):
            collector.step(step)
    assert gc.isenabled()
    assert calls == [1, 1, 1]  # on entry, then after steps 3 and 6


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with collect_every(5):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_when_the_loop_fails():
    try:
        with collect_every():
            raise RuntimeError("a step failed")
    except RuntimeError:
        pass
    assert gc.isenabled()

"""Python's garbage collector on the training loop's schedule instead of its own.

After ``torch.compile`` a process holds millions of long-lived objects (graphs, guards, symbolic
shapes), and an automatic full collection walks all of them: a pause of a large fraction of a
second, landing in whichever step happens to allocate at the wrong moment. Training steps make
few reference cycles, so the automatic collector is switched off for the loop and the young
generations are collected every ``every`` steps, where the pause is short and predictable
(torchtitan's training loop does the same).

Measured on this project's 2-core CPU machine: with the tiny model's layers compiled, the process
holds 553k objects and a full collection takes 0.26-0.30 s; a generation-1 collection under 0.1 ms.
The H200 benchmark run 0004 had one fast-preset round 0.5 s slower than the other nine.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_EVERY = 50


@dataclass
class StepCollector:
    every: int

    def step(self, step: int) -> None:
        """Call after each optimizer step."""
        if self.every > 0 and step % self.every == 0:
            gc.collect(1)


@contextlib.contextmanager
def collect_every(every: int = DEFAULT_EVERY) -> Iterator[StepCollector]:
    """Within the block, no automatic collection; ``.step(n)`` collects generations 0-1 every ``every`` steps.

    The collector's previous state comes back on exit, so a notebook's session is left as it was.
    """
    was_enabled = gc.isenabled()
    gc.collect(1)
    gc.disable()
    try:
        yield StepCollector(every)
    finally:
        if was_enabled:
            gc.enable()

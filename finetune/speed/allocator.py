"""The CUDA caching allocator's setting for training: expandable segments.

Batches of varying width fragment the CUDA caching allocator: without expandable segments an H200
LoRA run stalled up to 2.5 s on some eager steps (bench/results/gpu/h200_levers.jsonl). The setting
is read when CUDA first allocates, so it is made before anything touches the GPU; a value the user
set in ``PYTORCH_CUDA_ALLOC_CONF`` wins.
"""
from __future__ import annotations

import os

ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def use_expandable_segments() -> None:
    """Ask for expandable segments unless ``PYTORCH_CUDA_ALLOC_CONF`` is already set."""
    os.environ.setdefault(ALLOC_CONF, EXPANDABLE_SEGMENTS)

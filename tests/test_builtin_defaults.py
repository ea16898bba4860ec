"""What a run that leaves a setting open gets, per model: the tiny built-ins train in fp32 on CUDA too
(bf16 weights lost them accuracy and speed on an H200: bench/results/gpu/h200_0008_*), everything else in
bf16 on CUDA, and nothing in bf16 on the CPU."""
from __future__ import annotations

import pytest

from finetune.builtins import default_bf16


@pytest.mark.parametrize("model, cuda", [("tiny", False), ("tiny-llava", False), ("phi3v-shape", True),
                                         ("tiny-qwen2.5-vl", True), ("/models/Qwen2.5-VL-3B-Instruct", True)])
def test_bf16_by_default_on_cuda_but_for_the_tiny_builtins(model, cuda):
    assert default_bf16(model, "cuda") is cuda
    assert default_bf16(model, "cpu") is False

"""The training path and the generation path read the same inputs the same way, on every device.

Training runs its own forward (``loss.backbone_hidden_states``: image features merged into the
token embeddings, logits only at answer positions); evaluation runs ``model.generate``. If the two
disagree, a run learns one thing and is scored on another. That happened on the lent H200: its
transformers (5.17) silently dropped the keyword that carried the image features into the training
forward, so training saw no pictures while generation did (0 % category3 there, 20 % on this CPU).

The check needs no trained model: greedy generation picks, at each step, the arg-max of the
model's next-token logits, so the training path run over prompt + generated tokens must put its
arg-max on the same tokens (where the top two logits are not a near tie).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import indexed_rows_and_tokenizer  # noqa: E402

from finetune.config import DEFAULT_QUESTION  # noqa: E402
from finetune.data import Collator, build_prompt, model_inputs  # noqa: E402
from finetune.loss import backbone_hidden_states  # noqa: E402
from finetune.builtins import build_builtin  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.fixture(scope="module")
def rows_and_tokenizer():
    return indexed_rows_and_tokenizer(6, seed=5)


def _greedy_vs_training_path(loaded, rows, device, bf16: bool):
    prompt = build_prompt(loaded, DEFAULT_QUESTION)
    batch = Collator(loaded.processor, prompt, loaded.end_token, train=False)(rows)
    inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
    model = loaded.model.to(device).eval()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                             pad_token_id=loaded.tokenizer.pad_token_id)
        width = inputs["input_ids"].shape[1]
        train_inputs = {**inputs, "input_ids": out, "attention_mask": torch.ones_like(out)}
        hidden = backbone_hidden_states(model, train_inputs)
        logits = model.get_output_embeddings()(hidden[:, width - 1:-1]).float()
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > (1e-3 if not bf16 else 5e-2)
    return out[:, width:], logits.argmax(-1), clear


@pytest.mark.parametrize("device", DEVICES)
def test_training_forward_predicts_what_generation_generates(rows_and_tokenizer, device):
    rows, tokenizer = rows_and_tokenizer
    loaded = build_builtin("tiny", tokenizer, seed=1)
    generated, argmax, clear = _greedy_vs_training_path(loaded, rows, device, bf16=False)
    assert clear.float().mean() > 0.5          # enough tokens are decided to say something
    assert torch.equal(generated[clear], argmax[clear])


@pytest.mark.parametrize("device", DEVICES)
def test_training_forward_sees_the_image(rows_and_tokenizer, device):
    """Other pixels, other training-path hidden states, on the device a run trains on."""
    rows, tokenizer = rows_and_tokenizer
    loaded = build_builtin("tiny", tokenizer, seed=1)
    prompt = build_prompt(loaded, DEFAULT_QUESTION)
    batch = Collator(loaded.processor, prompt, loaded.end_token, train=True)(rows[:2])
    inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
    model = loaded.model.to(device).eval()
    swapped = {**inputs, "pixel_values": inputs["pixel_values"].flip(0)}
    with torch.no_grad():
        a = backbone_hidden_states(model, inputs)
        b = backbone_hidden_states(model, swapped)
        own = model.model(**inputs, use_cache=False)[0]   # transformers' own forward, images included
    assert (a[0] - b[0]).abs().max() > 1e-3
    torch.testing.assert_close(a, own, rtol=1e-4, atol=1e-4)

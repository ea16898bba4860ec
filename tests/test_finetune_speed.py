"""The speed levers change how fast a step runs, not what it computes: losses match step by step."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import indexed_rows_and_tokenizer  # noqa: E402

from finetune.config import DEFAULT_QUESTION, FinetuneConfig, FinetuneError  # noqa: E402
from finetune.data import Collator, build_prompt  # noqa: E402
from finetune.families import train_mode  # noqa: E402
from finetune.loss import LossModule, compute_loss  # noqa: E402
from finetune.builtins import build_builtin  # noqa: E402
from finetune.speed import PRESETS, SpeedConfig, drop_causal_mask, maskless_supported, resolve  # noqa: E402
from finetune.speed import prepare_model as apply_speed  # noqa: E402
from finetune.step import TrainStep  # noqa: E402
from finetune.train import prepare_model  # noqa: E402


# The levers are measured on phi3v-shape, a Llava model with a CLIP tower: tiny-llava is its CPU twin
# (tiny's ResNet tower has no transformer blocks to compile, and its BatchNorm no LayerNorm to fuse).
MODEL = "tiny-llava"


@pytest.fixture(scope="module")
def setup():
    return indexed_rows_and_tokenizer(16, seed=5)


def _batches(rows, loaded):
    collate = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token, train=True)
    return [collate(rows[i:i + 4]) for i in range(0, len(rows), 4)]


def _losses(setup, speed: SpeedConfig, steps: int = 4, model_name: str = MODEL) -> tuple[list[float], int]:
    """Losses of ``steps`` LoRA optimizer steps from the same start, taken as a run takes them
    (``TrainStep``, gradients not clipped); and how many batches ran maskless."""
    rows, tokenizer = setup
    loaded = build_builtin(model_name, tokenizer, seed=0)
    model = prepare_model(loaded, FinetuneConfig(model=model_name, method="lora", lora_dropout=0.0).validate())
    apply_speed(model, speed)
    maskless = speed.maskless and maskless_supported(model)
    train_mode(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    step = TrainStep(LossModule(model, "answer"), optimizer, device=torch.device("cpu"), max_grad_norm=0.0,
                     maskless=maskless, speed=speed)
    batches = _batches(rows, loaded)[:steps]
    dropped = sum("attention_mask" not in drop_causal_mask(batch, maskless) for batch in batches)
    return [step([batch]).loss.item() for batch in batches], dropped


def _count_calls(monkeypatch, module, name: str) -> list:
    """A list that grows by one at each call of ``module.name`` (which still runs)."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("model_name", [MODEL, "tiny"])
def test_maskless_batches_give_the_same_losses_step_by_step(setup, model_name):
    plain, kept = _losses(setup, SpeedConfig(), model_name=model_name)
    fast, dropped = _losses(setup, SpeedConfig(maskless=True), model_name=model_name)
    assert kept == 0 and dropped == 4
    assert fast == pytest.approx(plain, rel=1e-5)
    assert plain[-1] < plain[0]  # the steps did train


def test_maskless_batches_build_no_attention_mask(setup, monkeypatch):
    """A maskless batch runs SDPA with is_causal and never reaches transformers' mask builder, whose
    packed-sequence check reads a device tensor on the host (a GPU sync mid-forward)."""
    import transformers.masking_utils as masking_utils

    from finetune.data import model_inputs

    rows, tokenizer = setup
    loaded = build_builtin(MODEL, tokenizer, seed=0)
    batch = drop_causal_mask(_batches(rows, loaded)[0], True)
    assert "attention_mask" not in batch
    checks = []
    real = masking_utils.find_packed_sequence_indices
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices",
                        lambda *a, **k: checks.append(1) or real(*a, **k))
    with torch.no_grad():
        compute_loss(loaded.model, batch)
        assert checks == []
        assert loaded.model.config.text_config._attn_implementation == "sdpa"   # restored after the forward
        loaded.model(**model_inputs(batch), use_cache=False)  # control: the model's own forward runs the check
    assert checks


@pytest.mark.skipif(os.environ.get("SKIP_COMPILE_TEST") == "1", reason="SKIP_COMPILE_TEST=1")
def test_compiled_layers_give_the_same_losses_step_by_step(setup):
    # The CPU inductor backend stands in for the CUDA one: the same graphs, other kernels.
    plain, _ = _losses(setup, SpeedConfig(), steps=3)
    captured = torch._dynamo.utils.counters["stats"]["calls_captured"]
    compiled, _ = _losses(setup, SpeedConfig(compile_layers=True, maskless=True, fused_lora=True,
                                              answer_only_last_mlp=True), steps=3)
    assert torch._dynamo.utils.counters["stats"]["calls_captured"] > captured  # graphs were made and run
    torch._dynamo.reset()
    assert compiled == pytest.approx(plain, rel=1e-4)


def test_only_right_padded_training_batches_lose_their_mask():
    ids = torch.ones(2, 4, dtype=torch.long)
    right = {"input_ids": ids, "labels": ids, "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    left = {**right, "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])}
    assert "attention_mask" not in drop_causal_mask(right, True)
    assert "attention_mask" in drop_causal_mask(right, False)
    assert drop_causal_mask(left, True) is left  # left padding (generation) must keep it
    generation = {k: v for k, v in right.items() if k != "labels"}
    assert drop_causal_mask(generation, True) is generation


def test_compiled_layers_fall_back_to_eager_outside_training(setup):
    _, tokenizer = setup
    loaded = build_builtin(MODEL, tokenizer, seed=0)
    assert apply_speed(loaded.model, SpeedConfig(compile_layers=True)) == 4  # 2 vision + 2 decoder blocks
    layer = loaded.model.model.language_model.layers[0]
    loaded.model.eval()
    hidden = torch.randn(1, 3, loaded.model.config.text_config.hidden_size)
    cos_sin = loaded.model.model.language_model.rotary_emb(hidden, torch.arange(3)[None])
    calls = torch._dynamo.utils.counters["stats"]["calls_captured"]
    layer(hidden, position_embeddings=cos_sin)  # eval mode: no graph captured
    assert torch._dynamo.utils.counters["stats"]["calls_captured"] == calls


def test_presets_fill_only_the_settings_a_run_leaves_open():
    fast = FinetuneConfig(model=MODEL, preset="fast").validate()
    assert (fast.batch_size, fast.lora_dropout) == (PRESETS["fast"].batch_size, 0.0)
    mine = FinetuneConfig(model=MODEL, preset="low-memory", batch_size=4, lora_dropout=0.1).validate()
    assert (mine.batch_size, mine.lora_dropout) == (4, 0.1)
    plain = FinetuneConfig(model=MODEL).validate()
    assert (plain.batch_size, plain.lora_dropout) == (16, 0.05)
    with pytest.raises(FinetuneError, match="--preset must be one of"):
        FinetuneConfig(preset="turbo").validate()
    assert not resolve("fast", cuda=False).compile_layers and resolve("fast", cuda=False).maskless


def test_fused_lora_linear_matches_peft_values_and_gradients():
    from peft import LoraConfig, get_peft_model

    from finetune.speed.fused_lora import fuse_lora_linears

    torch.manual_seed(0)

    def model():
        torch.manual_seed(1)
        base = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.GELU(), torch.nn.Linear(20, 6, bias=False))
        peft_model = get_peft_model(base.double(), LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]))
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would hide a wrong A gradient
                torch.nn.init.normal_(p)
        return peft_model

    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
    reference, fused = model(), model()
    assert fuse_lora_linears(fused) == 2
    outs, grads = [], []
    for m in (reference, fused):
        x.grad = None
        out = m(x)
        out.square().sum().backward()
        outs.append(out)
        grads.append([x.grad.clone()] + [p.grad for p in m.parameters() if p.requires_grad])
    torch.testing.assert_close(outs[1], outs[0])
    assert len(grads[0]) == len(grads[1]) == 5
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)
    with fused.disable_adapter():  # peft's own switches still work: the base model alone
        torch.testing.assert_close(fused(x), fused.get_base_model()[2](fused.get_base_model()[1](
            torch.nn.functional.linear(x, fused.get_base_model()[0].base_layer.weight,
                                       fused.get_base_model()[0].base_layer.bias))))


def test_fused_lora_runs_under_autocast_with_fp32_adapters(monkeypatch):
    """peft keeps adapters in fp32 over a bf16 model and runs them under autocast: so must we."""
    from peft import LoraConfig, get_peft_model

    from finetune.speed import fused_lora

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 32)).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["0"], lora_dropout=0.0))
    torch.nn.init.normal_(model.base_model.model[0].lora_B["default"].weight)
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(x)
        calls = _count_calls(monkeypatch, fused_lora, "_lora_forward")
        assert fused_lora.fuse_lora_linears(model) == 1
        got = model(x)
        got.float().sum().backward()
    assert calls == [1] and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
    assert model.base_model.model[0].lora_A["default"].weight.grad.dtype == torch.float32


def test_fused_lora_gives_the_same_losses_step_by_step(setup, monkeypatch):
    from finetune.speed import fused_lora

    calls = _count_calls(monkeypatch, fused_lora, "_lora_forward")
    plain, _ = _losses(setup, SpeedConfig(maskless=True))
    assert calls == []
    fused, _ = _losses(setup, SpeedConfig(maskless=True, fused_lora=True))
    assert len(calls) == 4 * 2 * 4  # 4 steps x 2 decoder layers x (qkv, o, gate_up, down)
    assert fused == pytest.approx(plain, rel=1e-5)


def test_last_mlp_at_answer_positions_gives_the_same_losses_and_runs_on_those_rows_only(setup, monkeypatch):
    from finetune.speed import answer_mlp

    rows_seen = []
    real_patch = answer_mlp.patch

    def patch_and_watch(model):
        assert real_patch(model)
        answer_mlp.last_decoder_mlp(model).down_proj.register_forward_hook(
            lambda module, args, out: rows_seen.append(args[0].shape))
        return True

    monkeypatch.setattr(answer_mlp, "patch", patch_and_watch)
    plain, _ = _losses(setup, SpeedConfig(maskless=True))
    fewer, _ = _losses(setup, SpeedConfig(maskless=True, answer_only_last_mlp=True))
    assert fewer == pytest.approx(plain, rel=1e-5)
    rows, tokenizer = setup
    loaded = build_builtin(MODEL, tokenizer, seed=0)
    answers = [int((b["labels"][:, 1:] != -100).sum()) for b in _batches(rows, loaded)[:4]]
    # One 2-D call a step, on exactly the positions that predict an answer token.
    assert [s[0] for s in rows_seen] == answers and all(len(s) == 2 for s in rows_seen)
    assert sum(answers) < sum(b["labels"].numel() for b in _batches(rows, loaded)[:4]) / 2  # fewer rows than all


def test_last_mlp_at_answer_positions_compiles_once_for_every_answer_count(setup):
    import torch._dynamo

    torch._dynamo.reset()
    rows, tokenizer = setup
    loaded = build_builtin(MODEL, tokenizer, seed=0)
    model = prepare_model(loaded, FinetuneConfig(model=MODEL, method="lora", lora_dropout=0.0).validate())
    apply_speed(model, SpeedConfig(compile_layers=True, maskless=True, answer_only_last_mlp=True))
    train_mode(model)
    graphs = []
    for batch in _batches(rows, loaded):
        compute_loss(model, drop_causal_mask(batch, True)).loss.backward()
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    answers = {int((b["labels"][:, 1:] != -100).sum()) for b in _batches(rows, loaded)}
    assert len(answers) > 1  # the batches do differ in how many positions the MLP runs on
    assert graphs[-1] == graphs[1], graphs  # made in the first two steps, never again

"""The recipe and its TrainStep train exactly as the loop they replaced: the same losses step by step.

tests/finetune_losses.json holds what the loop before them logged for short tiny runs (full, LoRA,
gradient accumulation with a mid-run evaluation and checkpoints, augmentation, the plain loss, and
the CPU levers of both presets: maskless batches, padded widths, fused LoRA, the last MLP at the
answer positions, cached image features) and a digest of the weights each run ended with, all on
the CPU. On the platform they were recorded on they must match bit for bit; elsewhere (other
kernels, other JPEG decoders) closely.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import _ft_fixtures as fx  # noqa: E402
from rich.console import Console  # noqa: E402

from finetune.checkpoints import latest_checkpoint  # noqa: E402
from finetune.loss import ANSWER_INDEX_KEY, compute_loss, with_host_indices  # noqa: E402
from finetune.recipe import Recipe  # noqa: E402
from finetune.tracking import LOG_FILE  # noqa: E402
from finetune.train import train  # noqa: E402

RECORDED = json.loads((Path(__file__).with_name("finetune_losses.json")).read_text())


def _platform() -> dict[str, str]:
    import PIL
    import transformers

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "pillow": PIL.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads()}   # other threads, other reduction orders: ~1e-7 apart


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fx.dataset_dir(tmp_path_factory.mktemp("data"))


def _weights_sha256(out: Path) -> str:
    from safetensors.torch import load_file

    weights = load_file(str(latest_checkpoint(out) / "trainable.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.parametrize("name", list(RECORDED["runs"]))
def test_train_logs_the_losses_of_the_loop_it_replaced(data, tmp_path, name):
    recorded = RECORDED["runs"][name]
    out = tmp_path / "out"
    # Recorded with the Llava tiny model of that time, which is tiny-llava now (tiny became a FastVLM).
    train(fx.tiny_config(data, out, device="cpu", model="tiny-llava", **recorded["settings"]), console=_quiet())
    lines = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    steps = [line for line in lines if "train/loss" in line]
    got = {key: [line[f"train/{key}"] for line in steps] for key in ("loss", "grad_norm", "lr")}
    if _platform() == RECORDED["platform"]:
        assert got == {key: recorded[key] for key in got}
        assert _weights_sha256(out) == recorded["weights_sha256"]
    else:
        for key, values in got.items():
            assert values == pytest.approx(recorded[key], rel=1e-4, abs=1e-6), key


def _reference_step(recipe: Recipe, micro: list[dict]) -> torch.Tensor:
    """One optimizer step as the loop before the recipe wrote it out, for one process in fp32: each
    micro-batch's answer-token loss over the step's answer tokens, backward, clip, AdamW, schedule."""
    micro = [with_host_indices(b) for b in micro if "labels" in b]
    n_items = sum(len(b[ANSWER_INDEX_KEY]) for b in micro)
    step_loss = torch.zeros(())
    for batch in micro:
        loss = compute_loss(recipe.model, batch, kind=recipe.cfg.loss, num_items=n_items).loss
        loss.backward()
        step_loss += loss.detach()
    torch.nn.utils.clip_grad_norm_([p for p in recipe.model.parameters() if p.requires_grad],
                                   recipe.cfg.max_grad_norm)
    recipe.optimizer.step()
    recipe.scheduler.step()
    recipe.optimizer.zero_grad(set_to_none=True)
    return step_loss


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_train_step_is_the_spelled_out_step(data, tmp_path, method):
    """On any platform: the recipe's steps and the spelled-out ones give the same losses and weights,
    bit for bit, from the same start (LoRA with dropout: the same random stream too)."""
    def recipe(name: str) -> Recipe:
        run = Recipe(fx.tiny_config(data, tmp_path / name, method=method, grad_accum=2, device="cpu"), _quiet())
        run.setup()
        return run

    ours = recipe("ours")
    losses = [ours.step(ours.next_micro_batches()).loss.item() for _ in range(4)]
    ours.close()
    spelled = recipe("spelled")
    expected = [_reference_step(spelled, spelled.next_micro_batches()).item() for _ in range(4)]
    spelled.close()
    assert losses == expected
    assert losses[-1] < losses[0]
    theirs = dict(spelled.model.named_parameters())
    for name, param in ours.model.named_parameters():
        assert torch.equal(param, theirs[name]), name

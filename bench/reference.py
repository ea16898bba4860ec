"""The public recipe's training step, reproduced for its cost: the reference every ratio is taken to.

The public Phi-3-vision recipe for this task fine-tunes the whole model, one sample at a time:

* full fine-tuning: every weight trains, the vision tower and projector included;
* batch size 1;
* the text (prompt + answer + end-of-turn) tokenized with padding to 512 tokens, and the image
  placeholder expanded into the model's image tokens: 512 - 1 + 576 = 1087 positions for
  phi3v-shape, most of them padding;
* labels are the input ids, unmasked: the loss covers the prompt, the image tokens and the padding,
  so the model computes vocabulary-sized logits at every position;
* AdamW with fp32 moments over bf16 weights and gradients: 12 bytes a parameter.

:func:`run_reference` runs N steps of it on a built-in model and returns samples/s and peak memory;
the benchmarks use :class:`ReferenceStep` one step per round. Data preparation happens before the
timed steps (at batch 1 it would add a few percent): what is timed is the model's cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench import measure

TEXT_LENGTH = 512


class AdamWFP32States:
    """AdamW (decoupled weight decay) whose moments are fp32 whatever the parameters' dtype.

    ``torch.optim.AdamW`` keeps its moments in the parameters' dtype; the recipe's 12 bytes a
    parameter need fp32 moments beside bf16 weights. The update is computed in fp32 with foreach
    kernels, a chunk of tensors at a time so the fp32 temporaries stay small.
    """

    def __init__(self, params, lr: float = 2e-5, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, chunk_elements: int = 64 * 2**20):
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.step_count = 0
        self.chunks: list[list[int]] = [[]]
        size = 0
        for i, p in enumerate(self.params):
            if size and size + p.numel() > chunk_elements:
                self.chunks.append([])
                size = 0
            self.chunks[-1].append(i)
            size += p.numel()

    def step(self) -> None:
        import torch

        self.step_count += 1
        beta1, beta2 = self.betas
        bc1 = 1 - beta1**self.step_count
        bc2 = 1 - beta2**self.step_count
        with torch.no_grad():
            for chunk in self.chunks:
                idx = [i for i in chunk if self.params[i].grad is not None]
                if not idx:
                    continue
                params = [self.params[i] for i in idx]
                m = [self.exp_avg[i] for i in idx]
                v = [self.exp_avg_sq[i] for i in idx]
                grads = [p.grad.float() for p in params]
                torch._foreach_lerp_(m, grads, 1 - beta1)
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
                del grads
                denom = torch._foreach_sqrt(v)
                torch._foreach_div_(denom, math.sqrt(bc2))
                torch._foreach_add_(denom, self.eps)
                master = [p.float() for p in params]
                if self.weight_decay:
                    torch._foreach_mul_(master, 1 - self.lr * self.weight_decay)
                torch._foreach_addcdiv_(master, m, denom, value=-self.lr / bc1)
                for p, new in zip(params, master):
                    p.copy_(new)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def reference_samples(loaded, rows, *, question: str | None = None, text_length: int = TEXT_LENGTH,
                      limit: int = 8) -> list[dict[str, Any]]:
    """Batches of one, as the recipe builds them: padded text, expanded image tokens, unmasked labels."""
    import torch

    from finetune.config import DEFAULT_QUESTION
    from finetune.data import answer_text, decode_image, phi3_prompt

    tokenizer = loaded.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(loaded.image_token)
    image_tokens = loaded.model.config.image_seq_length
    prompt = phi3_prompt(question or DEFAULT_QUESTION, loaded.image_token)
    samples = []
    for row in rows:
        image = decode_image(row["image"])
        if image is None:
            continue
        enc = tokenizer(prompt + answer_text(row) + loaded.end_token, padding="max_length", max_length=text_length,
                        truncation=True, add_special_tokens=False)
        ids, mask = [], []
        for token, m in zip(enc["input_ids"], enc["attention_mask"]):
            n = image_tokens if token == image_id else 1
            ids += [token] * n
            mask += [m] * n
        pixels = loaded.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        input_ids = torch.tensor([ids])
        samples.append({"input_ids": input_ids, "attention_mask": torch.tensor([mask]),
                        "labels": input_ids.clone(), "pixel_values": pixels})
        if len(samples) == limit:
            break
    if not samples:
        raise ValueError("no readable rows for the reference")
    return samples


class ReferenceStep:
    """One step of the recipe per call: forward with the model's own loss, backward, clip, AdamW."""

    def __init__(self, loaded, rows, *, device: str, lr: float = 2e-5, max_grad_norm: float = 1.0):
        import torch

        self.device = torch.device(device)
        self.model = loaded.model
        self.flops = measure.full_flops(measure.param_split(self.model), self.model.config.image_seq_length)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.config.use_cache = False
        self.model.train()
        self.optimizer = AdamWFP32States(self.model.parameters(), lr=lr)
        self.max_grad_norm = max_grad_norm
        pin = self.device.type == "cuda"
        self.samples = [{k: v.pin_memory() if pin else v for k, v in s.items()}
                        for s in reference_samples(loaded, rows)]
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        import torch

        sample = self.samples[self.calls % len(self.samples)]
        self.calls += 1
        batch = {k: v.to(self.device, non_blocking=True) for k, v in sample.items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        loss = self.model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        value = loss.item()
        measure.synchronize(str(self.device))
        return {"samples": 1, "tokens": batch["input_ids"].numel(),
                "real_tokens": int(batch["attention_mask"].sum()), "loss": value}

    def close(self) -> None:
        self.model = None
        self.optimizer = None
        self.samples = []


SETTINGS = {"method": "full", "batch_size": 1, "text_padded_to": TEXT_LENGTH, "labels": "unmasked (prompt, image "
            "tokens and padding)", "loss": "the model's own (logits at every position)",
            "optimizer": "AdamW, fp32 moments, bf16 weights and gradients on CUDA (12 bytes/param)",
            "max_grad_norm": 1.0}


@dataclass
class ReferenceResult:
    figures: dict[str, Any]

    @property
    def samples_per_s(self) -> float:
        return self.figures["samples_per_s"]

    @property
    def peak_memory_gib(self) -> float:
        return self.figures["peak_memory_gib"]


def measure_reference(step: ReferenceStep, benchmark, *, rounds: int, warmup_rounds: int, device: str) -> dict:
    """Time ``rounds`` steps after ``warmup_rounds`` (with pytest-benchmark, or without it)."""
    cuda = device.startswith("cuda")
    if cuda:
        measure.reset_cuda_peak(device)
    with measure.PeakRSS() as rss:
        rounds_ = measure.run_rounds(benchmark, step, rounds=rounds, warmup_rounds=warmup_rounds)
    peak = measure.cuda_peak_gib(device) if cuda else rss.gib
    figures = measure.train_figures(rounds_, flops=step.flops, device=device, peak_memory_gib=peak,
                                    memory_kind="cuda_max_allocated" if cuda else "process_rss")
    return {**figures, **SETTINGS, "series": "public recipe"}


def run_reference(model: str, tokenizer, rows, *, steps: int = 10, warmup: int = 3, device: str = "cuda",
                  dtype=None, benchmark=None) -> ReferenceResult:
    """Build the built-in ``model`` on ``device`` and run the recipe for ``warmup + steps`` steps.

    ``rows``: training rows with an undecoded ``image`` (a ``datasets`` split or a list of dicts).
    ``dtype``: bf16 on CUDA, fp32 on CPU by default.
    """
    import torch

    from finetune.builtins import build_builtin

    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    loaded = build_builtin(model, tokenizer, device=device, dtype=dtype)
    step = ReferenceStep(loaded, rows, device=device)
    del loaded
    try:
        figures = measure_reference(step, benchmark or measure.PlainTimer(), rounds=steps, warmup_rounds=warmup,
                                    device=device)
    finally:
        step.close()
        measure.free_cuda()
    return ReferenceResult({**figures, "model": model, "dtype": str(dtype).replace("torch.", "")})

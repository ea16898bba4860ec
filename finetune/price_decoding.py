"""The price answer by minimum Bayes risk: the price the model's own distribution says is least wrong.

Greedy decoding writes the most probable price tokens, close to the *mode* of what the model believes.
Price error is scored as a percentage (MAPE), whose best answer under a belief is a weighted median
that sits below the mode of a right-skewed price distribution. On the default catalogue (issue 18) a
model that answered the conditional median of its own reading of the picture would score 23.2 % where
its greedy prices scored 26.8 %. So, after greedy generation has written the title and category, each
candidate price is scored by the model (teacher-forced, the same picture, prompt and answer prefix) and
the answer is the candidate with the least expected percentage error under those probabilities.

The candidates come from the *train split*: the prices seen with the category3 the model answered
(the most frequent :data:`MAX_CANDIDATES`), so the method needs no knowledge of how the data was made and
works on any catalogue. Rows whose answer did not parse, or whose category the train split never had,
keep their greedy price. Cost: one teacher-forced forward per candidate, about ``MAX_CANDIDATES`` times a
greedy evaluation's prefill; ``FinetuneConfig.price_mbr`` turns it off.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from .data import IGNORE_INDEX, Collator

MAX_CANDIDATES = 64
# Logits a scoring batch may hold (floats; 1 GiB in float32) where the forward returns them at every position
# (a model ``loss.supports_answer_loss`` refuses: logit soft-capping or scaling, no separate head): a 150k-token
# vocabulary scores a few sequences at a time. Elsewhere logits exist only at the answer tokens.
LOGITS_BUDGET = 2**28


def candidates_by_category(train_rows: list[dict]) -> dict[str, list[float]]:
    """category3 -> the train split's most frequent full prices of it (up to :data:`MAX_CANDIDATES`)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in train_rows:
        price = row.get("full_price")
        if row.get("category3_code") and isinstance(price, (int, float)) and math.isfinite(price) and price > 0:
            counts[row["category3_code"]][float(price)] += 1
    return {c3: sorted(p for p, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CANDIDATES])
            for c3, c in counts.items()}


def least_expected_mape(prices: list[float], log_probs: list[float]) -> float:
    """The candidate price with the least expected |answer - price| / price under softmax(log_probs)."""
    top = max(log_probs)
    weights = [math.exp(lp - top) for lp in log_probs]
    total = sum(weights)
    return min(prices, key=lambda a: sum(w * abs(a - y) / y for w, y in zip(weights, prices)) / total)


def sequence_log_probs(core, batch: dict) -> list[float]:
    """Sum of the log-probabilities of each row's answer tokens (its labels), teacher-forced: with logits
    only where the answer is predicted, as the training loss computes them, where the model allows it."""
    import torch
    import torch.nn.functional as F

    from .loss import answer_logits, forward_inputs, supports_answer_loss

    labels = batch["labels"]
    if supports_answer_loss(core):
        logits, targets, index = answer_logits(core, batch)
        per_token = -F.cross_entropy(logits.float(), targets, reduction="none")
        rows = torch.div(index, labels.shape[1], rounding_mode="floor").to(per_token.device)
        return torch.zeros(labels.shape[0], device=per_token.device).index_add_(0, rows, per_token).tolist()
    # Other models (logit soft-capping or scaling, no separate head): the forward's logits at every position.
    logits = core(**forward_inputs(batch)).logits.float()
    shifted, targets = logits[:, :-1], labels[:, 1:].to(logits.device)
    mask = targets != IGNORE_INDEX
    picked = torch.log_softmax(shifted, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1).tolist()


def mbr_prices(core, loaded, test_ds, answers: dict[int, Any], prompt: str, candidates: dict[str, list[float]], *,
               batch_size: int, device, bf16: bool = False, progress=None) -> dict[int, float]:
    """Row index -> the least-expected-error price, for every row whose parsed answer has a title and a
    category3 the train split priced. ``answers``: row index -> :class:`~finetune.evaluate.ParsedAnswer`."""
    import torch

    from .data import INDEX_KEY, SKIPPED_KEY

    jobs: list[tuple[int, float]] = []                     # (row index, candidate price) per sequence
    rows: list[dict] = []
    for idx, parsed in sorted(answers.items()):
        prices = candidates.get(parsed.category or "")
        if not parsed.title or not prices or len(prices) < 2:
            continue
        row = test_ds[idx]
        for price in prices:
            jobs.append((idx, price))
            rows.append({**row, INDEX_KEY: idx, "title": parsed.title, "category3_code": parsed.category,
                         "full_price": price})
    if not rows:
        return {}
    from .families import train_mode

    collator = Collator(loaded.processor, prompt, loaded.end_token, train=True)
    scores: list[float] = []
    was_training = core.training
    core.eval()   # no dropout: the same model that generated
    task = progress.add_task("price", total=len(rows)) if progress is not None else None
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            start = 0
            while start < len(rows):
                batch = collator(rows[start:start + batch_size])
                fit = _rows_within_budget(core, batch["input_ids"].shape[1])
                if fit is not None and fit < len(batch[INDEX_KEY]):
                    batch = collator(rows[start:start + fit])
                start += len(batch[INDEX_KEY]) + len(batch[SKIPPED_KEY])
                if batch[SKIPPED_KEY]:   # generation read these pictures: they cannot fail now
                    raise RuntimeError(f"price scoring could not read rows {batch[SKIPPED_KEY]}")
                batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
                scores += sequence_log_probs(core, batch)
                if task is not None:
                    progress.advance(task, len(batch[INDEX_KEY]))
    finally:
        if was_training:
            train_mode(core)
    per_row: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for (idx, price), lp in zip(jobs, scores):
        per_row[idx][0].append(price)
        per_row[idx][1].append(lp)
    return {idx: least_expected_mape(prices, lps) for idx, (prices, lps) in per_row.items()}


def _rows_within_budget(core, width: int) -> int | None:
    """How many ``width``-token sequences fit :data:`LOGITS_BUDGET`; None: no bound (answer-token logits)."""
    from .loss import supports_answer_loss

    if supports_answer_loss(core):
        return None
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    vocab = head.weight.shape[0] if head is not None and hasattr(head, "weight") else 1
    return max(1, LOGITS_BUDGET // (width * vocab))


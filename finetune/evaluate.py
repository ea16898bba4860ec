"""Evaluation by real generation on the test split, side by side with baselines on the same rows.

The model sees only the prompt and the image, generates greedily, and its text is parsed back into
title, category and price. Baselines use nothing but the training split (the most common category,
the median price, the median price of the true category), so the gap between a baseline and the
model is what the image added.
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.schema import IMAGE_COLUMN, REQUIRED_FOR_FINETUNE

from .data import INDEX_KEY, SKIPPED_KEY, Collator, answer_text, decode_image, format_price, make_loader, model_inputs

_FIELD = r"\s*[:=]\s*"
ANSWER_RE = re.compile(
    rf"Product{_FIELD}(?P<title>.*?)\s*[,;]\s*Category{_FIELD}(?P<category>.*?)\s*[,;]\s*"
    rf"Full\s*Price{_FIELD}\$?\s*(?P<price>[0-9][0-9,]*(?:\.[0-9]*)?)",
    re.IGNORECASE | re.DOTALL,
)
CATEGORY_RE = re.compile(rf"Category{_FIELD}(?P<category>[^,;\n]+)", re.IGNORECASE)
PRICE_RE = re.compile(rf"Price{_FIELD}\$?\s*(?P<price>[0-9][0-9,]*(?:\.[0-9]*)?)", re.IGNORECASE)
TITLE_RE = re.compile(rf"Product{_FIELD}(?P<title>[^,;\n]+)", re.IGNORECASE)


@dataclass
class ParsedAnswer:
    title: str | None = None
    category: str | None = None
    price: float | None = None

    @property
    def complete(self) -> bool:
        return self.title is not None and self.category is not None and self.price is not None


def parse_answer(text: str) -> ParsedAnswer:
    """Title, category and price from generated text; each field independently when the whole fails.

    Tolerates case, extra spaces, ``=`` for ``:``, ``;`` for ``,``, a ``$`` and thousands commas.
    """
    m = ANSWER_RE.search(text)
    if m:
        return ParsedAnswer(m["title"].strip(), m["category"].strip(), _to_price(m["price"]))
    t, c, p = TITLE_RE.search(text), CATEGORY_RE.search(text), PRICE_RE.search(text)
    return ParsedAnswer(
        t["title"].strip() if t else None,
        c["category"].strip() if c else None,
        _to_price(p["price"]) if p else None,
    )


def _to_price(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _norm(text: str | None) -> str:
    return " ".join((text or "").upper().split())


def token_f1(predicted: str | None, truth: str) -> float:
    """Bag-of-words F1 between two titles (case-insensitive)."""
    p, t = (predicted or "").lower().split(), truth.lower().split()
    common = sum((Counter(p) & Counter(t)).values())
    if not p or not t or common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------
# Scoring


@dataclass
class EvalResult:
    metrics: dict[str, Any]                          # {"model": {...}, "baselines": {...}, "n_test": ...}
    predictions: list[dict[str, Any]] = field(default_factory=list)
    dataset: Any = None                              # the test rows scored (predictions index into it)


def _meta(ds) -> list[dict]:
    return ds.select_columns([c for c in REQUIRED_FOR_FINETUNE if c != IMAGE_COLUMN]).to_list()


def _price_errors(pairs: list[tuple[float, float]]) -> dict[str, float]:
    if not pairs:
        return {"mae": math.nan, "mape": math.nan}
    mae = sum(abs(p - t) for p, t in pairs) / len(pairs)
    mape = 100 * sum(abs(p - t) / abs(t) for p, t in pairs if t) / max(1, sum(1 for _, t in pairs if t))
    return {"mae": mae, "mape": mape}


def score(texts: dict[int, str], train_rows: list[dict], test_rows: list[dict]) -> EvalResult:
    """Metrics of generated ``texts`` (test row index -> text) and the baselines, on the same rows.

    Rows whose image could not be read (absent from ``texts``) count as unparsed.
    """
    cat2_of = _category2_map(train_rows)
    median_price = statistics.median(r["full_price"] for r in train_rows)
    by_cat: dict[str, list[float]] = defaultdict(list)
    for r in train_rows:
        by_cat[_norm(r["category3_code"])].append(r["full_price"])
    cat_median = {c: statistics.median(v) for c, v in by_cat.items()}
    majority3 = Counter(_norm(r["category3_code"]) for r in train_rows).most_common(1)[0][0]
    majority2 = Counter(_norm(r["category2_code"]) for r in train_rows).most_common(1)[0][0]

    n = len(test_rows)
    predictions, parsed_pairs, all_pairs = [], [], []
    hits3 = hits2 = exact = parsed = 0
    f1_sum = 0.0
    for i, row in enumerate(test_rows):
        text = texts.get(i)
        ans = parse_answer(text) if text is not None else ParsedAnswer()
        truth3, truth2 = _norm(row["category3_code"]), _norm(row["category2_code"])
        ok3 = ans.category is not None and _norm(ans.category) == truth3
        ok2 = ans.category is not None and cat2_of.get(_norm(ans.category)) == truth2
        hits3 += ok3
        hits2 += ok2
        parsed += ans.complete
        exact += ans.title is not None and _norm(ans.title) == _norm(row["title"])
        f1_sum += token_f1(ans.title, row["title"])
        if ans.price is not None:
            parsed_pairs.append((ans.price, row["full_price"]))
        all_pairs.append((ans.price if ans.price is not None else median_price, row["full_price"]))
        predictions.append({
            "index": i,
            "prediction": text,
            "truth": answer_text(row),
            "parsed": ans.complete,
            "title": ans.title,
            "category3_code": ans.category,
            "full_price": ans.price,
            "true_title": row["title"],
            "true_category3_code": row["category3_code"],
            "true_category2_code": row["category2_code"],
            "true_full_price": row["full_price"],
            "category_correct": bool(ok3),
            "price_error": None if ans.price is None else ans.price - row["full_price"],
        })

    p_parsed, p_all = _price_errors(parsed_pairs), _price_errors(all_pairs)
    model = {
        "parse_rate": parsed / n,
        "category3_accuracy": hits3 / n,
        "category2_accuracy": hits2 / n,
        "price_mae": p_parsed["mae"],
        "price_mape": p_parsed["mape"],
        "price_mae_all": p_all["mae"],
        "price_mape_all": p_all["mape"],
        "title_exact_match": exact / n,
        "title_token_f1": f1_sum / n,
    }
    median = _price_errors([(median_price, r["full_price"]) for r in test_rows])
    per_cat = _price_errors([(cat_median.get(_norm(r["category3_code"]), median_price), r["full_price"])
                             for r in test_rows])
    baselines = {
        "majority_category": {
            "category3_accuracy": sum(_norm(r["category3_code"]) == majority3 for r in test_rows) / n,
            "category2_accuracy": sum(_norm(r["category2_code"]) == majority2 for r in test_rows) / n,
            "predicts": majority3,
        },
        "median_price": {"price_mae_all": median["mae"], "price_mape_all": median["mape"], "predicts": median_price},
        "category_median_price": {"price_mae_all": per_cat["mae"], "price_mape_all": per_cat["mape"]},
    }
    metrics = {"n_test": n, "n_parsed": parsed, "n_generated": len(texts), "model": model, "baselines": baselines}
    return EvalResult(metrics=metrics, predictions=predictions)


def _category2_map(train_rows: list[dict]) -> dict[str, str]:
    """category3 -> its most frequent category2 in the training split."""
    pairs: dict[str, Counter] = defaultdict(Counter)
    for r in train_rows:
        pairs[_norm(r["category3_code"])][_norm(r["category2_code"])] += 1
    return {c3: c.most_common(1)[0][0] for c3, c in pairs.items()}


# --------------------------------------------------------------------------------------------
# Generation


def generate_texts(model, loaded, test_ds, prompt: str, *, batch_size: int, max_new_tokens: int, device,
                   bf16: bool = False, num_workers: int = 0, progress=None) -> dict[int, str]:
    """Greedy, batched generation for every row of ``test_ds``: row index -> generated text."""
    import torch

    from .loss import core_model

    core = core_model(model)
    tokenizer = loaded.tokenizer
    collator = Collator(loaded.processor, prompt, loaded.end_token, train=False)
    loader = make_loader(test_ds, collator, batch_size=batch_size, num_workers=num_workers)
    was_training = core.training
    core.eval()
    texts: dict[int, str] = {}
    task = progress.add_task("eval", total=len(test_ds)) if progress is not None else None
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for batch in loader:
                if task is not None:
                    progress.advance(task, len(batch[INDEX_KEY]) + len(batch[SKIPPED_KEY]))
                if "input_ids" not in batch:
                    continue
                inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
                out = core.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                    eos_token_id=loaded.end_token_id, pad_token_id=tokenizer.pad_token_id,
                )
                new = out[:, inputs["input_ids"].shape[1]:]
                for idx, text in zip(batch[INDEX_KEY].tolist(), tokenizer.batch_decode(new, skip_special_tokens=True)):
                    texts[idx] = text.strip()
    finally:
        core.train(was_training)
    return texts


def evaluate(model, loaded, splits, prompt: str, *, batch_size: int = 32, max_new_tokens: int = 48, device=None,
             bf16: bool = False, max_samples: int | None = None, num_workers: int = 0, progress=None) -> EvalResult:
    """Generate on the test split (its first ``max_samples`` rows) and score against the baselines."""
    import torch

    device = device or torch.device("cpu")
    test = splits["test"]
    if max_samples is not None and max_samples < len(test):
        test = test.select(range(max_samples))
    texts = generate_texts(model, loaded, test, prompt, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           device=device, bf16=bf16, num_workers=num_workers, progress=progress)
    result = score(texts, _meta(splits["train"]), _meta(test))
    result.dataset = test
    return result


def sample_predictions(result: EvalResult, k: int = 16) -> list[dict]:
    """The first ``k`` predictions with their images (for the W&B table)."""
    out = []
    for p in result.predictions[:k]:
        image = decode_image(result.dataset[p["index"]][IMAGE_COLUMN]) if result.dataset is not None else None
        out.append({**p, "image": image, "prediction": p["prediction"] or ""})
    return out


# --------------------------------------------------------------------------------------------
# Output


def write_results(result: EvalResult, out: Path) -> None:
    """``metrics.json`` and ``predictions.jsonl`` in ``out``, each written to a temp file then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "metrics.json", json.dumps(_finite(result.metrics), indent=2) + "\n")
    _atomic_write(out / "predictions.jsonl", "".join(json.dumps(_finite(p)) + "\n" for p in result.predictions))


def _finite(obj):
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


_ROWS = (
    ("parse_rate", "parse rate", "pct"),
    ("category3_accuracy", "category3 accuracy", "pct"),
    ("category2_accuracy", "category2 accuracy", "pct"),
    ("price_mae", "price MAE (parsed rows)", "money"),
    ("price_mape", "price MAPE (parsed rows)", "pct100"),
    ("price_mae_all", "price MAE (unparsed = median)", "money"),
    ("price_mape_all", "price MAPE (unparsed = median)", "pct100"),
    ("title_exact_match", "title exact match", "pct"),
    ("title_token_f1", "title token F1", "pct"),
)


def results_table(metrics: dict[str, Any]):
    """A rich table: the model beside each baseline, one row per metric."""
    from rich.table import Table

    columns = [("model", metrics["model"])] + [(name.replace("_", " "), v) for name, v in metrics["baselines"].items()]
    table = Table(title=f"test split: {metrics['n_test']} rows")
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for key, label, kind in _ROWS:
        table.add_row(label, *(_fmt(values.get(key), kind) for _, values in columns))
    return table


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "pct100":
        return f"{value:.1f}%"
    return format_price(round(value, 1))

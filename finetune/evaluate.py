"""Evaluation by real generation on the test split, side by side with baselines on the same rows.

The model sees only the prompt and the image, generates greedily, and its text is parsed back into
title, category and price. Baselines use nothing but the training split (the most common category,
the median price, the median price of the true category), so the gap between a baseline and the
model is what the image added.

Category2 is not asked for: it is read from the answer (see ``Category2Rule``), so that an answer
naming the right product counts even where a category3 such as "N.A." files products under several
category2. Beside the headline figures, metrics.json holds what a user needs to see where the model
fails: accuracy per category3 class, the most common confusions, price error per class and the
answers that did not parse, with their text. Given the dataset's ``limits.json`` (what a perfect
image reader could score), the model's figures also stand beside that limit.
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.schema import IMAGE_COLUMN, REQUIRED_FOR_FINETUNE

from .data import INDEX_KEY, SKIPPED_KEY, Collator, answer_text, decode_image, make_loader, model_inputs
from . import price_decoding
from .families import core_model, train_mode

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


def score(texts: dict[int, str], train_rows: list[dict], test_rows: list[dict], *,
          limits: dict[str, Any] | None = None) -> EvalResult:
    """Metrics of generated ``texts`` (test row index -> text) and the baselines, on the same rows.

    Rows whose image could not be read (absent from ``texts``) count as unparsed. Category2 is
    derived from the answer's category3 and title by ``Category2Rule`` (its text goes to
    ``metrics["category2_rule"]``): a perfect answer scores 100 % category2 even where a category3
    spans several category2. Diagnostics (``per_category3``, ``confusions``,
    ``price_mape_by_category3``, ``unparsed``) are added beside the headline figures. With
    ``limits`` (``load_limits``: what a perfect image reader could score on this dataset),
    ``metrics["limits"]`` holds its figures in the model's units (``limits_in_metric_units``) and
    ``metrics["fraction_of_limit"]`` the share of each reached: model / limit for accuracies,
    limit / model for price errors (lower is better).
    """
    cat2_rule = Category2Rule(train_rows)
    train = _TrainFigures.of(train_rows)
    predictions = [_score_row(i, row, texts.get(i), cat2_rule) for i, row in enumerate(test_rows)]
    model = _model_metrics(predictions, train.median_price)
    metrics = {"n_test": len(test_rows), "n_parsed": sum(p["parsed"] for p in predictions),
               "n_generated": len(texts), "model": model, "baselines": _baselines(test_rows, train),
               "category2_rule": cat2_rule.describe()}
    metrics.update(diagnostics(predictions, test_rows, train.cat_median, train.median_price))
    limit_figures = limits_in_metric_units(limits) if limits else {}
    if limit_figures:
        metrics["limits"] = limit_figures
        metrics["fraction_of_limit"] = fraction_of_limit(model, limit_figures)
    return EvalResult(metrics=metrics, predictions=predictions)


@dataclass(frozen=True)
class _TrainFigures:
    """What the baselines predict, from the training split alone."""

    median_price: float
    cat_median: dict[str, float]     # category3 -> its median price
    majority3: str
    majority2: str

    @classmethod
    def of(cls, train_rows: list[dict]) -> "_TrainFigures":
        by_cat: dict[str, list[float]] = defaultdict(list)
        for r in train_rows:
            by_cat[_norm(r["category3_code"])].append(r["full_price"])
        return cls(median_price=statistics.median(r["full_price"] for r in train_rows),
                   cat_median={c: statistics.median(v) for c, v in by_cat.items()},
                   majority3=Counter(_norm(r["category3_code"]) for r in train_rows).most_common(1)[0][0],
                   majority2=Counter(_norm(r["category2_code"]) for r in train_rows).most_common(1)[0][0])


def _score_row(i: int, row: dict, text: str | None, cat2_rule: Category2Rule) -> dict[str, Any]:
    """One test row's prediction (a line of predictions.jsonl): the generated ``text`` parsed and compared."""
    ans = parse_answer(text) if text is not None else ParsedAnswer()
    ok3 = ans.category is not None and _norm(ans.category) == _norm(row["category3_code"])
    cat2 = cat2_rule(ans.category, ans.title) if ans.category is not None else None
    ok2 = cat2 is not None and cat2 == _norm(row["category2_code"])
    return {
        "index": i,
        "prediction": text,
        "truth": answer_text(row),
        "parsed": ans.complete,
        "title": ans.title,
        "category3_code": ans.category,
        "category2_code": cat2,
        "full_price": ans.price,
        "true_title": row["title"],
        "true_category3_code": row["category3_code"],
        "true_category2_code": row["category2_code"],
        "true_full_price": row["full_price"],
        "category_correct": bool(ok3),
        "category2_correct": bool(ok2),
        "price_error": None if ans.price is None else ans.price - row["full_price"],
    }


def _model_metrics(predictions: list[dict[str, Any]], median_price: float) -> dict[str, float]:
    """The model's headline figures; a price that did not parse counts as the median in ``*_all``."""
    n = len(predictions)
    priced = [(p["full_price"], p["true_full_price"]) for p in predictions if p["full_price"] is not None]
    p_parsed = _price_errors(priced)
    p_all = _price_errors([(p["full_price"] if p["full_price"] is not None else median_price, p["true_full_price"])
                           for p in predictions])
    return {
        "parse_rate": sum(p["parsed"] for p in predictions) / n,
        "category3_accuracy": sum(p["category_correct"] for p in predictions) / n,
        "category2_accuracy": sum(p["category2_correct"] for p in predictions) / n,
        "price_mae": p_parsed["mae"],
        "price_mape": p_parsed["mape"],
        "price_mae_all": p_all["mae"],
        "price_mape_all": p_all["mape"],
        "title_exact_match": sum(p["title"] is not None and _norm(p["title"]) == _norm(p["true_title"])
                                 for p in predictions) / n,
        "title_token_f1": sum(token_f1(p["title"], p["true_title"]) for p in predictions) / n,
    }


def _baselines(test_rows: list[dict], train: _TrainFigures) -> dict[str, dict[str, Any]]:
    """The training split's majority category and median prices, scored on the test rows."""
    n = len(test_rows)
    median = _price_errors([(train.median_price, r["full_price"]) for r in test_rows])
    per_cat = _price_errors([(train.cat_median.get(_norm(r["category3_code"]), train.median_price), r["full_price"])
                             for r in test_rows])
    return {
        "majority_category": {
            "category3_accuracy": sum(_norm(r["category3_code"]) == train.majority3 for r in test_rows) / n,
            "category2_accuracy": sum(_norm(r["category2_code"]) == train.majority2 for r in test_rows) / n,
            "predicts": train.majority3,
        },
        "median_price": {"price_mae_all": median["mae"], "price_mape_all": median["mape"],
                         "predicts": train.median_price},
        "category_median_price": {"price_mae_all": per_cat["mae"], "price_mape_all": per_cat["mape"]},
    }


# --------------------------------------------------------------------------------------------
# Category2 from the answer

_WORD_RE = re.compile(r"[a-z0-9]+")


def _words(text: str | None) -> set[str]:
    return set(_WORD_RE.findall((text or "").lower()))


class Category2Rule:
    """The category2 an answer names, from its category3 and its title, learnt from the train split.

    * A category3 filed under one category2 only in train: that category2.
    * A category3 filed under several (the catalogue's "N.A." sits under SCARVES, SKIRTS,
      ACCESSORIES and DRESSES): a vote of the title's words among those category2. Each word gives
      each candidate the share of the train rows (the whole split) whose title holds the word and
      that are filed under that candidate. Item words ("Kilt", "Charm", "Pinafore", "Scarf")
      belong to one category2 and carry a full vote; colours, materials and patterns spread over
      many category2 and weigh little, so a correct title decides it. (Likelihoods within the
      category3 would not do: "Leather" is far likelier for an N.A. accessory than for an N.A.
      skirt, which outvotes "Kilt" in "Bright Red Check Leather Kilt"; nor would the nearest
      title, as "Charcoal Check Wool Kilt" shares more words with a "Charcoal Check Wool Scarf"
      than with any kilt.) Checked on six generated catalogues (800 and 3,040 rows, five seeds):
      the truth text scores 100 % category2 on test and on train.
    * No title, no word of it in train, or a tie: the category3's most frequent category2 in train.
    * A category3 not in train: no category2 (counts as wrong).
    """

    def __init__(self, train_rows: list[dict]):
        pairs: dict[str, Counter] = defaultdict(Counter)
        word_rows: dict[str, Counter] = defaultdict(Counter)      # title word -> category2 -> train rows
        for r in train_rows:
            c2 = _norm(r["category2_code"])
            pairs[_norm(r["category3_code"])][c2] += 1
            for w in _words(r["title"]):
                word_rows[w][c2] += 1
        # Most frequent first, then by name: max() keeps the first of equal scores.
        self.candidates = {c3: sorted(c, key=lambda k: (-c[k], k)) for c3, c in pairs.items()}
        self.ambiguous = {c3: c for c3, c in self.candidates.items() if len(c) > 1}
        self._share = {w: {c2: k / sum(c.values()) for c2, k in c.items()} for w, c in word_rows.items()}

    def __call__(self, category3: str | None, title: str | None) -> str | None:
        cands = self.candidates.get(_norm(category3))
        if not cands:
            return None
        if len(cands) == 1:
            return cands[0]
        shares = [self._share[w] for w in _words(title) if w in self._share]
        return max(cands, key=lambda c2: sum(s.get(c2, 0.0) for s in shares))

    def describe(self) -> str:
        amb = "; ".join(f"{c3} -> {'/'.join(c)}" for c3, c in sorted(self.ambiguous.items()))
        text = ("category2 from the answer: the only category2 its category3 has in train; where a category3 "
                "has several, the one its title words vote for (each word gives each candidate the share of "
                "train rows holding the word filed under it, so item words such as Kilt decide and colours or "
                "materials hardly count); the category3's most frequent category2 without known title words "
                "or on a tie")
        return f"{text}. Ambiguous in train: {amb}" if amb else f"{text}. No category3 is ambiguous in train"


# --------------------------------------------------------------------------------------------
# Diagnostics and limits

N_CONFUSIONS = 20
N_UNPARSED = 50


def diagnostics(predictions: list[dict], test_rows: list[dict], cat_median: dict[str, float],
                median_price: float) -> dict[str, Any]:
    """Per-class figures for category3 and the answers that failed to parse, for metrics.json.

    * ``per_category3``: ``{class: {"n", "correct", "accuracy", "confused_with"}}`` over the test rows
      of each true class; ``confused_with`` is ``[category3, count]``, the wrong answer it got most
      often (None without one).
    * ``confusions``: ``[[true, predicted, count], ...]``, the ``N_CONFUSIONS`` most common wrong
      category3 answers (answers naming no category3 are in ``unparsed`` instead).
    * ``price_mape_by_category3``: ``{class: {"n", "mape", "baseline_mape"}}``: the model's MAPE over
      the rows of the class whose answer had a price (``n``; None without one), and the MAPE of the
      class's train median price on all its rows.
    * ``unparsed``: the first ``N_UNPARSED`` incomplete answers as ``{"index", "text"}`` (text None:
      the image could not be read), and ``n_unparsed`` all of them.
    """
    support: Counter = Counter()
    correct: Counter = Counter()
    wrong: Counter = Counter()
    priced: dict[str, list[tuple[float, float]]] = defaultdict(list)
    baseline: dict[str, list[tuple[float, float]]] = defaultdict(list)
    unparsed = []
    for p, row in zip(predictions, test_rows):
        truth = _norm(row["category3_code"])
        support[truth] += 1
        correct[truth] += p["category_correct"]
        if p["category3_code"] is not None and not p["category_correct"]:
            wrong[truth, _norm(p["category3_code"])] += 1
        if p["full_price"] is not None:
            priced[truth].append((p["full_price"], row["full_price"]))
        baseline[truth].append((cat_median.get(truth, median_price), row["full_price"]))
        if not p["parsed"]:
            unparsed.append({"index": p["index"], "text": p["prediction"]})
    classes = sorted(support)
    ranked = sorted(wrong.items(), key=lambda x: (-x[1], x[0]))         # most common first, then by name
    taken_for: dict[str, list] = {}
    for (t, q), k in ranked:
        taken_for.setdefault(t, [q, k])
    return {
        "per_category3": {c: {"n": support[c], "correct": correct[c], "accuracy": correct[c] / support[c],
                              "confused_with": taken_for.get(c)} for c in classes},
        "confusions": [[t, q, k] for (t, q), k in ranked[:N_CONFUSIONS]],
        "price_mape_by_category3": {c: {"n": len(priced[c]), "mape": _price_errors(priced[c])["mape"],
                                        "baseline_mape": _price_errors(baseline[c])["mape"]} for c in classes},
        "n_unparsed": len(unparsed),
        "unparsed": unparsed[:N_UNPARSED],
    }


LIMITS_FILE = "limits.json"


def load_limits(dataset_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    """The dataset's ``limits.json`` (what a perfect image reader could score), or None.

    None for a dataset without one, a Hub id, or a file that is not a JSON object (with a warning:
    a bad limits file should not cost a finished run its evaluation).
    """
    if dataset_dir is None:
        return None
    path = Path(dataset_dir).expanduser() / LIMITS_FILE
    if not path.is_file():
        return None
    try:
        limits = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"ignoring {path}: {e}", stacklevel=2)
        return None
    if not isinstance(limits, dict):
        warnings.warn(f"ignoring {path}: not a JSON object", stacklevel=2)
        return None
    return limits


def limits_in_metric_units(limits: dict[str, Any]) -> dict[str, float]:
    """The figures of a ``limits.json`` comparable with the model's, in the model's units.

    Accuracies (``*_accuracy``, fractions in [0, 1]) as they are; MAPE (``*mape*``), a fraction in
    limits.json (0.05 = 5 %), as a percentage like ``price_mape``; MAE as it is. Counts, the format
    version, nested tables (majority baselines, confusable pairs) and nulls (a dataset without a test
    split) are left out.
    """
    out = {}
    for key, value in limits.items():
        if not _is_number(value) or not math.isfinite(value):
            continue
        if key.endswith("_accuracy") or "mae" in key:
            out[key] = float(value)
        elif "mape" in key:
            out[key] = 100.0 * value
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lower_is_better(key: str) -> bool:
    return "mape" in key or "mae" in key


def _limit_for(key: str, limits: dict[str, Any]):
    """The limit a model metric is measured against: its own key, or for ``price_mape_all`` the
    dataset's ``price_mape`` (the limit is over every row)."""
    if key in limits:
        return limits[key]
    if key.endswith("_all"):
        return limits.get(key[: -len("_all")])
    return None


def fraction_of_limit(model: dict[str, Any], limits: dict[str, Any]) -> dict[str, float | None]:
    """Per model metric with a limit: model / limit (accuracies), limit / model (MAE, MAPE).

    1.0 is the limit reached; None where the ratio is undefined (a zero or missing figure).
    """
    out = {}
    for key, value in model.items():
        limit = _limit_for(key, limits)
        if not (_is_number(value) and _is_number(limit)):
            continue
        num, den = (limit, value) if _lower_is_better(key) else (value, limit)
        out[key] = num / den if den and math.isfinite(num) and math.isfinite(den) else None
    return out


# --------------------------------------------------------------------------------------------
# Generation


def generate_texts(model, loaded, test_ds, prompt: str, *, batch_size: int, max_new_tokens: int, device,
                   bf16: bool = False, num_workers: int = 0, progress=None) -> dict[int, str]:
    """Greedy, batched generation for every row of ``test_ds``: row index -> generated text."""
    import torch  # heavy, and only generation needs it: scoring and the tables run without torch

    core = core_model(model)
    tokenizer = loaded.tokenizer
    collator = Collator(loaded.processor, prompt, loaded.end_token, train=False)
    loader = make_loader(test_ds, collator, batch_size=batch_size, num_workers=num_workers)
    # No answer holds the image placeholder, and a model that writes one may fail: Phi-4-multimodal's
    # generate keeps the pixels after the first step but drops ``image_sizes``, and then crashes.
    image_id = tokenizer.convert_tokens_to_ids(loaded.image_token)
    suppress = {"suppress_tokens": [image_id]} if image_id not in (None, tokenizer.unk_token_id) else {}
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
                    eos_token_id=loaded.end_token_id, pad_token_id=tokenizer.pad_token_id, **suppress,
                )
                new = out[:, inputs["input_ids"].shape[1]:]
                for idx, text in zip(batch[INDEX_KEY].tolist(), tokenizer.batch_decode(new, skip_special_tokens=True)):
                    texts[idx] = text.strip()
    finally:
        if was_training:
            train_mode(core)
    return texts


def evaluate(model, loaded, splits, prompt: str, *, batch_size: int = 32, max_new_tokens: int = 48, device=None,
             bf16: bool = False, max_samples: int | None = None, num_workers: int = 0, progress=None,
             limits: dict[str, Any] | None = None, price_mbr: bool = False) -> EvalResult:
    """Generate on the test split (its first ``max_samples`` rows) and score against the baselines
    (and the dataset's ``limits``, from ``load_limits``, when given). ``price_mbr``: the price of each
    parsed answer is then the least-expected-error one (finetune/price_decoding.py); the greedy prices'
    MAPE is kept as ``price_mape_greedy``."""
    import torch  # heavy, and only generation needs it: scoring and the tables run without torch

    device = device or torch.device("cpu")
    test = splits["test"]
    if max_samples is not None and max_samples < len(test):
        test = test.select(range(max_samples))
    texts = generate_texts(model, loaded, test, prompt, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           device=device, bf16=bf16, num_workers=num_workers, progress=progress)
    train_rows, test_rows = _meta(splits["train"]), _meta(test)
    greedy, prices = dict(texts), {}
    if price_mbr:
        answers = {i: parse_answer(t) for i, t in texts.items()}
        prices = price_decoding.mbr_prices(core_model(model), loaded, test, answers, prompt,
                                           price_decoding.candidates_by_category(train_rows),
                                           batch_size=batch_size, device=device, bf16=bf16, progress=progress)
        texts = {i: answer_text({"title": answers[i].title, "category3_code": answers[i].category,
                                 "full_price": prices[i]}) if i in prices else t for i, t in texts.items()}
    result = score(texts, train_rows, test_rows, limits=limits)
    if price_mbr:
        greedy_metrics = score(greedy, train_rows, test_rows).metrics["model"]
        result.metrics["model"]["price_mape_greedy"] = greedy_metrics["price_mape_all"]
        for p in result.predictions:   # what the model wrote, beside the answer scored
            if p["index"] in prices:
                p["greedy_prediction"] = greedy[p["index"]]
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

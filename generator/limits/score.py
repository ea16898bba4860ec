"""The limit: the perfect reader's scores on a test split beside the baselines, and ``limits.json``
in a run folder."""
from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow.parquet as pq

from generator.limits.appearance import COLOUR_ALIKE_LEVELS, Appearance, _untrimmed_classes, appearance
from generator.limits.reader import LABELS, _argmax, _Model
from generator.limits.titles import _Rows
from generator.taxonomy import PATTERN_NONE, Taxonomy
from generator.writer import DATA_DIR, atomic_write_text


LIMITS_FILENAME = "limits.json"
FORMAT_VERSION = 2   # 2: the trim is drawn independently of the price (no price_mape_without_trim)
MAX_ROWS_PER_SPLIT = 200_000
ROW_COLUMNS = ("category1_code", "category2_code", "category3_code", "title", "full_price")


@dataclass(frozen=True)
class Limits:
    """What a perfect reader of the images scores on the test split; see the module docstring for keys."""

    category3_accuracy: float | None
    category2_accuracy: float | None
    colour_accuracy: float | None
    material_accuracy: float | None
    pattern_accuracy: float | None
    price_mape: float | None
    price_mape_category3_median: float | None
    price_mape_global_median: float | None
    majority_accuracy: dict[str, float | None]
    n_train: int
    n_test: int
    confusable: dict[str, list[list[str]]]
    colour_alike_levels: float = COLOUR_ALIKE_LEVELS
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def accuracy(self, label: str) -> float | None:
        return getattr(self, f"{label}_accuracy")


def _mape(truth: list[float], predicted: list, fallback: float | None = None) -> float | None:
    """Mean absolute percentage error; a missing prediction counts as ``fallback`` (or as 100 % off)."""
    if not truth:
        return None
    predicted = [fallback if p is None else p for p in predicted]
    return float(np.mean([1.0 if p is None else abs(p - t) / t for t, p in zip(truth, predicted)]))


def _expected_accuracy(truth: list, views: list[list[tuple[float, Any]]]) -> float | None:
    """Accuracy of answers that depend on a hidden draw: ``views[i]`` is row i's (probability, answer)."""
    if not truth:
        return None
    return sum(sum(p for p, a in v if a == t) for t, v in zip(truth, views)) / len(truth)


def _expected_mape(truth: list[float], views: list[list[tuple[float, Any]]], fallback: float | None) -> float | None:
    """:func:`_mape` averaged over each row's (probability, predicted price) views."""
    if not truth:
        return None
    return float(np.mean([sum(p * _mape([t], [a], fallback) for p, a in v) for t, v in zip(truth, views)]))


def _accuracy(truth: list, predicted: list) -> float | None:
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted)) / len(truth)


def confusable_pairs(taxonomy: Taxonomy, look: Appearance) -> dict[str, list[list[str]]]:
    """Value pairs of each label that share a drawing (see the module docstring)."""
    untrimmed = _untrimmed_classes(look)
    shape_classes: dict[str, set[int]] = defaultdict(set)
    for (s, _c1), k in untrimmed.items():
        shape_classes[s].add(k)

    def pairs(groups: Iterable[Iterable[str]]) -> list[list[str]]:
        out = set()
        for g in groups:
            out.update(tuple(sorted(p)) for p in itertools.combinations(sorted(set(g)), 2))
        return [list(p) for p in sorted(out)]

    sil_by_class: dict[int, set[str]] = defaultdict(set)
    for s, ks in shape_classes.items():
        for k in ks:
            sil_by_class[k].add(s)
    c3_by_class: dict[int, set[str]] = defaultdict(set)
    c2_by_class: dict[int, set[str]] = defaultdict(set)
    homes = Counter(c3.code for c2 in taxonomy.category2 for c3 in c2.category3)
    for c2 in taxonomy.category2:
        for c3 in c2.category3:
            # A code used under several category2 ("N.A.") is named with its category2, as on the card.
            name = c3.code if homes[c3.code] == 1 else f"{c2.code} / {c3.code}"
            for item in c3.items:
                for k in shape_classes.get(item.silhouette, ()):
                    c3_by_class[k].add(name)
                    c2_by_class[k].add(c2.code)
    by = defaultdict(set)
    for m in taxonomy.materials:
        by[("material", look.texture[m.texture])].add(m.name)
    for p in taxonomy.patterns:
        by[("pattern", look.pattern[p.render])].add(p.name or PATTERN_NONE)
    for c in taxonomy.colours:
        by[("colour", look.colour[c.name])].add(c.name)
    return {
        "category3": pairs(c3_by_class.values()),
        "category2": pairs(c2_by_class.values()),
        "colour": pairs(v for (kind, _), v in by.items() if kind == "colour"),
        "material": pairs(v for (kind, _), v in by.items() if kind == "material"),
        "pattern": pairs(v for (kind, _), v in by.items() if kind == "pattern"),
        "silhouette": pairs(sil_by_class.values()),
    }


def compute(train_rows: Iterable[Mapping[str, Any]], test_rows: Iterable[Mapping[str, Any]],
            taxonomy: Taxonomy, *, look: Appearance | None = None) -> Limits:
    """The perfect image reader's scores on ``test_rows``, with baselines from ``train_rows``.

    Rows are dicts with at least :data:`ROW_COLUMNS` (the dataset's own columns; images are not needed)
    drawn by ``taxonomy``'s generator; a row it could not have drawn raises :class:`LimitsError`."""
    look = look or appearance(taxonomy)
    parser = _Rows(taxonomy)
    train = [parser.parse(r, f"train row {i}") for i, r in enumerate(train_rows)]
    test = [parser.parse(r, f"test row {i}") for i, r in enumerate(test_rows)]
    model = _Model(taxonomy, look)

    truth = {label: [r.label(label) for r in test] for label in LABELS}
    prices = [r.full_price for r in test]
    # Each test row's possible views (one per drawing its random trim can give it), with their probabilities.
    seen = [[(p, model.answers(sig)) for p, sig in model.signatures(r)] for r in test]
    acc = {label: _expected_accuracy(truth[label], [[(p, a[label]) for p, a in s] for s in seen])
           for label in LABELS}

    majority = {}
    for label in LABELS:
        counts = Counter(r.label(label) for r in train)
        top = _argmax(counts) if counts else None
        majority[label] = _accuracy(truth[label], [top] * len(test)) if counts else None
    global_median = statistics.median(r.full_price for r in train) if train else None
    by_c3: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in train:
        by_c3[(r.c2, r.c3.code)].append(r.full_price)
    c3_median = {k: statistics.median(v) for k, v in by_c3.items()}

    return Limits(
        category3_accuracy=acc["category3"], category2_accuracy=acc["category2"], colour_accuracy=acc["colour"],
        material_accuracy=acc["material"], pattern_accuracy=acc["pattern"],
        price_mape=_expected_mape(prices, [[(p, a["full_price"]) for p, a in s] for s in seen], global_median),
        price_mape_category3_median=_mape(prices, [c3_median.get((r.c2, r.c3.code), global_median) for r in test])
        if train else None,
        price_mape_global_median=_mape(prices, [global_median] * len(test)) if train else None,
        majority_accuracy=majority, n_train=len(train), n_test=len(test),
        confusable=confusable_pairs(taxonomy, look),
    )


def read_split_rows(out, split: str, limit: int = MAX_ROWS_PER_SPLIT) -> list[dict[str, Any]]:
    """The first ``limit`` rows (metadata columns only, no images) of ``split`` in a run folder."""
    rows: list[dict[str, Any]] = []
    for path in sorted((Path(out) / DATA_DIR).glob(f"{split}-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=list(ROW_COLUMNS)):
            rows += batch.to_pylist()[: limit - len(rows)]
            if len(rows) >= limit:
                return rows
    return rows


def from_run(out, taxonomy: Taxonomy) -> Limits:
    """:func:`compute` on the train and test splits written in the run folder ``out``."""
    return compute(read_split_rows(out, "train"), read_split_rows(out, "test"), taxonomy)


def write_json(out, limits: Limits) -> Path:
    """``limits.json`` in the run folder (atomic, like the other reports)."""
    path = Path(out) / LIMITS_FILENAME
    atomic_write_text(path, json.dumps(limits.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_json(folder) -> dict[str, Any] | None:
    """A dataset folder's ``limits.json``, or None where it has none (augmented or older runs)."""
    try:
        return json.loads((Path(folder) / LIMITS_FILENAME).read_text())
    except FileNotFoundError:
        return None

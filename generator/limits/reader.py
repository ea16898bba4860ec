"""The perfect reader: the generator's exact joint distribution, grouped by what is visible, and the
most probable answer (and median price) for each visible signature."""
from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from generator.catalog import _branch
from generator.limits.appearance import Appearance, _trim_bucket_probabilities
from generator.limits.titles import _Row
from generator.taxonomy import PATTERN_NONE, Category3, Taxonomy


LABELS = ("category3", "category2", "colour", "material", "pattern")


@dataclass
class _Cell:
    """One (category1, category2, category3, material, pattern) of the generator, with its probability
    and its distribution over the price points."""

    c1: Any
    c2: str
    c3: Category3
    material: Any
    pattern: Any
    prob: float
    points: np.ndarray      # indices of the price points with non-negligible mass
    mass: np.ndarray        # P(point | cell), over ``points``


@dataclass
class _View:
    """A cell seen through one of its category3's silhouettes: what share of its rows look like this,
    and the drawing classes the row's trim (drawn independently of the cell) gives it."""

    cell: _Cell
    share: float                  # fraction of the category3's items drawn with this silhouette
    drawings: dict[int, float]    # drawing class -> P(class | silhouette, category1), over the trim buckets


class _Model:
    def __init__(self, taxonomy: Taxonomy, look: Appearance):
        self.look = look
        points = taxonomy.prices.points
        self.points = np.asarray(points, np.float64)
        log_edges = [math.log(math.sqrt(a * b)) for a, b in zip(points, points[1:])]
        total1 = sum(c.weight for c in taxonomy.category1)
        trim_p = _trim_bucket_probabilities()
        # (silhouette, category1) -> {drawing class: probability}: the trim is the only thing that varies
        drawings: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for (s, c1, bucket), d in look.drawing.items():
            drawings[(s, c1)][d] += trim_p[bucket]
        # Plain dicts: a pair the renderer never draws is a KeyError, not a row that silently scores nothing.
        self.drawings = {pair: dict(by_class) for pair, by_class in drawings.items()}
        # (texture class, pattern class, drawing class) -> the views that can show it
        self.index: dict[tuple, list[_View]] = defaultdict(list)
        for c1 in taxonomy.category1:
            for c2, c3, w in _branch(taxonomy, c1.code):
                wm = sum(x for _, x in c3.materials)
                wp = sum(x for _, x in c3.patterns)
                shares = Counter(i.silhouette for i in c3.items)
                for (m, w1), (p, w2) in itertools.product(c3.materials, c3.patterns):
                    mu = math.log(c3.price_median * c1.price_multiplier * m.price_multiplier * p.price_multiplier)
                    sigma = c3.price_sigma
                    # Points whose snapping interval lies within 9 sigma of the mean; beyond, mass < 1e-18.
                    lo = bisect.bisect_left(log_edges, mu - 9 * sigma)
                    hi = bisect.bisect_right(log_edges, mu + 9 * sigma)
                    cdf = ([0.0] + [0.5 * (1 + math.erf((e - mu) / (sigma * math.sqrt(2)))) for e in log_edges[lo:hi]]
                           + [1.0])
                    mass = np.diff(np.asarray(cdf))
                    keep = mass > 0
                    idx, mass = np.arange(lo, hi + 1)[keep], mass[keep]
                    cell = _Cell(c1=c1, c2=c2.code, c3=c3, material=m, pattern=p,
                                 prob=c1.weight / total1 * w * (w1 / wm) * (w2 / wp), points=idx,
                                 mass=mass / mass.sum())
                    surface = (look.texture[m.texture], look.pattern[p.render])
                    for s, n in shares.items():
                        view = _View(cell, n / len(c3.items), self.drawings[(s, c1.code)])
                        for d in view.drawings:
                            self.index[(*surface, d)].append(view)
        self._cache: dict[tuple, dict] = {}

    def signatures(self, row: _Row) -> list[tuple[float, tuple]]:
        """What a reader may see of ``row``: (probability, (texture, pattern, drawing, colour) classes)
        for each drawing its trim can give it. The rows do not record their trim, and it carries nothing
        about the labels, so the limit is the reader's expected score over it."""
        look = self.look
        surface = (look.texture[row.material.texture], look.pattern[row.pattern.render])
        colour = look.colour[row.colour.name]
        return [(p, (*surface, d, colour))
                for d, p in sorted(self.drawings[(row.item.silhouette, row.c1.code)].items())]

    def answers(self, sig: tuple) -> dict[str, Any]:
        """The reader's answer for every label, and the price, given a visible signature."""
        if sig in self._cache:
            return self._cache[sig]
        *view_key, col = sig
        weights: dict[str, Counter] = {label: Counter() for label in LABELS}
        price = np.zeros(len(self.points))
        for view in self.index.get(tuple(view_key), ()):
            cell = view.cell
            colours = cell.c3.colours
            in_class = [c for c in colours if self.look.colour[c.name] == col]
            if not in_class:
                continue
            # P(cell, silhouette, this drawing, one given colour); the price is independent of the drawing.
            one_colour = cell.prob * view.share * view.drawings[view_key[2]] / len(colours)
            if one_colour <= 0:
                continue
            w = one_colour * len(in_class)
            weights["category3"][cell.c3.code] += w
            weights["category2"][cell.c2] += w
            weights["material"][cell.material.name] += w
            weights["pattern"][cell.pattern.name or PATTERN_NONE] += w
            for c in in_class:
                weights["colour"][c.name] += one_colour
            price[cell.points] += w * cell.mass
        out: dict[str, Any] = {label: _argmax(weights[label]) for label in LABELS}
        out["full_price"] = _weighted_median(self.points, price)
        self._cache[sig] = out
        return out


def _argmax(weights: Counter) -> str | None:
    if not weights:
        return None
    return max(sorted(weights), key=lambda k: weights[k])   # ties: the first name in sorted order


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float | None:
    total = weights.sum()
    if total <= 0:
        return None
    k = int(np.searchsorted(np.cumsum(weights), 0.5 * total))
    return float(values[min(k, len(values) - 1)])

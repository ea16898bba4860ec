"""The data's own limit: what a *perfect reader of the images* could score on a dataset's test split.

The generator knows how it drew every label and the renderer decides which labels leave different
pixels. Where two values are drawn alike (two category3 sharing a silhouette, Sand and Archive Beige,
Check and Vintage Check), no reader of the images, however good, can tell them apart every time: the
best it can do is answer the more probable one. This module computes that best score, so a fine-tune's
accuracy can be read against it ("reached 97 % of the limit") rather than against 100 %.

What the renderer shows, derived from its own tables and code paths (so a renderer change moves the limit):

* **Drawing** (:func:`appearance`): the geometry of a (silhouette, category1, price-tier bucket), i.e. the
  builder's operations (``render._SHAPES``), made into pixels by ``render._transform`` at a fixed pose.
  Two silhouettes whose builders draw the same thing fall together; so do the tier buckets whose trim
  is the same (the renderer quantises ``price_tier`` to 11 buckets, and most silhouettes change trim at
  only a few thresholds), and category1 values drawn alike (kids' items are drawn smaller and
  menswear wider, so today no two are).
* **Texture**: materials sharing a renderer texture (``Canvas`` and ``Cotton Gabardine`` both ``canvas``),
  and textures whose tiles are identical.
* **Pattern**: patterns sharing a renderer pattern (``Check`` and ``Vintage Check`` both ``check``), and
  renderer patterns drawn with identical tiles and colours.
* **Colour**: two colours render alike when, under the brightness settings the renderer's poses draw
  from (sampled from ``render._pose``), their product shading ramps (``render._product_palette``) come
  within :data:`COLOUR_ALIKE_LEVELS` of each other (RMS over the ramp, in 0..255 levels). The
  threshold is calibrated on what a trained CNN confused (issue 18: Sand vs Archive Beige at 6.4,
  Camel vs Honey at 6.9); the next-closest pair of the built-in taxonomy, Ivory vs White at 12.3, is
  told apart. Trim is drawn in flat colours derived from the same RGB and is not counted separately.

The reader (Bayes-optimal): for a test row it sees the row's *visible signature* (drawing class,
texture class, pattern class, colour class) and answers, for each label, the value with the highest
probability given that signature, and for the price the median of the conditional price distribution.
The probabilities are the generator's exact ones (the taxonomy's weights, the log-normal price draw,
its snapping to price points and the tier quantile, as :mod:`generator.catalog` draws them), not counts
from the train split: with every visible attribute in the signature most test rows' cells hold 0-3
train rows, so counts would measure the train split's noise instead of the data's limit. The answers
are scored on the test split, like a fine-tune's. Train counts give the baselines (majority class,
global median price, median price of the true category3).

``limits.json`` (written beside ``privacy_report.json`` in every synthetic run's folder; the fine-tune
side reads it from the dataset folder). Keys:

* ``category3_accuracy``, ``category2_accuracy``, ``colour_accuracy``, ``material_accuracy``,
  ``pattern_accuracy``: the perfect reader's accuracy on the test split, in [0, 1] (``null`` without a
  test split). category3 compares the code string (every ``N.A.`` is the same answer), category2 the code,
  colour / material the taxonomy's names, pattern the taxonomy's pattern key (``"none"`` for no pattern).
* ``price_mape``: mean absolute percentage error of ``full_price`` by the conditional median given
  everything visible, trim (price tier) included, as a fraction (0.05 = 5 %).
* ``price_mape_without_trim``: the same given category1, drawing, texture, pattern and colour, but not
  the tier trim: what is left when a reader ignores hardware and detail.
* ``price_mape_category3_median``: by the train median of the row's true (category2, category3).
* ``price_mape_global_median``: by the train split's median ``full_price``.
* ``majority_accuracy``: ``{label: accuracy}`` of always answering the train split's most frequent value.
* ``n_train``, ``n_test``: rows used (a split larger than :data:`MAX_ROWS_PER_SPLIT` is read up to that
  many rows; splits are already shuffled, so that is a random sample).
* ``confusable``: ``{label: [[a, b], ...]}`` value pairs that share a drawing (silhouette, texture,
  pattern or colour class) for label in category3, category2, colour, material, pattern, plus
  ``silhouette``. A category3 code used under several category2 (``N.A.``) is written
  ``"CATEGORY2 / N.A."``, as in the card's category table. A pair listed here may still be told apart
  through another attribute (SWEATERS in wool vs HOODIES in cotton); the accuracies count that.
* ``colour_alike_levels``: the colour threshold used; ``version``: format version of this file.

Pure Python and numpy: the generator never imports torch.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from generator.taxonomy import PATTERN_NONE, TITLE_FIELDS, Category3, Taxonomy

LIMITS_FILENAME = "limits.json"
FORMAT_VERSION = 1
COLOUR_ALIKE_LEVELS = 10.0
MAX_ROWS_PER_SPLIT = 200_000
LABELS = ("category3", "category2", "colour", "material", "pattern")
ROW_COLUMNS = ("category1_code", "category2_code", "category3_code", "title", "full_price")
_PROBE_SIZE = 64          # texture / pattern tiles are compared at this size
_POSE_PROBES = 64         # variants sampled from render._pose to learn its light settings
_TIER_BUCKETS = 11        # render_with_mask draws round(clamp(price_tier, 0, 1) * 10)


class LimitsError(ValueError):
    """Rows that this taxonomy's generator could not have drawn (a title that does not parse, ...)."""


@dataclass(frozen=True)
class Limits:
    """What a perfect reader of the images scores on the test split; see the module docstring for keys."""

    category3_accuracy: float | None
    category2_accuracy: float | None
    colour_accuracy: float | None
    material_accuracy: float | None
    pattern_accuracy: float | None
    price_mape: float | None
    price_mape_without_trim: float | None
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


# ==================================================================================================
# What the renderer draws alike
# ==================================================================================================


@dataclass(frozen=True)
class Appearance:
    """Class ids of what the renderer draws: equal ids = identical (or, for colours, alike) drawings."""

    drawing: dict[tuple[str, str, int], int]   # (silhouette, category1, tier bucket) -> class
    texture: dict[str, int]                    # renderer texture name -> class
    pattern: dict[str, int]                    # renderer pattern name -> class
    colour: dict[str, int]                     # taxonomy colour name -> class
    colour_distance: dict[tuple[str, str], float] = field(default_factory=dict)  # alike pairs -> distance


# Fingerprints are pure functions of the builder / tile function and their arguments: cached by the
# function object, so a monkeypatched renderer table gets fresh ones.
_DRAWING_CACHE: dict[tuple, str] = {}
_PLAN_CACHE: dict[tuple, tuple] = {}
_TILE_CACHE: dict[tuple, str] = {}


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p)
        h.update(b"\x00")
    return h.hexdigest()


def _drawing_plan(render, builder, bucket: int, category1: str):
    """The builder's drawing plan; builders given the same starting state draw the same plan (today
    WOMAN and KIDS: only the transform tells them apart), so it is made once per state."""
    b = render._Builder(bucket / 10, category1)
    state = (builder, tuple((k, v) for k, v in sorted(vars(b).items()) if isinstance(v, (bool, int, float, str))))
    if state not in _PLAN_CACHE:
        builder(b)
        plan = b.plan()
        _PLAN_CACHE[state] = (plan, repr(plan.ops).encode())
    return _PLAN_CACHE[state]


def _drawing_fingerprint(render, silhouette: str, category1: str, bucket: int) -> str:
    from generator.schema import Look

    builder = render._SHAPES[silhouette]
    scale = render._SHAPE_SCALE.get(silhouette, 1.0)
    key = (builder, scale, category1, bucket)
    if key not in _DRAWING_CACHE:
        plan, ops = _drawing_plan(render, builder, bucket, category1)
        look = Look(category1=category1, category2="", category3="", silhouette=silhouette, colour="",
                    rgb=(128, 128, 128), material="", texture="smooth", pattern="none", price_tier=bucket / 10,
                    variant=0)
        # A fixed pose: what category1 changes in the pixels (size, width) shows in the transformed points.
        pts, _ = render._transform(plan, look, render._pose(0, 0), 336)
        _DRAWING_CACHE[key] = _digest(ops, np.round(pts, 4).tobytes())
    return _DRAWING_CACHE[key]


def _tile_fingerprint(fn, size: int) -> str:
    key = (fn, size)
    if key not in _TILE_CACHE:
        _TILE_CACHE[key] = _digest(np.ascontiguousarray(fn(size)).tobytes())
    return _TILE_CACHE[key]


def _classes(keys: Iterable, fingerprint) -> dict:
    ids: dict[Any, int] = {}
    out = {}
    for k in keys:
        out[k] = ids.setdefault(fingerprint(k), len(ids))
    return out


def _brightness_settings(render) -> list[float]:
    """The brightness values the renderer's poses draw from, learnt by sampling them."""
    return sorted({render._pose(0, v).brightness for v in range(_POSE_PROBES)})


def colour_distance(render, rgb_a, rgb_b, brightness: list[float] | None = None) -> float:
    """RMS difference (0..255 levels) of two colours' product shading ramps, under the brightness
    settings that make them closest: what the renderer leaves a reader to tell them apart by."""
    brightness = brightness or _brightness_settings(render)

    def ramp(rgb, b):
        pal = np.frombuffer(render._product_palette(tuple(int(c) for c in rgb), "none", 1.0, b), np.uint8)
        return pal.reshape(-1, render._GAINS, 3)[0].astype(np.float64)

    ramps_a = [ramp(rgb_a, b) for b in brightness]
    ramps_b = [ramp(rgb_b, b) for b in brightness]
    return min(float(np.sqrt(((ra - rb) ** 2).sum(axis=1).mean())) for ra in ramps_a for rb in ramps_b)


def appearance(taxonomy: Taxonomy, *, colour_alike: float = COLOUR_ALIKE_LEVELS) -> Appearance:
    """The renderer's equivalence classes for what ``taxonomy`` can draw."""
    from generator import render

    sold: dict[str, set[str]] = defaultdict(set)          # silhouette -> category1 codes it is drawn for
    for c2 in taxonomy.category2:
        for c3 in c2.category3:
            for item in c3.items:
                sold[item.silhouette].update(c1 for c1 in c3.category1 if c1 in c2.weights)
    cells = [(s, c1, k) for s in sorted(sold) for c1 in sorted(sold[s]) for k in range(_TIER_BUCKETS)]
    drawing = _classes(cells, lambda cell: _drawing_fingerprint(render, *cell))

    textures = sorted({m.texture for m in taxonomy.materials})
    texture = _classes(textures, lambda t: _tile_fingerprint(render._TEXTURES[t], _PROBE_SIZE))
    rgbs = sorted({c.rgb for c in taxonomy.colours})
    patterns = sorted({p.render for p in taxonomy.patterns})
    pattern = _classes(patterns, lambda p: _digest(_tile_fingerprint(render._PATTERNS[p], _PROBE_SIZE).encode(),
                                                   repr([render._pattern_colours(p, rgb) for rgb in rgbs]).encode()))

    # Colours: alike pairs joined transitively (union-find), in the taxonomy's order.
    brightness = _brightness_settings(render)
    names = [c.name for c in taxonomy.colours]
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    alike = {}
    for a, b in itertools.combinations(taxonomy.colours, 2):
        d = colour_distance(render, a.rgb, b.rgb, brightness)
        if d < colour_alike:
            alike[(a.name, b.name)] = round(d, 2)
            parent[root(b.name)] = root(a.name)
    colour = _classes(names, root)
    return Appearance(drawing=drawing, texture=texture, pattern=pattern, colour=colour, colour_distance=alike)


# ==================================================================================================
# Reading a row's drawn labels back from its title
# ==================================================================================================


def _norm(text: str) -> str:
    return " ".join(str(text).split())


class _TitleParser:
    """Title -> (colour, pattern, material, item) of a category3, by the category3's own title templates.

    Titles are ``" ".join(template.format(...).split())``: each template (with a pattern, and without
    one where "none" is allowed) is normalised the same way into literal and field pieces, and a title
    is matched piece by piece (names longest first, backtracking, the whole title must match)."""

    _SENTINEL = "\x00{}\x00"

    def __init__(self, c3: Category3):
        self.values = {
            "colour": {_norm(c.name): c for c in c3.colours},
            "material": {_norm(m.name): m for m, _ in c3.materials},
            "pattern": {_norm(p.name): p for p, _ in c3.patterns},
            "item": {_norm(i.name): i for i in c3.items},
        }
        self.ordered = {f: sorted((v for v in vals if v), key=lambda v: (-len(v), v))
                        for f, vals in self.values.items()}
        self.templates: list[tuple[list[tuple[bool, str]], bool]] = []
        for template, _ in c3.titles:
            for empty_pattern in (False, True):
                if empty_pattern and "" not in self.values["pattern"]:
                    continue
                subs = {f: self._SENTINEL.format(f) for f in TITLE_FIELDS}
                if empty_pattern:
                    subs["pattern"] = ""
                try:
                    text = _norm(template.format(**subs))
                except (KeyError, IndexError, ValueError):
                    continue
                pieces = [(p.startswith("\x00"), p.strip("\x00")) for p in re.split("(\x00\\w+\x00)", text) if p]
                self.templates.append((pieces, empty_pattern))

    def _match(self, title: str, pieces, i: int, pos: int, got: dict[str, str]) -> bool:
        if i == len(pieces):
            return pos == len(title)
        is_field, text = pieces[i]
        if not is_field:
            return title.startswith(text, pos) and self._match(title, pieces, i + 1, pos + len(text), got)
        if text in got:  # a field used twice must repeat its value
            v = got[text]
            return title.startswith(v, pos) and self._match(title, pieces, i + 1, pos + len(v), got)
        for v in self.ordered[text]:
            if title.startswith(v, pos):
                got[text] = v
                if self._match(title, pieces, i + 1, pos + len(v), got):
                    return True
        got.pop(text, None)
        return False

    def parse(self, title: str):
        title = _norm(title)
        for pieces, empty_pattern in self.templates:
            got: dict[str, str] = {}
            if self._match(title, pieces, 0, 0, got):
                if empty_pattern:
                    got["pattern"] = ""
                return {f: self.values[f][v] for f, v in got.items()}
        return None


@dataclass(frozen=True)
class _Row:
    c1: Any
    c2: str
    c3: Category3
    colour: Any
    material: Any
    pattern: Any
    item: Any
    full_price: float

    def label(self, name: str) -> str:
        if name == "category3":
            return self.c3.code
        if name == "category2":
            return self.c2
        if name == "pattern":
            return self.pattern.name or PATTERN_NONE
        return getattr(self, name).name


class _Rows:
    """Parses rows of one taxonomy (parsers built per category3 on first use)."""

    def __init__(self, taxonomy: Taxonomy):
        self.c1 = {c.code: c for c in taxonomy.category1}
        self.c3 = {(c2.code, c3.code): c3 for c2 in taxonomy.category2 for c3 in c2.category3}
        self.parsers: dict[tuple[str, str], _TitleParser] = {}

    def parse(self, row: Mapping[str, Any], where: str) -> _Row:
        key = (row.get("category2_code"), row.get("category3_code"))
        c3, c1 = self.c3.get(key), self.c1.get(row.get("category1_code"))
        if c3 is None or c1 is None:
            raise LimitsError(f"{where}: category {row.get('category1_code')!r} / {key[0]!r} / {key[1]!r} "
                              "is not in the taxonomy")
        parser = self.parsers.get(key) or self.parsers.setdefault(key, _TitleParser(c3))
        got = parser.parse(row.get("title", ""))
        if got is None:
            raise LimitsError(f"{where}: title {row.get('title')!r} is not one this taxonomy draws for {key[1]}")
        price = float(row["full_price"])
        if not (math.isfinite(price) and price > 0):
            raise LimitsError(f"{where}: full_price {row['full_price']!r} is not a positive number")
        return _Row(c1=c1, c2=key[0], c3=c3, full_price=price, **got)


# ==================================================================================================
# The generator's exact joint distribution, grouped by what is visible
# ==================================================================================================


def _tier_bucket(tier: float) -> int:
    """As ``render.render_with_mask`` quantises ``Look.price_tier`` for its drawing plan."""
    return int(round(min(1.0, max(0.0, tier)) * 10))


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
    and the drawing class each price point gets (the tier trim), or the class without the trim."""

    cell: _Cell
    share: float            # fraction of the category3's items drawn with this silhouette
    drawings: np.ndarray    # drawing class per point of ``cell.points``
    untrimmed: int


class _Model:
    def __init__(self, taxonomy: Taxonomy, look: Appearance):
        from generator.catalog import _Category3Tables, _branch

        self.look = look
        points = taxonomy.prices.points
        self.points = np.asarray(points, np.float64)
        log_edges = [math.log(math.sqrt(a * b)) for a, b in zip(points, points[1:])]
        total1 = sum(c.weight for c in taxonomy.category1)
        self.untrimmed = _untrimmed_classes(look)
        # (texture class, pattern class, "drawing" / "shape", class) -> the views that can show it
        self.index: dict[tuple, list[_View]] = defaultdict(list)
        for c1 in taxonomy.category1:
            for c2, c3, w in _branch(taxonomy, c1.code):
                tables = _Category3Tables.of(c3)
                wm = sum(x for _, x in c3.materials)
                wp = sum(x for _, x in c3.patterns)
                shares = Counter(i.silhouette for i in c3.items)
                bucket_of: dict[int, int] = {}
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
                    for k in idx.tolist():
                        if k not in bucket_of:
                            bucket_of[k] = _tier_bucket(tables.tier(points[k], c1.price_multiplier))
                    cell = _Cell(c1=c1, c2=c2.code, c3=c3, material=m, pattern=p,
                                 prob=c1.weight / total1 * w * (w1 / wm) * (w2 / wp), points=idx,
                                 mass=mass / mass.sum())
                    surface = (look.texture[m.texture], look.pattern[p.render])
                    for s, n in shares.items():
                        drawings = np.asarray([look.drawing[(s, c1.code, bucket_of[k])] for k in idx.tolist()])
                        view = _View(cell, n / len(c3.items), drawings, self.untrimmed[(s, c1.code)])
                        for d in set(drawings.tolist()):
                            self.index[(*surface, "drawing", d)].append(view)
                        self.index[(*surface, "shape", view.untrimmed)].append(view)
        self._cache: dict[tuple, dict] = {}

    def signature(self, row: _Row, *, trim: bool = True) -> tuple:
        """What a reader sees of ``row``: (texture, pattern, "drawing" or "shape", drawing, colour) classes."""
        from generator.catalog import _Category3Tables

        look = self.look
        surface = (look.texture[row.material.texture], look.pattern[row.pattern.render])
        if trim:
            tier = _Category3Tables.of(row.c3).tier(row.full_price, row.c1.price_multiplier)
            shape = ("drawing", look.drawing[(row.item.silhouette, row.c1.code, _tier_bucket(tier))])
        else:
            shape = ("shape", self.untrimmed[(row.item.silhouette, row.c1.code)])
        return (*surface, *shape, look.colour[row.colour.name])

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
            mass = cell.mass if view_key[2] == "shape" else np.where(view.drawings == view_key[3], cell.mass, 0.0)
            one_colour = cell.prob * view.share / len(colours)   # P(cell, silhouette, one given colour)
            total = one_colour * float(mass.sum())
            if total <= 0:
                continue
            w = total * len(in_class)
            weights["category3"][cell.c3.code] += w
            weights["category2"][cell.c2] += w
            weights["material"][cell.material.name] += w
            weights["pattern"][cell.pattern.name or PATTERN_NONE] += w
            for c in in_class:
                weights["colour"][c.name] += total
            price[cell.points] += one_colour * len(in_class) * mass
        out: dict[str, Any] = {label: _argmax(weights[label]) for label in LABELS}
        out["full_price"] = _weighted_median(self.points, price)
        self._cache[sig] = out
        return out


def _untrimmed_classes(look: Appearance) -> dict[tuple[str, str], int]:
    """(silhouette, category1) -> class: pairs joined when some tier of each is drawn the same."""
    parent: dict[Any, Any] = {}

    def root(n):
        parent.setdefault(n, n)
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for (s, c1, _), d in look.drawing.items():
        parent[root(("pair", s, c1))] = root(("drawing", d))
    pairs = sorted({(s, c1) for s, c1, _ in look.drawing})
    return _classes(pairs, lambda p: root(("pair", *p)))


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


# ==================================================================================================
# The limit
# ==================================================================================================


def _mape(truth: list[float], predicted: list, fallback: float | None = None) -> float | None:
    """Mean absolute percentage error; a missing prediction counts as ``fallback`` (or as 100 % off)."""
    if not truth:
        return None
    predicted = [fallback if p is None else p for p in predicted]
    return float(np.mean([1.0 if p is None else abs(p - t) / t for t, p in zip(truth, predicted)]))


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
    full = [model.answers(model.signature(r)) for r in test]
    bare = [model.answers(model.signature(r, trim=False)) for r in test]
    acc = {label: _accuracy(truth[label], [a[label] for a in full]) for label in LABELS}

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
        price_mape=_mape(prices, [a["full_price"] for a in full], fallback=global_median),
        price_mape_without_trim=_mape(prices, [a["full_price"] for a in bare], fallback=global_median),
        price_mape_category3_median=_mape(prices, [c3_median.get((r.c2, r.c3.code), global_median) for r in test])
        if train else None,
        price_mape_global_median=_mape(prices, [global_median] * len(test)) if train else None,
        majority_accuracy=majority, n_train=len(train), n_test=len(test),
        confusable=confusable_pairs(taxonomy, look),
    )


# ==================================================================================================
# A run folder
# ==================================================================================================


def read_split_rows(out, split: str, limit: int = MAX_ROWS_PER_SPLIT) -> list[dict[str, Any]]:
    """The first ``limit`` rows (metadata columns only, no images) of ``split`` in a run folder."""
    import pyarrow.parquet as pq

    from generator.writer import DATA_DIR

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
    from generator.writer import atomic_write_text

    path = Path(out) / LIMITS_FILENAME
    atomic_write_text(path, json.dumps(limits.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_json(folder) -> dict[str, Any] | None:
    """A dataset folder's ``limits.json``, or None where it has none (augmented or older runs)."""
    try:
        return json.loads((Path(folder) / LIMITS_FILENAME).read_text())
    except FileNotFoundError:
        return None

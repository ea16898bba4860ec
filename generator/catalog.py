"""One catalogue row's metadata, and the :class:`~generator.schema.Look` the renderer draws, from
(taxonomy, seed, index) alone.

Every row has its own random stream seeded from (seed, index), so any row can be made on its own,
in any process, in any order, and always comes out the same: that is what makes sharding, worker
pools and resuming byte-identical.
"""
from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import hashlib
import re
import statistics
import struct
from dataclasses import dataclass
from typing import Any

from generator.permutation import permute, round_keys
from generator.schema import Look
from generator.taxonomy import Category1, Category2, Category3, Taxonomy

# Tags that keep the seeded streams of different purposes apart.
STREAM_ROW = 1
STREAM_PRODUCT_CODE = 2

_CODE_DIGITS = 6  # after the two-digit prefix: 8-digit codes like the real table's 80xxxxxx
_KEY = struct.Struct("<qqq")
_WORDS = struct.Struct("<16I")  # 16 x 32 bits from one 64-byte digest
_TO_UNIT = 2.0**-32
_NORMAL = statistics.NormalDist()


@dataclass(frozen=True)
class Product:
    """One row's metadata columns (schema order, schema types) and what its image must show."""

    row: dict[str, Any]
    look: Look
    render_seed: int


@dataclass(frozen=True)
class _Choices:
    """A weighted list with its cumulative weights, so one uniform draw picks an entry by bisection."""

    values: tuple
    cum: tuple[float, ...]

    @classmethod
    def of(cls, pairs) -> "_Choices":
        values, weights = zip(*pairs)
        total = float(sum(weights))
        return cls(tuple(values), tuple(c / total for c in itertools.accumulate(weights)))

    def pick(self, u: float):
        return self.values[min(bisect.bisect_right(self.cum, u), len(self.values) - 1)]


class Catalog:
    """Makes :class:`Product` rows for one taxonomy and seed.

    Build one per process: the weighted tables and the Faker instance are made once here, and each row
    only reseeds them. Faker is not thread-safe; a Catalog is meant for one thread.
    """

    def __init__(self, taxonomy: Taxonomy, seed: int = 0):
        from faker import Faker  # import cost paid once per process, and only when rows are made

        self.taxonomy = taxonomy
        self.seed = int(seed)
        self._fake = Faker(taxonomy.brand.faker_locale)
        brand = taxonomy.brand
        self._days = (brand.date_to - brand.date_from).days
        self._code_keys = round_keys(self.seed, STREAM_PRODUCT_CODE)
        self._category1 = _Choices.of((c, c.weight) for c in taxonomy.category1)
        # Per category1, one joint table over (category2, category3), so one draw picks both.
        self._branches = {c1.code: _Choices.of(((c2, c3), w) for c2, c3, w in _branch(taxonomy, c1.code))
                          for c1 in taxonomy.category1}
        self._tables = {id(c3): _Category3Tables.of(c3) for c2 in taxonomy.category2 for c3 in c2.category3}
        points = taxonomy.prices.points
        self._points = points
        # Snap in log space: the midpoints between neighbouring points are geometric means.
        self._edges = tuple(math.sqrt(a * b) for a, b in zip(points, points[1:]))

    def product(self, index: int) -> Product:
        if index < 0:
            raise ValueError(f"row index must be >= 0, got {index}")
        # One keyed hash of (seed, index) gives all of a row's draws: a counter-based generator that
        # costs ~2 us, where seeding a numpy Generator per row costs ~60 us.
        words = _WORDS.unpack(hashlib.blake2b(_KEY.pack(self.seed, index, STREAM_ROW), digest_size=64).digest())
        u = [(w + 0.5) * _TO_UNIT for w in words]  # uniforms strictly inside (0, 1)
        z = _NORMAL.inv_cdf(u[9])
        variant, render_seed, faker_seed = words[10], words[11], words[12]

        tax = self.taxonomy
        c1: Category1 = self._category1.pick(u[0])
        c2, c3 = self._branches[c1.code].pick(u[1])
        t = self._tables[id(c3)]
        item = t.items[min(int(u[2] * len(t.items)), len(t.items) - 1)]
        material = t.materials.pick(u[3])
        pattern = t.patterns.pick(u[4])
        colour = c3.colours[min(int(u[5] * len(c3.colours)), len(c3.colours) - 1)]
        template = t.titles.pick(u[6])
        title = " ".join(template.format(colour=colour.name, pattern=pattern.name, material=material.name,
                                         item=item.name).split())

        log_mean = math.log(c3.price_median * c1.price_multiplier * material.price_multiplier
                            * pattern.price_multiplier)
        full_price = self._snap(math.exp(log_mean + c3.price_sigma * z))
        discounted = u[7] < tax.prices.discount_rate
        if discounted:
            fraction = tax.prices.discounts[min(int(u[8] * len(tax.prices.discounts)), len(tax.prices.discounts) - 1)]
            price = float(max(1, round(full_price * (1 - fraction))))
        else:
            price = full_price

        self._fake.seed_instance(faker_seed)
        date = tax.brand.date_from + dt.timedelta(days=self._fake.random_int(0, self._days))
        asset_id = self._fake.md5()
        code = self.product_code(index)
        slug = _slug(title)
        rate = tax.brand.eur_per_unit
        row = {
            "website_name": tax.brand.website_name,
            "competence_date": date.isoformat(),
            "country_code": tax.brand.country_code,
            "currency_code": tax.brand.currency_code,
            "brand": tax.brand.brand,
            "category1_code": c1.code,
            "category2_code": c2.code,
            "category3_code": c3.code,
            "product_code": code,
            "title": title,
            "itemurl": tax.brand.item_url.format(slug=slug, product_code=code, asset_id=asset_id),
            "imageurl": tax.brand.image_url.format(slug=slug, product_code=code, asset_id=asset_id),
            "full_price": full_price,
            "price": price,
            "full_price_eur": round(full_price * rate, 2),
            "price_eur": round(price * rate, 2),
            "flg_discount": int(discounted),
        }
        look = Look(
            category1=c1.code, category2=c2.code, category3=c3.code, silhouette=item.silhouette,
            colour=colour.name, rgb=colour.rgb, material=material.name, texture=material.texture,
            pattern=pattern.render, trim=u[13], variant=variant,
        )
        return Product(row=row, look=look, render_seed=render_seed)

    def product_code(self, index: int) -> int:
        """Unique per index: a keyed shuffle of ``prefix * 10**6 + 0..999_999``, so codes look random
        but never repeat; past a million rows each further million gets its own extra leading digits."""
        block, within = divmod(index, 10**_CODE_DIGITS)
        shuffled = permute(within, 10**_CODE_DIGITS, self._code_keys)
        return (block * 100 + self.taxonomy.brand.product_code_prefix) * 10**_CODE_DIGITS + shuffled

    def _snap(self, raw: float) -> float:
        return self._points[bisect.bisect_right(self._edges, raw)]


@dataclass(frozen=True)
class _Category3Tables:
    items: tuple
    materials: _Choices
    patterns: _Choices
    titles: _Choices

    @classmethod
    def of(cls, c3: Category3) -> "_Category3Tables":
        return cls(items=c3.items, materials=_Choices.of(c3.materials), patterns=_Choices.of(c3.patterns),
                   titles=_Choices.of(c3.titles))


_NON_WORD = re.compile(r"[^a-z0-9]+")


def _slug(title: str) -> str:
    return _NON_WORD.sub("-", title.lower()).strip("-")


def _branch(taxonomy: Taxonomy, category1: str) -> list[tuple[Category2, Category3, float]]:
    """The (category2, category3, weight) sold to one category1; weights sum to 1."""
    branch = []
    for c2 in taxonomy.category2:
        sold = [c3 for c3 in c2.category3 if category1 in c3.category1]
        if category1 in c2.weights and sold:
            total3 = sum(c3.weight for c3 in sold)
            branch += [(c2, c3, c2.weights[category1] * c3.weight / total3) for c3 in sold]
    total = sum(w for *_, w in branch)
    return [(c2, c3, w / total) for c2, c3, w in branch]


def category_weights(taxonomy: Taxonomy) -> dict[tuple[str, str, str], float]:
    """The probability of each (category1, category2, category3): what a large run's counts converge to."""
    total1 = sum(c.weight for c in taxonomy.category1)
    return {(c1.code, c2.code, c3.code): c1.weight / total1 * w
            for c1 in taxonomy.category1 for c2, c3, w in _branch(taxonomy, c1.code)}

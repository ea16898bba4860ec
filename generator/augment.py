"""New rows from a real catalogue: each one keeps a source row's meaning and none of its identity.

``AugmentedSource(source, seed, image_size)`` is a row source for the writer: ``source(index)`` returns a
row dict with the schema's columns, a pure function of ``(seed, index, attempt)``, so any number of
worker processes write the same bytes. For each row it

* picks a source row (a fresh seeded permutation per pass over the catalogue, so every usable row is
  used once before any is used twice);
* transforms the image in ways that keep what it shows: a mild random resized crop, a horizontal flip,
  a small rotation, brightness / contrast / saturation jitter with a hue shift small enough that the
  colour the title names still holds, a new studio backdrop (only where the photo has a plain one), and
  a random JPEG quality;
* keeps the categories, and draws new metadata from what the source teaches: the full price from the
  category3's log-price distribution (a kernel density centred on the picked row, so the image-price
  link survives), snapped to the source's own price endings (x90, x50, ...); the title recombined from
  the category's own vocabulary, keeping the words that describe what the image shows (item, colour,
  pattern, material) and redrawing the rest;
* replaces every identifier: a new product code (never a source one), item and image URLs on reserved
  example domains with Faker-made asset ids.

Rows whose text carries PII (see :func:`generator.privacy.find_pii`) are never used, neither as
templates nor as vocabulary.

Images are transformed with PIL + numpy, chosen by measured speed: the same transforms (crop, flip,
rotation, colour jitter, backdrop, JPEG encode) ran at 140 / 73 images/s (224 / 336 px, one core) here
against albumentations 2.0.8's 110 / 55, which would also install opencv and scipy (~300 MB).
torchvision v2 is not an option: its wheels pin a torch build other than the project's.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from generator import fingerprint
from generator.privacy import GuardedSource, PrivacyError, PrivacyGuard, find_pii, normalise_title
from generator.sources import SourceCatalog, SourceRow

# Words that name what the image shows; recombined titles keep them. Longest phrases are matched first.
COLOUR_WORDS = ("Archive Beige", "Dark Birch Brown", "Birch Brown", "Bright Red", "Sky Blue", "Black", "White",
                "Navy", "Camel", "Honey", "Ivory", "Olive", "Beige", "Grey", "Gray", "Red", "Burgundy", "Pink",
                "Blue", "Green", "Brown", "Tan", "Khaki", "Sand", "Silver", "Gold", "Cream", "Crème", "Stone",
                "Charcoal", "Yellow", "Orange", "Purple")
PATTERN_WORDS = ("Vintage Check", "House Check", "Check", "Monogram", "Stripe", "Striped", "Quilted", "Logo",
                 "Print", "Printed", "Houndstooth", "Plaid", "Argyle", "Camouflage", "Floral", "Jacquard",
                 "Cable Knit", "Montage", "EKD", "TB")
MATERIAL_WORDS = ("Cotton Gabardine", "Wool Cashmere", "Grainy Leather", "Coated Canvas", "Recycled Nylon",
                  "Stretch Cotton", "Cotton Poplin", "Cotton Blend", "Merino Wool", "Silk Twill",
                  "Canvas and Leather", "Cashmere", "Wool", "Cotton", "Silk", "Leather", "Suede", "Nylon",
                  "Canvas", "Linen", "Denim", "Mesh", "Bouclé", "Jersey", "Shearling", "Mohair", "Alpaca",
                  "Tweed", "Velvet", "Satin", "Gabardine", "Polyester", "Down", "Rubber", "Metal")
_VARIANT_SPLIT = re.compile(r"\s+[–—·-]\s+")


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.80, 1.0)    # area kept: wider crops would cut the product off
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    flip_p: float = 0.5
    max_rotation: float = 7.0                        # degrees
    brightness: float = 0.12
    contrast: float = 0.12
    saturation: float = 0.15
    hue_shift: float = 0.02                          # of the hue circle; halved when the title names a colour
    background_p: float = 0.7                        # chance of a new backdrop (plain-backdrop photos only)
    jpeg_quality: tuple[int, int] = (72, 95)
    price_bandwidth: float = 0.35                    # kernel width, in units of the category's log-price std
    keep_free_word_p: float = 0.5                    # chance a non-descriptive title word survives
    date_jitter_days: int = 0                        # 0 keeps the source row's competence_date
    item_host: str = "shop.example.com"              # reserved example domains (RFC 2606)
    image_host: str = "images.example.net"


# --------------------------------------------------------------------------------------------------
# What the source teaches: title vocabulary, prices, price endings, discounts, the EUR rate


@dataclass(frozen=True)
class ParsedTitle:
    words: tuple[tuple[str, str], ...]   # (word or phrase, kind) in order; kind: colour/pattern/material/free/head
    variant: str                         # the part after a dash ("Check Cashmere Scarf – Archive Beige")

    @property
    def colour(self) -> str | None:
        return next((w for w, kind in self.words if kind == "colour"), None)

    @property
    def free(self) -> list[str]:
        return [w for w, kind in self.words if kind == "free"]


def parse_title(title: str, compounds: frozenset[tuple[str, str]] = frozenset()) -> ParsedTitle:
    """Split a title into descriptive words (kept), free words (redrawn) and the item (head).

    ``compounds`` are (word, head) pairs the catalogue always writes together ("Trench Coat",
    "Knight Bag"): the word then belongs to the item and is kept too.
    """
    main, *rest = _VARIANT_SPLIT.split(title, maxsplit=1)
    tokens = main.split()
    words: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        if i == len(tokens) - 1:
            words.append((tokens[i], "head"))
            break
        for kind, lexicon in (("colour", COLOUR_WORDS), ("pattern", PATTERN_WORDS), ("material", MATERIAL_WORDS)):
            phrase = _match(tokens, i, lexicon)
            if phrase:
                words.append((phrase, kind))
                i += len(phrase.split())
                break
        else:
            words.append((tokens[i], "free"))
            i += 1
    if len(words) >= 2 and words[-2][1] == "free" and (words[-2][0], words[-1][0]) in compounds:
        words[-2:] = [(f"{words[-2][0]} {words[-1][0]}", "head")]
    variant = rest[0] if rest else ""
    if variant and not words:
        words = [(variant, "head")]
        variant = ""
    return ParsedTitle(tuple(words), variant)


def _match(tokens: list[str], i: int, lexicon) -> str | None:
    for n in (3, 2, 1):
        if i + n <= len(tokens) - 1:  # never swallow the head word
            phrase = " ".join(tokens[i:i + n])
            if phrase in lexicon:
                return phrase
    return None


@dataclass
class _TitleModel:
    """Per category: the free words, where they usually stand, and how many a title has."""

    pool: dict[str, list[str]] = field(default_factory=dict)    # category3, else category2, else "" (all)
    position: dict[str, float] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    compounds: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def fit(cls, rows: list[SourceRow]) -> "_TitleModel":
        compounds = _compounds([parse_title(r.title) for r in rows])
        pool: dict[str, set] = defaultdict(set)
        counts: dict[str, list[int]] = defaultdict(list)
        pos_sum: dict[str, float] = defaultdict(float)
        pos_n: Counter = Counter()
        for row in rows:
            parsed = parse_title(row.title, compounds)
            n = max(1, len(parsed.words) - 1)
            for k, (word, kind) in enumerate(parsed.words):
                if kind == "free":
                    for key in (row.category3_code, "2:" + row.category2_code, ""):
                        pool[key].add(word)
                    pos_sum[word] += k / n
                    pos_n[word] += 1
            counts[row.category3_code].append(len(parsed.free))
        return cls(pool={c: sorted(p) for c, p in pool.items()},
                   position={w: pos_sum[w] / pos_n[w] for w in pos_n},
                   counts=dict(counts), compounds=compounds)

    def recombine(self, row: SourceRow, rng: np.random.Generator, keep_p: float) -> str:
        parsed = parse_title(row.title, self.compounds)
        # A category with too few free words to vary (one listing, say) borrows its parent's, then the catalogue's.
        pool: list[str] = []
        for key in (row.category3_code, "2:" + row.category2_code, ""):
            pool += [w for w in self.pool.get(key, []) if w not in pool]
            if len(set(pool) - set(parsed.free)) >= 3:
                break
        target = max(1, int(rng.choice(self.counts.get(row.category3_code, [0]))))
        free = [w for w in parsed.free if rng.random() < keep_p]
        extra = [w for w in pool if w not in free]
        while len(free) < target and extra:
            free.append(extra.pop(int(rng.integers(len(extra)))))
        n = max(1, len(parsed.words) - 1)
        # Descriptive words keep their place; free words go where the category usually puts them.
        placed = [(k / n, w) for k, (w, kind) in enumerate(parsed.words) if kind not in ("free", "head")]
        placed += [(self.position.get(w, 0.1) - 1e-6, w) for w in free]
        placed.sort(key=lambda item: item[0])
        heads = [w for w, kind in parsed.words if kind == "head"]
        title = " ".join([w for _, w in placed] + heads)
        return f"{title} – {parsed.variant}" if parsed.variant else title


def _compounds(parsed: list[ParsedTitle]) -> frozenset[tuple[str, str]]:
    """(word, head) pairs where the word nearly always stands right before that head: part of the item."""
    before_head: Counter = Counter()
    anywhere: Counter = Counter()
    for p in parsed:
        anywhere.update(w for w, kind in p.words if kind == "free")
        if len(p.words) >= 2 and p.words[-2][1] == "free":
            before_head[(p.words[-2][0], p.words[-1][0])] += 1
    return frozenset(pair for pair, n in before_head.items() if n >= 2 and n >= 0.8 * anywhere[pair[0]])


@dataclass
class _PriceModel:
    bandwidth: dict[str, float]          # category3 -> kernel width on log price
    endings: dict[int, np.ndarray]       # magnitude band -> full-price endings seen (mod 100; mod 10 below 100)
    sale_endings: dict[int, np.ndarray]  # the same for discounted prices, which follow their own rounding
    discount_rate: float
    discount_ratios: np.ndarray
    eur_per_unit: float | None

    @classmethod
    def fit(cls, rows: list[SourceRow], bandwidth: float) -> "_PriceModel":
        by_cat: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            by_cat[r.category3_code].append(math.log(r.full_price))
        all_logs = np.array([v for vs in by_cat.values() for v in vs])
        global_std = float(all_logs.std()) if len(all_logs) > 1 else 0.3
        widths = {}
        for cat, values in by_cat.items():
            # Small categories borrow the catalogue's spread: three prices say little about their own.
            std = float(np.std(values)) if len(values) >= 5 else global_std
            widths[cat] = max(0.03, bandwidth * std)
        discounted = [r for r in rows if r.flg_discount and 0 < r.price < r.full_price]
        ratios = np.array([r.price / r.full_price for r in discounted]) if discounted else np.array([1.0])
        fx = [r.full_price_eur / r.full_price for r in rows if r.full_price_eur]
        return cls(bandwidth=widths,
                   endings=_endings([r.full_price for r in rows]),
                   sale_endings=_endings([r.price for r in discounted]) or _endings([r.full_price for r in rows]),
                   discount_rate=len(discounted) / max(1, len(rows)), discount_ratios=ratios,
                   eur_per_unit=float(np.median(fx)) if fx else None)

    def snap(self, value: float, sale: bool = False) -> float:
        """The nearest price on the source's grid: same band, an ending the source uses."""
        grid = self.sale_endings if sale else self.endings
        band, unit = _band(value)
        endings = grid.get(band)
        if endings is None:
            endings = grid[min(grid, key=lambda b: abs(b - band))] if grid else np.array([0])
        base = math.floor(value / unit) * unit
        candidates = np.concatenate([base - unit + endings, base + endings, base + unit + endings])
        candidates = candidates[candidates > 0]
        return float(candidates[np.argmin(np.abs(candidates - value))]) if len(candidates) else float(round(value))

    def draw(self, row: SourceRow, rng: np.random.Generator) -> tuple[float, float, int]:
        width = self.bandwidth.get(row.category3_code, 0.1)
        full = self.snap(math.exp(math.log(row.full_price) + rng.normal(0.0, width)))
        price = full
        if rng.random() < self.discount_rate:
            price = min(full, self.snap(full * float(rng.choice(self.discount_ratios)), sale=True))
        return full, price, int(price < full)


def _endings(prices: list[float]) -> dict[int, np.ndarray]:
    found: dict[int, set[int]] = defaultdict(set)
    for p in prices:
        band, unit = _band(p)
        found[band].add(int(round(p)) % unit)
    return {b: np.array(sorted(e)) for b, e in found.items()}


def _band(value: float) -> tuple[int, int]:
    band = int(math.floor(math.log10(max(value, 1.0))))
    return band, 100 if band >= 2 else 10


# --------------------------------------------------------------------------------------------------
# The row source


_TRIES = 8


def augmented_row_source(source: SourceCatalog, rows: int, seed: int, image_size: int = 336,
                         privacy: str = "strict", config: AugmentConfig = AugmentConfig(),
                         max_attempts: int = 8) -> "AugmentedSource | GuardedSource":
    """What ``gen-samples --source`` writes: augmented rows behind the privacy guard ("off": unguarded)."""
    augmented = AugmentedSource(source, seed, image_size, rows, config)
    if privacy == "off":
        return augmented
    return GuardedSource(augmented, PrivacyGuard(source, privacy), max_attempts)


class AugmentedSource:
    """``source(index, attempt=0) -> row``: a deterministic, picklable row source built from a catalogue.

    Follows the writer's ``RowSource`` protocol: ``len(source)`` is ``rows`` (default: one pass over the
    usable source rows) and ``describe()`` returns the parameters that determine the rows. ``attempt`` > 0
    draws another variant of the same index (asked for when the privacy guard rejects a row; see
    :class:`generator.privacy.GuardedSource`); from the third attempt on, another source row of the same
    category is used as the template.
    """

    def __init__(self, source: SourceCatalog, seed: int, image_size: int = 336, rows: int | None = None,
                 config: AugmentConfig = AugmentConfig()):
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.config = config
        self.source = source
        self.excluded_pii = [i for i, r in enumerate(source.rows)
                             if find_pii(" ".join((r.title, r.category2_code, r.category3_code)))]
        excluded = set(self.excluded_pii)
        self.eligible = np.array([i for i in range(len(source.rows)) if i not in excluded], dtype=np.int64)
        if not len(self.eligible):
            # PrivacyError, not ValueError: the CLI reports it as one line, like the guard's own refusals.
            raise PrivacyError(f"every usable row of {source.origin} carries personal data in its text "
                               f"({len(source.rows)} rows), so none can be a template; remove it from the source")
        templates = [source.rows[i] for i in self.eligible]
        self.titles = _TitleModel.fit(templates)
        self.prices = _PriceModel.fit(templates, config.price_bandwidth)
        self.by_category: dict[str, np.ndarray] = {
            c: np.array([i for i in self.eligible if source.rows[i].category3_code == c])
            for c in sorted({r.category3_code for r in templates})}
        self.source_codes = frozenset(int(r.product_code) for r in source.all_rows() if r.product_code.isdigit())
        every = source.all_rows()
        self.source_titles = frozenset(normalise_title(r.title) for r in every)
        self.source_pairs = frozenset((normalise_title(r.title), r.full_price) for r in every)
        self.rows = len(self.eligible) if rows is None else int(rows)
        self.fingerprint = source_fingerprint(source)
        self._init_caches()

    # Caches are per process and rebuilt after unpickling: they hold decoded images, not state.
    def _init_caches(self) -> None:
        self._perms: dict[int, np.ndarray] = {}
        self._prepared: dict[int, _Prepared] = {}
        self._faker = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_perms", "_prepared", "_faker"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_caches()

    def __len__(self) -> int:
        return self.rows

    def describe(self) -> dict[str, Any]:
        """Flat, JSON-able parameters that determine the rows (the writer's manifest and the card show them)."""
        first = self.source.rows[0]
        return {
            "kind": "augmented", "generator": "gen-samples --source", "source": self.source.origin,
            "source_sha256": self.fingerprint, "source_rows_used": len(self.eligible), "seed": self.seed,
            "image_size": self.image_size, "augment_code": code_fingerprint(),
            **{f"augment_{k}": list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()},
            "brand": first.brand, "country_code": first.country_code, "currency_code": first.currency_code,
            "pretty_name": f"Augmented {first.brand or 'product'} catalogue ({first.country_code or 'source'})",
            "description": "Rows augmented from a private source catalogue: images transformed, prices and titles "
                           "redrawn from the source's own distributions, every identifier replaced",
        }

    def report(self) -> dict[str, Any]:
        """What was learned from the source and what was left out, for the card and the JSON report."""
        return {"source": self.source.origin, "source_rows": self.source.report.to_dict(),
                "rows_used_as_templates": len(self.eligible), "rows_excluded_pii": len(self.excluded_pii),
                "categories": len(self.by_category), "discount_rate": round(self.prices.discount_rate, 4),
                "eur_per_unit": self.prices.eur_per_unit, "image_size": self.image_size,
                "price_endings": {str(b): e.tolist() for b, e in sorted(self.prices.endings.items())},
                "sale_price_endings": {str(b): e.tolist() for b, e in sorted(self.prices.sale_endings.items())}}

    # -- one row ---------------------------------------------------------------------------------------
    def __call__(self, index: int, attempt: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), int(attempt), 0xA06]))
        src_index = self._pick(int(index), int(attempt), rng)
        row = self.source.rows[src_index]
        meta = self._metadata(row, rng)
        named = parse_title(meta["title"]).colour
        meta["image"] = {"bytes": self._image(src_index, rng, named is not None, attempt), "path": None}
        return meta

    def _pick(self, index: int, attempt: int, rng: np.random.Generator) -> int:
        epoch, pos = divmod(index, len(self.eligible))
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            perm_rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0xBE7]))
            self._perms[epoch] = self.eligible[perm_rng.permutation(len(self.eligible))]
        picked = int(self._perms[epoch][pos])
        if attempt >= 2:
            same = self.by_category[self.source.rows[picked].category3_code]
            picked = int(same[rng.integers(len(same))])
        return picked

    def _metadata(self, row: SourceRow, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        # Private by construction where it is cheap: prefer a title no source row has, and never a source
        # (title, full price) pair nor the template's own price. The privacy guard still checks every row.
        for _ in range(_TRIES):
            title = self.titles.recombine(row, rng, cfg.keep_free_word_p)
            if normalise_title(title) not in self.source_titles:
                break
        for _ in range(_TRIES):
            full, price, discount = self.prices.draw(row, rng)
            if full != row.full_price and (normalise_title(title), full) not in self.source_pairs:
                break
        code = self._new_code(rng)
        fake = self._fake(rng)
        fx = self.prices.eur_per_unit
        return {
            "website_name": row.website_name, "competence_date": self._date(row.competence_date, rng),
            "country_code": row.country_code, "currency_code": row.currency_code, "brand": row.brand,
            "category1_code": row.category1_code, "category2_code": row.category2_code,
            "category3_code": row.category3_code, "product_code": code, "title": title,
            "itemurl": f"https://{cfg.item_host}/{_slug(title)}-p{code}",
            "imageurl": f"https://{cfg.image_host}/is/image/{fake.uuid4().upper()}",
            "full_price": full, "price": price,
            "full_price_eur": round(full * fx, 2) if fx else None,
            "price_eur": round(price * fx, 2) if fx else None,
            "flg_discount": discount,
        }

    def _new_code(self, rng: np.random.Generator) -> int:
        while True:
            code = int(rng.integers(10_000_000, 100_000_000))
            if code not in self.source_codes:
                return code

    def _fake(self, rng: np.random.Generator):
        if self._faker is None:
            from faker import Faker

            self._faker = Faker("en_US")
        self._faker.seed_instance(int(rng.integers(2**63)))
        return self._faker

    def _date(self, value: str, rng: np.random.Generator) -> str:
        days = self.config.date_jitter_days
        if not days:
            return value
        try:
            date = dt.date.fromisoformat(value)
        except ValueError:
            return value
        return (date + dt.timedelta(days=int(rng.integers(-days, days + 1)))).isoformat()

    # -- the image ---------------------------------------------------------------------------------
    def _image(self, src_index: int, rng: np.random.Generator, named_colour: bool, attempt: int) -> bytes:
        prep = self._prepared.get(src_index)
        if prep is None:
            if len(self._prepared) > 4096:  # bound memory on huge catalogues; 4k small images ~ 1 GB at most
                self._prepared.clear()
            prep = self._prepared[src_index] = prepare(self.source.rows[src_index].image, 2 * self.image_size)
        cfg = self.config
        if attempt:
            # A retry was too close to a source image: crop and turn a little more each time, within
            # bounds that still show the whole product the right way up.
            lo, hi = cfg.crop_scale
            cfg = replace(cfg, crop_scale=(max(0.6, lo - 0.04 * attempt), hi),
                          max_rotation=min(15.0, cfg.max_rotation + 1.5 * attempt))
        return augment_image(prep, rng, self.image_size, cfg, named_colour)


def source_fingerprint(source: SourceCatalog) -> str:
    """sha256 (16 hex) of the usable source rows, images included: a resumed run must read the same source."""
    h = hashlib.sha256()
    for row in source.rows:
        for key, value in asdict(row).items():
            if key != "origin":
                h.update(value if isinstance(value, bytes) else repr(value).encode("utf-8"))
    return h.hexdigest()[:16]


# The modules that decide an augmented row's bytes (privacy and sources: every module of the package).
ROW_MODULES = ("augment", "privacy", "sources", "schema")


def code_fingerprint() -> str:
    """A hash of the modules that decide augmented rows: a run only resumes with the same code."""
    return fingerprint.code_fingerprint(*ROW_MODULES)


# --------------------------------------------------------------------------------------------------
# Image transforms (PIL + numpy)


@dataclass(frozen=True)
class _Prepared:
    image: Image.Image          # RGB, padded to a square with the backdrop colour
    mask: Image.Image | None    # L: the product (255) against a plain backdrop (0); None if the backdrop is busy
    backdrop: tuple[int, int, int]


def prepare(jpeg: bytes, max_side: int) -> _Prepared:
    """Decode once per source row: pad to a square, find the product against a plain backdrop."""
    img = Image.open(io.BytesIO(jpeg))
    img.draft("RGB", (max_side, max_side))  # JPEG DCT scaling: a big photo decodes at a fraction of the cost
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.int16)
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3),
                             arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    backdrop = tuple(int(v) for v in np.median(border, axis=0))
    mask = None
    # A plain backdrop: the left and right edges of each line agree. Studio backdrops shade top to bottom,
    # so the expected backdrop of a line is the mean of its two edges, not one colour for the whole image.
    edges = (arr[:, :2].mean(1) + arr[:, -2:].mean(1)) / 2
    spread = np.abs(arr[:, :2].mean(1) - arr[:, -2:].mean(1)).max()
    if spread < 24 and np.abs(border - np.median(border, axis=0)).mean() < 12:
        distance = np.abs(arr - edges[:, None, :]).max(2)
        hard = Image.fromarray(np.where(distance > 22, 255, 0).astype(np.uint8), "L")
        # Close small holes (a pale check line inside the product), then soften the edge.
        mask = hard.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3)).filter(
            ImageFilter.GaussianBlur(0.8))
    side = max(img.size)
    if img.width != img.height:
        square = Image.new("RGB", (side, side), backdrop)
        offset = ((side - img.width) // 2, (side - img.height) // 2)
        square.paste(img, offset)
        if mask is not None:
            square_mask = Image.new("L", (side, side), 0)
            square_mask.paste(mask, offset)
            mask = square_mask
        img = square
    return _Prepared(img, mask, backdrop)


def augment_image(prep: _Prepared, rng: np.random.Generator, size: int, cfg: AugmentConfig,
                  named_colour: bool = False) -> bytes:
    side = prep.image.width
    # Random resized crop + flip + rotation as ONE affine resample. PIL's bilinear affine costs ~40 ns a
    # pixel, so when the crop holds fewer pixels than the output it runs at the crop's size and a
    # (separable, ~10x cheaper) resize brings it up to the output size.
    area = rng.uniform(*cfg.crop_scale)
    ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    cw = min(side * math.sqrt(area * ratio), side)
    ch = min(side * math.sqrt(area / ratio), side)
    cx = side / 2 + rng.uniform(-1, 1) * (side - cw) / 2
    cy = side / 2 + rng.uniform(-1, 1) * (side - ch) / 2
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    flip = -1.0 if rng.random() < cfg.flip_p else 1.0
    work = min(size, max(16, math.ceil(max(cw, ch))))
    sx, sy = flip * cw / work, ch / work
    cos, sin = math.cos(angle), math.sin(angle)
    a, b, d, e = cos * sx, -sin * sy, sin * sx, cos * sy
    matrix = (a, b, cx - (a + b) * work / 2, d, e, cy - (d + e) * work / 2)

    def geometry(img: Image.Image, fill) -> Image.Image:
        out = img.transform((work, work), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=fill)
        return out if work == size else out.resize((size, size), Image.Resampling.BILINEAR)

    out = geometry(prep.image, prep.backdrop)
    # Colour: brightness, contrast, saturation and a hue rotation folded into one 3x4 colour matrix, one
    # pass in C (PIL's HSV round trip alone costs 10x more). The hue turns at most a few degrees, and
    # half as far when the title names the colour, so "Honey" stays honey.
    calm = 0.5 if named_colour else 1.0
    out = out.convert("RGB", _colour_matrix(
        bright=1 + rng.uniform(-cfg.brightness, cfg.brightness),
        contrast=1 + rng.uniform(-cfg.contrast, cfg.contrast),
        saturation=1 + calm * rng.uniform(-cfg.saturation, cfg.saturation),
        hue=calm * rng.uniform(-cfg.hue_shift, cfg.hue_shift) * 2 * math.pi))
    if prep.mask is not None and rng.random() < cfg.background_p:
        out = Image.composite(out, _backdrop(size, rng), geometry(prep.mask, 0))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return buf.getvalue()


_LUMA = np.array([0.213, 0.715, 0.072])


def _colour_matrix(bright: float, contrast: float, saturation: float, hue: float) -> tuple[float, ...]:
    """RGB -> RGB affine colour matrix for PIL's ``convert("RGB", matrix)``."""
    grey = np.tile(_LUMA, (3, 1))
    sat = (1 - saturation) * grey + saturation * np.eye(3)
    cos, sin = math.cos(hue), math.sin(hue)
    # Rotation about the grey axis that keeps luminance (the SVG / CSS hue-rotate matrix).
    rot = grey + cos * (np.eye(3) - grey) + sin * np.array([[-0.213, -0.715, 0.928],
                                                             [0.143, 0.140, -0.283],
                                                             [-0.787, 0.715, 0.072]])
    linear = contrast * bright * rot @ sat
    offset = 128.0 * (1 - contrast)
    return tuple(float(v) for row in np.hstack([linear, np.full((3, 1), offset)]) for v in row)


def _backdrop(size: int, rng: np.random.Generator) -> Image.Image:
    """A light studio backdrop: a near-neutral tone with a soft top-to-bottom falloff."""
    tone = rng.uniform(222, 252)
    tint = rng.uniform(-6, 6, 3)
    fall = rng.uniform(0, 18)
    column = tone + tint[None, :] - fall * np.linspace(0, 1, size)[:, None]
    column = np.clip(column, 0, 255).astype(np.uint8)[:, None, :]
    return Image.fromarray(column, "RGB").resize((size, size), Image.Resampling.NEAREST)


def _slug(title: str) -> str:
    import unicodedata

    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return "-".join("".join(ch if ch.isalnum() else " " for ch in ascii_title.lower()).split())

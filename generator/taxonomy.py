"""Load and validate a taxonomy file: the brand, its category tree, title grammar and price model.

A taxonomy is data (TOML under ``generator/taxonomies/`` or any path), so another brand, country or
currency is a new file, never a code change. Loading validates everything once and returns frozen
dataclasses; a bad file raises :class:`TaxonomyError` with one line naming the file, the key and the fix.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Next to this file, not via importlib.resources: that also works when the package is a namespace.
BUILTIN_DIR = Path(__file__).parent / "taxonomies"
PATTERN_NONE = "none"  # the key a category uses for "no pattern": the title then carries no pattern word
TITLE_FIELDS = ("colour", "pattern", "material", "item")


class TaxonomyError(ValueError):
    """An invalid or missing taxonomy file; ``str(err)`` is one line that names the file, key and fix."""


@dataclass(frozen=True)
class Brand:
    brand: str
    website_name: str
    country_code: str
    currency_code: str
    eur_per_unit: float                 # EUR value of one unit of the currency, for the *_eur columns
    faker_locale: str
    date_from: dt.date                  # competence_date is drawn from this window
    date_to: dt.date
    product_code_prefix: int            # product codes are 8 digits starting with these digits
    item_url: str                       # templates with {slug} {product_code} {asset_id}
    image_url: str


@dataclass(frozen=True)
class CardInfo:
    pretty_name: str
    license: str


@dataclass(frozen=True)
class PriceModel:
    points: tuple[float, ...]           # the brand's price points, ascending: full prices snap to these
    discount_rate: float                # probability that a row is discounted (flg_discount = 1)
    discounts: tuple[float, ...]        # fractions taken off a discounted full price


@dataclass(frozen=True)
class Category1:
    code: str
    weight: float
    price_multiplier: float


@dataclass(frozen=True)
class Colour:
    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Material:
    name: str
    texture: str                        # renderer texture name
    price_multiplier: float


@dataclass(frozen=True)
class Pattern:
    name: str                           # the title words; "" for no pattern
    render: str                         # renderer pattern name
    price_multiplier: float


@dataclass(frozen=True)
class Item:
    name: str                           # the item words of the title, e.g. "Small Shoulder Bag"
    silhouette: str                     # the shape the renderer draws for it


@dataclass(frozen=True)
class Category3:
    code: str
    weight: float
    category1: tuple[str, ...]          # the category1 codes that sell it
    items: tuple[Item, ...]
    materials: tuple[tuple[Material, float], ...]
    patterns: tuple[tuple[Pattern, float], ...]
    colours: tuple[Colour, ...]
    price_median: float                 # in the brand's currency, for category1 multiplier 1
    price_sigma: float                  # log-normal spread
    titles: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Category2:
    code: str
    weights: dict[str, float]           # category1 code -> relative weight (absent: not sold there)
    category3: tuple[Category3, ...]


@dataclass(frozen=True)
class Taxonomy:
    name: str
    source: str                         # where it was loaded from, for messages and the card
    sha256: str                         # of the file bytes: the card records exactly which taxonomy made a run
    description: str
    brand: Brand
    card: CardInfo
    prices: PriceModel
    category1: tuple[Category1, ...]
    category2: tuple[Category2, ...]
    colours: tuple[Colour, ...]
    materials: tuple[Material, ...]
    patterns: tuple[Pattern, ...]

    def category3_codes(self) -> list[str]:
        return sorted({c3.code for c2 in self.category2 for c3 in c2.category3})


# --------------------------------------------------------------------------------------------------
# Finding a file


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def resolve(name_or_path: str | Path) -> Path:
    """A built-in name (``burberry_us``) or a path to a ``.toml`` file -> the file's path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise TaxonomyError(f"taxonomy file {text} not found; give an existing .toml path or one of: "
                                f"{', '.join(builtin_names())}")
        return path
    candidate = BUILTIN_DIR / f"{text}.toml"
    if not re.fullmatch(r"[\w.-]+", text) or not candidate.is_file():
        raise TaxonomyError(f"unknown taxonomy {text!r}; use one of: {', '.join(builtin_names())} "
                            "or a path to a .toml file")
    return candidate


def load(name_or_path: str | Path, *, check_renderer: bool = True) -> Taxonomy:
    """Read, validate and return a taxonomy. ``check_renderer`` also checks the silhouette, texture and
    pattern names against :mod:`generator.render` so a typo fails at load time, not after an hour of rows."""
    path = resolve(name_or_path)
    data = path.read_bytes()
    label = str(name_or_path) if not str(name_or_path).endswith(".toml") else str(path)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise TaxonomyError(f"{label}: not valid TOML ({err}); fix the syntax") from None
    except RecursionError:  # tomllib parses nested arrays / inline tables recursively
        raise TaxonomyError(f"{label}: values nested too deeply for a taxonomy (arrays or inline tables "
                            "inside each other hundreds of levels down); a taxonomy needs at most a few levels: "
                            "fix the file") from None
    names = _renderer_names() if check_renderer else None
    return _Parser(label, names).taxonomy(raw, default_name=path.stem, sha256=hashlib.sha256(data).hexdigest())


def _renderer_names() -> dict[str, tuple[str, ...]]:
    from generator import render  # lazy: the renderer is only needed to check names

    return {"silhouette": tuple(render.SILHOUETTES), "texture": tuple(render.TEXTURES),
            "pattern": tuple(render.PATTERNS)}


# --------------------------------------------------------------------------------------------------
# Validation: every check names the key path and says what to write instead.

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
# Ranges that keep every price finite and meaningful: the *_eur columns are price x eur_per_unit, so
# eur_per_unit = 1e308 would write inf. No currency is worth less than 1e-6 EUR or more than 1e6 EUR,
# and no catalogue price point exceeds a billion units.
EUR_PER_UNIT_RANGE = (1e-6, 1e6)
MAX_PRICE_POINT = 1e9
_MISSING = object()


class _Parser:
    def __init__(self, label: str, renderer_names: dict[str, tuple[str, ...]] | None):
        self.label = label
        self.renderer = renderer_names

    def fail(self, key: str, problem: str, fix: str) -> TaxonomyError:
        return TaxonomyError(f"{self.label}: {key}: {problem}; {fix}")

    # -- typed getters -----------------------------------------------------------------------------
    def get(self, table: dict, key: str, where: str, default: Any = _MISSING) -> Any:
        if key not in table:
            if default is _MISSING:
                raise self.fail(_join(where, key), "missing", f"add `{key} = ...` to [{where or 'top level'}]")
            return default
        return table[key]

    def table(self, table: dict, key: str, where: str, default: Any = _MISSING) -> dict:
        value = self.get(table, key, where, default)
        if not isinstance(value, dict):
            raise self.fail(_join(where, key), f"expected a table, got {_kind(value)}", f"write it as [{_join(where, key)}]")
        return value

    def text(self, table: dict, key: str, where: str, default: Any = _MISSING) -> str:
        value = self.get(table, key, where, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(_join(where, key), f"expected a non-empty string, got {value!r}", 'write it as "..."')
        return value

    def number(self, table: dict, key: str, where: str, default: Any = _MISSING, *, low: float = 0.0,
               high: float = math.inf, low_inclusive: bool = False) -> float:
        value = self.get(table, key, where, default)
        return self.check_number(value, _join(where, key), low=low, high=high, low_inclusive=low_inclusive)

    def check_number(self, value: Any, key: str, *, low: float = 0.0, high: float = math.inf,
                     low_inclusive: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= low if low_inclusive else value > low) and value <= high
        if not ok:
            bound = f"{'>=' if low_inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high != math.inf else "")
            raise self.fail(key, f"expected a number {bound}, got {value!r}", "fix the value")
        return float(value)

    def weights(self, value: Any, key: str, allowed: dict[str, Any], what: str) -> tuple[tuple[Any, float], ...]:
        """``{name = weight, ...}`` whose names are keys of ``allowed``."""
        if not isinstance(value, dict) or not value:
            raise self.fail(key, f"expected a table of {what} -> weight, got {value!r}",
                            f'write it as {{ "{next(iter(allowed), "name")}" = 1 }}')
        out = []
        for name, weight in value.items():
            if name not in allowed:
                raise self.fail(f"{key}.{_q(name)}", f"unknown {what}",
                                f"use one of: {', '.join(allowed)} (or define it first)")
            out.append((allowed[name], self.check_number(weight, f"{key}.{_q(name)}")))
        return tuple(out)

    def renderer_name(self, value: Any, key: str, kind: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a renderer {kind} name, got {value!r}", 'write it as "name"')
        if self.renderer is not None and value not in self.renderer[kind]:
            raise self.fail(key, f"unknown {kind} {value!r}", f"use one of the renderer's: {', '.join(self.renderer[kind])}")
        return value

    # -- sections ----------------------------------------------------------------------------------
    def taxonomy(self, raw: dict, *, default_name: str, sha256: str) -> Taxonomy:
        known = {"name", "description", "brand", "card", "prices", "titles", "category1", "colours",
                 "materials", "patterns", "category2"}
        for key in raw:
            if key not in known:
                raise self.fail(key, "unknown top-level key", f"use only: {', '.join(sorted(known))}")
        name = self.text(raw, "name", "", default_name)
        brand = self.brand(self.table(raw, "brand", ""))
        card = self.table(raw, "card", "", {})
        card_info = CardInfo(pretty_name=self.text(card, "pretty_name", "card", f"Synthetic {brand.brand} catalogue"),
                             license=self.text(card, "license", "card", "cc-by-4.0"))
        prices = self.prices(self.table(raw, "prices", ""))
        titles = self.titles(self.get(self.table(raw, "titles", ""), "templates", "titles"), "titles.templates")
        category1 = self.category1(self.table(raw, "category1", ""))
        colours = self.colours(self.table(raw, "colours", ""))
        materials = self.materials(self.table(raw, "materials", ""))
        patterns = self.patterns(self.table(raw, "patterns", ""))
        category2 = self.category2(self.table(raw, "category2", ""), category1, colours, materials, patterns, titles)
        return Taxonomy(name=name, source=self.label, sha256=sha256, description=str(raw.get("description", "")),
                        brand=brand, card=card_info, prices=prices, category1=category1, category2=category2,
                        colours=tuple(colours.values()), materials=tuple(materials.values()),
                        patterns=tuple(patterns.values()))

    def brand(self, t: dict) -> Brand:
        w = "brand"
        dates = self.get(t, "dates", w)
        if (not isinstance(dates, list) or len(dates) != 2
                or not all(isinstance(d, (str, dt.date)) for d in dates)):
            raise self.fail("brand.dates", f"expected two dates, got {dates!r}", 'write it as ["2023-11-01", "2023-11-30"]')
        try:
            d0, d1 = (d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in dates)
        except ValueError:
            raise self.fail("brand.dates", f"not ISO dates: {dates!r}", 'write it as ["2023-11-01", "2023-11-30"]') from None
        if d1 < d0:
            raise self.fail("brand.dates", "the end is before the start", "swap the two dates")
        prefix = self.get(t, "product_code_prefix", w)
        if not isinstance(prefix, int) or isinstance(prefix, bool) or not 1 <= prefix <= 99:
            raise self.fail("brand.product_code_prefix", f"expected an integer 1..99, got {prefix!r}", "e.g. 80")
        urls = {}
        for key in ("item_url", "image_url"):
            url = self.text(t, key, w)
            host = re.match(r"^https?://([^/:?#]+)", url)
            # Synthetic rows must never point at a real shop: only the reserved example domains (RFC 2606).
            if not host or not re.search(r"(^|\.)(example\.(com|org|net)|[a-z0-9-]+\.(test|example|invalid))$",
                                         host.group(1)):
                raise self.fail(f"brand.{key}", f"{url!r} is not on a reserved example domain",
                                "use a host under example.com, example.org, example.net or a .test/.example domain")
            try:
                url.format(slug="s", product_code=1, asset_id="a")
            except (KeyError, IndexError, ValueError) as err:
                raise self.fail(f"brand.{key}", f"bad placeholder {err}", "use only {slug}, {product_code}, {asset_id}") from None
            urls[key] = url
        return Brand(
            brand=self.text(t, "brand", w), website_name=self.text(t, "website_name", w),
            country_code=self.text(t, "country_code", w), currency_code=self.text(t, "currency_code", w),
            eur_per_unit=self.number(t, "eur_per_unit", w, low=EUR_PER_UNIT_RANGE[0], low_inclusive=True,
                                     high=EUR_PER_UNIT_RANGE[1]),
            faker_locale=self.text(t, "faker_locale", w, "en_US"),
            date_from=d0, date_to=d1, product_code_prefix=prefix, **urls)

    def prices(self, t: dict) -> PriceModel:
        points = self.get(t, "points", "prices")
        if (not isinstance(points, list) or len(points) < 2
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= MAX_PRICE_POINT
                           for p in points)
                or any(b <= a for a, b in zip(points, points[1:]))):
            raise self.fail("prices.points", f"expected at least two prices from above 0 to {MAX_PRICE_POINT:g}, "
                            "in ascending order", "write it as [290, 350, 390, ...]")
        discounts = self.get(t, "discounts", "prices")
        if not isinstance(discounts, list) or not discounts:
            raise self.fail("prices.discounts", f"expected a list of fractions, got {discounts!r}", "e.g. [0.3, 0.4]")
        fractions = tuple(self.check_number(d, f"prices.discounts[{i}]", high=0.95) for i, d in enumerate(discounts))
        return PriceModel(points=tuple(float(p) for p in points),
                          discount_rate=self.number(t, "discount_rate", "prices", low_inclusive=True, high=1.0),
                          discounts=fractions)

    def titles(self, templates: Any, key: str) -> tuple[tuple[str, float], ...]:
        """A list of templates, or a table template -> weight."""
        if isinstance(templates, list) and all(isinstance(s, str) for s in templates):
            templates = {s: 1 for s in templates}
        if not isinstance(templates, dict) or not templates:
            raise self.fail(key, f"expected a list of title templates, got {templates!r}",
                            'write it as ["{colour} {pattern} {material} {item}"]')
        out = []
        for template, weight in templates.items():
            fields = set(re.findall(r"{(\w*)}", template))
            if fields - set(TITLE_FIELDS):
                raise self.fail(key, f"{template!r} uses unknown fields {sorted(fields - set(TITLE_FIELDS))}",
                                f"use only {{{'}, {'.join(TITLE_FIELDS)}}}")
            # The renderer draws colour, material and pattern from the same words, so every one of
            # them must be in the title for the title to be recoverable from the image.
            missing = [f for f in TITLE_FIELDS if f not in fields]
            if missing:
                raise self.fail(key, f"{template!r} lacks {', '.join('{' + m + '}' for m in missing)}",
                                "every template needs {colour}, {pattern}, {material} and {item}")
            out.append((template, self.check_number(weight, f"{key}.{_q(template)}")))
        return tuple(out)

    def category1(self, t: dict) -> tuple[Category1, ...]:
        if not t:
            raise self.fail("category1", "empty", "add e.g. WOMAN = { weight = 1 }")
        out = []
        for code, spec in t.items():
            w = f"category1.{_q(code)}"
            if not isinstance(spec, dict):
                raise self.fail(w, f"expected a table, got {_kind(spec)}", "write it as { weight = 1 }")
            out.append(Category1(code=code, weight=self.number(spec, "weight", w),
                                 price_multiplier=self.number(spec, "price_multiplier", w, 1.0)))
        return tuple(out)

    def colours(self, t: dict) -> dict[str, Colour]:
        out = {}
        for name, value in t.items():
            key = f"colours.{_q(name)}"
            if isinstance(value, str) and _HEX.match(value):
                rgb = tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
            elif (isinstance(value, list) and len(value) == 3
                  and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
                rgb = tuple(value)
            else:
                raise self.fail(key, f"expected a colour, got {value!r}", 'write it as "#b7803e" or [183, 128, 62]')
            out[name] = Colour(name=name, rgb=rgb)  # type: ignore[arg-type]
        if not out:
            raise self.fail("colours", "empty", 'add e.g. Black = "#1c1c1e"')
        return out

    def materials(self, t: dict) -> dict[str, Material]:
        out = {}
        for name, spec in t.items():
            w = f"materials.{_q(name)}"
            if not isinstance(spec, dict):
                raise self.fail(w, f"expected a table, got {_kind(spec)}", 'write it as { texture = "smooth" }')
            out[name] = Material(name=name, texture=self.renderer_name(spec.get("texture"), f"{w}.texture", "texture"),
                                 price_multiplier=self.number(spec, "price_multiplier", w, 1.0))
        if not out:
            raise self.fail("materials", "empty", 'add e.g. Leather = { texture = "grain" }')
        return out

    def patterns(self, t: dict) -> dict[str, Pattern]:
        out = {PATTERN_NONE: Pattern(name="", render=self.renderer_name("none", "patterns.none", "pattern"),
                                     price_multiplier=1.0)}
        for name, spec in t.items():
            w = f"patterns.{_q(name)}"
            if name == PATTERN_NONE:
                raise self.fail(w, f"{PATTERN_NONE!r} is built in (no pattern)", "remove it or rename it")
            if not isinstance(spec, dict):
                raise self.fail(w, f"expected a table, got {_kind(spec)}", 'write it as { render = "check" }')
            out[name] = Pattern(name=name, render=self.renderer_name(spec.get("render"), f"{w}.render", "pattern"),
                                price_multiplier=self.number(spec, "price_multiplier", w, 1.0))
        return out

    def category2(self, t: dict, category1, colours, materials, patterns, titles) -> tuple[Category2, ...]:
        if not t:
            raise self.fail("category2", "empty", "add e.g. [category2.BAGS]")
        codes1 = {c.code: c.code for c in category1}
        out = []
        for code, spec in t.items():
            w = f"category2.{_q(code)}"
            if not isinstance(spec, dict):
                raise self.fail(w, f"expected a table, got {_kind(spec)}", f"write it as [{w}]")
            weights = dict(self.weights(self.get(spec, "weights", w), f"{w}.weights", codes1, "category1"))
            cat3 = self.table(spec, "category3", w)
            if not cat3:
                raise self.fail(f"{w}.category3", "empty", f'add e.g. [{w}.category3."N.A."]')
            items = tuple(self.category3(c3, s3, f"{w}.category3.{_q(c3)}", weights, colours, materials, patterns, titles)
                          for c3, s3 in cat3.items())
            for c1 in weights:
                if not any(c1 in c3.category1 for c3 in items):
                    raise self.fail(f"{w}.weights.{c1}", f"no category3 of {code} is sold to {c1}",
                                    f"remove {c1} from the weights or add it to a category3's category1 list")
            out.append(Category2(code=code, weights=weights, category3=items))
        for c1 in codes1:
            if not any(c1 in c2.weights for c2 in out):
                raise self.fail(f"category1.{c1}", "no category2 is sold to it", f"add {c1} to some category2 weights")
        return tuple(out)

    def category3(self, code, spec, w, weights2, colours, materials, patterns, titles) -> Category3:
        if not isinstance(spec, dict):
            raise self.fail(w, f"expected a table, got {_kind(spec)}", f"write it as [{w}]")
        known = {"weight", "category1", "silhouette", "items", "materials", "patterns", "colours", "price_median",
                 "price_sigma", "titles"}
        for key in spec:
            if key not in known:
                raise self.fail(f"{w}.{key}", "unknown key", f"use only: {', '.join(sorted(known))}")
        sold_to = spec.get("category1", list(weights2))
        if not isinstance(sold_to, list) or not sold_to or any(c not in weights2 for c in sold_to):
            raise self.fail(f"{w}.category1", f"expected a list of this category2's category1 codes, got {sold_to!r}",
                            f"use some of: {', '.join(weights2)}")
        default_silhouette = spec.get("silhouette")
        raw_items = self.get(spec, "items", w)
        if isinstance(raw_items, list) and raw_items and all(isinstance(i, str) and i.strip() for i in raw_items):
            if default_silhouette is None:
                raise self.fail(f"{w}.silhouette", "missing", 'add silhouette = "..." (or map each item to one)')
            silhouette = self.renderer_name(default_silhouette, f"{w}.silhouette", "silhouette")
            items = tuple(Item(name=i, silhouette=silhouette) for i in raw_items)
        elif isinstance(raw_items, dict) and raw_items:
            items = tuple(Item(name=i, silhouette=self.renderer_name(s, f"{w}.items.{_q(i)}", "silhouette"))
                          for i, s in raw_items.items())
        else:
            raise self.fail(f"{w}.items", f"expected a list of item names, got {raw_items!r}",
                            'write it as ["Trench Coat", ...] or { "Trench Coat" = "silhouette" }')
        cols = spec.get("colours")
        if cols is None:
            colour_list = tuple(colours.values())
        elif isinstance(cols, list) and cols:
            for c in cols:
                if c not in colours:
                    raise self.fail(f"{w}.colours", f"unknown colour {c!r}", "define it under [colours] first")
            colour_list = tuple(colours[c] for c in cols)
        else:
            raise self.fail(f"{w}.colours", f"expected a list of colour names, got {cols!r}", 'e.g. ["Black", "Honey"]')
        return Category3(
            code=code, weight=self.number(spec, "weight", w), category1=tuple(sold_to), items=items,
            materials=self.weights(self.get(spec, "materials", w), f"{w}.materials", materials, "material"),
            patterns=self.weights(spec.get("patterns", {PATTERN_NONE: 1}), f"{w}.patterns", patterns, "pattern"),
            colours=colour_list, price_median=self.number(spec, "price_median", w),
            price_sigma=self.number(spec, "price_sigma", w, high=2.0),
            titles=self.titles(spec["titles"], f"{w}.titles") if "titles" in spec else titles,
        )


def _join(where: str, key: str) -> str:
    return f"{where}.{_q(key)}" if where else _q(key)


def _q(key: str) -> str:
    """A key as TOML would need it written, so the message can be pasted back into the file."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _kind(value: Any) -> str:
    return type(value).__name__

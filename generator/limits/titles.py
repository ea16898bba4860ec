"""Reading a row's drawn labels (colour, material, pattern, item) back from its title, by its
category3's own title templates."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from generator.taxonomy import PATTERN_NONE, TITLE_FIELDS, Category3, Taxonomy


class LimitsError(ValueError):
    """Rows that this taxonomy's generator could not have drawn (a title that does not parse, ...)."""


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

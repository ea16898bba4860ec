"""Cell parsers, forgiving and never raising: text, prices in the common locale formats, calendar dates
and product codes; ``None`` (or ``""``) for a cell that is not clearly one value."""
from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from typing import Any



_MISSING_TEXT = {"", "nan", "none", "null", "n/a", "#n/a", "na", "-"}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = unicodedata.normalize("NFC", str(value)).strip()
    text = " ".join(text.split())
    return "" if text.lower() in _MISSING_TEXT else text


def _blank(value: Any) -> bool:
    """An empty cell: None, NaN or one of the spreadsheet spellings of nothing ("", "n/a", "null", ...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXT


# Plain float syntax: what pandas and most exporters write (1990, 1990.5, 1.99e3).
_PLAIN_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Groups of three digits joined by one grouping mark, then an optional decimal part written with a different
# mark: 1,990.00 (en)  1.990,00 (de)  2 500,50 (fr)  1'990.50 (ch). The grouping mark must be consistent.
_GROUPED = re.compile(r"(\d{1,3})((?:([,. '’])\d{3})(?:\3\d{3})*)(?:([.,])(\d+))?")
_DECIMAL_COMMA = re.compile(r"(\d+),(\d+)")   # 1990,00 and 12,5


def _number(value: Any) -> float | None:
    """A price or flag cell as a finite float, or None when it is empty or not a number.

    Strings may carry a currency symbol or code before or after (``$``, ``€``, ``EUR``, ``US$``) and use
    the common locale formats above. ``1,990`` is read as 1990 (a grouping comma) and ``1.990`` as 1.99
    (a decimal point, as float() reads it); anything else that is not clearly one number (``0x10``,
    ``1.990.00``, ``12 USD 50``) gives None, so the row is skipped with a reason instead of mispriced.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = unicodedata.normalize("NFKC", str(value)).strip()  # NFKC: no-break and thin spaces -> " "
        if text.lower() in _MISSING_TEXT:
            return None
        number = _parse_number(text)
        if number is None:
            return None
    return number if math.isfinite(number) else None


def _parse_number(text: str) -> float | None:
    start, end = 0, len(text)
    while start < end and not (text[start].isdigit() or text[start] in "+-.,"):
        start += 1
    while end > start and not text[end - 1].isdigit():
        end -= 1
    if not all(_currency_affix(a) for a in (text[:start], text[end:])):
        return None
    core = text[start:end]
    sign = -1.0 if core.startswith("-") else 1.0
    core = core[1:].strip() if core[:1] in "+-" else core
    if _PLAIN_NUMBER.fullmatch(core):
        return sign * float(core)
    m = _GROUPED.fullmatch(core)
    if m and m.group(4) != m.group(3):
        digits = m.group(1) + m.group(2).replace(m.group(3), "")
        return sign * float(digits + (f".{m.group(5)}" if m.group(5) else ""))
    m = _DECIMAL_COMMA.fullmatch(core)
    if m:
        return sign * float(f"{m.group(1)}.{m.group(2)}")
    return None


def _currency_affix(text: str) -> bool:
    """Text around a number that can only be a currency: symbols, an ISO code or a short unit (US$, kr, Fr.)."""
    letters = sum(ch.isalpha() for ch in text)
    return letters in (0, 2, 3) and all(ch.isalpha() or ch.isspace() or ch == "." or unicodedata.category(ch) == "Sc"
                                        for ch in text)


_DATE_YMD = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})"
                       r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_DATE_DMY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")   # 17.11.2023: day first, never ambiguous


def _date(value: Any) -> str | None:
    """A snapshot date as ``YYYY-MM-DD``; "" for an empty cell; None when it is no real date (``99999``,
    ``2023-13-45``, ``not a date``). Slashed day/month orders (11/12/2023) are ambiguous and not guessed."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        day = value
    elif _blank(value):
        return ""
    else:
        text = str(value).strip()
        if m := _DATE_YMD.fullmatch(text):
            parts = int(m.group(1)), int(m.group(3)), int(m.group(4))
        elif m := _DATE_DMY.fullmatch(text):
            parts = int(m.group(3)), int(m.group(2)), int(m.group(1))
        else:
            return None
        try:
            day = dt.date(*parts)
        except ValueError:
            return None
    return day.isoformat() if 1900 <= day.year <= 2100 else None


def _code(value: Any) -> str:
    """Product code as text: 80712345, "80712345", " 80712345.0" all give "80712345"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    return "" if text.lower() in _MISSING_TEXT else text

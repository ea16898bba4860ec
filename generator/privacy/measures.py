"""What the guard and the report measure: PII in text, perceptual hashes of images, the metadata
features and their Gower distance, source identifiers found in a row."""
from __future__ import annotations

import io
import math
import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from generator.sources import SourceRow


TEXT_COLUMNS = ("website_name", "brand", "category1_code", "category2_code", "category3_code", "title")
URL_COLUMNS = ("itemurl", "imageurl")


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w-])")
_HONORIFIC = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+([A-Z][a-z]+)")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
# Words of product titles that Faker also lists as names ("Rose Gold", "Olive", "Hunter Green").
_NAME_STOPLIST = frozenset("""
rose olive camel gold silver black white green brown gray grey stone hunter sand ivory coral ruby pearl
amber hazel honey jade violet iris lily daisy jasmine ginger berry cherry sage navy rust fawn birch ash
heather reed bay dale cliff brook glen wood woods field fields cotton wool silk leather lane hill
page case bell belt cap tote bag check strap chain star may june april autumn summer winter
small long short bright knight diamond chelsea little young king major mini baby
""".split())


@lru_cache(maxsize=1)
def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    from faker.providers.person.en_US import Provider

    first = {n.lower() for n in (*Provider.first_names_female, *Provider.first_names_male)}
    last = {n.lower() for n in Provider.last_names}
    return frozenset(first - _NAME_STOPLIST), frozenset(last - _NAME_STOPLIST)


def find_pii(text: str) -> list[str]:
    """PII kinds found in free text: "email", "phone", "name" (each at most once)."""
    found: list[str] = []
    if not text:
        return found
    if _EMAIL.search(text):
        found.append("email")
    for m in _PHONE.finditer(text):
        if 9 <= sum(ch.isdigit() for ch in m.group(0)) <= 15:
            found.append("phone")
            break
    first, last = _name_lists()
    words = _WORD.findall(text)
    for a, b in zip(words, words[1:]):
        if a[:1].isupper() and b[:1].isupper() and a.lower() in first and b.lower() in last:
            found.append("name")
            break
    else:
        if any(m.group(1).lower() in last for m in _HONORIFIC.finditer(text)):
            found.append("name")
    return found


def row_pii(row: Mapping[str, Any]) -> list[str]:
    """PII kinds in a row's text columns (emails also in URLs; phones not: asset ids look like numbers)."""
    text = " \n ".join(str(row.get(c) or "") for c in TEXT_COLUMNS)
    kinds = find_pii(text)
    if "email" not in kinds and any(_EMAIL.search(str(row.get(c) or "")) for c in URL_COLUMNS):
        kinds.append("email")
    return kinds


# --------------------------------------------------------------------------------------------------
# Perceptual hash (DCT pHash, as in imagehash.phash: 32x32 grey, 8x8 lowest frequencies vs their median)


_N = 32
_DCT = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(_N)[None, :] + 1) / (2 * _N))
_MIRROR = np.array([(-1) ** k for k in range(8)], dtype=np.float64)  # a flip negates odd column frequencies


def phash_pair(image: Image.Image | bytes) -> tuple[int, int]:
    """(hash, hash of the mirrored image) as 64-bit ints."""
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
        image.draft("L", (_N * 2, _N * 2))  # JPEG: decode at 1/2..1/8 scale, the hash only needs 32 x 32
    grey = np.asarray(image.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT @ grey @ _DCT.T
    mirrored = low * _MIRROR[None, :]
    return _bits(low), _bits(mirrored)


def hash_distances(hashes: np.ndarray, mirrors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Bits between the hashes of ``rows`` and every hash, flip-invariant (either image mirrored):
    ``[len(rows), len(hashes)]``, a row's distance to itself set to 64 (never a near-duplicate)."""
    h = hashes[rows, None]
    d = np.minimum(np.bitwise_count(h ^ hashes[None, :]), np.bitwise_count(h ^ mirrors[None, :]))
    d[np.arange(len(rows)), rows] = 64
    return d


def _bits(low: np.ndarray) -> int:
    packed = np.packbits((low > np.median(low)).ravel())
    return int.from_bytes(packed.tobytes(), "big")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between uint64 hash arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Metadata features and their Gower distance


def normalise_title(title: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(title or "")).casefold().split())


def _title_signature(title: str) -> np.ndarray:
    """The title's word set as a 512-bit signature: Jaccard by popcount, fast against thousands of rows."""
    sig = np.zeros(8, dtype=np.uint64)
    for word in set(re.findall(r"\w+", normalise_title(title))):
        bit = zlib.crc32(word.encode("utf-8")) % 512
        sig[bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
    return sig


@dataclass
class _Meta:
    """Columnar metadata features of many rows."""

    cats: np.ndarray     # (n, 3) int codes of category1/2/3
    logp: np.ndarray     # (n,) log full price
    sig: np.ndarray      # (n, 8) uint64 title signatures

    def __len__(self) -> int:
        return len(self.logp)


class _Vocab:
    def __init__(self):
        self.codes: dict[str, int] = {}

    def __call__(self, value: Any) -> int:
        return self.codes.setdefault(str(value or ""), len(self.codes))


def _meta_features(rows: Iterable[Mapping[str, Any]], vocab: _Vocab) -> _Meta:
    cats, logp, sig = [], [], []
    for r in rows:
        cats.append([vocab(r.get("category1_code")), vocab(r.get("category2_code")), vocab(r.get("category3_code"))])
        price = r.get("full_price")
        logp.append(math.log(price) if price and price > 0 else np.nan)
        sig.append(_title_signature(r.get("title") or ""))
    return _Meta(np.array(cats, dtype=np.int64).reshape(-1, 3), np.array(logp, dtype=np.float64),
                 np.array(sig, dtype=np.uint64).reshape(-1, 8))


def _gower(a: _Meta, ia: np.ndarray | slice, b: _Meta, price_range: float) -> np.ndarray:
    """Distances between rows ``ia`` of ``a`` (m) and all rows of ``b`` (n): an (m, n) array in [0, 1]."""
    cat = (a.cats[ia][:, None, :] != b.cats[None, :, :]).sum(2).astype(np.float64)
    dp = np.abs(a.logp[ia][:, None] - b.logp[None, :]) / price_range
    dp = np.where(np.isnan(dp), 1.0, np.minimum(dp, 1.0))
    sa, sb = a.sig[ia][:, None, :], b.sig[None, :, :]
    inter = np.bitwise_count(sa & sb).sum(2)
    union = np.bitwise_count(sa | sb).sum(2)
    title = 1.0 - np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return (cat + dp + title) / 5.0


def _content_key(row: Mapping[str, Any]) -> tuple:
    return (str(row.get("category1_code") or ""), str(row.get("category2_code") or ""),
            str(row.get("category3_code") or ""), normalise_title(row.get("title")),
            _price_key(row.get("full_price")), _price_key(row.get("price")))


def _price_key(value: Any) -> float | None:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None


def _row_dict(row: SourceRow) -> dict[str, Any]:
    return {k: v for k, v in asdict(row).items() if k not in ("image", "origin")}


# Pieces of text that can carry an identifier: asset ids, long numbers (product codes), whole URLs.
# Separate patterns, so a number inside a URL is looked up on its own as well as the URL.
_ID_TOKENS = (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), re.compile(r"\d{6,}"),
              re.compile(r"https?://[^\s\"'<>]+"))


def _identifier_hits(row: Mapping[str, Any], identifiers: frozenset[str]) -> list[str]:
    """Columns of ``row`` holding a source identifier (exactly, or as an id / URL inside the text)."""
    hits = []
    for column in ("product_code", *URL_COLUMNS, *TEXT_COLUMNS):
        text = str(row.get(column) or "").strip().lower()
        if not text:
            continue
        if text in identifiers or any(m.group(0).rstrip(".,;)") in identifiers
                                      for pattern in _ID_TOKENS for m in pattern.finditer(text)):
            hits.append(column)
    return hits


def _image_bytes(row: Mapping[str, Any]) -> bytes | None:
    image = row.get("image")
    if isinstance(image, dict):
        image = image.get("bytes")
    return bytes(image) if isinstance(image, (bytes, bytearray)) and image else None


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "min": round(float(v.min()), 4), "p5": round(float(np.percentile(v, 5)), 4),
            "median": round(float(np.median(v)), 4), "mean": round(float(v.mean()), 4)}

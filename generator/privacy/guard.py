"""The guard: per-row checks against the source at a level's thresholds (``PrivacyGuard``), and the
row source that regenerates rejected rows (``GuardedSource``)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from generator.privacy.measures import (_content_key, _gower, _identifier_hits, _image_bytes, _meta_features,
                                        _price_key, _row_dict, _stats, _Vocab, hamming, normalise_title, phash_pair,
                                        row_pii)
from generator.sources import SourceCatalog


LEVELS = ("strict", "standard", "off")


# Reasons check() returns; the writer counts them and the report lists them.
IDENTIFIER = "source_identifier"
PII = "pii"
EXACT_ROW = "exact_row_copy"
TITLE_PRICE = "title_price_copy"
METADATA_DCR = "metadata_too_close"
IMAGE_DCR = "image_too_close"


@dataclass(frozen=True)
class Thresholds:
    """What a level rejects.

    A row is too close when its DCR to its closest source record is below that record's threshold:
    ``max(floor, min(target, the record's own distance to its closest other source record))``, where
    ``target`` is the source's baseline statistic named by ``relative_to``. The local term matters in
    dense regions of a catalogue (ten caps photographed alike): a row as far from a cap as the caps are
    from each other reveals no more than the source itself; the floor still forbids near-copies there.
    """

    check_rows: bool                  # False: check() passes everything (the report is still computed)
    pii_kinds: tuple[str, ...]        # which PII kinds reject a row
    min_metadata_dcr: float           # Gower distance floor, 0..1
    min_image_bits: float             # pHash Hamming distance floor, bits of 64
    relative_to: str | None           # "median" / "p5" of the source baseline, or None: floors only
    near_duplicate_bits: int = 4      # two generated images this close count as near-duplicates


THRESHOLDS: dict[str, Thresholds] = {
    # strict: as far from the source as a typical (median) source row is from its closest other one,
    # or as its closest record's own neighbour; never a near-copy; person names count as PII too.
    "strict": Thresholds(True, ("email", "phone", "name"), 0.01, 3, "median"),
    # standard: no copies, no near-identical images, no identifiers, no contact details.
    "standard": Thresholds(True, ("email", "phone"), 1e-9, 3, None),
    "off": Thresholds(False, (), 0.0, 0, None),
}


MIN_SOURCE_ROWS = 2  # the baseline is each source row's distance to its closest *other* source row
OFF_ADVICE = "--privacy off at your own risk (nothing is checked; do not share the result)"


class PrivacyGuard:
    """Per-row privacy checks against a source catalogue (or none, for purely synthetic data)."""

    def __init__(self, source: SourceCatalog | None, level: str = "strict",
                 thresholds: Thresholds | None = None):
        if level not in LEVELS:
            raise ValueError(f"unknown privacy level {level!r}; use one of: {', '.join(LEVELS)}")
        self.level = level
        self.thresholds = thresholds or THRESHOLDS[level]
        self.source = source
        if source is not None and self.thresholds.check_rows and len(source.rows) < MIN_SOURCE_ROWS:
            # One row gives a degenerate baseline (metadata 1.0, images 64 bits): no row could pass, or
            # every row would, depending on the measure. Say so instead of measuring nonsense.
            raise PrivacyError(
                f"{source.origin} has {len(source.rows)} usable row{'s' if len(source.rows) != 1 else ''}, and "
                f"the {level} privacy check needs at least {MIN_SOURCE_ROWS}: it compares how close generated "
                "rows come to the source with how close the source's rows are to each other, which one row "
                f"cannot show; add source rows, or use {OFF_ADVICE}")
        self.vocab = _Vocab()
        if source is None:
            self.identifiers: frozenset[str] = frozenset()
            self.content_keys: frozenset[tuple] = frozenset()
            self.title_prices: frozenset[tuple] = frozenset()
            self.meta = None
            self.hashes = np.zeros(0, dtype=np.uint64)
            self.mirrors = np.zeros(0, dtype=np.uint64)
            self.price_range = 1.0
            self.baseline: dict[str, Any] = {}
            self.targets: dict[str, float] = {}
            return
        every = [_row_dict(r) for r in source.all_rows()]
        self.identifiers = source.identifiers()
        self.content_keys = frozenset(_content_key(r) for r in every)
        self.title_prices = frozenset((normalise_title(r["title"]), _price_key(r["full_price"])) for r in every)
        self.meta = _meta_features(every, self.vocab)
        finite = self.meta.logp[np.isfinite(self.meta.logp)]
        self.price_range = float(finite.max() - finite.min()) if len(finite) > 1 and np.ptp(finite) > 0 else 1.0
        pairs = [phash_pair(r.image) for r in source.rows]
        self.hashes = np.array([p[0] for p in pairs], dtype=np.uint64)
        self.mirrors = np.array([p[1] for p in pairs], dtype=np.uint64)
        self.meta_nn, self.image_nn = self._nearest_neighbours()
        self.baseline = {"metadata_dcr": _stats(self.meta_nn), "image_dcr_bits": _stats(self.image_nn)}
        # Per source record: how close a generated row may come to it (see Thresholds).
        t = self.thresholds
        meta_target = self.baseline["metadata_dcr"].get(t.relative_to, 0.0) if t.relative_to else 0.0
        image_target = self.baseline["image_dcr_bits"].get(t.relative_to, 0.0) if t.relative_to else 0.0
        self.targets = {"metadata_dcr": meta_target, "image_dcr_bits": image_target}
        self.meta_limit = np.maximum(t.min_metadata_dcr, np.minimum(meta_target, self.meta_nn))
        self.image_limit = np.maximum(t.min_image_bits, np.minimum(image_target, self.image_nn))

    def _nearest_neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Each source row's distance to its closest *other* source row: metadata (every row read) and
        image (the kept rows, which come first in ``all_rows()``, so index i is the same row in both)."""
        n = len(self.meta)
        meta_nn = np.empty(n)
        for start in range(0, n, 256):
            idx = np.arange(start, min(start + 256, n))
            d = _gower(self.meta, idx, self.meta, self.price_range)
            d[np.arange(len(idx)), idx] = np.inf
            meta_nn[idx] = d.min(1) if n > 1 else 1.0
        kept = len(self.hashes)
        img_nn = np.empty(kept, dtype=np.int64)
        for start in range(0, kept, 256):
            idx = np.arange(start, min(start + 256, kept))
            d = np.minimum(hamming(self.hashes[idx, None], self.hashes[None, :]),
                           hamming(self.hashes[idx, None], self.mirrors[None, :]))
            d[np.arange(len(idx)), idx] = 64
            img_nn[idx] = d.min(1)
        return meta_nn, img_nn

    # -- per row ----------------------------------------------------------------------------------
    def check(self, row: Mapping[str, Any]) -> str | None:
        """The reason to reject ``row``, or None when it may be written."""
        t = self.thresholds
        if not t.check_rows:
            return None
        if self.identifiers and _identifier_hits(row, self.identifiers):
            return IDENTIFIER
        if set(row_pii(row)) & set(t.pii_kinds):
            return PII
        if self.meta is not None:
            if _content_key(row) in self.content_keys:
                return EXACT_ROW
            if (normalise_title(row.get("title")), _price_key(row.get("full_price"))) in self.title_prices:
                return TITLE_PRICE
            dcr, closest = self.metadata_dcr([row], with_closest=True)
            if dcr[0] < self.meta_limit[closest[0]]:
                return METADATA_DCR
        image = _image_bytes(row)
        if image is not None and len(self.hashes) and t.min_image_bits > 0:
            h, m = phash_pair(image)
            dcr, closest = self.image_dcr(np.array([h], dtype=np.uint64), np.array([m], dtype=np.uint64),
                                          with_closest=True)
            if dcr[0] < self.image_limit[closest[0]]:
                return IMAGE_DCR
        return None

    def explain(self, row: Mapping[str, Any], reason: str) -> str:
        """The numbers behind ``check(row) == reason``, for a message (computed again: failures are rare)."""
        if reason == IMAGE_DCR and (image := _image_bytes(row)) is not None and len(self.hashes):
            h, m = phash_pair(image)
            dcr, closest = self.image_dcr(np.array([h], dtype=np.uint64), np.array([m], dtype=np.uint64),
                                          with_closest=True)
            median = _num(self.baseline["image_dcr_bits"], "median")
            return (f"{int(dcr[0])} bits from a source image, which needs {self.image_limit[closest[0]]:g} "
                    f"(the source's own nearest-neighbour distances: median {median})")
        if reason == METADATA_DCR and self.meta is not None:
            dcr, closest = self.metadata_dcr([row], with_closest=True)
            median = _num(self.baseline["metadata_dcr"], "median")
            return (f"metadata distance {dcr[0]:.3f} to a source row, which needs {self.meta_limit[closest[0]]:.3f} "
                    f"(the source's own median {median})")
        return reason.replace("_", " ")

    def metadata_dcr(self, rows: list[Mapping[str, Any]], with_closest: bool = False):
        """Each row's Gower distance to its closest source record (and that record's index)."""
        gen = _meta_features(rows, self.vocab)
        out = np.empty(len(gen))
        closest = np.empty(len(gen), dtype=np.int64)
        for start in range(0, len(gen), 256):
            idx = np.arange(start, min(start + 256, len(gen)))
            d = _gower(gen, idx, self.meta, self.price_range)
            closest[idx] = d.argmin(1)
            out[idx] = d[np.arange(len(idx)), closest[idx]]
        return (out, closest) if with_closest else out

    def image_dcr(self, hashes: np.ndarray, mirrors: np.ndarray, with_closest: bool = False):
        """Flip-invariant distance of each hash to its closest source image, in bits (and its index)."""
        out = np.empty(len(hashes), dtype=np.int64)
        closest = np.empty(len(hashes), dtype=np.int64)
        for start in range(0, len(hashes), 512):
            h = hashes[start:start + 512, None]
            m = mirrors[start:start + 512, None]
            d = np.minimum(hamming(h, self.hashes[None, :]), hamming(m, self.hashes[None, :]))
            closest[start:start + 512] = d.argmin(1)
            out[start:start + 512] = d.min(1)
        return (out, closest) if with_closest else out


def _num(stats: Mapping[str, Any], key: str) -> str:
    value = stats.get(key)
    return "n/a" if value is None else f"{value:g}"


def _reuse(source_rows: int, rows: int) -> str:
    """The numbers behind small-source advice: '12 usable source rows for 200 rows, each reused about 17 times'."""
    times = f", each reused about {rows / source_rows:.0f} times" if source_rows and rows > source_rows else ""
    return f"{source_rows} usable source row{'s' if source_rows != 1 else ''} for {rows} rows{times}"


class GuardedSource:
    """Wrap a row source so that only rows passing the guard come out: ``source(index, attempt)`` is
    retried with attempt 1, 2, ... up to ``max_attempts``; a row that never passes raises ``PrivacyError``.

    A ``RowSource`` itself (``len``, ``describe``), deterministic and picklable whenever the wrapped source
    is. ``generate(index)`` also returns the reasons of the rejected attempts; ``rejections`` counts them
    in this process (worker processes keep their own counts).
    """

    def __init__(self, source: Callable[..., dict], guard: PrivacyGuard, max_attempts: int = 8):
        self.source, self.guard, self.max_attempts = source, guard, max_attempts
        self.rejections: Counter = Counter()
        self.passed = 0  # rows this process got through: whether fewer --rows could pass, when one fails

    def __len__(self) -> int:
        return len(self.source)

    def describe(self) -> dict[str, Any]:
        inner = self.source.describe() if hasattr(self.source, "describe") else {}
        return {**inner, "privacy": self.guard.level, "privacy_max_attempts": self.max_attempts}

    def generate(self, index: int) -> tuple[dict, list[str]]:
        reasons: list[str] = []
        for attempt in range(self.max_attempts):
            row = self.source(index, attempt) if attempt else self.source(index)
            reason = self.guard.check(row)
            if reason is None:
                self.rejections.update(reasons)
                self.passed += 1
                return row, reasons
            reasons.append(reason)
        raise PrivacyError(self._gave_up(index, row, reason))

    def _gave_up(self, index: int, row: dict, reason: str) -> str:
        """One line: which check, its numbers, and what would pass (never the other level: see the module doc)."""
        head = (f"row {index}: {self.max_attempts} attempts all failed the {self.guard.level} privacy check "
                f"({reason}: the last was {self.guard.explain(row, reason)})")
        if self.guard.source is None or reason not in (IMAGE_DCR, METADATA_DCR):
            return f"{head}; fix what the rows are made from, or use {OFF_ADVICE}"
        # Every row must pass, so fewer rows only help when failures are rare: say what this process saw.
        fewer = (f"fewer --rows may also pass ({self.passed} row{'s' if self.passed != 1 else ''} passed here "
                 "before this one failed)" if self.passed
                 else "fewer --rows would not help (no row had passed yet)")
        return (f"{head}; with {_reuse(len(self.guard.source.rows), len(self))}, variants of a source row could "
                "not get that far. What would pass: a source with more rows (its rows then sit closer to each "
                f"other, which lowers the bar), or {OFF_ADVICE}; {fewer}")

    def __call__(self, index: int) -> dict:
        return self.generate(index)[0]


class PrivacyError(RuntimeError):
    """A row could not be made private enough; one line naming the row, the check and what to do."""

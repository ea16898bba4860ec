"""Thumbnails of the gallery rows, decoded once: sprite sheets of ``TILE`` px tiles (one JPEG a sheet, far
smaller than a JPEG a row) and, from the same decoded pixels, each image's perceptual hash and that of its
mirror image (:func:`generator.privacy.measures.phash_pair`) for the near-duplicate pairs."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from generator.privacy.measures import hash_distances, phash_pair

TILE = 80             # px, the gallery shows them at this size
COLUMNS = 8           # tiles across a sheet
PER_SHEET = 64        # tiles a sheet: 8 x 8
JPEG_QUALITY = 70


@dataclass
class Thumbs:
    sheets: list[bytes]          # JPEG sprite sheets
    hashes: np.ndarray           # uint64 pHash of each row's image (0 where it has none)
    mirrors: np.ndarray          # uint64 pHash of its mirror image

    @staticmethod
    def slot(index: int) -> tuple[int, int, int]:
        """(sheet, x, y) of gallery row ``index``: where its tile sits in which sheet, in pixels."""
        k = index % PER_SHEET
        return index // PER_SHEET, (k % COLUMNS) * TILE, (k // COLUMNS) * TILE


def make_thumbs(images: Sequence[bytes | None], num_proc: int = 1) -> Thumbs:
    """Tiles and hashes of the encoded ``images`` (None or undecodable: a grey tile, hash 0), one sheet a task
    over ``num_proc`` processes (decoding is the cost); the bytes do not depend on ``num_proc``."""
    global _IMAGES
    count = len(images)
    starts = list(range(0, count, PER_SHEET))
    if num_proc > 1 and len(starts) > 1:
        import multiprocessing as mp
        from contextlib import ExitStack

        from generator.interrupts import ignore_sigint_in_worker, sigint_held

        _IMAGES = images  # fork: the workers inherit the bytes instead of receiving them pickled
        try:
            with ExitStack() as stack:
                with sigint_held():
                    pool = stack.enter_context(mp.get_context("fork").Pool(
                        min(num_proc, len(starts)), initializer=ignore_sigint_in_worker))
                parts = pool.map(_sheet_of, starts)
        finally:
            _IMAGES = None
    else:
        parts = [_sheet(images[k:k + PER_SHEET]) for k in starts]
    hashes = np.array([h for _, hs, _ in parts for h in hs], dtype=np.uint64)
    mirrors = np.array([m for _, _, ms in parts for m in ms], dtype=np.uint64)
    return Thumbs([sheet for sheet, _, _ in parts], hashes, mirrors)


_IMAGES: Sequence[bytes | None] | None = None


def _sheet_of(start: int):
    return _sheet(_IMAGES[start:start + PER_SHEET])


def _sheet(images: Sequence[bytes | None]) -> tuple[bytes, list[int], list[int]]:
    """One sprite sheet (JPEG) of up to PER_SHEET images, and their hashes."""
    sheet = Image.new("RGB", (COLUMNS * TILE, -(-len(images) // COLUMNS) * TILE), (235, 235, 235))
    hashes, mirrors = [], []
    for k, data in enumerate(images):
        tile = _decode(data)
        h = m = 0
        if tile is not None:
            h, m = phash_pair(tile)
            sheet.paste(_square(tile), ((k % COLUMNS) * TILE, (k // COLUMNS) * TILE))
        hashes.append(h)
        mirrors.append(m)
    return _jpeg(sheet), hashes, mirrors


def _decode(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (TILE, TILE))  # JPEG: decode at 1/2..1/8 scale, still at least TILE px
        return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _square(img: Image.Image) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return img.resize((TILE, TILE), Image.Resampling.BILINEAR, box=box)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def near_duplicate_pairs(hashes: np.ndarray, mirrors: np.ndarray, bits: int,
                         limit: int = 24) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The ``limit`` closest pairs (i, j, distance) within ``bits`` (flip-invariant, as the privacy report
    measures), closest first, and a bool mask of the rows that have any such pair. Rows without an
    image (hash 0) pair with nothing."""
    n = len(hashes)
    has = np.zeros(n, dtype=bool)
    pairs: list[tuple[int, int, int]] = []
    invalid = hashes == 0
    step = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        d = hash_distances(hashes, mirrors, rows)
        d[:, invalid] = 64
        d[invalid[rows]] = 64
        close = d <= bits
        has[rows] = close.any(1)
        i, j = np.nonzero(close)
        keep = rows[i] < j
        a, b, c = rows[i[keep]], j[keep], d[i[keep], j[keep]]
        best = np.lexsort((b, a, c))[:limit]  # closest first, then by row: the chunk's own top pairs
        pairs = sorted(pairs + [(int(a[k]), int(b[k]), int(c[k])) for k in best], key=lambda p: (p[2], p[0], p[1]))[:limit]
    return pairs, has

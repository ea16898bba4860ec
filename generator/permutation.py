"""A keyed bijection on ``range(n)`` that needs no ``n``-sized table.

Used for the train/test split and for unique product codes: any position can be mapped on its own,
so a worker, or a machine of a fleet, computes only the rows it writes.
"""
from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_ROUNDS = 4


def round_keys(seed: int, purpose: int) -> tuple[int, ...]:
    """Independent round keys for each (seed, purpose): the split and the product codes never correlate."""
    state = np.random.SeedSequence([seed, purpose]).generate_state(_ROUNDS, dtype=np.uint64)
    return tuple(int(k) for k in state)


def permute(x: int, n: int, keys: tuple[int, ...]) -> int:
    """The image of ``x`` under a keyed permutation of ``range(n)``.

    A balanced Feistel network on the smallest even number of bits covering ``n`` is a bijection on
    ``range(2**bits)``; re-applying it until the value falls below ``n`` ("cycle walking") restricts it
    to a bijection on ``range(n)``. The domain is at most 4x too large, so a few rounds on average.
    """
    if not 0 <= x < n:
        raise ValueError(f"x={x} is outside range({n})")
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    low = (1 << half) - 1
    while True:
        left, right = x >> half, x & low
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & low)
        x = (left << half) | right
        if x < n:
            return x


def _mix(z: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread round function."""
    z = (z * 0xBF58476D1CE4E5B9) & _MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)

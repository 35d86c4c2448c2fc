"""Pure-Python twin of _sampler_c: xorshift64 and a partial Fisher–Yates sample.

Same names, same numbers for the same seed, same samples, same errors and
messages as the compiled module. The compiled module swaps in a persistent
index buffer; this one keeps the touched slots of the virtual copy in a dict.
Both perform the same draws in the same order, so their outputs are identical.
"""

from __future__ import annotations

import os as _os
from typing import Any, Sequence, TypeVar

__all__ = ["XorShift64", "ZERO_SEED"]

_T = TypeVar("_T")

#: The state used when the seed is 0 (xorshift's all-zero state is a fixed
#: point). 2**64 divided by the golden ratio, as in splitmix64 / Fibonacci hashing.
ZERO_SEED = 0x9E3779B97F4A7C15

_MASK = (1 << 64) - 1
_LIMIT = 1 << 64


def _u64_arg(value: Any, name: str, low: int, what: str) -> int:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    if value < low or value >= _LIMIT:
        raise ValueError(f"{name} must be in [{low}, 2**64), got {value!r}")
    return int(value)


def _count_arg(k: Any) -> int:
    if type(k) is not int and (not isinstance(k, int) or isinstance(k, bool)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k!r}")
    return int(k)


class XorShift64:
    """xorshift64 (13, 7, 17) pseudo-random generator, with sampling.

    ``XorShift64(seed)``: ``seed`` is an int in [0, 2**64) used as the initial
    state; 0 (a fixed point of xorshift) is replaced by ``ZERO_SEED``; None
    seeds from ``os.urandom(8)``. Not for cryptography.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            s = int.from_bytes(_os.urandom(8), "little")
        else:
            s = _u64_arg(seed, "seed", 0, "an int or None")
        self._state = s if s != 0 else ZERO_SEED

    def next(self) -> int:
        """Advance the generator and return its new 64-bit state."""
        x = self._state
        x ^= (x << 13) & _MASK
        x ^= x >> 7
        x ^= (x << 17) & _MASK
        self._state = x
        return x

    def _below(self, n: int) -> int:
        # Lemire's multiply-and-reject: the high word of x * n, rejecting the
        # low words below 2**64 mod n.
        p = self.next() * n
        lo = p & _MASK
        if lo < n:
            t = (_LIMIT - n) % n
            while lo < t:
                p = self.next() * n
                lo = p & _MASK
        return p >> 64

    def below(self, n: int) -> int:
        """A uniform int in [0, n), for 1 <= n < 2**64, without modulo bias."""
        return self._below(_u64_arg(n, "n", 1, "an int"))

    def getstate(self) -> int:
        """The current state, an int in [1, 2**64); see setstate()."""
        return self._state

    def setstate(self, state: int) -> None:
        """Restore a state returned by getstate()."""
        self._state = _u64_arg(state, "state", 1, "an int")

    @property
    def state(self) -> int:
        """The current state (same as getstate())."""
        return self._state

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._state,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state:#x})"

    def sample(self, population: Sequence[_T], k: int) -> list[_T]:
        """``min(k, len(population))`` distinct elements of ``population``.

        A partial Fisher–Yates shuffle: for i in 0..k-1, j = i + below(n - i)
        and positions i and j of a virtual copy are swapped; the result is the
        first k positions, in order. ``population`` is any sequence (list,
        tuple, range, str, ...).
        """
        k = _count_arg(k)
        cls = type(population)
        if (
            cls is not list
            and cls is not tuple
            and (isinstance(population, dict) or not hasattr(cls, "__getitem__"))
        ):
            raise TypeError(f"population must be a sequence, not {cls.__name__}")
        n = len(population)
        m = k if k < n else n
        # Slot i is never read after step i, so only slot j is written back.
        moved: dict[int, int] = {}
        chosen = []
        below = self._below
        for i in range(m):
            j = i + below(n - i)
            chosen.append(moved.get(j, j))
            moved[j] = moved.get(i, i)
        return [population[x] for x in chosen]

"""How many peers a gossip round talks to: the fanout policy.

Three policies::

    Fanout.bounded(3)   at most 3 peers (memberlist's LAN default is 3)
    Fanout.SQRT         floor(sqrt(n)) peers, at least 1 when there is a peer
    Fanout.UNBOUNDED    every peer

``resolve(n)`` turns a policy into a count for ``n`` known peers. Every policy
resolves 0 peers to 0, and any n >= 1 to a count in [1, n].

A ``Fanout`` is immutable, hashable, and always true in a boolean context (so
``config.fanout or Fanout.default_for(n)`` only falls back on ``None``).
"""

from __future__ import annotations

from math import isqrt
from typing import Any, ClassVar, Optional

__all__ = ["Fanout"]

_BOUNDED = "bounded"
_SQRT = "sqrt"
_ALL = "all"

#: Clusters up to this many nodes gossip to everyone by default; above it, sqrt(n).
DEFAULT_UNBOUNDED_MAX = 32


class Fanout:
    """A fanout policy: ``Fanout.bounded(k)``, ``Fanout.SQRT`` or ``Fanout.UNBOUNDED``."""

    __slots__ = ("_kind", "_k")

    SQRT: ClassVar[Fanout]
    UNBOUNDED: ClassVar[Fanout]

    _kind: str
    _k: Optional[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "use Fanout.bounded(k), Fanout.SQRT, Fanout.UNBOUNDED or Fanout.parse(text)"
        )

    @classmethod
    def _make(cls, kind: str, k: Optional[int]) -> Fanout:
        self = object.__new__(cls)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_k", k)
        return self

    @classmethod
    def bounded(cls, k: int) -> Fanout:
        """At most ``k`` peers per round; ``k`` is an int >= 1."""
        if type(k) is not int and (not isinstance(k, int) or isinstance(k, bool)):
            raise TypeError(f"fanout must be an int, not {type(k).__name__}")
        if k < 1:
            raise ValueError(f"fanout must be >= 1, got {k}")
        return cls._make(_BOUNDED, int(k))

    @classmethod
    def default_for(cls, n: int) -> Fanout:
        """The default for a cluster of ``n`` nodes: UNBOUNDED up to 32, SQRT above."""
        return cls.SQRT if n > DEFAULT_UNBOUNDED_MAX else cls.UNBOUNDED

    @classmethod
    def parse(cls, text: str) -> Fanout:
        """Parse a command-line value: ``"3"``, ``"sqrt"``, ``"all"`` or ``"unbounded"``.

        The inverse of ``str()``. Case and surrounding blanks are ignored.
        """
        if not isinstance(text, str):
            raise TypeError(f"fanout text must be a str, not {type(text).__name__}")
        word = text.strip().lower()
        if word == _SQRT:
            return cls.SQRT
        if word in (_ALL, "unbounded"):
            return cls.UNBOUNDED
        if word.isascii() and word.isdigit():
            k = int(word)
            if k >= 1:
                return cls.bounded(k)
            raise ValueError(
                f"invalid fanout {text!r}: a peer count must be >= 1 (use 'all' for every peer)"
            )
        raise ValueError(
            f"invalid fanout {text!r}: expected a peer count such as '3', 'sqrt' or 'all'"
        )

    @property
    def kind(self) -> str:
        """``"bounded"``, ``"sqrt"`` or ``"all"``."""
        return self._kind

    @property
    def k(self) -> Optional[int]:
        """The bound of a bounded fanout, else None."""
        return self._k

    def resolve(self, n: int) -> int:
        """How many of ``n`` peers to contact: min(k, n), floor(sqrt(n)) or n.

        0 when ``n`` is 0; otherwise in [1, n] (floor(sqrt(n)) >= 1 for n >= 1).
        """
        if type(n) is not int and (not isinstance(n, int) or isinstance(n, bool)):
            raise TypeError(f"peer count must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"peer count must be >= 0, got {n}")
        kind = self._kind
        if kind is _BOUNDED:
            k = self._k
            return k if k < n else n  # type: ignore[operator,return-value]
        if kind is _SQRT:
            return isqrt(n)
        return n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fanout):
            return NotImplemented
        return self._kind == other._kind and self._k == other._k

    def __hash__(self) -> int:
        return hash((Fanout, self._kind, self._k))

    def __repr__(self) -> str:
        if self._kind is _BOUNDED:
            return f"Fanout.bounded({self._k})"
        return "Fanout.SQRT" if self._kind is _SQRT else "Fanout.UNBOUNDED"

    def __str__(self) -> str:
        return str(self._k) if self._kind is _BOUNDED else self._kind

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Fanout is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Fanout is immutable (cannot delete {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Fanout.parse, (str(self),))

    def __copy__(self) -> Fanout:
        return self

    def __deepcopy__(self, memo: dict) -> Fanout:
        return self


Fanout.SQRT = Fanout._make(_SQRT, None)
Fanout.UNBOUNDED = Fanout._make(_ALL, None)

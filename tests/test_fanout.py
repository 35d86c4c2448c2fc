"""Fanout policies: resolve, defaults, parsing, value semantics."""

from __future__ import annotations

import copy
import pickle

import pytest

from fastgossip.fanout import Fanout

RESOLVE = [
    # n, bounded(1), bounded(3), SQRT, UNBOUNDED
    (0, 0, 0, 0, 0),
    (1, 1, 1, 1, 1),
    (2, 1, 2, 1, 2),
    (3, 1, 3, 1, 3),
    (4, 1, 3, 2, 4),
    (8, 1, 3, 2, 8),
    (9, 1, 3, 3, 9),
    (32, 1, 3, 5, 32),
    (33, 1, 3, 5, 33),
    (100, 1, 3, 10, 100),
    (1000, 1, 3, 31, 1000),
    (10**12, 1, 3, 10**6, 10**12),
]


@pytest.mark.parametrize("n, one, three, sqrt, unbounded", RESOLVE)
def test_resolve_table(n: int, one: int, three: int, sqrt: int, unbounded: int) -> None:
    assert Fanout.bounded(1).resolve(n) == one
    assert Fanout.bounded(3).resolve(n) == three
    assert Fanout.SQRT.resolve(n) == sqrt
    assert Fanout.UNBOUNDED.resolve(n) == unbounded


@pytest.mark.parametrize(
    "policy", [Fanout.bounded(1), Fanout.bounded(7), Fanout.SQRT, Fanout.UNBOUNDED]
)
def test_resolve_within_bounds(policy: Fanout) -> None:
    for n in range(0, 300):
        count = policy.resolve(n)
        assert (count == 0) if n == 0 else (1 <= count <= n)


def test_resolve_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="peer count must be >= 0, got -1"):
        Fanout.SQRT.resolve(-1)
    with pytest.raises(TypeError, match="peer count must be an int, not float"):
        Fanout.bounded(2).resolve(3.0)


def test_default_for_boundary() -> None:
    assert Fanout.default_for(0) is Fanout.UNBOUNDED
    assert Fanout.default_for(1) is Fanout.UNBOUNDED
    assert Fanout.default_for(32) is Fanout.UNBOUNDED
    assert Fanout.default_for(33) is Fanout.SQRT
    assert Fanout.default_for(10_000) is Fanout.SQRT


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", Fanout.bounded(3)),
        ("1", Fanout.bounded(1)),
        (" 12 ", Fanout.bounded(12)),
        ("007", Fanout.bounded(7)),
        ("sqrt", Fanout.SQRT),
        ("SQRT", Fanout.SQRT),
        ("all", Fanout.UNBOUNDED),
        ("unbounded", Fanout.UNBOUNDED),
        ("All\n", Fanout.UNBOUNDED),
    ],
)
def test_parse_good(text: str, expected: Fanout) -> None:
    assert Fanout.parse(text) == expected


def test_parse_returns_the_constants() -> None:
    assert Fanout.parse("sqrt") is Fanout.SQRT
    assert Fanout.parse("all") is Fanout.UNBOUNDED


@pytest.mark.parametrize(
    "text", ["", " ", "0", "-1", "+3", "3.0", "1e3", "three", "sqr", "٣", "3 4", "none"]
)
def test_parse_bad(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Fanout.parse(text)
    message = str(info.value)
    assert repr(text) in message
    if text == "0":
        assert ">= 1" in message and "'all'" in message
    else:
        assert "'sqrt'" in message and "'all'" in message


def test_parse_requires_text() -> None:
    with pytest.raises(TypeError, match="must be a str, not int"):
        Fanout.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "k, exc",
    [
        (0, ValueError),
        (-3, ValueError),
        (2.0, TypeError),
        ("3", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bounded_rejects(k, exc) -> None:
    with pytest.raises(exc):
        Fanout.bounded(k)


def test_equality_and_hash() -> None:
    assert Fanout.bounded(3) == Fanout.bounded(3)
    assert hash(Fanout.bounded(3)) == hash(Fanout.bounded(3))
    assert Fanout.bounded(3) != Fanout.bounded(4)
    assert Fanout.bounded(3) != Fanout.SQRT
    assert Fanout.SQRT != Fanout.UNBOUNDED
    assert Fanout.SQRT == Fanout.SQRT
    assert Fanout.bounded(3) != 3
    assert Fanout.SQRT != "sqrt"
    assert (
        len(
            {
                Fanout.bounded(3),
                Fanout.bounded(3),
                Fanout.SQRT,
                Fanout.UNBOUNDED,
                Fanout.parse("sqrt"),
            }
        )
        == 3
    )


def test_repr_and_str() -> None:
    assert repr(Fanout.bounded(3)) == "Fanout.bounded(3)"
    assert repr(Fanout.SQRT) == "Fanout.SQRT"
    assert repr(Fanout.UNBOUNDED) == "Fanout.UNBOUNDED"
    assert str(Fanout.bounded(3)) == "3"
    assert str(Fanout.SQRT) == "sqrt"
    assert str(Fanout.UNBOUNDED) == "all"
    for policy in (Fanout.bounded(5), Fanout.SQRT, Fanout.UNBOUNDED):
        assert Fanout.parse(str(policy)) == policy
        assert eval(repr(policy), {"Fanout": Fanout}) == policy


def test_properties() -> None:
    assert (Fanout.bounded(4).kind, Fanout.bounded(4).k) == ("bounded", 4)
    assert (Fanout.SQRT.kind, Fanout.SQRT.k) == ("sqrt", None)
    assert (Fanout.UNBOUNDED.kind, Fanout.UNBOUNDED.k) == ("all", None)


def test_immutable_and_truthy() -> None:
    policy = Fanout.bounded(3)
    with pytest.raises(AttributeError):
        policy._k = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        policy.k = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del policy._kind
    with pytest.raises(AttributeError):
        policy.extra = 1  # type: ignore[attr-defined]
    assert policy.resolve(10) == 3
    # `config.fanout or Fanout.default_for(n)` must only fall back on None
    assert all([Fanout.bounded(1), Fanout.SQRT, Fanout.UNBOUNDED])


def test_no_direct_construction() -> None:
    with pytest.raises(TypeError, match="Fanout.bounded"):
        Fanout()


def test_pickle_and_copy() -> None:
    for policy in (Fanout.bounded(9), Fanout.SQRT, Fanout.UNBOUNDED):
        assert pickle.loads(pickle.dumps(policy)) == policy
        assert copy.copy(policy) is policy
        assert copy.deepcopy(policy) is policy
    assert pickle.loads(pickle.dumps(Fanout.SQRT)) is Fanout.SQRT

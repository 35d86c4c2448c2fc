"""XorShift64: the generator, below() and sample(), in both implementations.

The reference functions below are written from the recurrence and the
algorithms' definitions, independently of the modules under test.
"""

from __future__ import annotations

import copy
import pickle
from collections import Counter
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgossip._impl import load

C = load("sampler", "cython")
PY = load("sampler", "python")

M64 = (1 << 64) - 1


def ref_next(x: int) -> int:
    x ^= (x << 13) & M64
    x ^= x >> 7
    x ^= (x << 17) & M64
    return x


def ref_stream(seed: int, count: int) -> list[int]:
    out = []
    for _ in range(count):
        seed = ref_next(seed)
        out.append(seed)
    return out


class RefRng:
    """xorshift64 + Lemire's multiply-and-reject + a copying partial Fisher–Yates."""

    def __init__(self, state: int) -> None:
        self.state = state

    def below(self, n: int) -> int:
        while True:
            self.state = ref_next(self.state)
            product = self.state * n
            if product % (1 << 64) >= (1 << 64) % n:
                return product >> 64

    def sample(self, population, k: int) -> list:
        pool = list(population)
        m = min(k, len(pool))
        for i in range(m):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:m]


# --------------------------------------------------------------------- generator


def test_first_outputs_seed_1(sampler: ModuleType) -> None:
    # By hand: 1 ^ (1 << 13) = 0x2001; 0x2001 ^ (0x2001 >> 7) = 0x2001 ^ 0x40 = 0x2041;
    # 0x2041 ^ (0x2041 << 17) = 0x2041 ^ 0x40820000 = 0x40822041.
    g = sampler.XorShift64(seed=1)
    assert g.next() == 0x40822041
    g = sampler.XorShift64(1)
    assert [g.next() for _ in range(20)] == ref_stream(1, 20)


@pytest.mark.parametrize("seed", [0xDEADBEEF, 2**63, M64, 123456789])
def test_outputs_match_recurrence(sampler: ModuleType, seed: int) -> None:
    g = sampler.XorShift64(seed)
    assert g.getstate() == seed
    assert [g.next() for _ in range(50)] == ref_stream(seed, 50)


def test_seed_zero_is_replaced(sampler: ModuleType) -> None:
    assert sampler.ZERO_SEED == 0x9E3779B97F4A7C15
    g = sampler.XorShift64(0)
    assert g.state == sampler.ZERO_SEED
    assert [g.next() for _ in range(5)] == ref_stream(sampler.ZERO_SEED, 5)


def test_seed_none_uses_os_entropy(sampler: ModuleType) -> None:
    states = {sampler.XorShift64().state for _ in range(8)}
    assert len(states) == 8  # a collision has probability ~2**-59
    assert all(0 < s <= M64 for s in states)
    assert sampler.XorShift64(None).next() != 0


BAD_SEEDS = [
    ("1", TypeError, "seed must be an int or None, not str"),
    (1.0, TypeError, "seed must be an int or None, not float"),
    (True, TypeError, "seed must be an int or None, not bool"),
    (-1, ValueError, "seed must be in [0, 2**64), got -1"),
    (2**64, ValueError, "seed must be in [0, 2**64), got 18446744073709551616"),
]


@pytest.mark.parametrize("seed, exc, message", BAD_SEEDS)
def test_seed_validation(sampler: ModuleType, seed, exc, message) -> None:
    with pytest.raises(exc) as info:
        sampler.XorShift64(seed)
    assert str(info.value) == message


def test_state_roundtrip(sampler: ModuleType) -> None:
    g = sampler.XorShift64(42)
    for _ in range(3):
        g.next()
    saved = g.getstate()
    assert saved == g.state
    first = [g.next() for _ in range(10)]
    g.setstate(saved)
    assert [g.next() for _ in range(10)] == first
    with pytest.raises(ValueError, match=r"state must be in \[1, 2\*\*64\), got 0"):
        g.setstate(0)
    with pytest.raises(TypeError, match="state must be an int, not str"):
        g.setstate("1")
    with pytest.raises(AttributeError):
        g.state = 5


def test_pickle_copy_repr(sampler: ModuleType) -> None:
    g = sampler.XorShift64(7)
    g.next()
    for twin in (pickle.loads(pickle.dumps(g)), copy.copy(g), copy.deepcopy(g)):
        assert type(twin) is type(g)
        assert twin.state == g.state
    assert repr(sampler.XorShift64(255)) == "XorShift64(0xff)"


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, M64), n=st.integers(1, M64), k=st.integers(0, 40))
def test_c_and_python_agree(seed: int, n: int, k: int) -> None:
    c, p = C.XorShift64(seed), PY.XorShift64(seed)
    assert [c.next() for _ in range(5)] == [p.next() for _ in range(5)]
    assert [c.below(n) for _ in range(5)] == [p.below(n) for _ in range(5)]
    small = n % 300
    assert c.sample(range(small), k) == p.sample(range(small), k)
    assert c.sample(list(range(small)), k) == p.sample(tuple(range(small)), k)
    assert c.state == p.state


# ------------------------------------------------------------------------- below


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 2**32 + 1, 2**63 + 1, M64])
def test_below_matches_reference(sampler: ModuleType, n: int) -> None:
    g, ref = sampler.XorShift64(99), RefRng(99)
    assert [g.below(n) for _ in range(200)] == [ref.below(n) for _ in range(200)]
    assert g.state == ref.state


def test_below_rejection_path(sampler: ModuleType) -> None:
    # n = 2**63 + 1 rejects almost half of all draws: the state must advance
    # once per attempt, exactly as the reference does.
    n = 2**63 + 1
    g, ref = sampler.XorShift64(5), RefRng(5)
    draws = [g.below(n) for _ in range(500)]
    assert draws == [ref.below(n) for _ in range(500)]
    assert g.state == ref.state


def test_below_covers_all_residues(sampler: ModuleType) -> None:
    g = sampler.XorShift64(2024)
    for n in range(1, 17):
        seen = {g.below(n) for _ in range(60 * n)}
        assert seen == set(range(n))


def test_below_is_balanced(sampler: ModuleType) -> None:
    g = sampler.XorShift64(31337)
    counts = Counter(g.below(3) for _ in range(30_000))
    # expected 10_000 each, standard deviation ~82: 600 is a generous bound
    assert set(counts) == {0, 1, 2}
    assert all(abs(c - 10_000) < 600 for c in counts.values()), counts


BAD_N = [
    (0, ValueError, "n must be in [1, 2**64), got 0"),
    (-5, ValueError, "n must be in [1, 2**64), got -5"),
    (2**64, ValueError, "n must be in [1, 2**64), got 18446744073709551616"),
    (3.0, TypeError, "n must be an int, not float"),
    (None, TypeError, "n must be an int, not NoneType"),
    (False, TypeError, "n must be an int, not bool"),
]


@pytest.mark.parametrize("n, exc, message", BAD_N)
def test_below_validation(sampler: ModuleType, n, exc, message) -> None:
    g = sampler.XorShift64(1)
    with pytest.raises(exc) as info:
        g.below(n)
    assert str(info.value) == message
    assert g.state == 1  # a refused call draws nothing


# ------------------------------------------------------------------------ sample


def test_sample_distinct_members(sampler: ModuleType) -> None:
    g = sampler.XorShift64(11)
    population = [f"peer-{i}" for i in range(50)]
    for k in (1, 3, 7, 31, 50):
        got = g.sample(population, k)
        assert len(got) == k
        assert len(set(got)) == k
        assert set(got) <= set(population)


def test_sample_edge_sizes(sampler: ModuleType) -> None:
    g = sampler.XorShift64(3)
    assert g.sample([1, 2, 3], 0) == []
    assert g.sample([], 0) == []
    assert g.sample([], 5) == []
    assert g.sample((), 5) == []
    assert g.sample(range(0), 3) == []
    assert g.sample(["only"], 3) == ["only"]
    everyone = list(range(20))
    perm = g.sample(everyone, 1000)
    assert sorted(perm) == everyone
    assert sorted(g.sample(everyone, 10**30)) == everyone  # huge k clamps
    assert sorted(g.sample(tuple(everyone), 20)) == everyone


def test_sample_draws_nothing_when_empty(sampler: ModuleType) -> None:
    g = sampler.XorShift64(8)
    g.sample([], 3)
    g.sample([1, 2], 0)
    assert g.state == 8


@pytest.mark.parametrize("n, k", [(1000, 3), (1000, 31), (5, 5), (10, 20), (1, 1)])
def test_sample_matches_reference(sampler: ModuleType, n: int, k: int) -> None:
    g, ref = sampler.XorShift64(777), RefRng(777)
    population = list(range(n))
    for _ in range(20):
        assert g.sample(population, k) == ref.sample(population, k)
    assert g.state == ref.state


def test_sample_any_sequence(sampler: ModuleType) -> None:
    n, k = 40, 9
    picks = sampler.XorShift64(5).sample(range(n), k)
    words = [f"w{i}" for i in range(n)]
    text = "".join(chr(ord("A") + i) for i in range(n))
    assert sampler.XorShift64(5).sample(words, k) == [words[i] for i in picks]
    assert sampler.XorShift64(5).sample(tuple(words), k) == [words[i] for i in picks]
    assert sampler.XorShift64(5).sample(text, k) == [text[i] for i in picks]

    class Peers:  # a user sequence: len() and integer indexing only
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> str:
            return words[i]

    class PeerList(list):
        pass

    assert sampler.XorShift64(5).sample(Peers(), k) == [words[i] for i in picks]
    assert sampler.XorShift64(5).sample(PeerList(words), k) == [words[i] for i in picks]


def test_sample_keeps_references(sampler: ModuleType) -> None:
    items = [object() for _ in range(10)]
    got = sampler.XorShift64(1).sample(items, 4)
    assert all(any(x is y for y in items) for x in got)
    del items
    assert len({id(x) for x in got}) == 4


BAD_SAMPLES = [
    ([1, 2], -1, ValueError, "k must be >= 0, got -1"),
    ([1, 2], -(10**30), ValueError, f"k must be >= 0, got {-(10**30)}"),
    ([1, 2], 1.5, TypeError, "k must be an int, not float"),
    ([1, 2], True, TypeError, "k must be an int, not bool"),
    ({1, 2}, 1, TypeError, "population must be a sequence, not set"),
    ({1: 2}, 1, TypeError, "population must be a sequence, not dict"),
    (iter([1, 2]), 1, TypeError, "population must be a sequence, not list_iterator"),
]


@pytest.mark.parametrize("population, k, exc, message", BAD_SAMPLES)
def test_sample_validation(sampler: ModuleType, population, k, exc, message) -> None:
    g = sampler.XorShift64(1)
    with pytest.raises(exc) as info:
        g.sample(population, k)
    assert str(info.value) == message
    assert g.state == 1


def test_buffer_restored_between_calls(sampler: ModuleType) -> None:
    """Varying n and k on one generator (the compiled one reuses a permutation
    buffer, growing it) gives what the reference gives, call after call."""
    g, ref = sampler.XorShift64(2**40 + 3), RefRng(2**40 + 3)
    shapes = [
        (10, 3),
        (1000, 31),
        (7, 7),
        (1000, 1000),
        (3, 1),
        (5000, 64),
        (65, 65),
        (2, 5),
        (1000, 3),
        (4096, 4000),
        (10, 9),
    ]
    for n, k in shapes * 3:
        population = list(range(n))
        assert g.sample(population, k) == ref.sample(population, k), (n, k)
        assert sorted(g.sample(population, n)) == population  # full permutation
        ref.sample(population, n)


@pytest.mark.parametrize(
    "n, k",
    [
        (65_536, 40),  # largest population on the persistent buffer
        (65_537, 31),  # beyond it, few draws: hash of touched slots
        (70_000, 9_000),  # beyond it, many draws: temporary buffer
        (10**12, 5),  # never materialised
        (2**62, 100),
    ],
)
def test_large_populations(n: int, k: int) -> None:
    assert C._DENSE_MAX == 65_536
    seed = 0x5EED
    c, p = C.XorShift64(seed), PY.XorShift64(seed)
    got = c.sample(range(n), k)
    assert got == p.sample(range(n), k)
    assert len(set(got)) == k and all(0 <= x < n for x in got)
    assert c.state == p.state
    if n <= 70_000:
        assert C.XorShift64(seed).sample(list(range(n)), k) == got
        assert C.XorShift64(seed).sample(tuple(range(n)), k) == got


def test_reentrant_getitem() -> None:
    """A sequence whose __getitem__ samples from the same generator: the
    compiled sampler must not be mid-swap in its buffer when it calls out."""

    class Nested:
        def __init__(self, g) -> None:
            self.g = g

        def __len__(self) -> int:
            return 100

        def __getitem__(self, i: int):
            return (i, tuple(self.g.sample(list(range(200)), 3)))

    results = []
    for module in (C, PY):
        g = module.XorShift64(4)
        results.append((g.sample(Nested(g), 5), g.sample(list(range(200)), 50), g.state))
    assert results[0] == results[1]
    outer, after, _ = results[0]
    assert len({i for i, _ in outer}) == 5
    assert all(len(set(inner)) == 3 for _, inner in outer)
    assert len(set(after)) == 50


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, M64),
    calls=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 320)), min_size=1, max_size=12),
)
def test_c_and_python_agree_over_call_sequences(seed: int, calls: list) -> None:
    c, p = C.XorShift64(seed), PY.XorShift64(seed)
    for n, k in calls:
        population = list(range(n))
        assert c.sample(population, k) == p.sample(population, k)
    assert c.state == p.state


def test_selector_exports() -> None:
    from fastgossip import _sampler

    assert _sampler.XorShift64(1).next() == 0x40822041
    assert _sampler.ZERO_SEED == 0x9E3779B97F4A7C15


# ------------------------------------------------------------- compiled helpers


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, M64), b=st.integers(0, M64))
def test_mul128(a: int, b: int) -> None:
    expected = divmod(a * b, 1 << 64)
    assert C._mul128(a, b) == expected
    assert C._mul128_portable(a, b) == expected


@pytest.mark.parametrize("a, b", [(0, 0), (M64, M64), (M64, 1), (2**32, 2**32), (2**32 - 1, M64)])
def test_mul128_edges(a: int, b: int) -> None:
    assert C._mul128_portable(a, b) == divmod(a * b, 1 << 64)

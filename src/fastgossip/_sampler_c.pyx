# cython: language_level=3
"""Compiled sampler: xorshift64 and a partial Fisher–Yates sample of k of n.

Pure-Python twin: _sampler_py.py. Both produce exactly the same numbers and the
same samples for the same seed, and raise the same errors with the same messages.

``sample`` never copies the population. The generator owns an index permutation
buffer that is the identity between calls: a sample does its k swaps in it, reads
the k chosen items, and puts the touched slots back, all in O(k). Populations
larger than ``_DENSE_MAX`` use a temporary buffer or a small hash of the touched
slots instead, so ``sample(range(10**12), 3)`` stays cheap.
"""

from cpython.bool cimport PyBool_Check
from cpython.list cimport PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

import os

cdef extern from "Python.h":
    # Declared noexcept on purpose: the caller checks PyErr_Occurred() itself.
    Py_ssize_t PyLong_AsSsize_t(object o) noexcept
    PyObject* PyErr_Occurred() noexcept
    void PyErr_Clear() noexcept
    bint PyList_CheckExact(object o) noexcept
    bint PyTuple_CheckExact(object o) noexcept
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from *:
    """
    /* 64x64 -> 128-bit multiply: high word returned, low word through *lo. */
    static inline uint64_t fg_mul128_portable(uint64_t a, uint64_t b, uint64_t *lo) {
        uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
        uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
        uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
        uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
        *lo = (mid << 32) | (p0 & 0xFFFFFFFFu);
        return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
    }
    #if defined(__SIZEOF_INT128__)
    static inline uint64_t fg_mul128(uint64_t a, uint64_t b, uint64_t *lo) {
        unsigned __int128 p = (unsigned __int128)a * b;
        *lo = (uint64_t)p;
        return (uint64_t)(p >> 64);
    }
    #else
    #define fg_mul128 fg_mul128_portable
    #endif

    /* result[i] = items[idx[i]] (new references) for i < m; result is a fresh
       list of length m, items the item array of an exact list or tuple. */
    static inline void fg_fill(PyObject *result, PyObject *const *items,
                               const Py_ssize_t *idx, Py_ssize_t m) {
        Py_ssize_t i;
        for (i = 0; i < m; i++) {
            PyObject *o = items[idx[i]];
            Py_INCREF(o);
            PyList_SET_ITEM(result, i, o);
        }
    }
    """
    uint64_t fg_mul128(uint64_t a, uint64_t b, uint64_t* lo) noexcept nogil
    uint64_t fg_mul128_portable(uint64_t a, uint64_t b, uint64_t* lo) noexcept nogil
    void fg_fill(object result, PyObject** items, Py_ssize_t* idx, Py_ssize_t m) noexcept
    PyObject** PySequence_Fast_ITEMS(object o) noexcept

__all__ = ["XorShift64", "ZERO_SEED"]

#: The state used when the seed is 0 (xorshift's all-zero state is a fixed
#: point). 2**64 divided by the golden ratio, as in splitmix64 / Fibonacci hashing.
ZERO_SEED = 0x9E3779B97F4A7C15

cdef uint64_t _ZERO_SEED = 0x9E3779B97F4A7C15ULL
cdef object _LIMIT = 1 << 64

cdef enum:
    # Populations up to this size use the generator's persistent permutation
    # buffer (at most DENSE_MAX * sizeof(Py_ssize_t) bytes, kept for its life).
    DENSE_MAX = 65536
    # Chosen indices live on the C stack up to this many, else on the heap.
    STACK_OUT = 64

_DENSE_MAX = DENSE_MAX


cdef inline uint64_t _step(uint64_t* s) noexcept nogil:
    cdef uint64_t x = s[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    s[0] = x
    return x


cdef inline uint64_t _below(uint64_t* s, uint64_t n) noexcept nogil:
    """Uniform in [0, n), n >= 1: Lemire's multiply-and-reject, no modulo bias."""
    cdef uint64_t lo
    cdef uint64_t hi = fg_mul128(_step(s), n, &lo)
    cdef uint64_t t
    if lo < n:
        t = (<uint64_t>0 - n) % n          # 2**64 mod n
        while lo < t:
            hi = fg_mul128(_step(s), n, &lo)
    return hi


cdef inline void _fy_dense(uint64_t* s, Py_ssize_t* perm, Py_ssize_t n,
                           Py_ssize_t m) noexcept nogil:
    """k swaps of a partial Fisher–Yates shuffle; the choice is perm[0..m)."""
    cdef Py_ssize_t i, j, t
    for i in range(m):
        j = i + <Py_ssize_t>_below(s, <uint64_t>(n - i))
        t = perm[i]
        perm[i] = perm[j]
        perm[j] = t


cdef inline void _restore_dense(Py_ssize_t* perm, Py_ssize_t m) noexcept nogil:
    """Undo _fy_dense on an identity buffer in O(m).

    A slot q >= m is only ever touched as a swap target; the first such swap
    moves its value q into perm[0..m), where it stays. So the dirty slots beyond
    m are exactly the values >= m found in perm[0..m).
    """
    cdef Py_ssize_t i, r
    for i in range(m):
        r = perm[i]
        if r >= m:
            perm[r] = r
        perm[i] = i


cdef inline Py_ssize_t _hash_slot(Py_ssize_t* keys, Py_ssize_t mask,
                                  Py_ssize_t key) noexcept nogil:
    cdef Py_ssize_t h = <Py_ssize_t>((<uint64_t>key * 0x9E3779B97F4A7C15ULL) >> 20) & mask
    while keys[h] != -1 and keys[h] != key:
        h = (h + 1) & mask
    return h


cdef int _fy_sparse(uint64_t* s, Py_ssize_t n, Py_ssize_t m,
                    Py_ssize_t* out) except -1:
    """The same selection as _fy_dense, keeping only the touched slots in a hash.

    Slot i is never read after step i, so only slot j is written back.
    """
    cdef Py_ssize_t cap = 16, mask, i, j, hi, hj, vi
    cdef Py_ssize_t* keys
    cdef Py_ssize_t* vals
    while cap < 2 * m:
        cap <<= 1
    mask = cap - 1
    keys = <Py_ssize_t*>PyMem_Malloc(2 * cap * sizeof(Py_ssize_t))
    if keys == NULL:
        raise MemoryError()
    vals = keys + cap
    for i in range(cap):
        keys[i] = -1
    for i in range(m):
        j = i + <Py_ssize_t>_below(s, <uint64_t>(n - i))
        hi = _hash_slot(keys, mask, i)
        vi = vals[hi] if keys[hi] == i else i
        hj = _hash_slot(keys, mask, j)
        out[i] = vals[hj] if keys[hj] == j else j
        keys[hj] = j
        vals[hj] = vi
    PyMem_Free(keys)
    return 0


cdef Py_ssize_t _count_arg(object k) except -1:
    """Validate ``k`` (an int >= 0); huge values clamp to PY_SSIZE_T_MAX."""
    cdef Py_ssize_t v
    if not PyLong_CheckExact(k):
        if not PyLong_Check(k) or PyBool_Check(k):
            raise TypeError(f"k must be an int, not {type(k).__name__}")
    v = PyLong_AsSsize_t(k)
    if v == -1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        if k > 0:
            return PY_SSIZE_T_MAX
    if v < 0:
        raise ValueError(f"k must be >= 0, got {k!r}")
    return v


cdef uint64_t _u64_arg(object value, str name, object low, str what) except? 0:
    if not PyLong_CheckExact(value):
        if not PyLong_Check(value) or PyBool_Check(value):
            raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    if value < low or value >= _LIMIT:
        raise ValueError(f"{name} must be in [{low}, 2**64), got {value!r}")
    return <uint64_t>value


cdef class XorShift64:
    """xorshift64 (13, 7, 17) pseudo-random generator, with sampling.

    ``XorShift64(seed)``: ``seed`` is an int in [0, 2**64) used as the initial
    state; 0 (a fixed point of xorshift) is replaced by ``ZERO_SEED``; None
    seeds from ``os.urandom(8)``. Not for cryptography.
    """

    cdef uint64_t _state
    cdef Py_ssize_t* _perm      # identity permutation between calls
    cdef Py_ssize_t _cap

    def __cinit__(self, *args, **kwargs):
        self._perm = NULL
        self._cap = 0

    def __init__(self, seed=None):
        cdef uint64_t s
        if seed is None:
            s = <uint64_t>int.from_bytes(os.urandom(8), "little")
        else:
            s = _u64_arg(seed, "seed", 0, "an int or None")
        self._state = s if s != 0 else _ZERO_SEED

    def __dealloc__(self):
        PyMem_Free(self._perm)

    def next(self):
        """Advance the generator and return its new 64-bit state."""
        return _step(&self._state)

    def below(self, n):
        """A uniform int in [0, n), for 1 <= n < 2**64, without modulo bias."""
        cdef uint64_t nn = _u64_arg(n, "n", 1, "an int")
        return _below(&self._state, nn)

    def getstate(self):
        """The current state, an int in [1, 2**64); see setstate()."""
        return self._state

    def setstate(self, state):
        """Restore a state returned by getstate()."""
        self._state = _u64_arg(state, "state", 1, "an int")

    @property
    def state(self):
        """The current state (same as getstate())."""
        return self._state

    def __reduce__(self):
        return (type(self), (self._state,))

    def __repr__(self):
        return f"{type(self).__name__}({self._state:#x})"

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self._cap if self._cap else 64, i
        cdef Py_ssize_t* p
        while cap < n:
            cap <<= 1
        p = <Py_ssize_t*>PyMem_Realloc(self._perm, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        for i in range(self._cap, cap):
            p[i] = i
        self._perm = p
        self._cap = cap
        return 0

    cdef int _select(self, Py_ssize_t n, Py_ssize_t m, Py_ssize_t* out) except -1:
        """out[0..m) = the chosen indices into a population of n. Runs no Python code."""
        cdef Py_ssize_t* tmp
        cdef Py_ssize_t i
        if n <= DENSE_MAX:
            if n > self._cap:
                self._grow(n)
            _fy_dense(&self._state, self._perm, n, m)
            memcpy(out, self._perm, m * sizeof(Py_ssize_t))
            _restore_dense(self._perm, m)
        elif m >= n // 8:
            tmp = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
            if tmp == NULL:
                raise MemoryError()
            for i in range(n):
                tmp[i] = i
            _fy_dense(&self._state, tmp, n, m)
            memcpy(out, tmp, m * sizeof(Py_ssize_t))
            PyMem_Free(tmp)
        else:
            _fy_sparse(&self._state, n, m, out)
        return 0

    def sample(self, population, k):
        """``min(k, len(population))`` distinct elements of ``population``.

        A partial Fisher–Yates shuffle: for i in 0..k-1, j = i + below(n - i)
        and positions i and j of a virtual copy are swapped; the result is the
        first k positions, in order. ``population`` is any sequence (list,
        tuple, range, str, ...); it is never copied.
        """
        cdef Py_ssize_t kk = _count_arg(k)
        cdef Py_ssize_t n, m
        cdef Py_ssize_t* perm
        cdef list result
        cdef bint is_list = PyList_CheckExact(population)
        if is_list or PyTuple_CheckExact(population):
            # Allocating the result may run a GC pass and so arbitrary code that
            # could resize the list: size it first, then check nothing moved.
            while True:
                n = PyList_GET_SIZE(population) if is_list else PyTuple_GET_SIZE(population)
                m = kk if kk < n else n
                result = PyList_New(m)
                if not is_list or PyList_GET_SIZE(population) == n:
                    break
            if m == 0:
                return result
            if n <= DENSE_MAX:
                # Fast path: swap in the persistent buffer, read, put it back.
                if n > self._cap:
                    self._grow(n)
                perm = self._perm
                _fy_dense(&self._state, perm, n, m)
                fg_fill(result, PySequence_Fast_ITEMS(population), perm, m)
                _restore_dense(perm, m)
                return result
            return self._sample_indexed(population, n, m, result, True)
        if isinstance(population, dict) or not hasattr(type(population), "__getitem__"):
            raise TypeError(f"population must be a sequence, not {type(population).__name__}")
        n = len(population)
        m = kk if kk < n else n
        return self._sample_indexed(population, n, m, PyList_New(m), False)

    cdef list _sample_indexed(self, object population, Py_ssize_t n, Py_ssize_t m,
                              list result, bint exact):
        """Choose indices first (no Python code runs meanwhile), then read them."""
        cdef Py_ssize_t stack_out[STACK_OUT]
        cdef Py_ssize_t* out = stack_out
        cdef Py_ssize_t i
        cdef object item
        if m == 0:
            return result
        if m > STACK_OUT:
            out = <Py_ssize_t*>PyMem_Malloc(m * sizeof(Py_ssize_t))
            if out == NULL:
                raise MemoryError()
        try:
            self._select(n, m, out)
            if exact:
                fg_fill(result, PySequence_Fast_ITEMS(population), out, m)
            else:
                for i in range(m):
                    item = population[out[i]]
                    Py_INCREF(item)
                    PyList_SET_ITEM(result, i, item)
        finally:
            if out != stack_out:
                PyMem_Free(out)
        return result


def _mul128_portable(a, b):
    """(high, low) words of a * b through the portable multiply (for tests)."""
    cdef uint64_t lo
    cdef uint64_t hi = fg_mul128_portable(a, b, &lo)
    return hi, lo


def _mul128(a, b):
    """(high, low) words of a * b through the multiply in use (for tests)."""
    cdef uint64_t lo
    cdef uint64_t hi = fg_mul128(a, b, &lo)
    return hi, lo

# cython: language_level=3
"""Compiled LWW table. Pure-Python twin (and reference behaviour): _table_py.py.

The table lives in C memory:

* a dense array of fixed-size records (``Rec``), one per key, in first-insertion
  order; a key's UTF-8 bytes live in an append-only arena (keys never move and
  are never deleted);
* an open-addressing index (linear probing, power-of-two capacity, load <= 0.7)
  of 64-bit buckets: high 32 bits are the key hash's tag, low 32 bits slot + 1;
* an interned origin table (UTF-8 bytes, the Python str, the watermark) with
  its own small index, and per origin a log of ``(stamp, slot)`` records kept
  sorted by (stamp, key) lazily, so that ``delta`` costs about what changed.

A record of an origin's log is *live* when its slot still holds that origin
and stamp; stale records are skipped and a log is compacted once its stale
records outnumber its live ones. Python objects (Entry, str, bytes) are made
only when Python asks for them: ``merge_frame`` parses a frame and merges it
with none made per entry.

Refusals (the rules and their order: _table_py.py's docstring) are counted in
C integers; an origin is interned only once an entry of it is accepted.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy, memset

from fastgossip._codec_c cimport (
    U_STAMP,
    U_VALUE,
    U_VERSION,
    Entry,
    Gossip,
    new_entry,
    new_tombstone,
)
from fastgossip._wire cimport (
    HEADER_SIZE,
    MIN_ENTRY_SIZE,
    MIN_ORIGIN_SIZE,
    T_GOSSIP,
    T_GOSSIP_BATCH,
    V_BYTES,
    V_EXPIRES,
    V_INT,
    V_TOMBSTONE,
    EntryView,
    WireReader,
    rd_count,
    rd_end,
    rd_entry,
    rd_str,
    rd_u16,
    rd_u32,
    rd_u64,
    rd_value,
    rd16,
    rd32,
    rd64,
    is_ascii,
    ld32,
    ld64,
    wr16,
    wr32,
    wr64,
    wr_header,
    wr_str,
    wire_error_message,
    wire_open,
    wire_utf8_error,
)

import os

import fastgossip._codec_c as _codec_c

from fastgossip._limits import (
    BATCH_FIXED_BYTES,
    ENTRY_OVERHEAD,
    MAX_LIFE_CHARS,
    MAX_NODE_ID_BYTES,
    MAX_ORIGIN_BYTES,
)
from fastgossip.errors import FrameError, TableFull

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FG_PREFETCH(p) __builtin_prefetch((const void*)(p))
    #else
    #define FG_PREFETCH(p) ((void)(p))
    #endif
    """
    void _prefetch "FG_PREFETCH"(const void* p) noexcept nogil

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyBytes_FromStringAndSize(const char* v, Py_ssize_t size)
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    unsigned long long PyLong_AsUnsignedLongLong(object v) except? <unsigned long long>-1
    Py_ssize_t PyLong_AsSsize_t(object v) except? -1
    Py_ssize_t PY_SSIZE_T_MAX

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ENTRY_OVERHEAD",
    "MAX_LIFE_CHARS",
    "MAX_NODE_ID_BYTES",
    "MAX_ORIGIN_BYTES",
    "REFUSAL_KINDS",
    "Entry",
    "GossipState",
    "TableFull",
    "relay_size",
]
globals()["Entry"] = _codec_c.Entry

#: The keys of GossipState.refusals(), in the order merges check them.
REFUSAL_KINDS = ("origin_too_long", "own_origin", "future", "too_large", "table_full", "unrelayable",
                 "stale")

DEFAULT_MAX_FRAME_SIZE = 1 << 20

cdef enum:
    MAX_STR = 0xFFFF
    F_EXPIRED = 1            # Rec.flags
    COMPACT_SLACK = 16       # stale records tolerated beyond the live count
    INDEX_MIN = 16           # initial index capacity (buckets)
    INSERTION_SORT = 16
    ENTRY_FIXED = 21         # u16 key length + u16 origin index + u64 version + u64 stamp + tag

    # refusal counters, indexes into GossipState._refused (as REFUSAL_KINDS)
    R_ORIGIN_TOO_LONG = 0
    R_OWN_ORIGIN = 1
    R_FUTURE = 2
    R_TOO_LARGE = 3
    R_TABLE_FULL = 4
    R_UNRELAYABLE = 5
    R_STALE = 6
    N_REFUSALS = 7

cdef uint32_t NO_ORIGIN = 0xFFFFFFFF
# An origin id slot during a merge: an id, or one of these (all above any id)
cdef uint32_t UNINTERNED = 0xFFFFFFFC     # acceptable, not interned yet
cdef uint32_t O_OWN = 0xFFFFFFFD          # refused: own_origin
cdef uint32_t O_TOO_LONG = 0xFFFFFFFE     # refused: origin_too_long
# The limits (fastgossip/_limits.py is their one home)
cdef Py_ssize_t MAX_ORIGIN = MAX_ORIGIN_BYTES
cdef Py_ssize_t RELAY_FIXED = BATCH_FIXED_BYTES + MAX_NODE_ID_BYTES
cdef Py_ssize_t OVERHEAD = ENTRY_OVERHEAD
cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef object _U64_MAX_OBJ = (1 << 64) - 1
cdef uint64_t MAX_LENGTH = 0xFFFFFFFF      # the u32 length prefix
cdef uint64_t MAX_SLOTS = 0xFFFFFFFE
cdef dict _TYPE_NAMES = {2: "Ping", 3: "Pong", 4: "Replicate", 5: "ReplicateAck", 7: "Digest"}
cdef object _U64 = 1 << 64

# A per-process random seed, so that a peer cannot choose colliding keys.
cdef uint64_t _seed = int.from_bytes(os.urandom(8), "little")


# -- hashing and UTF-8 ---------------------------------------------------------------

cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _ld_short(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """0 < n <= 8 bytes as one word, without a byte loop (overlapping loads)."""
    if n >= 4:
        return (<uint64_t>ld32(p) << 32) | ld32(p + n - 4)
    return (<uint64_t>p[0] << 16) | (<uint64_t>p[n >> 1] << 8) | p[n - 1]


cdef inline uint64_t _round(uint64_t h, uint64_t v) noexcept nogil:
    return _rotl(h ^ (v * 0x87C37B91114253D5ULL), 31) * 0x4CF5AD432745937FULL


cdef inline uint64_t _hash(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """A seeded 64-bit hash: 8 bytes per multiply-rotate round (the last word
    overlapping the one before), then a murmur3 finaliser."""
    cdef uint64_t h = _seed ^ (<uint64_t>n * 0x9E3779B97F4A7C15ULL)
    cdef const unsigned char* end = p + n
    if n > 8:
        while end - p > 8:
            h = _round(h, ld64(p))
            p += 8
        h = _round(h, ld64(end - 8))
    elif n > 0:
        h = _round(h, _ld_short(p, n))
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


cdef inline bint _same(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept nogil:
    """a[:n] == b[:n], inline for short keys."""
    cdef Py_ssize_t i = 0
    if n > 16:
        return memcmp(a, b, <size_t>n) == 0
    if n >= 8:
        return ld64(a) == ld64(b) and ld64(a + n - 8) == ld64(b + n - 8)
    if n >= 4:
        return ld32(a) == ld32(b) and ld32(a + n - 4) == ld32(b + n - 4)
    while i < n:
        if a[i] != b[i]:
            return False
        i += 1
    return True


cdef inline bint _utf8_ok(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Strict UTF-8, as Python decodes it: no overlongs, surrogates or > U+10FFFF."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    if is_ascii(s, n):
        return True
    while i < n:
        if i + 8 <= n and (ld64(s + i) & 0x8080808080808080ULL) == 0:
            i += 8
            continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:
                    return False
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:
                    return False
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            i += 4
        else:
            return False
    return True


cdef inline int _bytes_cmp(const unsigned char* a, Py_ssize_t na,
                           const unsigned char* b, Py_ssize_t nb) noexcept nogil:
    cdef int c = memcmp(a, b, <size_t>(na if na < nb else nb))
    if c != 0:
        return c
    return (na > nb) - (na < nb)


# -- argument validation: the codec encoder's rules and words (_table_py.py alike) ----

cdef str _range_text(object v):
    cdef Py_ssize_t bits = int.bit_length(v)
    return int.__repr__(v) if bits <= 128 else f"an int of {bits} bits"


cdef int _conv_str(str name, object s, const unsigned char** p, Py_ssize_t* n) except -1:
    if not isinstance(s, str):
        raise TypeError(f"{name} must be str, not {type(s).__name__}")
    try:
        p[0] = <const unsigned char*>PyUnicode_AsUTF8AndSize(s, n)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} cannot be encoded as UTF-8: {exc}") from None
    if n[0] > MAX_STR:
        raise ValueError(f"{name} is {n[0]} bytes in UTF-8, more than the 65535 a str "
                         "field holds")
    return 0


cdef int _conv_u64(str name, object v, uint64_t* out) except -1:
    """An int in [0, 2**64), bool refused."""
    if type(v) is not int and (type(v) is bool or not isinstance(v, int)):
        raise TypeError(f"{name} must be int, not {type(v).__name__}")
    try:
        out[0] = PyLong_AsUnsignedLongLong(v)
    except OverflowError:
        raise ValueError(f"{name} must be in range [0, 2**64), got {_range_text(v)}") from None
    return 0


cdef Py_ssize_t _conv_size(str name, object v, Py_ssize_t minimum) except -1:
    """A non-negative size argument; huge values saturate at PY_SSIZE_T_MAX."""
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"{name} must be int, not {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {v}")
    try:
        return PyLong_AsSsize_t(v)
    except OverflowError:
        return PY_SSIZE_T_MAX


cdef Py_ssize_t _conv_limit(str name, object v) except -2:
    """A max_keys / max_bytes setting: -1 for None, else an int >= 0 (saturated)."""
    if v is None:
        return -1
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"{name} must be int or None, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, not {v}")
    try:
        return PyLong_AsSsize_t(v)
    except OverflowError:
        return PY_SSIZE_T_MAX


cdef inline bint _is_own(const unsigned char* s, Py_ssize_t n, const unsigned char* own,
                         Py_ssize_t own_n) noexcept nogil:
    """Whether an origin is ``own`` or its ephemeral twin ``own + ".e"``."""
    if own_n < 0:
        return False
    if n == own_n:
        return memcmp(s, own, n) == 0
    return (n == own_n + 2 and s[own_n] == 46 and s[own_n + 1] == 101
            and memcmp(s, own, own_n) == 0)


cdef inline Py_ssize_t _vwire(uint8_t tag, uint32_t blen) noexcept nogil:
    """The bytes of a value field after its tag: u64, bytes32, or none (a tombstone)."""
    if tag == V_BYTES:
        return 4 + <Py_ssize_t>blen
    return 8 if tag == V_INT else 0


cdef inline Py_ssize_t _vheld(uint8_t tag, uint32_t blen) noexcept nogil:
    """A value's bytes as bytes_held counts them."""
    if tag == V_BYTES:
        return <Py_ssize_t>blen
    return 8 if tag == V_INT else 0


cdef inline uint64_t _fnv1a(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """64-bit FNV-1a: the key hash a Reset carries (fixed by the protocol,
    unlike _hash, which is seeded per process)."""
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 0x100000001B3ULL
    return h


cdef int _u64_cmp(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0]
    cdef uint64_t y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


def relay_size(key, value, origin, expires=0) -> int:
    cdef uint64_t x
    _conv_u64("expires", expires, &x)
    """Bytes of the frame (length prefix included) of a one-entry GossipBatch
    carrying this entry, sent by a sender with a MAX_NODE_ID_BYTES-byte id.

    An entry is *storable* under a max_frame_size when this is <= it: merges
    refuse the others (``too_large``) and a node refuses to write them.
    """
    cdef In e
    cdef const unsigned char* op
    cdef Py_ssize_t on
    _conv_str("key", key, &e.key, &e.klen)
    _in_value(value, &e)
    _conv_str("origin", origin, &op, &on)
    return RELAY_FIXED + on + e.klen + _vwire(e.tag, e.blen) + (8 if expires else 0)


cdef Py_ssize_t _conv_max_frame_size(object v) except -1:
    """max_frame_size as the codec checks it."""
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"max_frame_size must be int, not {type(v).__name__}")
    if not (2 <= v <= 0xFFFFFFFF):
        raise ValueError(f"max_frame_size must be in [2, 4294967295], got {int.__int__(v)}")
    return <Py_ssize_t>v


# -- records -------------------------------------------------------------------------

cdef union Val:
    uint64_t i
    unsigned char* b       # PyMem_Malloc'd, owned by the record


cdef struct Rec:           # 48 bytes
    uint64_t version
    uint64_t stamp
    Val val
    size_t key_off         # into the key arena
    uint32_t origin        # into the origin table
    uint32_t blen          # length of a bytes value
    uint16_t key_len
    uint8_t tag            # V_INT, V_BYTES or V_TOMBSTONE (no value)
    uint8_t flags          # F_EXPIRED (its expiry, in GossipState._exp, has passed)


cdef packed struct LogRec:  # 12 bytes
    uint64_t stamp
    uint32_t slot


cdef struct Origin:
    unsigned char* name    # UTF-8, owned
    Py_ssize_t name_len
    PyObject* pystr        # owned reference
    uint64_t watermark     # highest stamp seen
    LogRec* log
    uint32_t log_len
    uint32_t log_cap
    uint32_t log_sorted    # length of the log's sorted prefix
    uint32_t live          # slots holding this origin
    uint64_t seen          # entries of it set or merged, won or lost
    bint stale_ok          # in stale_exempt: stale entries of it are taken
    bint eph               # an ephemeral origin: its name ends with ".e"
    bint hidden            # ephemeral and not live: its entries are not shown


cdef struct In:            # an incoming entry, borrowed pointers
    uint64_t h             # _hash(key, klen), set by whoever fills the struct
    const unsigned char* key
    Py_ssize_t klen
    const unsigned char* oname   # the origin's UTF-8 (interned only when accepted)
    Py_ssize_t olen
    PyObject* opy          # the origin as a str, or NULL (decoded when interned)
    uint64_t version
    uint64_t stamp
    uint64_t ival
    const unsigned char* bval
    uint32_t blen
    uint8_t tag
    uint64_t expires       # unix ms; 0: never


cdef struct FOrigin:       # an origin of the frame being merged
    uint32_t off           # frame offset of its str field
    uint32_t id            # interned id, UNINTERNED, O_OWN or O_TOO_LONG
    Py_ssize_t room        # key + value bytes above which its entries are too_large


cdef struct Cur:           # a delta cursor over one origin's log
    uint64_t stamp
    uint32_t oid
    uint32_t slot
    uint32_t i


cdef struct Packer:        # greedy packing of batch entries into frames
    Py_ssize_t base
    Py_ssize_t max_size
    Py_ssize_t size
    uint32_t frame         # current frame number, 0 when none is open
    uint32_t n_forigins
    uint32_t* fgen         # per origin: the frame it was last listed in
    bint new_frame


cdef inline int _in_field_u64(str name, uint8_t unboxed, uint8_t bit, uint64_t raw, object boxed,
                              uint64_t* out) except -1:
    """An int field of an Entry or Gossip (see _codec_c.pxd): unboxed, or checked now."""
    if unboxed & bit:
        out[0] = raw
        return 0
    return _conv_u64(name, boxed, out)


cdef inline int _in_field_value(uint8_t unboxed, uint64_t raw, object boxed, In* e) except -1:
    if unboxed & U_VALUE:
        e.ival = raw
        e.tag = V_INT
        return 0
    return _in_value(boxed, e)


cdef int _in_value(object value, In* e) except -1:
    cdef Py_ssize_t n
    if isinstance(value, int) and type(value) is not bool:
        try:
            e.ival = PyLong_AsUnsignedLongLong(value)
        except OverflowError:
            raise ValueError(
                f"value must be in range [0, 2**64), got {_range_text(value)}") from None
        e.tag = V_INT
        return 0
    if isinstance(value, bytes):
        n = PyBytes_GET_SIZE(value)
        if <uint64_t>n > MAX_LENGTH:
            raise ValueError(f"value is {n} bytes long, more than the 4294967295 a bytes32 "
                             "field holds")
        e.tag = V_BYTES
        e.bval = <const unsigned char*>PyBytes_AS_STRING(value)
        e.blen = <uint32_t>n
        return 0
    if value is None:
        e.tag = V_TOMBSTONE
        e.ival = 0
        e.blen = 0
        return 0
    raise TypeError(f"value must be int, bytes or None, not {type(value).__name__}")


@cython.final
cdef class GossipState:
    """Last-writer-wins key/value table with per-origin watermarks and deltas.

    Bounds: ``max_keys`` (keys held) and ``max_bytes`` (``bytes_held``: per
    entry, its key's UTF-8 bytes + its value's bytes, 8 for an int, +
    ENTRY_OVERHEAD), None for no bound; both settable. At a bound, an entry for
    a new key, or one that would replace a held value by a larger one and so
    pass ``max_bytes``, is refused: a merge skips it and counts it as
    ``table_full``, a local ``set`` raises TableFull (a ValueError). Writes
    that fit, and every update that does not grow the bytes held, are always
    accepted. Lowering a bound below what is held removes nothing.

    ``own_origin`` (None, or the origin this process writes under): a merge
    refuses entries under exactly that origin (``own_origin``); ``set`` may
    write under it.
    """

    cdef Rec* _recs
    cdef Py_ssize_t _n
    cdef Py_ssize_t _cap
    cdef unsigned char* _arena
    cdef size_t _arena_len
    cdef size_t _arena_cap
    cdef uint64_t* _index
    cdef size_t _mask
    cdef Py_ssize_t _grow_at
    cdef Origin* _origins
    cdef uint32_t _n_origins
    cdef uint32_t _origins_cap
    cdef uint64_t* _oindex
    cdef size_t _omask
    cdef uint64_t _max_version
    cdef uint64_t _changes        # see the changes property
    cdef Py_ssize_t _bytes_held
    cdef Py_ssize_t _n_tomb        # records that are tombstones
    cdef Py_ssize_t _n_gone        # records with a value not shown: hidden origin or expired
    cdef uint64_t* _exp            # per slot, its expiry (unix ms, 0: never); NULL until one
    cdef uint64_t _now_ms          # the time expiries are judged by (see expire)
    cdef uint64_t _next_exp        # the earliest expiry not yet passed (0: none)
    cdef uint32_t _n_hidden_origins  # origins whose entries are not shown
    cdef bint _gone_possible       # some origin hidden, or some expiry: see _is_gone
    cdef object _eph_live          # set of live ephemeral origins; None: none hidden
    cdef bint _delta_cut           # the last delta_frames stopped at its budget
    cdef uint64_t _delta_top       # the stamp of the last entry it took (0: none)
    cdef Py_ssize_t _max_keys      # -1: no bound
    cdef Py_ssize_t _max_bytes     # -1: no bound
    cdef object _max_keys_obj
    cdef object _max_bytes_obj
    cdef object _own               # own_origin (str) or None
    cdef bytes _own_utf8
    cdef Py_ssize_t _own_n         # its UTF-8 length, -1 when None
    cdef uint64_t _refused[N_REFUSALS]
    cdef uint64_t _own_refused_stamp
    cdef bint _refuse_stale
    cdef tuple _capture            # UTF-8 key prefixes whose applied entries are kept
    cdef list _captured
    cdef bint _cap_any             # an empty prefix: every key is kept
    cdef bint _capturing           # _capture is not empty (a C test on the hot path)
    cdef unsigned char _cap_first[256]  # first bytes of the prefixes (a fast no)

    def __cinit__(self):
        self._max_keys = -1
        self._max_bytes = -1
        self._own_n = -1
        self._capture = ()
        self._captured = []
        self._eph_live = None
        memset(self._refused, 0, sizeof(self._refused))
        self._init()

    def __init__(self, max_keys=None, max_bytes=None):
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def __dealloc__(self):
        self._free()

    cdef int _init(self) except -1:
        self._index = <uint64_t*>PyMem_Malloc(INDEX_MIN * sizeof(uint64_t))
        self._oindex = <uint64_t*>PyMem_Malloc(INDEX_MIN * sizeof(uint64_t))
        if self._index == NULL or self._oindex == NULL:
            raise MemoryError()
        memset(self._index, 0, INDEX_MIN * sizeof(uint64_t))
        memset(self._oindex, 0, INDEX_MIN * sizeof(uint64_t))
        self._mask = INDEX_MIN - 1
        self._omask = INDEX_MIN - 1
        self._grow_at = INDEX_MIN * 7 // 10
        return 0

    cdef void _free(self) noexcept:
        cdef Py_ssize_t i
        cdef Origin* o
        if self._recs != NULL:
            for i in range(self._n):
                if self._recs[i].tag == V_BYTES:
                    PyMem_Free(self._recs[i].val.b)
            PyMem_Free(self._recs)
        if self._origins != NULL:
            for i in range(self._n_origins):
                o = &self._origins[i]
                PyMem_Free(o.name)
                PyMem_Free(o.log)
                Py_DECREF(<object>o.pystr)
            PyMem_Free(self._origins)
        PyMem_Free(self._arena)
        PyMem_Free(self._index)
        PyMem_Free(self._oindex)
        self._recs = NULL
        self._origins = NULL
        self._arena = NULL
        self._index = NULL
        self._oindex = NULL
        self._n = self._cap = 0
        self._arena_len = self._arena_cap = 0
        self._n_origins = self._origins_cap = 0
        self._max_version = 0
        self._bytes_held = 0
        self._n_tomb = 0
        self._n_gone = 0
        self._n_hidden_origins = 0
        self._gone_possible = False
        PyMem_Free(self._exp)
        self._exp = NULL
        self._next_exp = 0

    # -- the key index -------------------------------------------------------------

    cdef inline Py_ssize_t _find(self, const unsigned char* key, Py_ssize_t klen, uint64_t h,
                                 size_t* pos) noexcept:
        """The slot holding key, or -1; *pos is its bucket or the empty one to use."""
        cdef uint32_t tag = <uint32_t>(h >> 32)
        cdef size_t i = tag & self._mask
        cdef uint64_t b
        cdef Rec* r
        while True:
            b = self._index[i]
            if b == 0:
                pos[0] = i
                return -1
            if <uint32_t>(b >> 32) == tag:
                r = &self._recs[<uint32_t>b - 1]
                if r.key_len == klen and _same(self._arena + r.key_off, key, klen):
                    pos[0] = i
                    return <uint32_t>b - 1
            i = (i + 1) & self._mask

    cdef int _rehash(self, uint64_t** index, size_t* mask) except -1:
        """Double a bucket array in place of *index."""
        cdef size_t old_cap = mask[0] + 1
        cdef size_t cap = old_cap * 2
        cdef size_t new_mask = cap - 1
        cdef uint64_t* new = <uint64_t*>PyMem_Malloc(cap * sizeof(uint64_t))
        cdef size_t i, j
        cdef uint64_t b
        if new == NULL:
            raise MemoryError()
        memset(new, 0, cap * sizeof(uint64_t))
        for i in range(old_cap):
            b = index[0][i]
            if b != 0:
                j = <uint32_t>(b >> 32) & new_mask
                while new[j] != 0:
                    j = (j + 1) & new_mask
                new[j] = b
        PyMem_Free(index[0])
        index[0] = new
        mask[0] = new_mask
        return 0

    cdef int _key_cmp(self, uint32_t a, uint32_t b) noexcept:
        cdef Rec* ra = &self._recs[a]
        cdef Rec* rb = &self._recs[b]
        return _bytes_cmp(self._arena + ra.key_off, ra.key_len,
                          self._arena + rb.key_off, rb.key_len)

    # -- origins -------------------------------------------------------------------

    cdef inline int _origin_cmp(self, uint32_t a, uint32_t b) noexcept:
        if a == b:
            return 0
        return _bytes_cmp(self._origins[a].name, self._origins[a].name_len,
                          self._origins[b].name, self._origins[b].name_len)

    cdef uint32_t _origin_find(self, const unsigned char* name, Py_ssize_t nlen) noexcept:
        """The id of an interned origin, or NO_ORIGIN."""
        cdef uint32_t tag = <uint32_t>(_hash(name, nlen) >> 32)
        cdef size_t i = tag & self._omask
        cdef uint64_t b
        cdef Origin* o
        while True:
            b = self._oindex[i]
            if b == 0:
                return NO_ORIGIN
            if <uint32_t>(b >> 32) == tag:
                o = &self._origins[<uint32_t>b - 1]
                if o.name_len == nlen and memcmp(o.name, name, nlen) == 0:
                    return <uint32_t>b - 1
            i = (i + 1) & self._omask

    cdef uint32_t _origin_id(self, const unsigned char* name, Py_ssize_t nlen,
                             object pystr) except? 0xFFFFFFFF:
        """The id of an origin, interning it (UTF-8 already checked) when new."""
        cdef uint64_t h = _hash(name, nlen)
        cdef uint32_t tag = <uint32_t>(h >> 32)
        cdef size_t i = tag & self._omask
        cdef uint64_t b
        cdef Origin* o
        cdef uint32_t oid
        while True:
            b = self._oindex[i]
            if b == 0:
                break
            if <uint32_t>(b >> 32) == tag:
                o = &self._origins[<uint32_t>b - 1]
                if o.name_len == nlen and memcmp(o.name, name, nlen) == 0:
                    return <uint32_t>b - 1
            i = (i + 1) & self._omask
        # new origin
        if pystr is None or type(pystr) is not str:
            pystr = PyUnicode_DecodeUTF8(<const char*>name, nlen, NULL)
        if self._n_origins == self._origins_cap:
            self._grow_origins()
        if (<size_t>self._n_origins + 1) * 10 > (self._omask + 1) * 7:
            self._rehash(&self._oindex, &self._omask)
            i = tag & self._omask
            while self._oindex[i] != 0:
                i = (i + 1) & self._omask
        oid = self._n_origins
        o = &self._origins[oid]
        memset(o, 0, sizeof(Origin))
        o.name = <unsigned char*>PyMem_Malloc(<size_t>nlen + 1)
        if o.name == NULL:
            raise MemoryError()
        memcpy(o.name, name, nlen)
        o.name_len = nlen
        Py_INCREF(pystr)
        o.pystr = <PyObject*>pystr
        o.eph = nlen >= 2 and name[nlen - 2] == 46 and name[nlen - 1] == 101  # ".e"
        o.hidden = o.eph and self._eph_live is not None and pystr not in self._eph_live
        self._n_hidden_origins += o.hidden
        self._gone_possible = self._n_hidden_origins > 0 or self._exp != NULL
        self._n_origins += 1
        self._oindex[i] = (<uint64_t>tag << 32) | (<uint64_t>oid + 1)
        return oid

    cdef int _grow_origins(self) except -1:
        cdef uint32_t cap = self._origins_cap * 2 if self._origins_cap else 8
        cdef Origin* new = <Origin*>PyMem_Realloc(self._origins, cap * sizeof(Origin))
        if new == NULL:
            raise MemoryError()
        self._origins = new
        self._origins_cap = cap
        return 0

    cdef uint32_t _origin_of(self, object origin) except? 0xFFFFFFFF:
        cdef const unsigned char* p
        cdef Py_ssize_t n
        p = <const unsigned char*>PyUnicode_AsUTF8AndSize(origin, &n)
        return self._origin_id(p, n, origin)

    # -- the per-origin logs -----------------------------------------------------------

    cdef inline bint _log_lt(self, const LogRec* a, const LogRec* b) noexcept:
        if a.stamp != b.stamp:
            return a.stamp < b.stamp
        if a.slot == b.slot:
            return False
        return self._key_cmp(a.slot, b.slot) < 0

    cdef int _log_reserve(self, uint32_t oid) except -1:
        cdef Origin* o = &self._origins[oid]
        cdef uint32_t cap
        cdef LogRec* new
        if o.log_len < o.log_cap:
            return 0
        if o.log_cap >= 0x80000000:
            raise MemoryError("origin log too long")
        cap = o.log_cap * 2 if o.log_cap else 4
        new = <LogRec*>PyMem_Realloc(o.log, cap * sizeof(LogRec))
        if new == NULL:
            raise MemoryError()
        o.log = new
        o.log_cap = cap
        return 0

    cdef void _log_push(self, uint32_t oid, uint64_t stamp, uint32_t slot) noexcept:
        """Append a record; room was reserved."""
        cdef Origin* o = &self._origins[oid]
        cdef LogRec rec
        cdef LogRec* last
        rec.stamp = stamp
        rec.slot = slot
        if o.log_len:
            last = &o.log[o.log_len - 1]
            if last.stamp == stamp and last.slot == slot:
                return
            if o.log_sorted == o.log_len and self._log_lt(last, &rec):
                o.log_sorted += 1
        else:
            o.log_sorted = 1
        o.log[o.log_len] = rec
        o.log_len += 1
        self._maybe_compact(oid)

    cdef void _merge_runs(self, LogRec* a, size_t m, size_t n, LogRec* tmp) noexcept:
        """Merge the sorted runs a[:m] and a[m:n] (stable); tmp holds m records."""
        cdef size_t i = 0, j = m, k = 0
        memcpy(tmp, a, m * sizeof(LogRec))
        while i < m and j < n:
            if self._log_lt(&a[j], &tmp[i]):
                a[k] = a[j]
                j += 1
            else:
                a[k] = tmp[i]
                i += 1
            k += 1
        while i < m:
            a[k] = tmp[i]
            i += 1
            k += 1

    cdef void _msort(self, LogRec* a, size_t n, LogRec* tmp) noexcept:
        cdef size_t i, j, m
        cdef LogRec x
        if n <= INSERTION_SORT:
            for i in range(1, n):
                x = a[i]
                j = i
                while j > 0 and self._log_lt(&x, &a[j - 1]):
                    a[j] = a[j - 1]
                    j -= 1
                a[j] = x
            return
        m = n // 2
        self._msort(a, m, tmp)
        self._msort(a + m, n - m, tmp)
        if self._log_lt(&a[m], &a[m - 1]):
            self._merge_runs(a, m, n, tmp)

    cdef bint _sort_log(self, uint32_t oid) noexcept:
        """Sort the log by (stamp, key): sort the unsorted tail, then merge it into
        the part of the sorted prefix it overlaps. False when out of memory."""
        cdef Origin* o = &self._origins[oid]
        cdef size_t s = o.log_sorted, n = o.log_len, lo, hi, mid
        cdef LogRec* tmp
        if s == n:
            return True
        tmp = <LogRec*>PyMem_Malloc(n * sizeof(LogRec))
        if tmp == NULL:
            return False
        self._msort(o.log + s, n - s, tmp)
        # first record of the prefix that sorts after the tail's first
        lo = 0
        hi = s
        while lo < hi:
            mid = (lo + hi) // 2
            if self._log_lt(&o.log[s], &o.log[mid]):
                hi = mid
            else:
                lo = mid + 1
        if lo < s:
            self._merge_runs(o.log + lo, s - lo, n - lo, tmp)
        PyMem_Free(tmp)
        o.log_sorted = <uint32_t>n
        return True

    cdef inline bint _live(self, uint32_t oid, const LogRec* rec) noexcept:
        cdef Rec* r = &self._recs[rec.slot]
        return r.origin == oid and r.stamp == rec.stamp

    cdef inline void _maybe_compact(self, uint32_t oid) noexcept:
        cdef Origin* o = &self._origins[oid]
        if o.log_len - o.live > o.live + COMPACT_SLACK:
            self._compact(oid)

    cdef void _compact(self, uint32_t oid) noexcept:
        """Drop stale and duplicate records (they outnumber the live ones)."""
        cdef Origin* o = &self._origins[oid]
        cdef uint32_t i, k = 0, cap
        cdef LogRec* new
        if not self._sort_log(oid):
            return  # best effort: retried at the next append
        for i in range(o.log_len):
            if not self._live(oid, &o.log[i]):
                continue
            if k and o.log[k - 1].slot == o.log[i].slot and o.log[k - 1].stamp == o.log[i].stamp:
                continue
            o.log[k] = o.log[i]
            k += 1
        o.log_len = k
        o.log_sorted = k
        if o.log_cap > 16 and k < o.log_cap // 4:
            cap = k * 2 if k > 8 else 8
            new = <LogRec*>PyMem_Realloc(o.log, cap * sizeof(LogRec))
            if new != NULL:
                o.log = new
                o.log_cap = cap

    # -- merging one entry ---------------------------------------------------------

    cdef inline uint32_t _resolve(self, In* e, uint32_t* oidp) except? 0xFFFFFFFF:
        """The entry's origin id, interning it now if it is not yet."""
        if oidp[0] == UNINTERNED:
            oidp[0] = self._origin_id(e.oname, e.olen,
                                      <object>e.opy if e.opy != NULL else None)
        return oidp[0]

    cdef inline bint _stale(self, In* e, uint32_t* oidp) noexcept:
        """Whether the entry's stamp is not above its origin's watermark."""
        cdef uint32_t oid = oidp[0]
        if oid >= UNINTERNED:
            oid = self._origin_find(e.oname, e.olen)
            if oid == NO_ORIGIN:
                return False
            oidp[0] = oid  # interned already: keep its id
        return e.stamp <= self._origins[oid].watermark and not self._origins[oid].stale_ok

    cdef int _apply(self, In* e, uint32_t* oidp, bint peer) except -1:
        """Merge one entry: 1 when it changed the table, 0 when it lost (or
        tied), 2 when it does not fit max_keys / max_bytes, 3 when it came from a
        ``peer``, would win, and its stamp is not above its origin's watermark
        (stale: see _table_py.py's _apply). Nothing moves on 2 or 3. An entry
        equal to the stored one with a higher stamp takes the new stamp (its
        origin re-stamped it), so a re-stamp travels on. *oidp is the origin's
        id, or UNINTERNED: it is interned (from e.oname) only once the entry is
        accepted, so that refused entries leave no origin behind."""
        cdef Origin* o
        cdef size_t pos
        cdef Py_ssize_t slot, vsize, grow = 0
        cdef Rec* r
        cdef Origin* ro
        cdef int c, cmp
        cdef bint wins
        cdef unsigned char* buf = NULL
        cdef uint32_t oid, old_origin
        cdef uint64_t old_stamp, old_exp
        cdef bint was_shown, maybe_gone
        vsize = _vheld(e.tag, e.blen)
        slot = self._find(e.key, e.klen, e.h, &pos)
        if slot < 0:
            if peer and self._stale(e, oidp):
                self._origins[oidp[0]].seen += 1  # (still sent: see origin_stats)
                return 3
            if self._max_keys >= 0 and self._n >= self._max_keys:
                return 2
            if (self._max_bytes >= 0
                    and self._bytes_held + e.klen + vsize + OVERHEAD > self._max_bytes):
                return 2
            oid = self._resolve(e, oidp)
            self._note(e, oid)
            self._insert(e, oid, e.h, pos)
            if self._capturing and self._told(self._n - 1):  # (watchers see what is shown)
                self._keep(self._n - 1)
            return 1
        r = &self._recs[slot]
        if e.version != r.version:
            cmp = 1 if e.version > r.version else -1
        else:
            if oidp[0] < UNINTERNED:
                c = self._origin_cmp(oidp[0], r.origin)
            else:
                ro = &self._origins[r.origin]
                c = _bytes_cmp(e.oname, e.olen, ro.name, ro.name_len)
            if c != 0:
                cmp = c
            elif e.tag != r.tag:
                cmp = 1 if e.tag > r.tag else -1   # any int < any bytes
            elif e.tag == V_INT:
                cmp = (e.ival > r.val.i) - (e.ival < r.val.i)
            else:
                cmp = _bytes_cmp(e.bval, e.blen, r.val.b, r.blen)
            if cmp == 0:  # (then the expiry: the same write never differs in it)
                old_exp = self._exp[slot] if self._exp != NULL else 0
                cmp = (e.expires > old_exp) - (e.expires < old_exp)
        wins = cmp > 0
        if cmp == 0 and e.stamp > r.stamp:  # the same entry, re-stamped by its origin
            oid = self._resolve(e, oidp)
            self._note(e, oid)
            self._log_reserve(oid)
            self._recs[slot].stamp = e.stamp
            self._log_push(oid, e.stamp, <uint32_t>slot)
            return 0
        if wins and peer and self._stale(e, oidp):
            self._origins[oidp[0]].seen += 1
            return 3
        if wins:
            grow = vsize - _vheld(r.tag, r.blen)
            if grow > 0 and self._max_bytes >= 0 and self._bytes_held + grow > self._max_bytes:
                return 2
        oid = self._resolve(e, oidp)
        self._note(e, oid)
        if not wins:
            return 0
        r = &self._recs[slot]
        old_origin = r.origin
        old_stamp = r.stamp
        if old_origin != oid or old_stamp != e.stamp:
            self._log_reserve(oid)
        if e.tag == V_BYTES:
            buf = <unsigned char*>PyMem_Malloc(<size_t>e.blen + 1)
            if buf == NULL:
                raise MemoryError()
            memcpy(buf, e.bval, e.blen)
        r = &self._recs[slot]
        # (hidden origins and expiries: looked at only in tables that have them)
        maybe_gone = self._gone_possible or e.expires != 0
        was_shown = self._capturing and self._told(slot)
        if r.tag == V_BYTES:
            PyMem_Free(r.val.b)
        self._n_tomb += (e.tag == V_TOMBSTONE) - (r.tag == V_TOMBSTONE)
        if maybe_gone:
            self._n_gone -= self._is_gone(r)
        r.version = e.version
        r.stamp = e.stamp
        r.origin = oid
        r.tag = e.tag
        if e.tag == V_BYTES:
            r.val.b = buf
            r.blen = e.blen
        else:
            r.val.i = e.ival
            r.blen = 0
        if maybe_gone:
            self._set_expiry(<uint32_t>slot, e.expires)
            self._n_gone += self._is_gone(r)
        self._bytes_held += grow
        if old_origin != oid:
            self._origins[old_origin].live -= 1
            self._origins[oid].live += 1
            self._log_push(oid, e.stamp, <uint32_t>slot)
            self._maybe_compact(old_origin)
        elif old_stamp != e.stamp:
            self._log_push(oid, e.stamp, <uint32_t>slot)
        if self._capturing and (was_shown or self._told(slot)):
            self._keep(slot)
        return 1

    cdef int _keep(self, Py_ssize_t slot, bint gone=False) except -1:
        """Keep the Entry in ``slot`` for take_captured when its key starts
        with a captured prefix (compared in UTF-8: no object for the others);
        tombstone-shaped when ``gone`` or its origin is hidden (the key is no
        longer shown)."""
        cdef Rec* r = &self._recs[slot]
        cdef const unsigned char* k = self._arena + r.key_off
        cdef bytes prefix
        cdef Py_ssize_t n
        cdef Entry ent
        if not self._cap_any and (r.key_len == 0 or not self._cap_first[k[0]]):
            return 0
        for prefix in self._capture:
            n = PyBytes_GET_SIZE(prefix)
            if n <= r.key_len and memcmp(k, PyBytes_AS_STRING(prefix), <size_t>n) == 0:
                if gone or self._is_gone(r):
                    ent = new_tombstone(self._key_str(slot), <str>self._origins[r.origin].pystr,
                                        r.version, r.stamp)
                    if self._exp != NULL:
                        ent._uexpires = self._exp[slot]
                    self._captured.append(ent)
                else:
                    self._captured.append(self._entry(slot))
                return 1
        return 0

    cdef inline void _note(self, In* e, uint32_t oid) noexcept:
        """An entry set or merged (won or lost): its watermark, counts, max version."""
        cdef Origin* o = &self._origins[oid]
        self._changes += 1
        if e.stamp > o.watermark:
            o.watermark = e.stamp
        o.seen += 1
        if e.version > self._max_version:
            self._max_version = e.version

    cdef inline bint _is_gone(self, Rec* r) noexcept:
        """A record with a value that is not shown (hidden origin, or expired)."""
        return r.tag != V_TOMBSTONE and (self._origins[r.origin].hidden
                                         or (r.flags & F_EXPIRED) != 0)

    cdef int _set_expiry(self, uint32_t slot, uint64_t expires) except -1:
        """Record a slot's expiry and whether it has passed (``_now_ms``)."""
        cdef Rec* r = &self._recs[slot]
        if self._exp == NULL:
            if not expires:
                r.flags &= ~F_EXPIRED
                return 0
            self._exp = <uint64_t*>PyMem_Malloc(self._cap * sizeof(uint64_t))
            if self._exp == NULL:
                raise MemoryError()
            memset(self._exp, 0, self._cap * sizeof(uint64_t))
            self._gone_possible = True
        self._exp[slot] = expires
        if expires and self._now_ms and expires <= self._now_ms:
            r.flags |= F_EXPIRED
        else:
            r.flags &= ~F_EXPIRED
            if expires and (self._next_exp == 0 or expires < self._next_exp):
                self._next_exp = expires
        return 0

    cdef int _insert(self, In* e, uint32_t oid, uint64_t h, size_t pos) except -1:
        cdef Py_ssize_t cap
        cdef uint64_t* exp
        cdef size_t acap
        cdef Rec* recs
        cdef unsigned char* arena
        cdef unsigned char* buf = NULL
        cdef Rec* r
        cdef uint32_t slot
        if <uint64_t>self._n >= MAX_SLOTS:
            raise MemoryError("GossipState is full (2**32 - 2 keys)")
        if self._n >= self._grow_at:
            self._rehash(&self._index, &self._mask)
            self._grow_at = <Py_ssize_t>((self._mask + 1) * 7 // 10)
            self._find(e.key, e.klen, h, &pos)
        if self._n == self._cap:
            cap = self._cap * 2 if self._cap else 16
            recs = <Rec*>PyMem_Realloc(self._recs, cap * sizeof(Rec))
            if recs == NULL:
                raise MemoryError()
            self._recs = recs
            if self._exp != NULL:
                exp = <uint64_t*>PyMem_Realloc(self._exp, cap * sizeof(uint64_t))
                if exp == NULL:
                    raise MemoryError()
                memset(exp + self._cap, 0, (cap - self._cap) * sizeof(uint64_t))
                self._exp = exp
            self._cap = cap
        if self._arena_len + <size_t>e.klen > self._arena_cap:
            acap = self._arena_cap * 2 if self._arena_cap else 256
            while acap < self._arena_len + <size_t>e.klen:
                acap *= 2
            arena = <unsigned char*>PyMem_Realloc(self._arena, acap)
            if arena == NULL:
                raise MemoryError()
            self._arena = arena
            self._arena_cap = acap
        self._log_reserve(oid)
        if e.tag == V_BYTES:
            buf = <unsigned char*>PyMem_Malloc(<size_t>e.blen + 1)
            if buf == NULL:
                raise MemoryError()
            memcpy(buf, e.bval, e.blen)
        slot = <uint32_t>self._n
        r = &self._recs[slot]
        r.version = e.version
        r.stamp = e.stamp
        r.origin = oid
        r.tag = e.tag
        if e.tag == V_BYTES:
            r.val.b = buf
            r.blen = e.blen
        else:
            r.val.i = e.ival
            r.blen = 0
        r.key_off = self._arena_len
        r.key_len = <uint16_t>e.klen
        r.flags = 0
        if e.klen:  # an empty key may come with a NULL pointer
            memcpy(self._arena + self._arena_len, e.key, e.klen)
        self._arena_len += e.klen
        self._index[pos] = (h >> 32 << 32) | (<uint64_t>slot + 1)
        self._n += 1
        self._bytes_held += e.klen + _vheld(e.tag, e.blen) + OVERHEAD
        self._n_tomb += e.tag == V_TOMBSTONE
        if self._gone_possible or e.expires:
            self._set_expiry(slot, e.expires)
            self._n_gone += self._is_gone(r)
        self._origins[oid].live += 1
        self._log_push(oid, e.stamp, slot)
        return 1

    # -- removing entries: tombstone collection and resets --------------------------

    cdef Py_ssize_t _remove(self, uint8_t* kill, dict removed_stamps) except -1:
        """Remove the records whose ``kill`` flag is set, keeping the others in
        first-insertion order: the records, the key arena, the index and the
        origin logs are rebuilt, O(records) (collection passes are rare). Per
        origin, the highest stamp removed goes into ``removed_stamps``.
        Returns how many records went."""
        cdef Py_ssize_t i, j = 0, removed = 0, old_n = self._n
        cdef uint32_t* remap = NULL
        cdef uint64_t* top = NULL
        cdef uint8_t* hit = NULL
        cdef uint32_t k, m, kept_sorted, oid, s
        cdef Rec* r
        cdef Origin* o
        cdef size_t alen = 0, acap, pos
        cdef unsigned char* arena
        cdef uint64_t h
        cdef object name, was
        cdef Py_ssize_t ncap
        cdef size_t icap
        cdef Rec* shrunk
        cdef uint64_t* sexp
        cdef uint64_t* sidx
        if old_n == 0:
            return 0
        try:
            remap = <uint32_t*>PyMem_Malloc(old_n * sizeof(uint32_t))
            top = <uint64_t*>PyMem_Malloc((self._n_origins + 1) * sizeof(uint64_t))
            hit = <uint8_t*>PyMem_Malloc(self._n_origins + 1)
            if remap == NULL or top == NULL or hit == NULL:
                raise MemoryError()
            memset(hit, 0, self._n_origins + 1)
            for i in range(old_n):  # (nothing changes until the arena is had)
                if not kill[i]:
                    remap[i] = <uint32_t>j
                    j += 1
                    alen += self._recs[i].key_len
                else:
                    remap[i] = 0xFFFFFFFF
                    removed += 1
            if removed == 0:
                return 0
            acap = alen if alen > 256 else 256
            arena = <unsigned char*>PyMem_Malloc(acap)
            if arena == NULL:
                raise MemoryError()
            for i in range(old_n):
                if not kill[i]:
                    continue
                r = &self._recs[i]
                if not hit[r.origin] or r.stamp > top[r.origin]:
                    top[r.origin] = r.stamp
                    hit[r.origin] = 1
                self._origins[r.origin].live -= 1
                self._n_gone -= self._is_gone(r)
                self._bytes_held -= r.key_len + _vheld(r.tag, r.blen) + OVERHEAD
                if r.tag == V_TOMBSTONE:
                    self._n_tomb -= 1
                elif r.tag == V_BYTES:
                    PyMem_Free(r.val.b)
                    r.tag = V_INT
            # the kept records and their keys, packed in order
            alen = 0
            j = 0
            for i in range(old_n):
                if kill[i]:
                    continue
                r = &self._recs[i]
                if r.key_len:
                    memcpy(arena + alen, self._arena + r.key_off, r.key_len)
                if j != i:
                    self._recs[j] = self._recs[i]
                    if self._exp != NULL:
                        self._exp[j] = self._exp[i]
                self._recs[j].key_off = alen
                alen += r.key_len
                j += 1
            PyMem_Free(self._arena)
            self._arena = arena
            self._arena_len = alen
            self._arena_cap = acap
            self._n = j
            # memory back: the records (and expiries) and the index shrink when
            # a quarter or less is used (a collected burst does not pin its peak)
            if self._cap > 64 and j <= self._cap // 4:
                ncap = self._cap // 2
                while ncap > 64 and j <= ncap // 4:
                    ncap //= 2
                # (the expiries first: if they cannot shrink, nothing does; a
                # record array that cannot is merely larger than _cap)
                sexp = NULL
                if self._exp != NULL:
                    sexp = <uint64_t*>PyMem_Realloc(self._exp, ncap * sizeof(uint64_t))
                if self._exp == NULL or sexp != NULL:
                    if sexp != NULL:
                        self._exp = sexp
                    self._cap = ncap
                    shrunk = <Rec*>PyMem_Realloc(self._recs, ncap * sizeof(Rec))
                    if shrunk != NULL:
                        self._recs = shrunk
            icap = self._mask + 1
            while icap > INDEX_MIN and j * 10 < icap * 7 // 4:
                icap //= 2
            if icap != self._mask + 1:
                sidx = <uint64_t*>PyMem_Realloc(self._index, icap * sizeof(uint64_t))
                if sidx != NULL:
                    self._index = sidx
                    self._mask = icap - 1
                    self._grow_at = <Py_ssize_t>(icap * 7 // 10)
            # the index, rebuilt
            memset(self._index, 0, (self._mask + 1) * sizeof(uint64_t))
            for i in range(j):
                r = &self._recs[i]
                h = _hash(self._arena + r.key_off, r.key_len)
                pos = <uint32_t>(h >> 32) & self._mask
                while self._index[pos] != 0:
                    pos = (pos + 1) & self._mask
                self._index[pos] = (h >> 32 << 32) | (<uint64_t>i + 1)
            # the logs: records of removed slots go, the others follow their slot
            # (dropping records keeps a sorted prefix sorted)
            for oid in range(self._n_origins):
                o = &self._origins[oid]
                m = 0
                kept_sorted = 0
                for k in range(o.log_len):
                    s = o.log[k].slot
                    if s >= <uint32_t>old_n or remap[s] == 0xFFFFFFFF:
                        continue
                    o.log[m].stamp = o.log[k].stamp
                    o.log[m].slot = remap[s]
                    if k < o.log_sorted:
                        kept_sorted += 1
                    m += 1
                o.log_len = m
                o.log_sorted = kept_sorted
            for oid in range(self._n_origins):
                if hit[oid]:
                    name = <str>self._origins[oid].pystr
                    was = removed_stamps.get(name)
                    if was is None or was < top[oid]:
                        removed_stamps[name] = top[oid]
            self._changes += 1
            return removed
        finally:
            PyMem_Free(remap)
            PyMem_Free(top)
            PyMem_Free(hit)

    def collect(self, before_version, expired_before=0) -> dict:
        """Remove the tombstones whose version is below ``before_version``, and
        the expired entries whose expiry is at most ``expired_before`` (unix
        ms); returns, per origin of a removed entry, the highest stamp removed.
        Removing costs O(entries held), not per entry."""
        cdef uint64_t before, exp_before
        cdef uint8_t* kill
        cdef Py_ssize_t i, n = 0
        cdef dict out = {}
        cdef Rec* r
        _conv_u64("before_version", before_version, &before)
        _conv_u64("expired_before", expired_before, &exp_before)
        if self._n_tomb == 0 and (self._exp == NULL or exp_before == 0):
            return out
        kill = <uint8_t*>PyMem_Malloc(self._n)
        if kill == NULL:
            raise MemoryError()
        try:
            for i in range(self._n):
                r = &self._recs[i]
                kill[i] = ((r.tag == V_TOMBSTONE and r.version < before)
                           or (r.flags & F_EXPIRED and self._exp[i] <= exp_before))
                n += kill[i]
            if n:
                self._remove(kill, out)
        finally:
            PyMem_Free(kill)
        return out

    def expire(self, now_ms) -> int:
        """Judge expiries at ``now_ms`` (unix ms): the entries whose expiry has
        passed are no longer shown (watchers see them go: tombstone-shaped
        entries with their expiry). One pass over the table, only when the
        earliest pending expiry has passed (``next_expiry``); returns how many
        expired now. Merges judge arriving entries by the last ``now_ms``."""
        cdef uint64_t now
        cdef Py_ssize_t i, n = 0
        cdef uint64_t nxt = 0, x
        cdef Rec* r
        _conv_u64("now_ms", now_ms, &now)
        if now > self._now_ms:
            self._now_ms = now
        if self._next_exp == 0 or self._next_exp > self._now_ms:
            return 0
        now = self._now_ms
        for i in range(self._n):
            x = self._exp[i]
            r = &self._recs[i]
            if x == 0 or r.flags & F_EXPIRED:
                continue
            if x <= now:
                self._n_gone -= self._is_gone(r)
                r.flags |= F_EXPIRED
                self._n_gone += self._is_gone(r)
                n += 1
                if self._capture and not self._origins[r.origin].hidden:
                    self._keep(i)
            elif nxt == 0 or x < nxt:
                nxt = x
        self._next_exp = nxt
        if n:
            self._changes += 1
        return n

    @property
    def next_expiry(self) -> int:
        """The earliest expiry (unix ms) not yet judged passed; 0: none."""
        return self._next_exp

    @property
    def now_ms(self) -> int:
        """The time (unix ms) expiries are judged by: reads hide what expired
        by it; the pass that tells watchers (expire) runs once a round. Only
        grows."""
        return self._now_ms

    @now_ms.setter
    def now_ms(self, value) -> None:
        cdef uint64_t t
        _conv_u64("now_ms", value, &t)
        if t > self._now_ms:
            self._now_ms = t

    def reset_watermark(self, origin) -> None:
        """Forget an origin's watermark (to 0): its entries are asked for again
        from the start (an ephemeral origin live again after its entries were
        dropped here)."""
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef uint32_t oid
        _conv_str("origin", origin, &p, &n)
        oid = self._origin_find(p, n)
        if oid != NO_ORIGIN and self._origins[oid].watermark:
            self._origins[oid].watermark = 0
            self._changes += 1

    def set_origin_live(self, origin, live) -> None:
        """One ephemeral origin (a name ending with ``".e"``) live or not (see
        set_ephemeral_live, which must have set a live set first): the table is
        visited only when the origin holds entries whose visibility flips."""
        cdef const unsigned char* p
        cdef Py_ssize_t n, i
        cdef uint32_t oid
        cdef Origin* o
        cdef bint hide
        if self._eph_live is None:
            raise ValueError("set_ephemeral_live first")
        _conv_str("origin", origin, &p, &n)
        if live:
            self._eph_live.add(origin)
        else:
            self._eph_live.discard(origin)
        oid = self._origin_find(p, n)
        if oid == NO_ORIGIN:
            return
        o = &self._origins[oid]
        hide = o.eph and not live
        if hide == o.hidden:
            return
        if o.live == 0:
            self._n_hidden_origins += <int>hide - <int>o.hidden
            o.hidden = hide
            self._gone_possible = self._n_hidden_origins > 0 or self._exp != NULL
            return
        for i in range(self._n):  # (its records: their visibility flips)
            if self._recs[i].origin == oid and self._recs[i].tag != V_TOMBSTONE:
                self._n_gone -= self._is_gone(&self._recs[i])
        self._n_hidden_origins += <int>hide - <int>o.hidden
        o.hidden = hide
        self._gone_possible = self._n_hidden_origins > 0 or self._exp != NULL
        for i in range(self._n):
            if self._recs[i].origin == oid and self._recs[i].tag != V_TOMBSTONE:
                self._n_gone += self._is_gone(&self._recs[i])
                if self._capturing and not self._recs[i].flags & F_EXPIRED:
                    self._keep(i)
        self._changes += 1

    def key_hashes(self) -> bytes:
        """The 64-bit FNV-1a hash of every key held (tombstones included), as
        big-endian u64s in first-insertion order (docs/PROTOCOL.md, "Reset")."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self._n * 8)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t i
        cdef Rec* r
        for i in range(self._n):
            r = &self._recs[i]
            wr64(p + 8 * i, _fnv1a(self._arena + r.key_off, r.key_len))
        return out

    def drop_unheld(self, hashes, watermarks) -> int:
        """A reset (docs/PROTOCOL.md, "Tombstone collection"): remove every
        entry that the peer's ``watermarks`` cover (its stamp is at most the
        peer's watermark for its origin) and whose key's hash is not among the
        peer's ``hashes`` (big-endian u64s, key_hashes() of the peer): the peer
        has seen it, holds nothing for its key, so a collected tombstone
        deleted it. Watchers see such keys deleted. Returns how many went."""
        cdef const unsigned char* hp
        cdef Py_ssize_t hn, n_hashes, i, lo, hi, mid, n_kill = 0
        cdef uint64_t* sorted_h = NULL
        cdef uint64_t* cover = NULL
        cdef uint8_t* has = NULL
        cdef uint8_t* kill = NULL
        cdef uint64_t h
        cdef uint32_t oid
        cdef Rec* r
        cdef object theirs
        cdef uint64_t w
        if not isinstance(hashes, bytes):
            raise TypeError(f"hashes must be bytes, not {type(hashes).__name__}")
        hp = <const unsigned char*>PyBytes_AS_STRING(hashes)
        hn = PyBytes_GET_SIZE(hashes)
        if hn % 8:
            raise ValueError(f"hashes must be whole u64s, got {hn} bytes")
        if self._n == 0:
            return 0
        n_hashes = hn // 8
        try:
            sorted_h = <uint64_t*>PyMem_Malloc((n_hashes + 1) * sizeof(uint64_t))
            cover = <uint64_t*>PyMem_Malloc((self._n_origins + 1) * sizeof(uint64_t))
            has = <uint8_t*>PyMem_Malloc(self._n_origins + 1)
            kill = <uint8_t*>PyMem_Malloc(self._n)
            if sorted_h == NULL or cover == NULL or has == NULL or kill == NULL:
                raise MemoryError()
            for i in range(n_hashes):
                sorted_h[i] = rd64(hp + 8 * i)
            qsort(sorted_h, <size_t>n_hashes, sizeof(uint64_t), _u64_cmp)
            for oid in range(self._n_origins):
                theirs = watermarks.get(<str>self._origins[oid].pystr)
                has[oid] = theirs is not None
                if theirs is not None:
                    _conv_u64("watermark", theirs, &w)
                    cover[oid] = w
            for i in range(self._n):
                r = &self._recs[i]
                kill[i] = 0
                if not has[r.origin] or r.stamp > cover[r.origin]:
                    continue
                h = _fnv1a(self._arena + r.key_off, r.key_len)
                lo = 0
                hi = n_hashes
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if sorted_h[mid] < h:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < n_hashes and sorted_h[lo] == h:
                    continue
                kill[i] = 1
                n_kill += 1
                if self._capture and self._told(i):
                    self._keep(i, True)
            if n_kill:
                self._remove(kill, {})
            return n_kill
        finally:
            PyMem_Free(sorted_h)
            PyMem_Free(cover)
            PyMem_Free(has)
            PyMem_Free(kill)

    def raise_watermarks(self, watermarks) -> None:
        """Raise each named origin's watermark to at least the given stamp,
        interning origins not seen yet (after a reset: see drop_unheld)."""
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef uint64_t stamp
        cdef uint32_t oid
        for origin, value in dict(watermarks).items():
            _conv_str("origin", origin, &p, &n)
            _conv_u64("watermark", value, &stamp)
            if n > MAX_ORIGIN:
                raise ValueError(f"origin is {n} bytes in UTF-8, more than MAX_ORIGIN_BYTES "
                                 f"({MAX_ORIGIN})")
            oid = self._origin_id(p, n, origin)
            if stamp > self._origins[oid].watermark:
                self._origins[oid].watermark = stamp
                self._changes += 1

    # -- Python objects ------------------------------------------------------------

    cdef str _key_str(self, Py_ssize_t slot):
        cdef Rec* r = &self._recs[slot]
        return PyUnicode_DecodeUTF8(<const char*>self._arena + r.key_off, r.key_len, NULL)

    cdef object _value(self, Py_ssize_t slot):
        cdef Rec* r = &self._recs[slot]
        if r.tag == V_BYTES:
            return PyBytes_FromStringAndSize(<const char*>r.val.b, r.blen)
        if r.tag == V_TOMBSTONE:
            return None
        return r.val.i

    cdef Entry _entry(self, Py_ssize_t slot):
        cdef Rec* r = &self._recs[slot]
        cdef Entry e
        if r.tag == V_TOMBSTONE:
            return new_tombstone(self._key_str(slot), <str>self._origins[r.origin].pystr,
                                 r.version, r.stamp)
        e = new_entry(
            self._key_str(slot), <str>self._origins[r.origin].pystr,
            PyBytes_FromStringAndSize(<const char*>r.val.b, r.blen) if r.tag == V_BYTES else None,
            r.val.i, r.version, r.stamp)
        if self._exp != NULL:
            e._uexpires = self._exp[slot]
        return e

    cdef Py_ssize_t _lookup(self, object key) except -2:
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef size_t pos
        _conv_str("key", key, &p, &n)
        return self._find(p, n, _hash(p, n), &pos)

    # -- writing -------------------------------------------------------------------

    def set(self, key, value, version, origin="", stamp=None, expires=0) -> bool:
        """Write one entry; True when the table changed (the entry won).
        ``expires``: unix ms after which the entry is expired (0: never).

        Raises ValueError for an origin above MAX_ORIGIN_BYTES and TableFull
        when the entry does not fit ``max_keys`` / ``max_bytes``.
        """
        cdef In e
        cdef uint32_t oid = UNINTERNED
        cdef int done
        _conv_str("key", key, &e.key, &e.klen)
        _in_value(value, &e)
        _conv_u64("version", version, &e.version)
        _conv_str("origin", origin, &e.oname, &e.olen)
        e.opy = <PyObject*>origin
        if stamp is None:
            e.stamp = e.version
        else:
            _conv_u64("stamp", stamp, &e.stamp)
        if e.olen > MAX_ORIGIN:
            raise ValueError(f"origin is {e.olen} bytes in UTF-8, more than MAX_ORIGIN_BYTES "
                             f"({MAX_ORIGIN})")
        _conv_u64("expires", expires, &e.expires)
        if e.expires and e.tag == V_TOMBSTONE:
            raise ValueError("a tombstone cannot expire")
        e.h = _hash(e.key, e.klen)
        done = self._apply(&e, &oid, 0)
        if done == 2:
            raise self._full_error(&e)
        return done == 1

    cdef object _full_error(self, In* e):
        cdef size_t pos
        cdef bint new = self._find(e.key, e.klen, e.h, &pos) < 0
        return TableFull(
            f"table full: {'adding' if new else 'growing'} key "
            f"{PyUnicode_DecodeUTF8(<const char*>e.key, e.klen, NULL)!r} would pass "
            f"max_keys={self._max_keys_obj} / max_bytes={self._max_bytes_obj} "
            f"({self._n} keys, {self._bytes_held} bytes held)")

    cdef int _merge_one(self, In* e, uint32_t* oidp, Py_ssize_t max_size, uint64_t max_stamp,
                        uint64_t max_version) except -1:
        """Merge an entry that arrived from a peer: _apply, after the refusals
        (counted). 1 when it changed the table, 0 when it lost, 2 when refused."""
        cdef int done
        cdef int kind
        if e.olen > MAX_ORIGIN:
            kind = R_ORIGIN_TOO_LONG
        elif self._own_n >= 0 and _is_own(e.oname, e.olen,
                                          <const unsigned char*>PyBytes_AS_STRING(self._own_utf8),
                                          self._own_n):
            kind = R_OWN_ORIGIN
            if e.stamp <= max_stamp and e.stamp > self._own_refused_stamp:
                self._own_refused_stamp = e.stamp
        elif e.stamp > max_stamp or e.version > max_version:
            kind = R_FUTURE
        elif (RELAY_FIXED + e.olen + e.klen
                + _vwire(e.tag, e.blen) + (8 if e.expires else 0)) > max_size:
            kind = R_TOO_LARGE
        else:
            if self._max_keys < 0 and self._max_bytes < 0:
                self._resolve(e, oidp)  # nothing can refuse it now: intern it first
            done = self._apply(e, oidp, self._refuse_stale)
            if done < 2:
                return done
            kind = R_TABLE_FULL if done == 2 else R_STALE
        self._refused[kind] += 1
        return 2

    def merge(self, entries, max_frame_size=DEFAULT_MAX_FRAME_SIZE, max_stamp=_U64_MAX_OBJ,
              max_version=_U64_MAX_OBJ) -> list:
        """Merge entries (or Gossip messages); returns those that changed the table,
        in input order. Every entry is validated before any is merged; entries
        refused (see _table_py.py's docstring) are counted in ``refusals()``."""
        cdef Py_ssize_t max_size = 1 << 20
        cdef uint64_t mstamp = _U64_MAX, mversion = _U64_MAX
        cdef uint32_t oid = UNINTERNED
        cdef PyObject* prev
        if max_frame_size is not DEFAULT_MAX_FRAME_SIZE:
            max_size = _conv_max_frame_size(max_frame_size)
        if max_stamp is not _U64_MAX_OBJ:
            _conv_u64("max_stamp", max_stamp, &mstamp)
        if max_version is not _U64_MAX_OBJ:
            _conv_u64("max_version", max_version, &mversion)
        cdef list items = list(entries)
        cdef Py_ssize_t n = PyList_GET_SIZE(items), i
        cdef In* ins
        cdef list hold = []          # keeps attribute values alive while ins points in them
        cdef list origins = [None] * n
        cdef list changed = []
        cdef object item, key, value, version, origin, stamp
        cdef const unsigned char* op
        cdef Py_ssize_t on
        cdef Entry ent
        cdef Gossip g
        if n == 0:
            return changed
        ins = <In*>PyMem_Malloc(n * sizeof(In))
        if ins == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                item = <object>PyList_GET_ITEM(items, i)
                if type(item) is Entry:
                    # (the item holds the key, origin and a bytes value alive)
                    ent = <Entry>item
                    _conv_str("key", ent.key, &ins[i].key, &ins[i].klen)
                    _in_field_value(ent._unboxed, ent._ival, ent._value, &ins[i])
                    _in_field_u64("version", ent._unboxed, U_VERSION, ent._uversion,
                                  ent._version, &ins[i].version)
                    origin = ent.origin
                    _conv_str("origin", origin, &op, &on)
                    _in_field_u64("stamp", ent._unboxed, U_STAMP, ent._ustamp, ent._stamp,
                                  &ins[i].stamp)
                    ins[i].expires = ent._uexpires
                    if ent._uexpires and ins[i].tag == V_TOMBSTONE:
                        raise ValueError("a tombstone cannot expire")
                elif type(item) is Gossip:
                    g = <Gossip>item
                    _conv_str("key", g.key, &ins[i].key, &ins[i].klen)
                    _in_field_value(g._unboxed, g._ival, g._value, &ins[i])
                    _in_field_u64("version", g._unboxed, U_VERSION, g._uversion, g._version,
                                  &ins[i].version)
                    origin = g.origin
                    _conv_str("origin", origin, &op, &on)
                    ins[i].stamp = ins[i].version
                    ins[i].expires = 0
                else:
                    stamp = getattr(item, "stamp", None)
                    key, value, version, origin = item.key, item.value, item.version, item.origin
                    hold.append((key, value, origin))
                    _conv_str("key", key, &ins[i].key, &ins[i].klen)
                    _in_value(value, &ins[i])
                    _conv_u64("version", version, &ins[i].version)
                    _conv_str("origin", origin, &op, &on)
                    if stamp is None:
                        ins[i].stamp = ins[i].version
                    else:
                        _conv_u64("stamp", stamp, &ins[i].stamp)
                    _conv_u64("expires", getattr(item, "expires", 0), &ins[i].expires)
                origins[i] = origin
                ins[i].oname = op
                ins[i].olen = on
                ins[i].opy = <PyObject*>origin
            prev = NULL
            for i in range(n):
                ins[i].h = _hash(ins[i].key, ins[i].klen)
                if ins[i].opy != prev:  # (runs of one origin object look it up once)
                    oid = UNINTERNED
                    prev = ins[i].opy
                if self._merge_one(&ins[i], &oid, max_size, mstamp, mversion) == 1:
                    changed.append(self._result(<object>PyList_GET_ITEM(items, i), &ins[i],
                                                origins[i]))
        finally:
            PyMem_Free(ins)
        return changed

    cdef object _result(self, object item, In* e, object origin):
        """The Entry to report for a merged item: the item itself when it is an
        Entry of exact field types, else a new one."""
        cdef Entry ent
        if type(item) is Entry:
            ent = <Entry>item
            if (type(ent.key) is str and type(ent.origin) is str
                    and ent._unboxed & (U_VERSION | U_STAMP) == U_VERSION | U_STAMP
                    and (ent._unboxed & U_VALUE or type(ent._value) is bytes
                         or ent._value is None)):
                return item
        if e.tag == V_TOMBSTONE:
            return new_tombstone(PyUnicode_DecodeUTF8(<const char*>e.key, e.klen, NULL),
                                 origin if type(origin) is str else str.__str__(origin),
                                 e.version, e.stamp)
        ent = new_entry(
            PyUnicode_DecodeUTF8(<const char*>e.key, e.klen, NULL),
            origin if type(origin) is str else str.__str__(origin),
            PyBytes_FromStringAndSize(<const char*>e.bval, e.blen) if e.tag == V_BYTES else None,
            e.ival, e.version, e.stamp)
        ent._uexpires = e.expires
        return ent

    def merge_frame(self, frame, max_frame_size=DEFAULT_MAX_FRAME_SIZE, max_stamp=_U64_MAX_OBJ,
                    max_version=_U64_MAX_OBJ) -> int:
        """Merge one complete Gossip or GossipBatch frame (length prefix included).

        The frame is checked as the codec's ``decode`` checks it (same FrameError,
        same message and offset) before anything is merged, so a malformed frame
        leaves the table unchanged; a well-formed frame of another type raises
        FrameError too. Entries of a well-formed frame that are not acceptable
        are skipped and counted (see _table_py.py's docstring). Returns the
        number of entries that changed the table.
        """
        cdef Py_ssize_t max_size = 1 << 20
        cdef uint64_t mstamp = _U64_MAX, mversion = _U64_MAX
        cdef Py_buffer view
        if max_frame_size is not DEFAULT_MAX_FRAME_SIZE:
            max_size = _conv_max_frame_size(max_frame_size)
        if max_stamp is not _U64_MAX_OBJ:
            _conv_u64("max_stamp", max_stamp, &mstamp)
        if max_version is not _U64_MAX_OBJ:
            _conv_u64("max_version", max_version, &mversion)
        if PyBytes_CheckExact(frame):
            return self._merge_frame(<const unsigned char*>PyBytes_AS_STRING(frame),
                                     PyBytes_GET_SIZE(frame), max_size, mstamp, mversion)
        if not PyObject_CheckBuffer(frame):
            raise TypeError(f"merge_frame() needs a bytes-like object, not {type(frame).__name__}")
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            return self._merge_frame(<const unsigned char*>view.buf, view.len, max_size, mstamp,
                                     mversion)
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t _merge_frame(self, const unsigned char* buf, Py_ssize_t n,
                                 Py_ssize_t max_size, uint64_t max_stamp,
                                 uint64_t max_version) except -1:
        cdef WireReader r
        cdef int t = wire_open(&r, buf, n, <uint64_t>max_size)
        if t == T_GOSSIP_BATCH:
            return self._merge_batch(&r, max_size, max_stamp, max_version)
        if t == T_GOSSIP:
            return self._merge_gossip(&r, max_size, max_stamp, max_version)
        if t < 0:
            _raise(&r)
        # another type: the codec reports what is wrong with it, if anything
        _codec_c.decode(PyBytes_FromStringAndSize(<const char*>buf, n), max_size)
        raise FrameError(f"cannot merge a {_TYPE_NAMES[t]} frame (type {t}) at offset 5", 5)

    cdef Py_ssize_t _merge_gossip(self, WireReader* r, Py_ssize_t max_size, uint64_t max_stamp,
                                  uint64_t max_version) except -1:
        cdef In e
        cdef uint32_t oid = UNINTERNED
        cdef const unsigned char* s = NULL
        cdef const unsigned char* o = NULL
        cdef Py_ssize_t n = 0, on = 0, blen = 0
        memset(&e, 0, sizeof(e))
        if rd_str(r, "sender_id", &s, &n) < 0:
            _raise(r)
        _check_utf8(r, s, n, "sender_id")
        if rd_str(r, "key", &e.key, &e.klen) < 0:
            _raise(r)
        _check_utf8(r, e.key, e.klen, "key")
        if rd_value(r, "value", &e.tag, &e.ival, &e.bval, &blen) < 0:
            _raise(r)
        e.blen = <uint32_t>blen
        if rd_u64(r, "version", &e.version) < 0:
            _raise(r)
        e.stamp = e.version
        if rd_str(r, "origin", &o, &on) < 0:
            _raise(r)
        _check_utf8(r, o, on, "origin")
        if rd_end(r, "Gossip") < 0:
            _raise(r)
        e.h = _hash(e.key, e.klen)
        e.oname = o
        e.olen = on
        e.opy = NULL
        return self._merge_one(&e, &oid, max_size, max_stamp, max_version) == 1

    cdef Py_ssize_t _merge_batch(self, WireReader* r, Py_ssize_t max_size, uint64_t max_stamp,
                                 uint64_t max_version) except -1:
        cdef const unsigned char* buf = r.buf
        cdef const unsigned char* s = NULL
        cdef Py_ssize_t n = 0, at, start, pos, changed = 0
        cdef uint16_t n_origins = 0
        cdef uint32_t count = 0, i, idx
        cdef FOrigin small[16]
        cdef FOrigin* table = small        # per frame origin
        cdef FOrigin* fo
        cdef EntryView ev
        cdef In e, nxt
        cdef uint32_t nidx = 0
        cdef int done
        memset(&ev, 0, sizeof(ev))
        memset(&nxt, 0, sizeof(nxt))
        if rd_str(r, "sender_id", &s, &n) < 0:
            _raise(r)
        _check_utf8(r, s, n, "sender_id")
        at = r.pos
        if (rd_u16(r, "n_origins", &n_origins) < 0
                or rd_count(r, "n_origins", n_origins, MIN_ORIGIN_SIZE, at) < 0):
            _raise(r)
        if n_origins > 16:
            table = <FOrigin*>PyMem_Malloc(n_origins * sizeof(FOrigin))
            if table == NULL:
                raise MemoryError()
        try:
            # 1. walk: check the whole frame, as the codec does, before merging
            # anything; judge each origin once (too long, our own)
            r.item_group = "origins"
            for i in range(n_origins):
                r.item_index = i
                fo = &table[i]
                fo.off = <uint32_t>r.pos
                if rd_str(r, "", &s, &n) < 0:
                    _raise(r)
                _check_utf8(r, s, n, "")
                if n > MAX_ORIGIN:
                    fo.id = O_TOO_LONG
                elif self._own_n >= 0 and _is_own(
                        s, n, <const unsigned char*>PyBytes_AS_STRING(self._own_utf8),
                        self._own_n):
                    fo.id = O_OWN
                else:
                    fo.id = UNINTERNED
                fo.room = max_size - RELAY_FIXED - n
            r.item_group = NULL
            at = r.pos
            if (rd_u32(r, "n_entries", &count) < 0
                    or rd_count(r, "n_entries", count, MIN_ENTRY_SIZE, at) < 0):
                _raise(r)
            start = r.pos
            r.item_group = "entries"
            for i in range(count):
                r.item_index = i
                if rd_entry(r, n_origins, &ev) < 0:
                    _raise(r)
                _check_utf8_at(r, ev.key, ev.key_len, ev.key_offset, "key")
            r.item_group = NULL
            if rd_end(r, "GossipBatch") < 0:
                _raise(r)
            # 2. merge, trusting the walk; the next entry's bucket is prefetched
            pos = start
            if count:
                pos = _read_entry(buf, pos, &nxt, &nidx)
            for i in range(count):
                e = nxt
                idx = nidx
                if i + 1 < count:
                    pos = _read_entry(buf, pos, &nxt, &nidx)
                    _prefetch(&self._index[<uint32_t>(nxt.h >> 32) & self._mask])
                # the refusals, in _merge_one's order
                fo = &table[idx]
                if fo.id > UNINTERNED:
                    self._refused[R_ORIGIN_TOO_LONG if fo.id == O_TOO_LONG else R_OWN_ORIGIN] += 1
                    if (fo.id == O_OWN and e.stamp <= max_stamp
                            and e.stamp > self._own_refused_stamp):
                        self._own_refused_stamp = e.stamp
                    continue
                if e.stamp > max_stamp or e.version > max_version:
                    self._refused[R_FUTURE] += 1
                    continue
                if (e.klen + <Py_ssize_t>e.blen + 16 > fo.room  # (a bound: mostly enough)
                        and e.klen + _vwire(e.tag, e.blen) + (8 if e.expires else 0) > fo.room):
                    self._refused[R_TOO_LARGE] += 1
                    continue
                e.oname = buf + fo.off + 2
                e.olen = rd16(buf + fo.off)
                e.opy = NULL
                done = self._apply(&e, &fo.id, self._refuse_stale)
                if done == 2:
                    self._refused[R_TABLE_FULL] += 1
                elif done == 3:
                    self._refused[R_STALE] += 1
                else:
                    changed += done
        finally:
            if table != small:
                PyMem_Free(table)
        return changed

    # -- reading -------------------------------------------------------------------

    def get(self, key):
        """(value, version) stored for key, or None (also for a tombstone)."""
        cdef Py_ssize_t slot = self._lookup(key)
        if slot < 0 or not self._shown(slot):
            return None
        return (self._value(slot), self._recs[slot].version)

    def get_entry(self, key):
        """The Entry stored for key (a tombstone's value is None), or None."""
        cdef Py_ssize_t slot = self._lookup(key)
        if slot < 0:
            return None
        return self._entry(slot)

    def keys(self) -> list:
        """Every key that holds a value (tombstones left out), in first-insertion order."""
        cdef Py_ssize_t i
        if (self._n_tomb == 0 and self._n_gone == 0
                and (self._next_exp == 0 or self._next_exp > self._now_ms)):
            return [self._key_str(i) for i in range(self._n)]
        return [self._key_str(i) for i in range(self._n) if self._shown(i)]

    def __len__(self):
        """Keys shown: holding a value (not a tombstone), under an origin not hidden."""
        return self._n - self._n_tomb - self._n_gone

    def __bool__(self):
        return self._n > self._n_tomb + self._n_gone

    cdef inline bint _told(self, Py_ssize_t slot) noexcept:
        """Shown as far as watchers were told: a value, under an origin not
        hidden, not marked expired by a pass (what captures decide by; the
        pass tells them of expiries)."""
        cdef Rec* r = &self._recs[slot]
        return r.tag != V_TOMBSTONE and not self._is_gone(r)

    cdef inline bint _shown(self, Py_ssize_t slot) noexcept:
        """Shown: a value, under an origin not hidden, not expired (by the last
        expiry pass, or by ``now_ms`` already: reads are exact between passes)."""
        cdef Rec* r = &self._recs[slot]
        if r.tag == V_TOMBSTONE or self._is_gone(r):
            return False
        return self._exp == NULL or self._exp[slot] == 0 or self._exp[slot] > self._now_ms

    def set_ephemeral_live(self, origins) -> None:
        """The live ephemeral origins (names ending with ``".e"``, see
        GossipCore): the entries of every other ephemeral origin are kept and
        replicated but not shown (get, keys, len, iteration). None (the
        default): every origin is shown. Watchers see the keys that appear
        (``set``) and disappear (tombstone-shaped entries) by the change."""
        cdef uint32_t oid
        cdef Origin* o
        cdef bint hide
        cdef Py_ssize_t i
        cdef uint8_t* flip
        live = None if origins is None else set(origins)  # (set_origin_live edits it)
        self._eph_live = live
        flip = <uint8_t*>PyMem_Malloc(self._n_origins + 1)
        if flip == NULL:
            raise MemoryError()
        try:
            n_flip = 0  # (a Python int: rare)
            for oid in range(self._n_origins):
                o = &self._origins[oid]
                hide = o.eph and live is not None and <str>o.pystr not in live
                flip[oid] = hide != o.hidden
                n_flip += flip[oid]
                self._n_hidden_origins += <int>hide - <int>o.hidden
                o.hidden = hide
            self._gone_possible = self._n_hidden_origins > 0 or self._exp != NULL
            if n_flip == 0:
                return
            self._n_gone = 0
            for i in range(self._n):
                if self._recs[i].tag == V_TOMBSTONE:
                    continue
                self._n_gone += self._is_gone(&self._recs[i])
                if (flip[self._recs[i].origin] and self._capture
                        and not self._recs[i].flags & F_EXPIRED):
                    self._keep(i)
            self._changes += 1
        finally:
            PyMem_Free(flip)

    def drop_origins(self, origins) -> dict:
        """Remove every entry held under these origins (the ephemeral keys of
        a member gone for good); returns, per origin, the highest stamp removed."""
        cdef uint8_t* kill
        cdef uint8_t* doomed
        cdef Py_ssize_t i, n = 0
        cdef const unsigned char* p
        cdef Py_ssize_t pn
        cdef uint32_t oid
        cdef dict out = {}
        origins = list(origins)
        for origin in origins:
            _conv_str("origin", origin, &p, &pn)
        if self._n == 0:
            return out
        kill = <uint8_t*>PyMem_Malloc(self._n)
        doomed = <uint8_t*>PyMem_Malloc(self._n_origins + 1)
        try:
            if kill == NULL or doomed == NULL:
                raise MemoryError()
            memset(doomed, 0, self._n_origins + 1)
            for origin in origins:
                _conv_str("origin", origin, &p, &pn)
                oid = self._origin_find(p, pn)
                if oid != NO_ORIGIN and self._origins[oid].live:
                    doomed[oid] = 1
            for i in range(self._n):
                kill[i] = doomed[self._recs[i].origin]
                n += kill[i]
            if n:
                self._remove(kill, out)
        finally:
            PyMem_Free(kill)
            PyMem_Free(doomed)
        return out

    @property
    def delta_cut(self) -> bool:
        """Whether the last delta_frames call stopped at ``max_bytes`` with
        entries still due (False: it held the whole delta)."""
        return self._delta_cut

    @property
    def delta_top(self) -> int:
        """The stamp of the last entry the last delta_frames call took (0:
        none); with delta_cut, the delta holds every due entry below it."""
        return self._delta_top

    @property
    def tombstones(self) -> int:
        """Tombstones held (deleted keys not yet collected)."""
        return self._n_tomb

    @property
    def entry_count(self) -> int:
        """Entries held: keys with a value and tombstones (what max_keys bounds)."""
        return self._n

    def entries(self):
        """Every entry, tombstones included, in first-insertion order of keys."""
        cdef Py_ssize_t i = 0
        while i < self._n:
            yield self._entry(i)
            i += 1

    def __contains__(self, key):
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef size_t pos
        if not isinstance(key, str):
            return False
        try:
            p = <const unsigned char*>PyUnicode_AsUTF8AndSize(key, &n)
        except UnicodeEncodeError:
            return False
        cdef Py_ssize_t slot = self._find(p, n, _hash(p, n), &pos)
        return slot >= 0 and self._shown(slot)

    def __iter__(self):
        """Entries that hold a value (tombstones left out), in first-insertion
        order of keys; keys added meanwhile are included."""
        cdef Py_ssize_t i = 0
        while i < self._n:
            if self._shown(i):
                yield self._entry(i)
            i += 1

    def __repr__(self):
        return (f"<GossipState: {self._n - self._n_tomb} entries, {self._n_tomb} tombstones, "
                f"{self._n_origins} origins>")

    @property
    def max_version(self) -> int:
        """The highest version set or merged (losing entries included); 0 when none."""
        return self._max_version

    def origin_stats(self) -> dict:
        """Per origin: (watermark, keys it holds here, entries of it set or merged
        so far, won or lost). The last count tells whether an origin that holds
        no key is still being sent entries (see GossipNode's digest)."""
        cdef uint32_t i
        cdef Origin* o
        out = {}
        for i in range(self._n_origins):
            o = &self._origins[i]
            out[<object>o.pystr] = (o.watermark, o.live, o.seen)
        return out

    def watermarks(self) -> dict:
        """Per origin, the highest stamp seen (whether or not that entry won)."""
        cdef uint32_t i
        return {<object>self._origins[i].pystr: self._origins[i].watermark
                for i in range(self._n_origins)}

    def clear(self) -> None:
        """Forget every entry, watermark and the max version (the bounds,
        ``own_origin`` and the refusal counts stay)."""
        self._free()
        self._init()
        self._changes += 1

    @property
    def own_refused_stamp(self) -> int:
        """The highest stamp, within the horizon, of the entries refused because
        they came under ``own_origin`` (0: none): see _table_py.py."""
        return self._own_refused_stamp

    @property
    def changes(self) -> int:
        """A count that grows whenever an entry is set, merged (won or lost) or
        restamped, or the table cleared: when it has not moved, neither have
        the watermarks nor the origins' counts (a digest can be reused)."""
        return self._changes

    def restamp(self, origin, first_stamp) -> int:
        """Give every entry held under ``origin`` a new stamp, consecutive from
        ``first_stamp`` in their current (stamp, key) order; the origin's
        watermark becomes the last of them if that is higher. Returns how many
        entries were restamped. (A node whose own origin's watermark was forged
        above its clock moves its entries past the forgery this way, so that
        peers fetch them again.)"""
        cdef const unsigned char* op
        cdef Py_ssize_t on
        cdef uint64_t first, last
        cdef uint32_t oid, i, k = 0
        cdef Origin* o
        _conv_str("origin", origin, &op, &on)
        _conv_u64("first_stamp", first_stamp, &first)
        oid = self._origin_find(op, on)
        if oid == NO_ORIGIN or self._origins[oid].live == 0:
            return 0
        o = &self._origins[oid]
        if not self._sort_log(oid):
            raise MemoryError()
        # keep exactly the live records (one per key held), in (stamp, key) order
        for i in range(o.log_len):
            if not self._live(oid, &o.log[i]):
                continue
            if k and o.log[k - 1].slot == o.log[i].slot and o.log[k - 1].stamp == o.log[i].stamp:
                continue
            o.log[k] = o.log[i]
            k += 1
        o.log_len = k
        o.log_sorted = k
        if first > _U64_MAX - (k - 1):
            raise ValueError(f"restamp: {k} stamps from {first} pass 2**64 - 1")
        for i in range(k):
            o.log[i].stamp = first + i
            self._recs[o.log[i].slot].stamp = first + i
        last = first + (k - 1)
        self._changes += 1
        if last > o.watermark:
            o.watermark = last
        return k

    # -- bounds, own origin, refusals ---------------------------------------------------

    @property
    def max_keys(self):
        """The most keys held (None: no bound); see the class docstring."""
        return self._max_keys_obj

    @max_keys.setter
    def max_keys(self, value):
        self._max_keys = _conv_limit("max_keys", value)
        self._max_keys_obj = None if value is None else int(value)

    @property
    def max_bytes(self):
        """The most ``bytes_held`` (None: no bound); see the class docstring."""
        return self._max_bytes_obj

    @max_bytes.setter
    def max_bytes(self, value):
        self._max_bytes = _conv_limit("max_bytes", value)
        self._max_bytes_obj = None if value is None else int(value)

    @property
    def own_origin(self):
        """The origin merges refuse (this process's own, and its ephemeral twin
        ``own_origin + ".e"``), or None."""
        return self._own

    @own_origin.setter
    def own_origin(self, value):
        cdef const unsigned char* p
        cdef Py_ssize_t n
        if value is None:
            self._own = None
            self._own_utf8 = None
            self._own_n = -1
            return
        if not isinstance(value, str):
            raise TypeError(f"own_origin must be str or None, not {type(value).__name__}")
        _conv_str("own_origin", value, &p, &n)
        self._own = value if type(value) is str else str.__str__(value)
        self._own_utf8 = PyBytes_FromStringAndSize(<const char*>p, n)
        self._own_n = n

    def set_capture(self, prefixes) -> None:
        """Keep every entry that changes the table (set or merged, and won)
        whose key starts with one of ``prefixes`` (str), in the order applied,
        until ``take_captured()``. Replaces the previous prefixes; an empty
        iterable stops capturing (and drops what was kept)."""
        cdef list out = []
        cdef bytes b
        for prefix in prefixes:
            if not isinstance(prefix, str):
                raise TypeError(f"a capture prefix is a str, not {type(prefix).__name__}")
            out.append((<str>prefix).encode("utf-8"))
        self._capture = tuple(out)
        self._capturing = len(out) > 0
        memset(self._cap_first, 0, sizeof(self._cap_first))
        self._cap_any = False
        for b in out:
            if len(b) == 0:
                self._cap_any = True
            else:
                self._cap_first[<unsigned char>b[0]] = 1
        if not out:
            self._captured = []

    def take_captured(self) -> list:
        """The entries captured since the last call (see set_capture), in the
        order they were applied; forgets them."""
        cdef list out = self._captured
        if out:
            self._captured = []
        return out

    def set_stale_exempt(self, origins) -> None:
        """Origins whose entries merges take even when stale: those the node
        has left out of its digests (retired). A peer answers such an origin from
        stamp 0, and that resend is what heals a gap an earlier cut answer may
        have left below the watermark. Replaces the previous set."""
        cdef uint32_t i, oid
        cdef const unsigned char* p
        cdef Py_ssize_t n
        for i in range(self._n_origins):
            self._origins[i].stale_ok = False
        for origin in origins:
            _conv_str("origin", origin, &p, &n)
            oid = self._origin_find(p, n)
            if oid != NO_ORIGIN:
                self._origins[oid].stale_ok = True

    @property
    def refuse_stale(self) -> bool:
        """When true, merges refuse (and count as ``stale``) an entry that would win
        but whose stamp is not above its origin's watermark here. Off by
        default, so that ``merge`` is a join whatever the order of its inputs; a
        node turns it on, since its deltas arrive as stamp-ordered prefixes and
        such an entry is one that no honest peer sends (see _apply)."""
        return self._refuse_stale

    @refuse_stale.setter
    def refuse_stale(self, value) -> None:
        self._refuse_stale = bool(value)

    @property
    def bytes_held(self) -> int:
        """Key bytes + value bytes (8 per int) + ENTRY_OVERHEAD per entry held."""
        return self._bytes_held

    def refusals(self) -> dict:
        """Entries refused so far, by reason (REFUSAL_KINDS; see _table_py.py)."""
        cdef int i
        return {REFUSAL_KINDS[i]: self._refused[i] for i in range(N_REFUSALS)}

    # -- deltas --------------------------------------------------------------------

    cdef inline bint _cur_lt(self, const Cur* a, const Cur* b) noexcept:
        if a.stamp != b.stamp:
            return a.stamp < b.stamp
        return self._origin_cmp(a.oid, b.oid) < 0

    cdef bint _advance(self, Cur* c) noexcept:
        """Move a cursor to its log's next live record not seen before."""
        cdef Origin* o = &self._origins[c.oid]
        cdef LogRec* rec
        while c.i < o.log_len:
            rec = &o.log[c.i]
            c.i += 1
            if not self._live(c.oid, rec):
                continue
            if c.i >= 2 and o.log[c.i - 2].slot == rec.slot and o.log[c.i - 2].stamp == rec.stamp:
                continue
            c.stamp = rec.stamp
            c.slot = rec.slot
            return True
        return False

    cdef void _sift(self, Cur* heap, Py_ssize_t n, Py_ssize_t i) noexcept:
        cdef Py_ssize_t child
        cdef Cur x = heap[i]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and self._cur_lt(&heap[child + 1], &heap[child]):
                child += 1
            if not self._cur_lt(&heap[child], &x):
                break
            heap[i] = heap[child]
            i = child
        heap[i] = x

    cdef Py_ssize_t _delta_open(self, object watermarks, Cur** out) except -1:
        """Cursors (as a heap) over every origin with entries above the peer's
        watermark. Python is called (watermarks.get) only here."""
        cdef uint32_t n_origins = self._n_origins, oid
        cdef uint64_t* after
        cdef uint8_t* mode     # 0: nothing due, 1: all, 2: stamps above after[oid]
        cdef Cur* heap
        cdef Py_ssize_t n = 0, i
        cdef object theirs
        cdef Origin* o
        cdef size_t lo, hi, mid
        out[0] = NULL
        if n_origins == 0:
            return 0
        after = <uint64_t*>PyMem_Malloc(n_origins * sizeof(uint64_t))
        mode = <uint8_t*>PyMem_Malloc(n_origins)
        heap = <Cur*>PyMem_Malloc(n_origins * sizeof(Cur))
        try:
            if after == NULL or mode == NULL or heap == NULL:
                raise MemoryError()
            for oid in range(n_origins):
                after[oid] = 0
                mode[oid] = 0
                if oid >= self._n_origins:  # the mapping's get() cleared the table
                    continue
                theirs = watermarks.get(<object>self._origins[oid].pystr)
                if theirs is None:
                    mode[oid] = 1
                elif not isinstance(theirs, int):
                    raise TypeError(f"watermark for origin {<object>self._origins[oid].pystr!r} "
                                    f"must be int, not {type(theirs).__name__}")
                elif theirs < 0:
                    mode[oid] = 1
                elif theirs >= _U64:
                    mode[oid] = 0
                else:
                    after[oid] = PyLong_AsUnsignedLongLong(theirs)
                    mode[oid] = 2
            # no Python code from here on
            for oid in range(min(n_origins, self._n_origins)):
                o = &self._origins[oid]
                if mode[oid] == 0 or o.live == 0:
                    continue
                if mode[oid] == 2 and o.watermark <= after[oid]:
                    continue
                if not self._sort_log(oid):
                    raise MemoryError()
                lo = 0
                hi = o.log_len
                if mode[oid] == 2:
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if o.log[mid].stamp <= after[oid]:
                            lo = mid + 1
                        else:
                            hi = mid
                heap[n].oid = oid
                heap[n].i = <uint32_t>lo
                if self._advance(&heap[n]):
                    n += 1
            i = n // 2
            while i > 0:
                i -= 1
                self._sift(heap, n, i)
        except BaseException:
            PyMem_Free(heap)
            raise
        finally:
            PyMem_Free(after)
            PyMem_Free(mode)
        out[0] = heap
        return n

    cdef bint _delta_next(self, Cur* heap, Py_ssize_t* n, uint32_t* slot,
                          uint32_t* oid, uint64_t* stamp) noexcept:
        if n[0] == 0:
            return False
        slot[0] = heap[0].slot
        oid[0] = heap[0].oid
        stamp[0] = heap[0].stamp
        if not self._advance(&heap[0]):
            n[0] -= 1
            heap[0] = heap[n[0]]
        self._sift(heap, n[0], 0)
        return True

    cdef Py_ssize_t _back_off(self, uint32_t* slots, Py_ssize_t count, uint32_t oid,
                              uint64_t stamp) noexcept:
        """Where to cut slots[:count] given the next due record (oid, stamp): not
        inside a group of one origin's equal stamps, unless it is all of it."""
        cdef Py_ssize_t cut
        cdef Rec* r
        if count == 0:
            return 0
        r = &self._recs[slots[count - 1]]
        if r.origin != oid or r.stamp != stamp:
            return count
        cut = count - 1
        while cut > 0:
            r = &self._recs[slots[cut - 1]]
            if r.origin != oid or r.stamp != stamp:
                break
            cut -= 1
        return cut if cut else count

    def delta(self, watermarks, limit=None) -> list:
        """Entries held whose stamp is above ``watermarks.get(entry.origin, -1)``,
        sorted by (stamp, origin, key), at most ``limit`` of them.

        A cut never splits the entries one origin wrote with one stamp unless that
        group alone is longer than ``limit``, so that any prefix leaves the
        receiver's watermarks true.
        """
        cdef Py_ssize_t max_n = -1, n_cur, count = 0, cap = 0, i
        cdef Cur* heap = NULL
        cdef uint32_t* slots = NULL
        cdef uint32_t* grown
        cdef uint32_t slot, oid
        cdef uint64_t stamp
        if limit is not None:
            max_n = _conv_size("limit", limit, 0)
        n_cur = self._delta_open(watermarks, &heap)
        try:
            while self._delta_next(heap, &n_cur, &slot, &oid, &stamp):
                if count == max_n:
                    count = self._back_off(slots, count, oid, stamp)
                    break
                if count == cap:
                    cap = cap * 2 if cap else 64
                    grown = <uint32_t*>PyMem_Realloc(slots, cap * sizeof(uint32_t))
                    if grown == NULL:
                        raise MemoryError()
                    slots = grown
                slots[count] = slot
                count += 1
            PyMem_Free(heap)
            heap = NULL
            return [self._entry(slots[i]) for i in range(count) if slots[i] < self._n]
        finally:
            PyMem_Free(heap)
            PyMem_Free(slots)

    cdef inline Py_ssize_t _entry_size(self, uint32_t slot) noexcept:
        cdef Rec* r = &self._recs[slot]
        return (ENTRY_FIXED + r.key_len + _vwire(r.tag, r.blen)
                + (8 if self._exp != NULL and self._exp[slot] else 0))

    cdef bint _fits(self, Packer* p, uint32_t slot) noexcept:
        """Whether a frame holding only this entry is small enough."""
        cdef Rec* r = &self._recs[slot]
        return p.base + 2 + self._origins[r.origin].name_len + self._entry_size(slot) <= p.max_size

    cdef Py_ssize_t _pack(self, Packer* p, uint32_t slot) except -1:
        """Place one entry; returns how many bytes the frames grew by."""
        cdef Rec* r = &self._recs[slot]
        cdef Py_ssize_t esize = self._entry_size(slot)
        cdef Py_ssize_t olen = 2 + self._origins[r.origin].name_len
        cdef Py_ssize_t alone, grow
        cdef bint listed
        alone = p.base + olen + esize
        if alone > p.max_size:
            raise ValueError(f"entry for key {self._key_str(slot)!r} needs a {alone}-byte "
                             f"frame, more than max_frame_size {p.max_size}")
        listed = p.frame != 0 and p.fgen[r.origin] == p.frame
        grow = esize + (0 if listed else olen)
        if p.frame != 0 and p.size + grow <= p.max_size and (listed or p.n_forigins < MAX_STR):
            p.size += grow
            p.new_frame = False
            if not listed:
                p.fgen[r.origin] = p.frame
                p.n_forigins += 1
        else:
            p.frame += 1
            p.size = alone
            p.n_forigins = 1
            p.fgen[r.origin] = p.frame
            p.new_frame = True
            grow = alone
        return grow

    def delta_frames(self, sender_id, watermarks, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                     max_bytes=None) -> list:
        """The delta, encoded as GossipBatch frames of at most ``max_frame_size``
        bytes each (length prefix included), stopping before the frames' total
        would pass ``max_bytes`` (yet with at least one entry when any is due).

        An entry that no frame of ``max_frame_size`` can hold (with this
        sender_id) is skipped and counted as ``unrelayable``: it never raises.
        """
        cdef const unsigned char* sp
        cdef Py_ssize_t sn, max_size, budget = -1, n_cur, count = 0, cap = 0, total = 0
        cdef Py_ssize_t grow, i, j, n_frames
        cdef Packer pk
        cdef Cur* heap = NULL
        cdef uint32_t* slots = NULL
        cdef uint32_t* grown
        cdef uint32_t* starts = NULL
        cdef uint32_t slot, oid
        cdef uint64_t stamp
        cdef list frames
        _conv_str("sender_id", sender_id, &sp, &sn)
        max_size = _conv_max_frame_size(max_frame_size)
        if max_bytes is not None:
            budget = _conv_size("max_bytes", max_bytes, 0)
        memset(&pk, 0, sizeof(Packer))
        self._delta_cut = False
        self._delta_top = 0
        pk.base = HEADER_SIZE + 2 + sn + 2 + 4
        pk.max_size = max_size
        n_cur = self._delta_open(watermarks, &heap)
        try:
            pk.fgen = <uint32_t*>PyMem_Malloc((self._n_origins + 1) * sizeof(uint32_t))
            if pk.fgen == NULL:
                raise MemoryError()
            memset(pk.fgen, 0, (self._n_origins + 1) * sizeof(uint32_t))
            # pass 1: how far the byte budget reaches
            while self._delta_next(heap, &n_cur, &slot, &oid, &stamp):
                if not self._fits(&pk, slot):
                    self._refused[R_UNRELAYABLE] += 1
                    continue
                grow = self._pack(&pk, slot)
                if budget >= 0 and count and total + grow > budget:
                    count = self._back_off(slots, count, oid, stamp)
                    self._delta_cut = True
                    break
                total += grow
                if count == cap:
                    cap = cap * 2 if cap else 64
                    grown = <uint32_t*>PyMem_Realloc(slots, cap * sizeof(uint32_t))
                    if grown == NULL:
                        raise MemoryError()
                    slots = grown
                slots[count] = slot
                count += 1
            if count == 0:
                return []
            self._delta_top = self._recs[slots[count - 1]].stamp
            # pass 2: frame boundaries of the prefix taken (a prefix of the packing)
            starts = <uint32_t*>PyMem_Malloc((count + 1) * sizeof(uint32_t))
            if starts == NULL:
                raise MemoryError()
            pk.frame = 0
            memset(pk.fgen, 0, (self._n_origins + 1) * sizeof(uint32_t))
            n_frames = 0
            for i in range(count):
                self._pack(&pk, slots[i])
                if pk.new_frame:
                    starts[n_frames] = <uint32_t>i
                    n_frames += 1
            starts[n_frames] = <uint32_t>count
            frames = [None] * n_frames
            for j in range(n_frames):
                frames[j] = self._encode_batch(sp, sn, slots, starts[j], starts[j + 1], pk.fgen)
            return frames
        finally:
            PyMem_Free(heap)
            PyMem_Free(slots)
            PyMem_Free(starts)
            PyMem_Free(pk.fgen)

    cdef bytes _encode_batch(self, const unsigned char* sp, Py_ssize_t sn, uint32_t* slots,
                             Py_ssize_t lo, Py_ssize_t hi, uint32_t* fidx):
        """One GossipBatch frame of slots[lo:hi]. ``fidx`` is scratch, one per origin."""
        cdef Py_ssize_t size = HEADER_SIZE + 2 + sn + 2 + 4, i, n_fo = 0
        cdef Rec* r
        cdef Origin* o
        cdef uint32_t* order
        cdef bytes frame
        cdef unsigned char* p
        cdef unsigned char* end
        cdef uint64_t xp
        order = <uint32_t*>PyMem_Malloc((hi - lo) * sizeof(uint32_t))
        if order == NULL:
            raise MemoryError()
        try:
            for i in range(self._n_origins):
                fidx[i] = NO_ORIGIN
            for i in range(lo, hi):
                r = &self._recs[slots[i]]
                if fidx[r.origin] == NO_ORIGIN:
                    fidx[r.origin] = <uint32_t>n_fo
                    order[n_fo] = r.origin
                    n_fo += 1
                    size += 2 + self._origins[r.origin].name_len
                size += self._entry_size(slots[i])
            frame = PyBytes_FromStringAndSize(NULL, size)
            p = <unsigned char*>PyBytes_AS_STRING(frame)
            end = p + size
            p = wr_header(p, size, T_GOSSIP_BATCH)
            p = wr_str(p, <const char*>sp, sn)
            wr16(p, <uint16_t>n_fo)
            p += 2
            for i in range(n_fo):
                o = &self._origins[order[i]]
                p = wr_str(p, <const char*>o.name, o.name_len)
            wr32(p, <uint32_t>(hi - lo))
            p += 4
            for i in range(lo, hi):
                r = &self._recs[slots[i]]
                p = wr_str(p, <const char*>self._arena + r.key_off, r.key_len)
                wr16(p, <uint16_t>fidx[r.origin])
                wr64(p + 2, r.version)
                wr64(p + 10, r.stamp)
                xp = self._exp[slots[i]] if self._exp != NULL else 0
                p[18] = r.tag | (V_EXPIRES if xp else 0)
                p += 19
                if xp:
                    wr64(p, xp)
                    p += 8
                if r.tag == V_BYTES:
                    wr32(p, r.blen)
                    memcpy(p + 4, r.val.b, r.blen)
                    p += 4 + r.blen
                elif r.tag == V_INT:
                    wr64(p, r.val.i)
                    p += 8
            if p != end:
                raise SystemError("GossipState.delta_frames: frame size mismatch")
            return frame
        finally:
            PyMem_Free(order)


# -- reading frames: the codec's checks and words (WireReader, _wire.pxd) ---------------

cdef inline Py_ssize_t _read_entry(const unsigned char* buf, Py_ssize_t pos, In* e,
                                   uint32_t* origin_index) noexcept nogil:
    """Read a batch entry that the walk has checked; returns where the next begins."""
    cdef uint32_t kl = rd16(buf + pos)
    e.key = buf + pos + 2
    e.klen = kl
    e.h = _hash(e.key, kl)
    pos += 2 + kl
    origin_index[0] = rd16(buf + pos)
    e.version = rd64(buf + pos + 2)
    e.stamp = rd64(buf + pos + 10)
    e.tag = buf[pos + 18]
    pos += 19
    e.expires = 0
    if e.tag & V_EXPIRES:
        e.tag &= ~V_EXPIRES
        e.expires = rd64(buf + pos)
        pos += 8
    if e.tag == V_INT:
        e.ival = rd64(buf + pos)
        return pos + 8
    if e.tag == V_TOMBSTONE:
        e.ival = 0
        e.blen = 0
        return pos
    e.blen = rd32(buf + pos)
    e.bval = buf + pos + 4
    return pos + 4 + e.blen


cdef int _raise(WireReader* r) except -1:
    raise FrameError(wire_error_message(r), r.err_offset)


cdef inline int _check_utf8_at(WireReader* r, const unsigned char* s, Py_ssize_t n,
                               Py_ssize_t offset, const char* field) except -1:
    if not _utf8_ok(s, n):
        wire_utf8_error(r, s, n, offset, field)
        _raise(r)
    return 0


cdef inline int _check_utf8(WireReader* r, const unsigned char* s, Py_ssize_t n,
                            const char* field) except -1:
    """Check the str field just read (it ends at r.pos)."""
    return _check_utf8_at(r, s, n, r.pos - n, field)

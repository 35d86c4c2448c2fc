# Shared C-level helpers for reading and writing the wire format
# (docs/PROTOCOL.md). Inline functions only: every compiled module that
# cimports this gets its own copy, so there is no cross-module call cost.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from cpython.exc cimport PyErr_Clear
from libc.string cimport memcpy

cdef enum:
    PROTOCOL_VERSION = 1
    PREFIX_SIZE = 4          # u32 length prefix
    HEADER_SIZE = 6          # prefix + version byte + type byte
    T_GOSSIP = 1
    T_PING = 2
    T_PONG = 3
    T_REPLICATE = 4
    T_REPLICATE_ACK = 5
    T_GOSSIP_BATCH = 6
    T_DIGEST = 7
    V_INT = 0
    V_BYTES = 1
    V_TOMBSTONE = 2          # a deleted key: the tag alone, no payload
    V_EXPIRES = 4            # an entry's value tag bit: a u64 expiry (unix ms) follows the tag
    MIN_ENTRY_SIZE = 21      # str16 key + u16 origin + u64 version + u64 stamp + tag (a tombstone)
    MIN_WATERMARK_SIZE = 10  # str16 origin + u64 stamp
    MIN_ORIGIN_SIZE = 2      # str16 origin in a batch's origin table
    MIN_FRAME_LENGTH = 2     # version + type
    DEFAULT_MAX_FRAME_SIZE = 1048576
    MAX_STR_SIZE = 65535     # str16 payload bytes
    MAX_ORIGINS = 65535      # u16 n_origins
    MAX_TYPE = 7             # highest known type code
    DIGEST_REPLY = 1         # Digest flags: bit 0
    DIGEST_MORE = 2          # bit 1
    DIGEST_DELTA = 4         # bit 2; the others must be 0

# Error codes recorded in WireReader.err (see wire_error_message for the text).
cdef enum:
    WE_OK = 0
    WE_TRUNCATED = 1         # a fixed-size field is cut short      a=needed b=left
    WE_OVERRUN = 2           # an inner length runs past the end     a=length b=left
    WE_UTF8 = 3              # invalid UTF-8 (offset: first bad byte)
    WE_TAG = 4               # unknown value tag                     a=tag
    WE_BOOL = 5              # bool byte not 0/1                     a=byte
    WE_ORIGIN_INDEX = 6      # origin index >= n_origins             a=index b=n_origins
    WE_COUNT = 7             # count the rest cannot hold            a=count b=left c=min item size
    WE_TRAILING = 8          # bytes left after the payload          a=left
    WE_LENGTH_MIN = 9        # length prefix < 2                     a=length
    WE_LENGTH_MAX = 10       # length prefix + 4 > max_frame_size    a=length b=max
    WE_LENGTH_MISMATCH = 11  # length prefix != buffer size - 4      a=length b=actual
    WE_VERSION = 12          # unknown protocol version              a=version
    WE_TYPE = 13             # unknown message type                  a=type
    WE_FLAGS = 14            # unknown bits in Digest flags          a=flags byte


cdef inline uint16_t rd16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t rd32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline uint64_t rd64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>rd32(p) << 32) | <uint64_t>rd32(p + 4)


# Byte-level primitives, in C: loads of native words, big-endian stores as one
# byte swap and one store (written byte by byte, gcc can merge adjacent ones
# into much longer code), and an ASCII check by overlapping word loads. Both
# compiled modules use these; the C code in _codec_c.pyx calls them by their
# C names (fg_*).
cdef extern from *:
    """
    #ifndef FASTGOSSIP_WIRE_PRIMITIVES
    #define FASTGOSSIP_WIRE_PRIMITIVES
    #include <string.h>
    #if PY_VERSION_HEX < 0x030B0000 && !defined(PYPY_VERSION) && !defined(Py_LIMITED_API)
    #include "longintrepr.h"
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define FGW_INLINE static inline __attribute__((always_inline))
    #else
    #define FGW_INLINE static CYTHON_INLINE
    #endif

    FGW_INLINE uint64_t fg_ld64(const unsigned char* p) {
        uint64_t w; memcpy(&w, p, 8); return w;
    }
    FGW_INLINE uint32_t fg_ld32(const unsigned char* p) {
        uint32_t w; memcpy(&w, p, 4); return w;
    }

    /* Big-endian stores as one byte swap and one store each (written byte by
       byte, adjacent ones can be merged by the vectoriser into much longer
       code). */
    FGW_INLINE void fg_wr16(unsigned char* p, uint16_t v) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) \
            && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap16(v); memcpy(p, &v, 2);
    #else
        p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
    #endif
    }
    FGW_INLINE void fg_wr32(unsigned char* p, uint32_t v) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) \
            && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap32(v); memcpy(p, &v, 4);
    #else
        p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
    #endif
    }
    FGW_INLINE void fg_wr64(unsigned char* p, uint64_t v) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) \
            && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v); memcpy(p, &v, 8);
    #else
        fg_wr32(p, (uint32_t)(v >> 32)); fg_wr32(p + 4, (uint32_t)v);
    #endif
    }


    FGW_INLINE int fg_is_ascii(const unsigned char* s, Py_ssize_t n) {
        if (n >= 8) {
            uint64_t acc = fg_ld64(s) | fg_ld64(s + n - 8);
            if (n > 16) {
                Py_ssize_t i;
                acc |= fg_ld64(s + 8) | fg_ld64(s + n - 16);
                for (i = 16; i < n - 16; i += 8) acc |= fg_ld64(s + i);
            }
            return (acc & 0x8080808080808080ULL) == 0;
        }
        if (n >= 4) return ((fg_ld32(s) | fg_ld32(s + n - 4)) & 0x80808080U) == 0;
        if (n > 0) return ((s[0] | s[n >> 1] | s[n - 1]) & 0x80) == 0;
        return 1;
    }

    /* A new int for v: PyLong_FromUnsignedLongLong, with the digits of the
       usual 1- and 2-digit values set directly on CPython < 3.12. */
    FGW_INLINE PyObject* fg_int(uint64_t v) {
    #if PY_VERSION_HEX < 0x030C0000 && !defined(PYPY_VERSION) && !defined(Py_LIMITED_API)
        if (v <= PyLong_MASK) return PyLong_FromLong((long)v);  /* small ints cached */
        if ((v >> (2 * PyLong_SHIFT)) == 0) {
            PyLongObject* r = _PyLong_New(2);
            if (r != NULL) {
                r->ob_digit[0] = (digit)(v & PyLong_MASK);
                r->ob_digit[1] = (digit)(v >> PyLong_SHIFT);
            }
            return (PyObject*)r;
        }
    #endif
        return PyLong_FromUnsignedLongLong(v);
    }

    /* 1 and *out = v when v is an exact int in [0, 2**64); else 0 (and no
       exception set). What a message may hold unboxed. */
    FGW_INLINE int fg_unbox_u64(PyObject* v, uint64_t* out) {
        unsigned long long x;
        if (!PyLong_CheckExact(v)) return 0;
    #if PY_VERSION_HEX < 0x030C0000 && !defined(PYPY_VERSION) && !defined(Py_LIMITED_API)
        {
            Py_ssize_t size = Py_SIZE(v);
            const digit* d = ((PyLongObject*)v)->ob_digit;
            if (size == 0) { *out = 0; return 1; }
            if (size == 1) { *out = d[0]; return 1; }
            if (size == 2) { *out = d[0] | ((uint64_t)d[1] << PyLong_SHIFT); return 1; }
            if (size < 0) return 0;
        }
    #endif
        x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = (uint64_t)x;
        return 1;
    }
    #endif  /* FASTGOSSIP_WIRE_PRIMITIVES */
    """
    uint64_t ld64 "fg_ld64"(const unsigned char* p) noexcept nogil
    uint32_t ld32 "fg_ld32"(const unsigned char* p) noexcept nogil
    void wr16 "fg_wr16"(unsigned char* p, uint16_t v) noexcept nogil
    void wr32 "fg_wr32"(unsigned char* p, uint32_t v) noexcept nogil
    void wr64 "fg_wr64"(unsigned char* p, uint64_t v) noexcept nogil
    bint is_ascii "fg_is_ascii"(const unsigned char* s, Py_ssize_t n) noexcept nogil
    object fg_int(uint64_t v)
    bint fg_unbox_u64(object v, uint64_t* out) noexcept


cdef inline unsigned char* wr_str(unsigned char* p, const char* s, Py_ssize_t n) noexcept nogil:
    """Write a str16 field; the caller has checked n <= 65535. Returns the end."""
    wr16(p, <uint16_t>n)
    memcpy(p + 2, s, n)
    return p + 2 + n


cdef inline unsigned char* wr_header(unsigned char* p, Py_ssize_t total, uint8_t mtype) noexcept nogil:
    """Write prefix, version and type for a frame of `total` bytes (prefix included)."""
    wr32(p, <uint32_t>(total - PREFIX_SIZE))
    p[4] = PROTOCOL_VERSION
    p[5] = mtype
    return p + HEADER_SIZE


cdef inline unsigned char* wr_bytes32(unsigned char* p, const char* s, Py_ssize_t n) noexcept nogil:
    """Write a bytes32 field; the caller has checked n <= 0xFFFFFFFF. Returns the end."""
    wr32(p, <uint32_t>n)
    memcpy(p + 4, s, n)
    return p + 4 + n


cdef inline unsigned char* wr_value_int(unsigned char* p, uint64_t v) noexcept nogil:
    """Write a value field holding an int (tag 0x00 + u64). Returns the end."""
    p[0] = V_INT
    wr64(p + 1, v)
    return p + 9


cdef inline unsigned char* wr_value_tombstone(unsigned char* p) noexcept nogil:
    """Write a value field holding a tombstone (tag 0x02 alone). Returns the end."""
    p[0] = V_TOMBSTONE
    return p + 1


cdef inline unsigned char* wr_value_bytes(unsigned char* p, const char* s, Py_ssize_t n) noexcept nogil:
    """Write a value field holding bytes (tag 0x01 + bytes32). Returns the end."""
    p[0] = V_BYTES
    return wr_bytes32(p + 1, s, n)


# ---------------------------------------------------------------------------
# Reading with bounds checks. A WireReader walks one frame; every rd_* function
# returns 0, or -1 after recording the first error in the reader (code, offset
# from the frame's first byte, field name, details). They never raise: the
# caller turns the record into an exception, e.g.
#     raise FrameError(wire_error_message(&r), r.err_offset)
# so that every module reports a malformed frame with the same words. While
# reading list items set r.item_group/r.item_index (and clear item_group
# after the loop): errors are then named "entries[3].key", "origins[0]"
# (field name "" names the item itself).

cdef struct WireReader:
    const unsigned char* buf   # first byte of the frame (the length prefix)
    Py_ssize_t pos             # next byte to read
    Py_ssize_t end             # one past the frame's last byte
    int err                    # WE_* code of the first error; WE_OK while none
    Py_ssize_t err_offset      # where it was found, from buf
    const char* err_field      # field name, e.g. "key"
    const char* err_group      # "entries", "origins", "watermarks" or NULL
    Py_ssize_t err_index       # index within err_group
    uint64_t err_a
    uint64_t err_b
    uint64_t err_c
    const char* item_group     # set while reading list items: errors are then
    Py_ssize_t item_index      # named "item_group[item_index].field"


# One GossipBatch entry as read from the frame, pointing into it.
cdef struct EntryView:
    const unsigned char* key   # UTF-8 bytes, not yet validated
    Py_ssize_t key_len
    Py_ssize_t key_offset      # frame offset of the key's first byte
    uint16_t origin_index      # < n_origins (checked)
    uint64_t version
    uint64_t stamp
    uint8_t tag                # V_INT, V_BYTES or V_TOMBSTONE (the expiry bit cleared)
    uint64_t expires           # unix ms after which the entry is expired; 0: never
    uint64_t ival              # the value when tag == V_INT
    const unsigned char* bval  # the value when tag == V_BYTES
    Py_ssize_t blen


cdef inline int wire_fail(WireReader* r, int code, Py_ssize_t offset, const char* field,
                          uint64_t a, uint64_t b, uint64_t c) noexcept nogil:
    """Record an error (the first one wins) and return -1."""
    if r.err == WE_OK:
        r.err = code
        r.err_offset = offset
        r.err_field = field
        r.err_group = r.item_group
        r.err_index = r.item_index
        r.err_a = a
        r.err_b = b
        r.err_c = c
    return -1


cdef inline int wire_init(WireReader* r, const unsigned char* buf, Py_ssize_t n) noexcept nogil:
    r.buf = buf
    r.pos = 0
    r.end = n
    r.err = WE_OK
    r.err_offset = 0
    r.err_field = NULL
    r.err_group = NULL
    r.err_index = -1
    r.err_a = r.err_b = r.err_c = 0
    r.item_group = NULL
    r.item_index = -1
    return 0


cdef inline int wire_check_length(WireReader* r, uint32_t length, uint64_t max_frame_size) noexcept nogil:
    """Check a length prefix on its own (what a stream decoder can do first).
    max_frame_size bounds the whole frame, the 4 prefix bytes included."""
    if length < MIN_FRAME_LENGTH:
        return wire_fail(r, WE_LENGTH_MIN, 0, "length", length, 0, 0)
    if <uint64_t>length + PREFIX_SIZE > max_frame_size:
        return wire_fail(r, WE_LENGTH_MAX, 0, "length", length, max_frame_size, 0)
    return 0


cdef inline int wire_open(WireReader* r, const unsigned char* buf, Py_ssize_t n,
                          uint64_t max_frame_size) noexcept nogil:
    """Start reading exactly one full frame buf[:n]. Checks the prefix, the
    version and the type; returns the type code (positioned at the payload)
    or -1."""
    cdef uint32_t length
    wire_init(r, buf, n)
    if n < PREFIX_SIZE:
        return wire_fail(r, WE_TRUNCATED, 0, "length prefix", PREFIX_SIZE, n, 0)
    length = rd32(buf)
    if wire_check_length(r, length, max_frame_size) < 0:
        return -1
    if <uint64_t>length + PREFIX_SIZE != <uint64_t>n:
        return wire_fail(r, WE_LENGTH_MISMATCH, 0, "length", length, n - PREFIX_SIZE, 0)
    if buf[4] != PROTOCOL_VERSION:
        return wire_fail(r, WE_VERSION, 4, "version", buf[4], 0, 0)
    if buf[5] < T_GOSSIP or buf[5] > MAX_TYPE:
        return wire_fail(r, WE_TYPE, 5, "type", buf[5], 0, 0)
    r.pos = HEADER_SIZE
    return buf[5]


cdef inline int rd_u8(WireReader* r, const char* field, uint8_t* out) noexcept nogil:
    if r.end - r.pos < 1:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 1, r.end - r.pos, 0)
    out[0] = r.buf[r.pos]
    r.pos += 1
    return 0


cdef inline int rd_u16(WireReader* r, const char* field, uint16_t* out) noexcept nogil:
    if r.end - r.pos < 2:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 2, r.end - r.pos, 0)
    out[0] = rd16(r.buf + r.pos)
    r.pos += 2
    return 0


cdef inline int rd_u32(WireReader* r, const char* field, uint32_t* out) noexcept nogil:
    if r.end - r.pos < 4:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 4, r.end - r.pos, 0)
    out[0] = rd32(r.buf + r.pos)
    r.pos += 4
    return 0


cdef inline int rd_u64(WireReader* r, const char* field, uint64_t* out) noexcept nogil:
    if r.end - r.pos < 8:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 8, r.end - r.pos, 0)
    out[0] = rd64(r.buf + r.pos)
    r.pos += 8
    return 0


cdef inline int rd_bool(WireReader* r, const char* field, bint* out) noexcept nogil:
    cdef uint8_t b
    if r.end - r.pos < 1:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 1, r.end - r.pos, 0)
    b = r.buf[r.pos]
    if b > 1:
        return wire_fail(r, WE_BOOL, r.pos, field, b, 0, 0)
    out[0] = b
    r.pos += 1
    return 0


cdef inline int rd_str(WireReader* r, const char* field, const unsigned char** s,
                       Py_ssize_t* n) noexcept nogil:
    """Read a str16 field (UTF-8 not validated: the caller decodes it)."""
    cdef Py_ssize_t length
    if r.end - r.pos < 2:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 2, r.end - r.pos, 0)
    length = rd16(r.buf + r.pos)
    if r.end - r.pos - 2 < length:
        return wire_fail(r, WE_OVERRUN, r.pos, field, length, r.end - r.pos - 2, 0)
    s[0] = r.buf + r.pos + 2
    n[0] = length
    r.pos += 2 + length
    return 0


cdef inline int rd_bytes32(WireReader* r, const char* field, const unsigned char** s,
                           Py_ssize_t* n) noexcept nogil:
    cdef uint32_t length
    if r.end - r.pos < 4:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 4, r.end - r.pos, 0)
    length = rd32(r.buf + r.pos)
    if <uint64_t>(r.end - r.pos - 4) < <uint64_t>length:
        return wire_fail(r, WE_OVERRUN, r.pos, field, length, r.end - r.pos - 4, 0)
    s[0] = r.buf + r.pos + 4
    n[0] = length
    r.pos += 4 + <Py_ssize_t>length
    return 0


cdef inline int rd_value(WireReader* r, const char* field, uint8_t* tag, uint64_t* ival,
                         const unsigned char** bval, Py_ssize_t* blen) noexcept nogil:
    """Read a value field: tag, then u64 (V_INT), bytes32 (V_BYTES) or nothing (V_TOMBSTONE)."""
    if r.end - r.pos < 1:
        return wire_fail(r, WE_TRUNCATED, r.pos, field, 1, r.end - r.pos, 0)
    tag[0] = r.buf[r.pos]
    if tag[0] == V_INT:
        r.pos += 1
        return rd_u64(r, field, ival)
    if tag[0] == V_BYTES:
        r.pos += 1
        return rd_bytes32(r, field, bval, blen)
    if tag[0] == V_TOMBSTONE:
        r.pos += 1
        bval[0] = NULL
        blen[0] = 0
        return 0
    return wire_fail(r, WE_TAG, r.pos, field, tag[0], 0, 0)


cdef inline int rd_count(WireReader* r, const char* field, uint64_t count,
                         Py_ssize_t min_item_size, Py_ssize_t count_offset) noexcept nogil:
    """Check that `count` items of at least `min_item_size` bytes each can fit
    in what is left; call it right after reading the count (at count_offset),
    before allocating anything for the items."""
    if count * <uint64_t>min_item_size > <uint64_t>(r.end - r.pos):
        return wire_fail(r, WE_COUNT, count_offset, field, count, r.end - r.pos,
                         min_item_size)
    return 0


cdef inline int rd_entry(WireReader* r, uint16_t n_origins, EntryView* e) noexcept nogil:
    """Read one GossipBatch entry (key, origin_index, version, stamp, value).
    Set r.item_group = "entries", r.item_index = i first so that errors are
    named "entries[i].key" etc.; reset r.item_group to NULL after the loop."""
    cdef Py_ssize_t at
    if rd_str(r, "key", &e.key, &e.key_len) < 0:
        return -1
    e.key_offset = r.pos - e.key_len
    at = r.pos
    if rd_u16(r, "origin_index", &e.origin_index) < 0:
        return -1
    if e.origin_index >= n_origins:
        return wire_fail(r, WE_ORIGIN_INDEX, at, "origin_index", e.origin_index, n_origins, 0)
    if rd_u64(r, "version", &e.version) < 0:
        return -1
    if rd_u64(r, "stamp", &e.stamp) < 0:
        return -1
    e.expires = 0
    if r.pos < r.end and r.buf[r.pos] & V_EXPIRES and r.buf[r.pos] < (V_EXPIRES | 2):
        # an expiring value: the tag, the u64 expiry, then the payload
        e.tag = r.buf[r.pos] & ~V_EXPIRES
        if r.end - r.pos < 9:
            return wire_fail(r, WE_TRUNCATED, r.pos + 1, "value", 8, r.end - r.pos - 1, 0)
        e.expires = rd64(r.buf + r.pos + 1)
        r.pos += 9
        if e.tag == V_INT:
            return rd_u64(r, "value", &e.ival)
        return rd_bytes32(r, "value", &e.bval, &e.blen)
    return rd_value(r, "value", &e.tag, &e.ival, &e.bval, &e.blen)


cdef inline int rd_end(WireReader* r, const char* message_name) noexcept nogil:
    """The payload must be consumed exactly."""
    if r.pos != r.end:
        return wire_fail(r, WE_TRAILING, r.pos, message_name, r.end - r.pos, 0, 0)
    return 0


cdef inline int wire_utf8_error(WireReader* r, const unsigned char* s, Py_ssize_t n,
                                Py_ssize_t offset, const char* field) noexcept:
    """Call after decoding s[:n] (at frame offset `offset`) as UTF-8 failed:
    clears the pending exception, records WE_UTF8 at the first bad byte and
    returns -1."""
    cdef Py_ssize_t start = 0
    PyErr_Clear()
    try:
        (<bytes>(<const char*>s)[:n]).decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
    except BaseException:
        PyErr_Clear()
    return wire_fail(r, WE_UTF8, offset + start, field, 0, 0, 0)


cdef inline str wire_error_message(WireReader* r):
    """The text of the recorded error, ending in "at offset N"."""
    cdef str name
    cdef int code = r.err
    if r.err_field == NULL:
        name = "?"
    else:
        name = (<bytes>r.err_field).decode("ascii")
    if r.err_group != NULL:
        # an empty field names the item itself: "origins[3]"
        name = "%s[%d]%s%s" % ((<bytes>r.err_group).decode("ascii"), r.err_index,
                               "." if name else "", name)
    if code == WE_TRUNCATED:
        text = "truncated %s: %d of %d bytes present" % (name, r.err_b, r.err_a)
    elif code == WE_OVERRUN:
        text = "%s length %d overruns the frame (%d bytes left)" % (name, r.err_a, r.err_b)
    elif code == WE_UTF8:
        text = "invalid UTF-8 in %s" % name
    elif code == WE_TAG:
        text = "unknown value tag %d in %s" % (r.err_a, name)
    elif code == WE_BOOL:
        text = "invalid bool byte %d in %s" % (r.err_a, name)
    elif code == WE_ORIGIN_INDEX:
        text = "%s %d out of range (%d origins)" % (name, r.err_a, r.err_b)
    elif code == WE_COUNT:
        text = "%s %d needs at least %d bytes, %d left" % (
            name, r.err_a, r.err_a * r.err_c, r.err_b)
    elif code == WE_TRAILING:
        text = "%d trailing bytes after the %s payload" % (r.err_a, name)
    elif code == WE_LENGTH_MIN:
        text = "frame length %d is below the minimum of 2" % r.err_a
    elif code == WE_LENGTH_MAX:
        text = "frame of %d bytes exceeds max_frame_size %d" % (r.err_a + PREFIX_SIZE, r.err_b)
    elif code == WE_LENGTH_MISMATCH:
        text = "length prefix says %d bytes follow but the frame holds %d" % (r.err_a, r.err_b)
    elif code == WE_VERSION:
        text = "unknown protocol version %d" % r.err_a
    elif code == WE_TYPE:
        text = "unknown message type %d" % r.err_a
    elif code == WE_FLAGS:
        text = "unknown digest flags %d" % r.err_a
    else:
        text = "malformed frame"
    return "%s at offset %d" % (text, r.err_offset)

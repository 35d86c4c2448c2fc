# cython: language_level=3
"""Compiled frame codec (docs/PROTOCOL.md). Pure-Python twin: _codec_py.py.

Encoding measures a message first (validating every field and computing the
exact frame size), then writes it into one bytes object allocated at its final
size; a batch's entries are written into working memory as they are measured,
and copied into the frame after its origin table. Decoding walks the frame
with the bounds-checked readers of _wire.pxd and builds the message objects
directly (no __init__ calls).

The common cases (exact str of ASCII text, int below 2**60, in-bounds fields)
take straight-line paths that hand anything else to the general code, so
results and errors are the same either way, and the same as the twin's.

The module is one compilation unit in several files, each with one job:
_messages_c.pxi (the message types), _codec_encode.pxi (messages to frames),
_codec_decode.pxi (frames to messages), _codec_stream.pxi (FrameDecoder), and
_codec_c_helpers.h (the small C helpers the hot paths inline); the wire
layout and its bounds-checked readers are in _wire.pxd, shared with the table.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_Append
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_Check,
    PyLong_CheckExact,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from fastgossip._wire cimport *

from fastgossip.errors import FrameError

include "_messages_c.pxi"


cdef extern from "_codec_c_helpers.h":
    bint FG_LIKELY(bint x) noexcept nogil
    int fg_u64_fast(object v, uint64_t* out) noexcept
    bint FG_SHARED_SCRATCH
    PyObject** fg_tuple_items(tuple t) noexcept
    const char* fg_str_fast(PyObject* s, Py_ssize_t* n) noexcept
    bint fg_int_fast(PyObject* v, uint64_t* out) noexcept
    unsigned char* fg_wr_str(unsigned char* q, const char* s, Py_ssize_t n) noexcept nogil
    void fg_fingerprint(const unsigned char* s, Py_ssize_t n, uint64_t* f0,
                        uint64_t* f1) noexcept nogil
    bint fg_same_bytes(const void* a, const void* b, Py_ssize_t n) noexcept nogil
    void fg_copy(void* dst, const void* src, Py_ssize_t n) noexcept nogil
    str fg_ascii_str(const unsigned char* s, Py_ssize_t n)
    ctypedef struct OriginPlan "fg_origin":
        const char* s
        Py_ssize_t n
        uint64_t f0, f1
    int fg_slot_bits(Py_ssize_t cap) noexcept nogil
    Py_ssize_t fg_find_origin(const OriginPlan* t, const uint16_t* slots, int bits,
                              const char* s, Py_ssize_t n, uint64_t f0,
                              uint64_t f1) noexcept nogil


cdef extern from "Python.h":
    # Declared without an exception clause so that failures can be turned
    # into the codec's own errors instead of propagating as they are.
    PyObject* _decode_utf8 "PyUnicode_DecodeUTF8"(const char* s, Py_ssize_t n, const char* errors)
    const char* _as_utf8 "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* n)
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object v)
    bint PyBool_Check(object o)
    PyTypeObject* _type_of "Py_TYPE"(PyObject* o) noexcept


__all__ = [
    "DEFAULT_MAX_FRAME_SIZE", "PROTOCOL_VERSION", "T_DIGEST", "T_GOSSIP", "T_GOSSIP_BATCH",
    "T_PING", "T_PONG", "T_REPLICATE", "T_REPLICATE_ACK", "Digest", "Entry", "FrameDecoder",
    "Gossip", "GossipBatch", "Message", "Ping", "Pong", "Replicate", "ReplicateAck", "decode",
    "digest_frames", "encode", "encode_many", "frame_type",
]

globals()["PROTOCOL_VERSION"] = PROTOCOL_VERSION
cdef object _DEFAULT_MAX = DEFAULT_MAX_FRAME_SIZE
globals()["DEFAULT_MAX_FRAME_SIZE"] = _DEFAULT_MAX
globals()["T_GOSSIP"] = T_GOSSIP
globals()["T_PING"] = T_PING
globals()["T_PONG"] = T_PONG
globals()["T_REPLICATE"] = T_REPLICATE
globals()["T_REPLICATE_ACK"] = T_REPLICATE_ACK
globals()["T_GOSSIP_BATCH"] = T_GOSSIP_BATCH
globals()["T_DIGEST"] = T_DIGEST

cdef uint64_t _U32_MAX = 0xFFFFFFFF
# Bytes a FrameDecoder keeps allocated between frames.
cdef Py_ssize_t _KEEP = 4096


include "_codec_encode.pxi"
include "_codec_decode.pxi"
include "_codec_stream.pxi"

# Shared C-level helpers for reading and writing the wire format
# (docs/PROTOCOL.md). Inline functions only: every compiled module that
# cimports this gets its own copy, so there is no cross-module call cost.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
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
    MIN_ENTRY_SIZE = 22      # str16 key + u16 origin + u64 version + u64 stamp + tag ... (minimum)
    MIN_WATERMARK_SIZE = 10  # str16 origin + u64 stamp


cdef inline uint16_t rd16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t rd32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline uint64_t rd64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>rd32(p) << 32) | <uint64_t>rd32(p + 4)


cdef inline void wr16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void wr32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void wr64(unsigned char* p, uint64_t v) noexcept nogil:
    wr32(p, <uint32_t>(v >> 32))
    wr32(p + 4, <uint32_t>v)


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

# Declarations of the compiled message types, so that other compiled modules
# (the LWW table) can create and read them without Python attribute lookups.

from libc.stdint cimport uint8_t, uint64_t

cdef class Message:
    cpdef tuple astuple(self)


# Entry and Gossip hold their int fields unboxed: a field whose bit is set in
# `_unboxed` lives in the uint64_t (_ival, _uversion, _ustamp) and its object
# slot is unused; otherwise the object slot holds what the caller gave (a
# bytes value, or a value the encoder will check and refuse). Decoding then
# makes no int object per field; the `value`, `version` and `stamp`
# properties make one when read.
cdef enum:
    U_VALUE = 1
    U_VERSION = 2
    U_STAMP = 4


cdef class Entry:
    cpdef tuple astuple(self)
    cdef readonly str key
    cdef readonly str origin
    cdef object _value
    cdef object _version
    cdef object _stamp
    cdef uint64_t _ival
    cdef uint64_t _uversion
    cdef uint64_t _ustamp
    cdef uint64_t _uexpires    # unix ms after which it is expired; 0: never
    cdef uint8_t _unboxed


cdef inline Entry new_entry(str key, str origin, object bvalue, uint64_t ival,
                            uint64_t version, uint64_t stamp):
    """A made Entry (decoded, or read from a table), its ints unboxed: the value
    is bvalue, a bytes object, or the int ival when bvalue is None."""
    cdef Entry e = Entry.__new__(Entry)
    e.key = key
    e.origin = origin
    e._uversion = version
    e._ustamp = stamp
    e._uexpires = 0
    if bvalue is None:
        e._ival = ival
        e._unboxed = U_VALUE | U_VERSION | U_STAMP
    else:
        e._value = bvalue
        e._unboxed = U_VERSION | U_STAMP
    return e


cdef inline Entry new_tombstone(str key, str origin, uint64_t version, uint64_t stamp):
    """A made Entry whose value is None: a deleted key."""
    cdef Entry e = Entry.__new__(Entry)
    e.key = key
    e.origin = origin
    e._uversion = version
    e._ustamp = stamp
    e._uexpires = 0
    e._unboxed = U_VERSION | U_STAMP
    return e


cdef class Gossip:
    cpdef tuple astuple(self)
    cdef readonly str sender_id
    cdef readonly str key
    cdef readonly str origin
    cdef object _value
    cdef object _version
    cdef uint64_t _ival
    cdef uint64_t _uversion
    cdef uint8_t _unboxed


cdef class Ping(Message):
    cdef readonly str sender_id
    cdef readonly object seq


cdef class Pong(Message):
    cdef readonly str sender_id
    cdef readonly object seq


cdef class Replicate(Message):
    cdef readonly str leader_id
    cdef readonly object index
    cdef readonly object term
    cdef readonly object checksum
    cdef readonly bytes payload


cdef class ReplicateAck(Message):
    cdef readonly str follower_id
    cdef readonly object index
    cdef readonly bint success


cdef class GossipBatch(Message):
    cdef readonly str sender_id
    cdef readonly tuple entries


cdef class Digest(Message):
    cdef readonly str sender_id
    cdef readonly tuple watermarks
    cdef readonly bint reply
    cdef readonly bint more
    cdef readonly bint delta

# Declarations of the compiled message types, so that other compiled modules
# (the LWW table) can create and read them without Python attribute lookups.

cdef class Message:
    cpdef tuple astuple(self)


cdef class Entry:
    cpdef tuple astuple(self)
    cdef readonly str key
    cdef readonly object value
    cdef readonly object version
    cdef readonly str origin
    cdef readonly object stamp


cdef class Gossip:
    cpdef tuple astuple(self)
    cdef readonly str sender_id
    cdef readonly str key
    cdef readonly object value
    cdef readonly object version
    cdef readonly str origin


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

# Compiled message types, included into _codec_c.pyx. Their pure-Python twins
# live in _messages_py.py and must behave identically: same constructor
# signatures, same repr, equality and hashing by (type, fields).

cimport cython


cdef inline str _fmt(object cls, tuple names, tuple values):
    return "%s(%s)" % (
        (<type>cls).__name__,
        ", ".join(["%s=%r" % (n, v) for n, v in zip(names, values)]),
    )


cdef inline object _eq(object a, object b):
    if type(a) is not type(b):
        return NotImplemented
    return a.astuple() == b.astuple()


cdef class Message:
    """Base of every message type: immutable, equal and hashed by its fields."""

    _fields = ()

    cpdef tuple astuple(self):
        return ()

    def __repr__(self):
        return _fmt(type(self), self._fields, self.astuple())

    def __eq__(self, other):
        return _eq(self, other)

    def __hash__(self):
        return hash((type(self).__name__,) + self.astuple())

    def __reduce__(self):
        return (type(self), self.astuple())


# fastgossip.Message, fastgossip.Entry, ... are the abstract types of
# _messages.py; every type here registers with its own (Entry and Gossip too,
# which have no Message base), as the twins do. (cdef classes exist before the
# module body runs, so the later ones can be named here.)
from fastgossip._messages import register as _register_abstract
_register_abstract(Message, Entry, Gossip, Ping, Pong, Replicate, ReplicateAck, GossipBatch, Digest)


# Entry, Gossip, Ping, Pong, Replicate and ReplicateAck hold only str, int and
# bytes, which cannot form reference cycles: they are left out of the cyclic
# GC (no_gc), which halves their allocation cost. (A value of another type
# that refers back to its message would leak rather than be collected.)

cdef inline str _text(object s, str name):
    """A str argument as an exact str (a subclass is copied to one), or the
    TypeError the twins raise."""
    if PyUnicode_CheckExact(s):
        return <str>s
    if isinstance(s, str):
        return str.__str__(s)
    raise TypeError("Argument '%s' has incorrect type (expected str, got %s)"
                    % (name, type(s).__name__))


cdef inline int _init_once(object first_field, object self) except -1:
    """Messages are immutable: __init__ may not run again on a made one (the
    table's merge keeps pointers into an Entry's fields while it runs)."""
    if first_field is not None:
        raise TypeError("%s is immutable: __init__ runs once" % type(self).__name__)
    return 0


# Their int fields are held unboxed (see _codec_c.pxd): these helpers set one
# from what a caller gave and read one back as an object.

cdef inline uint8_t _set_u64(object v, uint64_t* raw, uint8_t bit) noexcept:
    """bit when v is an exact int in [0, 2**64), now stored in *raw; else 0
    (the caller keeps v as it is, for the encoder to check)."""
    return bit if fg_unbox_u64(v, raw) else 0


cdef inline object _get_u64_field(uint8_t unboxed, uint8_t bit, uint64_t raw, object boxed):
    return fg_int(raw) if unboxed & bit else boxed


cdef inline uint64_t _check_expires(object expires) except? 0:
    if type(expires) is bool or not isinstance(expires, int):
        raise TypeError(f"expires must be int, not {type(expires).__name__}")
    if not 0 <= expires < (1 << 64):
        raise ValueError(f"expires must be in range [0, 2**64), got {expires}")
    return expires


def _entry_with_expiry(key, value, version, origin, stamp, expires):
    return Entry(key, value, version, origin, stamp, expires=expires)


@cython.freelist(512)
@cython.no_gc
cdef class Entry:
    """One LWW table entry: key, value, version, origin and stamp.

    ``value`` is an int, bytes, or None for a tombstone (a deleted key).
    ``stamp`` is the origin's clock reading when the entry was written; the
    per-origin maximum stamp is what digests carry. It defaults to ``version``.
    ``expires`` (keyword): the unix time in milliseconds after which the entry
    is expired (0: never); not part of ``astuple()``, part of equality.
    """

    _fields = ("key", "value", "version", "origin", "stamp")

    def __init__(self, key, object value, object version, origin="", object stamp=None, *,
                 object expires=0):
        _init_once(self.key, self)
        self._uexpires = _check_expires(expires)
        key = _text(key, "key")
        origin = _text(origin, "origin")
        cdef uint8_t u = _set_u64(value, &self._ival, U_VALUE)
        u |= _set_u64(version, &self._uversion, U_VERSION)
        if stamp is None:
            stamp = version
        u |= _set_u64(stamp, &self._ustamp, U_STAMP)
        self._value = None if u & U_VALUE else value
        self._version = None if u & U_VERSION else version
        self._stamp = None if u & U_STAMP else stamp
        self._unboxed = u
        self.key = key
        self.origin = origin

    @property
    def value(self):
        return _get_u64_field(self._unboxed, U_VALUE, self._ival, self._value)

    @property
    def version(self):
        return _get_u64_field(self._unboxed, U_VERSION, self._uversion, self._version)

    @property
    def stamp(self):
        return _get_u64_field(self._unboxed, U_STAMP, self._ustamp, self._stamp)

    @property
    def expires(self):
        return fg_int(self._uexpires)

    cpdef tuple astuple(self):
        return (self.key, self.value, self.version, self.origin, self.stamp)

    # Hot type: no Message base so that it can keep a freelist.
    def __repr__(self):
        text = _fmt(type(self), self._fields, self.astuple())
        return text[:len(text) - 1] + f", expires={self._uexpires})" if self._uexpires else text

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        return (self.astuple() == other.astuple()
                and self._uexpires == (<Entry>other)._uexpires)

    def __hash__(self):
        return hash((type(self).__name__,) + self.astuple() + (self._uexpires,))

    def __reduce__(self):
        if self._uexpires:
            return (_entry_with_expiry, self.astuple() + (self._uexpires,))
        return (type(self), self.astuple())


@cython.freelist(256)
@cython.no_gc
cdef class Gossip:
    """A single key/value update (the reference's Gossip message)."""

    _fields = ("sender_id", "key", "value", "version", "origin")

    def __init__(self, sender_id, key, object value, object version, origin=""):
        _init_once(self.sender_id, self)
        sender_id = _text(sender_id, "sender_id")
        key = _text(key, "key")
        origin = _text(origin, "origin")
        cdef uint8_t u = _set_u64(value, &self._ival, U_VALUE)
        u |= _set_u64(version, &self._uversion, U_VERSION)
        self._value = None if u & U_VALUE else value
        self._version = None if u & U_VERSION else version
        self._unboxed = u
        self.sender_id = sender_id
        self.key = key
        self.origin = origin

    @property
    def value(self):
        return _get_u64_field(self._unboxed, U_VALUE, self._ival, self._value)

    @property
    def version(self):
        return _get_u64_field(self._unboxed, U_VERSION, self._uversion, self._version)

    cpdef tuple astuple(self):
        return (self.sender_id, self.key, self.value, self.version, self.origin)

    # Hot type: no Message base so that it can keep a freelist.
    def __repr__(self):
        return _fmt(type(self), self._fields, self.astuple())

    def __eq__(self, other):
        return _eq(self, other)

    def __hash__(self):
        return hash((type(self).__name__,) + self.astuple())

    def __reduce__(self):
        return (type(self), self.astuple())


@cython.no_gc
cdef class Ping(Message):
    """Liveness probe; answered by a Pong with the same seq."""

    _fields = ("sender_id", "seq")

    def __init__(self, sender_id, object seq):
        _init_once(self.sender_id, self)
        self.sender_id = _text(sender_id, "sender_id")
        self.seq = seq

    cpdef tuple astuple(self):
        return (self.sender_id, self.seq)



@cython.no_gc
cdef class Pong(Message):
    """Answer to a Ping, echoing its seq."""

    _fields = ("sender_id", "seq")

    def __init__(self, sender_id, object seq):
        _init_once(self.sender_id, self)
        self.sender_id = _text(sender_id, "sender_id")
        self.seq = seq

    cpdef tuple astuple(self):
        return (self.sender_id, self.seq)



@cython.no_gc
cdef class Replicate(Message):
    """A replication log entry offered by a leader."""

    _fields = ("leader_id", "index", "term", "checksum", "payload")

    def __init__(self, leader_id, object index, object term, object checksum,
                 bytes payload not None=b""):
        _init_once(self.leader_id, self)
        self.leader_id = _text(leader_id, "leader_id")
        self.index = index
        self.term = term
        self.checksum = checksum
        self.payload = payload

    cpdef tuple astuple(self):
        return (self.leader_id, self.index, self.term, self.checksum, self.payload)



@cython.no_gc
cdef class ReplicateAck(Message):
    """A follower's verdict on one Replicate."""

    _fields = ("follower_id", "index", "success")

    def __init__(self, follower_id, object index, bint success):
        _init_once(self.follower_id, self)
        self.follower_id = _text(follower_id, "follower_id")
        self.index = index
        self.success = success

    cpdef tuple astuple(self):
        return (self.follower_id, self.index, bool(self.success))



cdef class GossipBatch(Message):
    """Many entries in one frame: what a delta is sent as."""

    _fields = ("sender_id", "entries")

    def __init__(self, sender_id, entries=()):
        _init_once(self.sender_id, self)
        self.sender_id = _text(sender_id, "sender_id")
        self.entries = tuple(entries)

    cpdef tuple astuple(self):
        return (self.sender_id, self.entries)



cdef class Digest(Message):
    """Per-origin high-water marks: ((origin, max_stamp), ...).

    ``reply=True`` asks the receiver to answer with its delta *and* its own
    digest (push-pull); ``reply=False`` asks for the delta only. ``more=True``
    says that more parts of this digest follow (one too large for a frame is
    sent in parts, see ``digest_frames``): the receiver answers after the last.
    ``delta=True``: the watermarks are the changes since the sender's previous
    digest on this connection (stamp 0: the origin left the digest).
    """

    _fields = ("sender_id", "watermarks", "reply", "more", "delta")

    def __init__(self, sender_id, watermarks=(), bint reply=False, bint more=False,
                 bint delta=False):
        _init_once(self.sender_id, self)
        self.sender_id = _text(sender_id, "sender_id")
        if isinstance(watermarks, dict):
            watermarks = watermarks.items()
        self.watermarks = tuple([tuple(p) for p in watermarks])
        self.reply = reply
        self.more = more
        self.delta = delta

    cpdef tuple astuple(self):
        return (self.sender_id, self.watermarks, bool(self.reply), bool(self.more),
                bool(self.delta))


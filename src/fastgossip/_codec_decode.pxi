# The decoder: frames to messages (decode, digest_frames, frame_type).
# Included by _codec_c.pyx (one module): see its docstring.

# ---------------------------------------------------------------------------
# Decoding.

cdef struct StrCache:
    # The last short str decoded for a sender_id, with its UTF-8 bytes.
    PyObject* obj            # owned reference, or NULL
    Py_ssize_t n
    unsigned char data[48]


cdef StrCache _module_cache
_module_cache.obj = NULL
_module_cache.n = 0


cdef int _raise(WireReader* r) except -1:
    raise FrameError(wire_error_message(r), r.err_offset)


cdef str _dec_utf8(WireReader* r, const unsigned char* s, Py_ssize_t n, Py_ssize_t offset,
               const char* field):
    cdef PyObject* o
    cdef str res
    o = _decode_utf8(<const char*>s, n, NULL)
    if o == NULL:
        wire_utf8_error(r, s, n, offset, field)
        _raise(r)
    res = <str><object>o
    Py_DECREF(res)
    return res


cdef inline str _dec_str(WireReader* r, const unsigned char* s, Py_ssize_t n, Py_ssize_t offset,
                         const char* field):
    """A str field s[:n] at frame offset `offset`. ASCII text (checked a word
    at a time) is copied into a new str: what the UTF-8 decoder would build,
    without its overhead."""
    if FG_LIKELY(is_ascii(s, n)):
        return fg_ascii_str(s, n)
    return _dec_utf8(r, s, n, offset, field)


cdef inline str _dec_sender(WireReader* r, const unsigned char* s, Py_ssize_t n,
                            StrCache* cache, const char* field):
    cdef str res
    if cache.obj != NULL and cache.n == n and fg_same_bytes(cache.data, s, n):
        return <str><object>cache.obj
    res = _dec_str(r, s, n, r.pos - n, field)
    if n <= 48:
        Py_XDECREF(cache.obj)
        Py_INCREF(res)
        cache.obj = <PyObject*>res
        cache.n = n
        memcpy(cache.data, s, n)
    return res


cdef inline Gossip _new_gossip(str sender, str key, const unsigned char* bval, Py_ssize_t blen,
                               uint64_t ival, uint64_t version, str origin):
    """A decoded Gossip: a bytes value bval[:blen], or the int ival when bval is NULL."""
    cdef Gossip g = Gossip.__new__(Gossip)
    g.sender_id = sender
    g.key = key
    if bval == NULL:
        g._ival = ival
        g._unboxed = U_VALUE | U_VERSION
    else:
        g._value = PyBytes_FromStringAndSize(<const char*>bval, blen)
        g._unboxed = U_VERSION
    g._uversion = version
    g.origin = origin
    return g


cdef object _d_gossip(WireReader* r, StrCache* cache):
    cdef Gossip g
    cdef const unsigned char* s = NULL
    cdef const unsigned char* ss = NULL
    cdef Py_ssize_t n = 0, sn = 0
    cdef uint8_t tag = 0
    cdef uint64_t ival = 0, version = 0
    cdef const unsigned char* bval = NULL
    cdef Py_ssize_t blen = 0
    if rd_str(r, "sender_id", &ss, &sn) < 0:
        _raise(r)
    sender = _dec_sender(r, ss, sn, cache, "sender_id")
    if rd_str(r, "key", &s, &n) < 0:
        _raise(r)
    key = _dec_str(r, s, n, r.pos - n, "key")
    if rd_value(r, "value", &tag, &ival, &bval, &blen) < 0:
        _raise(r)
    if rd_u64(r, "version", &version) < 0:
        _raise(r)
    if rd_str(r, "origin", &s, &n) < 0:
        _raise(r)
    if n == sn and fg_same_bytes(s, ss, n):
        origin = sender
    else:
        origin = _dec_str(r, s, n, r.pos - n, "origin")
    if rd_end(r, "Gossip") < 0:
        _raise(r)
    if tag == V_INT:
        bval = NULL
    elif tag == V_TOMBSTONE:
        g = _new_gossip(sender, key, NULL, 0, 0, version, origin)
        g._value = None
        g._unboxed = U_VERSION
        return g
    return _new_gossip(sender, key, bval, blen, ival, version, origin)


cdef object _d_ping(WireReader* r, StrCache* cache, bint pong):
    cdef const unsigned char* s = NULL
    cdef Py_ssize_t n = 0
    cdef uint64_t seq = 0
    cdef Ping pi
    cdef Pong po
    if rd_str(r, "sender_id", &s, &n) < 0:
        _raise(r)
    sender = _dec_sender(r, s, n, cache, "sender_id")
    if rd_u64(r, "seq", &seq) < 0:
        _raise(r)
    if rd_end(r, "Pong" if pong else "Ping") < 0:
        _raise(r)
    if pong:
        po = Pong.__new__(Pong)
        po.sender_id = sender
        po.seq = fg_int(seq)
        return po
    pi = Ping.__new__(Ping)
    pi.sender_id = sender
    pi.seq = fg_int(seq)
    return pi


cdef object _d_replicate(WireReader* r, StrCache* cache):
    cdef const unsigned char* s = NULL
    cdef Py_ssize_t n = 0
    cdef uint64_t index = 0, term = 0, checksum = 0
    cdef Replicate m
    if rd_str(r, "leader_id", &s, &n) < 0:
        _raise(r)
    leader = _dec_sender(r, s, n, cache, "leader_id")
    if (rd_u64(r, "index", &index) < 0 or rd_u64(r, "term", &term) < 0
            or rd_u64(r, "checksum", &checksum) < 0 or rd_bytes32(r, "payload", &s, &n) < 0
            or rd_end(r, "Replicate") < 0):
        _raise(r)
    m = Replicate.__new__(Replicate)
    m.leader_id = leader
    m.index = fg_int(index)
    m.term = fg_int(term)
    m.checksum = fg_int(checksum)
    m.payload = PyBytes_FromStringAndSize(<const char*>s, n)
    return m


cdef object _d_ack(WireReader* r, StrCache* cache):
    cdef const unsigned char* s = NULL
    cdef Py_ssize_t n = 0
    cdef uint64_t index = 0
    cdef bint success = 0
    cdef ReplicateAck m
    if rd_str(r, "follower_id", &s, &n) < 0:
        _raise(r)
    follower = _dec_sender(r, s, n, cache, "follower_id")
    if (rd_u64(r, "index", &index) < 0 or rd_bool(r, "success", &success) < 0
            or rd_end(r, "ReplicateAck") < 0):
        _raise(r)
    m = ReplicateAck.__new__(ReplicateAck)
    m.follower_id = follower
    m.index = fg_int(index)
    m.success = success
    return m


cdef object _d_batch(WireReader* r, StrCache* cache):
    cdef const unsigned char* ss = NULL
    cdef const unsigned char* s = NULL
    cdef Py_ssize_t sn = 0, n = 0, at, i
    cdef uint16_t n_origins = 0
    cdef uint32_t n_entries = 0
    cdef tuple origins, entries
    cdef EntryView ev
    cdef Entry e
    cdef object o
    cdef uint8_t tag
    cdef const unsigned char* q
    cdef const unsigned char* kp = NULL
    cdef Py_ssize_t left, klen = 0
    cdef uint16_t oi = 0
    cdef uint64_t version = 0, stamp = 0, ival = 0, expires = 0
    cdef GossipBatch b
    if rd_str(r, "sender_id", &ss, &sn) < 0:
        _raise(r)
    sender = _dec_sender(r, ss, sn, cache, "sender_id")
    at = r.pos
    if (rd_u16(r, "n_origins", &n_origins) < 0
            or rd_count(r, "n_origins", n_origins, MIN_ORIGIN_SIZE, at) < 0):
        _raise(r)
    origins = PyTuple_New(n_origins)
    r.item_group = "origins"
    for i in range(n_origins):
        r.item_index = i
        if rd_str(r, "", &s, &n) < 0:
            _raise(r)
        if n == sn and fg_same_bytes(s, ss, n):
            o = sender
        else:
            o = _dec_str(r, s, n, r.pos - n, "")
        Py_INCREF(o)
        PyTuple_SET_ITEM(origins, i, o)
    r.item_group = NULL
    at = r.pos
    if (rd_u32(r, "n_entries", &n_entries) < 0
            or rd_count(r, "n_entries", n_entries, MIN_ENTRY_SIZE, at) < 0):
        _raise(r)
    entries = PyTuple_New(n_entries)
    memset(&ev, 0, sizeof(ev))
    for i in range(n_entries):
        # an entry of the usual shape read inline, anything else by rd_entry
        q = r.buf + r.pos
        left = r.end - r.pos - 2 - 19 - 8     # key length, fixed fields, an int value
        if left >= 0:
            klen = rd16(q)
            left -= klen
            kp = q + 2
            q += 2 + klen
        if left >= 0 and rd16(q) < n_origins and q[18] == V_INT:
            oi = rd16(q)
            version = rd64(q + 2)
            stamp = rd64(q + 10)
            ival = rd64(q + 19)
            r.pos = (q + 27) - r.buf
            tag = V_INT
            expires = 0
        else:
            r.item_group = "entries"
            r.item_index = i
            if rd_entry(r, n_origins, &ev) < 0:
                _raise(r)
            r.item_group = NULL
            kp = ev.key
            klen = ev.key_len
            oi = ev.origin_index
            version = ev.version
            stamp = ev.stamp
            tag = ev.tag
            ival = ev.ival
            expires = ev.expires
        # what new_entry (_codec_c.pxd) does, written out: through the helper
        # this loop measured ~10% slower (30.5 -> 33.8 ns per entry)
        e = Entry.__new__(Entry)
        if FG_LIKELY(is_ascii(kp, klen)):
            e.key = fg_ascii_str(kp, klen)
        else:
            r.item_group = "entries"
            r.item_index = i
            e.key = _dec_utf8(r, kp, klen, kp - r.buf, "key")
            r.item_group = NULL
        e.origin = <str><object>PyTuple_GET_ITEM(origins, oi)
        e._uversion = version
        e._ustamp = stamp
        e._uexpires = expires
        if tag == V_INT:
            e._ival = ival
            e._unboxed = U_VALUE | U_VERSION | U_STAMP
        elif tag == V_BYTES:
            e._value = PyBytes_FromStringAndSize(<const char*>ev.bval, ev.blen)
            e._unboxed = U_VERSION | U_STAMP
        else:  # a tombstone: e._value stays None
            e._unboxed = U_VERSION | U_STAMP
        Py_INCREF(e)
        PyTuple_SET_ITEM(entries, i, e)
    if rd_end(r, "GossipBatch") < 0:
        _raise(r)
    b = GossipBatch.__new__(GossipBatch)
    b.sender_id = sender
    b.entries = entries
    return b


cdef object _d_digest(WireReader* r, StrCache* cache):
    cdef const unsigned char* s = NULL
    cdef Py_ssize_t n = 0, at, i
    cdef uint8_t flags = 0
    cdef uint32_t count = 0
    cdef uint64_t stamp = 0
    cdef tuple wms, pair
    cdef Digest d
    if rd_str(r, "sender_id", &s, &n) < 0:
        _raise(r)
    sender = _dec_sender(r, s, n, cache, "sender_id")
    if rd_u8(r, "flags", &flags) < 0:
        _raise(r)
    if flags & ~(DIGEST_REPLY | DIGEST_MORE | DIGEST_DELTA):
        wire_fail(r, WE_FLAGS, r.pos - 1, "flags", flags, 0, 0)
        _raise(r)
    at = r.pos
    if (rd_u32(r, "n_watermarks", &count) < 0
            or rd_count(r, "n_watermarks", count, MIN_WATERMARK_SIZE, at) < 0):
        _raise(r)
    wms = PyTuple_New(count)
    r.item_group = "watermarks"
    for i in range(count):
        r.item_index = i
        if rd_str(r, "origin", &s, &n) < 0:
            _raise(r)
        origin = _dec_str(r, s, n, r.pos - n, "origin")
        if rd_u64(r, "stamp", &stamp) < 0:
            _raise(r)
        pair = (origin, fg_int(stamp))
        Py_INCREF(pair)
        PyTuple_SET_ITEM(wms, i, pair)
    r.item_group = NULL
    if rd_end(r, "Digest") < 0:
        _raise(r)
    d = Digest.__new__(Digest)
    d.sender_id = sender
    d.watermarks = wms
    d.reply = flags & DIGEST_REPLY
    d.more = (flags & DIGEST_MORE) != 0
    d.delta = (flags & DIGEST_DELTA) != 0
    return d


cdef object _decode_gossip(const unsigned char* b, Py_ssize_t n, StrCache* cache):
    """A Gossip frame b[:n] (header and length prefix already checked) whose
    fields are all in bounds and whose text is ASCII, decoded straight; None
    for anything else (the exact reader, _d_gossip, then decodes it or says
    what is wrong)."""
    cdef Py_ssize_t pos = HEADER_SIZE, sn, kn, on, blen = 0
    cdef const unsigned char* sp
    cdef const unsigned char* kp
    cdef const unsigned char* op
    cdef const unsigned char* bval = NULL
    cdef uint8_t tag
    cdef uint64_t ival = 0, version
    cdef str sender
    if n - pos < 2:
        return None
    sn = rd16(b + pos)
    pos += 2
    if n - pos < sn + 2:
        return None
    sp = b + pos
    pos += sn
    kn = rd16(b + pos)
    pos += 2
    if n - pos < kn + 1:
        return None
    kp = b + pos
    pos += kn
    tag = b[pos]
    pos += 1
    if tag == V_INT:
        if n - pos < 8 + 10:
            return None
        ival = rd64(b + pos)
        pos += 8
    elif tag == V_BYTES:
        if n - pos < 4 + 10:
            return None
        blen = rd32(b + pos)
        pos += 4
        if n - pos - 10 < blen:
            return None
        bval = b + pos
        pos += blen
    else:
        return None
    version = rd64(b + pos)
    on = rd16(b + pos + 8)
    pos += 10
    if n - pos != on:
        return None
    op = b + pos
    if not (is_ascii(kp, kn) and is_ascii(op, on)):
        return None
    if cache.obj != NULL and cache.n == sn and fg_same_bytes(cache.data, sp, sn):
        sender = <str>cache.obj
    elif is_ascii(sp, sn):
        sender = fg_ascii_str(sp, sn)
        if sn <= 48:
            Py_XDECREF(cache.obj)
            Py_INCREF(sender)
            cache.obj = <PyObject*>sender
            cache.n = sn
            memcpy(cache.data, sp, sn)
    else:
        return None
    if on == 0:
        origin = ""
    elif on == sn and fg_same_bytes(op, sp, sn):
        origin = sender
    else:
        origin = fg_ascii_str(op, on)
    return _new_gossip(sender, fg_ascii_str(kp, kn) if kn else "", bval, blen, ival, version,
                       origin)


cdef object _decode_frame(const unsigned char* buf, Py_ssize_t n, uint64_t max_frame_size,
                          StrCache* cache):
    cdef WireReader r
    cdef int t
    cdef object o
    if (n >= HEADER_SIZE and buf[5] == T_GOSSIP and buf[4] == PROTOCOL_VERSION
            and <uint64_t>rd32(buf) + PREFIX_SIZE == <uint64_t>n
            and <uint64_t>rd32(buf) + PREFIX_SIZE <= max_frame_size):
        o = _decode_gossip(buf, n, cache)
        if o is not None:
            return o
    t = wire_open(&r, buf, n, max_frame_size)
    if t == T_GOSSIP:
        return _d_gossip(&r, cache)
    if t == T_GOSSIP_BATCH:
        return _d_batch(&r, cache)
    if t == T_PING or t == T_PONG:
        return _d_ping(&r, cache, t == T_PONG)
    if t == T_DIGEST:
        return _d_digest(&r, cache)
    if t == T_REPLICATE:
        return _d_replicate(&r, cache)
    if t == T_REPLICATE_ACK:
        return _d_ack(&r, cache)
    _raise(&r)


cdef int _get_buffer(object data, Py_buffer* view, const char* what) except -1:
    if not PyObject_CheckBuffer(data):
        raise TypeError("%s() needs a bytes-like object, not %s"
                        % ((<bytes>what).decode(), type(data).__name__))
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except BufferError:
        # not contiguous: read a copy (the view keeps it alive)
        PyObject_GetBuffer(memoryview(data).tobytes(), view, PyBUF_SIMPLE)
    return 0


cdef uint64_t _check_max(object max_frame_size) except? 0:
    if type(max_frame_size) is bool or not isinstance(max_frame_size, int):
        raise TypeError("max_frame_size must be int, not %s" % type(max_frame_size).__name__)
    if not (MIN_FRAME_LENGTH <= max_frame_size <= _U32_MAX):
        raise ValueError("max_frame_size must be in [2, 4294967295], got %d"
                         % int.__int__(max_frame_size))
    return <uint64_t>max_frame_size


@cython.binding(False)
@cython.embedsignature(False)
def decode(frame, max_frame_size=_DEFAULT_MAX):
    """decode(frame, max_frame_size=DEFAULT_MAX_FRAME_SIZE)

    Decode exactly one full frame (length prefix included) from any buffer.

    Raises FrameError (a ValueError) for anything malformed.
    """
    cdef Py_buffer view
    cdef uint64_t limit = DEFAULT_MAX_FRAME_SIZE
    if max_frame_size is not _DEFAULT_MAX:
        limit = _check_max(max_frame_size)
    if PyBytes_CheckExact(frame):
        return _decode_frame(<const unsigned char*>PyBytes_AS_STRING(frame),
                             PyBytes_GET_SIZE(frame), limit, &_module_cache)
    _get_buffer(frame, &view, "decode")
    try:
        return _decode_frame(<const unsigned char*>view.buf, view.len, limit, &_module_cache)
    finally:
        PyBuffer_Release(&view)


def digest_frames(sender_id, watermarks, reply, max_frame_size, delta=False) -> list:
    """The Digest of ``watermarks`` (a dict or (origin, stamp) pairs) as encoded
    frames of at most ``max_frame_size`` bytes each (prefix included): one
    frame when it fits (one encode call), else parts in order, every one but
    the last with ``more=True``, each with ``reply`` and ``delta``. ValueError
    when one watermark alone cannot fit a frame.
    """
    limit = _check_max(max_frame_size)
    msg = Digest(sender_id, watermarks, reply, False, delta)
    frame = encode(msg)
    if len(frame) <= limit:
        return [frame]
    base = 13 + ((frame[6] << 8) | frame[7])  # header, sender, flags, count
    if base > limit:
        raise ValueError(
            f"a Digest from {msg.sender_id!r} needs a {base}-byte frame, more than "
            f"max_frame_size {limit}"
        )
    parts = []
    part = []
    size = base
    for pair in msg.watermarks:
        item = 10 + len(pair[0].encode("utf-8"))
        if base + item > limit:
            raise ValueError(
                f"the watermark of origin {pair[0]!r} needs a {base + item}-byte Digest frame, "
                f"more than max_frame_size {limit}"
            )
        if size + item > limit:
            parts.append(part)
            part = []
            size = base
        part.append(pair)
        size += item
    parts.append(part)
    last = len(parts) - 1
    return [encode(Digest(msg.sender_id, p, reply, i < last, delta))
            for i, p in enumerate(parts)]


@cython.binding(False)
@cython.always_allow_keywords(False)
def frame_type(frame) -> int:
    """The type byte of a full frame (FrameError if it is too short to hold one)."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef int t
    _get_buffer(frame, &view, "frame_type")
    try:
        n = view.len
        if n < HEADER_SIZE:
            if n < PREFIX_SIZE:
                raise FrameError("truncated length prefix: %d of 4 bytes present at offset 0"
                                 % n, 0)
            if n < 5:
                raise FrameError("truncated version: 0 of 1 bytes present at offset 4", 4)
            raise FrameError("truncated type: 0 of 1 bytes present at offset 5", 5)
        t = (<const unsigned char*>view.buf)[5]
    finally:
        PyBuffer_Release(&view)
    return t

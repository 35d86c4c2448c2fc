# The encoder: messages to frames (encode, encode_many) and their errors.
# Included by _codec_c.pyx (one module): see its docstring.

# ---------------------------------------------------------------------------
# Encode-time errors (cold paths). "where" names the field the way the
# Python twin does: "Gossip.key", "GossipBatch.entries[3].origin".

cdef str _where(const char* cls, const char* field, Py_ssize_t index, const char* sub):
    cdef str w = "%s.%s" % ((<bytes>cls).decode(), (<bytes>field).decode())
    if index >= 0:
        w = "%s[%d]" % (w, index)
    if sub != NULL:
        w = "%s.%s" % (w, (<bytes>sub).decode())
    return w


cdef int _type_error(object v, str expected, const char* cls, const char* field,
                     Py_ssize_t index, const char* sub) except -1:
    raise TypeError("%s must be %s, not %s"
                    % (_where(cls, field, index, sub), expected, type(v).__name__))


cdef int _range_error(object v, const char* cls, const char* field, Py_ssize_t index,
                      const char* sub) except -1:
    cdef object bits = int.bit_length(v)
    text = int.__repr__(v) if bits <= 128 else "an int of %d bits" % bits
    raise ValueError("%s must be in range [0, 2**64), got %s"
                     % (_where(cls, field, index, sub), text))


cdef int _utf8_error(object s, const char* cls, const char* field, Py_ssize_t index,
                     const char* sub) except -1:
    PyErr_Clear()
    try:
        str.encode(s, "utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("%s cannot be encoded as UTF-8: %s"
                         % (_where(cls, field, index, sub), exc)) from None
    raise ValueError("%s cannot be encoded as UTF-8" % _where(cls, field, index, sub))


cdef int _long_str_error(Py_ssize_t n, const char* cls, const char* field, Py_ssize_t index,
                         const char* sub) except -1:
    raise ValueError("%s is %d bytes in UTF-8, more than the 65535 a str field holds"
                     % (_where(cls, field, index, sub), n))


cdef int _get_str_slow(object s, const char** p, Py_ssize_t* n, const char* cls,
                      const char* field, Py_ssize_t index, const char* sub) except -1:
    if not PyUnicode_Check(s):
        return _type_error(s, "str", cls, field, index, sub)
    p[0] = _as_utf8(s, n)
    if p[0] == NULL:
        return _utf8_error(s, cls, field, index, sub)
    if n[0] > MAX_STR_SIZE:
        return _long_str_error(n[0], cls, field, index, sub)
    return 0


cdef inline int _get_str(object s, const char** p, Py_ssize_t* n, const char* cls,
                         const char* field, Py_ssize_t index, const char* sub) except -1:
    """UTF-8 pointer and size of a str field (valid while s lives)."""
    p[0] = fg_str_fast(<PyObject*>s, n)
    if p[0] != NULL:
        return 0
    return _get_str_slow(s, p, n, cls, field, index, sub)


cdef int _get_u64_slow(object v, uint64_t* out, const char* cls, const char* field,
                       Py_ssize_t index, const char* sub) except -1:
    cdef int overflow = 0
    cdef long long x
    cdef unsigned long long ux
    if not PyLong_Check(v) or PyBool_Check(v):
        return _type_error(v, "int", cls, field, index, sub)
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow == 0:
        if x < 0:
            return _range_error(v, cls, field, index, sub)
        out[0] = <uint64_t>x
        return 0
    if overflow < 0:
        return _range_error(v, cls, field, index, sub)
    ux = _as_ull(v)
    if ux == <unsigned long long>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return _range_error(v, cls, field, index, sub)
    out[0] = ux
    return 0


cdef inline int _get_u64(object v, uint64_t* out, const char* cls, const char* field,
                         Py_ssize_t index, const char* sub) except -1:
    """An int field in [0, 2**64) (bool refused)."""
    if fg_int_fast(<PyObject*>v, out):
        return 0
    return _get_u64_slow(v, out, cls, field, index, sub)


cdef inline int _get_value(object v, uint64_t* ival, const char** bval, Py_ssize_t* blen,
                           const char* cls, const char* field, Py_ssize_t index,
                           const char* sub) except -1:
    """bval is set to NULL for an int value (blen 0) and for None, a
    tombstone (blen -1)."""
    if fg_int_fast(<PyObject*>v, ival):
        bval[0] = NULL
        blen[0] = 0
        return 0
    if PyLong_Check(v) and not PyBool_Check(v):
        bval[0] = NULL
        blen[0] = 0
        return _get_u64_slow(v, ival, cls, field, index, sub)
    if PyBytes_Check(v):
        bval[0] = PyBytes_AS_STRING(v)
        blen[0] = PyBytes_GET_SIZE(v)
        return 0
    if v is None:
        bval[0] = NULL
        blen[0] = -1
        return 0
    return _type_error(v, "int, bytes or None", cls, field, index, sub)


cdef inline int _field_u64(uint8_t unboxed, uint8_t bit, uint64_t raw, object boxed,
                           uint64_t* out, const char* cls, const char* field, Py_ssize_t index,
                           const char* sub) except -1:
    """An int field of an Entry or Gossip: unboxed (valid when it was set), or
    the object given, checked now."""
    if unboxed & bit:
        out[0] = raw
        return 0
    return _get_u64(boxed, out, cls, field, index, sub)


cdef inline int _field_value(uint8_t unboxed, uint64_t raw, object boxed, uint64_t* ival,
                             const char** bval, Py_ssize_t* blen, const char* cls,
                             const char* field, Py_ssize_t index, const char* sub) except -1:
    if unboxed & U_VALUE:
        ival[0] = raw
        bval[0] = NULL
        blen[0] = 0
        return 0
    return _get_value(boxed, ival, bval, blen, cls, field, index, sub)


# ---------------------------------------------------------------------------
# Encoding: measure (validate + exact size) then write (batch entries: both
# at once, see _m_batch).

cdef struct ItemPlan:
    const char* key          # digest: watermark origin
    Py_ssize_t klen
    uint64_t version         # digest: stamp


cdef struct BatchGap:
    Py_ssize_t at            # where the bytes go in the batch's entries block
    const char* s            # a bytes value, borrowed from its entry
    Py_ssize_t n


cdef enum:
    # Batch entries are written into a block as they are measured; bytes
    # values longer than this are left out of it and copied only once, into
    # the frame.
    INLINE_VALUE_MAX = 64


cdef struct Plan:
    int mtype
    Py_ssize_t size          # the whole frame, prefix included
    const char* s0
    Py_ssize_t n0
    const char* s1
    Py_ssize_t n1
    const char* s2
    Py_ssize_t n2
    uint64_t u0
    uint64_t u1
    uint64_t u2
    uint64_t ival
    const char* bval         # value bytes (NULL: int value) or Replicate.payload
    Py_ssize_t blen
    bint flag
    Py_ssize_t count
    ItemPlan* items          # digest: in mem
    OriginPlan* origins      # batch: the origin table, in mem
    Py_ssize_t n_origins
    Py_ssize_t eoff          # batch: offset in mem of the entries block
    Py_ssize_t elen          # bytes written to it
    BatchGap* gaps           # batch: bytes values left out of it (owned, PyMem)
    Py_ssize_t ngaps
    Py_ssize_t gcap
    void* mem                # working memory: _scratch, or owned (PyMem)
    size_t mem_size
    bint mem_is_scratch


cdef inline void _plan_init(Plan* p) noexcept nogil:
    p.items = NULL
    p.origins = NULL
    p.count = 0
    p.n_origins = 0
    p.eoff = 0
    p.elen = 0
    p.gaps = NULL
    p.ngaps = 0
    p.gcap = 0
    p.mem = NULL
    p.mem_size = 0
    p.mem_is_scratch = False


# Working memory for batch and digest plans, kept between calls so that
# encoding does not go to the C allocator every time. One plan at a time
# holds it (the GIL serialises callers; a re-entrant encode, from Python code
# that a str subclass runs while its batch is measured, gets its own block).
cdef void* _scratch = NULL
cdef size_t _scratch_size = 0
cdef bint _scratch_taken = False
cdef size_t _SCRATCH_KEEP = 1 << 20    # the most kept between calls


cdef int _plan_alloc(Plan* p, size_t size) except -1:
    """At least size bytes of working memory for p (released by _plan_free)."""
    global _scratch, _scratch_size, _scratch_taken
    cdef void* mem
    if size < 4096:
        size = 4096
    if FG_SHARED_SCRATCH and not _scratch_taken:
        if size > _scratch_size:
            PyMem_Free(_scratch)
            _scratch = NULL
            _scratch_size = 0
            _scratch = PyMem_Malloc(size)
            if _scratch == NULL:
                raise MemoryError()
            _scratch_size = size
        _scratch_taken = True
        p.mem = _scratch
        p.mem_size = _scratch_size
        p.mem_is_scratch = True
        return 0
    mem = PyMem_Malloc(size)
    if mem == NULL:
        raise MemoryError()
    p.mem = mem
    p.mem_size = size
    p.mem_is_scratch = False
    return 0


cdef int _plan_grow(Plan* p, size_t size) except -1:
    """Grow p's working memory to at least size bytes, keeping its contents
    (pointers into it must be taken again)."""
    global _scratch, _scratch_size
    cdef size_t want = 2 * p.mem_size if 2 * p.mem_size > size else size
    cdef void* mem = PyMem_Realloc(p.mem, want)
    if mem == NULL:
        raise MemoryError()
    p.mem = mem
    p.mem_size = want
    if p.mem_is_scratch:
        _scratch = mem
        _scratch_size = want
    return 0


cdef inline void _plan_free(Plan* p) noexcept:
    global _scratch, _scratch_size, _scratch_taken
    if p.mem_is_scratch:
        _scratch_taken = False
        if _scratch_size > _SCRATCH_KEEP:
            PyMem_Free(_scratch)
            _scratch = NULL
            _scratch_size = 0
    else:
        PyMem_Free(p.mem)
    PyMem_Free(p.gaps)
    p.gaps = NULL
    p.mem = NULL
    p.mem_is_scratch = False
    p.items = NULL
    p.origins = NULL


cdef int _frame_too_long(const char* cls, Py_ssize_t size) except -1:
    raise ValueError("%s frame would be %d bytes; a u32 length prefix allows at most %d"
                     % ((<bytes>cls).decode(), size, _U32_MAX + PREFIX_SIZE))


cdef inline Py_ssize_t _value_size(const char* bval, Py_ssize_t blen) noexcept nogil:
    if bval == NULL:
        return 1 if blen < 0 else 9   # a tombstone: the tag alone
    return 5 + blen


cdef Py_ssize_t _m_gossip(Gossip m, Plan* p) except -1:
    _get_str(m.sender_id, &p.s0, &p.n0, "Gossip", "sender_id", -1, NULL)
    _get_str(m.key, &p.s1, &p.n1, "Gossip", "key", -1, NULL)
    _field_value(m._unboxed, m._ival, m._value, &p.ival, &p.bval, &p.blen, "Gossip", "value",
                 -1, NULL)
    _field_u64(m._unboxed, U_VERSION, m._uversion, m._version, &p.u0, "Gossip", "version", -1,
               NULL)
    _get_str(m.origin, &p.s2, &p.n2, "Gossip", "origin", -1, NULL)
    p.mtype = T_GOSSIP
    return HEADER_SIZE + 6 + p.n0 + p.n1 + p.n2 + 8 + _value_size(p.bval, p.blen)


cdef Py_ssize_t _m_ping(object sender_id, object seq, Plan* p, int mtype,
                        const char* cls) except -1:
    _get_str(sender_id, &p.s0, &p.n0, cls, "sender_id", -1, NULL)
    _get_u64(seq, &p.u0, cls, "seq", -1, NULL)
    p.mtype = mtype
    return HEADER_SIZE + 2 + p.n0 + 8


cdef Py_ssize_t _m_replicate(Replicate m, Plan* p) except -1:
    _get_str(m.leader_id, &p.s0, &p.n0, "Replicate", "leader_id", -1, NULL)
    _get_u64(m.index, &p.u0, "Replicate", "index", -1, NULL)
    _get_u64(m.term, &p.u1, "Replicate", "term", -1, NULL)
    _get_u64(m.checksum, &p.u2, "Replicate", "checksum", -1, NULL)
    if not PyBytes_Check(m.payload):
        _type_error(m.payload, "bytes", "Replicate", "payload", -1, NULL)
    p.bval = PyBytes_AS_STRING(m.payload)
    p.blen = PyBytes_GET_SIZE(m.payload)
    p.mtype = T_REPLICATE
    return HEADER_SIZE + 2 + p.n0 + 24 + 4 + p.blen


cdef Py_ssize_t _m_ack(ReplicateAck m, Plan* p) except -1:
    _get_str(m.follower_id, &p.s0, &p.n0, "ReplicateAck", "follower_id", -1, NULL)
    _get_u64(m.index, &p.u0, "ReplicateAck", "index", -1, NULL)
    p.flag = m.success
    p.mtype = T_REPLICATE_ACK
    return HEADER_SIZE + 2 + p.n0 + 8 + 1


cdef int _too_many_origins() except -1:
    raise ValueError("GossipBatch has more than %d distinct origins" % MAX_ORIGINS)


cdef int _add_gap(Plan* p, Py_ssize_t at, const char* s, Py_ssize_t n) except -1:
    cdef BatchGap* g
    if p.ngaps == p.gcap:
        g = <BatchGap*>PyMem_Realloc(p.gaps, (2 * p.gcap + 8) * sizeof(BatchGap))
        if g == NULL:
            raise MemoryError()
        p.gaps = g
        p.gcap = 2 * p.gcap + 8
    g = &p.gaps[p.ngaps]
    g.at = at
    g.s = s
    g.n = n
    p.ngaps += 1
    return 0


cdef struct BatchState:
    # A batch being measured and written, entry by entry, into p.mem: the
    # origin table and its index by UTF-8, then the entries block. The frame
    # is fixed + osize + elen + gap_bytes + skipped bytes long.
    OriginPlan* origins
    uint16_t* slots
    int bits
    Py_ssize_t cap           # room in origins
    Py_ssize_t n_origins
    Py_ssize_t osize         # the origin table's bytes in the frame
    PyObject* last           # the last entry's origin (borrowed) and its index
    Py_ssize_t last_idx
    Py_ssize_t head          # offset of the entries block in p.mem
    unsigned char* block
    Py_ssize_t elen          # bytes in the block
    Py_ssize_t room          # and its capacity
    Py_ssize_t fixed         # header, sender_id and counts
    Py_ssize_t gap_bytes     # long bytes values, copied by _write
    Py_ssize_t skipped       # entries past the largest frame, only measured


cdef inline Py_ssize_t _batch_size(BatchState* st) noexcept nogil:
    return st.fixed + st.osize + st.elen + st.gap_bytes + st.skipped


cdef inline Py_ssize_t _batch_room(BatchState* st) noexcept nogil:
    """What the block can take now: its capacity, or what a u32 length
    prefix leaves, whichever is less."""
    cdef Py_ssize_t left = (<Py_ssize_t>_U32_MAX + PREFIX_SIZE - _batch_size(st))
    return st.room - st.elen if st.room - st.elen < left else left


cdef inline Py_ssize_t _origin_index(BatchState* st, PyObject* o, const char* s,
                                     Py_ssize_t n) noexcept:
    """The origin table index of o (UTF-8 s[:n]), added if new; -1 if the
    table is full (MAX_ORIGINS)."""
    cdef uint64_t f0 = 0, f1 = 0
    cdef Py_ssize_t idx
    cdef OriginPlan* op
    fg_fingerprint(<const unsigned char*>s, n, &f0, &f1)
    idx = fg_find_origin(st.origins, st.slots, st.bits, s, n, f0, f1)
    if idx < 0:
        if st.n_origins >= MAX_ORIGINS:
            return -1
        st.slots[-1 - idx] = <uint16_t>(st.n_origins + 1)
        idx = st.n_origins
        op = &st.origins[idx]
        op.s = s
        op.n = n
        op.f0 = f0
        op.f1 = f1
        st.n_origins += 1
        st.osize += 2 + n
    return idx


cdef inline unsigned char* _wr_entry(unsigned char* q, const char* key, Py_ssize_t klen,
                                     Py_ssize_t idx, uint64_t version, uint64_t stamp,
                                     uint64_t ival, const char* bval,
                                     Py_ssize_t blen, uint64_t expires) noexcept nogil:
    """Write one entry (a long bytes value without its bytes: see BatchGap).
    An expiring entry's tag has V_EXPIRES set and the u64 expiry follows it
    (the caller never gives a tombstone an expiry)."""
    q = fg_wr_str(q, key, klen)
    wr16(q, <uint16_t>idx)
    wr64(q + 2, version)
    wr64(q + 10, stamp)
    q += 18
    if bval == NULL and blen < 0:
        q[0] = V_TOMBSTONE
        return q + 1
    q[0] = V_INT if bval == NULL else V_BYTES
    if expires:
        q[0] |= V_EXPIRES
        wr64(q + 1, expires)
        q += 8
    if bval == NULL:
        wr64(q + 1, ival)
        return q + 9
    wr32(q + 1, <uint32_t>blen)
    if blen > INLINE_VALUE_MAX:
        return q + 5
    fg_copy(q + 5, bval, blen)
    return q + 5 + blen


cdef Py_ssize_t _batch_fast(BatchState* st, PyObject** items, Py_ssize_t i,
                            Py_ssize_t n) noexcept:
    """Measure and write entries items[i:n] while every field is of the
    common kind (exact Entry, compact ASCII str, int below 2**60 or short
    bytes) and there is room; returns the index of the first one that is not
    (n when all were), for _batch_slow."""
    cdef PyObject* o
    cdef PyObject* f
    cdef PyObject* v
    cdef const char* key
    cdef const char* optr
    cdef const char* bval
    cdef uint8_t u
    cdef Py_ssize_t klen = 0, olen = 0, blen = 0, idx, esize
    cdef uint64_t version = 0, stamp = 0, ival = 0
    cdef unsigned char* q = st.block + st.elen     # where the next entry goes
    cdef Py_ssize_t room = _batch_room(st)          # bytes it may take
    cdef PyObject* last = st.last
    cdef Py_ssize_t last_idx = st.last_idx
    cdef PyTypeObject* entry_type = <PyTypeObject*>Entry
    while i < n:
        o = items[i]
        if not FG_LIKELY(_type_of(o) == entry_type):
            break
        key = fg_str_fast(<PyObject*>(<Entry>o).key, &klen)
        if key == NULL:
            break
        f = <PyObject*>(<Entry>o).origin
        if f != last:
            optr = fg_str_fast(f, &olen)
            if optr == NULL:
                break
            idx = _origin_index(st, f, optr, olen)
            if idx < 0:
                break
            if idx == st.n_origins - 1:  # (maybe) new: the frame grew
                st.elen = q - st.block
                room = _batch_room(st)
            last = f
            last_idx = idx
        u = (<Entry>o)._unboxed
        if (u & (U_VERSION | U_STAMP)) != (U_VERSION | U_STAMP) or (<Entry>o)._uexpires:
            break
        version = (<Entry>o)._uversion
        stamp = (<Entry>o)._ustamp
        if u & U_VALUE:
            ival = (<Entry>o)._ival
            bval = NULL
            esize = 2 + klen + 18 + 9
        elif (PyBytes_CheckExact((<Entry>o)._value)
                and PyBytes_GET_SIZE((<Entry>o)._value) <= INLINE_VALUE_MAX):
            v = <PyObject*>(<Entry>o)._value
            bval = PyBytes_AS_STRING(<object>v)
            blen = PyBytes_GET_SIZE(<object>v)
            esize = 2 + klen + 18 + 5 + blen
        else:
            break
        if esize > room:
            break
        room -= esize
        q = _wr_entry(q, key, klen, last_idx, version, stamp, ival, bval, blen, 0)
        i += 1
    st.elen = q - st.block
    st.last = last
    st.last_idx = last_idx
    return i


cdef int _batch_slow(Plan* p, BatchState* st, object o, Py_ssize_t i) except -1:
    """Measure and write entry i, of any kind, or raise its first error."""
    cdef Entry e
    cdef const char* key = NULL
    cdef const char* optr = NULL
    cdef const char* bval = NULL
    cdef Py_ssize_t klen = 0, olen = 0, blen = 0, idx, esize, wsize
    cdef uint64_t version = 0, stamp = 0, ival = 0
    cdef unsigned char* q
    if not isinstance(o, Entry):
        raise TypeError("GossipBatch.entries[%d] must be Entry, not %s" % (i, type(o).__name__))
    e = <Entry>o
    _get_str(e.key, &key, &klen, "GossipBatch", "entries", i, "key")
    if <PyObject*>e.origin == st.last:
        idx = st.last_idx
    else:
        _get_str(e.origin, &optr, &olen, "GossipBatch", "entries", i, "origin")
        idx = _origin_index(st, <PyObject*>e.origin, optr, olen)
        if idx < 0:
            _too_many_origins()
        st.last = <PyObject*>e.origin
        st.last_idx = idx
    _field_u64(e._unboxed, U_VERSION, e._uversion, e._version, &version, "GossipBatch",
               "entries", i, "version")
    _field_u64(e._unboxed, U_STAMP, e._ustamp, e._stamp, &stamp, "GossipBatch", "entries", i,
               "stamp")
    _field_value(e._unboxed, e._ival, e._value, &ival, &bval, &blen, "GossipBatch", "entries",
                 i, "value")
    esize = 2 + klen + 18 + _value_size(bval, blen)
    if e._uexpires:
        if bval == NULL and blen < 0:
            raise ValueError("GossipBatch.entries[%d]: a tombstone cannot expire" % i)
        esize += 8
    if st.skipped or _batch_size(st) + esize - PREFIX_SIZE > <Py_ssize_t>_U32_MAX:
        # too long a frame (_measure says so): the rest is only measured
        st.skipped += esize
        return 0
    wsize = esize - blen if bval != NULL and blen > INLINE_VALUE_MAX else esize
    if st.elen + wsize > st.room:
        _plan_grow(p, st.head + st.elen + wsize)
        st.origins = <OriginPlan*>p.mem
        st.slots = <uint16_t*>(st.origins + st.cap)
        st.block = <unsigned char*>p.mem + st.head
        st.room = <Py_ssize_t>p.mem_size - st.head
    q = _wr_entry(st.block + st.elen, key, klen, idx, version, stamp, ival, bval, blen,
                  e._uexpires)
    if wsize != esize:
        _add_gap(p, q - st.block, bval, blen)
        st.gap_bytes += blen
    st.elen = q - st.block
    return 0


cdef Py_ssize_t _m_batch(GossipBatch m, Plan* p) except -1:
    """Measure a batch and write its entries (all but long bytes values) into
    a block of p.mem, in the one pass; _write puts the frame together."""
    cdef tuple entries = m.entries
    cdef Py_ssize_t i, n
    cdef BatchState st
    _get_str(m.sender_id, &p.s0, &p.n0, "GossipBatch", "sender_id", -1, NULL)
    if entries is None:
        _type_error(entries, "tuple", "GossipBatch", "entries", -1, NULL)
    n = PyTuple_GET_SIZE(entries)
    p.mtype = T_GOSSIP_BATCH
    p.count = n
    if n == 0:
        return HEADER_SIZE + 2 + p.n0 + 2 + 4
    memset(&st, 0, sizeof(st))
    st.fixed = HEADER_SIZE + 2 + p.n0 + 2 + 4
    st.cap = n if n < MAX_ORIGINS else MAX_ORIGINS
    st.bits = fg_slot_bits(st.cap)
    st.head = (st.cap * sizeof(OriginPlan) + (sizeof(uint16_t) << st.bits) + 7) & ~7
    _plan_alloc(p, st.head + n * 48)
    st.origins = <OriginPlan*>p.mem
    st.slots = <uint16_t*>(st.origins + st.cap)
    memset(st.slots, 0, sizeof(uint16_t) << st.bits)
    st.block = <unsigned char*>p.mem + st.head
    st.room = <Py_ssize_t>p.mem_size - st.head
    i = 0
    while True:
        i = _batch_fast(&st, fg_tuple_items(entries), i, n)
        if i >= n:
            break
        _batch_slow(p, &st, <object>PyTuple_GET_ITEM(entries, i), i)
        i += 1
    p.origins = st.origins
    p.n_origins = st.n_origins
    p.eoff = st.head
    p.elen = st.elen
    return _batch_size(&st)


cdef Py_ssize_t _m_digest(Digest m, Plan* p) except -1:
    cdef tuple wms = m.watermarks
    cdef Py_ssize_t i, n, size
    cdef object w
    cdef ItemPlan* it
    _get_str(m.sender_id, &p.s0, &p.n0, "Digest", "sender_id", -1, NULL)
    p.u0 = ((DIGEST_REPLY if m.reply else 0) | (DIGEST_MORE if m.more else 0)
            | (DIGEST_DELTA if m.delta else 0))
    if wms is None:
        _type_error(wms, "tuple", "Digest", "watermarks", -1, NULL)
    n = PyTuple_GET_SIZE(wms)
    p.mtype = T_DIGEST
    p.count = n
    size = HEADER_SIZE + 2 + p.n0 + 1 + 4
    if n == 0:
        return size
    _plan_alloc(p, n * sizeof(ItemPlan))
    p.items = <ItemPlan*>p.mem
    for i in range(n):
        w = <object>PyTuple_GET_ITEM(wms, i)
        if type(w) is not tuple or PyTuple_GET_SIZE(w) != 2:
            raise ValueError("Digest.watermarks[%d] must be an (origin, stamp) pair" % i)
        it = &p.items[i]
        _get_str(<object>PyTuple_GET_ITEM(w, 0), &it.key, &it.klen, "Digest", "watermarks", i,
                 "origin")
        _get_u64(<object>PyTuple_GET_ITEM(w, 1), &it.version, "Digest", "watermarks", i,
                 "stamp")
        size += 2 + it.klen + 8
    return size


cdef Py_ssize_t _measure(object msg, Plan* p) except -1:
    """Validate msg and return its exact frame size; may allocate into p
    (release with _plan_free, also after an error)."""
    cdef Py_ssize_t size
    if isinstance(msg, Gossip):
        size = _m_gossip(<Gossip>msg, p)
    elif isinstance(msg, GossipBatch):
        size = _m_batch(<GossipBatch>msg, p)
    elif isinstance(msg, Digest):
        size = _m_digest(<Digest>msg, p)
    elif isinstance(msg, Ping):
        size = _m_ping((<Ping>msg).sender_id, (<Ping>msg).seq, p, T_PING, "Ping")
    elif isinstance(msg, Pong):
        size = _m_ping((<Pong>msg).sender_id, (<Pong>msg).seq, p, T_PONG, "Pong")
    elif isinstance(msg, Replicate):
        size = _m_replicate(<Replicate>msg, p)
    elif isinstance(msg, ReplicateAck):
        size = _m_ack(<ReplicateAck>msg, p)
    else:
        raise TypeError("cannot encode %s: not a fastgossip message" % type(msg).__name__)
    if <uint64_t>(size - PREFIX_SIZE) > _U32_MAX:
        _frame_too_long(_TYPE_NAMES[p.mtype], size)
    p.size = size
    return size


cdef const char* _TYPE_NAMES[8]
_TYPE_NAMES[0] = "?"
_TYPE_NAMES[T_GOSSIP] = "Gossip"
_TYPE_NAMES[T_PING] = "Ping"
_TYPE_NAMES[T_PONG] = "Pong"
_TYPE_NAMES[T_REPLICATE] = "Replicate"
_TYPE_NAMES[T_REPLICATE_ACK] = "ReplicateAck"
_TYPE_NAMES[T_GOSSIP_BATCH] = "GossipBatch"
_TYPE_NAMES[T_DIGEST] = "Digest"


cdef inline unsigned char* _wr_value(unsigned char* q, uint64_t ival, const char* bval,
                                     Py_ssize_t blen) noexcept nogil:
    if bval == NULL:
        if blen < 0:
            return wr_value_tombstone(q)
        return wr_value_int(q, ival)
    return wr_value_bytes(q, bval, blen)


cdef unsigned char* _write(Plan* p, unsigned char* q) noexcept nogil:
    """Write the measured frame at q; returns its end."""
    cdef Py_ssize_t i, at
    cdef ItemPlan* it
    cdef BatchGap* g
    cdef const unsigned char* block
    cdef int t = p.mtype
    q = wr_header(q, p.size, <uint8_t>t)
    q = fg_wr_str(q, p.s0, p.n0)
    if t == T_GOSSIP:
        q = fg_wr_str(q, p.s1, p.n1)
        q = _wr_value(q, p.ival, p.bval, p.blen)
        wr64(q, p.u0)
        q = fg_wr_str(q + 8, p.s2, p.n2)
    elif t == T_PING or t == T_PONG:
        wr64(q, p.u0)
        q += 8
    elif t == T_GOSSIP_BATCH:
        wr16(q, <uint16_t>p.n_origins)
        q += 2
        for i in range(p.n_origins):
            q = fg_wr_str(q, p.origins[i].s, p.origins[i].n)
        wr32(q, <uint32_t>p.count)
        q += 4
        # the entries block, with the long bytes values put in their places
        if p.count:
            at = 0
            block = <const unsigned char*>p.mem + p.eoff
            for i in range(p.ngaps):
                g = &p.gaps[i]
                memcpy(q, block + at, g.at - at)
                q += g.at - at
                memcpy(q, g.s, g.n)
                q += g.n
                at = g.at
            memcpy(q, block + at, p.elen - at)
            q += p.elen - at
    elif t == T_DIGEST:
        q[0] = <unsigned char>p.u0
        wr32(q + 1, <uint32_t>p.count)
        q += 5
        for i in range(p.count):
            it = &p.items[i]
            q = fg_wr_str(q, it.key, it.klen)
            wr64(q, it.version)
            q += 8
    elif t == T_REPLICATE:
        wr64(q, p.u0)
        wr64(q + 8, p.u1)
        wr64(q + 16, p.u2)
        q = wr_bytes32(q + 24, p.bval, p.blen)
    elif t == T_REPLICATE_ACK:
        wr64(q, p.u0)
        q[8] = 1 if p.flag else 0
        q += 9
    return q


cdef object _encode_gossip(Gossip m):
    """The frame of m when every field is of the common kind (compact-ASCII
    str, unboxed int, bytes), written straight; else None (the general path
    then encodes it or raises)."""
    cdef const char* s0
    cdef const char* s1
    cdef const char* s2
    cdef const char* bval = NULL
    cdef Py_ssize_t n0 = 0, n1 = 0, n2 = 0, blen = 0, size
    cdef uint64_t ival = m._ival
    cdef PyObject* v = <PyObject*>m._value
    cdef unsigned char* q
    cdef bytes out
    s0 = fg_str_fast(<PyObject*>m.sender_id, &n0)
    s1 = fg_str_fast(<PyObject*>m.key, &n1)
    s2 = fg_str_fast(<PyObject*>m.origin, &n2)
    if s0 == NULL or s1 == NULL or s2 == NULL or not (m._unboxed & U_VERSION):
        return None
    size = HEADER_SIZE + 6 + n0 + n1 + n2 + 8
    if m._unboxed & U_VALUE:
        size += 9
    elif PyBytes_CheckExact(<object>v):
        bval = PyBytes_AS_STRING(<object>v)
        blen = PyBytes_GET_SIZE(<object>v)
        size += 5 + blen
        if size - PREFIX_SIZE > <Py_ssize_t>_U32_MAX:
            return None
    else:
        return None
    out = PyBytes_FromStringAndSize(NULL, size)
    q = <unsigned char*>PyBytes_AS_STRING(out)
    wr32(q, <uint32_t>(size - PREFIX_SIZE))
    q[4] = PROTOCOL_VERSION
    q[5] = T_GOSSIP
    q = fg_wr_str(q + HEADER_SIZE, s0, n0)
    q = fg_wr_str(q, s1, n1)
    if bval == NULL:
        q[0] = V_INT
        wr64(q + 1, ival)
        q += 9
    else:
        q[0] = V_BYTES
        wr32(q + 1, <uint32_t>blen)
        memcpy(q + 5, bval, blen)
        q += 5 + blen
    wr64(q, m._uversion)
    fg_wr_str(q + 8, s2, n2)
    return out


@cython.binding(False)
@cython.always_allow_keywords(False)
def encode(msg) -> bytes:
    """Encode one message as a full frame (length prefix included)."""
    cdef Plan plan
    cdef bytes out
    if type(msg) is Gossip:
        out = _encode_gossip(<Gossip>msg)
        if out is not None:
            return out
    _plan_init(&plan)
    try:
        _measure(msg, &plan)
        out = PyBytes_FromStringAndSize(NULL, plan.size)
        _write(&plan, <unsigned char*>PyBytes_AS_STRING(out))
    finally:
        if plan.mem != NULL:
            _plan_free(&plan)
    return out


@cython.binding(False)
def encode_many(msgs) -> bytes:
    """Encode messages as concatenated frames, into one bytes object."""
    # a tuple of our own keeps every message (and so every pointer a plan
    # holds into it) alive until the frames are written
    cdef tuple seq = msgs if type(msgs) is tuple else tuple(msgs)
    cdef Py_ssize_t n = PyTuple_GET_SIZE(seq)
    cdef Py_ssize_t i, total = 0
    cdef Plan* plans
    cdef unsigned char* q
    cdef bytes out
    if n == 0:
        return b""
    plans = <Plan*>PyMem_Malloc(n * sizeof(Plan))
    if plans == NULL:
        raise MemoryError()
    for i in range(n):
        _plan_init(&plans[i])
    try:
        for i in range(n):
            total += _measure(<object>PyTuple_GET_ITEM(seq, i), &plans[i])
        out = PyBytes_FromStringAndSize(NULL, total)
        q = <unsigned char*>PyBytes_AS_STRING(out)
        for i in range(n):
            q = _write(&plans[i], q)
    finally:
        for i in range(n):
            _plan_free(&plans[i])
        PyMem_Free(plans)
    return out

# The stream decoder: FrameDecoder (feed, feed_frames).
# Included by _codec_c.pyx (one module): see its docstring.

cdef class FrameDecoder:
    """Incremental decoder for a byte stream of frames.

    feed(data) takes any buffer, cut at any byte boundary, and returns the
    messages completed by it; feed_frames(data) returns the completed raw frames
    (bytes, prefix included) after checking only their length prefix. A prefix
    announcing a frame (prefix included) above max_frame_size raises
    FrameError as soon as its 4 bytes are seen.
    After a FrameError the decoder stays failed. It holds at most one
    incomplete frame (never more than max_frame_size bytes, prefix included).
    """

    cdef unsigned char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _len
    cdef uint64_t _max
    cdef object _error
    cdef bint _busy
    cdef StrCache _cache

    def __cinit__(self):
        self._buf = NULL
        self._cap = 0
        self._len = 0
        self._cache.obj = NULL
        self._cache.n = 0
        self._busy = False

    @cython.embedsignature(False)
    def __init__(self, max_frame_size=_DEFAULT_MAX):
        """__init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE)"""
        self._max = _check_max(max_frame_size)
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL
        Py_XDECREF(self._cache.obj)
        self._cache.obj = NULL

    @property
    def buffered(self) -> int:
        """Bytes held: the start of an incomplete frame."""
        return self._len

    @property
    def max_frame_size(self) -> int:
        return self._max

    def feed(self, data) -> list:
        """Add bytes; return the messages they complete, in order."""
        return self._feed(data, False)

    def feed_frames(self, data) -> list:
        """Add bytes; return the raw frames they complete (bytes incl. prefix)."""
        return self._feed(data, True)

    cdef list _feed(self, object data, bint raw):
        cdef Py_buffer view
        cdef list out = []
        if self._error is not None:
            self._raise_failed()
        if self._busy:
            raise RuntimeError("FrameDecoder is already feeding (re-entrant call)")
        self._busy = True
        try:
            if PyBytes_CheckExact(data):
                self._run(<const unsigned char*>PyBytes_AS_STRING(data),
                          PyBytes_GET_SIZE(data), out, raw)
            else:
                _get_buffer(data, &view, "feed_frames" if raw else "feed")
                try:
                    self._run(<const unsigned char*>view.buf, view.len, out, raw)
                finally:
                    PyBuffer_Release(&view)
        except FrameError as exc:
            self._error = exc
            self._len = 0
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
            raise
        finally:
            self._busy = False
        return out

    cdef int _raise_failed(self) except -1:
        raise FrameError("decoder failed earlier: %s" % self._error, self._error.offset)

    cdef int _reserve(self, Py_ssize_t size) except -1:
        cdef unsigned char* p
        if size <= self._cap:
            return 0
        if size < _KEEP:
            size = _KEEP
        p = <unsigned char*>PyMem_Realloc(self._buf, size)
        if p == NULL:
            raise MemoryError()
        self._buf = p
        self._cap = size
        return 0

    cdef inline int _check_length(self, uint32_t length) except -1:
        cdef WireReader r
        if length < MIN_FRAME_LENGTH or <uint64_t>length + PREFIX_SIZE > self._max:
            wire_init(&r, NULL, 0)
            wire_check_length(&r, length, self._max)
            _raise(&r)
        return 0

    cdef inline int _emit(self, const unsigned char* p, Py_ssize_t flen, list out,
                          bint raw) except -1:
        if raw:
            PyList_Append(out, PyBytes_FromStringAndSize(<const char*>p, flen))
        else:
            PyList_Append(out, _decode_frame(p, flen, self._max, &self._cache))
        return 0

    cdef int _run(self, const unsigned char* p, Py_ssize_t n, list out, bint raw) except -1:
        cdef Py_ssize_t i = 0, take, flen
        cdef uint32_t length
        if self._len:
            # finish the frame started by an earlier chunk
            if self._len < PREFIX_SIZE:
                take = PREFIX_SIZE - self._len
                if take > n:
                    take = n
                memcpy(self._buf + self._len, p, take)
                self._len += take
                i = take
                if self._len < PREFIX_SIZE:
                    return 0
                length = rd32(self._buf)
                self._check_length(length)
                self._reserve(<Py_ssize_t>length + PREFIX_SIZE)
            flen = <Py_ssize_t>rd32(self._buf) + PREFIX_SIZE
            take = flen - self._len
            if take > n - i:
                take = n - i
            memcpy(self._buf + self._len, p + i, take)
            self._len += take
            i += take
            if self._len < flen:
                return 0
            self._emit(self._buf, flen, out, raw)
            self._len = 0
            if self._cap > 16 * _KEEP:
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0
        # whole frames straight from the caller's buffer
        while n - i >= PREFIX_SIZE:
            length = rd32(p + i)
            if length < MIN_FRAME_LENGTH or <uint64_t>length + PREFIX_SIZE > self._max:
                self._check_length(length)
            flen = <Py_ssize_t>length + PREFIX_SIZE
            if n - i < flen:
                break
            self._emit(p + i, flen, out, raw)
            i += flen
        if i < n:
            # keep the start of the next frame (its prefix is already checked)
            self._reserve((<Py_ssize_t>rd32(p + i) + PREFIX_SIZE) if n - i >= PREFIX_SIZE
                          else PREFIX_SIZE)
            memcpy(self._buf, p + i, n - i)
            self._len = n - i
        return 0

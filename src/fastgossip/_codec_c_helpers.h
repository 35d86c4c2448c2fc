/* C helpers of the compiled codec (_codec_c.pyx): small, on the hot paths,
   always inlined. Declared for Cython in _codec_c.pyx. */
#ifndef FASTGOSSIP_CODEC_HELPERS_H
#define FASTGOSSIP_CODEC_HELPERS_H

/* The helpers below are small and on the hot paths: always inlined. */
#if defined(__GNUC__) || defined(__clang__)
#define FG_INLINE static inline __attribute__((always_inline))
#else
#define FG_INLINE static CYTHON_INLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FG_LIKELY(x) __builtin_expect(!!(x), 1)
#define FG_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FG_LIKELY(x) (x)
#define FG_UNLIKELY(x) (x)
#endif

/* Fast paths for the common cases, read straight from the object; 0 means
   "take the general path". */
FG_INLINE int fg_u64_fast(PyObject* v, uint64_t* out) {
#if defined(PYPY_VERSION) || defined(Py_LIMITED_API)
    return 0;
#elif PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject*)v)) {
        Py_ssize_t x = PyUnstable_Long_CompactValue((PyLongObject*)v);
        if (x < 0) return 0;
        *out = (uint64_t)x;
        return 1;
    } else {  /* larger: below 2**63 here, the rest by the general path */
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow != 0 || x < 0) return 0;  /* (an exact int: no error) */
        *out = (uint64_t)x;
        return 1;
    }
#else
    const digit* d = ((PyLongObject*)v)->ob_digit;
    Py_ssize_t size = Py_SIZE(v);
    if (FG_LIKELY((size_t)(size - 1) < 2)) {  /* 1 or 2 digits */
        uint64_t x = d[0];
        if (size == 2) x |= (uint64_t)d[1] << PyLong_SHIFT;
        *out = x;
        return 1;
    }
    if (size == 0) { *out = 0; return 1; }
    return 0;
#endif
}

/* The bytes of an exact, compact-ASCII str that fits a str16 field
   (borrowed: valid while s lives), or NULL: take the general path. */
FG_INLINE const char* fg_str_fast(PyObject* s, Py_ssize_t* n) {
#if defined(PYPY_VERSION) || defined(Py_LIMITED_API)
    return NULL;
#else
    if (FG_UNLIKELY(!PyUnicode_CheckExact(s))) return NULL;
    {   /* PyUnicode_IS_COMPACT_ASCII as one test of the state bits */
        PyASCIIObject want;
        unsigned int bits, mask;
        memset(&want.state, 0, sizeof(want.state));
        want.state.compact = 1;
        want.state.ascii = 1;
        memcpy(&mask, &want.state, sizeof(mask));
        memcpy(&bits, &((PyASCIIObject*)s)->state, sizeof(bits));
        if (FG_UNLIKELY((bits & mask) != mask)) return NULL;
    }
    if (FG_UNLIKELY(PyUnicode_GET_LENGTH(s) > 65535)) return NULL;
    *n = PyUnicode_GET_LENGTH(s);
    return (const char*)(((PyASCIIObject*)s) + 1);  /* compact ASCII data */
#endif
}

#define fg_tuple_items(t) (((PyTupleObject*)(t))->ob_item)

/* Whether encoding may share one scratch block between calls (not
   without a GIL). */
#ifdef Py_GIL_DISABLED
#define FG_SHARED_SCRATCH 0
#else
#define FG_SHARED_SCRATCH 1
#endif

/* An exact int in [0, 2**64) read by fg_u64_fast, or 0. */
FG_INLINE int fg_int_fast(PyObject* v, uint64_t* out) {
    return FG_LIKELY(PyLong_CheckExact(v) && fg_u64_fast(v, out));
}

/* Short byte ranges (ids, keys) are compared, copied and checked for
   ASCII with a few overlapping word loads instead of a libc call or a
   byte loop; none of them reads or writes outside [p, p + n). The
   fingerprint (f0, f1) of n <= 16 bytes determines them, given n. */
FG_INLINE void fg_fingerprint(const unsigned char* s, Py_ssize_t n,
                              uint64_t* f0, uint64_t* f1) {
    if (n >= 8) {
        *f0 = fg_ld64(s); *f1 = fg_ld64(s + n - 8);
    } else if (n >= 4) {
        *f0 = fg_ld32(s); *f1 = fg_ld32(s + n - 4);
    } else {  /* 0 to 3 bytes: first, middle and last cover them all */
        *f0 = n > 0 ? (uint64_t)s[0] | ((uint64_t)s[n >> 1] << 8) | ((uint64_t)s[n - 1] << 16) : 0;
        *f1 = 0;
    }
}

FG_INLINE int fg_same_bytes(const void* a, const void* b, Py_ssize_t n) {
    const unsigned char* x = (const unsigned char*)a;
    const unsigned char* y = (const unsigned char*)b;
    uint64_t x0, x1, y0, y1;
    if (n > 16) return memcmp(x, y, (size_t)n) == 0;
    fg_fingerprint(x, n, &x0, &x1);
    fg_fingerprint(y, n, &y0, &y1);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
}

FG_INLINE void fg_copy(void* dst, const void* src, Py_ssize_t n) {
    unsigned char* d = (unsigned char*)dst;
    const unsigned char* s = (const unsigned char*)src;
    if (n > 32) {
        memcpy(d, s, (size_t)n);
    } else if (n >= 16) {
        uint64_t a = fg_ld64(s), b = fg_ld64(s + 8);
        uint64_t c = fg_ld64(s + n - 16), e = fg_ld64(s + n - 8);
        memcpy(d, &a, 8); memcpy(d + 8, &b, 8);
        memcpy(d + n - 16, &c, 8); memcpy(d + n - 8, &e, 8);
    } else if (n >= 8) {
        uint64_t a = fg_ld64(s), b = fg_ld64(s + n - 8);
        memcpy(d, &a, 8); memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a = fg_ld32(s), b = fg_ld32(s + n - 4);
        memcpy(d, &a, 4); memcpy(d + n - 4, &b, 4);
    } else if (n > 0) {
        unsigned char a = s[0], b = s[n >> 1], c = s[n - 1];
        d[0] = a; d[n >> 1] = b; d[n - 1] = c;
    }
}


/* A batch's origin table while it is measured, with an open-addressing
   index by UTF-8: slots[] holds table index + 1 (0: free), at most
   65535 origins in at least twice as many slots. */
typedef struct {
    const char* s;       /* UTF-8 */
    Py_ssize_t n;
    uint64_t f0, f1;     /* fg_fingerprint(s, n) */
} fg_origin;

FG_INLINE int fg_slot_bits(Py_ssize_t cap) {
    int bits = 5;
    while (((Py_ssize_t)1 << bits) < 2 * cap) bits++;
    return bits;
}

/* The table index of origin s[:n] (fingerprint f0, f1), or -1 - slot:
   where to insert it. The slot comes from the top bits of a
   multiplicative hash (they depend on every bit of the fingerprint). */
FG_INLINE Py_ssize_t fg_find_origin(const fg_origin* t, const uint16_t* slots,
                                    int bits, const char* s,
                                    Py_ssize_t n, uint64_t f0, uint64_t f1) {
    uint64_t h = ((f0 ^ (uint64_t)n) * 0x9E3779B97F4A7C15ULL + f1) * 0xBF58476D1CE4E5B9ULL;
    size_t mask = ((size_t)1 << bits) - 1, i = (size_t)(h >> (64 - bits));
    for (;;) {
        unsigned v = slots[i];
        if (v == 0) return -1 - (Py_ssize_t)i;
        v -= 1;
        if (t[v].f0 == f0 && t[v].f1 == f1 && t[v].n == n
                && (n <= 16 || memcmp(t[v].s, s, (size_t)n) == 0))
            return (Py_ssize_t)v;
        i = (i + 1) & mask;
    }
}

/* A str16 field: u16 length, then the bytes. Returns the end. */
FG_INLINE unsigned char* fg_wr_str(unsigned char* q, const char* s, Py_ssize_t n) {
    fg_wr16(q, (uint16_t)n);
    fg_copy(q + 2, s, n);
    return q + 2 + n;
}

/* A new str from n ASCII bytes (the caller checked them): what the UTF-8
   decoder would build, without its overhead. */
FG_INLINE PyObject* fg_ascii_str(const unsigned char* s, Py_ssize_t n) {
    PyObject* o = PyUnicode_New(n, 127);
    if (o != NULL) fg_copy(((PyASCIIObject*)o) + 1, s, n);  /* compact ASCII data */
    return o;
}


#endif /* FASTGOSSIP_CODEC_HELPERS_H */

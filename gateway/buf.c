/*
 * buf: growable byte buffer with JSON-friendly appenders. Doubles are
 * printed with the fewest digits that read back to the same value, so a
 * rollup survives JSON exactly.
 */
#include "buf.h"
#include "common.h"

#include <inttypes.h>
#include <stdbool.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_buf_reserve(struct sg_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) {
        cap *= 2;
    }
    b->data = sg_xrealloc(b->data, cap);
    b->cap = cap;
}

void sg_buf_printf(struct sg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= room) {
        sg_buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* 5^k for k <= 22 (all below 2^64). */
static const uint64_t pow5[23] = {
    1ull,
    5ull,
    25ull,
    125ull,
    625ull,
    3125ull,
    15625ull,
    78125ull,
    390625ull,
    1953125ull,
    9765625ull,
    48828125ull,
    244140625ull,
    1220703125ull,
    6103515625ull,
    30517578125ull,
    152587890625ull,
    762939453125ull,
    3814697265625ull,
    19073486328125ull,
    95367431640625ull,
    476837158203125ull,
    2384185791015625ull,
};

static const char two_digits[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 10^k for k = -5..16 (rounded to double; only used for a first guess of
 * the decimal exponent, which the exact loop below corrects). */
static const double pow10_from_m5[22] = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0,  1e1,  1e2,
                                         1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10,
                                         1e11, 1e12, 1e13, 1e14, 1e15, 1e16};

/* Writes the p-digit integer di (exactly p digits, the first nonzero) times
 * 10^exp10, trailing zeros dropped, shaped as %.<p>g shapes it: plain when
 * the exponent e of the first digit is in [-4, p), else d.ddde+XX. out holds
 * at least 32 bytes. Returns the length. */
static size_t format_digits(char *out, bool neg, uint64_t di, int p, int exp10)
{
    char digits[24];
    int left = p;
    while (left >= 2) {
        unsigned r = (unsigned)(di % 100u);
        di /= 100u;
        left -= 2;
        memcpy(digits + left, two_digits + 2u * r, 2);
    }
    if (left == 1) {
        digits[0] = (char)('0' + di);
    }
    int n = p;
    while (n > 1 && digits[n - 1] == '0') {
        n--;
        exp10++;
    }
    char *o = out;
    if (neg) {
        *o++ = '-';
    }
    int e = n - 1 + exp10;
    if (e >= -4 && e < p) {
        if (e < 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = -1; i > e; i--) {
                *o++ = '0';
            }
            memcpy(o, digits, (size_t)n);
            o += n;
        } else if (e + 1 >= n) {
            memcpy(o, digits, (size_t)n);
            o += n;
            for (int i = n; i <= e; i++) {
                *o++ = '0';
            }
        } else {
            memcpy(o, digits, (size_t)e + 1u);
            o += e + 1;
            *o++ = '.';
            memcpy(o, digits + e + 1, (size_t)(n - e - 1));
            o += n - e - 1;
        }
    } else {
        *o++ = digits[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)n - 1u);
            o += n - 1;
        }
        *o++ = 'e';
        *o++ = e < 0 ? '-' : '+';
        int ae = e < 0 ? -e : e;
        if (ae >= 100) {
            *o++ = (char)('0' + ae / 100);
        }
        *o++ = (char)('0' + ae / 10 % 10);
        *o++ = (char)('0' + ae % 10);
    }
    return (size_t)(o - out);
}

/* The fast path of sg_buf_put_double, in exact integer arithmetic (no
 * printf, no strtod), for 1e-5 <= |v| < 1e15. With |v| = m * 2^q (m of 53
 * bits) and s = p - 1 - e >= 0 (e the decimal exponent of |v|), |v| * 10^s
 * = m * 5^s * 2^(q + s) exactly, and m * 5^s < 2^106 fits 128 bits; so the
 * p-digit decimal nearest to |v| (ties to even, as glibc's %.<p>g rounds)
 * is computed exactly, for p = 15, 16, 17 in turn. It reads back to v iff
 * it lies in v's rounding interval [(2m - 1), (2m + 1)] * 5^s * 2^(q+s-1)
 * (ends included iff m is even, round-half-even), also an exact integer
 * comparison; 17 digits always read back. So the output is exactly the
 * digits of the shortest of %.15g / %.16g / %.17g that round-trips.
 * Returns the length written to out, or 0 when the fast path does not
 * apply (the caller falls back to printf). */
static size_t put_double_fast(char *out, double v)
{
    double a = fabs(v);
    if (!(a >= 1e-5 && a < 1e15)) {
        return 0;
    }
    uint64_t bits;
    memcpy(&bits, &a, sizeof bits);
    uint64_t m = (bits & ((1ull << 52) - 1u)) | (1ull << 52);
    int q = (int)(bits >> 52) - 1075;
    if (m == 1ull << 52) {
        return 0; /* a power of two: its rounding interval is lopsided */
    }
    /* The decimal exponent from the binary one (floor(E log10 2) is at most
     * one too low), then one table comparison; may still be off by one near
     * a power of ten, which the loop below corrects. */
    int e = ((int)(bits >> 52) - 1023) * 78913;
    e = e >= 0 ? e >> 18 : -((-e + (1 << 18) - 1) >> 18);
    if (e >= -5 && e < 16 && a >= pow10_from_m5[e + 6]) {
        e++;
    }
    for (int p = 15; p <= 17; p++) {
        uint64_t lo = pow5[p - 1] << (p - 1); /* 10^(p-1) */
        uint64_t hi = lo * 10u;
        unsigned __int128 x = 0;
        uint64_t d = 0;
        int s = 0;
        int sh = 0;
        for (int tries = 0;; tries++) {
            s = p - 1 - e;
            sh = -(q + s);
            if (tries > 2 || s < 0 || s > 22 || sh <= 0 || sh >= 100) {
                return 0;
            }
            x = (unsigned __int128)m * pow5[s];
            unsigned __int128 dq = x >> sh;
            unsigned __int128 rem = x - (dq << sh);
            unsigned __int128 half = (unsigned __int128)1 << (sh - 1);
            if (rem > half || (rem == half && (dq & 1u) != 0)) {
                dq++;
            }
            if (dq < lo) {
                e--;
            } else if (dq >= hi) {
                e++;
            } else {
                d = (uint64_t)dq;
                break;
            }
        }
        if (p < 17) {
            unsigned __int128 d2 = (unsigned __int128)d << (sh + 1);
            unsigned __int128 lo2 = (unsigned __int128)(2u * m - 1u) * pow5[s];
            unsigned __int128 hi2 = (unsigned __int128)(2u * m + 1u) * pow5[s];
            bool in = (m & 1u) == 0 ? (d2 >= lo2 && d2 <= hi2) : (d2 > lo2 && d2 < hi2);
            if (!in) {
                continue;
            }
        }
        return format_digits(out, v < 0, d, p, -s);
    }
    return 0;
}

void sg_buf_put_double(struct sg_buf *b, double v)
{
    if (!isfinite(v)) {
        sg_buf_append(b, "null", 4);
        return;
    }
    if (v == 0.0) {
        /* JSON has no negative zero worth keeping; the sign is noise here. */
        sg_buf_putc(b, '0');
        return;
    }
    /* Integers that fit exactly print without an exponent or a dot. */
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
        int64_t iv = (int64_t)v;
        if (iv < 0) {
            sg_buf_putc(b, '-');
            iv = -iv;
        }
        sg_buf_put_u64(b, (uint64_t)iv);
        return;
    }
    char tmp[40];
    size_t n = put_double_fast(tmp, v);
    if (n > 0) {
        sg_buf_append(b, tmp, n);
        return;
    }
    /* Outside the fast range: the shortest of %.15g / %.16g / %.17g that
     * reads back, checked by strtod. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v) {
            break;
        }
    }
    sg_buf_puts(b, tmp);
}

void sg_buf_put_u64(struct sg_buf *b, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    *--p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sg_buf_append(b, p, (size_t)(tmp + sizeof tmp - 1 - p));
}

void sg_buf_put_json_str(struct sg_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sg_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            sg_buf_putc(b, '\\');
            sg_buf_putc(b, (char)c);
        } else if (c < 0x20) {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            sg_buf_append(b, esc, 6);
        } else {
            sg_buf_putc(b, (char)c);
        }
    }
    sg_buf_putc(b, '"');
}

void sg_buf_reset(struct sg_buf *b)
{
    b->len = 0;
    if (b->data) {
        b->data[0] = '\0';
    }
}

void sg_buf_free(struct sg_buf *b)
{
    if (b == NULL) {
        return;
    }
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

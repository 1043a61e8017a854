/*
 * buf: growable byte buffer with JSON-friendly appenders. Doubles are
 * printed with the fewest digits that read back to the same value, so a
 * rollup survives JSON exactly.
 */
#include "buf.h"
#include "common.h"

#include <inttypes.h>
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

void sg_buf_append(struct sg_buf *b, const void *p, size_t n)
{
    sg_buf_reserve(b, n);
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}

void sg_buf_puts(struct sg_buf *b, const char *s)
{
    sg_buf_append(b, s, strlen(s));
}

void sg_buf_putc(struct sg_buf *b, char c)
{
    sg_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
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

void sg_buf_put_double(struct sg_buf *b, double v)
{
    if (!isfinite(v)) {
        sg_buf_puts(b, "null");
        return;
    }
    if (v == 0.0) {
        /* JSON has no negative zero worth keeping; the sign is noise here. */
        sg_buf_putc(b, '0');
        return;
    }
    /* Integers that fit exactly print without an exponent or a dot. */
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
        sg_buf_printf(b, "%" PRId64, (int64_t)v);
        return;
    }
    char tmp[32];
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

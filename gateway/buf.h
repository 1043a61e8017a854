/*
 * buf: a growable byte buffer that is reused, not reallocated, on hot paths
 * (reset keeps the capacity). Owned by whoever embeds it; one thread.
 */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sg_buf {
    char *data;    /* NUL-terminated when len < cap; may be NULL when cap == 0 */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
};

#define SG_BUF_INIT {NULL, 0, 0}

/* Makes room for n more bytes (amortised doubling). Aborts on OOM. */
void sg_buf_reserve(struct sg_buf *b, size_t n);

/* Appends n bytes (and keeps the NUL). Inline: the encoder calls it per
 * field, and the room check is all it needs in the common case. */
static inline void sg_buf_append(struct sg_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        sg_buf_reserve(b, n);
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void sg_buf_puts(struct sg_buf *b, const char *s)
{
    sg_buf_append(b, s, strlen(s));
}

static inline void sg_buf_putc(struct sg_buf *b, char c)
{
    if (b->len + 2 > b->cap) {
        sg_buf_reserve(b, 1);
    }
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}
/* printf-style append. */
void sg_buf_printf(struct sg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a double so that it reads back to the same bits (shortest of
 * %.15g/%.16g/%.17g that round-trips). Non-finite values become null. */
void sg_buf_put_double(struct sg_buf *b, double v);
void sg_buf_put_u64(struct sg_buf *b, uint64_t v);
/* Appends s as a JSON string with quotes and escapes. */
void sg_buf_put_json_str(struct sg_buf *b, const char *s);
/* len = 0, capacity kept. */
void sg_buf_reset(struct sg_buf *b);
/* Frees the storage; the struct can be reused afterwards. NULL-safe. */
void sg_buf_free(struct sg_buf *b);

#endif

/*
 * decode_int.h: the decode module's insides, shared by gateway/decode.c (the
 * direct decoder, in the gateway) and tests/ref/decode_ref.c (the protobuf-c
 * reference decoder, linked only into tests and fuzzers). Nothing else
 * includes this header; the gateway sees decode.h only.
 *
 * Both decoders must accept and reject exactly the same bytes, so the wire
 * primitives and the verdict live here once, as static inline functions
 * (the direct decoder's hot loop inlines them).
 */
#ifndef SG_DECODE_INT_H
#define SG_DECODE_INT_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "reading.h"

#define SG_DECODE__WT_VARINT 0
#define SG_DECODE__WT_I64 1
#define SG_DECODE__WT_LEN 2
#define SG_DECODE__WT_I32 5

/* ReadingBatch and Reading field numbers we look at (proto/sensegate.proto). */
#define SG_DECODE__BATCH_DEVICE_ID 1
#define SG_DECODE__BATCH_READINGS 2
#define SG_DECODE__READING_SENSOR_ID 1

/* protobuf-c's arena rounds every allocation to this; the direct decoder
 * computes the same figure. */
#define SG_DECODE__ARENA_ALIGN ((size_t)alignof(max_align_t))

struct sg_decoder {
    struct sg_decode_limits lim;

    size_t arena_cap;  /* bytes: protobuf-c's arena cap, measured or computed against */
    size_t arena_peak; /* bytes, high-water mark of arena_last */
    size_t arena_last; /* bytes, arena use of the last call (measured or computed) */

    /* Output array, grown amortised up to max_readings_per_batch. */
    struct sg_reading *readings;
    size_t rcap; /* entries allocated in readings */

    size_t excess; /* readings beyond the limit in the last batch */

    /* The reference decoder's own state (its arena and sensor_id lengths),
     * made on its first call and freed by sg_decoder_free through ref_free.
     * Always NULL in the gateway. */
    void *ref;
    void (*ref_free)(void *ref);
};

/* What both decoders do first: clear the outputs, check the arguments and
 * the size cap, answer the empty payload. Returns 1 to go on decoding, or
 * the final result (0 for an empty batch, or a negative SG_E*). */
int sg_decode__prologue(struct sg_decoder *d, const uint8_t *buf, size_t len,
                        const struct sg_reading **readings, size_t *nreadings);

/* The capacity to grow an array of cap entries to so that it holds at least
 * n (n <= max_readings_per_batch, checked by the caller): amortised
 * doubling, capped at the limit. */
size_t sg_decode__grown_cap(const struct sg_decoder *d, size_t cap, size_t n);

/* Grows d->readings to hold at least n entries (aborts on OOM). */
void sg_decode__ensure_readings(struct sg_decoder *d, size_t n);

/* Scans one Reading's fields in p[0..end). Sets *idlen to the wire length of
 * the last sensor_id occurrence (protobuf-c keeps the last), 0 if absent.
 * False when the framing is not what protobuf-c accepts. */
bool sg_decode__scan_reading(const uint8_t *p, const uint8_t *end, uint32_t *idlen);

/* --- wire primitives ----------------------------------------------------- */

/* Reads a varint of at most maxb bytes at *pp (< end). Returns false if it
 * is unterminated within maxb bytes or the buffer. */
static inline bool sg_decode__get_varint(const uint8_t **pp, const uint8_t *end, unsigned maxb,
                                         uint64_t *v)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        /* One byte: tags, kinds, small counters. */
        *v = *p;
        *pp = p + 1;
        return true;
    }
    uint64_t r = 0;
    for (unsigned i = 0; i < maxb; i++) {
        if (p + i >= end) {
            return false;
        }
        uint8_t c = p[i];
        r |= (uint64_t)(c & 0x7f) << (7 * i);
        if ((c & 0x80) == 0) {
            *v = r;
            *pp = p + i + 1;
            return true;
        }
    }
    return false;
}

/* A tag as protobuf-c reads it: at most 5 bytes, field number 1..2^32-1. */
static inline bool sg_decode__get_tag(const uint8_t **pp, const uint8_t *end, uint64_t *field,
                                      unsigned *wt)
{
    uint64_t v;
    if (!sg_decode__get_varint(pp, end, 5, &v)) {
        return false;
    }
    *field = v >> 3;
    *wt = (unsigned)(v & 7);
    return *field != 0;
}

/* A length prefix: at most 5 bytes, a value that fits 32 bits (protobuf-c
 * would silently truncate more) and that fits in what is left. */
static inline bool sg_decode__get_len(const uint8_t **pp, const uint8_t *end, size_t *len)
{
    uint64_t v;
    if (!sg_decode__get_varint(pp, end, 5, &v) || v > UINT32_MAX || v > (uint64_t)(end - *pp)) {
        return false;
    }
    *len = (size_t)v;
    return true;
}

/* Skips the value of a field of wire type wt at *pp. Wire types 3 and 4
 * (groups) and 6, 7 are rejected, as protobuf-c does. */
static inline bool sg_decode__skip_value(const uint8_t **pp, const uint8_t *end, unsigned wt)
{
    uint64_t v;
    size_t n;
    switch (wt) {
    case SG_DECODE__WT_VARINT:
        return sg_decode__get_varint(pp, end, 10, &v);
    case SG_DECODE__WT_I64:
        n = 8;
        break;
    case SG_DECODE__WT_I32:
        n = 4;
        break;
    case SG_DECODE__WT_LEN:
        if (!sg_decode__get_len(pp, end, &n)) {
            return false;
        }
        break;
    default:
        return false;
    }
    if (n > (size_t)(end - *pp)) {
        return false;
    }
    *pp += n;
    return true;
}

/* --- verdict --------------------------------------------------------------- */

/* The invalid reason of a decoded reading, the same for both decoders:
 * idlen is the sensor_id's length on the wire and clen its C-string length
 * (they differ when it holds a NUL); nv the number of values on the wire. */
static inline int sg_decode__verdict(const struct sg_reading *r, size_t idlen, size_t clen,
                                     size_t nv, uint64_t now_ms, const struct sg_decode_limits *lim)
{
    if (idlen != clen || idlen > SG_SENSOR_ID_MAX) {
        return SG_INVALID_SENSOR_ID;
    }
    int inv = sg_reading_validate(r, now_ms, lim->max_past_ms, lim->max_future_ms);
    if (inv == SG_INVALID_NONE && nv > SG_MAX_CHANNELS) {
        inv = SG_INVALID_CHANNELS;
    }
    return inv;
}

#endif

/*
 * decode: protobuf ReadingBatch -> validated struct sg_reading[].
 *
 * Steps per payload, all inside sg_decode_batch():
 *  1. Size cap (SG_ETOOBIG).
 *  2. Wire pre-scan (no allocation): checks the framing of the batch and of
 *     each Reading, records each Reading's sensor_id wire length (protobuf-c
 *     drops it, so an embedded NUL would silently truncate the id), counts
 *     the readings and remembers where the first reading beyond
 *     max_readings_per_batch starts. The pre-scan is never more lenient than
 *     protobuf-c about framing, so protobuf-c sees the same readings in the
 *     same order.
 *  3. protobuf-c unpack of the payload prefix that holds the readings within
 *     the limit, with an allocator backed by the decoder's bump arena. The
 *     arena has a hard cap: when it is exhausted the allocator returns NULL
 *     and protobuf-c unwinds cleanly (SG_EDECODE).
 *  4. Copy every reading into the decoder's array, validate it, reset the
 *     arena. Nothing from protobuf-c outlives the call.
 *
 * Invariants: the arena and the arrays are allocated at creation or grown
 * amortised, never per message (readings only after protobuf-c accepted the
 * payload, so a rejected bomb never grows it); readings[i] for i < nreadings
 * comes from the same wire Reading as idlen[i].
 *
 * Thread: whoever owns the decoder (the loop thread).
 */
#include "decode.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sensegate.pb-c.h"

#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

#define ARENA_ALIGN ((size_t)alignof(max_align_t))
#define INITIAL_READINGS 256u

/* ReadingBatch and Reading field numbers we look at (proto/sensegate.proto). */
#define BATCH_DEVICE_ID 1
#define BATCH_READINGS 2
#define READING_SENSOR_ID 1

struct sg_decoder {
    struct sg_decode_limits lim;

    /* Bump arena behind protobuf-c's allocator; reset on every call. */
    unsigned char *arena;
    size_t arena_cap;    /* bytes */
    size_t arena_used;   /* bytes */
    size_t arena_peak;   /* bytes, high-water mark of arena_used */
    ProtobufCAllocator alloc;

    /* Output array, and the pre-scan's sensor_id wire lengths by the same
     * index. Grown apart: idlen during the pre-scan (4 bytes a reading),
     * readings only once protobuf-c has accepted the payload. */
    struct sg_reading *readings;
    size_t rcap;         /* entries allocated in readings */
    uint32_t *idlen;
    size_t icap;         /* entries allocated in idlen */

    size_t excess;       /* readings beyond the limit in the last batch */
};

static const struct sg_reading excess_reading = {
    .invalid = SG_INVALID_BATCH_LIMIT,
};

static void *arena_alloc(void *data, size_t size)
{
    struct sg_decoder *d = data;
    size_t room = d->arena_cap - d->arena_used;

    /* Round up without overflow: reject first, then align. */
    if (size > room) {
        return NULL;
    }
    size_t need = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (need > room) {
        return NULL;
    }
    void *p = d->arena + d->arena_used;
    d->arena_used += need;
    return p;
}

static void arena_free(void *data, void *ptr)
{
    /* Bump arena: memory comes back all at once when the call ends. */
    (void)data;
    (void)ptr;
}

int sg_decoder_new(struct sg_decoder **out, const struct sg_decode_limits *lim)
{
    if (out == NULL || lim == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;

    struct sg_decoder *d = sg_xcalloc(1, sizeof *d);
    d->lim = *lim;
    if (d->lim.max_payload_bytes == 0) {
        d->lim.max_payload_bytes = SG_DECODE_DEFAULT_MAX_PAYLOAD;
    }
    if (d->lim.max_readings_per_batch == 0) {
        d->lim.max_readings_per_batch = SG_DECODE_DEFAULT_MAX_READINGS;
    }
    size_t arena = d->lim.arena_bytes;
    if (arena == 0) {
        /* 16x the payload covers protobuf-c's measured 3-5x expansion of
         * real batches with room to spare; saturate instead of wrapping. */
        arena = d->lim.max_payload_bytes > SG_DECODE_ARENA_MAX / 16 ? SG_DECODE_ARENA_MAX
                                                                     : 16 * d->lim.max_payload_bytes;
    }
    if (arena < SG_DECODE_ARENA_MIN) {
        arena = SG_DECODE_ARENA_MIN;
    }
    if (arena > SG_DECODE_ARENA_MAX) {
        arena = SG_DECODE_ARENA_MAX;
    }
    d->lim.arena_bytes = arena;

    /* malloc'd up front; pages the decoder never touches cost no RSS. */
    d->arena = sg_xmalloc(arena);
    d->arena_cap = arena;
    d->alloc.alloc = arena_alloc;
    d->alloc.free = arena_free;
    d->alloc.allocator_data = d;

    size_t cap = d->lim.max_readings_per_batch < INITIAL_READINGS ? d->lim.max_readings_per_batch
                                                                   : INITIAL_READINGS;
    d->readings = sg_xmalloc(cap * sizeof *d->readings);
    d->rcap = cap;
    d->idlen = sg_xmalloc(cap * sizeof *d->idlen);
    d->icap = cap;
    *out = d;
    return 0;
}

void sg_decoder_free(struct sg_decoder *d)
{
    if (d == NULL) {
        return;
    }
    free(d->arena);
    free(d->readings);
    free(d->idlen);
    free(d);
}

size_t sg_decode_excess(const struct sg_decoder *d)
{
    return d != NULL ? d->excess : 0;
}

const struct sg_reading *sg_decode_excess_reading(void)
{
    return &excess_reading;
}

size_t sg_decoder_arena_peak(const struct sg_decoder *d)
{
    return d != NULL ? d->arena_peak : 0;
}

/* Returns the capacity to grow an array of cap entries to so that it holds
 * at least n (n <= max_readings_per_batch, checked by the caller):
 * amortised doubling, capped at the limit. */
static size_t grown_cap(const struct sg_decoder *d, size_t cap, size_t n)
{
    size_t c = cap * 2;
    if (c < n) {
        c = n;
    }
    if (c > d->lim.max_readings_per_batch) {
        c = d->lim.max_readings_per_batch;
    }
    return c;
}

static void ensure_idlen(struct sg_decoder *d, size_t n)
{
    if (n > d->icap) {
        d->icap = grown_cap(d, d->icap, n);
        d->idlen = sg_xrealloc(d->idlen, d->icap * sizeof *d->idlen);
    }
}

static void ensure_readings(struct sg_decoder *d, size_t n)
{
    if (n > d->rcap) {
        d->rcap = grown_cap(d, d->rcap, n);
        d->readings = sg_xrealloc(d->readings, d->rcap * sizeof *d->readings);
    }
}

/* --- wire pre-scan ------------------------------------------------------ */

/* Reads a varint of at most maxb bytes at *pp (< end). Returns false if it
 * is unterminated within maxb bytes or the buffer. */
static inline bool get_varint(const uint8_t **pp, const uint8_t *end, unsigned maxb,
                              uint64_t *v)
{
    const uint8_t *p = *pp;
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
static inline bool get_tag(const uint8_t **pp, const uint8_t *end, uint64_t *field,
                           unsigned *wt)
{
    uint64_t v;
    if (!get_varint(pp, end, 5, &v)) {
        return false;
    }
    *field = v >> 3;
    *wt = (unsigned)(v & 7);
    return *field != 0;
}

/* A length prefix: at most 5 bytes, a value that fits 32 bits (protobuf-c
 * would silently truncate more) and that fits in what is left. */
static inline bool get_len(const uint8_t **pp, const uint8_t *end, size_t *len)
{
    uint64_t v;
    if (!get_varint(pp, end, 5, &v) || v > UINT32_MAX || v > (uint64_t)(end - *pp)) {
        return false;
    }
    *len = (size_t)v;
    return true;
}

/* Skips the value of a field of wire type wt at *pp. Wire types 3 and 4
 * (groups) and 6, 7 are rejected, as protobuf-c does. */
static inline bool skip_value(const uint8_t **pp, const uint8_t *end, unsigned wt)
{
    uint64_t v;
    size_t n;
    switch (wt) {
    case WT_VARINT:
        return get_varint(pp, end, 10, &v);
    case WT_I64:
        n = 8;
        break;
    case WT_I32:
        n = 4;
        break;
    case WT_LEN:
        if (!get_len(pp, end, &n)) {
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

/* Scans one Reading's fields in p[0..end). Sets *idlen to the wire length of
 * the last sensor_id occurrence (protobuf-c keeps the last), 0 if absent. */
static bool scan_reading(const uint8_t *p, const uint8_t *end, uint32_t *idlen)
{
    uint32_t id = 0;
    while (p < end) {
        uint64_t field;
        unsigned wt;
        if (!get_tag(&p, end, &field, &wt)) {
            return false;
        }
        if (field == READING_SENSOR_ID) {
            size_t n;
            /* protobuf-c rejects a string with another wire type too. */
            if (wt != WT_LEN || !get_len(&p, end, &n)) {
                return false;
            }
            id = (uint32_t)n;
            p += n;
        } else if (!skip_value(&p, end, wt)) {
            return false;
        }
    }
    *idlen = id;
    return true;
}

/* Scans the whole batch. On success *count = readings on the wire and
 * *cut = bytes of buf that hold everything before the first reading beyond
 * the limit (len if none). Stores idlen[] for readings within the limit. */
static bool scan_batch(struct sg_decoder *d, const uint8_t *buf, size_t len, size_t *count,
                       size_t *cut)
{
    const uint8_t *p = buf;
    const uint8_t *end = buf + len;
    size_t limit = d->lim.max_readings_per_batch;
    size_t n = 0;

    *cut = len;
    while (p < end) {
        const uint8_t *field_start = p;
        uint64_t field;
        unsigned wt;
        if (!get_tag(&p, end, &field, &wt)) {
            return false;
        }
        if (field == BATCH_READINGS || field == BATCH_DEVICE_ID) {
            size_t flen;
            if (wt != WT_LEN || !get_len(&p, end, &flen)) {
                return false;
            }
            if (field == BATCH_READINGS) {
                uint32_t idlen = 0;
                if (!scan_reading(p, p + flen, &idlen)) {
                    return false;
                }
                if (n < limit) {
                    ensure_idlen(d, n + 1);
                    d->idlen[n] = idlen;
                } else if (n == limit) {
                    *cut = (size_t)(field_start - buf);
                }
                n++;
            }
            p += flen;
        } else if (!skip_value(&p, end, wt)) {
            return false;
        }
    }
    *count = n;
    return true;
}

/* --- copy and validate ---------------------------------------------------- */

static inline void copy_reading(struct sg_reading *r, const Sensegate__V1__Reading *m,
                                uint32_t idlen, uint64_t now_ms, const struct sg_decode_limits *lim)
{
    const char *id = m->sensor_id != NULL ? m->sensor_id : "";
    /* protobuf-c NUL-terminates every string, so strnlen stays in bounds;
     * a C length shorter than the wire length means an embedded NUL. */
    size_t clen = strnlen(id, SG_SENSOR_ID_MAX + 1);
    size_t keep = clen > SG_SENSOR_ID_MAX ? SG_SENSOR_ID_MAX : clen;
    memcpy(r->sensor_id, id, keep);
    r->sensor_id[keep] = '\0';
    r->id_len = (uint8_t)keep;

    r->ts_ms = m->ts_ms;
    r->seq = m->seq;
    r->status = m->status;
    /* The enum arrives as a raw int; keep it out of 1..9 when it is, so a
     * value like 265 cannot wrap into a valid uint8_t kind. */
    int kind = (int)m->kind;
    r->kind = (uint8_t)(kind >= 0 && kind <= 255 ? kind : 0);

    size_t nv = m->n_values;
    r->values[0] = 0.0;
    r->values[1] = 0.0;
    r->values[2] = 0.0;
    if (nv <= SG_MAX_CHANNELS) {
        if (nv > 0) {
            memcpy(r->values, m->values, nv * sizeof(double));
        }
        r->nvalues = (uint8_t)nv;
    } else {
        /* Too many to hold: copy none; validation then names kind or channels. */
        r->nvalues = 0;
    }

    int inv;
    if (idlen != clen || idlen > SG_SENSOR_ID_MAX) {
        inv = SG_INVALID_SENSOR_ID;
    } else {
        inv = sg_reading_validate(r, now_ms, lim->max_past_ms, lim->max_future_ms);
        if (inv == SG_INVALID_NONE && nv > SG_MAX_CHANNELS) {
            inv = SG_INVALID_CHANNELS;
        }
    }
    r->invalid = (uint8_t)inv;
}

int sg_decode_batch(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                    const struct sg_reading **readings, size_t *nreadings)
{
    if (readings != NULL) {
        *readings = NULL;
    }
    if (nreadings != NULL) {
        *nreadings = 0;
    }
    if (d == NULL || readings == NULL || nreadings == NULL || (buf == NULL && len > 0)) {
        return SG_EINVAL;
    }
    d->excess = 0;
    if (len > d->lim.max_payload_bytes) {
        return SG_ETOOBIG;
    }
    if (len == 0) {
        /* The empty message is a valid, empty ReadingBatch. */
        *readings = d->readings;
        return 0;
    }

    size_t count = 0;
    size_t cut = len;
    if (!scan_batch(d, buf, len, &count, &cut)) {
        return SG_EDECODE;
    }
    size_t limit = d->lim.max_readings_per_batch;
    size_t ndecode = count < limit ? count : limit;

    d->arena_used = 0;
    Sensegate__V1__ReadingBatch *b = sensegate__v1__reading_batch__unpack(&d->alloc, cut, buf);
    if (d->arena_used > d->arena_peak) {
        d->arena_peak = d->arena_used;
    }
    if (b == NULL || b->n_readings != ndecode) {
        /* The count check cannot fail when the pre-scan agrees with
         * protobuf-c; it keeps idlen[] honest if the two ever diverge. */
        d->arena_used = 0;
        return SG_EDECODE;
    }

    ensure_readings(d, ndecode);
    const struct sg_decode_limits *lim = &d->lim;
    for (size_t i = 0; i < ndecode; i++) {
        copy_reading(&d->readings[i], b->readings[i], d->idlen[i], now_ms, lim);
    }
    /* Everything protobuf-c built lives in the arena: dropping it is free. */
    d->arena_used = 0;

    d->excess = count - ndecode;
    *readings = d->readings;
    *nreadings = ndecode;
    return 0;
}

/* --- topic ------------------------------------------------------------- */

bool sg_decode_topic_ok(const char *topic, size_t len)
{
    static const char prefix[] = "sensors/";
    const size_t plen = sizeof prefix - 1;

    if (topic == NULL || len <= plen || memcmp(topic, prefix, plen) != 0) {
        return false;
    }
    unsigned levels = 2; /* "sensors" and the one being read */
    size_t seglen = 0;
    for (size_t i = plen; i < len; i++) {
        char c = topic[i];
        if (c == '\0' || c == '+' || c == '#') {
            return false;
        }
        if (c == '/') {
            if (seglen == 0) {
                return false;
            }
            levels++;
            seglen = 0;
        } else {
            seglen++;
        }
    }
    return levels == 4 && seglen > 0;
}

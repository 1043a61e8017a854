/*
 * decode_ref: the protobuf-c reference decoder (see decode_ref.h), the path
 * the gateway used before its direct decoder, kept so that the direct one
 * can be checked against protobuf-c on every input. Linked only into tests
 * and fuzzers.
 *
 *  1. Size cap (SG_ETOOBIG), in the prologue shared with the direct decoder.
 *  2. Wire pre-scan (no allocation): checks the framing of the batch and of
 *     each Reading, records each Reading's sensor_id wire length (protobuf-c
 *     drops it, so an embedded NUL would silently truncate the id), counts
 *     the readings and remembers where the first reading beyond
 *     max_readings_per_batch starts. The pre-scan is never more lenient than
 *     protobuf-c about framing, so protobuf-c sees the same readings in the
 *     same order.
 *  3. protobuf-c unpack of the payload prefix that holds the readings within
 *     the limit, with an allocator backed by a bump arena of the decoder's
 *     arena cap. When it is exhausted the allocator returns NULL and
 *     protobuf-c unwinds cleanly (SG_EDECODE).
 *  4. Copy every reading into the decoder's array, validate it with the
 *     verdict the direct decoder uses, reset the arena. Nothing from
 *     protobuf-c outlives the call.
 *
 * Invariants: readings[i] for i < nreadings comes from the same wire Reading
 * as idlen[i]; the readings array grows only after protobuf-c accepted the
 * payload.
 *
 * Thread: whoever owns the decoder.
 */
#include "decode_ref.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "decode_int.h"
#include "sensegate.pb-c.h"

/* What the reference keeps between calls, hung off the decoder (d->ref). */
struct ref_state {
    struct sg_decoder *d;
    /* Bump arena behind protobuf-c's allocator; reset on every call. */
    unsigned char *arena;
    size_t arena_used; /* bytes */
    ProtobufCAllocator alloc;
    /* The pre-scan's sensor_id wire lengths, by reading index. */
    uint32_t *idlen;
    size_t icap; /* entries allocated in idlen */
};

static void *arena_alloc(void *data, size_t size)
{
    struct ref_state *st = data;
    size_t room = st->d->arena_cap - st->arena_used;

    /* Round up without overflow: reject first, then align. */
    if (size > room) {
        return NULL;
    }
    size_t need = (size + SG_DECODE__ARENA_ALIGN - 1) & ~(SG_DECODE__ARENA_ALIGN - 1);
    if (need > room) {
        return NULL;
    }
    void *p = st->arena + st->arena_used;
    st->arena_used += need;
    return p;
}

static void arena_free(void *data, void *ptr)
{
    /* Bump arena: memory comes back all at once when the call ends. */
    (void)data;
    (void)ptr;
}

static void ref_free(void *p)
{
    struct ref_state *st = p;
    if (st == NULL) {
        return;
    }
    free(st->arena);
    free(st->idlen);
    free(st);
}

static struct ref_state *ref_of(struct sg_decoder *d)
{
    if (d->ref == NULL) {
        struct ref_state *st = sg_xcalloc(1, sizeof *st);
        st->d = d;
        /* malloc'd once; pages never touched cost no RSS. */
        st->arena = sg_xmalloc(d->arena_cap);
        st->alloc.alloc = arena_alloc;
        st->alloc.free = arena_free;
        st->alloc.allocator_data = st;
        d->ref = st;
        d->ref_free = ref_free;
    }
    return d->ref;
}

static void ensure_idlen(struct sg_decoder *d, struct ref_state *st, size_t n)
{
    if (n > st->icap) {
        st->icap = sg_decode__grown_cap(d, st->icap, n);
        st->idlen = sg_xrealloc(st->idlen, st->icap * sizeof *st->idlen);
    }
}

/* Scans the whole batch. On success *count = readings on the wire and
 * *cut = bytes of buf that hold everything before the first reading beyond
 * the limit (len if none). Stores idlen[] for readings within the limit. */
static bool scan_batch(struct sg_decoder *d, struct ref_state *st, const uint8_t *buf, size_t len,
                       size_t *count, size_t *cut)
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
        if (!sg_decode__get_tag(&p, end, &field, &wt)) {
            return false;
        }
        if (field == SG_DECODE__BATCH_READINGS || field == SG_DECODE__BATCH_DEVICE_ID) {
            size_t flen;
            if (wt != SG_DECODE__WT_LEN || !sg_decode__get_len(&p, end, &flen)) {
                return false;
            }
            if (field == SG_DECODE__BATCH_READINGS) {
                uint32_t idlen = 0;
                if (!sg_decode__scan_reading(p, p + flen, &idlen)) {
                    return false;
                }
                if (n < limit) {
                    ensure_idlen(d, st, n + 1);
                    st->idlen[n] = idlen;
                } else if (n == limit) {
                    *cut = (size_t)(field_start - buf);
                }
                n++;
            }
            p += flen;
        } else if (!sg_decode__skip_value(&p, end, wt)) {
            return false;
        }
    }
    *count = n;
    return true;
}

static void copy_reading(struct sg_reading *r, const Sensegate__V1__Reading *m, uint32_t idlen,
                         uint64_t now_ms, const struct sg_decode_limits *lim)
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

    r->invalid = (uint8_t)sg_decode__verdict(r, idlen, clen, nv, now_ms, lim);
}

int sg_decode_batch_reference(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                              const struct sg_reading **readings, size_t *nreadings)
{
    int pre = sg_decode__prologue(d, buf, len, readings, nreadings);
    if (pre <= 0) {
        return pre;
    }
    struct ref_state *st = ref_of(d);

    size_t count = 0;
    size_t cut = len;
    if (!scan_batch(d, st, buf, len, &count, &cut)) {
        return SG_EDECODE;
    }
    size_t limit = d->lim.max_readings_per_batch;
    size_t ndecode = count < limit ? count : limit;

    st->arena_used = 0;
    Sensegate__V1__ReadingBatch *b = sensegate__v1__reading_batch__unpack(&st->alloc, cut, buf);
    d->arena_last = st->arena_used;
    if (st->arena_used > d->arena_peak) {
        d->arena_peak = st->arena_used;
    }
    if (b == NULL || b->n_readings != ndecode) {
        /* The count check cannot fail when the pre-scan agrees with
         * protobuf-c; it keeps idlen[] honest if the two ever diverge. */
        st->arena_used = 0;
        return SG_EDECODE;
    }

    sg_decode__ensure_readings(d, ndecode);
    const struct sg_decode_limits *lim = &d->lim;
    for (size_t i = 0; i < ndecode; i++) {
        copy_reading(&d->readings[i], b->readings[i], st->idlen[i], now_ms, lim);
    }
    /* Everything protobuf-c built lives in the arena: dropping it is free. */
    st->arena_used = 0;

    d->excess = count - ndecode;
    *readings = d->readings;
    *nreadings = ndecode;
    return 0;
}

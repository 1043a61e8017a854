/*
 * decode: protobuf ReadingBatch -> validated struct sg_reading[].
 *
 * sg_decode_batch() (the gateway's path) decodes the wire format directly:
 *  1. Size cap (SG_ETOOBIG).
 *  2. One pass over the batch: each Reading within max_readings_per_batch
 *     is decoded straight into the decoder's array (varints, packed and
 *     unpacked doubles, fields in any order, last occurrence of a singular
 *     field wins, unknown fields skipped by wire type, GeoPoint checked and
 *     skipped) and validated; readings beyond the limit are only framed and
 *     counted. No allocation beyond amortised growth of the array.
 *  3. The arena bytes protobuf-c would have needed are summed on the way,
 *     and a payload over the arena cap is SG_EDECODE, as before.
 * See "direct decoder" below for the exact rules it shares with protobuf-c.
 *
 * The protobuf-c reference decoder that the tests and fuzzers compare this
 * one with on every input is not here: it is tests/ref/decode_ref.c, a
 * library only tests and fuzzers link, so the gateway carries no protobuf-c
 * unpack path. Both share the wire primitives, the prologue and the verdict
 * through decode_int.h.
 *
 * Invariants: the readings array is allocated at creation and grown
 * amortised, never per message. It grows while decoding, but stops as soon
 * as the computed arena need passes the cap (each reading costs protobuf-c
 * at least 96 arena bytes, a struct sg_reading is 112), so a bomb grows it
 * to at most about 1.2 x the arena cap, and never past
 * max_readings_per_batch.
 *
 * Thread: whoever owns the decoder (the loop thread).
 */
#include "decode.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "decode_int.h"
/* For the sizes of protobuf-c's structs only (the arena figure): nothing
 * here calls protobuf-c. */
#include "sensegate.pb-c.h"

#define INITIAL_READINGS 256u

static const struct sg_reading excess_reading = {
    .invalid = SG_INVALID_BATCH_LIMIT,
};

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

    /* Only a figure here: the direct decoder computes what protobuf-c's
     * arena would take and holds payloads to it. */
    d->arena_cap = arena;

    size_t cap = d->lim.max_readings_per_batch < INITIAL_READINGS ? d->lim.max_readings_per_batch
                                                                   : INITIAL_READINGS;
    d->readings = sg_xmalloc(cap * sizeof *d->readings);
    d->rcap = cap;
    *out = d;
    return 0;
}

void sg_decoder_set_limits(struct sg_decoder *d, size_t max_readings_per_batch,
                           uint64_t max_past_ms, uint64_t max_future_ms)
{
    if (d == NULL) {
        return;
    }
    /* The readings arrays grow on demand up to this limit (grown_cap). */
    d->lim.max_readings_per_batch =
        max_readings_per_batch ? max_readings_per_batch : SG_DECODE_DEFAULT_MAX_READINGS;
    d->lim.max_past_ms = max_past_ms;
    d->lim.max_future_ms = max_future_ms;
}

void sg_decoder_free(struct sg_decoder *d)
{
    if (d == NULL) {
        return;
    }
    free(d->readings);
    if (d->ref_free != NULL) {
        d->ref_free(d->ref);
    }
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

size_t sg_decoder_arena_last(const struct sg_decoder *d)
{
    return d != NULL ? d->arena_last : 0;
}

/* Returns the capacity to grow an array of cap entries to so that it holds
 * at least n (n <= max_readings_per_batch, checked by the caller):
 * amortised doubling, capped at the limit. */
size_t sg_decode__grown_cap(const struct sg_decoder *d, size_t cap, size_t n)
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

void sg_decode__ensure_readings(struct sg_decoder *d, size_t n)
{
    if (n > d->rcap) {
        d->rcap = sg_decode__grown_cap(d, d->rcap, n);
        d->readings = sg_xrealloc(d->readings, d->rcap * sizeof *d->readings);
    }
}

/* --- shared with the reference (decode_int.h) ---------------------------- */

/* Scans one Reading's fields in p[0..end). Sets *idlen to the wire length of
 * the last sensor_id occurrence (protobuf-c keeps the last), 0 if absent. */
bool sg_decode__scan_reading(const uint8_t *p, const uint8_t *end, uint32_t *idlen)
{
    uint32_t id = 0;
    while (p < end) {
        uint64_t field;
        unsigned wt;
        if (!sg_decode__get_tag(&p, end, &field, &wt)) {
            return false;
        }
        if (field == SG_DECODE__READING_SENSOR_ID) {
            size_t n;
            /* protobuf-c rejects a string with another wire type too. */
            if (wt != SG_DECODE__WT_LEN || !sg_decode__get_len(&p, end, &n)) {
                return false;
            }
            id = (uint32_t)n;
            p += n;
        } else if (!sg_decode__skip_value(&p, end, wt)) {
            return false;
        }
    }
    *idlen = id;
    return true;
}

/* What both decoders do first: clear the outputs, check the arguments and
 * the size cap, answer the empty payload. Returns 1 to go on decoding, or
 * the final result (0 for an empty batch, or a negative SG_E*). */
int sg_decode__prologue(struct sg_decoder *d, const uint8_t *buf, size_t len,
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
    d->arena_last = 0;
    if (len > d->lim.max_payload_bytes) {
        return SG_ETOOBIG;
    }
    if (len == 0) {
        /* The empty message is a valid, empty ReadingBatch. */
        *readings = d->readings;
        return 0;
    }
    return 1;
}

/* --- direct decoder ------------------------------------------------------ */

/*
 * sg_decode_batch() decodes the wire format straight into struct sg_reading
 * and must answer exactly as sg_decode_batch_reference() in
 * tests/ref/decode_ref.c (pre-scan + protobuf-c 1.4) does, which tests/unit/test_decode.c and
 * fuzz/fuzz_decode.c check on every input. What that takes:
 *  - the pre-scan's framing rules (tags of at most 5 bytes and field != 0,
 *    length prefixes of at most 5 bytes that fit, varints of at most 10
 *    bytes, wire types 3, 4, 6, 7 rejected) everywhere, and beyond the
 *    readings limit only those (protobuf-c never sees the excess readings);
 *  - protobuf-c's type checks on the readings it would unpack: a known
 *    field with another wire type fails, values take packed (length a
 *    multiple of 8) and unpacked (64-bit) doubles, position must be a
 *    well-formed GeoPoint whose lat/lon are 64-bit;
 *  - protobuf-c's values: varints cut to 32 bits for kind (as int32), seq
 *    and status, to 64 for ts_ms; the last occurrence of a singular field
 *    wins; values of all occurrences are concatenated;
 *  - protobuf-c's arena use, computed instead of allocated (arena_need*):
 *    every allocation unpack makes from the arena, rounded like
 *    arena_alloc(); a payload that would not fit the arena cap is
 *    SG_EDECODE, as with the arena. This is checked byte for byte against
 *    the measured arena by the differential test.
 */

#define A16(n) (((n) + SG_DECODE__ARENA_ALIGN - 1) & ~(SG_DECODE__ARENA_ALIGN - 1))
/* protobuf-c's ScannedMember (protobuf-c.c): tag, wire type, prefix length,
 * field, len, data = 32 bytes on LP64; the first 16 live on the stack. */
#define SCANNED_MEMBER_BYTES (4 * sizeof(void *))

/* Arena bytes protobuf-c takes for the scanned-member slabs of a message of
 * nfields fields: slab k >= 1 holds 16 << k members and is allocated when
 * member 16 * (2^k - 1) + 1 arrives. */
static size_t arena_need_slabs(size_t nfields)
{
    size_t bytes = 0;
    for (unsigned k = 1; k < 24 && nfields > ((size_t)16 << k) - 16; k++) {
        bytes += A16(SCANNED_MEMBER_BYTES << (k + 4));
    }
    return bytes;
}

/* Arena bytes for the unknown-field array and the copies of n fields whose
 * copies took ubytes (each already rounded). */
static inline size_t arena_need_unknown(size_t n, size_t ubytes)
{
    return n > 0 ? A16(n * sizeof(ProtobufCMessageUnknownField)) + ubytes : 0;
}

/* Skips an unknown field's value like sg_decode__skip_value() and adds the arena bytes
 * protobuf-c's copy of it takes. */
static inline bool skip_unknown(const uint8_t **pp, const uint8_t *end, unsigned wt,
                                size_t *nunknown, size_t *ubytes)
{
    const uint8_t *s = *pp;
    if (!sg_decode__skip_value(pp, end, wt)) {
        return false;
    }
    (*nunknown)++;
    *ubytes += A16((size_t)(*pp - s));
    return true;
}

/* Checks a GeoPoint p[0..end) as protobuf-c unpacks it (lat and lon must be
 * 64-bit) and adds its arena bytes to *need. The values are not used. */
static bool check_geo(const uint8_t *p, const uint8_t *end, size_t *need)
{
    size_t nfields = 0, nunknown = 0, ubytes = 0;
    while (p < end) {
        /* The pre-scan never looks in here, so protobuf-c's own tag rule
         * applies: only a first byte with no field bits is refused, a
         * longer encoding of field 0 is an unknown field. */
        uint64_t tag;
        if ((*p & 0xf8) == 0 || !sg_decode__get_varint(&p, end, 5, &tag)) {
            return false;
        }
        uint64_t field = tag >> 3;
        unsigned wt = (unsigned)(tag & 7);
        nfields++;
        if (field == 1 || field == 2) {
            if (wt != SG_DECODE__WT_I64 || (size_t)(end - p) < 8) {
                return false;
            }
            p += 8;
        } else if (!skip_unknown(&p, end, wt, &nunknown, &ubytes)) {
            return false;
        }
    }
    *need += A16(sizeof(Sensegate__V1__GeoPoint)) + arena_need_slabs(nfields) +
             arena_need_unknown(nunknown, ubytes);
    return true;
}

/* Reads a varint field's value (wire type must be varint). */
static inline bool get_varint_field(const uint8_t **pp, const uint8_t *end, unsigned wt,
                                    uint64_t *v)
{
    return wt == SG_DECODE__WT_VARINT && sg_decode__get_varint(pp, end, 10, v);
}

static inline double load_double(const uint8_t *p)
{
    /* Little-endian wire, little-endian host (x86-64, arm64), as protobuf-c
     * assumes on these hosts too. */
    double x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* Decodes one Reading p[0..end) into *r (validated) and adds the arena
 * bytes protobuf-c would take for it to *need. False = SG_EDECODE. */
static bool decode_reading(const uint8_t *p, const uint8_t *end, struct sg_reading *r,
                           uint64_t now_ms, const struct sg_decode_limits *lim, size_t *need)
{
    const uint8_t *id = NULL;
    size_t idlen = 0;
    uint64_t kind = 0, ts = 0, seq = 0, status = 0;
    size_t nv = 0;
    size_t nfields = 0, nunknown = 0, ubytes = 0;
    size_t bytes = A16(sizeof(Sensegate__V1__Reading));

    r->values[0] = 0.0;
    r->values[1] = 0.0;
    r->values[2] = 0.0;
    while (p < end) {
        uint64_t field;
        unsigned wt;
        size_t n;
        if (!sg_decode__get_tag(&p, end, &field, &wt)) {
            return false;
        }
        nfields++;
        switch (field) {
        case 1: /* sensor_id */
            if (wt != SG_DECODE__WT_LEN || !sg_decode__get_len(&p, end, &n)) {
                return false;
            }
            id = p;
            idlen = n;
            bytes += A16(n + 1);
            p += n;
            break;
        case 2: /* kind */
            if (!get_varint_field(&p, end, wt, &kind)) {
                return false;
            }
            break;
        case 3: /* ts_ms */
            if (!get_varint_field(&p, end, wt, &ts)) {
                return false;
            }
            break;
        case 4: /* seq */
            if (!get_varint_field(&p, end, wt, &seq)) {
                return false;
            }
            break;
        case 5: /* values, packed or not */
            if (wt == SG_DECODE__WT_LEN) {
                if (!sg_decode__get_len(&p, end, &n) || n % 8 != 0) {
                    return false;
                }
                size_t cnt = n / 8;
                for (size_t i = 0; i < cnt && nv + i < SG_MAX_CHANNELS; i++) {
                    r->values[nv + i] = load_double(p + 8 * i);
                }
                nv += cnt;
                p += n;
            } else if (wt == SG_DECODE__WT_I64) {
                if ((size_t)(end - p) < 8) {
                    return false;
                }
                if (nv < SG_MAX_CHANNELS) {
                    r->values[nv] = load_double(p);
                }
                nv++;
                p += 8;
            } else {
                return false;
            }
            break;
        case 6: /* status */
            if (!get_varint_field(&p, end, wt, &status)) {
                return false;
            }
            break;
        case 7: /* position */
            if (wt != SG_DECODE__WT_LEN || !sg_decode__get_len(&p, end, &n) || !check_geo(p, p + n, &bytes)) {
                return false;
            }
            p += n;
            break;
        default:
            if (!skip_unknown(&p, end, wt, &nunknown, &ubytes)) {
                return false;
            }
            break;
        }
    }
    if (nv > 0) {
        bytes += A16(nv * sizeof(double));
    }
    *need += bytes + arena_need_slabs(nfields) + arena_need_unknown(nunknown, ubytes);

    /* sensor_id: as copy_reading() sees protobuf-c's NUL-terminated copy. */
    size_t scan = idlen < SG_SENSOR_ID_MAX + 1 ? idlen : SG_SENSOR_ID_MAX + 1;
    const uint8_t *nul = scan > 0 ? memchr(id, 0, scan) : NULL;
    size_t clen = nul != NULL ? (size_t)(nul - id) : scan;
    size_t keep = clen > SG_SENSOR_ID_MAX ? SG_SENSOR_ID_MAX : clen;
    if (keep > 0) {
        memcpy(r->sensor_id, id, keep);
    }
    r->sensor_id[keep] = '\0';
    r->id_len = (uint8_t)keep;

    r->ts_ms = ts;
    r->seq = (uint32_t)seq;
    r->status = (uint32_t)status;
    int32_t k = (int32_t)(uint32_t)kind;
    r->kind = (uint8_t)(k >= 0 && k <= 255 ? k : 0);
    if (nv > SG_MAX_CHANNELS) {
        /* Too many to hold: keep none, as copy_reading() does. */
        r->values[0] = 0.0;
        r->values[1] = 0.0;
        r->values[2] = 0.0;
        r->nvalues = 0;
    } else {
        r->nvalues = (uint8_t)nv;
    }

    r->invalid = (uint8_t)sg_decode__verdict(r, idlen, clen, nv, now_ms, lim);
    return true;
}

int sg_decode_batch(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                    const struct sg_reading **readings, size_t *nreadings)
{
    int pre = sg_decode__prologue(d, buf, len, readings, nreadings);
    if (pre <= 0) {
        return pre;
    }

    const uint8_t *p = buf;
    const uint8_t *end = buf + len;
    const struct sg_decode_limits *lim = &d->lim;
    const size_t limit = lim->max_readings_per_batch;
    const size_t cap = d->arena_cap;
    size_t n = 0;
    /* Arena bytes protobuf-c would take for the part before the cut. */
    size_t need = A16(sizeof(Sensegate__V1__ReadingBatch));
    size_t nfields = 0, nunknown = 0, ubytes = 0;

    while (p < end) {
        uint64_t field;
        unsigned wt;
        size_t flen;
        if (!sg_decode__get_tag(&p, end, &field, &wt)) {
            goto fail;
        }
        if (field == SG_DECODE__BATCH_READINGS || field == SG_DECODE__BATCH_DEVICE_ID) {
            if (wt != SG_DECODE__WT_LEN || !sg_decode__get_len(&p, end, &flen)) {
                goto fail;
            }
            if (field == SG_DECODE__BATCH_DEVICE_ID) {
                if (n <= limit) {
                    nfields++;
                    need += A16(flen + 1);
                }
            } else if (n < limit) {
                nfields++;
                if (n >= d->rcap) {
                    sg_decode__ensure_readings(d, n + 1);
                }
                if (!decode_reading(p, p + flen, &d->readings[n], now_ms, lim, &need)) {
                    goto fail;
                }
                /* Stop where the arena would have: this also bounds how far
                 * a bomb grows the readings array. */
                if (need > cap) {
                    goto fail;
                }
            } else {
                /* Beyond the limit: protobuf-c never sees it; framing only. */
                uint32_t unused;
                if (!sg_decode__scan_reading(p, p + flen, &unused)) {
                    goto fail;
                }
            }
            if (field == SG_DECODE__BATCH_READINGS) {
                n++;
            }
            p += flen;
        } else if (n <= limit) {
            nfields++;
            if (!skip_unknown(&p, end, wt, &nunknown, &ubytes)) {
                goto fail;
            }
        } else if (!sg_decode__skip_value(&p, end, wt)) {
            goto fail;
        }
    }

    size_t ndecode = n < limit ? n : limit;
    need += arena_need_slabs(nfields) + arena_need_unknown(nunknown, ubytes);
    if (ndecode > 0) {
        need += A16(ndecode * sizeof(void *));
    }
    if (need > cap) {
        goto fail;
    }
    d->arena_last = need;
    if (need > d->arena_peak) {
        d->arena_peak = need;
    }
    d->excess = n - ndecode;
    *readings = d->readings;
    *nreadings = ndecode;
    return 0;

fail:
    d->arena_last = need < cap ? need : cap;
    if (d->arena_last > d->arena_peak) {
        d->arena_peak = d->arena_last;
    }
    return SG_EDECODE;
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

/*
 * Unit tests for gateway/decode.c: good batches built with the generated
 * protobuf-c code, every invalid reason, hostile wire input (embedded NUL,
 * truncation at every offset, bad wire types, allocation bombs), the batch
 * limit, and the payload fixtures in tests/data/payloads/.
 *
 * `test_decode --write-fixtures DIR` (re)writes the fixtures; a normal run
 * checks that the committed files equal what this file generates and that
 * each decodes as its name says (good-*: every reading valid at FIX_NOW;
 * bad-*: SG_EDECODE or at least one invalid reading).
 *
 * Long file: one test per decoding rule, the differential harness against
 * the protobuf-c reference and the fixture writer all build payloads with
 * the same helpers at the top; split, they would each need a copy.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "decode.h"
#include "decode_ref.h"
#include "reading.h"
#include "sensegate.pb-c.h"
#include "sg_test.h"

#ifndef SG_TEST_DATA
#define SG_TEST_DATA "tests/data"
#endif

#define FIX_NOW 1700000000000ull   /* gateway clock of every test and fixture */
#define MAX_PAST 3600000ull
#define MAX_FUTURE 300000ull

/* --- payload builders ------------------------------------------------------ */

/* A growable byte string for hand-made wire data. */
struct wire {
    uint8_t *b;
    size_t n, cap;
};

static void w_bytes(struct wire *w, const void *p, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
        if (w->b == NULL) {
            abort();
        }
    }
    if (n > 0) {
        memcpy(w->b + w->n, p, n);
    }
    w->n += n;
}

static void w_varint(struct wire *w, uint64_t v)
{
    uint8_t c;
    do {
        c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) {
            c |= 0x80;
        }
        w_bytes(w, &c, 1);
    } while (v);
}

static void w_tag(struct wire *w, unsigned field, unsigned wt)
{
    w_varint(w, ((uint64_t)field << 3) | wt);
}

static void w_lenfield(struct wire *w, unsigned field, const void *p, size_t n)
{
    w_tag(w, field, 2);
    w_varint(w, n);
    w_bytes(w, p, n);
}

static void w_free(struct wire *w)
{
    free(w->b);
    memset(w, 0, sizeof *w);
}

/* A Reading message with up to 8 values held inline. */
struct rd {
    Sensegate__V1__Reading m;
    double v[8];
    Sensegate__V1__GeoPoint pos;
};

static void rd_init(struct rd *r, const char *id, int kind, uint64_t ts, uint32_t seq,
                    const double *vals, size_t nv)
{
    Sensegate__V1__Reading m = SENSEGATE__V1__READING__INIT;
    r->m = m;
    r->m.sensor_id = (char *)id;
    r->m.kind = (Sensegate__V1__Kind)kind;
    r->m.ts_ms = ts;
    r->m.seq = seq;
    for (size_t i = 0; i < nv && i < 8; i++) {
        r->v[i] = vals[i];
    }
    r->m.n_values = nv;
    r->m.values = r->v;
}

/* Packs a ReadingBatch of n readings into w (appended). */
static void pack_batch(struct wire *w, struct rd *rs, size_t n, const char *device_id)
{
    Sensegate__V1__ReadingBatch b = SENSEGATE__V1__READING_BATCH__INIT;
    Sensegate__V1__Reading **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = &rs[i].m;
    }
    b.device_id = (char *)(device_id ? device_id : "");
    b.n_readings = n;
    b.readings = ptrs;
    size_t sz = sensegate__v1__reading_batch__get_packed_size(&b);
    uint8_t *tmp = malloc(sz ? sz : 1);
    size_t got = sensegate__v1__reading_batch__pack(&b, tmp);
    if (got != sz) {
        abort();   /* protobuf-c broke its own contract; also used outside CUnit */
    }
    w_bytes(w, tmp, got);
    free(tmp);
    free(ptrs);
}

/* Packs one Reading (no batch framing) into w. */
static void pack_reading(struct wire *w, struct rd *r)
{
    size_t sz = sensegate__v1__reading__get_packed_size(&r->m);
    uint8_t *tmp = malloc(sz ? sz : 1);
    sensegate__v1__reading__pack(&r->m, tmp);
    w_bytes(w, tmp, sz);
    free(tmp);
}

/* A batch of one reading whose sensor_id bytes are given raw (may hold NUL). */
static void pack_raw_id(struct wire *w, const void *id, size_t idlen, int kind, double v)
{
    struct rd r;
    rd_init(&r, "", kind, FIX_NOW, 1, &v, 1);
    struct wire inner = {0};
    w_lenfield(&inner, 1, id, idlen);
    pack_reading(&inner, &r);   /* sensor_id "" is not written by proto3 */
    w_lenfield(w, 2, inner.b, inner.n);
    w_free(&inner);
}


/* --- differential harness -------------------------------------------------- */

/* Every decoder a test makes comes with a shadow decoder of the same limits;
 * dec_batch() runs sg_decode_batch() on the first and the protobuf-c
 * reference on the shadow, and checks that both agree exactly: return code,
 * count, excess, arena figure and every reading field by field. So every
 * payload of this file (good, invalid, truncated, mutated, bombs) is also a
 * differential case. */
#define MAX_PAIRS 8
static struct {
    struct sg_decoder *d, *ref;
} pairs[MAX_PAIRS];
static unsigned long diff_calls, diff_mismatch;

static int tdec_new(struct sg_decoder **out, const struct sg_decode_limits *lim)
{
    int rc = sg_decoder_new(out, lim);
    if (rc != 0) {
        return rc;
    }
    for (int i = 0; i < MAX_PAIRS; i++) {
        if (pairs[i].d == NULL) {
            pairs[i].d = *out;
            if (sg_decoder_new(&pairs[i].ref, lim) != 0) {
                abort();
            }
            return 0;
        }
    }
    abort();
}

static void tdec_free(struct sg_decoder *d)
{
    for (int i = 0; d != NULL && i < MAX_PAIRS; i++) {
        if (pairs[i].d == d) {
            sg_decoder_free(pairs[i].ref);
            pairs[i].d = NULL;
            pairs[i].ref = NULL;
        }
    }
    sg_decoder_free(d);
}

static bool same_reading(const struct sg_reading *a, const struct sg_reading *b)
{
    return a->ts_ms == b->ts_ms && a->seq == b->seq && a->status == b->status &&
           a->kind == b->kind && a->nvalues == b->nvalues && a->id_len == b->id_len &&
           a->invalid == b->invalid && memcmp(a->values, b->values, sizeof a->values) == 0 &&
           strcmp(a->sensor_id, b->sensor_id) == 0;
}

/* Compares the direct decoder with the reference on one payload; returns
 * true if they agree. */
static bool diff_one(struct sg_decoder *d, struct sg_decoder *ref, const uint8_t *buf, size_t len,
                     uint64_t now, int *rc_out, const struct sg_reading **rs, size_t *n)
{
    const struct sg_reading *ra = NULL, *rb = NULL;
    size_t na = 0, nb = 0;
    int rca = sg_decode_batch(d, buf, len, now, &ra, &na);
    int rcb = sg_decode_batch_reference(ref, buf, len, now, &rb, &nb);
    bool ok = rca == rcb && na == nb && (ra == NULL) == (rb == NULL) &&
              sg_decode_excess(d) == sg_decode_excess(ref);
    if (ok && rca == 0) {
        ok = sg_decoder_arena_last(d) == sg_decoder_arena_last(ref);
        for (size_t i = 0; ok && i < na; i++) {
            ok = same_reading(&ra[i], &rb[i]);
        }
    }
    *rc_out = rca;
    if (rs != NULL) {
        *rs = ra;
    }
    if (n != NULL) {
        *n = na;
    }
    return ok;
}

static int dec_batch(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now,
                     const struct sg_reading **rs, size_t *n)
{
    struct sg_decoder *ref = NULL;
    for (int i = 0; d != NULL && i < MAX_PAIRS; i++) {
        if (pairs[i].d == d) {
            ref = pairs[i].ref;
        }
    }
    if (ref == NULL || rs == NULL || n == NULL) {
        return sg_decode_batch(d, buf, len, now, rs, n);
    }
    int rc;
    diff_calls++;
    if (!diff_one(d, ref, buf, len, now, &rc, rs, n)) {
        diff_mismatch++;
        CU_FAIL("direct decoder and protobuf-c reference disagree");
    }
    return rc;
}

/* --- decoder fixture ------------------------------------------------------ */

static struct sg_decoder *dec;

static struct sg_decode_limits std_limits(void)
{
    struct sg_decode_limits lim = {
        .max_payload_bytes = 64 * 1024,
        .max_readings_per_batch = 1000,
        .arena_bytes = 0,
        .max_past_ms = MAX_PAST,
        .max_future_ms = MAX_FUTURE,
    };
    return lim;
}

static int suite_init(void)
{
    struct sg_decode_limits lim = std_limits();
    return tdec_new(&dec, &lim);
}

static int suite_clean(void)
{
    tdec_free(dec);
    dec = NULL;
    return 0;
}

/* Decodes w with the suite decoder at FIX_NOW. */
static int decode(const struct wire *w, const struct sg_reading **rs, size_t *n)
{
    return dec_batch(dec, w->b, w->n, FIX_NOW, rs, n);
}

/* Decodes a one-reading batch and returns its invalid reason (-100 - rc on
 * error, so a failure never looks like a reason). */
static int reason_of(const struct wire *w)
{
    const struct sg_reading *rs;
    size_t n;
    int rc = decode(w, &rs, &n);
    if (rc != 0) {
        return -100 + rc;
    }
    if (n != 1) {
        return -200;
    }
    return rs[0].invalid;
}

static int reason_one(const char *id, int kind, uint64_t ts, const double *v, size_t nv)
{
    struct rd r;
    rd_init(&r, id, kind, ts, 7, v, nv);
    struct wire w = {0};
    pack_batch(&w, &r, 1, "dev-1");
    int reason = reason_of(&w);
    w_free(&w);
    return reason;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* --- good payloads -------------------------------------------------------- */

static void test_one_reading(void)
{
    double v = 21.5;
    struct rd r;
    rd_init(&r, "aq-000123", SG_KIND_TEMPERATURE_C, FIX_NOW - 1000, 42, &v, 1);
    r.m.status = 3;
    struct wire w = {0};
    pack_batch(&w, &r, 1, "aq-000123");

    const struct sg_reading *rs = NULL;
    size_t n = 99;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(sg_decode_excess(dec), 0);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "aq-000123");
    CU_ASSERT_EQUAL(rs[0].id_len, 9);
    CU_ASSERT_EQUAL(rs[0].kind, SG_KIND_TEMPERATURE_C);
    CU_ASSERT_EQUAL(rs[0].ts_ms, FIX_NOW - 1000);
    CU_ASSERT_EQUAL(rs[0].seq, 42);
    CU_ASSERT_EQUAL(rs[0].status, 3);
    CU_ASSERT_EQUAL(rs[0].nvalues, 1);
    CU_ASSERT(same_bits(rs[0].values[0], 21.5));
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    w_free(&w);
}

static void test_accel(void)
{
    double v[3] = {0.01, -0.98, 1.0 / 3.0};
    struct rd r;
    rd_init(&r, "acc-0042", SG_KIND_ACCEL_G, FIX_NOW, 9, v, 3);
    struct wire w = {0};
    pack_batch(&w, &r, 1, "concentrator-1");
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    CU_ASSERT_EQUAL(rs[0].nvalues, 3);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(same_bits(rs[0].values[i], v[i]));
    }
    w_free(&w);
}

/* Deterministic generator for test data (no libc rand state). */
static uint64_t lcg_state = 88172645463325252ull;
static uint64_t lcg(void)
{
    lcg_state ^= lcg_state << 13;
    lcg_state ^= lcg_state >> 7;
    lcg_state ^= lcg_state << 17;
    return lcg_state;
}

static void test_many_sensors(void)
{
    enum { N = 600 };
    static struct rd r[N];
    static char ids[N][16];
    for (int i = 0; i < N; i++) {
        int sensor = i % 7;
        int kind = sensor == 3 ? SG_KIND_ACCEL_G : 1 + sensor;
        double v[3];
        for (int c = 0; c < 3; c++) {
            v[c] = (double)(int64_t)(lcg() % 2000000) / 1000.0 - 1000.0;
        }
        snprintf(ids[i], sizeof ids[i], "s-%d", sensor);
        rd_init(&r[i], ids[i], kind, FIX_NOW - (uint64_t)i, (uint32_t)i, v,
                kind == SG_KIND_ACCEL_G ? 3 : 1);
    }
    struct wire w = {0};
    pack_batch(&w, r, N, "conc-7");
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const struct sg_reading *x = &rs[i];
        if (x->invalid != 0 || strcmp(x->sensor_id, ids[i]) != 0 || x->kind != r[i].m.kind ||
            x->seq != (uint32_t)i || x->ts_ms != FIX_NOW - (uint64_t)i ||
            x->nvalues != r[i].m.n_values) {
            bad++;
            continue;
        }
        for (size_t c = 0; c < x->nvalues; c++) {
            if (!same_bits(x->values[c], r[i].v[c])) {
                bad++;
            }
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    w_free(&w);

    /* A small batch after the big one reuses the arrays and is exact too. */
    double v = 5.0;
    struct rd one;
    rd_init(&one, "after", SG_KIND_NOISE_DBA, FIX_NOW, 1, &v, 1);
    pack_batch(&w, &one, 1, NULL);
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "after");
    CU_ASSERT(sg_decoder_arena_peak(dec) > 0);
    w_free(&w);
}

static void test_empty_batch(void)
{
    const struct sg_reading *rs;
    size_t n = 5;
    struct wire w = {0};
    CU_ASSERT_EQUAL(dec_batch(dec, NULL, 0, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    pack_batch(&w, NULL, 0, "only-a-device");
    CU_ASSERT(w.n > 0);
    n = 5;
    CU_ASSERT_EQUAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(sg_decode_excess(dec), 0);
    w_free(&w);
}

static void test_unknown_fields(void)
{
    double v = 1.25;
    struct rd r;
    rd_init(&r, "u-1", SG_KIND_STRAIN_UE, FIX_NOW, 5, &v, 1);
    r.pos = (Sensegate__V1__GeoPoint)SENSEGATE__V1__GEO_POINT__INIT;
    r.pos.lat = 34.75;
    r.pos.lon = 113.62;
    r.m.position = &r.pos;
    struct wire inner = {0};
    pack_reading(&inner, &r);
    /* Unknown fields of every wire type inside the Reading ... */
    w_tag(&inner, 99, 0);
    w_varint(&inner, 123456789);
    w_tag(&inner, 100, 1);
    w_bytes(&inner, "12345678", 8);
    w_lenfield(&inner, 101, "junk", 4);
    w_tag(&inner, 102, 5);
    w_bytes(&inner, "1234", 4);
    struct wire w = {0};
    /* ... and around it in the batch. */
    w_tag(&w, 15, 0);
    w_varint(&w, 1);
    w_lenfield(&w, 2, inner.b, inner.n);
    w_lenfield(&w, 1000, "more junk", 9);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "u-1");
    CU_ASSERT(same_bits(rs[0].values[0], 1.25));
    w_free(&inner);
    w_free(&w);
}

/* Repeated sensor_id: protobuf keeps the last one; so must the NUL check. */
static void test_repeated_id_last_wins(void)
{
    double v = 1.0;
    struct rd r;
    rd_init(&r, "", SG_KIND_TEMPERATURE_C, FIX_NOW, 1, &v, 1);
    struct wire inner = {0};
    w_lenfield(&inner, 1, "abc\0xyz", 7);
    pack_reading(&inner, &r);
    w_lenfield(&inner, 1, "good-id", 7);
    struct wire w = {0};
    w_lenfield(&w, 2, inner.b, inner.n);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "good-id");
    w_free(&w);

    /* And the other way round: a good id then one with a NUL. */
    inner.n = 0;
    w_lenfield(&inner, 1, "good-id", 7);
    pack_reading(&inner, &r);
    w_lenfield(&inner, 1, "abc\0xyz", 7);
    w_lenfield(&w, 2, inner.b, inner.n);
    CU_ASSERT_EQUAL(reason_of(&w), SG_INVALID_SENSOR_ID);
    w_free(&inner);
    w_free(&w);
}

/* --- invalid reasons ------------------------------------------------------ */

static void test_sensor_id(void)
{
    double v = 1.0;
    char id64[65], id65[66];
    memset(id64, 'a', 64);
    id64[64] = '\0';
    memset(id65, 'b', 65);
    id65[65] = '\0';
    CU_ASSERT_EQUAL(reason_one(id64, 1, FIX_NOW, &v, 1), SG_INVALID_NONE);
    CU_ASSERT_EQUAL(reason_one(id65, 1, FIX_NOW, &v, 1), SG_INVALID_SENSOR_ID);
    CU_ASSERT_EQUAL(reason_one("", 1, FIX_NOW, &v, 1), SG_INVALID_SENSOR_ID);
    CU_ASSERT_EQUAL(reason_one("a b", 1, FIX_NOW, &v, 1), SG_INVALID_SENSOR_ID);
    CU_ASSERT_EQUAL(reason_one("a/b", 1, FIX_NOW, &v, 1), SG_INVALID_SENSOR_ID);
    CU_ASSERT_EQUAL(reason_one("caf\xc3\xa9", 1, FIX_NOW, &v, 1), SG_INVALID_SENSOR_ID);
    CU_ASSERT_EQUAL(reason_one("A-Za-z0-9._:-", 1, FIX_NOW, &v, 1), SG_INVALID_NONE);
    /* The id check comes first, before kind, channels and value. */
    CU_ASSERT_EQUAL(reason_one("", 77, 0, NULL, 0), SG_INVALID_SENSOR_ID);

    /* The bad id is kept truncated to 64 bytes for logging. */
    struct rd r;
    rd_init(&r, id65, 1, FIX_NOW, 1, &v, 1);
    struct wire w = {0};
    pack_batch(&w, &r, 1, NULL);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL(strlen(rs[0].sensor_id), 64);
    CU_ASSERT_EQUAL(rs[0].id_len, 64);
    w_free(&w);

    /* A 100 KiB id is still just an invalid reading (with a big enough cap). */
    struct sg_decode_limits lim = std_limits();
    lim.max_payload_bytes = 256 * 1024;
    struct sg_decoder *big = NULL;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&big, &lim), 0);
    char *huge = malloc(100 * 1024 + 1);
    memset(huge, 'x', 100 * 1024);
    huge[100 * 1024] = '\0';
    rd_init(&r, huge, 1, FIX_NOW, 1, &v, 1);
    pack_batch(&w, &r, 1, NULL);
    CU_ASSERT_EQUAL_FATAL(dec_batch(big, w.b, w.n, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_SENSOR_ID);
    free(huge);
    w_free(&w);
    tdec_free(big);
}

static void test_embedded_nul(void)
{
    struct wire w = {0};
    pack_raw_id(&w, "abc\0xyz", 7, 1, 1.0);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_SENSOR_ID);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "abc");
    w_free(&w);

    pack_raw_id(&w, "abc\0", 4, 1, 1.0);   /* trailing NUL */
    CU_ASSERT_EQUAL(reason_of(&w), SG_INVALID_SENSOR_ID);
    w_free(&w);
    pack_raw_id(&w, "\0", 1, 1, 1.0);      /* only a NUL */
    CU_ASSERT_EQUAL(reason_of(&w), SG_INVALID_SENSOR_ID);
    w_free(&w);
    pack_raw_id(&w, "abc", 3, 1, 1.0);     /* control: the raw path itself is fine */
    CU_ASSERT_EQUAL(reason_of(&w), SG_INVALID_NONE);
    w_free(&w);
}

static void test_kind(void)
{
    double v = 1.0;
    double v3[3] = {1, 2, 3};
    CU_ASSERT_EQUAL(reason_one("k", 0, FIX_NOW, &v, 1), SG_INVALID_KIND);
    CU_ASSERT_EQUAL(reason_one("k", 77, FIX_NOW, &v, 1), SG_INVALID_KIND);
    CU_ASSERT_EQUAL(reason_one("k", 10, FIX_NOW, &v, 1), SG_INVALID_KIND);
    CU_ASSERT_EQUAL(reason_one("k", 257, FIX_NOW, &v, 1), SG_INVALID_KIND);  /* not 1 mod 256 */
    CU_ASSERT_EQUAL(reason_one("k", 264, FIX_NOW, v3, 3), SG_INVALID_KIND);  /* not ACCEL */
    CU_ASSERT_EQUAL(reason_one("k", -1, FIX_NOW, &v, 1), SG_INVALID_KIND);
    CU_ASSERT_EQUAL(reason_one("k", INT32_MIN, FIX_NOW, &v, 1), SG_INVALID_KIND);
    for (int k = 1; k <= 9; k++) {
        CU_ASSERT_EQUAL(reason_one("k", k, FIX_NOW, k == 8 ? v3 : &v, k == 8 ? 3 : 1),
                        SG_INVALID_NONE);
    }
    /* Kind comes before channels. */
    double v4[4] = {1, 2, 3, 4};
    CU_ASSERT_EQUAL(reason_one("k", 77, FIX_NOW, v4, 4), SG_INVALID_KIND);
}

static void test_channels(void)
{
    double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_TEMPERATURE_C, FIX_NOW, v, 0), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_TEMPERATURE_C, FIX_NOW, v, 2), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_TEMPERATURE_C, FIX_NOW, v, 3), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_ACCEL_G, FIX_NOW, v, 1), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_ACCEL_G, FIX_NOW, v, 2), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_ACCEL_G, FIX_NOW, v, 4), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_TEMPERATURE_C, FIX_NOW, v, 4), SG_INVALID_CHANNELS);
    CU_ASSERT_EQUAL(reason_one("c", SG_KIND_ACCEL_G, FIX_NOW, v, 8), SG_INVALID_CHANNELS);

    /* 4 values: nothing beyond the fixed array is written. */
    struct rd r;
    rd_init(&r, "c", SG_KIND_ACCEL_G, FIX_NOW, 1, v, 4);
    struct wire w = {0};
    pack_batch(&w, &r, 1, NULL);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT(rs[0].nvalues <= SG_MAX_CHANNELS);
    CU_ASSERT_STRING_EQUAL(rs[0].sensor_id, "c");
    w_free(&w);

    /* 5000 unpacked (non-packed encoding) values: still one invalid reading. */
    struct wire inner = {0};
    w_lenfield(&inner, 1, "many", 4);
    w_tag(&inner, 2, 0);
    w_varint(&inner, SG_KIND_TEMPERATURE_C);
    w_tag(&inner, 3, 0);
    w_varint(&inner, FIX_NOW);
    for (int i = 0; i < 5000; i++) {
        double x = i;
        w_tag(&inner, 5, 1);
        w_bytes(&inner, &x, 8);
    }
    w_lenfield(&w, 2, inner.b, inner.n);
    CU_ASSERT_EQUAL(reason_of(&w), SG_INVALID_CHANNELS);
    w_free(&inner);
    w_free(&w);

    /* The non-packed encoding of one value is accepted like the packed one. */
    w_lenfield(&inner, 1, "one", 3);
    w_tag(&inner, 2, 0);
    w_varint(&inner, SG_KIND_TEMPERATURE_C);
    w_tag(&inner, 3, 0);
    w_varint(&inner, FIX_NOW);
    double x = -7.5;
    w_tag(&inner, 5, 1);
    w_bytes(&inner, &x, 8);
    w_lenfield(&w, 2, inner.b, inner.n);
    CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    CU_ASSERT(same_bits(rs[0].values[0], -7.5));
    w_free(&inner);
    w_free(&w);
}

static void test_values(void)
{
    double nan_ = NAN, inf = INFINITY, ninf = -INFINITY;
    double denorm = 4.9406564584124654e-324;
    double big = 1e300;
    double acc[3] = {0.5, NAN, 0.5};
    CU_ASSERT_EQUAL(reason_one("v", 1, FIX_NOW, &nan_, 1), SG_INVALID_VALUE);
    CU_ASSERT_EQUAL(reason_one("v", 1, FIX_NOW, &inf, 1), SG_INVALID_VALUE);
    CU_ASSERT_EQUAL(reason_one("v", 1, FIX_NOW, &ninf, 1), SG_INVALID_VALUE);
    CU_ASSERT_EQUAL(reason_one("v", 8, FIX_NOW, acc, 3), SG_INVALID_VALUE);
    /* Value comes before the timestamp. */
    CU_ASSERT_EQUAL(reason_one("v", 1, 0, &nan_, 1), SG_INVALID_VALUE);

    double ok[] = {denorm, -denorm, big, -big, DBL_MAX, -DBL_MAX, DBL_MIN, 0.0, -0.0};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct rd r;
        rd_init(&r, "v", 1, FIX_NOW, 1, &ok[i], 1);
        struct wire w = {0};
        pack_batch(&w, &r, 1, NULL);
        const struct sg_reading *rs;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(decode(&w, &rs, &n), 0);
        CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
        CU_ASSERT(same_bits(rs[0].values[0], ok[i]));
        w_free(&w);
    }
}

static void test_ts_bounds(void)
{
    double v = 1.0;
    /* Inclusive: valid iff now - max_past <= ts <= now + max_future. */
    CU_ASSERT_EQUAL(reason_one("t", 1, FIX_NOW - MAX_PAST, &v, 1), SG_INVALID_NONE);
    CU_ASSERT_EQUAL(reason_one("t", 1, FIX_NOW - MAX_PAST - 1, &v, 1), SG_INVALID_TS_PAST);
    CU_ASSERT_EQUAL(reason_one("t", 1, FIX_NOW + MAX_FUTURE, &v, 1), SG_INVALID_NONE);
    CU_ASSERT_EQUAL(reason_one("t", 1, FIX_NOW + MAX_FUTURE + 1, &v, 1), SG_INVALID_TS_FUTURE);
    CU_ASSERT_EQUAL(reason_one("t", 1, FIX_NOW, &v, 1), SG_INVALID_NONE);
    CU_ASSERT_EQUAL(reason_one("t", 1, 0, &v, 1), SG_INVALID_TS_PAST);
    CU_ASSERT_EQUAL(reason_one("t", 1, UINT64_MAX, &v, 1), SG_INVALID_TS_FUTURE);

    /* A clock near zero must not wrap: ts 0 is within max_past of now 1000. */
    struct rd r;
    rd_init(&r, "t", 1, 0, 1, &v, 1);
    struct wire w = {0};
    pack_batch(&w, &r, 1, NULL);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(dec_batch(dec, w.b, w.n, 1000, &rs, &n), 0);
    CU_ASSERT_EQUAL(rs[0].invalid, SG_INVALID_NONE);
    w_free(&w);
}

/* --- limits --------------------------------------------------------------- */

static void test_batch_limit(void)
{
    struct sg_decode_limits lim = std_limits();
    lim.max_readings_per_batch = 10;
    struct sg_decoder *d = NULL;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&d, &lim), 0);

    enum { N = 25 };
    struct rd r[N];
    double v = 2.0;
    for (int i = 0; i < N; i++) {
        rd_init(&r[i], "lim", 1, FIX_NOW, (uint32_t)(100 + i), &v, 1);
    }
    struct wire w = {0};
    pack_batch(&w, r, N, "dev");
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(dec_batch(d, w.b, w.n, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 10);
    CU_ASSERT_EQUAL(sg_decode_excess(d), 15);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(rs[i].seq, 100 + i);
        CU_ASSERT_EQUAL(rs[i].invalid, SG_INVALID_NONE);
    }
    CU_ASSERT_EQUAL(sg_decode_excess_reading()->invalid, SG_INVALID_BATCH_LIMIT);

    /* Exactly at the limit: nothing in excess; the counter resets per call. */
    w_free(&w);
    pack_batch(&w, r, 10, "dev");
    CU_ASSERT_EQUAL_FATAL(dec_batch(d, w.b, w.n, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 10);
    CU_ASSERT_EQUAL(sg_decode_excess(d), 0);

    /* Junk after the excess readings still fails the whole payload. */
    w_free(&w);
    pack_batch(&w, r, N, "dev");
    w_tag(&w, 3, 7);
    CU_ASSERT_EQUAL(dec_batch(d, w.b, w.n, FIX_NOW, &rs, &n), SG_EDECODE);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(sg_decode_excess(d), 0);
    w_free(&w);
    tdec_free(d);
}

static void test_too_big(void)
{
    struct sg_decode_limits lim = std_limits();
    lim.max_payload_bytes = 1000;
    struct sg_decoder *d = NULL;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&d, &lim), 0);
    uint8_t *buf = calloc(1, 2000);
    const struct sg_reading *rs;
    size_t n;
    CU_ASSERT_EQUAL(dec_batch(d, buf, 1001, FIX_NOW, &rs, &n), SG_ETOOBIG);
    CU_ASSERT_PTR_NULL(rs);
    CU_ASSERT_EQUAL(n, 0);

    /* Exactly max_payload_bytes is allowed: a valid batch padded with an
     * unknown bytes field up to 1000 bytes. */
    double v = 1.0;
    struct rd r;
    rd_init(&r, "pad", 1, FIX_NOW, 1, &v, 1);
    struct wire w = {0};
    pack_batch(&w, &r, 1, NULL);
    size_t pad = 1000 - w.n - 3;   /* tag (1) + 2-byte length */
    char *junk = calloc(1, pad);
    w_lenfield(&w, 9, junk, pad);
    CU_ASSERT_EQUAL_FATAL(w.n, 1000);
    CU_ASSERT_EQUAL(dec_batch(d, w.b, w.n, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    free(junk);
    free(buf);
    w_free(&w);
    tdec_free(d);

    CU_ASSERT_EQUAL(tdec_new(NULL, &lim), SG_EINVAL);
    CU_ASSERT_EQUAL(tdec_new(&d, NULL), SG_EINVAL);
    CU_ASSERT_EQUAL(dec_batch(dec, NULL, 5, FIX_NOW, &rs, &n), SG_EINVAL);
    tdec_free(NULL);
}

/* --- malformed ------------------------------------------------------------ */

static void build_valid(struct wire *w)
{
    double v1 = 3.5, v3[3] = {0.1, 0.2, 0.3};
    struct rd r[3];
    rd_init(&r[0], "trunc-a", SG_KIND_PM2_5_UGM3, FIX_NOW, 1, &v1, 1);
    rd_init(&r[1], "trunc-b", SG_KIND_ACCEL_G, FIX_NOW - 5, 2, v3, 3);
    rd_init(&r[2], "trunc-c", SG_KIND_WATER_LEVEL_M, FIX_NOW + 5, 3000000000u, &v1, 1);
    r[1].m.status = 0x80000000u;
    r[2].pos = (Sensegate__V1__GeoPoint)SENSEGATE__V1__GEO_POINT__INIT;
    r[2].pos.lat = 34.7;
    r[2].m.position = &r[2].pos;
    pack_batch(w, r, 3, "trunc-device");
}

static void test_truncated_every_offset(void)
{
    struct wire w = {0};
    build_valid(&w);
    int ok = 0, err = 0, other = 0;
    for (size_t cut = 0; cut <= w.n; cut++) {
        /* A fresh copy of exactly cut bytes, so ASan sees any over-read. */
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, w.b, cut);
        const struct sg_reading *rs;
        size_t n = 0;
        int rc = dec_batch(dec, p, cut, FIX_NOW, &rs, &n);
        if (rc == 0) {
            ok++;
            CU_ASSERT(n <= 3);
        } else if (rc == SG_EDECODE) {
            err++;
        } else {
            other++;
        }
        free(p);
    }
    CU_ASSERT_EQUAL(other, 0);
    CU_ASSERT(err > 0);
    CU_ASSERT(ok >= 2);   /* at least the empty and the whole payload */
    w_free(&w);
}

static int rc_of(const struct wire *w)
{
    const struct sg_reading *rs;
    size_t n;
    return decode(w, &rs, &n);
}

static void test_malformed(void)
{
    struct wire w = {0};
    build_valid(&w);
    CU_ASSERT_EQUAL(rc_of(&w), 0);

    /* Wire type 7 at the top level and inside a reading. */
    struct wire x = {0};
    w_bytes(&x, w.b, w.n);
    w_tag(&x, 4, 7);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t r7[] = {0x12, 0x02, 0x3f, 0x00};   /* Reading { field 7, wire type 7 } */
    w_bytes(&x, r7, sizeof r7);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* Groups (wire types 3 and 4) are not supported by protobuf-c. */
    x.n = 0;
    uint8_t grp[] = {0x1b, 0x1c};
    w_bytes(&x, grp, sizeof grp);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* Length past the end: of a reading, of the sensor_id, of a double. */
    x.n = 0;
    uint8_t past[] = {0x12, 0x10, 0x0a, 0x01, 'a'};
    w_bytes(&x, past, sizeof past);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t idpast[] = {0x12, 0x03, 0x0a, 0x05, 'a'};
    w_bytes(&x, idpast, sizeof idpast);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t fixpast[] = {0x12, 0x05, 0x29, 0, 0, 0, 0};   /* Reading field 5 wt 1, 4 bytes */
    w_bytes(&x, fixpast, sizeof fixpast);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* A huge length prefix (2^32 + 1 in five bytes, or six bytes long). */
    x.n = 0;
    uint8_t huge[] = {0x12, 0x81, 0x80, 0x80, 0x80, 0x10, 0x00};
    w_bytes(&x, huge, sizeof huge);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t six[] = {0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    w_bytes(&x, six, sizeof six);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* Unterminated varint; an 11-byte varint; field number 0. */
    x.n = 0;
    uint8_t unterm[] = {0x18, 0xff, 0xff};
    w_bytes(&x, unterm, sizeof unterm);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t long11[] = {0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    w_bytes(&x, long11, sizeof long11);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t field0[] = {0x00, 0x01};
    w_bytes(&x, field0, sizeof field0);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* Wrong wire types for known fields. */
    x.n = 0;
    uint8_t readings_varint[] = {0x10, 0x01};          /* readings as varint */
    w_bytes(&x, readings_varint, sizeof readings_varint);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t id_varint[] = {0x12, 0x02, 0x08, 0x01};    /* sensor_id as varint */
    w_bytes(&x, id_varint, sizeof id_varint);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);
    x.n = 0;
    uint8_t kind_len[] = {0x12, 0x03, 0x12, 0x01, 0x01};   /* kind as bytes */
    w_bytes(&x, kind_len, sizeof kind_len);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* Packed doubles whose length is not a multiple of 8. */
    x.n = 0;
    uint8_t packed7[] = {0x12, 0x09, 0x2a, 0x07, 1, 2, 3, 4, 5, 6, 7};
    w_bytes(&x, packed7, sizeof packed7);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    /* A malformed GeoPoint inside an otherwise fine reading. */
    x.n = 0;
    uint8_t geo[] = {0x12, 0x07, 0x0a, 0x01, 'g', 0x3a, 0x02, 0x09, 0x00};
    w_bytes(&x, geo, sizeof geo);
    CU_ASSERT_EQUAL(rc_of(&x), SG_EDECODE);

    w_free(&x);
    w_free(&w);
}

static void test_bomb(void)
{
    /* 256 KiB of empty Readings (0x12 0x00 x 131072). */
    const size_t len = 256 * 1024;
    uint8_t *bomb = malloc(len);
    for (size_t i = 0; i < len; i += 2) {
        bomb[i] = 0x12;
        bomb[i + 1] = 0x00;
    }
    const struct sg_reading *rs;
    size_t n;

    /* With a high readings limit protobuf-c sees it all: the 1 MiB arena
     * cap stops it, cleanly. */
    struct sg_decode_limits lim = std_limits();
    lim.max_payload_bytes = len;
    lim.max_readings_per_batch = 1u << 20;
    lim.arena_bytes = 1024 * 1024;
    struct sg_decoder *d = NULL;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&d, &lim), 0);
    CU_ASSERT_EQUAL(dec_batch(d, bomb, len, FIX_NOW, &rs, &n), SG_EDECODE);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT(sg_decoder_arena_peak(d) <= 1024 * 1024);
    /* The decoder works normally afterwards. */
    struct wire w = {0};
    build_valid(&w);
    CU_ASSERT_EQUAL(dec_batch(d, w.b, w.n, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 3);
    tdec_free(d);

    /* With the usual limit only 1000 are decoded (all invalid: empty id)
     * and the rest are counted as excess without being decoded. */
    lim = std_limits();
    lim.max_payload_bytes = len;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&d, &lim), 0);
    CU_ASSERT_EQUAL_FATAL(dec_batch(d, bomb, len, FIX_NOW, &rs, &n), 0);
    CU_ASSERT_EQUAL(n, 1000);
    CU_ASSERT_EQUAL(sg_decode_excess(d), len / 2 - 1000);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += rs[i].invalid == SG_INVALID_SENSOR_ID;
    }
    CU_ASSERT_EQUAL(bad, 1000);
    tdec_free(d);

    /* 256 KiB of unknown varint fields: the arena cap again. */
    for (size_t i = 0; i < len; i += 2) {
        bomb[i] = 0x18;   /* field 3, varint */
        bomb[i + 1] = 0x00;
    }
    lim.arena_bytes = 1024 * 1024;
    CU_ASSERT_EQUAL_FATAL(tdec_new(&d, &lim), 0);
    CU_ASSERT_EQUAL(dec_batch(d, bomb, len, FIX_NOW, &rs, &n), SG_EDECODE);
    tdec_free(d);
    free(bomb);
    w_free(&w);
}

/* Random single-byte mutations of a valid payload never crash and every
 * outcome is well-formed. */
static void test_mutations(void)
{
    struct wire w = {0};
    build_valid(&w);
    int malformed_out = 0;
    uint8_t *p = malloc(w.n);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(p, w.b, w.n);
        int flips = 1 + (int)(lcg() % 3);
        for (int f = 0; f < flips; f++) {
            p[lcg() % w.n] = (uint8_t)lcg();
        }
        const struct sg_reading *rs;
        size_t n;
        int rc = dec_batch(dec, p, w.n, FIX_NOW, &rs, &n);
        if (rc == SG_EDECODE) {
            continue;
        }
        if (rc != 0) {
            malformed_out++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const struct sg_reading *r = &rs[i];
            if (r->invalid >= SG_INVALID_COUNT || r->nvalues > SG_MAX_CHANNELS ||
                r->id_len > SG_SENSOR_ID_MAX || strlen(r->sensor_id) != r->id_len) {
                malformed_out++;
            }
            if (r->invalid == SG_INVALID_NONE &&
                !sg_sensor_id_ok(r->sensor_id, r->id_len)) {
                malformed_out++;
            }
        }
    }
    CU_ASSERT_EQUAL(malformed_out, 0);
    free(p);
    w_free(&w);
}

static void test_topic(void)
{
    const char *good[] = {"sensors/city/jinshui/aq-000123", "sensors/mems/bridge-07/acc-0042"};
    const char *bad[] = {"sensors/city/jinshui", "sensors/city/jinshui/aq/extra",
                         "sensors//jinshui/aq", "sensors/city/jinshui/", "sensor/city/d/x",
                         "sensors/+/d/x", "sensors/c/#/x", "", "sensors/"};
    for (size_t i = 0; i < 2; i++) {
        CU_ASSERT_TRUE(sg_decode_topic_ok(good[i], strlen(good[i])));
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_FALSE(sg_decode_topic_ok(bad[i], strlen(bad[i])));
    }
    const char nul[] = "sensors/a/b/c\0d";
    CU_ASSERT_FALSE(sg_decode_topic_ok(nul, sizeof nul - 1));
    CU_ASSERT_TRUE(sg_decode_topic_ok(nul, 13));
}

/* --- differential: generated payloads --------------------------------------- */

static uint64_t rnd(uint64_t n)
{
    return n > 0 ? lcg() % n : 0;
}

/* A varint, sometimes in a longer (non-minimal) encoding of up to 10 bytes. */
static void g_varint(struct wire *w, uint64_t v)
{
    if (rnd(8) != 0) {
        w_varint(w, v);
        return;
    }
    uint8_t b[10];
    int n = 0;
    do {
        b[n++] = (uint8_t)((v & 0x7f) | 0x80);
        v >>= 7;
    } while (v != 0 && n < 10);
    int pad = (int)rnd(11 - (uint64_t)n);
    while (pad-- > 0 && n < 10) {
        b[n++] = 0x80;
    }
    b[n - 1] &= 0x7f;
    w_bytes(w, b, (size_t)n);
}

static void g_double(struct wire *w)
{
    static const double special[] = {0.0, -0.0, 1.5, -273.15, 1e300, 4.9e-324};
    double x;
    switch (rnd(10)) {
    case 0:
        x = NAN;
        break;
    case 1:
        x = rnd(2) ? INFINITY : -INFINITY;
        break;
    case 2:
        x = special[rnd(6)];
        break;
    default:
        x = (double)(int64_t)rnd(2000000) / 1000.0 - 1000.0;
        break;
    }
    w_bytes(w, &x, 8);
}

/* An unknown field: random number (not one of the message's), any usable
 * wire type. */
static void g_unknown(struct wire *w, unsigned first_free)
{
    unsigned field = first_free + (unsigned)rnd(rnd(4) == 0 ? 536870000u : 50u);
    switch (rnd(5)) {
    case 4:
        /* A tag in a longer encoding, sometimes of field 0 (which protobuf-c
         * takes as unknown when the first byte has the continuation bit). */
        g_varint(w, ((uint64_t)(rnd(4) == 0 ? 0 : field) << 3) | 0);
        g_varint(w, lcg() >> rnd(64));
        break;
    case 0:
        w_tag(w, field, 0);
        g_varint(w, lcg() >> rnd(64));
        break;
    case 1:
        w_tag(w, field, 1);
        g_double(w);
        break;
    case 2:
        w_tag(w, field, 5);
        w_bytes(w, "abcd", 4);
        break;
    default: {
        char junk[40];
        size_t n = rnd(sizeof junk);
        memset(junk, (int)rnd(256), n);
        w_lenfield(w, field, junk, n);
        break;
    }
    }
}

static void g_geo(struct wire *w)
{
    struct wire g = {0};
    int nf = (int)rnd(5);
    for (int i = 0; i < nf; i++) {
        if (rnd(4) == 0) {
            g_unknown(&g, 3);
        } else {
            w_tag(&g, 1 + (unsigned)rnd(2), 1);
            g_double(&g);
        }
    }
    w_lenfield(w, 7, g.b, g.n);
    w_free(&g);
}

static void g_sensor_id(struct wire *w)
{
    static const char *ids[] = {"aq-000123", "acc-0042", "a", "city.aq-1", "mems:acc-3",
                                "drain_lvl-4", "", "bad id", "caf\xc3\xa9", "x/y"};
    char buf[80];
    size_t n;
    switch (rnd(12)) {
    case 0:
        n = 64 + rnd(3);
        memset(buf, 'z', n);
        break;
    case 1:
        memcpy(buf, "ab\0cd", 5);
        n = 1 + rnd(5);
        break;
    default: {
        const char *s = ids[rnd(sizeof ids / sizeof ids[0])];
        n = strlen(s);
        memcpy(buf, s, n);
        break;
    }
    }
    w_lenfield(w, 1, buf, n);
}

static uint64_t g_kind(void)
{
    switch (rnd(10)) {
    case 0:
        return rnd(300);
    case 1:
        return (uint64_t)(int64_t)-(int64_t)rnd(3);    /* negative int32 on the wire */
    case 2:
        return ((uint64_t)rnd(4) << 32) | (1 + rnd(9));  /* upper bits dropped */
    default:
        return 1 + rnd(9);
    }
}

static uint64_t g_ts(void)
{
    switch (rnd(8)) {
    case 0:
        return lcg();
    case 1:
        return FIX_NOW - MAX_PAST - rnd(3);
    case 2:
        return FIX_NOW + MAX_FUTURE - 1 + rnd(3);
    default:
        return FIX_NOW - rnd(MAX_PAST);
    }
}

/* One Reading with its fields in random order, singular fields sometimes
 * repeated, values packed and/or unpacked, positions and unknown fields. */
static void g_reading(struct wire *w)
{
    struct wire r = {0};
    int kind_wanted = rnd(4) == 0 ? 3 : 1;
    int nf = 1 + (int)rnd(9);
    for (int i = 0; i < nf; i++) {
        switch (rnd(9)) {
        case 0:
            g_sensor_id(&r);
            break;
        case 1:
            w_tag(&r, 2, 0);
            g_varint(&r, g_kind());
            break;
        case 2:
            w_tag(&r, 3, 0);
            g_varint(&r, g_ts());
            break;
        case 3:
            w_tag(&r, 4, 0);
            g_varint(&r, rnd(2) ? lcg() : rnd(1000));
            break;
        case 4:
            w_tag(&r, 6, 0);
            g_varint(&r, rnd(3) ? 0 : lcg() >> rnd(64));
            break;
        case 5:
            g_geo(&r);
            break;
        case 6:
            g_unknown(&r, 8);
            break;
        default:
            if (rnd(2)) {
                struct wire v = {0};
                size_t nv = rnd(5);
                for (size_t k = 0; k < nv; k++) {
                    g_double(&v);
                }
                w_lenfield(&r, 5, v.b, v.n);
                w_free(&v);
            } else {
                w_tag(&r, 5, 1);
                g_double(&r);
            }
            break;
        }
    }
    /* Mostly a plausible reading: id, kind, ts and the right values last. */
    if (rnd(3) != 0) {
        w_lenfield(&r, 1, "gen-1", 5);
        w_tag(&r, 2, 0);
        w_varint(&r, kind_wanted == 3 ? SG_KIND_ACCEL_G : 1 + rnd(7));
        w_tag(&r, 3, 0);
        w_varint(&r, FIX_NOW - rnd(1000));
    }
    w_lenfield(w, 2, r.b, r.n);
    w_free(&r);
}

/* A batch of nreadings readings, device_id and unknown fields mixed in. */
static void g_batch(struct wire *w, size_t nreadings)
{
    for (size_t i = 0; i < nreadings; i++) {
        if (rnd(8) == 0) {
            w_lenfield(w, 1, "device-7", 1 + rnd(8));
        }
        if (rnd(8) == 0) {
            g_unknown(w, 3);
        }
        g_reading(w);
    }
    if (rnd(4) == 0) {
        g_unknown(w, 3);
    }
}

/* Mutates w in place: byte flips, a truncation, or a duplicated slice. */
static void g_mutate(struct wire *w)
{
    if (w->n == 0) {
        return;
    }
    switch (rnd(3)) {
    case 0: {
        int flips = 1 + (int)rnd(3);
        for (int f = 0; f < flips; f++) {
            w->b[rnd(w->n)] = (uint8_t)lcg();
        }
        break;
    }
    case 1:
        w->n = rnd(w->n);
        break;
    default: {
        size_t at = rnd(w->n);
        size_t len = 1 + rnd(w->n - at);
        uint8_t *copy = malloc(len);
        memcpy(copy, w->b + at, len);
        w_bytes(w, copy, len);
        free(copy);
        break;
    }
    }
}

static void test_differential(void)
{
    struct sg_decode_limits lims[3] = {std_limits(), std_limits(), std_limits()};
    lims[1].max_readings_per_batch = 3;
    /* A 256 KiB payload cap over the smallest arena: big batches land on
     * both sides of the arena cap. */
    lims[2].max_payload_bytes = 256 * 1024;
    lims[2].arena_bytes = SG_DECODE_ARENA_MIN;
    struct sg_decoder *d[3];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(tdec_new(&d[i], &lims[i]), 0);
    }
    unsigned long before = diff_mismatch;
    int ok_batches = 0, valid_readings = 0, edecode = 0, arena_rejects = 0;
    for (int iter = 0; iter < 6000; iter++) {
        struct wire w = {0};
        int which = (int)rnd(3);
        size_t nr = which == 2 && rnd(2) ? 300 + rnd(400) : rnd(12);
        g_batch(&w, nr);
        const struct sg_reading *rs;
        size_t n;
        int rc = dec_batch(d[which], w.b, w.n, FIX_NOW, &rs, &n);
        if (rc == 0) {
            ok_batches++;
            for (size_t i = 0; i < n; i++) {
                valid_readings += rs[i].invalid == SG_INVALID_NONE;
            }
        } else if (rc == SG_EDECODE) {
            edecode++;
            arena_rejects += which == 2 && nr >= 300;
        }
        for (int m = 0; m < 4; m++) {
            g_mutate(&w);
            (void)dec_batch(d[which], w.b, w.n, FIX_NOW, &rs, &n);
        }
        w_free(&w);
    }
    CU_ASSERT_EQUAL(diff_mismatch, before);
    /* The generator is not vacuous: accepted batches with valid readings,
     * rejected payloads, and batches over the arena cap. */
    CU_ASSERT(ok_batches > 1000);
    CU_ASSERT(valid_readings > 1000);
    CU_ASSERT(edecode > 0);
    CU_ASSERT(arena_rejects > 0);
    for (int i = 0; i < 3; i++) {
        tdec_free(d[i]);
    }
}

/* Runs last: every dec_batch() call of the whole file agreed. */
static void test_differential_total(void)
{
    CU_ASSERT(diff_calls > 50000);
    CU_ASSERT_EQUAL(diff_mismatch, 0);
}

/* --- fixtures ------------------------------------------------------------- */

enum fx_expect { FX_VALID, FX_INVALID, FX_EDECODE };

struct fixture {
    const char *name;
    void (*build)(struct wire *w);
    enum fx_expect expect;
    int reason;   /* for FX_INVALID: the reason of the first invalid reading */
};

static void one(struct wire *w, const char *id, int kind, uint64_t ts, const double *v, size_t nv)
{
    struct rd r;
    rd_init(&r, id, kind, ts, 1, v, nv);
    pack_batch(w, &r, 1, "fixture-dev");
}

static const double V1 = 21.5;
static const double V3[3] = {0.01, -0.02, 0.98};

static void fx_good_one(struct wire *w) { one(w, "aq-000123", 1, FIX_NOW, &V1, 1); }
static void fx_good_accel(struct wire *w) { one(w, "acc-0042", 8, FIX_NOW, V3, 3); }
static void fx_good_empty(struct wire *w) { pack_batch(w, NULL, 0, "idle-device"); }
static void fx_good_multi(struct wire *w)
{
    struct rd r[12];
    static const char *ids[4] = {"city.aq-1", "city.aq-2", "mems:acc-3", "drain_lvl-4"};
    static const int kinds[4] = {3, 4, 8, 7};
    for (int i = 0; i < 12; i++) {
        double v[3] = {i * 1.5, -i * 0.25, 1e-3 * i};
        rd_init(&r[i], ids[i % 4], kinds[i % 4], FIX_NOW - 1000u * (uint64_t)i, (uint32_t)i, v,
                kinds[i % 4] == 8 ? 3 : 1);
        r[i].m.status = i == 5 ? 1 : 0;
    }
    pack_batch(w, r, 12, "concentrator-9");
}
static void fx_good_geo_unknown(struct wire *w)
{
    struct rd r;
    rd_init(&r, "geo-1", 5, FIX_NOW, 77, &V1, 1);
    r.pos = (Sensegate__V1__GeoPoint)SENSEGATE__V1__GEO_POINT__INIT;
    r.pos.lat = 34.7466;
    r.pos.lon = 113.6253;
    r.m.position = &r.pos;
    struct wire inner = {0};
    pack_reading(&inner, &r);
    w_lenfield(&inner, 42, "future field", 12);
    w_lenfield(w, 2, inner.b, inner.n);
    w_tag(w, 7, 0);
    w_varint(w, 1);
    w_free(&inner);
}
static void fx_bad_nul_id(struct wire *w) { pack_raw_id(w, "abc\0xyz", 7, 1, 1.0); }
static void fx_bad_long_id(struct wire *w)
{
    char id[66];
    memset(id, 'a', 65);
    id[65] = '\0';
    one(w, id, 1, FIX_NOW, &V1, 1);
}
static void fx_bad_charset_id(struct wire *w) { one(w, "bad id/1", 1, FIX_NOW, &V1, 1); }
static void fx_bad_empty_id(struct wire *w) { one(w, "", 1, FIX_NOW, &V1, 1); }
static void fx_bad_kind_77(struct wire *w) { one(w, "k-77", 77, FIX_NOW, &V1, 1); }
static void fx_bad_kind_0(struct wire *w) { one(w, "k-0", 0, FIX_NOW, &V1, 1); }
static void fx_bad_4_values(struct wire *w)
{
    double v[4] = {1, 2, 3, 4};
    one(w, "acc-4", 8, FIX_NOW, v, 4);
}
static void fx_bad_accel_1_value(struct wire *w) { one(w, "acc-1", 8, FIX_NOW, &V1, 1); }
static void fx_bad_nan(struct wire *w)
{
    double v = NAN;
    one(w, "nan-1", 1, FIX_NOW, &v, 1);
}
static void fx_bad_inf(struct wire *w)
{
    double v = -INFINITY;
    one(w, "inf-1", 1, FIX_NOW, &v, 1);
}
static void fx_bad_ts_past(struct wire *w) { one(w, "old", 1, FIX_NOW - MAX_PAST - 1, &V1, 1); }
static void fx_bad_ts_future(struct wire *w)
{
    one(w, "ahead", 1, FIX_NOW + MAX_FUTURE + 1, &V1, 1);
}
static void fx_bad_truncated(struct wire *w)
{
    fx_good_multi(w);
    w->n -= 5;
}
static void fx_bad_wiretype_7(struct wire *w)
{
    fx_good_one(w);
    w_tag(w, 4, 7);
}
static void fx_bad_len_past_end(struct wire *w)
{
    uint8_t b[] = {0x12, 0x40, 0x0a, 0x03, 'a', 'b', 'c'};
    w_bytes(w, b, sizeof b);
}
static void fx_bad_packed_len(struct wire *w)
{
    uint8_t b[] = {0x12, 0x0c, 0x0a, 0x01, 'p', 0x10, 0x01, 0x2a, 0x05, 1, 2, 3, 4, 5};
    w_bytes(w, b, sizeof b);
}
static void fx_bad_empty_readings(struct wire *w)
{
    for (int i = 0; i < 2048; i++) {
        uint8_t b[2] = {0x12, 0x00};
        w_bytes(w, b, 2);
    }
}

static const struct fixture fixtures[] = {
    {"good-one.bin", fx_good_one, FX_VALID, 0},
    {"good-accel.bin", fx_good_accel, FX_VALID, 0},
    {"good-empty-batch.bin", fx_good_empty, FX_VALID, 0},
    {"good-multi-sensor.bin", fx_good_multi, FX_VALID, 0},
    {"good-geo-unknown-fields.bin", fx_good_geo_unknown, FX_VALID, 0},
    {"bad-nul-sensor-id.bin", fx_bad_nul_id, FX_INVALID, SG_INVALID_SENSOR_ID},
    {"bad-long-sensor-id.bin", fx_bad_long_id, FX_INVALID, SG_INVALID_SENSOR_ID},
    {"bad-charset-sensor-id.bin", fx_bad_charset_id, FX_INVALID, SG_INVALID_SENSOR_ID},
    {"bad-empty-sensor-id.bin", fx_bad_empty_id, FX_INVALID, SG_INVALID_SENSOR_ID},
    {"bad-kind-77.bin", fx_bad_kind_77, FX_INVALID, SG_INVALID_KIND},
    {"bad-kind-0.bin", fx_bad_kind_0, FX_INVALID, SG_INVALID_KIND},
    {"bad-4-values.bin", fx_bad_4_values, FX_INVALID, SG_INVALID_CHANNELS},
    {"bad-accel-1-value.bin", fx_bad_accel_1_value, FX_INVALID, SG_INVALID_CHANNELS},
    {"bad-nan.bin", fx_bad_nan, FX_INVALID, SG_INVALID_VALUE},
    {"bad-inf.bin", fx_bad_inf, FX_INVALID, SG_INVALID_VALUE},
    {"bad-ts-past.bin", fx_bad_ts_past, FX_INVALID, SG_INVALID_TS_PAST},
    {"bad-ts-future.bin", fx_bad_ts_future, FX_INVALID, SG_INVALID_TS_FUTURE},
    {"bad-empty-readings.bin", fx_bad_empty_readings, FX_INVALID, SG_INVALID_SENSOR_ID},
    {"bad-truncated.bin", fx_bad_truncated, FX_EDECODE, 0},
    {"bad-wiretype-7.bin", fx_bad_wiretype_7, FX_EDECODE, 0},
    {"bad-len-past-end.bin", fx_bad_len_past_end, FX_EDECODE, 0},
    {"bad-packed-len.bin", fx_bad_packed_len, FX_EDECODE, 0},
};
#define NFIXTURES (sizeof fixtures / sizeof fixtures[0])

static int write_fixtures(const char *dir)
{
    for (size_t i = 0; i < NFIXTURES; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, fixtures[i].name);
        struct wire w = {0};
        fixtures[i].build(&w);
        FILE *f = fopen(path, "wb");
        if (f == NULL || (w.n > 0 && fwrite(w.b, 1, w.n, f) != w.n) || fclose(f) != 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            return 1;
        }
        w_free(&w);
    }
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct wire w = {0};
    uint8_t tmp[4096];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, f)) > 0) {
        w_bytes(&w, tmp, got);
    }
    fclose(f);
    *len = w.n;
    return w.b != NULL ? w.b : calloc(1, 1);
}

static void test_fixtures(void)
{
    for (size_t i = 0; i < NFIXTURES; i++) {
        const struct fixture *fx = &fixtures[i];
        char path[1024];
        snprintf(path, sizeof path, "%s/payloads/%s", SG_TEST_DATA, fx->name);
        size_t len = 0;
        uint8_t *buf = read_file(path, &len);
        CU_ASSERT_PTR_NOT_NULL(buf);
        if (buf == NULL) {
            fprintf(stderr, "\nmissing fixture %s (run test_decode --write-fixtures)\n", path);
            continue;
        }
        struct wire w = {0};
        fx->build(&w);
        CU_ASSERT(len == w.n && (len == 0 || memcmp(buf, w.b, len) == 0));
        w_free(&w);

        const struct sg_reading *rs;
        size_t n;
        int rc = dec_batch(dec, buf, len, FIX_NOW, &rs, &n);
        int first_invalid = 0;
        for (size_t k = 0; rc == 0 && k < n && first_invalid == 0; k++) {
            first_invalid = rs[k].invalid;
        }
        switch (fx->expect) {
        case FX_VALID:
            CU_ASSERT(rc == 0 && first_invalid == 0);
            break;
        case FX_INVALID:
            CU_ASSERT(rc == 0 && first_invalid == fx->reason);
            break;
        case FX_EDECODE:
            CU_ASSERT_EQUAL(rc, SG_EDECODE);
            break;
        }
        free(buf);
    }
}

/* --- main ----------------------------------------------------------------- */

static const struct sg_test good_tests[] = {
    {"one reading", test_one_reading},
    {"accel three channels", test_accel},
    {"many readings, several sensors", test_many_sensors},
    {"empty batch", test_empty_batch},
    {"unknown fields ignored", test_unknown_fields},
    {"repeated sensor_id: last wins", test_repeated_id_last_wins},
    SG_TEST_END,
};
static const struct sg_test invalid_tests[] = {
    {"sensor_id", test_sensor_id},
    {"embedded NUL in sensor_id", test_embedded_nul},
    {"kind", test_kind},
    {"channels", test_channels},
    {"values NaN/Inf vs extreme finite", test_values},
    {"timestamp bounds inclusive", test_ts_bounds},
    SG_TEST_END,
};
static const struct sg_test limits_tests[] = {
    {"max_readings_per_batch", test_batch_limit},
    {"max_payload_bytes", test_too_big},
    SG_TEST_END,
};
static const struct sg_test hostile_tests[] = {
    {"truncated at every offset", test_truncated_every_offset},
    {"malformed wire", test_malformed},
    {"allocation bombs", test_bomb},
    {"random mutations", test_mutations},
    SG_TEST_END,
};
static const struct sg_test diff_tests[] = {
    {"generated and mutated payloads", test_differential},
    {"every decode of this file agreed", test_differential_total},
    SG_TEST_END,
};
static const struct sg_test topic_tests[] = {
    {"topic shape", test_topic},
    SG_TEST_END,
};
static const struct sg_test fixture_tests[] = {
    {"fixtures match and decode", test_fixtures},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"decode good payloads", suite_init, suite_clean, good_tests},
    {"decode invalid readings", suite_init, suite_clean, invalid_tests},
    {"decode limits", suite_init, suite_clean, limits_tests},
    {"decode hostile input", suite_init, suite_clean, hostile_tests},
    {"decode topic", suite_init, suite_clean, topic_tests},
    {"decode fixtures", suite_init, suite_clean, fixture_tests},
    /* Last: test_differential_total checks what every suite before it
     * decoded. */
    {"decode direct vs protobuf-c reference", suite_init, suite_clean, diff_tests},
    SG_SUITE_END,
};

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-fixtures") == 0) {
        return write_fixtures(argv[2]);
    }
    return sg_test_main(suites);
}

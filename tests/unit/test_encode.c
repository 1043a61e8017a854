/*
 * Unit tests for gateway/encode.c: batch_id format, JSON body parsed back
 * with jansson (field names of contract sections 2 and 3, doubles exact to
 * the bit), protobuf RollupBatch round trip through the generated unpack
 * and byte-for-byte against a single protobuf-c pack of the whole batch.
 */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "common.h"
#include "config.h"
#include "encode.h"
#include "reading.h"
#include "rollup.h"
#include "sensegate.pb-c.h"
#include "sg_test.h"

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Deterministic xorshift for test data. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A double from random bits, retried until finite and not -0.0. */
static double rng_double(void)
{
    for (;;) {
        uint64_t bits = rng();
        double d;
        memcpy(&d, &bits, sizeof d);
        if (isfinite(d) && !(d == 0.0 && signbit(d))) {
            return d;
        }
    }
}

static void fill_rollup(struct sg_rollup *r, int i)
{
    memset(r, 0, sizeof *r);
    snprintf(r->sensor_id, sizeof r->sensor_id, "sensor-%03d", i);
    r->kind = (uint8_t)(1 + i % 9);
    r->channel = (uint8_t)(r->kind == SG_KIND_ACCEL_G ? i % 3 : 0);
    r->partial = i % 2 == 1;
    r->window_start_ms = 1700000000000ull + (uint64_t)i * 10000u;
    r->window_ms = 10000;
    r->count = 1000 + (uint64_t)i;
    r->min = rng_double();
    r->max = rng_double();
    r->sum = rng_double();
    r->mean = 1.0 / 3.0;
    r->stddev = 0.1;
    r->rms = 4.9406564584124654e-324;   /* smallest denormal */
    r->first_ts_ms = r->window_start_ms + 1;
    r->last_ts_ms = r->window_start_ms + 9999;
    r->last = 1e300;
    r->p50 = -2.5;
    r->p95 = DBL_MAX;
    r->p99 = 9007199254740993.0;   /* rounds to 2^53 */
    r->gaps = (uint64_t)i;
    r->duplicates = 2;
    r->faulty = 3;
    r->late = 4;
}

/* --- batch_id ------------------------------------------------------------- */

static void test_batch_id(void)
{
    char out[64];
    sg_encode_batch_id(out, sizeof out, "gw-zz-001", 42);
    CU_ASSERT_STRING_EQUAL(out, "gw-zz-001:00000000000000000042");
    sg_encode_batch_id(out, sizeof out, "gw", 0);
    CU_ASSERT_STRING_EQUAL(out, "gw:00000000000000000000");
    sg_encode_batch_id(out, sizeof out, "gw", UINT64_MAX);
    CU_ASSERT_STRING_EQUAL(out, "gw:18446744073709551615");
    sg_encode_batch_id(out, sizeof out, "gw", 12345678901234567890ull);
    CU_ASSERT_STRING_EQUAL(out, "gw:12345678901234567890");

    /* strlen(gateway_id) + 22 bytes suffice; less truncates, NUL-terminated. */
    char exact[2 + 22];
    sg_encode_batch_id(exact, sizeof exact, "gw", 7);
    CU_ASSERT_STRING_EQUAL(exact, "gw:00000000000000000007");
    char small[8];
    sg_encode_batch_id(small, sizeof small, "gw", 7);
    CU_ASSERT_STRING_EQUAL(small, "gw:0000");
    char untouched[4] = "abc";
    sg_encode_batch_id(untouched, 0, "gw", 7);
    CU_ASSERT_STRING_EQUAL(untouched, "abc");
}

/* --- JSON ----------------------------------------------------------------- */

static json_t *parse(const struct sg_buf *b)
{
    json_error_t err;
    json_t *j = json_loadb(b->data, b->len, 0, &err);
    if (j == NULL) {
        fprintf(stderr, "\njansson: %s at %d: %.200s\n", err.text, err.position, b->data);
    }
    return j;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    CU_ASSERT(json_is_number(v));
    return json_number_value(v);
}

static long long integer(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    CU_ASSERT(json_is_integer(v));
    return json_integer_value(v);
}

static const char *const rollup_keys[] = {
    "sensor_id", "kind",        "channel",    "window_start_ms", "window_ms", "count",
    "min",       "max",         "sum",        "mean",            "stddev",    "rms",
    "first_ts_ms", "last_ts_ms", "last",      "p50",             "p95",       "p99",
    "gaps",      "duplicates",  "faulty",     "late",            "partial",
};
#define NKEYS (sizeof rollup_keys / sizeof rollup_keys[0])

/* Checks one parsed rollup against the struct, doubles to the bit. */
static int check_json_rollup(json_t *o, const struct sg_rollup *r)
{
    int bad = 0;
    bad += !json_is_object(o);
    bad += json_object_size(o) != NKEYS;
    for (size_t k = 0; k < NKEYS; k++) {
        bad += json_object_get(o, rollup_keys[k]) == NULL;
    }
    bad += strcmp(json_string_value(json_object_get(o, "sensor_id")), r->sensor_id) != 0;
    bad += strcmp(json_string_value(json_object_get(o, "kind")), sg_kind_name(r->kind)) != 0;
    bad += integer(o, "channel") != r->channel;
    bad += (uint64_t)integer(o, "window_start_ms") != r->window_start_ms;
    bad += (uint64_t)integer(o, "window_ms") != r->window_ms;
    bad += (uint64_t)integer(o, "count") != r->count;
    bad += (uint64_t)integer(o, "first_ts_ms") != r->first_ts_ms;
    bad += (uint64_t)integer(o, "last_ts_ms") != r->last_ts_ms;
    bad += (uint64_t)integer(o, "gaps") != r->gaps;
    bad += (uint64_t)integer(o, "duplicates") != r->duplicates;
    bad += (uint64_t)integer(o, "faulty") != r->faulty;
    bad += (uint64_t)integer(o, "late") != r->late;
    bad += !same_bits(num(o, "min"), r->min);
    bad += !same_bits(num(o, "max"), r->max);
    bad += !same_bits(num(o, "sum"), r->sum);
    bad += !same_bits(num(o, "mean"), r->mean);
    bad += !same_bits(num(o, "stddev"), r->stddev);
    bad += !same_bits(num(o, "rms"), r->rms);
    bad += !same_bits(num(o, "last"), r->last);
    bad += !same_bits(num(o, "p50"), r->p50);
    bad += !same_bits(num(o, "p95"), r->p95);
    bad += !same_bits(num(o, "p99"), r->p99);
    json_t *p = json_object_get(o, "partial");
    bad += !json_is_boolean(p) || json_is_true(p) != r->partial;
    return bad;
}

static void test_json_exact_text(void)
{
    struct sg_rollup r;
    memset(&r, 0, sizeof r);
    strcpy(r.sensor_id, "aq-1");
    r.kind = SG_KIND_PM2_5_UGM3;
    r.window_start_ms = 1700000000000ull;
    r.window_ms = 10000;
    r.count = 2;
    r.min = 1.5;
    r.max = 2.5;
    r.sum = 4;
    r.mean = 2;
    r.stddev = 0.5;
    r.rms = 0.1;
    r.first_ts_ms = 1700000000001ull;
    r.last_ts_ms = 1700000000002ull;
    r.last = 2.5;
    r.p50 = 1.5;
    r.p95 = 2.5;
    r.p99 = 2.5;
    r.partial = true;
    struct sg_buf b = SG_BUF_INIT;
    CU_ASSERT_EQUAL_FATAL(sg_encode_batch(&b, SG_CT_JSON, "gw-1", "gw-1:00000000000000000001",
                                          1700000001000ull, &r, 1),
                          0);
    const char *want =
        "{\"gateway_id\":\"gw-1\",\"batch_id\":\"gw-1:00000000000000000001\","
        "\"sent_at_ms\":1700000001000,\"rollups\":[{\"sensor_id\":\"aq-1\",\"kind\":\"PM2_5_UGM3\","
        "\"channel\":0,\"window_start_ms\":1700000000000,\"window_ms\":10000,\"count\":2,"
        "\"min\":1.5,\"max\":2.5,\"sum\":4,\"mean\":2,\"stddev\":0.5,\"rms\":0.1,"
        "\"first_ts_ms\":1700000000001,\"last_ts_ms\":1700000000002,\"last\":2.5,"
        "\"p50\":1.5,\"p95\":2.5,\"p99\":2.5,\"gaps\":0,\"duplicates\":0,\"faulty\":0,"
        "\"late\":0,\"partial\":true}]}";
    CU_ASSERT_STRING_EQUAL(b.data, want);
    CU_ASSERT_EQUAL(b.len, strlen(want));
    sg_buf_free(&b);
}

static void test_json_roundtrip(void)
{
    enum { N = 500 };
    static struct sg_rollup rs[N];
    for (int i = 0; i < N; i++) {
        fill_rollup(&rs[i], i);
    }
    struct sg_buf b = SG_BUF_INIT;
    CU_ASSERT_EQUAL_FATAL(sg_encode_batch(&b, SG_CT_JSON, "gw-zz-001",
                                          "gw-zz-001:00000000000000000009", 1700000123456ull, rs, N),
                          0);
    json_t *j = parse(&b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_object_size(j), 4);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "gateway_id")), "gw-zz-001");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "batch_id")),
                           "gw-zz-001:00000000000000000009");
    CU_ASSERT_EQUAL(integer(j, "sent_at_ms"), 1700000123456ll);
    json_t *arr = json_object_get(j, "rollups");
    CU_ASSERT_FATAL(json_is_array(arr));
    CU_ASSERT_EQUAL_FATAL(json_array_size(arr), N);
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        bad += check_json_rollup(json_array_get(arr, i), &rs[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    json_decref(j);
    sg_buf_free(&b);
}

static void test_json_special(void)
{
    struct sg_rollup r;
    fill_rollup(&r, 8);
    r.kind = 0;                 /* unknown kinds print as KIND_UNSPECIFIED */
    r.mean = NAN;               /* non-finite: null */
    r.stddev = INFINITY;
    r.min = -0.0;               /* documented: the sign of zero is not kept */
    strcpy(r.sensor_id, "q\"b\\s");   /* escaped, although ids never hold these */
    struct sg_buf b = SG_BUF_INIT;
    CU_ASSERT_EQUAL_FATAL(sg_encode_batch(&b, SG_CT_JSON, "gw\"x", "id\n1", 0, &r, 1), 0);
    json_t *j = parse(&b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "gateway_id")), "gw\"x");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "batch_id")), "id\n1");
    CU_ASSERT_EQUAL(integer(j, "sent_at_ms"), 0);
    json_t *o = json_array_get(json_object_get(j, "rollups"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o, "sensor_id")), "q\"b\\s");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(o, "kind")), "KIND_UNSPECIFIED");
    CU_ASSERT(json_is_null(json_object_get(o, "mean")));
    CU_ASSERT(json_is_null(json_object_get(o, "stddev")));
    CU_ASSERT(num(o, "min") == 0.0);
    CU_ASSERT(json_is_false(json_object_get(o, "partial")));
    json_decref(j);

    /* No rollups: an empty array. */
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_JSON, "gw", "gw:1", 5, NULL, 0), 0);
    CU_ASSERT_STRING_EQUAL(b.data,
                           "{\"gateway_id\":\"gw\",\"batch_id\":\"gw:1\",\"sent_at_ms\":5,"
                           "\"rollups\":[]}");
    sg_buf_free(&b);
}

static void test_buffer_reuse_and_errors(void)
{
    struct sg_rollup rs[3];
    for (int i = 0; i < 3; i++) {
        fill_rollup(&rs[i], i);
    }
    struct sg_buf a = SG_BUF_INIT, b = SG_BUF_INIT;
    sg_buf_puts(&b, "stale content that must go");
    CU_ASSERT_EQUAL(sg_encode_batch(&a, SG_CT_JSON, "gw", "gw:2", 9, rs, 3), 0);
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_JSON, "gw", "gw:2", 9, rs, 3), 0);
    CU_ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    /* Reusing the buffer for a smaller body: exactly the smaller body. */
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_JSON, "gw", "gw:2", 9, rs, 1), 0);
    CU_ASSERT_EQUAL(sg_encode_batch(&a, SG_CT_JSON, "gw", "gw:2", 9, rs, 1), 0);
    CU_ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    CU_ASSERT_EQUAL(strlen(b.data), b.len);

    /* Errors leave the buffer as it was. */
    size_t len = b.len;
    CU_ASSERT_EQUAL(sg_encode_batch(&b, 7, "gw", "gw:2", 9, rs, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_JSON, NULL, "gw:2", 9, rs, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_JSON, "gw", NULL, 9, rs, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_PROTOBUF, "gw", "gw:2", 9, NULL, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_encode_batch(NULL, SG_CT_JSON, "gw", "gw:2", 9, rs, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(b.len, len);
    sg_buf_free(&a);
    sg_buf_free(&b);
}

/* --- protobuf ------------------------------------------------------------- */

static int check_pb_rollup(const Sensegate__V1__Rollup *m, const struct sg_rollup *r)
{
    int bad = 0;
    bad += strcmp(m->sensor_id, r->sensor_id) != 0;
    bad += (int)m->kind != r->kind;
    bad += m->channel != r->channel;
    bad += m->window_start_ms != r->window_start_ms;
    bad += m->window_ms != r->window_ms;
    bad += m->count != r->count;
    bad += !same_bits(m->min, r->min);
    bad += !same_bits(m->max, r->max);
    bad += !same_bits(m->sum, r->sum);
    bad += !same_bits(m->mean, r->mean);
    bad += !same_bits(m->stddev, r->stddev);
    bad += !same_bits(m->rms, r->rms);
    bad += m->first_ts_ms != r->first_ts_ms;
    bad += m->last_ts_ms != r->last_ts_ms;
    bad += !same_bits(m->last, r->last);
    bad += !same_bits(m->p50, r->p50);
    bad += !same_bits(m->p95, r->p95);
    bad += !same_bits(m->p99, r->p99);
    bad += m->gaps != r->gaps;
    bad += m->duplicates != r->duplicates;
    bad += m->faulty != r->faulty;
    bad += m->late != r->late;
    bad += (m->partial != 0) != r->partial;
    return bad;
}

/* The whole batch packed by protobuf-c in one go, as a reference. */
static uint8_t *reference_pack(const char *gw, const char *id, uint64_t sent,
                               const struct sg_rollup *rs, size_t n, size_t *len)
{
    Sensegate__V1__Rollup *ms = calloc(n ? n : 1, sizeof *ms);
    Sensegate__V1__Rollup **ps = calloc(n ? n : 1, sizeof *ps);
    for (size_t i = 0; i < n; i++) {
        Sensegate__V1__Rollup m = SENSEGATE__V1__ROLLUP__INIT;
        const struct sg_rollup *r = &rs[i];
        m.sensor_id = (char *)r->sensor_id;
        m.kind = (Sensegate__V1__Kind)r->kind;
        m.channel = r->channel;
        m.window_start_ms = r->window_start_ms;
        m.window_ms = r->window_ms;
        m.count = r->count;
        m.min = r->min;
        m.max = r->max;
        m.sum = r->sum;
        m.mean = r->mean;
        m.stddev = r->stddev;
        m.rms = r->rms;
        m.first_ts_ms = r->first_ts_ms;
        m.last_ts_ms = r->last_ts_ms;
        m.last = r->last;
        m.p50 = r->p50;
        m.p95 = r->p95;
        m.p99 = r->p99;
        m.gaps = r->gaps;
        m.duplicates = r->duplicates;
        m.faulty = r->faulty;
        m.late = r->late;
        m.partial = r->partial;
        ms[i] = m;
        ps[i] = &ms[i];
    }
    Sensegate__V1__RollupBatch b = SENSEGATE__V1__ROLLUP_BATCH__INIT;
    b.gateway_id = (char *)gw;
    b.batch_id = (char *)id;
    b.sent_at_ms = sent;
    b.n_rollups = n;
    b.rollups = ps;
    *len = sensegate__v1__rollup_batch__get_packed_size(&b);
    uint8_t *out = malloc(*len ? *len : 1);
    sensegate__v1__rollup_batch__pack(&b, out);
    free(ms);
    free(ps);
    return out;
}

static void test_protobuf_roundtrip(void)
{
    enum { N = 300 };
    static struct sg_rollup rs[N];
    for (int i = 0; i < N; i++) {
        fill_rollup(&rs[i], i);
    }
    rs[7].mean = NAN;   /* protobuf keeps NaN bits too */
    rs[8].min = -0.0;   /* proto3: protobuf-c omits a zero double, so -0.0 reads back as 0.0 */
    struct sg_buf b = SG_BUF_INIT;
    const char *gw = "gw-zz-001";
    const char *id = "gw-zz-001:00000000000000000077";
    CU_ASSERT_EQUAL_FATAL(sg_encode_batch(&b, SG_CT_PROTOBUF, gw, id, 1700000999999ull, rs, N), 0);

    Sensegate__V1__RollupBatch *m =
        sensegate__v1__rollup_batch__unpack(NULL, b.len, (const uint8_t *)b.data);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->gateway_id, gw);
    CU_ASSERT_STRING_EQUAL(m->batch_id, id);
    CU_ASSERT_EQUAL(m->sent_at_ms, 1700000999999ull);
    CU_ASSERT_EQUAL_FATAL(m->n_rollups, N);
    CU_ASSERT(same_bits(m->rollups[8]->min, 0.0));
    rs[8].min = 0.0;
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        bad += check_pb_rollup(m->rollups[i], &rs[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    sensegate__v1__rollup_batch__free_unpacked(m, NULL);
    rs[8].min = -0.0;

    /* Byte-identical to protobuf-c packing the whole batch itself. */
    size_t rlen;
    uint8_t *ref = reference_pack(gw, id, 1700000999999ull, rs, N, &rlen);
    CU_ASSERT(rlen == b.len && memcmp(ref, b.data, rlen) == 0);
    free(ref);

    /* Zero rollups and a zero timestamp. */
    CU_ASSERT_EQUAL(sg_encode_batch(&b, SG_CT_PROTOBUF, "g", "g:0", 0, NULL, 0), 0);
    ref = reference_pack("g", "g:0", 0, NULL, 0, &rlen);
    CU_ASSERT(rlen == b.len && memcmp(ref, b.data, rlen) == 0);
    m = sensegate__v1__rollup_batch__unpack(NULL, b.len, (const uint8_t *)b.data);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->n_rollups, 0);
    sensegate__v1__rollup_batch__free_unpacked(m, NULL);
    free(ref);
    sg_buf_free(&b);
}

/* --- main ----------------------------------------------------------------- */

static const struct sg_test encode_batch_id_tests[] = {
    {"format", test_batch_id},
    SG_TEST_END,
};
static const struct sg_test encode_json_tests[] = {
    {"exact text", test_json_exact_text},
    {"round trip, doubles exact", test_json_roundtrip},
    {"non-finite, escapes, empty", test_json_special},
    {"buffer reuse and errors", test_buffer_reuse_and_errors},
    SG_TEST_END,
};
static const struct sg_test encode_protobuf_tests[] = {
    {"round trip and byte equality", test_protobuf_roundtrip},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"encode batch_id", NULL, NULL, encode_batch_id_tests},
    {"encode json", NULL, NULL, encode_json_tests},
    {"encode protobuf", NULL, NULL, encode_protobuf_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

/*
 * common, buf, reading: the checked parsers, exact double printing, JSON
 * escaping, kind table and field validation of contract section 2.
 */
#include "buf.h"
#include "common.h"
#include "reading.h"
#include "sg_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_parse_u64(void)
{
    uint64_t v = 7;
    CU_ASSERT_EQUAL(sg_parse_u64("0", 0, 10, &v), 0);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(sg_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    v = 7;
    CU_ASSERT_EQUAL(sg_parse_u64("18446744073709551616", 0, UINT64_MAX, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_u64("12abc", 0, 100, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_u64("", 0, 100, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_u64("-1", 0, 100, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_u64(" 1", 0, 100, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_u64("101", 0, 100, &v), SG_EINVAL);
    CU_ASSERT_EQUAL(v, 7); /* nothing stored on error */
    double d;
    CU_ASSERT_EQUAL(sg_parse_double("1.5e3", &d), 0);
    CU_ASSERT_DOUBLE_EQUAL(d, 1500.0, 0);
    CU_ASSERT_EQUAL(sg_parse_double("nan", &d), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_double("1.5x", &d), SG_EINVAL);
}

static void test_hostport(void)
{
    char host[64];
    uint16_t port;
    CU_ASSERT_EQUAL(sg_parse_hostport("127.0.0.1:9464", host, sizeof host, &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "127.0.0.1");
    CU_ASSERT_EQUAL(port, 9464);
    CU_ASSERT_EQUAL(sg_parse_hostport("127.0.0.1:0", host, sizeof host, &port), 0);
    CU_ASSERT_EQUAL(port, 0);
    CU_ASSERT_EQUAL(sg_parse_hostport("127.0.0.1", host, sizeof host, &port), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_hostport(":80", host, sizeof host, &port), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_parse_hostport("h:65536", host, sizeof host, &port), SG_EINVAL);
}

/* Every double printed by sg_buf_put_double must read back bit-exact. */
static void test_double_roundtrip(void)
{
    struct sg_buf b = SG_BUF_INIT;
    double fixed[] = {0.1, 1.0 / 3, -2.5e-300, 4.9e-324, 1.7976931348623157e308, 123456789.0,
                      -0.0, 1e21, 9007199254740993.0, 20.25, -17.125};
    srand(42);
    for (int i = 0; i < 20000; i++) {
        double v;
        if (i < (int)(sizeof fixed / sizeof fixed[0])) {
            v = fixed[i];
        } else {
            uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
            memcpy(&v, &bits, sizeof v);
            if (!isfinite(v)) {
                continue;
            }
        }
        sg_buf_reset(&b);
        sg_buf_put_double(&b, v);
        double back = strtod(b.data, NULL);
        if (v == 0.0) {
            CU_ASSERT(back == 0.0);
        } else {
            CU_ASSERT(memcmp(&back, &v, sizeof v) == 0);
        }
    }
    sg_buf_reset(&b);
    sg_buf_put_double(&b, NAN);
    CU_ASSERT_STRING_EQUAL(b.data, "null");
    sg_buf_reset(&b);
    sg_buf_put_double(&b, 42.0);
    CU_ASSERT_STRING_EQUAL(b.data, "42");
    sg_buf_reset(&b);
    sg_buf_put_u64(&b, UINT64_MAX);
    CU_ASSERT_STRING_EQUAL(b.data, "18446744073709551615");
    sg_buf_free(&b);
}

/* The reference: the shortest of %.15g/%.16g/%.17g that reads back. */
static void reference_double(double v, char *out, size_t cap)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (prec == 17 || strtod(out, NULL) == v) {
            return;
        }
    }
}

/* sg_buf_put_double has an integer fast path for 1e-5 <= |v| < 1e15: it must
 * print exactly what the reference prints, and read back bit-exact. */
static void test_double_fast_path(void)
{
    struct sg_buf b = SG_BUF_INIT;
    char ref[40];
    srand(7);
    int mismatches = 0, inexact = 0;
    for (int i = 0; i < 200000; i++) {
        double v;
        switch (i % 4) {
        case 0: /* sensor-like values at 0.01 resolution */
            v = (double)(rand() % 2000000 - 1000000) / 100.0;
            break;
        case 1: /* log-uniform over the whole fast-path range */
            v = pow(10.0, -5.0 + 20.0 * ((double)rand() / RAND_MAX));
            break;
        case 2: /* means and stddevs: quotients */
            v = (double)(rand() % 100000 + 1) / (double)(rand() % 997 + 1);
            break;
        default: /* the range edges */
            v = (i % 8 == 3 ? 1e-5 : 1e15) * (1.0 + ((double)rand() / RAND_MAX - 0.5) * 1e-9);
            break;
        }
        if (v == (double)(int64_t)v) {
            continue; /* integers take another path */
        }
        sg_buf_reset(&b);
        sg_buf_put_double(&b, v);
        reference_double(v, ref, sizeof ref);
        mismatches += strcmp(b.data, ref) != 0;
        double back = strtod(b.data, NULL);
        inexact += memcmp(&back, &v, sizeof v) != 0;
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT_EQUAL(inexact, 0);
    sg_buf_free(&b);
}

static void test_json_escape(void)
{
    struct sg_buf b = SG_BUF_INIT;
    sg_buf_put_json_str(&b, "a\"b\\c\nd\x01");
    CU_ASSERT_STRING_EQUAL(b.data, "\"a\\\"b\\\\c\\u000ad\\u0001\"");
    sg_buf_reset(&b);
    sg_buf_printf(&b, "%s-%d", "x", 5);
    sg_buf_printf(&b, "%0300d", 1); /* forces growth inside printf */
    CU_ASSERT_EQUAL(b.len, 3 + 300);
    CU_ASSERT_EQUAL(b.data[b.len - 1], '1');
    sg_buf_free(&b);
    sg_buf_free(NULL);
}

static void test_kinds(void)
{
    CU_ASSERT_STRING_EQUAL(sg_kind_name(SG_KIND_ACCEL_G), "ACCEL_G");
    CU_ASSERT_STRING_EQUAL(sg_kind_name(SG_KIND_PM2_5_UGM3), "PM2_5_UGM3");
    CU_ASSERT_STRING_EQUAL(sg_kind_name(77), "KIND_UNSPECIFIED");
    for (int k = 0; k <= SG_KIND_MAX; k++) {
        CU_ASSERT_EQUAL(sg_kind_parse(sg_kind_name(k)), k);
    }
    CU_ASSERT_EQUAL(sg_kind_parse("NOPE"), -1);
    CU_ASSERT_EQUAL(sg_kind_channels(SG_KIND_ACCEL_G), 3);
    CU_ASSERT_EQUAL(sg_kind_channels(SG_KIND_STRAIN_UE), 1);
    CU_ASSERT_EQUAL(sg_kind_channels(0), 0);
    CU_ASSERT_EQUAL(sg_kind_channels(10), 0);
}

static struct sg_reading good(void)
{
    struct sg_reading r;
    memset(&r, 0, sizeof r);
    strcpy(r.sensor_id, "aq-000123");
    r.id_len = 9;
    r.kind = SG_KIND_TEMPERATURE_C;
    r.nvalues = 1;
    r.values[0] = 21.5;
    r.ts_ms = 1000000;
    return r;
}

static void test_validate(void)
{
    const uint64_t now = 1000000, past = 1000, fut = 500;
    struct sg_reading r = good();
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_NONE);
    r.ts_ms = now - past; /* inclusive edges */
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_NONE);
    r.ts_ms = now - past - 1;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_TS_PAST);
    r.ts_ms = now + fut;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_NONE);
    r.ts_ms = now + fut + 1;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_TS_FUTURE);
    r = good();
    r.values[0] = NAN;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_VALUE);
    r.values[0] = -INFINITY;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_VALUE);
    r = good();
    r.kind = 0;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_KIND);
    r.kind = SG_KIND_ACCEL_G;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_CHANNELS);
    r.nvalues = 3;
    r.values[1] = r.values[2] = 0.01;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_NONE);
    r = good();
    strcpy(r.sensor_id, "bad id");
    r.id_len = 6;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_SENSOR_ID);
    r.id_len = 0;
    CU_ASSERT_EQUAL(sg_reading_validate(&r, now, past, fut), SG_INVALID_SENSOR_ID);
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = 0;
    CU_ASSERT_FALSE(sg_sensor_id_ok(id65, 65));
    CU_ASSERT_TRUE(sg_sensor_id_ok(id65, 64));
    CU_ASSERT_TRUE(sg_sensor_id_ok("A.z_0:9-x", 9));
    CU_ASSERT_FALSE(sg_sensor_id_ok("a\0b", 3));
    CU_ASSERT_FALSE(sg_sensor_id_ok("a/b", 3));
}

/* Secrets never reach a log line through a URL (start-up, reload). */
static void test_redact_url(void)
{
    char out[128];
    sg_redact_url("https://user:s3cret@backend.example:8443/v1", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "https://***@backend.example:8443/v1");
    CU_ASSERT_PTR_NULL(strstr(out, "s3cret"));
    sg_redact_url("mqtts://token@broker:8883", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "mqtts://***@broker:8883");
    /* An @ in the path is not userinfo. */
    sg_redact_url("http://host:8080/a@b", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "http://host:8080/a@b");
    sg_redact_url("tcp://127.0.0.1:1883", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "tcp://127.0.0.1:1883");
    sg_redact_url("not a url @ all", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "not a url @ all");
    sg_redact_url("http://u:p@h/", out, 8);
    CU_ASSERT_STRING_EQUAL(out, "http://");
}

static const struct sg_test parse_tests[] = {
    {"u64 and double", test_parse_u64},
    {"host:port", test_hostport},
    {"url userinfo redacted", test_redact_url},
    SG_TEST_END,
};
static const struct sg_test buf_tests[] = {
    {"doubles round-trip bit-exact", test_double_roundtrip},
    {"fast path prints what %.15g/16g/17g would", test_double_fast_path},
    {"json escaping and printf growth", test_json_escape},
    SG_TEST_END,
};
static const struct sg_test reading_tests[] = {
    {"kind table", test_kinds},
    {"validation per contract section 2", test_validate},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"parse", NULL, NULL, parse_tests},
    {"buf", NULL, NULL, buf_tests},
    {"reading", NULL, NULL, reading_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

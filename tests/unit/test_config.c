/*
 * config: embedded defaults, the sample file, a fully custom file, every
 * tests/data/bad-*.yaml against its bad-*.expected message, and the
 * cross-field rules of sg_config_check on structs changed in code.
 *
 * Long file: one suite per behaviour of the config module (defaults, the
 * sample, custom files, every bad-*.yaml fixture, the checks, derived
 * defaults, the key table against docs/OPERATING.md, the reload merge),
 * linking only sg_config; the fixtures themselves are in tests/data.
 */
#include "common.h"
#include "config.h"

#include "sg_test.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SAMPLE SG_TEST_DATA "/../../config/sensegate.yaml"

static char errbuf[8192];

/* ---- helpers -------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *s = sg_xmalloc(1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Writes text to a new temp file; returns its path (static buffer). */
static const char *write_temp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sg-test-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        return NULL;
    }
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? path : NULL;
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Field-by-field equality of everything but path. */
static bool configs_equal(const struct sg_config *a, const struct sg_config *b)
{
    bool eq =
        str_eq(a->gateway_id, b->gateway_id) && str_eq(a->mqtt.uri, b->mqtt.uri) &&
        str_eq(a->mqtt.client_id, b->mqtt.client_id) && a->mqtt.ntopics == b->mqtt.ntopics &&
        a->mqtt.qos == b->mqtt.qos && a->mqtt.version == b->mqtt.version &&
        a->mqtt.clean_session == b->mqtt.clean_session &&
        a->mqtt.keepalive_s == b->mqtt.keepalive_s &&
        a->mqtt.session_expiry_s == b->mqtt.session_expiry_s &&
        a->mqtt.reconnect_min_ms == b->mqtt.reconnect_min_ms &&
        a->mqtt.reconnect_max_ms == b->mqtt.reconnect_max_ms &&
        str_eq(a->mqtt.username, b->mqtt.username) &&
        str_eq(a->mqtt.password_file, b->mqtt.password_file) &&
        str_eq(a->mqtt.ca_file, b->mqtt.ca_file) && str_eq(a->mqtt.cert_file, b->mqtt.cert_file) &&
        str_eq(a->mqtt.key_file, b->mqtt.key_file) && a->nwindows == b->nwindows &&
        a->allowed_lateness_ms == b->allowed_lateness_ms &&
        a->validation.max_past_ms == b->validation.max_past_ms &&
        a->validation.max_future_ms == b->validation.max_future_ms &&
        a->limits.max_payload_bytes == b->limits.max_payload_bytes &&
        a->limits.max_readings_per_batch == b->limits.max_readings_per_batch &&
        a->limits.max_series == b->limits.max_series &&
        a->limits.series_idle_ms == b->limits.series_idle_ms &&
        a->limits.ring_seqs == b->limits.ring_seqs &&
        a->limits.inbox_bytes == b->limits.inbox_bytes && str_eq(a->backend.url, b->backend.url) &&
        str_eq(a->backend.token_file, b->backend.token_file) &&
        a->backend.content_type == b->backend.content_type &&
        a->backend.max_batch_rollups == b->backend.max_batch_rollups &&
        a->backend.max_batch_delay_ms == b->backend.max_batch_delay_ms &&
        a->backend.timeout_ms == b->backend.timeout_ms &&
        a->backend.max_inflight == b->backend.max_inflight &&
        a->backend.backoff_min_ms == b->backend.backoff_min_ms &&
        a->backend.backoff_max_ms == b->backend.backoff_max_ms &&
        a->backend.retry_after_max_ms == b->backend.retry_after_max_ms &&
        str_eq(a->backend.ca_file, b->backend.ca_file) && str_eq(a->spool.dir, b->spool.dir) &&
        a->spool.max_bytes == b->spool.max_bytes && a->spool.max_batches == b->spool.max_batches &&
        a->spool.fsync == b->spool.fsync && str_eq(a->metrics.listen, b->metrics.listen) &&
        str_eq(a->metrics.port_file, b->metrics.port_file) &&
        a->stats_interval_s == b->stats_interval_s &&
        a->shutdown_timeout_ms == b->shutdown_timeout_ms && str_eq(a->log_level, b->log_level) &&
        str_eq(a->log_format, b->log_format) && a->allow_root == b->allow_root;
    for (size_t i = 0; eq && i < a->mqtt.ntopics; i++) {
        eq = str_eq(a->mqtt.topics[i], b->mqtt.topics[i]);
    }
    for (size_t i = 0; eq && i < a->nwindows; i++) {
        eq = a->windows_ms[i] == b->windows_ms[i];
    }
    return eq;
}

/* The documented defaults, written out independently of config.c. */
static void expect_defaults(const struct sg_config *c)
{
    CU_ASSERT_STRING_EQUAL(c->gateway_id, "gw-local-001");
    CU_ASSERT_STRING_EQUAL(c->mqtt.uri, "tcp://127.0.0.1:1883");
    CU_ASSERT_STRING_EQUAL(c->mqtt.client_id, "sensegate-gw-local-001");
    CU_ASSERT_EQUAL(c->mqtt.ntopics, 1);
    CU_ASSERT_STRING_EQUAL(c->mqtt.topics[0], "sensors/#");
    CU_ASSERT_EQUAL(c->mqtt.qos, 1);
    CU_ASSERT_EQUAL(c->mqtt.version, 3);
    CU_ASSERT_FALSE(c->mqtt.clean_session);
    CU_ASSERT_EQUAL(c->mqtt.keepalive_s, 30);
    CU_ASSERT_EQUAL(c->mqtt.session_expiry_s, 86400);
    CU_ASSERT_EQUAL(c->mqtt.reconnect_min_ms, 500);
    CU_ASSERT_EQUAL(c->mqtt.reconnect_max_ms, 30000);
    CU_ASSERT_PTR_NULL(c->mqtt.username);
    CU_ASSERT_PTR_NULL(c->mqtt.password_file);
    CU_ASSERT_PTR_NULL(c->mqtt.ca_file);
    CU_ASSERT_PTR_NULL(c->mqtt.cert_file);
    CU_ASSERT_PTR_NULL(c->mqtt.key_file);
    CU_ASSERT_EQUAL(c->nwindows, 1);
    CU_ASSERT_EQUAL(c->windows_ms[0], 10000);
    CU_ASSERT_EQUAL(c->allowed_lateness_ms, 2000);
    CU_ASSERT_EQUAL(c->validation.max_past_ms, 3600000);
    CU_ASSERT_EQUAL(c->validation.max_future_ms, 300000);
    CU_ASSERT_EQUAL(c->limits.max_payload_bytes, 262144);
    CU_ASSERT_EQUAL(c->limits.max_readings_per_batch, 10000);
    CU_ASSERT_EQUAL(c->limits.max_series, 200000);
    CU_ASSERT_EQUAL(c->limits.series_idle_ms, 900000);
    CU_ASSERT_EQUAL(c->limits.ring_seqs, 1024);
    CU_ASSERT_EQUAL(c->limits.inbox_bytes, 33554432);
    CU_ASSERT_STRING_EQUAL(c->backend.url, "http://127.0.0.1:8080");
    CU_ASSERT_PTR_NULL(c->backend.token_file);
    CU_ASSERT_EQUAL(c->backend.content_type, SG_CT_JSON);
    CU_ASSERT_EQUAL(c->backend.max_batch_rollups, 500);
    CU_ASSERT_EQUAL(c->backend.max_batch_delay_ms, 1000);
    CU_ASSERT_EQUAL(c->backend.timeout_ms, 10000);
    CU_ASSERT_EQUAL(c->backend.max_inflight, 2);
    CU_ASSERT_EQUAL(c->backend.backoff_min_ms, 500);
    CU_ASSERT_EQUAL(c->backend.backoff_max_ms, 300000);
    CU_ASSERT_EQUAL(c->backend.retry_after_max_ms, 3600000);
    CU_ASSERT_PTR_NULL(c->backend.ca_file);
    CU_ASSERT_STRING_EQUAL(c->spool.dir, "/var/lib/sensegate");
    CU_ASSERT_EQUAL(c->spool.max_bytes, 268435456);
    CU_ASSERT_EQUAL(c->spool.max_batches, 100000);
    CU_ASSERT_TRUE(c->spool.fsync);
    CU_ASSERT_STRING_EQUAL(c->metrics.listen, "127.0.0.1:9464");
    CU_ASSERT_PTR_NULL(c->metrics.port_file);
    CU_ASSERT_EQUAL(c->stats_interval_s, 10);
    CU_ASSERT_EQUAL(c->shutdown_timeout_ms, 10000);
    CU_ASSERT_STRING_EQUAL(c->log_level, "info");
    CU_ASSERT_STRING_EQUAL(c->log_format, "text");
}

/* ---- suite: defaults -------------------------------------------------- */

static void test_defaults(void)
{
    struct sg_config *c = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&c, NULL, errbuf, sizeof errbuf), 0);
    CU_ASSERT_STRING_EQUAL(c->path, "<defaults>");
    expect_defaults(c);
    CU_ASSERT_EQUAL(sg_config_check(c, errbuf, sizeof errbuf), 0);
    CU_ASSERT_STRING_EQUAL(errbuf, "");
    sg_config_free(c);
    sg_config_free(NULL);
}

static void test_empty_file_is_defaults(void)
{
    struct sg_config *c = NULL;
    CU_ASSERT_EQUAL_FATAL(
        sg_config_load(&c, SG_TEST_DATA "/good-empty.yaml", errbuf, sizeof errbuf), 0);
    expect_defaults(c);
    sg_config_free(c);
}

/* ---- suite: sample ---------------------------------------------------- */

static void test_sample_equals_defaults(void)
{
    struct sg_config *s = NULL, *d = NULL;
    int rc = sg_config_load(&s, SAMPLE, errbuf, sizeof errbuf);
    if (rc != 0) {
        fprintf(stderr, "\n%s\n", errbuf);
    }
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&d, NULL, errbuf, sizeof errbuf), 0);
    CU_ASSERT_STRING_EQUAL(s->path, SAMPLE);
    expect_defaults(s);
    CU_ASSERT_TRUE(configs_equal(s, d));
    sg_config_free(s);
    sg_config_free(d);
}

/* The commented-out optional keys of the sample ("#key: value", no space
 * after '#') must be real keys with valid values: enabling all of them
 * loads, and sets every optional key. */
static void test_sample_optional_keys_valid(void)
{
    char *text = slurp(SAMPLE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    char *out = sg_xmalloc(strlen(text) + 1);
    size_t w = 0;
    int enabled = 0;
    for (const char *p = text; *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p + 1) : strlen(p);
        const char *q = p;
        while (q < p + n && *q == ' ') {
            q++;
        }
        if (q + 1 < p + n && q[0] == '#' && q[1] >= 'a' && q[1] <= 'z') {
            memcpy(out + w, p, (size_t)(q - p));
            w += (size_t)(q - p);
            memcpy(out + w, q + 1, n - (size_t)(q - p) - 1);
            w += n - (size_t)(q - p) - 1;
            enabled++;
        } else {
            memcpy(out + w, p, n);
            w += n;
        }
        p += n;
    }
    out[w] = '\0';
    CU_ASSERT_EQUAL(enabled, 9); /* client_id, 5 mqtt auth/TLS, token, ca, port_file */

    const char *tmp = write_temp(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
    struct sg_config *c = NULL;
    int rc = sg_config_load(&c, tmp, errbuf, sizeof errbuf);
    if (rc != 0) {
        fprintf(stderr, "\n%s\n", errbuf);
    }
    CU_ASSERT_EQUAL(rc, 0);
    if (c != NULL) {
        CU_ASSERT_STRING_EQUAL(c->mqtt.client_id, "sensegate-gw-local-001");
        CU_ASSERT_PTR_NOT_NULL(c->mqtt.username);
        CU_ASSERT_PTR_NOT_NULL(c->mqtt.password_file);
        CU_ASSERT_PTR_NOT_NULL(c->mqtt.ca_file);
        CU_ASSERT_PTR_NOT_NULL(c->mqtt.cert_file);
        CU_ASSERT_PTR_NOT_NULL(c->mqtt.key_file);
        CU_ASSERT_PTR_NOT_NULL(c->backend.token_file);
        CU_ASSERT_PTR_NOT_NULL(c->backend.ca_file);
        CU_ASSERT_PTR_NOT_NULL(c->metrics.port_file);
    }
    sg_config_free(c);
    unlink(tmp);
    free(out);
    free(text);
}

/* ---- suite: custom files ---------------------------------------------- */

static void test_custom(void)
{
    struct sg_config *c = NULL;
    int rc = sg_config_load(&c, SG_TEST_DATA "/good-custom.yaml", errbuf, sizeof errbuf);
    if (rc != 0) {
        fprintf(stderr, "\n%s\n", errbuf);
    }
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(c->gateway_id, "gw-zz-001");
    CU_ASSERT_STRING_EQUAL(c->mqtt.uri, "ssl://broker.example.net:8883");
    CU_ASSERT_STRING_EQUAL(c->mqtt.client_id, "edge-7");
    CU_ASSERT_EQUAL_FATAL(c->mqtt.ntopics, 2);
    CU_ASSERT_STRING_EQUAL(c->mqtt.topics[0], "sensors/city/#");
    CU_ASSERT_STRING_EQUAL(c->mqtt.topics[1], "sensors/mems/+/acc-0042");
    CU_ASSERT_EQUAL(c->mqtt.qos, 0);
    CU_ASSERT_EQUAL(c->mqtt.version, 5);
    CU_ASSERT_TRUE(c->mqtt.clean_session);
    CU_ASSERT_EQUAL(c->mqtt.keepalive_s, 60);
    CU_ASSERT_EQUAL(c->mqtt.session_expiry_s, 0);
    CU_ASSERT_EQUAL(c->mqtt.reconnect_min_ms, 1000);
    CU_ASSERT_EQUAL(c->mqtt.reconnect_max_ms, 60000);
    CU_ASSERT_STRING_EQUAL(c->mqtt.username, "gw");
    CU_ASSERT_STRING_EQUAL(c->mqtt.password_file, "/etc/sg/pw");
    CU_ASSERT_STRING_EQUAL(c->mqtt.ca_file, "/etc/sg/ca.pem");
    CU_ASSERT_STRING_EQUAL(c->mqtt.cert_file, "/etc/sg/c.pem");
    CU_ASSERT_STRING_EQUAL(c->mqtt.key_file, "/etc/sg/c.key");
    CU_ASSERT_EQUAL_FATAL(c->nwindows, 3);
    CU_ASSERT_EQUAL(c->windows_ms[0], 1000);
    CU_ASSERT_EQUAL(c->windows_ms[1], 60000);
    CU_ASSERT_EQUAL(c->windows_ms[2], 300000);
    CU_ASSERT_EQUAL(c->allowed_lateness_ms, 0);
    CU_ASSERT_EQUAL(c->validation.max_past_ms, 86400000);
    CU_ASSERT_EQUAL(c->validation.max_future_ms, 1000);
    CU_ASSERT_EQUAL(c->limits.max_payload_bytes, 65536);
    CU_ASSERT_EQUAL(c->limits.max_readings_per_batch, 500);
    CU_ASSERT_EQUAL(c->limits.max_series, 1000);
    CU_ASSERT_EQUAL(c->limits.series_idle_ms, 301001);
    CU_ASSERT_EQUAL(c->limits.ring_seqs, 64);
    CU_ASSERT_EQUAL(c->limits.inbox_bytes, 65536);
    CU_ASSERT_STRING_EQUAL(c->backend.url, "https://brain.example.net/ingest"); /* '/' dropped */
    CU_ASSERT_STRING_EQUAL(c->backend.token_file, "/etc/sg/token");
    CU_ASSERT_EQUAL(c->backend.content_type, SG_CT_PROTOBUF);
    CU_ASSERT_EQUAL(c->backend.max_batch_rollups, 100000);
    CU_ASSERT_EQUAL(c->backend.max_batch_delay_ms, 0);
    CU_ASSERT_EQUAL(c->backend.timeout_ms, 100);
    CU_ASSERT_EQUAL(c->backend.max_inflight, 64);
    CU_ASSERT_EQUAL(c->backend.backoff_min_ms, 1);
    CU_ASSERT_EQUAL(c->backend.backoff_max_ms, 1);
    CU_ASSERT_EQUAL(c->backend.retry_after_max_ms, 0);
    CU_ASSERT_STRING_EQUAL(c->backend.ca_file, "/etc/sg/bca.pem");
    CU_ASSERT_STRING_EQUAL(c->spool.dir, "/tmp/sg-spool");
    CU_ASSERT_EQUAL(c->spool.max_bytes, 4096);
    CU_ASSERT_EQUAL(c->spool.max_batches, 1);
    CU_ASSERT_FALSE(c->spool.fsync);
    CU_ASSERT_STRING_EQUAL(c->metrics.listen, "0.0.0.0:0");
    CU_ASSERT_STRING_EQUAL(c->metrics.port_file, "/tmp/sg-metrics.port");
    CU_ASSERT_EQUAL(c->stats_interval_s, 0);
    CU_ASSERT_EQUAL(c->shutdown_timeout_ms, 0);
    CU_ASSERT_STRING_EQUAL(c->log_level, "debug");
    CU_ASSERT_STRING_EQUAL(c->log_format, "json");

    /* Loading the same file again (a SIGHUP reload) gives the same config. */
    struct sg_config *again = NULL;
    CU_ASSERT_EQUAL(sg_config_load(&again, SG_TEST_DATA "/good-custom.yaml", errbuf, sizeof errbuf),
                    0);
    CU_ASSERT_TRUE(again != NULL && configs_equal(c, again));
    sg_config_free(again);
    sg_config_free(c);
}

static void test_partial(void)
{
    struct sg_config *c = NULL;
    CU_ASSERT_EQUAL_FATAL(
        sg_config_load(&c, SG_TEST_DATA "/good-partial.yaml", errbuf, sizeof errbuf), 0);
    CU_ASSERT_STRING_EQUAL(c->gateway_id, "gw-zz-002");
    CU_ASSERT_STRING_EQUAL(c->mqtt.client_id, "sensegate-gw-zz-002"); /* follows gateway_id */
    CU_ASSERT_EQUAL(c->mqtt.qos, 0);
    CU_ASSERT_PTR_NULL(c->backend.token_file); /* "" means unset */
    CU_ASSERT_EQUAL(c->mqtt.keepalive_s, 30);  /* untouched keys keep defaults */
    CU_ASSERT_EQUAL(c->nwindows, 1);
    CU_ASSERT_EQUAL(c->windows_ms[0], 10000);
    CU_ASSERT_TRUE(c->spool.fsync);
    sg_config_free(c);
}

/* ---- suite: errors ---------------------------------------------------- */

/* Loads one bad file and compares the message, with the data directory
 * removed from file names, to its .expected file. Returns true if equal. */
static bool check_bad_file(const char *name)
{
    char path[512], exp_path[512];
    snprintf(path, sizeof path, "%s/%s", SG_TEST_DATA, name);
    snprintf(exp_path, sizeof exp_path, "%s/%.*s.expected", SG_TEST_DATA,
             (int)(strlen(name) - strlen(".yaml")), name);
    char *expected = slurp(exp_path);
    if (expected == NULL) {
        fprintf(stderr, "\nmissing %s\n", exp_path);
        return false;
    }
    size_t n = strlen(expected);
    while (n > 0 && (expected[n - 1] == '\n' || expected[n - 1] == '\r')) {
        expected[--n] = '\0';
    }

    struct sg_config *c = (struct sg_config *)1;
    int rc = sg_config_load(&c, path, errbuf, sizeof errbuf);
    bool ok = rc == SG_EINVAL && c == NULL;

    /* Strip "<SG_TEST_DATA>/" wherever a file name appears. */
    char got[sizeof errbuf];
    const char *prefix = SG_TEST_DATA "/";
    size_t plen = strlen(prefix), w = 0;
    for (const char *p = errbuf; *p != '\0' && w + 1 < sizeof got;) {
        if (strncmp(p, prefix, plen) == 0) {
            p += plen;
        } else {
            got[w++] = *p++;
        }
    }
    got[w] = '\0';
    if (!ok || strcmp(got, expected) != 0) {
        fprintf(stderr, "\n%s: rc=%d\n  got:      %s\n  expected: %s\n", name, rc, got, expected);
        ok = false;
    }
    if (c != NULL && c != (struct sg_config *)1) {
        sg_config_free(c);
    }
    free(expected);
    return ok;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_bad_files(void)
{
    DIR *d = opendir(SG_TEST_DATA);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    char *names[256];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 256) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "bad-", 4) == 0 && len > 5 &&
            strcmp(de->d_name + len - 5, ".yaml") == 0) {
            names[n++] = sg_xstrdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], name_cmp);

    /* The cases the contract and brief call for must be among them. */
    static const char *const required[] = {
        "bad-unknown-top.yaml", "bad-unknown-nested.yaml", "bad-type.yaml",
        "bad-range.yaml",       "bad-windows-empty.yaml",  "bad-windows-dup.yaml",
        "bad-url-scheme.yaml",  "bad-negative.yaml",       "bad-syntax.yaml",
        "bad-series-idle.yaml",
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++) {
            found = found || strcmp(names[j], required[i]) == 0;
        }
        if (!found) {
            fprintf(stderr, "\nmissing fixture %s\n", required[i]);
        }
        CU_ASSERT_TRUE(found);
    }

    size_t passed = 0;
    for (size_t i = 0; i < n; i++) {
        bool ok = check_bad_file(names[i]);
        CU_ASSERT_TRUE(ok);
        passed += ok;
        free(names[i]);
    }
    CU_ASSERT_TRUE(n >= 30);
    CU_ASSERT_EQUAL(passed, n);
}

static void test_missing_file(void)
{
    struct sg_config *c = NULL;
    CU_ASSERT_EQUAL(sg_config_load(&c, SG_TEST_DATA "/no-such-file.yaml", errbuf, sizeof errbuf),
                    SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_STRING_EQUAL(errbuf, "cannot open " SG_TEST_DATA
                                   "/no-such-file.yaml: No such file or directory");
}

static void test_error_buffer_bounds(void)
{
    struct sg_config *c = NULL;
    const char *bad = SG_TEST_DATA "/bad-multiple.yaml";
    char small[24];
    memset(small, 'x', sizeof small);
    CU_ASSERT_EQUAL(sg_config_load(&c, bad, small, sizeof small), SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_EQUAL(strlen(small), sizeof small - 1);
    CU_ASSERT_EQUAL(strncmp(small, SG_TEST_DATA "/bad-multiple.yaml:3:8", sizeof small - 1), 0);
    CU_ASSERT_EQUAL(sg_config_load(&c, bad, NULL, 0), SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    char one[1] = {'x'};
    CU_ASSERT_EQUAL(sg_config_load(&c, bad, one, sizeof one), SG_EINVAL);
    CU_ASSERT_EQUAL(one[0], '\0');

    /* A full buffer holds every problem, newline-separated, no trailing newline. */
    CU_ASSERT_EQUAL(sg_config_load(&c, bad, errbuf, sizeof errbuf), SG_EINVAL);
    size_t lines = 1;
    for (const char *p = errbuf; *p != '\0'; p++) {
        lines += *p == '\n';
    }
    CU_ASSERT_EQUAL(lines, 4);
    CU_ASSERT_NOT_EQUAL(errbuf[strlen(errbuf) - 1], '\n');
}

/* ---- suite: sg_config_check --------------------------------------------- */

static struct sg_config *cfg;

static int check_init(void)
{
    return sg_config_load(&cfg, NULL, errbuf, sizeof errbuf) == 0 ? 0 : -1;
}

static int check_cleanup(void)
{
    sg_config_free(cfg);
    cfg = NULL;
    return 0;
}

/* Runs sg_config_check on cfg and compares the whole message ("" = ok). */
static void expect_check(const char *want)
{
    int rc = sg_config_check(cfg, errbuf, sizeof errbuf);
    CU_ASSERT_EQUAL(rc, want[0] ? SG_EINVAL : 0);
    if (strcmp(errbuf, want) != 0) {
        fprintf(stderr, "\n  got:      %s\n  expected: %s\n", errbuf, want);
    }
    CU_ASSERT_STRING_EQUAL(errbuf, want);
}

static void test_check_series_idle_boundary(void)
{
    /* 300000 + 2000 + max(10000, 60000) = 362000 */
    cfg->windows_ms[1] = 60000;
    cfg->nwindows = 2;
    cfg->limits.series_idle_ms = 362000;
    expect_check("<defaults>: limits.series_idle_ms: must be greater than "
                 "validation.max_future_ms + allowed_lateness_ms + max(windows_ms) = 362000 "
                 "(got 362000), or a window could be emitted twice");
    cfg->limits.series_idle_ms = 362001;
    expect_check("");
    cfg->nwindows = 1;
    cfg->limits.series_idle_ms = 900000;
}

static void test_check_windows(void)
{
    cfg->nwindows = 0;
    expect_check("<defaults>: windows_ms: must list 1..8 entries (got 0)");
    cfg->nwindows = 3;
    cfg->windows_ms[0] = 1000;
    cfg->windows_ms[1] = 5000;
    cfg->windows_ms[2] = 1000;
    expect_check("<defaults>: windows_ms[2]: 1000 is listed twice; each window width must be "
                 "different");
    cfg->windows_ms[2] = 0;
    expect_check("<defaults>: windows_ms[2]: must be 1..86400000 (got 0)");
    cfg->nwindows = 1;
    cfg->windows_ms[0] = 10000;
    expect_check("");
}

static void test_check_mqtt(void)
{
    cfg->mqtt.qos = 2;
    expect_check("<defaults>: mqtt.qos: must be 0..1 (got 2)");
    cfg->mqtt.qos = -1;
    expect_check("<defaults>: mqtt.qos: must be 0..1 (got a negative number)");
    cfg->mqtt.qos = 0;
    cfg->mqtt.version = 4;
    expect_check("<defaults>: mqtt.version: must be 3 (MQTT 3.1.1) or 5 (MQTT 5), not 4");
    cfg->mqtt.version = 5;
    expect_check("");
    cfg->mqtt.version = 3;

    char *uri = cfg->mqtt.uri;
    char bad_uri[] = "tcp://";
    cfg->mqtt.uri = bad_uri;
    expect_check("<defaults>: mqtt.uri: must be tcp://, ssl://, mqtt://, mqtts://, ws:// or wss:// "
                 "followed by host:port (got 'tcp://')");
    char wss[] = "wss://broker:443/mqtt";
    cfg->mqtt.uri = wss;
    expect_check("");
    cfg->mqtt.uri = uri;

    cfg->mqtt.reconnect_min_ms = 30001;
    expect_check("<defaults>: mqtt.reconnect_min_ms: must not exceed mqtt.reconnect_max_ms "
                 "(30000) (got 30001)");
    cfg->mqtt.reconnect_min_ms = 500;
}

static void test_check_backend_and_limits(void)
{
    char *url = cfg->backend.url;
    char https[] = "https://brain.example";
    char noscheme[] = "brain.example:8080";
    cfg->backend.url = https;
    expect_check("");
    cfg->backend.url = noscheme;
    expect_check("<defaults>: backend.url: must be http:// or https:// followed by a host "
                 "(got 'brain.example:8080')");
    cfg->backend.url = url;

    cfg->backend.backoff_min_ms = 300001;
    expect_check("<defaults>: backend.backoff_min_ms: must not exceed backend.backoff_max_ms "
                 "(300000) (got 300001)");
    cfg->backend.backoff_min_ms = 300000;
    expect_check("");
    cfg->backend.backoff_min_ms = 500;

    cfg->limits.ring_seqs = 96;
    expect_check("<defaults>: limits.ring_seqs: must be a power of two in 64..65536 (got 96)");
    cfg->limits.ring_seqs = 131072;
    expect_check("<defaults>: limits.ring_seqs: must be 64..65536 (got 131072)");
    cfg->limits.ring_seqs = 64;
    expect_check("");
    cfg->limits.ring_seqs = 1024;

    cfg->spool.max_bytes = 4095;
    expect_check("<defaults>: spool.max_bytes: must be 4096..1099511627776 (got 4095)");
    cfg->spool.max_bytes = 268435456;

    cfg->limits.inbox_bytes = 65536;
    cfg->limits.max_payload_bytes = 65537;
    expect_check("<defaults>: limits.inbox_bytes: must be at least limits.max_payload_bytes "
                 "(65537) to hold one message (got 65536)");
    cfg->limits.inbox_bytes = 33554432;
    cfg->limits.max_payload_bytes = 262144;
}

static void test_check_strings(void)
{
    char *listen = cfg->metrics.listen;
    char noport[] = "127.0.0.1";
    cfg->metrics.listen = noport;
    expect_check("<defaults>: metrics.listen: must be host:port, e.g. 127.0.0.1:9464 (port 0 = "
                 "any free port) (got '127.0.0.1')");
    cfg->metrics.listen = listen;

    char *level = cfg->log_level;
    char loud[] = "loud";
    cfg->log_level = loud;
    expect_check("<defaults>: log.level: must be one of: debug, info, warn, error (got 'loud')");
    cfg->log_level = level;

    char cert[] = "/c.pem";
    cfg->mqtt.cert_file = cert;
    expect_check("<defaults>: mqtt.cert_file: must be set together with mqtt.key_file (client "
                 "certificate and its key)");
    cfg->mqtt.cert_file = NULL;

    /* Several problems: one line each, in rule order (no positions). */
    cfg->mqtt.qos = 7;
    cfg->backend.max_inflight = 0;
    expect_check("<defaults>: mqtt.qos: must be 0..1 (got 7)\n"
                 "<defaults>: backend.max_inflight: must be 1..64 (got 0)");
    cfg->mqtt.qos = 1;
    cfg->backend.max_inflight = 2;
    expect_check("");
}

/* allow_root (issue 5): false by default, true or false only. */
static void test_allow_root(void)
{
    struct sg_config *c = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&c, NULL, errbuf, sizeof errbuf), 0);
    CU_ASSERT_FALSE(c->allow_root);
    sg_config_free(c);
    c = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&c, write_temp("allow_root: true\n"), errbuf,
                                         sizeof errbuf), 0);
    CU_ASSERT_TRUE(c->allow_root);
    sg_config_free(c);
    c = NULL;
    CU_ASSERT_EQUAL(sg_config_load(&c, write_temp("allow_root: yes\n"), errbuf, sizeof errbuf),
                    SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, ":1:13: allow_root: must be true or false (got 'yes')"));
}

/* ---- suite: derived defaults (issue 11) ---------------------------------- */

/* An unset limits.series_idle_ms follows allowed_lateness_ms and the widest
 * window, so raising either alone is not refused; one set in the file stays
 * as set. */
static void test_series_idle_follows(void)
{
    struct sg_config *c = NULL;
    int rc = sg_config_load(&c, SG_TEST_DATA "/good-lateness.yaml", errbuf, sizeof errbuf);
    if (rc != 0) {
        fprintf(stderr, "\n%s\n", errbuf);
    }
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(c->allowed_lateness_ms, 600000);
    CU_ASSERT_EQUAL(c->limits.series_idle_ms, 900000 + 600000 + 10000 - 12000);
    sg_config_free(c);
    c = NULL;

    CU_ASSERT_EQUAL_FATAL(
        sg_config_load(&c, write_temp("windows_ms: [10000, 3600000]\n"), errbuf, sizeof errbuf),
        0);
    CU_ASSERT_EQUAL(c->limits.series_idle_ms, 900000 + 2000 + 3600000 - 12000);
    sg_config_free(c);
    c = NULL;

    /* Small windows never lower it below the documented 900000. */
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&c, write_temp("windows_ms: [1000]\n"
                                                        "allowed_lateness_ms: 0\n"),
                                         errbuf, sizeof errbuf),
                          0);
    CU_ASSERT_EQUAL(c->limits.series_idle_ms, 900000);
    sg_config_free(c);
    c = NULL;

    /* Set in the file: kept, and checked against the rule. */
    CU_ASSERT_EQUAL(sg_config_load(&c,
                                   write_temp("allowed_lateness_ms: 600000\n"
                                              "limits:\n  series_idle_ms: 900000\n"),
                                   errbuf, sizeof errbuf),
                    SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, ":3:19: limits.series_idle_ms: must be greater than "
                                          "validation.max_future_ms + allowed_lateness_ms + "
                                          "max(windows_ms) = 910000 (got 900000)"));
}

/* ---- suite: the key table ----------------------------------------------- */

/* Every field of struct sg_config is one key of the table, each once, and
 * every key has a note (when it applies live, or why it needs a restart). */
static void test_table_complete(void)
{
    size_t n = sg_config_nkeys();
    CU_ASSERT_EQUAL(n, 48);
    for (size_t i = 0; i < n; i++) {
        const struct sg_config_key *k = sg_config_key_at(i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_PTR_EQUAL(sg_config_key_find(k->name), k);
        CU_ASSERT_TRUE(k->note != NULL && k->note[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            CU_ASSERT_NOT_EQUAL(sg_config_key_at(j)->off, k->off);
        }
    }
    CU_ASSERT_PTR_NULL(sg_config_key_at(n));
    CU_ASSERT_PTR_NULL(sg_config_key_find("mqtt"));
    CU_ASSERT_PTR_NULL(sg_config_key_find("nope"));
}

/* docs/OPERATING.md's reload table is the C table: same keys, same order,
 * same live/restart verdict, same note. */
static void test_doc_table_matches(void)
{
    char *doc = slurp(SG_TEST_DATA "/../../docs/OPERATING.md");
    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    const char *begin = strstr(doc, "<!-- reload-keys: begin -->");
    const char *end = begin ? strstr(begin, "<!-- reload-keys: end -->") : NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(end);
    size_t rows = 0;
    bool all_ok = true;
    for (const char *p = begin; p < end;) {
        const char *eol = strchr(p, '\n');
        if (eol == NULL || eol > end) {
            break;
        }
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(eol - p), p);
        p = eol + 1;
        if (strncmp(line, "| `", 3) != 0) {
            continue;
        }
        const struct sg_config_key *k = sg_config_key_at(rows++);
        char want[1024] = "(no such key)";
        if (k != NULL) {
            snprintf(want, sizeof want, "| `%s` | %s | %s |", k->name,
                     k->live ? "live" : "restart", k->note);
        }
        if (strcmp(line, want) != 0) {
            fprintf(stderr, "\n  docs/OPERATING.md: %s\n  gateway/config.c:  %s\n", line, want);
            all_ok = false;
        }
    }
    CU_ASSERT_TRUE(all_ok);
    if (rows != sg_config_nkeys()) {
        fprintf(stderr, "\n  docs/OPERATING.md lists %zu keys, the table %zu\n", rows,
                sg_config_nkeys());
    }
    CU_ASSERT_EQUAL(rows, sg_config_nkeys());
    free(doc);
}

/* ---- suite: reload merge -------------------------------------------------- */

static struct sg_config *load_text(const char *text)
{
    struct sg_config *c = NULL;
    int rc = sg_config_load(&c, write_temp(text), errbuf, sizeof errbuf);
    if (rc != 0) {
        fprintf(stderr, "\n%s\n", errbuf);
    }
    return c;
}

static const struct sg_config_change *find_change(const struct sg_config_change *ch, size_t n,
                                                  const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ch[i].key->name, key) == 0) {
            return &ch[i];
        }
    }
    return NULL;
}

#define BASE_TEXT "gateway_id: gw-a\nmqtt:\n  topics: [a/#]\n"

/* Live keys take the file's value, restart-only keys keep the running one
 * (the very pointers a module may hold), and every changed key is listed
 * with both values. */
static void test_merge_live_and_restart(void)
{
    struct sg_config *oc = load_text(BASE_TEXT);
    struct sg_config *nc = load_text("gateway_id: gw-b\nmqtt:\n  topics: [a/#, b/+]\n"
                                     "  uri: tcp://10.0.0.1:1883\n"
                                     "windows_ms: [60000]\nbackend:\n  timeout_ms: 2000\n"
                                     "spool:\n  max_batches: 7\nlog:\n  level: debug\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(oc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
    char *gw = oc->gateway_id, *uri = oc->mqtt.uri, *cid = oc->mqtt.client_id;
    char *dir = oc->spool.dir, *listen = oc->metrics.listen;
    char *new_topic = nc->mqtt.topics[1];

    struct sg_config_change ch[64];
    size_t n = 0;
    struct sg_config_errors errs = {0};
    CU_ASSERT_EQUAL_FATAL(sg_config_reload_merge(oc, nc, ch, 64, &n, &errs), 0);
    CU_ASSERT_EQUAL(errs.n, 0);
    sg_config_errors_free(&errs);
    CU_ASSERT_EQUAL(n, 8);

    /* Restart-only: the running values and their pointers moved over. */
    CU_ASSERT_PTR_EQUAL(nc->gateway_id, gw);
    CU_ASSERT_PTR_EQUAL(nc->mqtt.uri, uri);
    CU_ASSERT_PTR_EQUAL(nc->mqtt.client_id, cid);
    CU_ASSERT_PTR_EQUAL(nc->spool.dir, dir);
    CU_ASSERT_PTR_EQUAL(nc->metrics.listen, listen);
    CU_ASSERT_STRING_EQUAL(nc->mqtt.client_id, "sensegate-gw-a");
    CU_ASSERT_EQUAL(nc->nwindows, 1);
    CU_ASSERT_EQUAL(nc->windows_ms[0], 10000);
    CU_ASSERT_EQUAL(nc->limits.series_idle_ms, 900000); /* follows the kept windows */
    /* Live: the file's values. */
    CU_ASSERT_EQUAL_FATAL(nc->mqtt.ntopics, 2);
    CU_ASSERT_PTR_EQUAL(nc->mqtt.topics[1], new_topic);
    CU_ASSERT_EQUAL(nc->backend.timeout_ms, 2000);
    CU_ASSERT_EQUAL(nc->spool.max_batches, 7);
    CU_ASSERT_STRING_EQUAL(nc->log_level, "debug");
    CU_ASSERT_EQUAL(sg_config_check(nc, errbuf, sizeof errbuf), 0);

    const struct sg_config_change *c = find_change(ch, n, "gateway_id");
    CU_ASSERT_TRUE(c != NULL && !c->key->live && strcmp(c->before, "gw-a") == 0 &&
                   strcmp(c->after, "gw-b") == 0);
    c = find_change(ch, n, "mqtt.uri");
    CU_ASSERT_TRUE(c != NULL && !c->key->live && strcmp(c->before, "tcp://127.0.0.1:1883") == 0 &&
                   strcmp(c->after, "tcp://10.0.0.1:1883") == 0);
    c = find_change(ch, n, "windows_ms");
    CU_ASSERT_TRUE(c != NULL && !c->key->live && strcmp(c->before, "[10000]") == 0 &&
                   strcmp(c->after, "[60000]") == 0);
    c = find_change(ch, n, "mqtt.topics");
    CU_ASSERT_TRUE(c != NULL && c->key->live && strcmp(c->before, "[a/#]") == 0 &&
                   strcmp(c->after, "[a/#, b/+]") == 0);
    c = find_change(ch, n, "backend.timeout_ms");
    CU_ASSERT_TRUE(c != NULL && c->key->live && strcmp(c->before, "10000") == 0 &&
                   strcmp(c->after, "2000") == 0);
    c = find_change(ch, n, "spool.max_batches");
    CU_ASSERT_TRUE(c != NULL && c->key->live && strcmp(c->before, "100000") == 0 &&
                   strcmp(c->after, "7") == 0);
    c = find_change(ch, n, "log.level");
    CU_ASSERT_TRUE(c != NULL && c->key->live && strcmp(c->before, "info") == 0 &&
                   strcmp(c->after, "debug") == 0);
    /* mqtt.client_id follows gateway_id (set in neither file): it would
     * change on restart too, so it is named with it. */
    c = find_change(ch, n, "mqtt.client_id");
    CU_ASSERT_TRUE(c != NULL && !c->key->live && strcmp(c->before, "sensegate-gw-a") == 0 &&
                   strcmp(c->after, "sensegate-gw-b") == 0);

    /* oc now holds the file's restart-only values; freeing it leaves nc whole. */
    CU_ASSERT_STRING_EQUAL(oc->gateway_id, "gw-b");
    sg_config_free(oc);
    CU_ASSERT_STRING_EQUAL(nc->gateway_id, "gw-a");
    sg_config_free(nc);
}

/* Changes key k of c to another value of its type (not necessarily valid
 * together with the other keys: only the diff looks at it). */
static void mutate(struct sg_config *c, const struct sg_config_key *k)
{
    char *base = (char *)c + k->off;
    switch (k->type) {
    case SG_KEY_STR:
    case SG_KEY_WORD: {
        char **sp = (char **)(void *)base;
        free(*sp);
        *sp = sg_xstrdup("changed");
        break;
    }
    case SG_KEY_STRLIST: {
        char **v = (char **)(void *)base;
        free(v[0]);
        v[0] = sg_xstrdup("changed/#");
        break;
    }
    case SG_KEY_U64LIST:
        ((uint64_t *)(void *)base)[0] += 1;
        break;
    case SG_KEY_BOOL:
        *(bool *)(void *)base = !*(bool *)(void *)base;
        break;
    case SG_KEY_INT:
    case SG_KEY_ENUM:
        *(int *)(void *)base = *(int *)(void *)base == (int)k->max ? (int)k->min : (int)k->max;
        break;
    case SG_KEY_U32:
        *(uint32_t *)(void *)base = *(uint32_t *)(void *)base == (uint32_t)k->max
                                        ? (uint32_t)k->min
                                        : (uint32_t)k->max;
        break;
    case SG_KEY_U64:
        *(uint64_t *)(void *)base =
            *(uint64_t *)(void *)base == k->max ? k->min : k->max;
        break;
    }
}

/* The diff sees a change of any one key, and only of that key; the
 * rendered values differ too, so the log line shows what changed. */
static void test_diff_each_key(void)
{
    struct sg_config *a = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_config_load(&a, SG_TEST_DATA "/good-custom.yaml", errbuf,
                                         sizeof errbuf), 0);
    for (size_t i = 0; i < sg_config_nkeys(); i++) {
        const struct sg_config_key *k = sg_config_key_at(i);
        struct sg_config *b = NULL;
        CU_ASSERT_EQUAL_FATAL(sg_config_load(&b, SG_TEST_DATA "/good-custom.yaml", errbuf,
                                             sizeof errbuf), 0);
        mutate(b, k);
        size_t seen = 0;
        for (size_t j = 0; j < sg_config_nkeys(); j++) {
            if (sg_config_key_differs(a, b, sg_config_key_at(j))) {
                seen++;
                if (j != i) {
                    fprintf(stderr, "\n  changing %s also changed %s\n", k->name,
                            sg_config_key_at(j)->name);
                }
            }
        }
        CU_ASSERT_EQUAL(seen, 1);
        CU_ASSERT_TRUE(sg_config_key_differs(a, b, k));
        char va[200], vb[200];
        sg_config_value_str(a, k, va, sizeof va);
        sg_config_value_str(b, k, vb, sizeof vb);
        if (strcmp(va, vb) == 0) {
            fprintf(stderr, "\n  %s renders as %s before and after\n", k->name, va);
        }
        CU_ASSERT_STRING_NOT_EQUAL(va, vb);
        sg_config_free(b);
    }
    sg_config_free(a);
}

/* The same file again: no change, and still every restart-only pointer
 * moves over (a module may hold the unchanged ones too). */
static void test_merge_same_file(void)
{
    struct sg_config *oc = load_text(BASE_TEXT);
    struct sg_config *nc = load_text(BASE_TEXT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(oc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
    char *uri = oc->mqtt.uri;
    size_t n = 99;
    CU_ASSERT_EQUAL(sg_config_reload_merge(oc, nc, NULL, 0, &n, NULL), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_EQUAL(nc->mqtt.uri, uri);
    CU_ASSERT_TRUE(configs_equal(oc, nc));
    for (size_t i = 0; i < sg_config_nkeys(); i++) {
        CU_ASSERT_FALSE(sg_config_key_differs(oc, nc, sg_config_key_at(i)));
    }
    sg_config_free(oc);
    sg_config_free(nc);
}

/* A file that is valid on its own but not with the running restart-only
 * values: refused, and both configs are exactly as before. */
static void test_merge_refused(void)
{
    const char *text = "windows_ms: [1000]\nallowed_lateness_ms: 0\n"
                       "limits:\n  series_idle_ms: 302000\nbackend:\n  timeout_ms: 2000\n";
    struct sg_config *oc = load_text(BASE_TEXT);
    struct sg_config *nc = load_text(text);
    struct sg_config *oc2 = load_text(BASE_TEXT);
    struct sg_config *nc2 = load_text(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(oc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(oc2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nc2);
    char *uri = oc->mqtt.uri;
    struct sg_config_change ch[64];
    size_t n = 0;
    struct sg_config_errors errs = {0};
    CU_ASSERT_EQUAL(sg_config_reload_merge(oc, nc, ch, 64, &n, &errs), SG_EINVAL);
    CU_ASSERT_EQUAL_FATAL(errs.n, 1);
    CU_ASSERT_STRING_EQUAL(errs.v[0].key, "limits.series_idle_ms");
    CU_ASSERT_EQUAL(errs.v[0].line, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(errs.v[0].msg, "= 312000 (got 302000)"));
    sg_config_errors_format(&errs, errbuf, sizeof errbuf);
    CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, ": limits.series_idle_ms: must be greater than"));
    sg_config_errors_free(&errs);
    CU_ASSERT_PTR_EQUAL(oc->mqtt.uri, uri);
    CU_ASSERT_TRUE(configs_equal(oc, oc2));
    CU_ASSERT_TRUE(configs_equal(nc, nc2));
    sg_config_free(oc);
    sg_config_free(nc);
    sg_config_free(oc2);
    sg_config_free(nc2);
}

/* Errors are structs: position, key and message apart, sorted by position. */
static void test_error_structs(void)
{
    struct sg_config *c = NULL;
    struct sg_config_errors errs = {0};
    CU_ASSERT_EQUAL(sg_config_load_errs(&c, SG_TEST_DATA "/bad-multiple.yaml", &errs), SG_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_EQUAL_FATAL(errs.n, 4);
    CU_ASSERT_EQUAL(errs.v[0].line, 3);
    CU_ASSERT_EQUAL(errs.v[0].col, 8);
    CU_ASSERT_STRING_EQUAL(errs.v[0].key, "mqtt.qos");
    CU_ASSERT_STRING_EQUAL(errs.v[0].msg, "must be 0..1 (got 3)");
    CU_ASSERT_STRING_EQUAL(errs.v[3].key, "windows_ms[0]");
    for (size_t i = 1; i < errs.n; i++) {
        CU_ASSERT_TRUE(errs.v[i - 1].line < errs.v[i].line);
    }
    CU_ASSERT_STRING_EQUAL(errs.file, SG_TEST_DATA "/bad-multiple.yaml");
    /* The list is reusable: a good load empties it. */
    CU_ASSERT_EQUAL(sg_config_load_errs(&c, NULL, &errs), 0);
    CU_ASSERT_EQUAL(errs.n, 0);
    sg_config_free(c);
    sg_config_errors_free(&errs);
    sg_config_errors_free(NULL);
}

static const struct sg_test defaults_tests[] = {
    {"embedded defaults are the documented ones", test_defaults},
    {"a file of comments gives the defaults", test_empty_file_is_defaults},
    {"allow_root", test_allow_root},
    SG_TEST_END,
};
static const struct sg_test sample_tests[] = {
    {"config/sensegate.yaml equals the defaults", test_sample_equals_defaults},
    {"its commented optional keys are valid", test_sample_optional_keys_valid},
    SG_TEST_END,
};
static const struct sg_test custom_tests[] = {
    {"every key set", test_custom},
    {"some keys set, the rest defaults", test_partial},
    SG_TEST_END,
};
static const struct sg_test errors_tests[] = {
    {"each bad-*.yaml gives its bad-*.expected", test_bad_files},
    {"missing file", test_missing_file},
    {"error buffer bounds", test_error_buffer_bounds},
    SG_TEST_END,
};
static const struct sg_test check_tests[] = {
    {"series_idle_ms boundary", test_check_series_idle_boundary},
    {"windows", test_check_windows},
    {"mqtt", test_check_mqtt},
    {"backend and limits", test_check_backend_and_limits},
    {"strings", test_check_strings},
    SG_TEST_END,
};
static const struct sg_test derived_defaults_tests[] = {
    {"series_idle_ms follows lateness and windows", test_series_idle_follows},
    SG_TEST_END,
};
static const struct sg_test key_table_tests[] = {
    {"one row per field, each with a note", test_table_complete},
    {"docs/OPERATING.md reload table matches", test_doc_table_matches},
    {"errors are structs", test_error_structs},
    SG_TEST_END,
};
static const struct sg_test reload_merge_tests[] = {
    {"live keys applied, restart-only kept", test_merge_live_and_restart},
    {"the diff sees each key alone", test_diff_each_key},
    {"same file: no change, pointers kept", test_merge_same_file},
    {"refused merge changes nothing", test_merge_refused},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"defaults", NULL, NULL, defaults_tests},
    {"sample", NULL, NULL, sample_tests},
    {"custom", NULL, NULL, custom_tests},
    {"errors", NULL, NULL, errors_tests},
    {"check", check_init, check_cleanup, check_tests},
    {"derived defaults", NULL, NULL, derived_defaults_tests},
    {"key table", NULL, NULL, key_table_tests},
    {"reload merge", NULL, NULL, reload_merge_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

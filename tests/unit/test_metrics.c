/*
 * Unit tests for metrics: histogram bucketing against a direct count,
 * Prometheus rendering of every contract metric with its value, HELP/TYPE
 * for every sample, label escaping, the stats line, and /proc reading.
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"
#include "reading.h"
#include "sg_test.h"

/* True if text contains the whole line `line` (without its newline). */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) {
            return 1;
        }
        p += 1;
    }
    return 0;
}

static void assert_line(const char *text, const char *line)
{
    if (!has_line(text, line)) {
        fprintf(stderr, "\nmissing line: %s\n", line);
    }
    CU_ASSERT(has_line(text, line));
}

/* A snapshot where every field has its own value, so a swapped field
 * shows up as a wrong number. */
static void fill(struct sg_metrics *m)
{
    size_t i;

    memset(m, 0, sizeof(*m));
    m->gateway_id = "gw-zz-001";
    m->start_time_ms = 1700000000500ULL;
    m->mqtt_messages = 101;
    m->mqtt_connected = 1;
    m->mqtt_reconnects = 3;
    m->mqtt_session_lost = 2;
    m->inbox_depth = 7;
    m->inbox_bytes = 7000;
    m->inbox_wait_seconds = 1.5;
    m->last_message_ms = 1700000001000ULL;
    m->decode_errors = 11;
    m->decode_too_large = 4;
    m->readings[0] = 2390;
    m->readings[1] = 5;
    m->readings[2] = 3;
    m->readings[3] = 2;
    for (i = 1; i < SG_INVALID_COUNT; i++) {
        m->invalid_by_reason[i] = 1000 + i;
    }
    m->active_series = 42;
    m->open_windows = 43;
    m->series_evicted = 44;
    m->ring_overflows = 45;
    m->seq_resets = 46;
    m->rollups = 240;
    m->windows_partial = 6;
    m->forward_ok = 17;
    m->forward_retry = 8;
    m->forward_rejected = 1;
    m->forward_inflight = 2;
    m->spool_batches = 9;
    m->spool_bytes = 123456;
    m->spool_dropped = 12;
    m->spool_dead_letters = 13;
    m->spool_errors = 14;
    m->spool_oldest_age_ms = 2500;
    m->cpu_seconds = 0.25;
    m->rss_bytes = 10485760;
    m->open_fds = 23;
    m->now_ms = 1700000004500ULL;
    m->inbox_overflows = 47;
    m->readings_from_future = 48;
    m->batches_spooled = 49;
    m->spool_quarantined = 50;
    m->spool_dead_dropped = 51;
}

static void test_contract_metrics(void)
{
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;
    char line[256];
    size_t i;

    fill(&m);
    sg_metrics_render_prometheus(&m, &b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
    assert_line(b.data, "sensegate_mqtt_messages_total 101");
    assert_line(b.data, "sensegate_readings_total{result=\"accepted\"} 2390");
    assert_line(b.data, "sensegate_readings_total{result=\"duplicate\"} 5");
    assert_line(b.data, "sensegate_readings_total{result=\"late\"} 3");
    assert_line(b.data, "sensegate_readings_total{result=\"invalid\"} 2");
    assert_line(b.data, "sensegate_decode_errors_total 11");
    assert_line(b.data, "sensegate_active_series 42");
    assert_line(b.data, "sensegate_rollups_total 240");
    assert_line(b.data, "sensegate_forward_batches_total{result=\"ok\"} 17");
    assert_line(b.data, "sensegate_forward_batches_total{result=\"retry\"} 8");
    assert_line(b.data, "sensegate_forward_batches_total{result=\"rejected\"} 1");
    assert_line(b.data, "sensegate_spool_batches 9");
    assert_line(b.data, "sensegate_spool_bytes 123456");
    assert_line(b.data, "sensegate_spool_dropped_batches_total 12");
    assert_line(b.data, "sensegate_mqtt_connected 1");
    assert_line(b.data, "sensegate_forward_latency_seconds_count 0");
    assert_line(b.data, "# TYPE sensegate_forward_latency_seconds histogram");
    assert_line(b.data, "# TYPE sensegate_mqtt_messages_total counter");
    assert_line(b.data, "# TYPE sensegate_readings_total counter");
    assert_line(b.data, "# TYPE sensegate_active_series gauge");
    assert_line(b.data, "# TYPE sensegate_spool_bytes gauge");
    assert_line(b.data, "# TYPE sensegate_mqtt_connected gauge");

    /* The other fields, under their documented names. */
    assert_line(b.data, "sensegate_payloads_too_large_total 4");
    assert_line(b.data, "sensegate_mqtt_reconnects_total 3");
    assert_line(b.data, "sensegate_mqtt_session_lost_total 2");
    assert_line(b.data, "sensegate_inbox_messages 7");
    assert_line(b.data, "sensegate_inbox_bytes 7000");
    assert_line(b.data, "sensegate_inbox_wait_seconds_total 1.5");
    assert_line(b.data, "sensegate_last_message_timestamp_seconds 1700000001");
    assert_line(b.data, "sensegate_open_windows 43");
    assert_line(b.data, "sensegate_series_evicted_total 44");
    assert_line(b.data, "sensegate_ring_overflows_total 45");
    assert_line(b.data, "sensegate_seq_resets_total 46");
    assert_line(b.data, "sensegate_partial_windows_total 6");
    assert_line(b.data, "sensegate_forward_inflight 2");
    assert_line(b.data, "sensegate_delivery_delay_seconds_count 0");
    assert_line(b.data, "sensegate_spool_dead_letter_batches 13");
    assert_line(b.data, "sensegate_spool_errors_total 14");
    assert_line(b.data, "sensegate_spool_oldest_age_seconds 2.5");
    assert_line(b.data, "process_cpu_seconds_total 0.25");
    assert_line(b.data, "process_resident_memory_bytes 10485760");
    assert_line(b.data, "process_open_fds 23");
    assert_line(b.data, "process_start_time_seconds 1700000000.5");
    /* now_ms - last_message_ms = 3.5 s */
    assert_line(b.data, "sensegate_seconds_since_last_message 3.5");
    assert_line(b.data, "sensegate_inbox_overflows_total 47");
    assert_line(b.data, "sensegate_readings_from_future_total 48");
    assert_line(b.data, "sensegate_spooled_batches_total 49");
    assert_line(b.data, "sensegate_spool_quarantined_files_total 50");
    assert_line(b.data, "sensegate_dead_letters_dropped_total 51");
    assert_line(b.data, "sensegate_reading_age_seconds_count 0");
    assert_line(b.data, "# TYPE sensegate_reading_age_seconds histogram");
    snprintf(line, sizeof(line), "sensegate_build_info{version=\"%s\",gateway_id=\"gw-zz-001\"} 1",
             SG_VERSION);
    assert_line(b.data, line);
    for (i = 1; i < SG_INVALID_COUNT; i++) {
        snprintf(line, sizeof(line), "sensegate_invalid_readings_total{reason=\"%s\"} %zu",
                 sg_invalid_name((int)i), 1000 + i);
        assert_line(b.data, line);
    }
    /* Nothing rendered for the "none" reason. */
    snprintf(line, sizeof(line), "reason=\"%s\"", sg_invalid_name(SG_INVALID_NONE));
    CU_ASSERT_PTR_NULL(strstr(b.data, line));
    sg_buf_free(&b);
}

/* The family a sample belongs to: the name before '{' or ' ', without a
 * histogram suffix when the stripped name has a histogram TYPE line. */
static void family_of(const char *text, const char *sample, char *out, size_t cap)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    char type_line[256];
    size_t n = strcspn(sample, "{ "), k, s;

    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(out, sample, n);
    out[n] = '\0';
    for (k = 0; k < 3; k++) {
        s = strlen(suffixes[k]);
        if (n > s && strcmp(out + n - s, suffixes[k]) == 0) {
            out[n - s] = '\0';
            snprintf(type_line, sizeof(type_line), "# TYPE %s histogram", out);
            if (has_line(text, type_line)) {
                return;
            }
            out[n - s] = suffixes[k][0];
        }
    }
}

static void test_every_sample_has_help_and_type(void)
{
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;
    char *copy, *line, *save = NULL, fam[128], want[256];
    const char *types[] = {"counter", "gauge", "histogram"};
    int samples = 0, found, k;

    fill(&m);
    sg_metrics_render_prometheus(&m, &b);
    copy = strdup(b.data);
    for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            continue;
        }
        samples++;
        family_of(b.data, line, fam, sizeof(fam));
        found = 0;
        for (k = 0; k < 3; k++) {
            snprintf(want, sizeof(want), "# TYPE %s %s", fam, types[k]);
            found |= has_line(b.data, want);
        }
        snprintf(want, sizeof(want), "# HELP %s ", fam);
        if (!found || strstr(b.data, want) == NULL) {
            fprintf(stderr, "\nno HELP/TYPE for %s\n", line);
        }
        CU_ASSERT(found);
        CU_ASSERT_PTR_NOT_NULL(strstr(b.data, want));
        /* Counters end in _total (Prometheus naming). */
        snprintf(want, sizeof(want), "# TYPE %s counter", fam);
        if (has_line(b.data, want)) {
            CU_ASSERT(strlen(fam) > 6 && strcmp(fam + strlen(fam) - 6, "_total") == 0);
        }
    }
    /* 48 plain samples, the invalid reasons, 3 histograms of buckets + sum + count. */
    CU_ASSERT_EQUAL(samples, 48 + (SG_INVALID_COUNT - 1) + 3 * (SG_HIST_BUCKETS + 2));
    free(copy);
    sg_buf_free(&b);
}

static void test_histogram_cumulative(void)
{
    static const double values[] = {
        0.0, 0.001, 0.005, 0.0051, 0.01, 0.02, 0.025, 0.07, 0.1,  0.3, 0.5,  0.9,   1.0,  2.0,
        2.5, 4.0,   7.0,   10.0,   12.0, 30.0, 45.0,  60.0, 61.0, 1e6, -1.0, 0.004, 0.75, 3.3};
    const size_t nv = sizeof(values) / sizeof(values[0]);
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;
    char line[256], le[32];
    uint64_t expect;
    double sum = 0;
    size_t i, j;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < nv; i++) {
        sg_hist_observe(&m.forward_latency, values[i]);
        sum += values[i] < 0 ? 0 : values[i]; /* negatives count as 0 s */
    }
    sg_hist_observe(&m.forward_latency, NAN); /* ignored */
    CU_ASSERT_EQUAL(m.forward_latency.count, nv);
    CU_ASSERT_DOUBLE_EQUAL(m.forward_latency.sum, sum, 1e-9);

    sg_metrics_render_prometheus(&m, &b);
    for (j = 0; j < SG_HIST_BUCKETS - 1; j++) {
        expect = 0;
        for (i = 0; i < nv; i++) {
            expect += values[i] <= sg_hist_bounds[j];
        }
        snprintf(le, sizeof(le), "%g", sg_hist_bounds[j]);
        snprintf(line, sizeof(line), "sensegate_forward_latency_seconds_bucket{le=\"%s\"} %llu", le,
                 (unsigned long long)expect);
        assert_line(b.data, line);
    }
    snprintf(line, sizeof(line), "sensegate_forward_latency_seconds_bucket{le=\"+Inf\"} %zu", nv);
    assert_line(b.data, line);
    snprintf(line, sizeof(line), "sensegate_forward_latency_seconds_count %zu", nv);
    assert_line(b.data, line);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "sensegate_forward_latency_seconds_sum 1000"));
    /* Bounds render as written: 0.005 not 0.0050000000000000001. */
    assert_line(b.data, "sensegate_delivery_delay_seconds_bucket{le=\"0.005\"} 0");
    assert_line(b.data, "sensegate_delivery_delay_seconds_bucket{le=\"+Inf\"} 0");
    sg_buf_free(&b);
}

/* Reading ages use their own, wider bounds; every bucket is checked against
 * a direct count over the same values. */
static void test_age_histogram(void)
{
    static const double values[] = {0.0,  0.05, 0.1,  0.2,   0.25, 0.9,  1.0,    3.0,
                                    10.0, 29.9, 59.0, 299.0, 301,  1200, 3600.0, 7200.0, -5.0};
    const size_t nv = sizeof(values) / sizeof(values[0]);
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;
    char line[256];
    uint64_t expect;
    size_t i, j;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < nv; i++) {
        sg_hist_observe_age(&m.reading_age, values[i]);
    }
    sg_metrics_render_prometheus(&m, &b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
    for (j = 0; j < SG_HIST_BUCKETS - 1; j++) {
        expect = 0;
        for (i = 0; i < nv; i++) {
            expect += (values[i] < 0 ? 0 : values[i]) <= sg_age_bounds[j];
        }
        snprintf(line, sizeof(line), "sensegate_reading_age_seconds_bucket{le=\"%g\"} %llu",
                 sg_age_bounds[j], (unsigned long long)expect);
        assert_line(b.data, line);
    }
    assert_line(b.data, "sensegate_reading_age_seconds_bucket{le=\"3600\"} 16");
    assert_line(b.data, "sensegate_reading_age_seconds_bucket{le=\"+Inf\"} 17");
    /* The latency histogram is untouched. */
    assert_line(b.data, "sensegate_forward_latency_seconds_count 0");
    sg_buf_free(&b);
}

/* Seconds since the last message: from start before the first message,
 * never negative, 0 when the snapshot time is unknown. */
static void test_since_last_message(void)
{
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;

    memset(&m, 0, sizeof(m));
    m.start_time_ms = 1000000;
    m.now_ms = 1012250;
    sg_metrics_render_prometheus(&m, &b);
    assert_line(b.data, "sensegate_seconds_since_last_message 12.25");
    sg_buf_reset(&b);
    m.last_message_ms = 1012000;
    sg_metrics_render_prometheus(&m, &b);
    assert_line(b.data, "sensegate_seconds_since_last_message 0.25");
    sg_buf_reset(&b);
    m.last_message_ms = 1013000; /* clock stepped back */
    sg_metrics_render_prometheus(&m, &b);
    assert_line(b.data, "sensegate_seconds_since_last_message 0");
    sg_buf_reset(&b);
    m.now_ms = 0;
    sg_metrics_render_prometheus(&m, &b);
    assert_line(b.data, "sensegate_seconds_since_last_message 0");
    sg_buf_free(&b);
}

static void test_label_escaping(void)
{
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;

    memset(&m, 0, sizeof(m));
    m.gateway_id = "gw \"a\\b\"\nx";
    sg_metrics_render_prometheus(&m, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, ",gateway_id=\"gw \\\"a\\\\b\\\"\\nx\"} 1\n"));
    sg_buf_reset(&b);
    m.gateway_id = NULL;
    sg_metrics_render_prometheus(&m, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, ",gateway_id=\"\"} 1\n"));
    sg_buf_free(&b);
}

static void test_stats_line(void)
{
    struct sg_buf b = SG_BUF_INIT;
    struct sg_metrics m;

    fill(&m);
    sg_metrics_render_line(&m, &b);
    CU_ASSERT_STRING_EQUAL(b.data, "stats msgs=101 readings=2400 accepted=2390 duplicate=5 late=3 "
                                   "invalid=2 decode_errors=11 series=42 rollups=240 fwd_ok=17 "
                                   "fwd_retry=8 fwd_rejected=1 fwd_inflight=2 spool_batches=9 "
                                   "spool_bytes=123456 spool_dropped=12 dead_letters=13 mqtt=up "
                                   "last_msg_age_s=3.5 spool_age_s=2.5 reconnects=3");
    sg_buf_reset(&b);
    m.mqtt_connected = 0;
    sg_metrics_render_line(&m, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, " mqtt=down"));
    CU_ASSERT_PTR_NULL(strchr(b.data, '\n'));
    sg_buf_free(&b);
}

static void test_read_process(void)
{
    struct sg_metrics m;
    uint64_t fds;
    int fd;

    memset(&m, 0, sizeof(m));
    m.cpu_seconds = -1;
    sg_metrics_read_process(&m);
    CU_ASSERT(m.cpu_seconds >= 0);
    CU_ASSERT(m.rss_bytes > 0);
    CU_ASSERT(m.open_fds >= 3);
    fds = m.open_fds;
    fd = open("/dev/null", O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    sg_metrics_read_process(&m);
    CU_ASSERT_EQUAL(m.open_fds, fds + 1);
    close(fd);
    sg_metrics_read_process(&m);
    CU_ASSERT_EQUAL(m.open_fds, fds);
}

static const struct sg_test prometheus_tests[] = {
    {"contract metrics with values", test_contract_metrics},
    {"every sample has HELP and TYPE", test_every_sample_has_help_and_type},
    {"label values escaped", test_label_escaping},
    SG_TEST_END,
};
static const struct sg_test histogram_tests[] = {
    {"buckets cumulative, +Inf == count", test_histogram_cumulative},
    {"reading age has its own bounds", test_age_histogram},
    SG_TEST_END,
};
static const struct sg_test liveness_tests[] = {
    {"seconds since last message", test_since_last_message},
    SG_TEST_END,
};
static const struct sg_test stats_line_tests[] = {
    {"one logfmt line", test_stats_line},
    SG_TEST_END,
};
static const struct sg_test process_tests[] = {
    {"reads /proc/self", test_read_process},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"prometheus", NULL, NULL, prometheus_tests},
    {"histogram", NULL, NULL, histogram_tests},
    {"liveness", NULL, NULL, liveness_tests},
    {"stats line", NULL, NULL, stats_line_tests},
    {"process", NULL, NULL, process_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

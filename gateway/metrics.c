/*
 * metrics: renders one struct sg_metrics snapshot as Prometheus text
 * (exposition format 0.0.4) and as the one-line stats summary, and holds the
 * fixed-bucket latency histogram.
 *
 * Invariants: every counter and gauge of struct sg_metrics appears in the Prometheus
 * output exactly once (the contract names from contract.md section 4 are kept
 * as written); labels come only from fixed enums (result, reason), never from
 * sensor data, so the series count is constant. Histogram buckets are
 * rendered cumulatively and the +Inf bucket always equals _count.
 *
 * Pure apart from sg_metrics_read_process, which reads /proc/self.
 * Loop thread.
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SG_VERSION
#define SG_VERSION "unknown"
#endif

const double sg_hist_bounds[SG_HIST_BUCKETS - 1] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

/* The four verdicts in the order of struct sg_metrics.readings. */
static const char *const verdict_names[4] = {"accepted", "duplicate", "late", "invalid"};

const double sg_age_bounds[SG_HIST_BUCKETS - 1] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600,
};

static void hist_observe(struct sg_hist *h, const double *bounds, double seconds)
{
    size_t i;

    /* A NaN would poison _sum for the life of the process; it can only come
     * from a bug in the caller, so it is not counted at all. */
    if (h == NULL || isnan(seconds)) {
        return;
    }
    if (seconds < 0) {
        seconds = 0;
    }
    for (i = 0; i < SG_HIST_BUCKETS - 1; i++) {
        if (seconds <= bounds[i]) {
            break;
        }
    }
    h->counts[i]++;
    h->count++;
    h->sum += seconds;
}

void sg_hist_observe(struct sg_hist *h, double seconds)
{
    hist_observe(h, sg_hist_bounds, seconds);
}

void sg_hist_observe_age(struct sg_hist *h, double seconds)
{
    hist_observe(h, sg_age_bounds, seconds);
}

/* Appends a sample value: integers exactly, other finite values with the
 * shortest of %.15g/%.16g/%.17g that reads back to the same double, and the
 * Prometheus spellings for the non-finite ones. */
static void put_value(struct sg_buf *out, double v)
{
    char tmp[40];
    int prec;

    if (isnan(v)) {
        sg_buf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        sg_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    sg_buf_puts(out, tmp);
}

/* Appends s as a label value: backslash, double quote and newline escaped
 * as the exposition format requires. NULL renders as "". */
static void put_label_value(struct sg_buf *out, const char *s)
{
    sg_buf_putc(out, '"');
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '\\':
            sg_buf_puts(out, "\\\\");
            break;
        case '"':
            sg_buf_puts(out, "\\\"");
            break;
        case '\n':
            sg_buf_puts(out, "\\n");
            break;
        default:
            sg_buf_putc(out, *s);
            break;
        }
    }
    sg_buf_putc(out, '"');
}

static void put_header(struct sg_buf *out, const char *name, const char *type, const char *help)
{
    sg_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One unlabelled sample of an integer metric, with its HELP and TYPE. */
static void put_u64(struct sg_buf *out, const char *name, const char *type, const char *help,
                    uint64_t v)
{
    put_header(out, name, type, help);
    sg_buf_puts(out, name);
    sg_buf_putc(out, ' ');
    sg_buf_put_u64(out, v);
    sg_buf_putc(out, '\n');
}

static void put_double(struct sg_buf *out, const char *name, const char *type, const char *help,
                       double v)
{
    put_header(out, name, type, help);
    sg_buf_puts(out, name);
    sg_buf_putc(out, ' ');
    put_value(out, v);
    sg_buf_putc(out, '\n');
}

/* One sample with a single label: name{label="value"} v */
static void put_labelled(struct sg_buf *out, const char *name, const char *label, const char *value,
                         uint64_t v)
{
    sg_buf_puts(out, name);
    sg_buf_putc(out, '{');
    sg_buf_puts(out, label);
    sg_buf_putc(out, '=');
    put_label_value(out, value);
    sg_buf_puts(out, "} ");
    sg_buf_put_u64(out, v);
    sg_buf_putc(out, '\n');
}

static void put_hist(struct sg_buf *out, const char *name, const char *help,
                     const struct sg_hist *h, const double *bounds)
{
    uint64_t cum = 0;
    size_t i;

    put_header(out, name, "histogram", help);
    for (i = 0; i < SG_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        sg_buf_printf(out, "%s_bucket{le=\"", name);
        if (i < SG_HIST_BUCKETS - 1) {
            put_value(out, bounds[i]);
        } else {
            sg_buf_puts(out, "+Inf");
        }
        sg_buf_puts(out, "\"} ");
        sg_buf_put_u64(out, cum);
        sg_buf_putc(out, '\n');
    }
    sg_buf_printf(out, "%s_sum ", name);
    put_value(out, h->sum);
    /* _count is the +Inf bucket by definition; rendering the same number
     * keeps the exposition consistent even for a hand-filled struct. */
    sg_buf_printf(out, "\n%s_count ", name);
    sg_buf_put_u64(out, cum);
    sg_buf_putc(out, '\n');
}

/* Seconds from the newest message (or, before the first, from start) to the
 * snapshot time; 0 when the snapshot time is unknown or earlier. */
static double since_last_message(const struct sg_metrics *m)
{
    uint64_t from = m->last_message_ms ? m->last_message_ms : m->start_time_ms;

    if (m->now_ms == 0 || from == 0 || m->now_ms <= from) {
        return 0;
    }
    return (double)(m->now_ms - from) / 1000.0;
}

void sg_metrics_render_prometheus(const struct sg_metrics *m, struct sg_buf *out)
{
    size_t i;

    /* Process metrics use the standard client-library names. */
    put_double(out, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.", m->cpu_seconds);
    put_u64(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
            m->rss_bytes);
    put_u64(out, "process_open_fds", "gauge", "Number of open file descriptors.", m->open_fds);
    put_double(out, "process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.",
               (double)m->start_time_ms / 1000.0);

    put_header(out, "sensegate_build_info", "gauge",
               "Build and identity of this gateway; always 1.");
    sg_buf_puts(out, "sensegate_build_info{version=");
    put_label_value(out, SG_VERSION);
    sg_buf_puts(out, ",gateway_id=");
    put_label_value(out, m->gateway_id);
    sg_buf_puts(out, "} 1\n");

    /* ingest */
    put_u64(out, "sensegate_mqtt_messages_total", "counter", "MQTT PUBLISH payloads received.",
            m->mqtt_messages);
    put_u64(out, "sensegate_mqtt_connected", "gauge",
            "1 when connected to the broker and subscribed, else 0.", m->mqtt_connected);
    put_u64(out, "sensegate_mqtt_reconnects_total", "counter",
            "Successful broker connects after the first one.", m->mqtt_reconnects);
    put_u64(out, "sensegate_mqtt_session_lost_total", "counter",
            "Broker connects that found no stored session.", m->mqtt_session_lost);
    put_u64(out, "sensegate_inbox_messages", "gauge",
            "Messages handed over by the MQTT thread and waiting for the loop.", m->inbox_depth);
    put_u64(out, "sensegate_inbox_bytes", "gauge", "Payload bytes waiting in the inbox.",
            m->inbox_bytes);
    put_double(out, "sensegate_inbox_wait_seconds_total", "counter",
               "Time the MQTT thread spent blocked on a full inbox.", m->inbox_wait_seconds);
    put_double(out, "sensegate_last_message_timestamp_seconds", "gauge",
               "Wall-clock time of the newest MQTT message (0 = none yet).",
               (double)m->last_message_ms / 1000.0);
    put_double(out, "sensegate_seconds_since_last_message", "gauge",
               "Seconds since the newest MQTT message (since start when none yet).",
               since_last_message(m));
    put_u64(out, "sensegate_inbox_overflows_total", "counter",
            "Messages appended over the inbox bound after the back-pressure wait.",
            m->inbox_overflows);

    /* decode and verdicts */
    put_u64(out, "sensegate_decode_errors_total", "counter",
            "Payloads that did not decode (including those over the size limit).",
            m->decode_errors);
    put_u64(out, "sensegate_payloads_too_large_total", "counter",
            "Payloads over limits.max_payload_bytes (also in decode_errors).", m->decode_too_large);
    put_header(out, "sensegate_readings_total", "counter",
               "Readings by verdict; every reading lands in exactly one result.");
    for (i = 0; i < 4; i++) {
        put_labelled(out, "sensegate_readings_total", "result", verdict_names[i], m->readings[i]);
    }
    put_hist(out, "sensegate_reading_age_seconds",
             "Accepted readings: gateway clock at arrival minus ts_ms (clock skew shows here).",
             &m->reading_age, sg_age_bounds);
    put_u64(out, "sensegate_readings_from_future_total", "counter",
            "Accepted readings stamped ahead of the gateway clock (observed as age 0).",
            m->readings_from_future);
    put_header(out, "sensegate_invalid_readings_total", "counter",
               "Invalid readings by reason; sums to readings_total{result=\"invalid\"}.");
    for (i = 1; i < SG_INVALID_COUNT; i++) {
        put_labelled(out, "sensegate_invalid_readings_total", "reason", sg_invalid_name((int)i),
                     m->invalid_by_reason[i]);
    }
    put_u64(out, "sensegate_active_series", "gauge",
            "Series (sensor, kind) with state in the gateway.", m->active_series);
    put_u64(out, "sensegate_open_windows", "gauge", "Windows currently open.", m->open_windows);
    put_u64(out, "sensegate_series_evicted_total", "counter",
            "Idle series whose state was released.", m->series_evicted);
    put_u64(out, "sensegate_ring_overflows_total", "counter",
            "Readings whose seq fell outside the duplicate-detection ring.", m->ring_overflows);
    put_u64(out, "sensegate_seq_resets_total", "counter", "Sensors whose seq counter restarted.",
            m->seq_resets);
    put_u64(out, "sensegate_rollups_total", "counter",
            "Rollups emitted (one per series, channel and window).", m->rollups);
    put_u64(out, "sensegate_partial_windows_total", "counter",
            "Windows emitted cut short (partial=true).", m->windows_partial);

    /* forward */
    put_header(out, "sensegate_forward_batches_total", "counter",
               "Answers to batch POSTs: ok (2xx), retry (429, 5xx, 3xx, network error), "
               "rejected (other 4xx; dead letters).");
    put_labelled(out, "sensegate_forward_batches_total", "result", "ok", m->forward_ok);
    put_labelled(out, "sensegate_forward_batches_total", "result", "retry", m->forward_retry);
    put_labelled(out, "sensegate_forward_batches_total", "result", "rejected", m->forward_rejected);
    put_u64(out, "sensegate_forward_inflight", "gauge", "Batch POSTs in flight.",
            m->forward_inflight);
    put_hist(out, "sensegate_forward_latency_seconds", "Time from request start to a 2xx answer.",
             &m->forward_latency, sg_hist_bounds);
    put_hist(out, "sensegate_delivery_delay_seconds",
             "Time from window close to a 2xx answer (batches spooled in this run).",
             &m->delivery_delay, sg_hist_bounds);

    /* spool */
    put_u64(out, "sensegate_spool_batches", "gauge", "Batches waiting in the spool.",
            m->spool_batches);
    put_u64(out, "sensegate_spool_bytes", "gauge", "Body bytes waiting in the spool.",
            m->spool_bytes);
    put_u64(out, "sensegate_spool_dropped_batches_total", "counter",
            "Oldest batches dropped because the spool reached its bound.", m->spool_dropped);
    put_u64(out, "sensegate_spool_dead_letter_batches", "gauge",
            "Batches rejected by the backend and kept in dead letters.", m->spool_dead_letters);
    put_u64(out, "sensegate_spool_errors_total", "counter", "Failed spool writes.",
            m->spool_errors);
    put_u64(out, "sensegate_spooled_batches_total", "counter",
            "Batches this process stored in the spool for delivery.", m->batches_spooled);
    put_u64(out, "sensegate_spool_quarantined_files_total", "counter",
            "Corrupt spool files moved aside at start-up.", m->spool_quarantined);
    put_u64(out, "sensegate_dead_letters_dropped_total", "counter",
            "Oldest dead letters dropped at their bound.", m->spool_dead_dropped);
    put_u64(out, "sensegate_journal_records_total", "counter",
            "Messages appended to the ingest journal before their PUBACK.", m->journal_appended);
    put_u64(out, "sensegate_journal_errors_total", "counter",
            "Failed journal writes; those messages went on memory-only.", m->journal_errors);
    put_u64(out, "sensegate_journal_replayed_records_total", "counter",
            "Journal records replayed at start-up.", m->journal_replayed);
    put_u64(out, "sensegate_journal_torn_tails_total", "counter",
            "Torn or corrupt journal tails cut at start-up.", m->journal_torn);
    put_u64(out, "sensegate_journal_segments", "gauge", "Journal segment files.",
            m->journal_segments);
    put_u64(out, "sensegate_replay_skipped_readings_total", "counter",
            "Replayed readings whose windows were already spooled before the restart.",
            m->replay_skipped);
    put_double(out, "sensegate_spool_oldest_age_seconds", "gauge",
               "Age of the oldest spooled batch (0 when empty).",
               (double)m->spool_oldest_age_ms / 1000.0);
}

void sg_metrics_render_line(const struct sg_metrics *m, struct sg_buf *out)
{
    uint64_t total = m->readings[0] + m->readings[1] + m->readings[2] + m->readings[3];

    sg_buf_printf(out,
                  "stats msgs=%llu readings=%llu accepted=%llu duplicate=%llu late=%llu "
                  "invalid=%llu decode_errors=%llu series=%llu rollups=%llu fwd_ok=%llu "
                  "fwd_retry=%llu fwd_rejected=%llu fwd_inflight=%llu spool_batches=%llu "
                  "spool_bytes=%llu spool_dropped=%llu dead_letters=%llu mqtt=%s "
                  "last_msg_age_s=%.1f spool_age_s=%.1f reconnects=%llu",
                  (unsigned long long)m->mqtt_messages, (unsigned long long)total,
                  (unsigned long long)m->readings[0], (unsigned long long)m->readings[1],
                  (unsigned long long)m->readings[2], (unsigned long long)m->readings[3],
                  (unsigned long long)m->decode_errors, (unsigned long long)m->active_series,
                  (unsigned long long)m->rollups, (unsigned long long)m->forward_ok,
                  (unsigned long long)m->forward_retry, (unsigned long long)m->forward_rejected,
                  (unsigned long long)m->forward_inflight, (unsigned long long)m->spool_batches,
                  (unsigned long long)m->spool_bytes, (unsigned long long)m->spool_dropped,
                  (unsigned long long)m->spool_dead_letters, m->mqtt_connected ? "up" : "down",
                  since_last_message(m), (double)m->spool_oldest_age_ms / 1000.0,
                  (unsigned long long)m->mqtt_reconnects);
}

/* utime and stime (fields 14 and 15) from /proc/self/stat, in seconds.
 * The command name (field 2) may contain spaces and parentheses, so parsing
 * starts after the last ')'. Returns 0 or -1. */
static int read_cpu_seconds(double *out)
{
    char line[1024];
    unsigned long long utime = 0, stime = 0;
    const char *p;
    long ticks;
    FILE *fp;
    size_t n;

    fp = fopen("/proc/self/stat", "r");
    if (fp == NULL) {
        return -1;
    }
    n = fread(line, 1, sizeof(line) - 1, fp);
    fclose(fp);
    line[n] = '\0';
    p = strrchr(line, ')');
    ticks = sysconf(_SC_CLK_TCK);
    if (p == NULL || ticks <= 0) {
        return -1;
    }
    /* After ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15). */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
        2) {
        return -1;
    }
    *out = (double)(utime + stime) / (double)ticks;
    return 0;
}

static int read_rss_bytes(uint64_t *out)
{
    unsigned long long size = 0, resident = 0;
    long page;
    FILE *fp;
    int n;

    fp = fopen("/proc/self/statm", "r");
    if (fp == NULL) {
        return -1;
    }
    n = fscanf(fp, "%llu %llu", &size, &resident);
    fclose(fp);
    page = sysconf(_SC_PAGESIZE);
    if (n != 2 || page <= 0) {
        return -1;
    }
    *out = (uint64_t)resident * (uint64_t)page;
    return 0;
}

static int count_open_fds(uint64_t *out)
{
    struct dirent *de;
    uint64_t n = 0;
    DIR *d;

    d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    /* The directory stream itself held one descriptor while we counted. */
    *out = n > 0 ? n - 1 : 0;
    return 0;
}

void sg_metrics_read_process(struct sg_metrics *m)
{
    double cpu;
    uint64_t v;

    if (read_cpu_seconds(&cpu) == 0) {
        m->cpu_seconds = cpu;
    }
    if (read_rss_bytes(&v) == 0) {
        m->rss_bytes = v;
    }
    if (count_open_fds(&v) == 0) {
        m->open_fds = v;
    }
}

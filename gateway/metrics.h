/*
 * metrics: the figures operators read, rendered as Prometheus text for
 * GET /metrics and as the one-line stderr summary, both from the same
 * snapshot (struct sg_metrics is a plain value that the gateway fills from
 * each module's own counters before rendering). Pure; loop thread.
 */
#ifndef SG_METRICS_H
#define SG_METRICS_H

#include <stdint.h>
#include <stddef.h>

#include "buf.h"
#include "reading.h"

/* Latency histogram with fixed upper bounds in seconds (Prometheus "le"). */
#define SG_HIST_BUCKETS 14
struct sg_hist {
    uint64_t counts[SG_HIST_BUCKETS];  /* non-cumulative per bucket; last is +Inf */
    uint64_t count;
    double sum;                        /* seconds */
};
/* Bounds: 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 +Inf */
extern const double sg_hist_bounds[SG_HIST_BUCKETS - 1];
void sg_hist_observe(struct sg_hist *h, double seconds);

/* Reading-age histogram: same struct, wider bounds in seconds, because event
 * time can trail the gateway clock by up to validation.max_past_ms.
 * Bounds: 0.1 0.25 0.5 1 2.5 5 10 30 60 300 900 1800 3600 +Inf */
extern const double sg_age_bounds[SG_HIST_BUCKETS - 1];
void sg_hist_observe_age(struct sg_hist *h, double seconds);

struct sg_metrics {
    const char *gateway_id;
    uint64_t start_time_ms;            /* process start, epoch ms */
    uint64_t now_ms;                   /* snapshot time, epoch ms (0 = unknown) */
    /* ingest */
    uint64_t mqtt_messages;            /* PUBLISH payloads received */
    uint64_t mqtt_connected;           /* 1 when connected and subscribed */
    uint64_t mqtt_reconnects;          /* successful connects after the first */
    uint64_t mqtt_session_lost;        /* connects without a broker session */
    uint64_t inbox_depth;              /* messages waiting for the loop (gauge) */
    uint64_t inbox_bytes;              /* bytes waiting (gauge) */
    double inbox_wait_seconds;         /* Paho thread time blocked on a full inbox */
    uint64_t last_message_ms;          /* epoch ms of the newest message, 0 = none */
    uint64_t inbox_overflows;          /* records appended over the inbox bound */
    /* decode and verdicts */
    uint64_t decode_errors;            /* payloads that did not decode */
    uint64_t decode_too_large;         /* of which over limits.max_payload_bytes */
    uint64_t readings[4];              /* accepted, duplicate, late, invalid */
    struct sg_hist reading_age;        /* accepted: arrival_ms - ts_ms, seconds (sg_age_bounds) */
    uint64_t readings_from_future;     /* accepted with ts_ms > arrival_ms (age observed as 0) */
    uint64_t invalid_by_reason[SG_INVALID_COUNT];
    uint64_t active_series;
    uint64_t open_windows;
    uint64_t series_evicted;
    uint64_t ring_overflows;
    uint64_t seq_resets;
    uint64_t rollups;                  /* rollups emitted (one per channel) */
    uint64_t windows_partial;          /* windows emitted as partial */
    /* forward */
    uint64_t forward_ok;               /* batches answered 2xx */
    uint64_t forward_retry;            /* attempts answered 429/5xx/network error */
    uint64_t forward_rejected;         /* batches answered other 4xx (dead letters) */
    uint64_t forward_inflight;         /* gauge */
    struct sg_hist forward_latency;    /* request start to 2xx, seconds */
    struct sg_hist delivery_delay;     /* window close to 2xx, seconds */
    /* spool */
    uint64_t spool_batches;            /* gauge */
    uint64_t spool_bytes;              /* gauge */
    uint64_t spool_dropped;            /* batches dropped at the bound */
    uint64_t spool_dead_letters;       /* gauge: batches in dead letters */
    uint64_t spool_errors;             /* failed spool writes */
    uint64_t spool_oldest_age_ms;      /* gauge */
    uint64_t batches_spooled;          /* batches this run stored in the spool */
    uint64_t spool_quarantined;        /* corrupt spool files moved aside at open */
    uint64_t spool_dead_dropped;       /* dead letters dropped at their bound */
    /* journal and recovery */
    uint64_t journal_appended;         /* messages made durable before their PUBACK */
    uint64_t journal_errors;           /* failed journal writes (those went memory-only) */
    uint64_t journal_replayed;         /* records replayed at start */
    uint64_t journal_torn;             /* torn or corrupt tails cut at start */
    uint64_t journal_segments;         /* gauge */
    uint64_t replay_skipped;           /* replayed readings of windows already spooled */
    /* process */
    double cpu_seconds;
    uint64_t rss_bytes;
    uint64_t open_fds;
};

/* Appends the Prometheus text exposition (version 0.0.4) of m to out. */
void sg_metrics_render_prometheus(const struct sg_metrics *m, struct sg_buf *out);

/* Appends the one-line summary (no trailing newline), e.g.
 * "stats msgs=120 readings=2400 accepted=2390 duplicate=5 late=3 invalid=2 ...
 *  mqtt=up last_msg_age_s=0.4 spool_age_s=0 reconnects=0". */
void sg_metrics_render_line(const struct sg_metrics *m, struct sg_buf *out);

/* Fills cpu_seconds, rss_bytes and open_fds from /proc/self (Linux);
 * leaves them unchanged where unreadable. */
void sg_metrics_read_process(struct sg_metrics *m);

#endif

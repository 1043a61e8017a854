/*
 * gateway: one libuv loop owns all state. Paho's threads reach it only
 * through the inbox; curl and the metrics server run on the loop itself.
 *
 * A reading's path: Paho callback → inbox → on_inbox (decode, verdict,
 * aggregate) → rollup emit → batch (batch.c: appended; full batches are
 * encoded and spooled after the inbox drain) → spool → forward.
 *
 * Shutdown order (see gateway.h) is a small state machine driven by inbox
 * events and timers, so the loop never blocks waiting for Paho or curl.
 * Thread: the loop (main) thread only.
 */
#include "gateway.h"

#include "batch.h"
#include "buf.h"
#include "common.h"
#include "decode.h"
#include "encode.h"
#include "forward.h"
#include "http.h"
#include "inbox.h"
#include "ingest.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "rollup.h"
#include "sdnotify.h"
#include "session.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* The inbox's coalescing delay: a message waits at most this much (+ 1 ms
 * timer granularity) longer before the loop handles it, and a steady stream
 * wakes the loop about once per this interval instead of once per message.
 * 0 = wake per message. */
#ifndef INBOX_COALESCE_MS
#define INBOX_COALESCE_MS 1
#endif

enum stop_state { RUNNING, STOP_DISCONNECTING, STOP_DRAINING, STOP_CLOSING };

struct gw {
    uv_loop_t loop;
    struct sg_config *cfg;
    struct sg_metrics m;
    struct sg_inbox inbox;
    bool inbox_open;
    struct sg_ingest *ingest;
    struct sg_decoder *dec;
    struct sg_rollup_engine *eng;
    struct sg_spool *spool;
    struct sg_journal *journal;
    struct sg_forward *fwd;
    struct sg_http *http;
    struct sg_sdnotify *sd;    /* READY/STOPPING/WATCHDOG to systemd (no-op without it) */
    char *token;
    char *mqtt_password;

    uv_timer_t tick_timer;     /* 1 s: gateway-clock window close, stats line */
    uv_timer_t batch_timer;    /* max_batch_delay_ms after the first pending rollup */
    uv_check_t batch_check;    /* after a loop turn's callbacks: spool the full batches */
    uv_timer_t mqtt_timer;     /* reconnect backoff */
    uv_timer_t stop_timer;     /* shutdown deadlines */
    uv_signal_t sig_term, sig_int, sig_hup;
    int open_handles;          /* handles still to be closed at shutdown */

    struct sg_batch *batch;    /* rollups waiting to form batches, and their spooling */
    enum sg_verdict *verdicts; /* per reading of the payload in hand (reading-age metric) */
    size_t cap_verdicts;
    bool replaying;            /* replay: records are not new MQTT messages */
    uint64_t last_trim_mono;
    uint64_t keep_ms;          /* journal retention high-water of this run (never shrinks) */

    struct sg_session mqtt;    /* the MQTT session's state machine (session.h) */
    enum stop_state stop;
    uint64_t stop_deadline_mono;
    uint64_t last_stats_mono;
    int exit_code;
};

/* ------------------------------------------------------------------ */
/* Batching: batch.c assembles and spools; the gateway says when       */

static void on_batch_timer(uv_timer_t *t);

/* After n > 0 batches went to the spool (or were refused by it): kick the
 * forwarder, and time what is still pending from its oldest rollup. */
static void after_spool(struct gw *g, size_t n)
{
    if (n == 0) {
        return;
    }
    sg_forward_kick(g->fwd);
    uv_timer_stop(&g->batch_timer);
    uint64_t wait_ms = sg_batch_wait_ms(g->batch, sg_mono_ms());
    if (wait_ms != UINT64_MAX && g->stop == RUNNING) {
        uv_timer_start(&g->batch_timer, on_batch_timer, wait_ms, 0);
    }
}

/* Spools the full batches, or with all everything pending. */
static void flush_batches(struct gw *g, bool all)
{
    after_spool(g, all ? sg_batch_flush(g->batch) : sg_batch_flush_full(g->batch));
}

static void on_batch_timer(uv_timer_t *t)
{
    flush_batches(t->data, true);
}

/* Runs after the callbacks of the loop turn that filled a batch (the inbox
 * drain, whether woken by its async handle or its coalescing timer, or a
 * tick): the full batches are spooled here, outside rollup's emit. */
static void on_batch_check(uv_check_t *h)
{
    uv_check_stop(h);
    flush_batches(h->data, false);
}

/* rollup's emit callback: only appends (batch.c keeps windows whole and
 * batches within max_batch_rollups). sg_batch_add spools by itself only
 * past its burst bound, when one call into rollup closes very many
 * windows (batch.c says why). */
static void on_rollup(void *ctx, const struct sg_rollup *r)
{
    struct gw *g = ctx;
    bool was_empty = sg_batch_pending(g->batch) == 0;
    size_t spooled = sg_batch_add(g->batch, r);
    if (spooled > 0) {
        after_spool(g, spooled);
    } else if (was_empty && g->stop == RUNNING) {
        uv_timer_start(&g->batch_timer, on_batch_timer, g->cfg->backend.max_batch_delay_ms, 0);
    }
    if (sg_batch_full(g->batch) > 0) {
        uv_check_start(&g->batch_check, on_batch_check);
    }
}

/* ------------------------------------------------------------------ */
/* Metrics snapshot                                                    */

static void snapshot(struct gw *g)
{
    struct sg_metrics *m = &g->m;
    const struct sg_rollup_stats *rs = sg_rollup_stats(g->eng);
    for (int i = 0; i < SG_VERDICT_COUNT; i++) {
        m->readings[i] = rs->verdicts[i];
    }
    for (int i = 0; i < SG_INVALID_COUNT; i++) {
        m->invalid_by_reason[i] = rs->invalid_by_reason[i];
    }
    m->active_series = rs->active_series;
    m->open_windows = rs->open_windows;
    m->series_evicted = rs->series_evicted;
    m->ring_overflows = rs->ring_overflows;
    m->seq_resets = rs->seq_resets;
    m->rollups = rs->rollups;
    m->windows_partial = rs->windows_partial;
    m->batches_spooled = sg_batch_stats(g->batch)->spooled;
    const struct sg_spool_stats *ss = sg_spool_stats(g->spool);
    m->spool_batches = ss->batches;
    m->spool_bytes = ss->bytes;
    m->spool_dropped = ss->dropped;
    m->spool_dead_letters = ss->dead_letters;
    m->spool_errors = ss->errors;
    m->spool_quarantined = ss->quarantined;
    m->spool_dead_dropped = ss->dead_dropped;
    uint64_t now = sg_now_ms();
    m->now_ms = now;
    m->spool_oldest_age_ms =
        ss->oldest_created_ms && now > ss->oldest_created_ms ? now - ss->oldest_created_ms : 0;
    if (g->inbox_open) {
        m->inbox_depth = atomic_load(&g->inbox.depth);
        m->inbox_bytes = atomic_load(&g->inbox.bytes);
        m->inbox_wait_seconds = (double)atomic_load(&g->inbox.wait_us) / 1e6;
        m->inbox_overflows = atomic_load(&g->inbox.overflows);
    }
    m->forward_inflight = sg_forward_inflight(g->fwd);
    m->replay_skipped = rs->replay_skipped;
    if (g->journal != NULL) {
        struct sg_journal_stats js;
        sg_journal_stats(g->journal, &js);
        m->journal_appended = js.appended;
        m->journal_errors = js.errors + js.low_disk_skipped;
        m->journal_replayed = js.replayed_records;
        m->journal_torn = js.torn_tails;
        m->journal_segments = js.segments;
    }
    sg_metrics_read_process(m);
}

static int on_http(void *ctx, const char *path, struct sg_buf *body, const char **ctype)
{
    struct gw *g = ctx;
    snapshot(g);
    if (strcmp(path, "/metrics") == 0) {
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        sg_metrics_render_prometheus(&g->m, body);
        return 200;
    }
    if (strcmp(path, "/healthz") == 0) {
        bool up = sg_session_state(&g->mqtt) == SG_SESSION_UP && g->stop == RUNNING;
        bool spool_ok = g->m.spool_errors == 0;
        *ctype = "application/json";
        sg_buf_printf(body,
                      "{\"status\":\"%s\",\"mqtt\":%s,\"spool_ok\":%s,\"spool_batches\":%llu,"
                      "\"gateway_id\":",
                      up ? (spool_ok ? "ok" : "degraded") : "down", up ? "true" : "false",
                      spool_ok ? "true" : "false", (unsigned long long)g->m.spool_batches);
        sg_buf_put_json_str(body, g->cfg->gateway_id);
        sg_buf_puts(body, "}\n");
        return up ? 200 : 503;
    }
    return 404;
}

static void stats_line(struct gw *g)
{
    struct sg_buf line = SG_BUF_INIT;
    snapshot(g);
    sg_metrics_render_line(&g->m, &line);
    sg_log(SG_LOG_INFO, "stats", "%s", line.data ? line.data : "");
    sg_buf_free(&line);
    if (g->stop == RUNNING) {
        const struct sg_metrics *m = &g->m;
        sg_sdnotify_status(g->sd, "mqtt %s; accepted=%llu delivered=%llu spooled=%llu",
                           m->mqtt_connected ? "up" : "down", (unsigned long long)m->readings[0],
                           (unsigned long long)m->forward_ok, (unsigned long long)m->spool_batches);
    }
}

/* ------------------------------------------------------------------ */
/* MQTT                                                                */

static void session_event(struct gw *g, enum sg_session_event ev, int arg);

static void on_mqtt_timer(uv_timer_t *t)
{
    session_event(t->data, SG_SESSION_EV_TIMER, 0);
}

/* The counters of a CONNACK, done first so their warning comes before the
 * "connected" line. Clears the bits it did. */
static void session_count(struct gw *g, struct sg_session_actions *a)
{
    if (a->bits & SG_SESSION_DO_COUNT_RECONNECT) {
        g->m.mqtt_reconnects++;
    }
    if (a->bits & SG_SESSION_DO_COUNT_SESSION_LOST) {
        g->m.mqtt_session_lost++;
        sg_log(SG_LOG_WARN, "ingest",
               "broker did not keep our session; readings queued while we were away are "
               "lost at the broker");
    }
    a->bits &= ~(unsigned)(SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_COUNT_SESSION_LOST);
}

/* Performs what the session decided, in the order session.h gives. A
 * connect or subscribe that cannot even be started is fed back as its
 * failure event. (Stop is done by begin_stop, which waits for Paho.) */
static void session_apply(struct gw *g, struct sg_session_actions a)
{
    const struct sg_config *c = g->cfg;

    session_count(g, &a);
    if (a.bits & SG_SESSION_DO_MARK_CONNECTED) {
        g->m.mqtt_connected = 1;
    }
    if (a.bits & SG_SESSION_DO_MARK_DISCONNECTED) {
        g->m.mqtt_connected = 0;
    }
    if (a.bits & SG_SESSION_DO_DISCONNECT) {
        sg_ingest_disconnect(g->ingest, 0);
    }
    if (a.bits & SG_SESSION_DO_STOP_TIMER) {
        uv_timer_stop(&g->mqtt_timer);
    }
    if (a.bits & SG_SESSION_DO_ARM_TIMER) {
        sg_log(SG_LOG_INFO, "ingest", "reconnecting in %llu ms (attempt %u)",
               (unsigned long long)a.delay_ms, a.attempt);
        sg_sdnotify_status(g->sd, "mqtt down: reconnecting in %llu ms (attempt %u)",
                           (unsigned long long)a.delay_ms, a.attempt);
        uv_timer_start(&g->mqtt_timer, on_mqtt_timer, a.delay_ms, 0);
    }
    if (a.bits & SG_SESSION_DO_CONNECT) {
        int rc = sg_ingest_connect(g->ingest);
        if (rc != 0) {
            sg_log(SG_LOG_WARN, "ingest", "connect to %s failed to start: %s", c->mqtt.uri,
                   sg_ingest_strerror(rc));
            session_event(g, SG_SESSION_EV_CONNECT_FAILED, rc);
        }
    }
    if (a.bits & SG_SESSION_DO_SUBSCRIBE) {
        if (sg_ingest_subscribe(g->ingest) != 0) {
            sg_log(SG_LOG_WARN, "ingest", "subscribe failed to start; reconnecting");
            session_event(g, SG_SESSION_EV_SUBACK_FAILED, -1);
        }
    }
    if (a.bits & SG_SESSION_DO_REPORT_UP) {
        sg_log(SG_LOG_INFO, "ingest", "subscribed topics=%zu first=%s qos=%d", c->mqtt.ntopics,
               c->mqtt.topics[0], c->mqtt.qos);
        /* Spool, journal and metrics listener opened in start(): READY=1
         * (first time only) means readings are taken and stored now. */
        if (a.bits & SG_SESSION_DO_NOTIFY_READY) {
            sg_sdnotify_ready(g->sd, "mqtt up: subscribed to %zu topic(s)", c->mqtt.ntopics);
        } else {
            sg_sdnotify_status(g->sd, "mqtt up: subscribed to %zu topic(s)", c->mqtt.ntopics);
        }
    }
}

static void session_event(struct gw *g, enum sg_session_event ev, int arg)
{
    session_apply(g, sg_session_on(&g->mqtt, ev, arg));
}

static void begin_close(struct gw *g);

static void on_disconnected_timer(uv_timer_t *t)
{
    begin_close(t->data);
}

static void on_mqtt_event(struct gw *g, const struct sg_inmsg *e)
{
    const struct sg_config *c = g->cfg;
    switch (e->type) {
    case SG_INBOX_CONNECTED: {
        if (g->stop != RUNNING) {
            break;
        }
        struct sg_session_actions a = sg_session_on(&g->mqtt, SG_SESSION_EV_CONNECT_OK, e->arg);
        if (a.bits & SG_SESSION_DO_SUBSCRIBE) {
            session_count(g, &a);
            sg_log(SG_LOG_INFO, "ingest", "connected uri=%s client_id=%s session_present=%d",
                   c->mqtt.uri, c->mqtt.client_id, e->arg);
        }
        session_apply(g, a);
        break;
    }
    case SG_INBOX_SUBSCRIBED:
        if (g->stop != RUNNING) {
            break;
        }
        if (e->arg != 0) {
            sg_log(SG_LOG_ERROR, "ingest", "subscribe refused by the broker (code %d) for %zu topic(s)",
                   e->arg, c->mqtt.ntopics);
            session_event(g, SG_SESSION_EV_SUBACK_FAILED, e->arg);
            break;
        }
        session_event(g, SG_SESSION_EV_SUBACK_OK, 0);
        break;
    case SG_INBOX_CONNECT_FAILED:
        if (g->stop != RUNNING) {
            break;
        }
        sg_log(SG_LOG_WARN, "ingest", "cannot connect to %s: %s (code %d)", c->mqtt.uri,
               sg_ingest_strerror(e->arg), e->arg);
        session_event(g, SG_SESSION_EV_CONNECT_FAILED, e->arg);
        break;
    case SG_INBOX_CONNECTION_LOST:
        if (g->stop != RUNNING) {
            break;
        }
        sg_log(SG_LOG_WARN, "ingest", "connection to %s lost", c->mqtt.uri);
        session_event(g, SG_SESSION_EV_LOST, 0);
        break;
    case SG_INBOX_DISCONNECTED:
        if (g->stop == STOP_DISCONNECTING) {
            /* Not from inside the inbox drain: begin_close closes the inbox,
             * which drains it again. Next loop turn instead. */
            uv_timer_start(&g->stop_timer, on_disconnected_timer, 0, 0);
        }
        break;
    default:
        break;
    }
}

/* Reading age at arrival (gateway clock minus event time) of the accepted
 * readings: clock skew and buffering at the sensors show here. */
static void observe_ages(struct gw *g, const struct sg_reading *rd, size_t n, uint64_t arrival_ms)
{
    for (size_t i = 0; i < n; i++) {
        if (g->verdicts[i] != SG_VERDICT_ACCEPTED) {
            continue;
        }
        if (rd[i].ts_ms > arrival_ms) {
            g->m.readings_from_future++;
            sg_hist_observe_age(&g->m.reading_age, 0);
        } else {
            sg_hist_observe_age(&g->m.reading_age, (double)(arrival_ms - rd[i].ts_ms) / 1000.0);
        }
    }
}

static void on_inbox(void *ctx, const struct sg_inmsg *msg)
{
    struct gw *g = ctx;
    if (msg->type != SG_INBOX_MESSAGE) {
        on_mqtt_event(g, msg);
        return;
    }
    if (!g->replaying) {
        g->m.mqtt_messages++;
        g->m.last_message_ms = msg->arrival_ms;
    }
    if (msg->arg == 1) {
        g->m.decode_errors++;
        g->m.decode_too_large++;
        return;
    }
    if (!sg_decode_topic_ok(msg->topic, msg->topic_len)) {
        /* Not sensors/<programme>/<district>/<device_id>: outside the
         * contract, counted like any payload we cannot use. */
        g->m.decode_errors++;
        sg_log(SG_LOG_DEBUG, "decode", "dropped payload on malformed topic %.*s",
               (int)msg->topic_len, msg->topic);
        return;
    }
    const struct sg_reading *rd = NULL;
    size_t n = 0;
    int rc = sg_decode_batch(g->dec, msg->payload, msg->payload_len, msg->arrival_ms, &rd, &n);
    if (rc != 0) {
        g->m.decode_errors++;
        if (rc == SG_ETOOBIG) {
            g->m.decode_too_large++;
        }
        sg_log(SG_LOG_DEBUG, "decode", "dropped payload of %zu bytes on %.*s: %s",
               msg->payload_len, (int)msg->topic_len, msg->topic, sg_strerror(rc));
        return;
    }
    /* The batch call prefetches each reading's series so lookups overlap. */
    if (n > g->cap_verdicts) {
        g->cap_verdicts = n;
        g->verdicts = sg_xrealloc(g->verdicts, n * sizeof *g->verdicts);
    }
    sg_rollup_add_batch(g->eng, rd, n, msg->arrival_ms, g->verdicts);
    observe_ages(g, rd, n, msg->arrival_ms);
    /* Readings past limits.max_readings_per_batch were not decoded (that
     * would let a payload size our allocation) but each is still counted
     * invalid, through the same verdict counter as every other reading. */
    for (size_t k = sg_decode_excess(g->dec); k > 0; k--) {
        sg_rollup_add(g->eng, sg_decode_excess_reading(), msg->arrival_ms);
    }
}

/* ------------------------------------------------------------------ */
/* Timers, signals, reload                                             */

/* Journal records older than this have had every window they touch closed
 * by the gateway clock and spooled (docs/DURABILITY.md). */
static uint64_t journal_retention_ms(const struct sg_config *c)
{
    uint64_t maxw = 0;
    for (size_t i = 0; i < c->nwindows; i++) {
        maxw = c->windows_ms[i] > maxw ? c->windows_ms[i] : maxw;
    }
    return c->validation.max_future_ms + maxw + c->allowed_lateness_ms +
           c->backend.max_batch_delay_ms + 5000u;
}

static void trim_journal(struct gw *g, uint64_t now)
{
    /* A reload may lower max_future_ms or the batch delay, but readings
     * accepted under the old values still sit in windows that close late:
     * retention never shrinks within a run. */
    uint64_t keep = journal_retention_ms(g->cfg);
    if (keep < g->keep_ms) {
        keep = g->keep_ms;
    }
    g->keep_ms = keep;
    if (g->journal == NULL || sg_batch_push_failed(g->batch) || now < 2 * keep) {
        /* While spool pushes fail the journal keeps everything: a restart
         * can then rebuild what could not be spooled. */
        return;
    }
    sg_journal_trim(g->journal, now - keep);
    /* Marks older than the oldest record any replay can see are useless. */
    sg_spool_prune_marks(g->spool, now - 2 * keep);
}

static void on_tick(uv_timer_t *t)
{
    struct gw *g = t->data;
    uint64_t now = sg_now_ms();
    /* The tick goes into the journal first (a record with an empty topic,
     * which MQTT never sends): a replay then closes windows exactly where
     * this run did, relative to the messages around it. */
    sg_journal_append(g->journal, now, NULL, 0, NULL, 0);
    sg_rollup_tick(g->eng, now);
    flush_batches(g, false);
    uint64_t mono = uv_now(&g->loop);
    if (mono - g->last_trim_mono >= 10000u) {
        g->last_trim_mono = mono;
        /* Spool what this tick closed before trimming behind it. */
        flush_batches(g, true);
        trim_journal(g, now);
    }
    if (g->cfg->stats_interval_s > 0 &&
        mono - g->last_stats_mono >= g->cfg->stats_interval_s * 1000u) {
        g->last_stats_mono = mono;
        stats_line(g);
    }
}

/* SIGHUP: reload.c does the work; the gateway only says what is running. */
static void reload(struct gw *g)
{
    struct sg_reload_targets t = {
        .ingest = g->ingest,
        .mqtt_live = g->stop == RUNNING && sg_session_live(&g->mqtt),
        .dec = g->dec,
        .eng = g->eng,
        .spool = g->spool,
        .fwd = g->fwd,
    };
    enum sg_reload_outcome rr = sg_reload(&g->cfg, &t);
    /* reconnect_*_ms are live: from the next delay on. */
    sg_session_set_backoff(&g->mqtt, g->cfg->mqtt.reconnect_min_ms, g->cfg->mqtt.reconnect_max_ms);
    if (rr == SG_RELOAD_RESUBSCRIBE) {
        session_event(g, SG_SESSION_EV_RECONNECT, 0);
    }
}

static void begin_stop(struct gw *g);

static void on_signal(uv_signal_t *s, int signum)
{
    struct gw *g = s->data;
    if (signum == SIGHUP) {
        sg_sdnotify_reloading(g->sd);
        reload(g);
        sg_sdnotify_reloaded(g->sd);
        return;
    }
    if (g->stop != RUNNING) {
        sg_log(SG_LOG_WARN, "gateway", "second signal %d: stopping without waiting for delivery",
               signum);
        g->stop_deadline_mono = 0;
        return;
    }
    sg_log(SG_LOG_INFO, "gateway", "signal %d: stopping", signum);
    sg_sdnotify_stopping(g->sd);
    begin_stop(g);
}

/* ------------------------------------------------------------------ */
/* Shutdown                                                            */

static void on_handle_closed(uv_handle_t *h)
{
    struct gw *g = h->data;
    g->open_handles--;
}

static void on_inbox_closed(void *arg)
{
    struct gw *g = arg;
    g->open_handles--;
}

static void on_forward_closed(void *arg)
{
    struct gw *g = arg;
    g->open_handles--;
}

static void on_http_closed(void *arg)
{
    struct gw *g = arg;
    g->open_handles--;
}

static void finish(struct gw *g)
{
    g->stop = STOP_CLOSING;
    snapshot(g);
    stats_line(g);
    uv_handle_t *hs[] = {(uv_handle_t *)&g->tick_timer, (uv_handle_t *)&g->batch_timer,
                         (uv_handle_t *)&g->batch_check, (uv_handle_t *)&g->mqtt_timer,
                         (uv_handle_t *)&g->stop_timer,  (uv_handle_t *)&g->sig_term,
                         (uv_handle_t *)&g->sig_int,     (uv_handle_t *)&g->sig_hup};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        g->open_handles++;
        uv_close(hs[i], on_handle_closed);
    }
    sg_sdnotify_close(g->sd, NULL, NULL); /* the loop still runs its close callback */
    g->open_handles++;
    sg_forward_close(g->fwd, on_forward_closed, g);
    if (g->http != NULL) {
        g->open_handles++;
        sg_http_stop(g->http, on_http_closed, g);
        g->http = NULL;
    }
}

static void on_drain_check(uv_timer_t *t)
{
    struct gw *g = t->data;
    bool idle = sg_forward_idle(g->fwd);
    if (idle || uv_now(&g->loop) >= g->stop_deadline_mono) {
        if (!idle) {
            const struct sg_spool_stats *ss = sg_spool_stats(g->spool);
            sg_log(SG_LOG_WARN, "gateway",
                   "shutdown deadline: %llu batch(es) stay in the spool for the next start",
                   (unsigned long long)ss->batches);
        }
        uv_timer_stop(&g->stop_timer);
        finish(g);
    }
}

/* Paho is gone (or never connected): drain, emit partial windows, deliver. */
static void begin_close(struct gw *g)
{
    if (g->stop >= STOP_DRAINING) {
        return;
    }
    g->stop = STOP_DRAINING;
    uv_timer_stop(&g->stop_timer);
    sg_ingest_free(g->ingest); /* joins nothing of ours; Paho stops calling us */
    g->ingest = NULL;
    g->open_handles++;
    sg_inbox_close(&g->inbox, on_inbox_closed, g); /* handles what is left */
    g->inbox_open = false;
    sg_rollup_flush(g->eng);
    flush_batches(g, true);
    /* Every window is now spooled with its mark; the journal is no longer
     * needed unless a push failed, in which case it stays for a replay. */
    if (!sg_batch_push_failed(g->batch)) {
        sg_journal_trim(g->journal, UINT64_MAX);
    }
    const struct sg_rollup_stats *rs = sg_rollup_stats(g->eng);
    sg_log(SG_LOG_INFO, "gateway", "emitted %llu partial window(s); delivering",
           (unsigned long long)rs->windows_partial);
    uv_timer_start(&g->stop_timer, on_drain_check, 0, 50);
}

static void on_disconnect_timeout(uv_timer_t *t)
{
    struct gw *g = t->data;
    sg_log(SG_LOG_WARN, "ingest", "disconnect did not finish in time; closing anyway");
    begin_close(g);
}

static void begin_stop(struct gw *g)
{
    g->stop_deadline_mono = uv_now(&g->loop) + g->cfg->shutdown_timeout_ms;
    struct sg_session_actions a = sg_session_on(&g->mqtt, SG_SESSION_EV_STOP, 0);
    uv_timer_stop(&g->mqtt_timer);
    uv_timer_stop(&g->tick_timer);
    if (a.bits & SG_SESSION_DO_DISCONNECT) {
        g->stop = STOP_DISCONNECTING;
        if (sg_ingest_disconnect(g->ingest, 1000) == 0) {
            uv_timer_start(&g->stop_timer, on_disconnect_timeout, 3000, 0);
            return;
        }
    }
    g->stop = STOP_DISCONNECTING;
    begin_close(g);
}

/* ------------------------------------------------------------------ */
/* Start-up                                                            */

/* Reads a secret from a file, strips one trailing newline. Warns when the
 * file is readable by group or others. Never logs the content. */
static char *read_secret(const char *path, const char *key)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sg_log(SG_LOG_ERROR, "config", "%s: cannot open %s: %s", key, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
        sg_log(SG_LOG_WARN, "config", "%s: %s is readable by group or others (mode %03o)", key,
               path, (unsigned)(st.st_mode & 0777));
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        sg_log(SG_LOG_ERROR, "config", "%s: cannot read %s: %s", key, path, strerror(errno));
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }
    buf[n] = '\0';
    char *s = sg_xstrdup(buf);
    memset(buf, 0, sizeof buf);
    return s;
}

static int write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0) {
        return -1;
    }
    return rename(tmp, path);
}

/* ------------------------------------------------------------------ */
/* Crash recovery                                                      */

static void on_mark(void *ctx, const struct sg_spool_mark *mk)
{
    struct gw *g = ctx;
    sg_rollup_restore(g->eng, mk->sensor_id, strlen(mk->sensor_id), mk->kind, mk->window_ms,
                      mk->closed_before_ms, sg_now_ms());
}

static void on_replay_record(void *ctx, uint64_t arrival_ms, const char *topic, size_t topic_len,
                             const uint8_t *payload, size_t payload_len)
{
    struct gw *g = ctx;
    if (topic_len == 0) {
        /* A journaled gateway-clock tick of the first run. */
        sg_rollup_tick(g->eng, arrival_ms);
        return;
    }
    struct sg_inmsg m = {
        .type = SG_INBOX_MESSAGE,
        .arg = 0,
        .arrival_ms = arrival_ms,
        .topic = topic,
        .topic_len = topic_len,
        .payload = payload,
        .payload_len = payload_len,
    };
    on_inbox(g, &m);
    /* Each record is a drain of its own: spool what it filled. */
    flush_batches(g, false);
}

/* Rebuilds the open windows a crash lost: restore the spooled-window marks,
 * then replay the journal through the normal pipeline. */
static int recover(struct gw *g)
{
    uint64_t t0 = sg_mono_ms();
    int rc = sg_spool_load_marks(g->spool, on_mark, g);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "spool", "cannot read window marks: %s (%s)", sg_strerror(rc),
               sg_spool_last_error(g->spool));
        return -1;
    }
    sg_rollup_set_replay(g->eng, true);
    g->replaying = true;
    rc = sg_journal_replay(g->journal, on_replay_record, g);
    g->replaying = false;
    sg_rollup_set_replay(g->eng, false);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "journal", "replay stopped early: %s (%s)", sg_strerror(rc),
               strerror(errno));
    }
    flush_batches(g, true);
    struct sg_journal_stats js;
    sg_journal_stats(g->journal, &js);
    const struct sg_rollup_stats *rs = sg_rollup_stats(g->eng);
    if (js.replayed_records > 0 || js.torn_tails > 0) {
        sg_log(SG_LOG_INFO, "journal",
               "recovered records=%llu skipped_readings=%llu open_windows=%llu torn_tails=%llu "
               "in %llu ms",
               (unsigned long long)js.replayed_records, (unsigned long long)rs->replay_skipped,
               (unsigned long long)rs->open_windows, (unsigned long long)js.torn_tails,
               (unsigned long long)(sg_mono_ms() - t0));
    }
    return 0;
}

/* The URL without any user:password@ part, for logs. */
static int start(struct gw *g)
{
    struct sg_config *c = g->cfg;
    char err[512];

    /* Timers first: recovery emits rollups, which arm the batch timer
     * (and the batch check). */
    uv_timer_t *timers[] = {&g->tick_timer, &g->batch_timer, &g->mqtt_timer, &g->stop_timer};
    for (size_t i = 0; i < 4; i++) {
        uv_timer_init(&g->loop, timers[i]);
        timers[i]->data = g;
    }
    uv_check_init(&g->loop, &g->batch_check);
    g->batch_check.data = g;
    /* Signals next, so a SIGTERM during start-up or recovery is handled by
     * the loop as soon as it runs instead of killing the process. */
    uv_signal_t *sigs[] = {&g->sig_term, &g->sig_int, &g->sig_hup};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < 3; i++) {
        uv_signal_init(&g->loop, sigs[i]);
        sigs[i]->data = g;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }

    if (c->backend.token_file != NULL) {
        g->token = read_secret(c->backend.token_file, "backend.token_file");
        if (g->token == NULL) {
            return -1;
        }
    } else if (getenv("SENSEGATE_BACKEND_TOKEN") != NULL) {
        g->token = sg_xstrdup(getenv("SENSEGATE_BACKEND_TOKEN"));
    }
    if (c->mqtt.password_file != NULL) {
        g->mqtt_password = read_secret(c->mqtt.password_file, "mqtt.password_file");
        if (g->mqtt_password == NULL) {
            return -1;
        }
    }

    struct sg_spool_opts so = {
        .dir = c->spool.dir,
        .max_bytes = c->spool.max_bytes,
        .max_batches = c->spool.max_batches,
        .fsync = c->spool.fsync,
        .now_ms = sg_now_ms(),
    };
    int rc = sg_spool_open(&g->spool, &so);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "spool", "cannot open spool in %s: %s (%s)", c->spool.dir,
               sg_strerror(rc), strerror(errno));
        return -1;
    }
    const struct sg_spool_stats *ss = sg_spool_stats(g->spool);
    if (ss->batches) {
        sg_log(SG_LOG_INFO, "spool", "%llu batch(es) waiting from an earlier run",
               (unsigned long long)ss->batches);
    }
    struct sg_batch_opts bo = {.spool = g->spool, .cfg = &g->cfg};
    if (sg_batch_new(&g->batch, &bo) != 0) {
        return -1;
    }

    char jdir[4096];
    snprintf(jdir, sizeof jdir, "%s/journal", c->spool.dir);
    struct sg_journal_opts jo = {
        .dir = jdir,
        .segment_bytes = 0,
        .segment_ms = 10000,
        .sync_ms = c->spool.fsync ? 1000 : 0,
        /* The journal stops (counted) before the spool does, so rollups
         * already made always find room. */
        .min_free_bytes = 2 * sg_spool_min_free_bytes(g->spool),
    };
    rc = sg_journal_open(&g->journal, &jo);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "journal", "cannot open the ingest journal in %s: %s (%s)", jdir,
               sg_strerror(rc), strerror(errno));
        return -1;
    }

    struct sg_decode_limits dl = {
        .max_payload_bytes = c->limits.max_payload_bytes,
        .max_readings_per_batch = c->limits.max_readings_per_batch,
        .arena_bytes = 0,
        .max_past_ms = c->validation.max_past_ms,
        .max_future_ms = c->validation.max_future_ms,
    };
    if (sg_decoder_new(&g->dec, &dl) != 0) {
        sg_log(SG_LOG_ERROR, "decode", "bad decoder limits");
        return -1;
    }

    struct sg_rollup_opts ro = {
        .nwindows = c->nwindows,
        .allowed_lateness_ms = c->allowed_lateness_ms,
        .max_series = c->limits.max_series,
        .ring_seqs = (uint32_t)c->limits.ring_seqs,
        .series_idle_ms = c->limits.series_idle_ms,
        .sketch_alpha = 0.005,
        .emit = on_rollup,
        .emit_ctx = g,
    };
    memcpy(ro.windows_ms, c->windows_ms, sizeof ro.windows_ms);
    if (sg_rollup_engine_new(&g->eng, &ro) != 0) {
        sg_log(SG_LOG_ERROR, "rollup", "bad aggregation options");
        return -1;
    }
    if (recover(g) != 0) {
        return -1;
    }

    struct sg_forward_opts fo = {
        .url = c->backend.url,
        .token = g->token,
        .gateway_id = c->gateway_id,
        .ca_file = c->backend.ca_file,
        .timeout_ms = c->backend.timeout_ms,
        .max_inflight = (uint32_t)c->backend.max_inflight,
        .backoff_min_ms = c->backend.backoff_min_ms,
        .backoff_max_ms = c->backend.backoff_max_ms,
        .retry_after_max_ms = c->backend.retry_after_max_ms,
    };
    if (sg_forward_new(&g->fwd, &g->loop, g->spool, &g->m, &fo) != 0) {
        sg_log(SG_LOG_ERROR, "forward", "cannot start the forwarder for %s", c->backend.url);
        return -1;
    }

    rc = sg_http_start(&g->http, &g->loop, c->metrics.listen, on_http, g);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "http", "cannot listen on metrics.listen %s: %s", c->metrics.listen,
               sg_strerror(rc));
        return -1;
    }
    if (c->metrics.port_file != NULL &&
        write_port_file(c->metrics.port_file, sg_http_port(g->http)) != 0) {
        sg_log(SG_LOG_ERROR, "http", "cannot write metrics.port_file %s: %s", c->metrics.port_file,
               strerror(errno));
        return -1;
    }

    if (sg_inbox_init(&g->inbox, &g->loop, c->limits.inbox_bytes, 1000, on_inbox, g) != 0) {
        return -1;
    }
    /* Drain the inbox at most every INBOX_COALESCE_MS while messages keep
     * coming, instead of waking the loop per message (inbox.h). */
    sg_inbox_set_coalesce(&g->inbox, INBOX_COALESCE_MS);
    g->inbox_open = true;
    struct sg_ingest_opts io = {
        .uri = c->mqtt.uri,
        .client_id = c->mqtt.client_id,
        .topics = c->mqtt.topics,
        .ntopics = c->mqtt.ntopics,
        .qos = c->mqtt.qos,
        .version = c->mqtt.version,
        .clean_session = c->mqtt.clean_session,
        .keepalive_s = c->mqtt.keepalive_s,
        .session_expiry_s = c->mqtt.session_expiry_s,
        .username = c->mqtt.username,
        .password = g->mqtt_password,
        .ca_file = c->mqtt.ca_file,
        .cert_file = c->mqtt.cert_file,
        .key_file = c->mqtt.key_file,
        .max_payload_bytes = c->limits.max_payload_bytes,
        .journal = g->journal,
    };
    if (sg_ingest_new(&g->ingest, &g->inbox, &io, err, sizeof err) != 0) {
        sg_log(SG_LOG_ERROR, "ingest", "%s", err);
        return -1;
    }

    uv_timer_start(&g->tick_timer, on_tick, 1000, 1000);
    g->last_stats_mono = uv_now(&g->loop);
    sg_sdnotify_new(&g->sd, &g->loop);

    char safe_url[1024], safe_uri[1024];
    sg_redact_url(c->backend.url, safe_url, sizeof safe_url);
    sg_redact_url(c->mqtt.uri, safe_uri, sizeof safe_uri);
    sg_log(SG_LOG_INFO, "gateway",
           "sensegate %s started gateway_id=%s mqtt=%s backend=%s metrics=%s (port %u) spool=%s",
           SG_VERSION, c->gateway_id, safe_uri, safe_url, c->metrics.listen,
           (unsigned)sg_http_port(g->http), c->spool.dir);
    sg_forward_kick(g->fwd);
    session_event(g, SG_SESSION_EV_START, 0);
    return 0;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

int sg_gateway_run(struct sg_config *cfg)
{
    struct gw *g = sg_xcalloc(1, sizeof *g);
    g->cfg = cfg;
    int lvl = sg_log_level_parse(cfg->log_level);
    sg_log_min_level = lvl >= 0 ? lvl : SG_LOG_INFO;
    sg_log_json = cfg->log_format != NULL && strcmp(cfg->log_format, "json") == 0;
    g->m.gateway_id = cfg->gateway_id;
    g->m.start_time_ms = sg_now_ms();
    sg_session_init(&g->mqtt, cfg->mqtt.clean_session, cfg->mqtt.reconnect_min_ms,
                    cfg->mqtt.reconnect_max_ms, sg_now_ms() ^ ((uint64_t)getpid() << 32));
    uv_loop_init(&g->loop);
    signal(SIGPIPE, SIG_IGN);

    int code = 0;
    if (start(g) != 0) {
        code = 1;
        /* Partial start: close whatever got onto the loop. */
        if (g->ingest != NULL) {
            sg_ingest_free(g->ingest);
            g->ingest = NULL;
        }
        if (g->inbox_open) {
            sg_inbox_close(&g->inbox, NULL, NULL);
            g->inbox_open = false;
        }
        if (g->fwd != NULL) {
            sg_forward_close(g->fwd, NULL, NULL);
        }
        if (g->http != NULL) {
            sg_http_stop(g->http, NULL, NULL);
            g->http = NULL;
        }
        uv_walk(&g->loop, walk_close, NULL);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&g->loop) != 0) {
        sg_log(SG_LOG_ERROR, "gateway", "loop still had open handles at exit (a bug)");
        code = code ? code : 1;
    }
    if (code == 0) {
        sg_log(SG_LOG_INFO, "gateway", "stopped cleanly");
    }
    sg_forward_free(g->fwd);
    sg_sdnotify_free(g->sd);
    sg_rollup_engine_free(g->eng);
    sg_decoder_free(g->dec);
    sg_journal_close(g->journal);
    sg_batch_free(g->batch);
    sg_spool_close(g->spool);
    free(g->verdicts);
    if (g->token != NULL) {
        memset(g->token, 0, strlen(g->token));
        free(g->token);
    }
    if (g->mqtt_password != NULL) {
        memset(g->mqtt_password, 0, strlen(g->mqtt_password));
        free(g->mqtt_password);
    }
    sg_config_free(g->cfg); /* not cfg: a reload replaces the config whole */
    free(g);
    return code;
}

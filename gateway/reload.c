/*
 * reload: SIGHUP, driven by the key table of config.c.
 *
 *   new = load(file)                      (refused: log, keep running)
 *   merge(running, new)                   restart-only keys keep their running
 *                                         values (the same pointers), checks
 *                                         run again on the result
 *   for each changed key: live → apply to its module and log the value;
 *                         restart-only → log "needs restart", keep
 *   swap the whole config, free the old one
 *
 * Which module takes which live key (and when it takes effect) is listed
 * in apply() below; a live key without a module there reads the config on
 * every use (the gateway's batch bounds, stats interval, reconnect delays,
 * shutdown timeout). Loop thread only.
 */
#include "reload.h"

#include "common.h"
#include "log.h"

#include <string.h>

#define MAX_CHANGES 64 /* more than the table has keys */

static bool topic_in(char *const *list, size_t n, const char *t)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], t) == 0) {
            return true;
        }
    }
    return false;
}

/* mqtt.topics and mqtt.qos: unsubscribes the removed filters, points the
 * client at nc's list (used by every later connect) and subscribes the
 * added ones (all, when the QoS changed). oc is still alive here: the
 * removed[] strings are its. Returns the number of filters added plus
 * removed; *failed when the subscribe did not start. */
static size_t apply_topics(const struct sg_reload_targets *t, const struct sg_config *oc,
                           struct sg_config *nc, bool *failed)
{
    char *added[SG_CONFIG_MAX_TOPICS], *removed[SG_CONFIG_MAX_TOPICS];
    size_t nadd = 0, nrem = 0;
    bool qos_changed = oc->mqtt.qos != nc->mqtt.qos;

    for (size_t i = 0; i < nc->mqtt.ntopics; i++) {
        if (qos_changed || !topic_in(oc->mqtt.topics, oc->mqtt.ntopics, nc->mqtt.topics[i])) {
            added[nadd++] = nc->mqtt.topics[i];
        }
    }
    for (size_t i = 0; i < oc->mqtt.ntopics; i++) {
        if (!topic_in(nc->mqtt.topics, nc->mqtt.ntopics, oc->mqtt.topics[i])) {
            removed[nrem++] = oc->mqtt.topics[i];
        }
    }
    /* The client borrows the list: it must point at nc's before oc goes,
     * even when the filters are the same strings. */
    if (t->ingest != NULL) {
        sg_ingest_set_topics(t->ingest, nc->mqtt.topics, nc->mqtt.ntopics, nc->mqtt.qos);
    }
    if (nadd == 0 && nrem == 0) {
        return 0;
    }
    for (size_t i = 0; i < nadd; i++) {
        sg_log(SG_LOG_INFO, "config", "SIGHUP: mqtt.topics: subscribing %s (qos %d)", added[i],
               nc->mqtt.qos);
    }
    for (size_t i = 0; i < nrem; i++) {
        sg_log(SG_LOG_INFO, "config", "SIGHUP: mqtt.topics: unsubscribing %s", removed[i]);
    }
    bool live = t->ingest != NULL && t->mqtt_live;
    if (live && nrem > 0 && sg_ingest_unsubscribe(t->ingest, removed, nrem) != 0) {
        sg_log(SG_LOG_WARN, "ingest", "unsubscribe failed to start; retried at the next "
                                      "connect");
        sg_ingest_forget_topics(t->ingest, removed, nrem);
    } else if (!live && nrem > 0 && t->ingest != NULL) {
        /* A persistent session keeps them at the broker: unsubscribe them
         * at the next connect, before subscribing the new list. */
        sg_ingest_forget_topics(t->ingest, removed, nrem);
    }
    if (live && nadd > 0 && sg_ingest_subscribe_topics(t->ingest, added, nadd) != 0) {
        sg_log(SG_LOG_WARN, "ingest", "subscribe failed to start; reconnecting");
        *failed = true;
    } else if (!live) {
        sg_log(SG_LOG_INFO, "config", "SIGHUP: not connected; the new topics apply on connect");
    }
    return nadd + nrem;
}

static bool changed(const struct sg_config_change *ch, size_t n, const char *prefix)
{
    size_t len = strlen(prefix);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(ch[i].key->name, prefix, len) == 0) {
            return true;
        }
    }
    return false;
}

/* Hands the live values of nc to the modules that copied them at start. */
static void apply(const struct sg_reload_targets *t, const struct sg_config *nc,
                  const struct sg_config_change *ch, size_t n)
{
    if (t->dec != NULL &&
        (changed(ch, n, "validation.") || changed(ch, n, "limits.max_readings_per_batch"))) {
        sg_decoder_set_limits(t->dec, nc->limits.max_readings_per_batch,
                              nc->validation.max_past_ms, nc->validation.max_future_ms);
    }
    if (t->eng != NULL && changed(ch, n, "limits.series_idle_ms")) {
        sg_rollup_set_series_idle(t->eng, nc->limits.series_idle_ms);
    }
    if (t->spool != NULL && changed(ch, n, "spool.max_")) {
        sg_spool_set_bounds(t->spool, nc->spool.max_bytes, nc->spool.max_batches);
    }
    if (t->fwd != NULL &&
        (changed(ch, n, "backend.timeout_ms") || changed(ch, n, "backend.max_inflight") ||
         changed(ch, n, "backend.backoff_") || changed(ch, n, "backend.retry_after_max_ms"))) {
        struct sg_forward_opts fo = {
            .timeout_ms = nc->backend.timeout_ms,
            .max_inflight = (uint32_t)nc->backend.max_inflight,
            .backoff_min_ms = nc->backend.backoff_min_ms,
            .backoff_max_ms = nc->backend.backoff_max_ms,
            .retry_after_max_ms = nc->backend.retry_after_max_ms,
        };
        if (sg_forward_set_limits(t->fwd, &fo) != 0) {
            /* The config checks make this unreachable; say so if not. */
            sg_log(SG_LOG_ERROR, "config", "SIGHUP: the forwarder refused the new backend "
                                           "limits; it keeps the old ones");
        }
    }
}

enum sg_reload_outcome sg_reload(struct sg_config **cfg, const struct sg_reload_targets *t)
{
    struct sg_config *oc = *cfg;
    struct sg_config *nc = NULL;
    struct sg_config_errors errs = {0};
    struct sg_config_change ch[MAX_CHANGES];
    size_t n = 0;
    char err[4096];
    const char *path = oc->path;

    if (strcmp(path, "<defaults>") == 0) {
        sg_log(SG_LOG_INFO, "config", "SIGHUP: running on embedded defaults; nothing to reload");
        return SG_RELOAD_NOTHING;
    }
    if (sg_config_load_errs(&nc, path, &errs) != 0) {
        sg_config_errors_format(&errs, err, sizeof err);
        sg_log(SG_LOG_ERROR, "config", "SIGHUP: keeping the running configuration: %s", err);
        sg_config_errors_free(&errs);
        return SG_RELOAD_REFUSED;
    }
    if (sg_config_reload_merge(oc, nc, ch, MAX_CHANGES, &n, &errs) != 0) {
        sg_config_errors_format(&errs, err, sizeof err);
        sg_log(SG_LOG_ERROR, "config",
               "SIGHUP: keeping the running configuration: %s (with the restart-only keys at "
               "their running values)",
               err);
        sg_config_errors_free(&errs);
        sg_config_free(nc);
        return SG_RELOAD_REFUSED;
    }
    sg_config_errors_free(&errs);

    size_t applied = 0, restart = 0;
    for (size_t i = 0; i < n && i < MAX_CHANGES; i++) {
        const struct sg_config_key *k = ch[i].key;
        if (k->live) {
            applied++;
            sg_log(SG_LOG_INFO, "config", "SIGHUP: %s: %s -> %s applied (%s)", k->name,
                   ch[i].before, ch[i].after, k->note);
        } else {
            restart++;
            sg_log(SG_LOG_WARN, "config",
                   "SIGHUP: %s: %s in the file needs restart; keeping %s (%s)", k->name,
                   ch[i].after, ch[i].before, k->note);
        }
    }
    bool failed = false;
    size_t topic_changes = apply_topics(t, oc, nc, &failed);
    apply(t, nc, ch, n < MAX_CHANGES ? n : MAX_CHANGES);

    *cfg = nc;
    sg_config_free(oc);
    int lvl = sg_log_level_parse(nc->log_level);
    if (lvl >= 0) {
        sg_log_min_level = lvl;
    }
    sg_log_json = strcmp(nc->log_format, "json") == 0;
    sg_log(SG_LOG_INFO, "config",
           "SIGHUP: reloaded %s (topics %zu, %zu change(s); %zu key(s) applied, %zu need "
           "restart)",
           nc->path, nc->mqtt.ntopics, topic_changes, applied, restart);
    return failed ? SG_RELOAD_RESUBSCRIBE : SG_RELOAD_DONE;
}

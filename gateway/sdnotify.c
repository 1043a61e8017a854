/*
 * sdnotify: service-manager notifications and the watchdog ping (see
 * sdnotify.h for what is sent when).
 *
 * Invariants: READY=1 goes out at most once outside a reload, never after
 * STOPPING=1; the watchdog timer runs on the loop, so the pings are a proof
 * that the loop turns, not merely that the process exists. A failed send is
 * logged once and otherwise ignored: the gateway's work does not depend on
 * the service manager hearing from it.
 * Thread: the loop thread only.
 */
#include "sdnotify.h"

#include "common.h"
#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

struct sg_sdnotify {
    uv_timer_t watchdog;        /* WATCHDOG=1 every interval_ms; runs only if enabled */
    uint64_t interval_ms;       /* WATCHDOG_USEC / 2 in ms; 0 = no watchdog asked for */
    bool ready_sent;            /* READY=1 went out (start-up finished) */
    bool reloading;             /* RELOADING=1 went out, READY=1 not yet again */
    bool stopping;              /* STOPPING=1 went out */
    bool send_failed;           /* a send failed and was logged; later failures are not */
    void (*close_cb)(void *arg);
    void *close_arg;
};

bool sg_sdnotify_supported(void)
{
#ifdef SG_HAVE_SYSTEMD
    return true;
#else
    return false;
#endif
}

/* Sends one notification (newline-separated KEY=VALUE assignments). */
static void send_state(struct sg_sdnotify *sd, const char *state)
{
#ifdef SG_HAVE_SYSTEMD
    /* unset_environment = 0: every later call needs NOTIFY_SOCKET too. */
    int rc = sd_notify(0, state);
    if (rc < 0 && !sd->send_failed) {
        sd->send_failed = true;
        sg_log(SG_LOG_WARN, "sdnotify", "cannot notify the service manager: %s (%.*s)",
               strerror(-rc), (int)strcspn(state, "\n"), state);
    }
#else
    (void)sd;
    (void)state;
#endif
}

#ifdef SG_HAVE_SYSTEMD
static void on_watchdog(uv_timer_t *t)
{
    send_state(t->data, "WATCHDOG=1");
}
#endif

int sg_sdnotify_new(struct sg_sdnotify **out, uv_loop_t *loop)
{
    struct sg_sdnotify *sd = sg_xcalloc(1, sizeof *sd);
    uv_timer_init(loop, &sd->watchdog);
    sd->watchdog.data = sd;
#ifdef SG_HAVE_SYSTEMD
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID is unset or
     * names this process, so a child that inherited the variables of its
     * parent's watchdog does not ping in its name. */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        sd->interval_ms = usec / 2000u > 0 ? usec / 2000u : 1u;
        uv_timer_start(&sd->watchdog, on_watchdog, sd->interval_ms, sd->interval_ms);
        sg_log(SG_LOG_INFO, "sdnotify", "watchdog: WATCHDOG=1 every %llu ms (limit %llu ms)",
               (unsigned long long)sd->interval_ms, (unsigned long long)(usec / 1000u));
    }
#else
    if (getenv("NOTIFY_SOCKET") != NULL) {
        sg_log(SG_LOG_WARN, "sdnotify",
               "NOTIFY_SOCKET is set but this build has no libsystemd: no READY=1 or watchdog "
               "pings will be sent; use the Type=simple unit this build generated");
    }
#endif
    *out = sd;
    return 0;
}

/* Formats "PREFIX" + "STATUS=<fmt...>" into buf, the status part cut at
 * 255 bytes and at the first newline (a newline would start a new
 * assignment). */
__attribute__((format(printf, 4, 0)))
static void format_status(char *buf, size_t cap, const char *prefix, const char *fmt, va_list ap)
{
    int n = snprintf(buf, cap, "%sSTATUS=", prefix);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        return;
    }
    size_t room = cap - (size_t)n;
    if (room > 256) {
        room = 256;
    }
    vsnprintf(buf + n, room, fmt, ap);
    buf[n + (int)strcspn(buf + n, "\n")] = '\0';
}

void sg_sdnotify_ready(struct sg_sdnotify *sd, const char *fmt, ...)
{
    if (sd == NULL || sd->stopping) {
        return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    format_status(buf, sizeof buf, sd->ready_sent ? "" : "READY=1\n", fmt, ap);
    va_end(ap);
    send_state(sd, buf);
    sd->ready_sent = true;
}

void sg_sdnotify_status(struct sg_sdnotify *sd, const char *fmt, ...)
{
    if (sd == NULL) {
        return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    format_status(buf, sizeof buf, "", fmt, ap);
    va_end(ap);
    send_state(sd, buf);
}

void sg_sdnotify_reloading(struct sg_sdnotify *sd)
{
    if (sd == NULL || !sd->ready_sent || sd->stopping) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char buf[128];
    snprintf(buf, sizeof buf, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
    send_state(sd, buf);
    sd->reloading = true;
}

void sg_sdnotify_reloaded(struct sg_sdnotify *sd)
{
    if (sd == NULL || !sd->reloading) {
        return;
    }
    sd->reloading = false;
    if (!sd->stopping) {
        send_state(sd, "READY=1\nSTATUS=running; configuration reloaded");
    }
}

void sg_sdnotify_stopping(struct sg_sdnotify *sd)
{
    if (sd == NULL || sd->stopping) {
        return;
    }
    sd->stopping = true;
    send_state(sd, "STOPPING=1\nSTATUS=stopping: emitting open windows, delivering the spool");
}

static void on_closed(uv_handle_t *h)
{
    struct sg_sdnotify *sd = h->data;
    if (sd->close_cb != NULL) {
        sd->close_cb(sd->close_arg);
    }
}

void sg_sdnotify_close(struct sg_sdnotify *sd, void (*cb)(void *arg), void *arg)
{
    if (sd == NULL) {
        return;
    }
    sd->close_cb = cb;
    sd->close_arg = arg;
    uv_timer_stop(&sd->watchdog);
    uv_close((uv_handle_t *)&sd->watchdog, on_closed);
}

void sg_sdnotify_free(struct sg_sdnotify *sd)
{
    free(sd);
}

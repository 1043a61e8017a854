/*
 * session: the MQTT session state machine. One function, sg_session_on,
 * takes an event and returns the actions for the gateway to perform; the
 * gateway owns Paho, the timer, the metrics and systemd, this file owns the
 * decisions (see the diagram in session.h).
 *
 * Invariants: a retry timer is armed only on entering WAIT_RETRY and only
 * TIMER leaves it; every failure, refusal, loss or requested reconnect of a
 * live or pending connection counts one backoff failure, and only an
 * accepted SUBSCRIBE resets the count; READY is asked for once, at the first
 * accepted SUBSCRIBE; a reconnect is counted for every accepted CONNACK
 * after the first, a lost broker session for every such CONNACK without one
 * (persistent sessions only); the gauge is marked only when it changes, and
 * kept through stop as it was. Events that do not fit the state are stale
 * answers about a connection already given up, and are ignored. Pure; loop
 * thread.
 */
#include "session.h"

#include <stddef.h>

void sg_session_init(struct sg_session *s, bool clean_session, uint64_t min_ms, uint64_t max_ms,
                     uint64_t seed)
{
    s->state = SG_SESSION_IDLE;
    s->clean_session = clean_session;
    s->ever_connected = false;
    s->connected = false;
    s->ready_sent = false;
    /* At least min/2 between attempts, so a flapping broker is not hammered. */
    sg_backoff_init(&s->backoff, min_ms, max_ms, min_ms / 2, seed);
}

void sg_session_set_backoff(struct sg_session *s, uint64_t min_ms, uint64_t max_ms)
{
    sg_backoff_set_limits(&s->backoff, min_ms, max_ms, min_ms / 2);
}

/* The connection (made or in the making) is given up: wait, then retry. */
static void retry_later(struct sg_session *s, struct sg_session_actions *a)
{
    s->state = SG_SESSION_WAIT_RETRY;
    if (s->connected) {
        s->connected = false;
        a->bits |= SG_SESSION_DO_MARK_DISCONNECTED;
    }
    a->bits |= SG_SESSION_DO_ARM_TIMER;
    a->delay_ms = sg_backoff_fail(&s->backoff);
    a->attempt = s->backoff.failures;
}

static bool has_connection(enum sg_session_state st)
{
    return st == SG_SESSION_CONNECTING || st == SG_SESSION_SUBSCRIBING || st == SG_SESSION_UP;
}

struct sg_session_actions sg_session_on(struct sg_session *s, enum sg_session_event ev, int arg)
{
    struct sg_session_actions a = {0, 0, 0};
    enum sg_session_state st = s->state;

    if (st == SG_SESSION_STOPPED) {
        return a;
    }
    switch (ev) {
    case SG_SESSION_EV_START:
        if (st == SG_SESSION_IDLE) {
            s->state = SG_SESSION_CONNECTING;
            a.bits = SG_SESSION_DO_CONNECT;
        }
        break;
    case SG_SESSION_EV_CONNECT_OK:
        if (st != SG_SESSION_CONNECTING) {
            break;
        }
        if (s->ever_connected) {
            a.bits |= SG_SESSION_DO_COUNT_RECONNECT;
            if (arg == 0 && !s->clean_session) {
                a.bits |= SG_SESSION_DO_COUNT_SESSION_LOST;
            }
        }
        s->ever_connected = true;
        s->state = SG_SESSION_SUBSCRIBING;
        a.bits |= SG_SESSION_DO_SUBSCRIBE;
        break;
    case SG_SESSION_EV_CONNECT_FAILED:
        if (st == SG_SESSION_CONNECTING) {
            retry_later(s, &a);
        }
        break;
    case SG_SESSION_EV_SUBACK_OK:
        /* In UP too: a reload subscribes added topics on the live session. */
        if (st != SG_SESSION_SUBSCRIBING && st != SG_SESSION_UP) {
            break;
        }
        s->state = SG_SESSION_UP;
        sg_backoff_reset(&s->backoff);
        if (!s->connected) {
            s->connected = true;
            a.bits |= SG_SESSION_DO_MARK_CONNECTED;
        }
        if (!s->ready_sent) {
            s->ready_sent = true;
            a.bits |= SG_SESSION_DO_NOTIFY_READY;
        }
        a.bits |= SG_SESSION_DO_REPORT_UP;
        break;
    case SG_SESSION_EV_SUBACK_FAILED:
        /* Subscribed to less than the configuration says: start over. */
        if (st == SG_SESSION_SUBSCRIBING || st == SG_SESSION_UP) {
            a.bits |= SG_SESSION_DO_DISCONNECT;
            retry_later(s, &a);
        }
        break;
    case SG_SESSION_EV_LOST:
        if (has_connection(st)) {
            retry_later(s, &a);
        }
        break;
    case SG_SESSION_EV_TIMER:
        if (st == SG_SESSION_WAIT_RETRY) {
            s->state = SG_SESSION_CONNECTING;
            a.bits = SG_SESSION_DO_CONNECT;
        }
        break;
    case SG_SESSION_EV_RECONNECT:
        if (has_connection(st)) {
            a.bits |= SG_SESSION_DO_DISCONNECT;
            retry_later(s, &a);
        }
        break;
    case SG_SESSION_EV_STOP:
        s->state = SG_SESSION_STOPPED;
        a.bits = SG_SESSION_DO_STOP_TIMER;
        if (has_connection(st)) {
            a.bits |= SG_SESSION_DO_DISCONNECT;
        }
        break;
    }
    return a;
}

enum sg_session_state sg_session_state(const struct sg_session *s)
{
    return s->state;
}

bool sg_session_live(const struct sg_session *s)
{
    return s->state == SG_SESSION_SUBSCRIBING || s->state == SG_SESSION_UP;
}

uint32_t sg_session_failures(const struct sg_session *s)
{
    return s->backoff.failures;
}

const char *sg_session_state_name(enum sg_session_state st)
{
    switch (st) {
    case SG_SESSION_IDLE:
        return "idle";
    case SG_SESSION_CONNECTING:
        return "connecting";
    case SG_SESSION_SUBSCRIBING:
        return "subscribing";
    case SG_SESSION_UP:
        return "up";
    case SG_SESSION_WAIT_RETRY:
        return "wait-retry";
    case SG_SESSION_STOPPED:
        return "stopped";
    }
    return "?";
}

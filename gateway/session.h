/*
 * session: the MQTT session state machine (connect, subscribe, reconnect
 * with backoff, stop), pure. The caller feeds it events (Paho's answers as
 * they come out of the inbox, its retry timer, a stop) and performs the
 * actions it returns: start a connect, subscribe, disconnect, arm or stop
 * the retry timer, set the connected gauge, count reconnects and session
 * losses, tell systemd READY=1. No libuv, Paho or clock inside; the jitter
 * source of the backoff is injectable. Loop thread.
 *
 *   IDLE --start--> CONNECTING --connect ok--> SUBSCRIBING --suback ok--> UP
 *   CONNECTING/SUBSCRIBING/UP --failure, lost, reconnect--> WAIT_RETRY
 *   WAIT_RETRY --timer--> CONNECTING;  any --stop--> STOPPED (final)
 */
#ifndef SG_SESSION_H
#define SG_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "backoff.h"

enum sg_session_state {
    SG_SESSION_IDLE,        /* not started */
    SG_SESSION_CONNECTING,  /* a connect is in flight */
    SG_SESSION_SUBSCRIBING, /* connected, SUBSCRIBE for the topic list in flight */
    SG_SESSION_UP,          /* connected and subscribed: readings flow */
    SG_SESSION_WAIT_RETRY,  /* the retry timer runs; no connection */
    SG_SESSION_STOPPED,     /* stop requested: every later event is ignored */
};

enum sg_session_event {
    SG_SESSION_EV_START,          /* begin connecting (once, at start-up) */
    SG_SESSION_EV_CONNECT_OK,     /* CONNACK accepted; arg: session present (0/1) */
    SG_SESSION_EV_CONNECT_FAILED, /* refused, unreachable, or could not be started */
    SG_SESSION_EV_SUBACK_OK,      /* a SUBSCRIBE was granted */
    SG_SESSION_EV_SUBACK_FAILED,  /* a SUBSCRIBE was refused or could not be started */
    SG_SESSION_EV_LOST,           /* the connection dropped */
    SG_SESSION_EV_TIMER,          /* the retry timer fired */
    SG_SESSION_EV_RECONNECT,      /* drop the connection and start over (reload) */
    SG_SESSION_EV_STOP,           /* shutdown */
};

/* What the caller does, in this order: counts, gauge, disconnect, timers,
 * connect/subscribe, report/systemd. Several bits can be set at once. */
enum {
    SG_SESSION_DO_COUNT_RECONNECT = 1u << 0,    /* mqtt_reconnects++ */
    SG_SESSION_DO_COUNT_SESSION_LOST = 1u << 1, /* mqtt_session_lost++ (and warn) */
    SG_SESSION_DO_MARK_CONNECTED = 1u << 2,     /* gauge 1: connected and subscribed */
    SG_SESSION_DO_MARK_DISCONNECTED = 1u << 3,  /* gauge 0 */
    SG_SESSION_DO_DISCONNECT = 1u << 4,         /* drop the connection we have or are making */
    SG_SESSION_DO_STOP_TIMER = 1u << 5,         /* cancel the retry timer */
    SG_SESSION_DO_ARM_TIMER = 1u << 6,          /* (re)start the retry timer: delay_ms */
    SG_SESSION_DO_CONNECT = 1u << 7,            /* start a connect */
    SG_SESSION_DO_SUBSCRIBE = 1u << 8,          /* subscribe the topic list */
    SG_SESSION_DO_REPORT_UP = 1u << 9,          /* every accepted SUBSCRIBE: log it, STATUS= up */
    SG_SESSION_DO_NOTIFY_READY = 1u << 10,      /* READY=1 with that STATUS: the first one only */
};

struct sg_session_actions {
    unsigned bits;     /* SG_SESSION_DO_*; 0 = nothing (the event was ignored) */
    uint64_t delay_ms; /* with DO_ARM_TIMER: the reconnect delay */
    uint32_t attempt;  /* with DO_ARM_TIMER: consecutive failures, 1 for the first */
};

/* A plain value embedded in its owner; read it through the functions.
 * Tests fix the jitter with sg_backoff_set_rnd(&s->backoff, ...). */
struct sg_session {
    enum sg_session_state state;
    bool clean_session;        /* mqtt.clean_session: no session to lose */
    bool ever_connected;       /* a CONNACK was accepted before */
    bool connected;            /* the gauge as last marked */
    bool ready_sent;           /* DO_NOTIFY_READY went out */
    struct sg_backoff backoff; /* reconnect delays; reset by each accepted SUBSCRIBE */
};

/* IDLE, nothing counted; the reconnect delay grows from min_ms to max_ms
 * (mqtt.reconnect_*_ms) with full jitter above min_ms / 2, drawn from a
 * generator seeded with seed. Cannot fail. */
void sg_session_init(struct sg_session *s, bool clean_session, uint64_t min_ms, uint64_t max_ms,
                     uint64_t seed);

/* Reload: the reconnect limits for the next delay (failure count kept). */
void sg_session_set_backoff(struct sg_session *s, uint64_t min_ms, uint64_t max_ms);

/* Feeds one event; returns what to do. Events that do not apply in the
 * current state (late answers about a connection already given up, a stale
 * timer, anything after stop) change nothing and return no action. */
struct sg_session_actions sg_session_on(struct sg_session *s, enum sg_session_event ev, int arg);

enum sg_session_state sg_session_state(const struct sg_session *s);

/* A connection is established (SUBSCRIBING or UP): subscriptions can be
 * changed live. */
bool sg_session_live(const struct sg_session *s);

/* Consecutive failures since the last accepted SUBSCRIBE. */
uint32_t sg_session_failures(const struct sg_session *s);

/* A static name for a state ("up", "wait-retry", ...), for logs and tests. */
const char *sg_session_state_name(enum sg_session_state st);

#endif

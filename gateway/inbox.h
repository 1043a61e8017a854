/*
 * inbox: the bounded hand-off from Paho's threads to the libuv loop.
 *
 * Producers (any thread) append a record {type, arg, arrival_ms, topic,
 * payload} to a byte buffer under a mutex and wake the loop with
 * uv_async_send only when no wake-up is owed to the loop yet (the buffer
 * went from empty to non-empty). The loop swaps the whole buffer out under
 * the lock and handles every record without it, so the loop pays one lock
 * per wake-up, not per message, and no malloc in steady state (the two
 * buffers keep their capacity).
 *
 * Coalescing (sg_inbox_set_coalesce, off by default): after a wake-up that
 * found records, the loop does not ask to be woken per message again but
 * drains once more after coalesce_ms (a one-shot timer), and again while
 * each drain finds records; producers send nothing meanwhile. The first
 * drain that finds the inbox empty stops the timer and goes back to
 * wake-on-push, so an idle inbox has no timer running. A record then waits
 * at most coalesce_ms (+ the loop's 1 ms timer granularity) longer than
 * without coalescing; in exchange a steady stream wakes the loop about once
 * per coalesce_ms instead of once per message, and the producer skips the
 * eventfd write.
 *
 * Back-pressure: when the buffer holds cap_bytes, a producer waits (up to
 * wait_ms) for the loop to drain it, which stalls Paho's receive thread and
 * pushes back through TCP to the broker. If the loop has not drained by
 * then, the record is appended anyway (counted in overflows) rather than
 * dropped: Paho acknowledges a QoS 1 message when the callback returns, so
 * refusing it would lose it, and waiting forever could deadlock a loop that
 * is itself waiting on a Paho call.
 */
#ifndef SG_INBOX_H
#define SG_INBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

enum sg_inbox_type {
    SG_INBOX_MESSAGE = 0,      /* an MQTT PUBLISH: topic + payload */
    SG_INBOX_CONNECTED,        /* arg = session present (0/1) */
    SG_INBOX_CONNECT_FAILED,   /* arg = Paho return code */
    SG_INBOX_SUBSCRIBED,       /* arg = 0 ok, else failure code */
    SG_INBOX_CONNECTION_LOST,
    SG_INBOX_DISCONNECTED,     /* a requested disconnect finished */
};

struct sg_inmsg {
    int type;                  /* enum sg_inbox_type */
    int arg;
    uint64_t arrival_ms;       /* gateway wall clock when the producer got it */
    const char *topic;         /* not NUL-terminated; valid during the callback */
    size_t topic_len;
    const uint8_t *payload;    /* valid during the callback */
    size_t payload_len;
};

/* Loop thread: handles one record. */
typedef void (*sg_inbox_cb)(void *ctx, const struct sg_inmsg *m);

struct sg_inbox {
    uv_async_t async;          /* must stay first-class member: uv_close'd by sg_inbox_close */
    uv_timer_t timer;          /* coalescing: the next drain (loop thread only) */
    uint64_t coalesce_ms;      /* 0 = off */
    bool armed;                /* under mu: a wake-up (async or timer) is owed to the loop,
                                * so producers need not send one */
    int open_handles;          /* closing: handles not yet closed */
    pthread_mutex_t mu;
    pthread_cond_t not_full;
    struct sg_buf fill;        /* producers append here (under mu) */
    struct sg_buf drain;       /* the loop reads here (no lock) */
    size_t fill_count;         /* records in fill */
    size_t cap_bytes;
    uint64_t wait_ms;
    bool closing;
    sg_inbox_cb cb;
    void *ctx;
    void (*close_cb)(void *arg);
    void *close_arg;
    /* Written by producers, read by the loop for metrics. */
    _Atomic uint64_t depth;        /* records waiting */
    _Atomic uint64_t bytes;        /* bytes waiting */
    _Atomic uint64_t wait_us;      /* total producer time blocked on a full inbox */
    _Atomic uint64_t overflows;    /* records appended over cap after wait_ms */
};

/* Initialises ib on loop. cap_bytes bounds the waiting bytes, wait_ms the
 * producer's wait when full. Returns 0 or SG_EIO (uv_async_init failed). */
int sg_inbox_init(struct sg_inbox *ib, uv_loop_t *loop, size_t cap_bytes, uint64_t wait_ms,
                  sg_inbox_cb cb, void *ctx);

/* Loop thread, before producers start (or any time on the loop): after a
 * wake-up that found records, drain again after delay_ms instead of
 * waking per message (see the top of this file). 0 = off (the default). */
void sg_inbox_set_coalesce(struct sg_inbox *ib, uint64_t delay_ms);

/* Any thread. Copies topic and payload. Returns 0, or SG_EINVAL after
 * sg_inbox_close began (nothing appended). Never call while holding a lock
 * that the loop's callback takes. */
int sg_inbox_push(struct sg_inbox *ib, int type, int arg, const char *topic, size_t topic_len,
                  const void *payload, size_t payload_len);

/* The same with the arrival time given (the one written to the journal, so
 * a replay validates the reading against the same clock). */
int sg_inbox_push_at(struct sg_inbox *ib, int type, int arg, uint64_t arrival_ms,
                     const char *topic, size_t topic_len, const void *payload,
                     size_t payload_len);

/* Loop thread: handles everything waiting now. Returns records handled. */
size_t sg_inbox_drain(struct sg_inbox *ib);

/* Loop thread: drains what is left, refuses further pushes, closes the
 * async handle; cb(arg) runs when it is closed. Call only after every
 * producer is gone (Paho client destroyed). */
void sg_inbox_close(struct sg_inbox *ib, void (*cb)(void *arg), void *arg);

#endif

/*
 * inbox: Paho threads → loop hand-off. See inbox.h for the design.
 * Record layout in the buffers (native endianness, in-process only):
 *   struct rec { uint32 type; int32 arg; uint64 arrival_ms; uint32 topic_len;
 *                uint32 payload_len; } then topic bytes, payload bytes, padding to 8.
 */
#include "inbox.h"
#include "common.h"

#include <errno.h>
#include <string.h>
#include <time.h>

struct rec {
    uint32_t type;
    int32_t arg;
    uint64_t arrival_ms;
    uint32_t topic_len;
    uint32_t payload_len;
};

static size_t rec_size(size_t tlen, size_t plen)
{
    return (sizeof(struct rec) + tlen + plen + 7u) & ~(size_t)7u;
}

static size_t drain_once(struct sg_inbox *ib, bool coalesce);

static void on_timer(uv_timer_t *h);

/* One swap per wake-up, so a producer as fast as the loop cannot keep the
 * loop here forever (timers, curl, signals and /metrics run in between).
 * Without coalescing, the swap cleared `armed`, so a record pushed since
 * has sent a wake-up itself; sending again costs nothing and does not
 * depend on that. With coalescing, a drain that found records left `armed`
 * set and the timer brings the next drain. */
static void drain_and_rearm(struct sg_inbox *ib)
{
    bool coalesce = ib->coalesce_ms > 0;
    size_t n = drain_once(ib, coalesce);
    if (coalesce) {
        if (n > 0) {
            uv_timer_start(&ib->timer, on_timer, ib->coalesce_ms, 0);
        }
        return;
    }
    pthread_mutex_lock(&ib->mu);
    bool more = ib->fill_count > 0 && !ib->closing;
    pthread_mutex_unlock(&ib->mu);
    if (more) {
        uv_async_send(&ib->async);
    }
}

static void on_async(uv_async_t *h)
{
    drain_and_rearm(h->data);
}

static void on_timer(uv_timer_t *h)
{
    drain_and_rearm(h->data);
}

void sg_inbox_set_coalesce(struct sg_inbox *ib, uint64_t delay_ms)
{
    ib->coalesce_ms = delay_ms;
    if (delay_ms == 0 && uv_is_active((uv_handle_t *)&ib->timer)) {
        /* The pending drain now, which also clears armed when it is empty. */
        uv_timer_stop(&ib->timer);
        uv_async_send(&ib->async);
    }
}

int sg_inbox_init(struct sg_inbox *ib, uv_loop_t *loop, size_t cap_bytes, uint64_t wait_ms,
                  sg_inbox_cb cb, void *ctx)
{
    memset(ib, 0, sizeof *ib);
    ib->cap_bytes = cap_bytes;
    ib->wait_ms = wait_ms;
    ib->cb = cb;
    ib->ctx = ctx;
    pthread_mutex_init(&ib->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ib->not_full, &ca);
    pthread_condattr_destroy(&ca);
    if (uv_async_init(loop, &ib->async, on_async) != 0) {
        pthread_cond_destroy(&ib->not_full);
        pthread_mutex_destroy(&ib->mu);
        return SG_EIO;
    }
    ib->async.data = ib;
    uv_timer_init(loop, &ib->timer); /* cannot fail on an initialised loop */
    ib->timer.data = ib;
    return 0;
}

int sg_inbox_push(struct sg_inbox *ib, int type, int arg, const char *topic, size_t topic_len,
                  const void *payload, size_t payload_len)
{
    return sg_inbox_push_at(ib, type, arg, sg_now_ms(), topic, topic_len, payload, payload_len);
}

int sg_inbox_push_at(struct sg_inbox *ib, int type, int arg, uint64_t arrival_ms,
                     const char *topic, size_t topic_len, const void *payload,
                     size_t payload_len)
{
    if (topic_len > UINT32_MAX || payload_len > UINT32_MAX) {
        return SG_EINVAL;
    }
    size_t need = rec_size(topic_len, payload_len);
    struct rec h = {(uint32_t)type, arg, arrival_ms, (uint32_t)topic_len,
                    (uint32_t)payload_len};

    pthread_mutex_lock(&ib->mu);
    if (ib->closing) {
        pthread_mutex_unlock(&ib->mu);
        return SG_EINVAL;
    }
    if (ib->fill.len > 0 && ib->fill.len + need > ib->cap_bytes) {
        /* Full: wait for the loop, with a deadline (see inbox.h). */
        struct timespec t0, deadline;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        deadline = t0;
        deadline.tv_sec += (time_t)(ib->wait_ms / 1000);
        deadline.tv_nsec += (long)(ib->wait_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (ib->fill.len > 0 && ib->fill.len + need > ib->cap_bytes && !ib->closing) {
            if (pthread_cond_timedwait(&ib->not_full, &ib->mu, &deadline) == ETIMEDOUT) {
                break;
            }
        }
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        uint64_t us = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000u +
                      (uint64_t)((t1.tv_nsec - t0.tv_nsec) / 1000);
        atomic_fetch_add(&ib->wait_us, us);
        if (ib->fill.len > 0 && ib->fill.len + need > ib->cap_bytes) {
            atomic_fetch_add(&ib->overflows, 1);
        }
    }
    bool wake = !ib->armed;
    ib->armed = true;
    sg_buf_reserve(&ib->fill, need);
    char *p = ib->fill.data + ib->fill.len;
    memcpy(p, &h, sizeof h);
    if (topic_len) {
        memcpy(p + sizeof h, topic, topic_len);
    }
    if (payload_len) {
        memcpy(p + sizeof h + topic_len, payload, payload_len);
    }
    ib->fill.len += need;
    ib->fill_count++;
    atomic_fetch_add(&ib->depth, 1);
    atomic_fetch_add(&ib->bytes, need);
    pthread_mutex_unlock(&ib->mu);

    /* Wake only when no wake-up is owed yet (empty -> non-empty, or the
     * first push after a coalescing drain found nothing); sends coalesce
     * and the loop drains everything it finds. Done after unlocking. */
    if (wake) {
        uv_async_send(&ib->async);
    }
    return 0;
}

size_t sg_inbox_drain(struct sg_inbox *ib)
{
    size_t handled = 0;
    size_t n;
    while ((n = drain_once(ib, false)) > 0) {
        handled += n;
    }
    return handled;
}

/* Swaps the buffers once and handles every record taken. The swap clears
 * `armed` (the next push sends a wake-up) unless coalesce is set and
 * records were taken: then the caller arms the timer for the next drain. */
static size_t drain_once(struct sg_inbox *ib, bool coalesce)
{
    size_t handled = 0;
    {
        pthread_mutex_lock(&ib->mu);
        struct sg_buf tmp = ib->drain;
        ib->drain = ib->fill;
        ib->fill = tmp;
        sg_buf_reset(&ib->fill);
        size_t n = ib->fill_count;
        ib->fill_count = 0;
        ib->armed = coalesce && n > 0;
        pthread_cond_broadcast(&ib->not_full);
        pthread_mutex_unlock(&ib->mu);
        if (n == 0) {
            return 0;
        }
        size_t off = 0;
        while (off < ib->drain.len) {
            struct rec h;
            memcpy(&h, ib->drain.data + off, sizeof h);
            struct sg_inmsg m = {
                .type = (int)h.type,
                .arg = h.arg,
                .arrival_ms = h.arrival_ms,
                .topic = ib->drain.data + off + sizeof h,
                .topic_len = h.topic_len,
                .payload = (const uint8_t *)ib->drain.data + off + sizeof h + h.topic_len,
                .payload_len = h.payload_len,
            };
            size_t sz = rec_size(h.topic_len, h.payload_len);
            off += sz;
            atomic_fetch_sub(&ib->depth, 1);
            atomic_fetch_sub(&ib->bytes, sz);
            ib->cb(ib->ctx, &m);
            handled++;
        }
        sg_buf_reset(&ib->drain);
    }
    return handled;
}

static void on_closed(uv_handle_t *h)
{
    struct sg_inbox *ib = h->data;
    if (--ib->open_handles > 0) {
        return;
    }
    sg_buf_free(&ib->fill);
    sg_buf_free(&ib->drain);
    pthread_cond_destroy(&ib->not_full);
    pthread_mutex_destroy(&ib->mu);
    if (ib->close_cb) {
        ib->close_cb(ib->close_arg);
    }
}

void sg_inbox_close(struct sg_inbox *ib, void (*cb)(void *arg), void *arg)
{
    sg_inbox_drain(ib);
    pthread_mutex_lock(&ib->mu);
    ib->closing = true;
    pthread_cond_broadcast(&ib->not_full);
    pthread_mutex_unlock(&ib->mu);
    sg_inbox_drain(ib);
    ib->close_cb = cb;
    ib->close_arg = arg;
    ib->open_handles = 2;
    uv_close((uv_handle_t *)&ib->timer, on_closed);
    uv_close((uv_handle_t *)&ib->async, on_closed);
}

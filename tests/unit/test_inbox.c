/*
 * inbox: producers on real threads, the consumer on a real libuv loop.
 * Checks nothing is lost or reordered per producer, wake-ups coalesce, a
 * full inbox blocks the producer until the loop drains, and shutdown leaves
 * no handle open.
 */
#include "inbox.h"
#include "common.h"
#include "sg_test.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct ctx {
    struct sg_inbox ib;
    uv_loop_t loop;
    uint32_t next[PRODUCERS];   /* next expected sequence per producer */
    uint64_t got;
    uint64_t order_errors;
    uint64_t events;
    uint64_t bytes;
    int closed;
};

static void on_msg(void *arg, const struct sg_inmsg *m)
{
    struct ctx *c = arg;
    if (m->type != SG_INBOX_MESSAGE) {
        c->events++;
        return;
    }
    uint32_t v[2];
    CU_ASSERT_EQUAL_FATAL(m->payload_len, sizeof v);
    memcpy(v, m->payload, sizeof v);
    if (v[0] >= PRODUCERS || v[1] != c->next[v[0]]) {
        c->order_errors++;
    } else {
        c->next[v[0]]++;
    }
    CU_ASSERT_EQUAL(m->topic_len, strlen("sensors/city/x/dev"));
    c->got++;
    c->bytes += m->payload_len;
    if (c->got == (uint64_t)PRODUCERS * PER_PRODUCER) {
        sg_inbox_close(&c->ib, NULL, NULL);
        c->closed = 1;
    }
}

struct prod {
    struct ctx *c;
    uint32_t id;
};

static void *producer(void *arg)
{
    struct prod *p = arg;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        uint32_t v[2] = {p->id, i};
        int rc = sg_inbox_push(&p->c->ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev",
                               strlen("sensors/city/x/dev"), v, sizeof v);
        CU_ASSERT_EQUAL(rc, 0);
    }
    return NULL;
}

static void run_producers(size_t cap_bytes, uint64_t coalesce_ms)
{
    static struct ctx c;
    memset(&c, 0, sizeof c);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&c.loop), 0);
    CU_ASSERT_EQUAL_FATAL(sg_inbox_init(&c.ib, &c.loop, cap_bytes, 5000, on_msg, &c), 0);
    sg_inbox_set_coalesce(&c.ib, coalesce_ms);
    pthread_t th[PRODUCERS];
    struct prod ps[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        ps[i].c = &c;
        ps[i].id = i;
        pthread_create(&th[i], NULL, producer, &ps[i]);
    }
    uv_run(&c.loop, UV_RUN_DEFAULT);
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
    }
    CU_ASSERT_EQUAL(c.got, (uint64_t)PRODUCERS * PER_PRODUCER);
    CU_ASSERT_EQUAL(c.order_errors, 0);
    CU_ASSERT_EQUAL(c.closed, 1);
    CU_ASSERT_EQUAL(atomic_load(&c.ib.depth), 0);
    CU_ASSERT_EQUAL(uv_loop_close(&c.loop), 0);
}

static void test_no_loss_no_reorder(void)
{
    run_producers(32u << 20, 0);
}

static void test_no_loss_no_reorder_coalesced(void)
{
    run_producers(32u << 20, 1);
    run_producers(4096, 1);
}

static void test_backpressure_small_cap(void)
{
    /* A 4 KiB inbox fills constantly: producers must wait for the loop,
     * and still nothing is lost or reordered. */
    run_producers(4096, 0);
}

/* Coalescing, step by step on one thread: a wake-up that found records arms
 * the timer and keeps producers from sending; the first drain that finds
 * nothing disarms it, so an idle inbox has no timer running. */
static void test_coalesce_states(void)
{
    uv_loop_t loop;
    struct sg_inbox ib;
    struct ctx c;
    memset(&c, 0, sizeof c);
    uint32_t v[2] = {0, 0};
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    CU_ASSERT_EQUAL_FATAL(sg_inbox_init(&ib, &loop, 1 << 20, 10, on_msg, &c), 0);
    sg_inbox_set_coalesce(&ib, 1);
    CU_ASSERT_FALSE(ib.armed);
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev", 18, v, 8), 0);
    CU_ASSERT_TRUE(ib.armed);
    /* The async wake-up: one record, then the timer is armed. */
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(c.got, 1);
    CU_ASSERT_TRUE(ib.armed);
    CU_ASSERT_TRUE(uv_is_active((uv_handle_t *)&ib.timer));
    /* Pushes meanwhile send nothing (armed stays set) and wait for the timer. */
    for (uint32_t i = 1; i <= 3; i++) {
        v[1] = i;
        CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev", 18, v, 8),
                        0);
    }
    CU_ASSERT_EQUAL(c.got, 1);
    /* Not UV_RUN_ONCE: when the timer is already due it runs at the top of
     * the iteration, and if that drain finds nothing the poll that follows
     * has no timer left and blocks for good. Spin NOWAIT with a deadline. */
    uint64_t deadline = uv_hrtime() + 10ull * 1000000000ull;
    while (c.got < 4 && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CU_ASSERT_EQUAL_FATAL(c.got, 4);
    CU_ASSERT_EQUAL(c.order_errors, 0);
    CU_ASSERT_TRUE(uv_is_active((uv_handle_t *)&ib.timer));
    /* The next drain finds nothing: disarmed, no timer left. */
    while (uv_is_active((uv_handle_t *)&ib.timer) && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CU_ASSERT_FALSE_FATAL(uv_is_active((uv_handle_t *)&ib.timer));
    CU_ASSERT_FALSE(ib.armed);
    CU_ASSERT_EQUAL(c.got, 4);
    /* Idle: the loop has nothing to run (only the referenced async). */
    CU_ASSERT_EQUAL(uv_run(&loop, UV_RUN_NOWAIT), 1);
    CU_ASSERT_FALSE(uv_is_active((uv_handle_t *)&ib.timer));
    /* A push wakes it again. */
    v[1] = 4;
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev", 18, v, 8), 0);
    CU_ASSERT_TRUE(ib.armed);
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(c.got, 5);
    CU_ASSERT_EQUAL(c.order_errors, 0);
    /* Closing with the timer armed closes both handles. */
    CU_ASSERT_TRUE(uv_is_active((uv_handle_t *)&ib.timer));
    sg_inbox_close(&ib, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static void test_push_after_close_refused(void)
{
    uv_loop_t loop;
    struct sg_inbox ib;
    uint64_t n = 0;
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    struct ctx c;
    memset(&c, 0, sizeof c);
    CU_ASSERT_EQUAL_FATAL(sg_inbox_init(&ib, &loop, 1024, 10, on_msg, &c), 0);
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_CONNECTED, 1, NULL, 0, NULL, 0), 0);
    n = sg_inbox_drain(&ib);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(c.events, 1);
    sg_inbox_close(&ib, NULL, NULL);
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_CONNECTED, 1, NULL, 0, NULL, 0), SG_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static void test_overflow_after_wait(void)
{
    /* Nobody drains: the producer waits wait_ms, then appends over the cap
     * and counts it, instead of dropping the message. */
    uv_loop_t loop;
    struct sg_inbox ib;
    struct ctx c;
    memset(&c, 0, sizeof c);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    CU_ASSERT_EQUAL_FATAL(sg_inbox_init(&ib, &loop, 64, 20, on_msg, &c), 0);
    uint32_t v[2] = {0, 0};
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev", 18, v, 8), 0);
    v[1] = 1;
    CU_ASSERT_EQUAL(sg_inbox_push(&ib, SG_INBOX_MESSAGE, 0, "sensors/city/x/dev", 18, v, 8), 0);
    CU_ASSERT_EQUAL(atomic_load(&ib.overflows), 1);
    CU_ASSERT(atomic_load(&ib.wait_us) >= 15000);
    CU_ASSERT_EQUAL(sg_inbox_drain(&ib), 2);
    CU_ASSERT_EQUAL(c.got, 2);
    CU_ASSERT_EQUAL(c.order_errors, 0);
    sg_inbox_close(&ib, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

/* A producer faster than the loop must not keep the loop inside the inbox:
 * other handles (here a 1 ms timer) get turns while records still wait. */
struct fair {
    struct sg_inbox ib;
    uv_loop_t loop;
    uv_timer_t timer;
    uint64_t got;
    uint64_t timer_turns_with_backlog;
};

static void fair_msg(void *arg, const struct sg_inmsg *m)
{
    struct fair *f = arg;
    (void)m;
    /* A slow consumer: about 20 us per record. */
    uint64_t t0 = uv_hrtime();
    while (uv_hrtime() - t0 < 20000) {
    }
    if (++f->got == 20000) {
        uv_timer_stop(&f->timer);
        uv_close((uv_handle_t *)&f->timer, NULL);
        sg_inbox_close(&f->ib, NULL, NULL);
    }
}

static void fair_timer(uv_timer_t *t)
{
    struct fair *f = t->data;
    if (atomic_load(&f->ib.depth) > 0) {
        f->timer_turns_with_backlog++;
    }
}

static void *fair_producer(void *arg)
{
    struct fair *f = arg;
    for (uint32_t i = 0; i < 20000; i++) {
        sg_inbox_push(&f->ib, SG_INBOX_MESSAGE, 0, "sensors/a/b/c", 13, &i, sizeof i);
        /* One record per 10 us: faster than the consumer, so a backlog
         * builds while the producer is still going. */
        uint64_t t0 = uv_hrtime();
        while (uv_hrtime() - t0 < 10000) {
        }
    }
    return NULL;
}

static void test_fair_to_other_handles(void)
{
    static struct fair f;
    memset(&f, 0, sizeof f);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&f.loop), 0);
    CU_ASSERT_EQUAL_FATAL(sg_inbox_init(&f.ib, &f.loop, 64u << 20, 5000, fair_msg, &f), 0);
    uv_timer_init(&f.loop, &f.timer);
    f.timer.data = &f;
    uv_timer_start(&f.timer, fair_timer, 1, 1);
    pthread_t th;
    pthread_create(&th, NULL, fair_producer, &f);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(f.got, 20000);
    /* ~400 ms of work: a loop that drained until empty would give the timer
     * no turn while records waited. */
    CU_ASSERT(f.timer_turns_with_backlog >= 3);
    CU_ASSERT_EQUAL(uv_loop_close(&f.loop), 0);
}

static const struct sg_test inbox_tests[] = {
    {"4 producers, nothing lost or reordered", test_no_loss_no_reorder},
    {"back-pressure with a tiny cap", test_backpressure_small_cap},
    {"coalesced: nothing lost or reordered, both caps", test_no_loss_no_reorder_coalesced},
    {"coalescing arms, holds and disarms the timer", test_coalesce_states},
    {"push after close is refused", test_push_after_close_refused},
    {"over the cap after the wait: appended and counted", test_overflow_after_wait},
    {"a fast producer does not starve other handles", test_fair_to_other_handles},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"inbox", NULL, NULL, inbox_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

/*
 * Unit tests for session: the MQTT session state machine driven by events
 * alone (no loop, no broker): the happy path, connect failures backing off
 * to the cap within the jitter bounds, loss and re-subscribe, READY once,
 * refused SUBSCRIBEs, stop in every state, stale answers ignored, and the
 * reconnect / session-lost counters counted exactly by a small driver that
 * performs the actions the way gateway.c does.
 */
#include <stdint.h>

#include "session.h"
#include "sg_test.h"

#define MIN_MS 500
#define MAX_MS 30000
#define RND_TOP 0.9999999999

/* A fixed jitter draw, changed by the tests. */
static double draw;

static double fixed_draw(void *arg)
{
    (void)arg;
    return draw;
}

static void init(struct sg_session *s, bool clean_session)
{
    sg_session_init(s, clean_session, MIN_MS, MAX_MS, 1);
    sg_backoff_set_rnd(&s->backoff, fixed_draw, NULL);
    draw = 0.5;
}

/* Feeds one event and checks the exact action bits and the new state. */
static struct sg_session_actions expect(struct sg_session *s, enum sg_session_event ev, int arg,
                                        unsigned bits, enum sg_session_state st)
{
    struct sg_session_actions a = sg_session_on(s, ev, arg);
    CU_ASSERT_EQUAL(a.bits, bits);
    CU_ASSERT_EQUAL(sg_session_state(s), st);
    if (a.bits != bits || sg_session_state(s) != st) {
        fprintf(stderr, "\n  event %d: bits 0x%x (want 0x%x), state %s (want %s)\n", (int)ev,
                a.bits, bits, sg_session_state_name(sg_session_state(s)),
                sg_session_state_name(st));
    }
    return a;
}

#define UP_FIRST                                                                                   \
    (SG_SESSION_DO_MARK_CONNECTED | SG_SESSION_DO_REPORT_UP | SG_SESSION_DO_NOTIFY_READY)
#define UP_AGAIN (SG_SESSION_DO_MARK_CONNECTED | SG_SESSION_DO_REPORT_UP)

static void bring_up(struct sg_session *s)
{
    expect(s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(s, SG_SESSION_EV_CONNECT_OK, 0, SG_SESSION_DO_SUBSCRIBE, SG_SESSION_SUBSCRIBING);
    expect(s, SG_SESSION_EV_SUBACK_OK, 0, UP_FIRST, SG_SESSION_UP);
}

static void test_happy_path(void)
{
    struct sg_session s;

    init(&s, false);
    CU_ASSERT_EQUAL(sg_session_state(&s), SG_SESSION_IDLE);
    CU_ASSERT_FALSE(sg_session_live(&s));
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    CU_ASSERT_FALSE(sg_session_live(&s));
    /* The first CONNACK is no reconnect, and there was no session to lose. */
    expect(&s, SG_SESSION_EV_CONNECT_OK, 0, SG_SESSION_DO_SUBSCRIBE, SG_SESSION_SUBSCRIBING);
    CU_ASSERT_TRUE(sg_session_live(&s));
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, UP_FIRST, SG_SESSION_UP);
    CU_ASSERT_TRUE(sg_session_live(&s));
    CU_ASSERT_EQUAL(sg_session_failures(&s), 0);
    /* A reload's live SUBSCRIBE answered: reported, nothing else. */
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, SG_SESSION_DO_REPORT_UP, SG_SESSION_UP);
    /* START again is not a second session. */
    expect(&s, SG_SESSION_EV_START, 0, 0, SG_SESSION_UP);
}

static void test_connect_failures_back_off(void)
{
    struct sg_session s;
    struct sg_session_actions a;
    uint64_t cap = MIN_MS;

    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    for (uint32_t i = 1; i <= 12; i++) {
        /* The top of the jitter range shows the cap: doubling, then max. */
        draw = RND_TOP;
        a = expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, SG_SESSION_DO_ARM_TIMER,
                   SG_SESSION_WAIT_RETRY);
        CU_ASSERT_EQUAL(a.attempt, i);
        CU_ASSERT_EQUAL(a.delay_ms, cap);
        CU_ASSERT_EQUAL(sg_session_failures(&s), i);
        expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
        cap = cap * 2 > MAX_MS ? MAX_MS : cap * 2;
    }
    CU_ASSERT_EQUAL(cap, MAX_MS);
    /* The bottom of the range: min/2, never less, however long it fails. */
    draw = 0.0;
    a = expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, SG_SESSION_DO_ARM_TIMER,
               SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.delay_ms, MIN_MS / 2);
    CU_ASSERT_EQUAL(a.attempt, 13);

    /* With the built-in jitter source: every delay in [min/2, cap]. */
    sg_session_init(&s, false, MIN_MS, MAX_MS, 0x5eed);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t i = 1; i <= 200; i++) {
        a = sg_session_on(&s, SG_SESSION_EV_CONNECT_FAILED, -1);
        CU_ASSERT_EQUAL(a.bits, SG_SESSION_DO_ARM_TIMER);
        CU_ASSERT(a.delay_ms >= MIN_MS / 2);
        CU_ASSERT(a.delay_ms <= sg_backoff_cap_ms(i, MIN_MS, MAX_MS));
        lo = a.delay_ms < lo ? a.delay_ms : lo;
        hi = a.delay_ms > hi ? a.delay_ms : hi;
        sg_session_on(&s, SG_SESSION_EV_TIMER, 0);
    }
    CU_ASSERT(lo < MIN_MS);     /* jittered, not the cap every time */
    CU_ASSERT(hi > MAX_MS / 2); /* and it reaches the upper range */

    /* A reload's new limits apply from the next delay on. */
    sg_session_set_backoff(&s, 100, 200);
    a = sg_session_on(&s, SG_SESSION_EV_CONNECT_FAILED, -1);
    CU_ASSERT(a.delay_ms >= 50 && a.delay_ms <= 200);
}

static void test_lost_reconnects_and_resubscribes(void)
{
    struct sg_session s;
    struct sg_session_actions a;

    init(&s, false);
    bring_up(&s);
    draw = RND_TOP;
    a = expect(&s, SG_SESSION_EV_LOST, 0, SG_SESSION_DO_MARK_DISCONNECTED | SG_SESSION_DO_ARM_TIMER,
               SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.attempt, 1);
    CU_ASSERT_EQUAL(a.delay_ms, MIN_MS);
    CU_ASSERT_FALSE(sg_session_live(&s));
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    /* Refused once while the broker restarts: the second delay is longer. */
    a = expect(&s, SG_SESSION_EV_CONNECT_FAILED, 5, SG_SESSION_DO_ARM_TIMER, SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.attempt, 2);
    CU_ASSERT_EQUAL(a.delay_ms, 2 * MIN_MS);
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    /* Session kept by the broker: a reconnect, no session lost; subscribe again. */
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_SUBSCRIBE,
           SG_SESSION_SUBSCRIBING);
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, UP_AGAIN, SG_SESSION_UP);
    /* The accepted SUBSCRIBE reset the backoff: the next loss starts at min. */
    CU_ASSERT_EQUAL(sg_session_failures(&s), 0);
    a = expect(&s, SG_SESSION_EV_LOST, 0, SG_SESSION_DO_MARK_DISCONNECTED | SG_SESSION_DO_ARM_TIMER,
               SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.attempt, 1);
    CU_ASSERT_EQUAL(a.delay_ms, MIN_MS);

    /* Lost while still subscribing: retry, the gauge was never up. */
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_SUBSCRIBE,
           SG_SESSION_SUBSCRIBING);
    expect(&s, SG_SESSION_EV_LOST, 0, SG_SESSION_DO_ARM_TIMER, SG_SESSION_WAIT_RETRY);

    /* A reload that could not subscribe live: drop the connection, retry. */
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_SUBSCRIBE,
           SG_SESSION_SUBSCRIBING);
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, UP_AGAIN, SG_SESSION_UP);
    expect(&s, SG_SESSION_EV_RECONNECT, 0,
           SG_SESSION_DO_DISCONNECT | SG_SESSION_DO_MARK_DISCONNECTED | SG_SESSION_DO_ARM_TIMER,
           SG_SESSION_WAIT_RETRY);
    /* Nothing to drop while waiting. */
    expect(&s, SG_SESSION_EV_RECONNECT, 0, 0, SG_SESSION_WAIT_RETRY);
}

static void test_ready_once(void)
{
    struct sg_session s;
    int ready = 0, reports = 0;

    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    /* Failures before the first subscription never ask for READY. */
    for (int i = 0; i < 3; i++) {
        struct sg_session_actions a = sg_session_on(&s, SG_SESSION_EV_CONNECT_FAILED, -1);
        CU_ASSERT_FALSE(a.bits & SG_SESSION_DO_NOTIFY_READY);
        sg_session_on(&s, SG_SESSION_EV_TIMER, 0);
    }
    for (int cycle = 0; cycle < 5; cycle++) {
        unsigned bits = sg_session_on(&s, SG_SESSION_EV_CONNECT_OK, 1).bits;
        CU_ASSERT_FALSE(bits & SG_SESSION_DO_NOTIFY_READY);
        bits = sg_session_on(&s, SG_SESSION_EV_SUBACK_OK, 0).bits;
        ready += (bits & SG_SESSION_DO_NOTIFY_READY) != 0;
        reports += (bits & SG_SESSION_DO_REPORT_UP) != 0;
        bits = sg_session_on(&s, SG_SESSION_EV_SUBACK_OK, 0).bits; /* a reload's */
        ready += (bits & SG_SESSION_DO_NOTIFY_READY) != 0;
        reports += (bits & SG_SESSION_DO_REPORT_UP) != 0;
        sg_session_on(&s, SG_SESSION_EV_LOST, 0);
        sg_session_on(&s, SG_SESSION_EV_TIMER, 0);
    }
    CU_ASSERT_EQUAL(ready, 1);
    CU_ASSERT_EQUAL(reports, 10); /* STATUS= on every one, READY=1 on the first */
}

static void test_suback_failure(void)
{
    struct sg_session s;
    struct sg_session_actions a;

    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 0, SG_SESSION_DO_SUBSCRIBE, SG_SESSION_SUBSCRIBING);
    /* Refused (or could not be sent): disconnect and retry; never READY. */
    draw = RND_TOP;
    a = expect(&s, SG_SESSION_EV_SUBACK_FAILED, 0x87,
               SG_SESSION_DO_DISCONNECT | SG_SESSION_DO_ARM_TIMER, SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.attempt, 1);
    CU_ASSERT_EQUAL(a.delay_ms, MIN_MS);
    /* The late answer to the abandoned SUBSCRIBE changes nothing. */
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, 0, SG_SESSION_WAIT_RETRY);
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_SUBSCRIBE,
           SG_SESSION_SUBSCRIBING);
    a = expect(&s, SG_SESSION_EV_SUBACK_FAILED, 0x80,
               SG_SESSION_DO_DISCONNECT | SG_SESSION_DO_ARM_TIMER, SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(a.attempt, 2); /* the count goes on until a SUBSCRIBE is accepted */
    expect(&s, SG_SESSION_EV_TIMER, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, SG_SESSION_DO_COUNT_RECONNECT | SG_SESSION_DO_SUBSCRIBE,
           SG_SESSION_SUBSCRIBING);
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, UP_FIRST, SG_SESSION_UP);
    /* A reload's SUBSCRIBE refused on the live session: the gauge drops too. */
    expect(&s, SG_SESSION_EV_SUBACK_FAILED, 0x87,
           SG_SESSION_DO_DISCONNECT | SG_SESSION_DO_MARK_DISCONNECTED | SG_SESSION_DO_ARM_TIMER,
           SG_SESSION_WAIT_RETRY);
}

static void test_stop(void)
{
    struct sg_session s;

    /* Before start: nothing to undo. */
    init(&s, false);
    expect(&s, SG_SESSION_EV_STOP, 0, SG_SESSION_DO_STOP_TIMER, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_START, 0, 0, SG_SESSION_STOPPED);

    /* While connecting: abandon the connect. */
    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_STOP, 0, SG_SESSION_DO_STOP_TIMER | SG_SESSION_DO_DISCONNECT,
           SG_SESSION_STOPPED);
    /* Paho's answers still in the inbox are ignored: no subscribe, no retry. */
    expect(&s, SG_SESSION_EV_CONNECT_OK, 0, 0, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, 0, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_LOST, 0, 0, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_STOP, 0, 0, SG_SESSION_STOPPED);

    /* While waiting to retry: cancel the timer, nothing to disconnect. */
    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, SG_SESSION_DO_ARM_TIMER, SG_SESSION_WAIT_RETRY);
    expect(&s, SG_SESSION_EV_STOP, 0, SG_SESSION_DO_STOP_TIMER, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_TIMER, 0, 0, SG_SESSION_STOPPED); /* a timer already due */

    /* While subscribing and while up: disconnect. The gauge keeps its value
     * through shutdown (the final stats line says what it was). */
    init(&s, false);
    expect(&s, SG_SESSION_EV_START, 0, SG_SESSION_DO_CONNECT, SG_SESSION_CONNECTING);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 0, SG_SESSION_DO_SUBSCRIBE, SG_SESSION_SUBSCRIBING);
    expect(&s, SG_SESSION_EV_STOP, 0, SG_SESSION_DO_STOP_TIMER | SG_SESSION_DO_DISCONNECT,
           SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_SUBACK_OK, 0, 0, SG_SESSION_STOPPED); /* no READY after stop */
    CU_ASSERT_FALSE(sg_session_live(&s));
    init(&s, false);
    bring_up(&s);
    expect(&s, SG_SESSION_EV_STOP, 0, SG_SESSION_DO_STOP_TIMER | SG_SESSION_DO_DISCONNECT,
           SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_LOST, 0, 0, SG_SESSION_STOPPED);
    expect(&s, SG_SESSION_EV_RECONNECT, 0, 0, SG_SESSION_STOPPED);
}

static void test_stale_events(void)
{
    struct sg_session s;

    init(&s, false);
    /* Nothing happens before start. */
    expect(&s, SG_SESSION_EV_CONNECT_OK, 1, 0, SG_SESSION_IDLE);
    expect(&s, SG_SESSION_EV_TIMER, 0, 0, SG_SESSION_IDLE);
    expect(&s, SG_SESSION_EV_LOST, 0, 0, SG_SESSION_IDLE);
    bring_up(&s);
    /* A timer or CONNACK that belongs to nothing does not start a second
     * connection next to the live one. */
    expect(&s, SG_SESSION_EV_TIMER, 0, 0, SG_SESSION_UP);
    expect(&s, SG_SESSION_EV_CONNECT_OK, 0, 0, SG_SESSION_UP);
    expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, 0, SG_SESSION_UP);
    /* Once waiting, a second report about the same dead connection is not
     * a second failure. */
    expect(&s, SG_SESSION_EV_LOST, 0, SG_SESSION_DO_MARK_DISCONNECTED | SG_SESSION_DO_ARM_TIMER,
           SG_SESSION_WAIT_RETRY);
    expect(&s, SG_SESSION_EV_LOST, 0, 0, SG_SESSION_WAIT_RETRY);
    expect(&s, SG_SESSION_EV_CONNECT_FAILED, -1, 0, SG_SESSION_WAIT_RETRY);
    expect(&s, SG_SESSION_EV_SUBACK_FAILED, 0x80, 0, SG_SESSION_WAIT_RETRY);
    CU_ASSERT_EQUAL(sg_session_failures(&s), 1);
    CU_ASSERT_STRING_EQUAL(sg_session_state_name(SG_SESSION_WAIT_RETRY), "wait-retry");
}

/* The counters as gateway.c keeps them, from the actions alone. */
struct counts {
    uint64_t reconnects, session_lost, ready, connected, connects, subscribes, disconnects;
};

static void perform(struct counts *c, struct sg_session_actions a)
{
    c->reconnects += (a.bits & SG_SESSION_DO_COUNT_RECONNECT) != 0;
    c->session_lost += (a.bits & SG_SESSION_DO_COUNT_SESSION_LOST) != 0;
    c->ready += (a.bits & SG_SESSION_DO_NOTIFY_READY) != 0;
    c->connects += (a.bits & SG_SESSION_DO_CONNECT) != 0;
    c->subscribes += (a.bits & SG_SESSION_DO_SUBSCRIBE) != 0;
    c->disconnects += (a.bits & SG_SESSION_DO_DISCONNECT) != 0;
    if (a.bits & SG_SESSION_DO_MARK_CONNECTED) {
        CU_ASSERT_EQUAL(c->connected, 0); /* marked only on a change */
        c->connected = 1;
    }
    if (a.bits & SG_SESSION_DO_MARK_DISCONNECTED) {
        CU_ASSERT_EQUAL(c->connected, 1);
        c->connected = 0;
    }
}

static void run_script(bool clean_session, struct counts *c)
{
    /* session_present per CONNACK: the first (no session yet), then kept,
     * lost, kept, lost, lost. Between them: losses, refusals, a refused
     * SUBSCRIBE and a connect that fails, which count nothing. */
    static const int present[] = {0, 1, 0, 1, 0, 0};
    struct sg_session s;

    init(&s, clean_session);
    perform(c, sg_session_on(&s, SG_SESSION_EV_START, 0));
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
        perform(c, sg_session_on(&s, SG_SESSION_EV_CONNECT_OK, present[i]));
        if (i == 3) {
            perform(c, sg_session_on(&s, SG_SESSION_EV_SUBACK_FAILED, 0x80));
        } else {
            perform(c, sg_session_on(&s, SG_SESSION_EV_SUBACK_OK, 0));
            CU_ASSERT_EQUAL(c->connected, 1);
            perform(c, sg_session_on(&s, SG_SESSION_EV_LOST, 0));
            CU_ASSERT_EQUAL(c->connected, 0);
        }
        perform(c, sg_session_on(&s, SG_SESSION_EV_TIMER, 0));
        perform(c, sg_session_on(&s, SG_SESSION_EV_CONNECT_FAILED, -1));
        perform(c, sg_session_on(&s, SG_SESSION_EV_TIMER, 0));
    }
    perform(c, sg_session_on(&s, SG_SESSION_EV_STOP, 0));
    /* An answer after stop counts nothing. */
    perform(c, sg_session_on(&s, SG_SESSION_EV_CONNECT_OK, 0));
}

static void test_counters_exact(void)
{
    struct counts c = {0};

    run_script(false, &c);
    CU_ASSERT_EQUAL(c.reconnects, 5);   /* every accepted CONNACK but the first */
    CU_ASSERT_EQUAL(c.session_lost, 3); /* those of them without a session */
    CU_ASSERT_EQUAL(c.ready, 1);
    CU_ASSERT_EQUAL(c.connects, 1 + 6 * 2);
    CU_ASSERT_EQUAL(c.subscribes, 6);
    CU_ASSERT_EQUAL(c.disconnects, 2); /* the refused SUBSCRIBE, and stop */

    /* clean_session: there is never a session to lose. */
    struct counts k = {0};
    run_script(true, &k);
    CU_ASSERT_EQUAL(k.reconnects, 5);
    CU_ASSERT_EQUAL(k.session_lost, 0);
    CU_ASSERT_EQUAL(k.ready, 1);
}

static const struct sg_suite suites[] = {
    {"connect", NULL, NULL,
     SG_TESTS({"happy path", test_happy_path},
              {"failures back off to the cap, jittered", test_connect_failures_back_off})},
    {"reconnect", NULL, NULL,
     SG_TESTS({"lost: reconnect and re-subscribe", test_lost_reconnects_and_resubscribes},
              {"READY only at the first subscription", test_ready_once},
              {"SUBSCRIBE refused", test_suback_failure},
              {"stale answers ignored", test_stale_events})},
    {"stop", NULL, NULL, SG_TESTS({"in every state", test_stop})},
    {"metrics", NULL, NULL, SG_TESTS({"reconnects and session losses", test_counters_exact})},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

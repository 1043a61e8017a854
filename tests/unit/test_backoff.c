/*
 * Unit tests for backoff: the cap's growth and clamp, the jitter map with
 * and without a floor, the stateful schedule (count, reset, reload of the
 * limits) with an injected jitter source, and the built-in source's range.
 */
#include <math.h>
#include <stdint.h>

#include "backoff.h"
#include "sg_test.h"

#define RND_TOP 0.9999999999 /* the largest draw a source returns, near 1 */

static void test_cap_growth(void)
{
    static const uint64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000};

    for (uint32_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CU_ASSERT_EQUAL(sg_backoff_cap_ms(i + 1, 500, 30000), want[i]);
    }
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(0, 500, 30000), 0);
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(5, 0, 30000), 0);
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(UINT32_MAX, 500, 30000), 30000);
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(UINT32_MAX, 1000, UINT64_MAX), UINT64_MAX);
    /* min above max: max from the first failure on. */
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(1, 5000, 300), 300);
    CU_ASSERT_EQUAL(sg_backoff_cap_ms(9, 5000, 300), 300);
}

static void test_jitter_map(void)
{
    uint64_t prev = 0;

    for (int i = 0; i < 1000; i++) {
        uint64_t d = sg_backoff_jitter_ms(250, 4000, (double)i / 1000.0);
        CU_ASSERT(d >= 250 && d <= 4000);
        CU_ASSERT(d >= prev); /* monotone in the draw */
        prev = d;
    }
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, 0.0), 250);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, RND_TOP), 4000);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(0, 1000, 0.5), 500);
    /* Out-of-range draws are clamped, NaN is the floor. */
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, -1.0), 250);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, NAN), 250);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, 1.0), 4000);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(250, 4000, 9.0), 4000);
    /* A floor above the cap is lowered to it. */
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(5000, 4000, 0.0), 4000);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(0, 0, RND_TOP), 0);
    CU_ASSERT_EQUAL(sg_backoff_jitter_ms(0, UINT64_MAX, 1.0), UINT64_MAX);
    CU_ASSERT(sg_backoff_jitter_ms(0, UINT64_MAX, RND_TOP) > UINT64_MAX / 2);
}

static void test_delay_floor(void)
{
    /* The reconnect's floor: min/2, but never above the cap. */
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(1, 500, 30000, 250, 0.0), 250);
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(1, 500, 30000, 250, RND_TOP), 500);
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(4, 500, 30000, 250, RND_TOP), 4000);
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(40, 500, 30000, 250, 0.0), 250);
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(40, 500, 30000, 250, RND_TOP), 30000);
    /* No floor: the backend's full jitter. */
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(3, 1000, 300000, 0, 0.0), 0);
    CU_ASSERT_EQUAL(sg_backoff_delay_ms(3, 1000, 300000, 0, 0.25), 1000);
}

struct seq {
    const double *v;
    size_t n, i;
};

static double seq_next(void *arg)
{
    struct seq *s = arg;
    return s->i < s->n ? s->v[s->i++] : 0.0;
}

static void test_schedule(void)
{
    static const double draws[] = {RND_TOP, RND_TOP, RND_TOP, 0.0, 0.5, RND_TOP};
    struct seq sq = {draws, sizeof draws / sizeof draws[0], 0};
    struct sg_backoff b;

    sg_backoff_init(&b, 1000, 4000, 500, 42);
    sg_backoff_set_rnd(&b, seq_next, &sq);
    CU_ASSERT_EQUAL(b.failures, 0);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 1000);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 2000);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 4000);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 500); /* capped cap, floor draw */
    CU_ASSERT_EQUAL(b.failures, 4);
    sg_backoff_reset(&b);
    CU_ASSERT_EQUAL(b.failures, 0);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 750); /* from min again: [500, 1000] */
    /* New limits keep the count and apply to the next delay. */
    sg_backoff_set_limits(&b, 100, 200, 0);
    CU_ASSERT_EQUAL(sg_backoff_fail(&b), 200);
    CU_ASSERT_EQUAL(b.failures, 2);
    CU_ASSERT_EQUAL(sq.i, sq.n); /* one draw per delay, none elsewhere */

    /* The count saturates instead of wrapping to "no failures". */
    b.failures = UINT32_MAX;
    (void)sg_backoff_fail(&b);
    CU_ASSERT_EQUAL(b.failures, UINT32_MAX);
}

static void test_builtin_source(void)
{
    struct sg_backoff a, b, z;
    int differ = 0;

    sg_backoff_init(&a, 1000, 30000, 0, 12345);
    sg_backoff_init(&b, 1000, 30000, 0, 12345);
    sg_backoff_init(&z, 1000, 30000, 0, 0); /* a zero seed still draws */
    double lo = 1.0, hi = 0.0;
    for (int i = 0; i < 10000; i++) {
        double r = sg_backoff_rnd(&a);
        CU_ASSERT(r >= 0.0 && r < 1.0);
        CU_ASSERT_EQUAL(r, sg_backoff_rnd(&b)); /* same seed, same draws */
        double q = sg_backoff_rnd(&z);
        CU_ASSERT(q >= 0.0 && q < 1.0);
        differ |= q != r;
        lo = r < lo ? r : lo;
        hi = r > hi ? r : hi;
    }
    CU_ASSERT(differ);
    CU_ASSERT(lo < 0.01 && hi > 0.99); /* spread over the whole range */
    /* With the built-in source every delay stays within [floor, cap]. */
    sg_backoff_init(&a, 500, 30000, 250, 7);
    for (uint32_t i = 1; i <= 20; i++) {
        uint64_t d = sg_backoff_fail(&a);
        CU_ASSERT(d >= 250 && d <= sg_backoff_cap_ms(i, 500, 30000));
    }
}

static const struct sg_suite suites[] = {
    {"pure", NULL, NULL,
     SG_TESTS({"cap grows and stops at max", test_cap_growth},
              {"jitter map and clamps", test_jitter_map},
              {"floor within the cap", test_delay_floor})},
    {"schedule", NULL, NULL,
     SG_TESTS({"count, reset, reloaded limits", test_schedule},
              {"built-in jitter source", test_builtin_source})},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

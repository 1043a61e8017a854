/*
 * backoff: exponential backoff with full jitter, shared by the backend
 * forwarder and the broker reconnect (there used to be one copy in each).
 * The cap doubles per consecutive failure from min_ms up to max_ms; each
 * delay is drawn uniformly between a floor and the cap. Invariants: a delay
 * never exceeds the cap and never falls below min(floor, cap); nothing
 * overflows for any failure count or limit. Pure; loop thread.
 */
#include "backoff.h"

#include <stddef.h>

uint64_t sg_backoff_cap_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t cap = 0;

    if (failures > 0 && min_ms > 0) {
        cap = min_ms < max_ms ? min_ms : max_ms;
        for (uint32_t i = 1; i < failures && cap < max_ms; i++) {
            cap = cap > max_ms / 2 ? max_ms : cap * 2;
        }
    }
    return cap;
}

uint64_t sg_backoff_jitter_ms(uint64_t lo_ms, uint64_t cap_ms, double rnd)
{
    uint64_t span, j;

    if (lo_ms > cap_ms) {
        lo_ms = cap_ms;
    }
    span = cap_ms - lo_ms;
    if (!(rnd > 0.0)) {
        return lo_ms; /* also NaN */
    }
    if (rnd >= 1.0) {
        return cap_ms;
    }
    /* Uniform over the integers 0..span inclusive. */
    j = (uint64_t)(rnd * ((double)span + 1.0));
    if (j > span) {
        j = span;
    }
    return lo_ms + j;
}

uint64_t sg_backoff_delay_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms, uint64_t floor_ms,
                             double rnd)
{
    return sg_backoff_jitter_ms(floor_ms, sg_backoff_cap_ms(failures, min_ms, max_ms), rnd);
}

void sg_backoff_init(struct sg_backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t floor_ms,
                     uint64_t seed)
{
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->floor_ms = floor_ms;
    b->failures = 0;
    b->rng = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
    b->rnd = NULL;
    b->rnd_arg = NULL;
}

void sg_backoff_set_limits(struct sg_backoff *b, uint64_t min_ms, uint64_t max_ms,
                           uint64_t floor_ms)
{
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->floor_ms = floor_ms;
}

void sg_backoff_set_rnd(struct sg_backoff *b, sg_backoff_rnd_fn fn, void *arg)
{
    b->rnd = fn;
    b->rnd_arg = arg;
}

double sg_backoff_rnd(struct sg_backoff *b)
{
    if (b->rnd != NULL) {
        return b->rnd(b->rnd_arg);
    }
    /* xorshift64*: jitter only needs to spread the retries of many
     * gateways, not to be unpredictable. */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return (double)((b->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

uint64_t sg_backoff_fail(struct sg_backoff *b)
{
    if (b->failures < UINT32_MAX) {
        b->failures++;
    }
    return sg_backoff_delay_ms(b->failures, b->min_ms, b->max_ms, b->floor_ms, sg_backoff_rnd(b));
}

void sg_backoff_reset(struct sg_backoff *b)
{
    b->failures = 0;
}

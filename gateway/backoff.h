/*
 * backoff: the one retry delay of the gateway, exponential from min_ms to
 * max_ms with full jitter, for the backend (forward) and the broker
 * reconnect (session). Pure: no clock, no loop; the jitter draw is a
 * parameter of the pure functions and injectable in the stateful one, so
 * tests fix it. Loop thread (one struct per user, no locking).
 */
#ifndef SG_BACKOFF_H
#define SG_BACKOFF_H

#include <stdint.h>

/* The upper end of the delay after `failures` consecutive failures:
 * min(max_ms, min_ms * 2^(failures-1)), computed without overflow; 0 when
 * failures or min_ms is 0. When min_ms > max_ms, max_ms. Pure. */
uint64_t sg_backoff_cap_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms);

/* Full jitter: uniform over the integers lo_ms..cap_ms inclusive, using rnd
 * in [0,1) (monotone in rnd). rnd <= 0 and NaN give lo_ms, rnd >= 1 gives
 * cap_ms; lo_ms above cap_ms is lowered to cap_ms. Pure. */
uint64_t sg_backoff_jitter_ms(uint64_t lo_ms, uint64_t cap_ms, double rnd);

/* sg_backoff_jitter_ms(min(floor_ms, cap), cap, rnd) with
 * cap = sg_backoff_cap_ms(failures, min_ms, max_ms). floor_ms 0 is plain
 * full jitter (the backend); the reconnect uses min_ms / 2 so a flapping
 * broker is not hammered. Pure. */
uint64_t sg_backoff_delay_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms, uint64_t floor_ms,
                             double rnd);

/* A jitter source: returns a draw in [0,1) (other values are clamped as in
 * sg_backoff_jitter_ms). */
typedef double (*sg_backoff_rnd_fn)(void *arg);

/* One retry schedule. A plain value embedded in its owner; read the
 * fields, change them only through the functions below. */
struct sg_backoff {
    uint64_t min_ms;       /* first cap */
    uint64_t max_ms;       /* the cap stops growing here */
    uint64_t floor_ms;     /* lower end of each delay (clamped to the cap); 0 = full jitter */
    uint32_t failures;     /* consecutive failures since the last success (saturates) */
    uint64_t rng;          /* xorshift64* state of the built-in jitter source */
    sg_backoff_rnd_fn rnd; /* injected jitter source, or NULL for the built-in one */
    void *rnd_arg;
};

/* Sets limits, no failures, the built-in jitter source seeded with seed
 * (any value; 0 is made non-zero). Cannot fail. */
void sg_backoff_init(struct sg_backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t floor_ms,
                     uint64_t seed);

/* New limits (reload) for the next delay; the failure count is kept. */
void sg_backoff_set_limits(struct sg_backoff *b, uint64_t min_ms, uint64_t max_ms,
                           uint64_t floor_ms);

/* Replaces the jitter source (tests); fn NULL restores the built-in one. */
void sg_backoff_set_rnd(struct sg_backoff *b, sg_backoff_rnd_fn fn, void *arg);

/* The next jitter draw in [0,1) from the injected or built-in source. */
double sg_backoff_rnd(struct sg_backoff *b);

/* One more failure: counts it (saturating at UINT32_MAX) and returns the
 * delay before the next attempt, sg_backoff_delay_ms with the new count and
 * the next draw. */
uint64_t sg_backoff_fail(struct sg_backoff *b);

/* Success: the next failure starts again from min_ms. */
void sg_backoff_reset(struct sg_backoff *b);

#endif

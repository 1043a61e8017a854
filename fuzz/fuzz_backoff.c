/*
 * fuzz_backoff: the backend-answer handling that is ours, not curl's:
 * sg_forward_backoff_ms (Retry-After clamp on top of the shared backoff,
 * backoff.c: exponential with full jitter), the backoff itself with a
 * floor (as the broker reconnect uses it) and sg_forward_classify, with
 * every argument taken from the
 * input (including negative Retry-After values, as libcurl 7.88 returns
 * for a date in the past, NaN and out-of-range jitter draws). curl parses
 * the header itself; we fuzz what we do with its result.
 *
 * Invariants: the delay never exceeds max(backoff cap, retry_after_max_ms);
 * a positive Retry-After is honoured up to its clamp; the result does not
 * depend on anything but the arguments; the forward delay is the shared
 * backoff's (floor 0) raised by Retry-After only; a backoff delay lies in
 * [min(floor, cap), cap] and the stateful schedule gives the pure
 * function's value; classify returns a known outcome and 2xx is the only
 * success.
 */
#include "fuzz.h"

#include "backoff.h"
#include "forward.h"

#include <string.h>

static uint64_t take(const uint8_t **d, size_t *n, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++) {
        v <<= 8;
        if (*n > 0) {
            v |= **d;
            (*d)++;
            (*n)--;
        }
    }
    return v;
}

static double fixed_rnd(void *arg)
{
    return *(const double *)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *d = data;
    size_t n = size;
    uint32_t failures = (uint32_t)take(&d, &n, 4);
    uint64_t min_ms = take(&d, &n, 8);
    uint64_t max_ms = take(&d, &n, 8);
    int64_t ra_s = (int64_t)take(&d, &n, 8);
    uint64_t ra_max = take(&d, &n, 8);
    uint64_t rbits = take(&d, &n, 8);
    double rnd;
    memcpy(&rnd, &rbits, sizeof rnd);
    long status = (long)(int32_t)take(&d, &n, 4);
    int curl_code = (int)(int8_t)take(&d, &n, 1);
    /* Appended after the original layout, so older seeds read floor 0. */
    uint64_t floor_ms = take(&d, &n, 8);

    uint64_t delay = sg_forward_backoff_ms(failures, min_ms, max_ms, ra_s, ra_max, rnd);
    uint64_t again = sg_forward_backoff_ms(failures, min_ms, max_ms, ra_s, ra_max, rnd);
    SG_FUZZ_CHECK(delay == again);
    uint64_t bound = max_ms > ra_max ? max_ms : ra_max;
    SG_FUZZ_CHECK(delay <= bound);
    if (failures == 0 || min_ms == 0) {
        /* No backoff of our own: only Retry-After can delay. */
        SG_FUZZ_CHECK(delay <= ra_max);
    }
    if (ra_s > 0) {
        uint64_t want = (uint64_t)ra_s > ra_max / 1000 ? ra_max : (uint64_t)ra_s * 1000;
        SG_FUZZ_CHECK(delay >= want);
    } else if (!(rnd > 0.0)) {
        SG_FUZZ_CHECK(delay == 0);
    }

    /* Retry-After only ever raises our own backoff. */
    uint64_t own = sg_backoff_delay_ms(failures, min_ms, max_ms, 0, rnd);
    SG_FUZZ_CHECK(delay >= own);
    if (ra_s <= 0) {
        SG_FUZZ_CHECK(delay == own);
    }

    /* The shared backoff with a floor: within [min(floor, cap), cap]. */
    uint64_t cap = sg_backoff_cap_ms(failures, min_ms, max_ms);
    SG_FUZZ_CHECK(cap <= max_ms);
    uint64_t fd = sg_backoff_delay_ms(failures, min_ms, max_ms, floor_ms, rnd);
    SG_FUZZ_CHECK(fd <= cap);
    SG_FUZZ_CHECK(fd >= (floor_ms < cap ? floor_ms : cap));
    if (failures > 0 && failures < UINT32_MAX) {
        /* The schedule after failures-1 failures, one more: the same value. */
        struct sg_backoff b;
        sg_backoff_init(&b, min_ms, max_ms, floor_ms, rbits);
        sg_backoff_set_rnd(&b, fixed_rnd, &rnd);
        b.failures = failures - 1;
        SG_FUZZ_CHECK(sg_backoff_fail(&b) == fd);
        SG_FUZZ_CHECK(b.failures == failures);
        sg_backoff_reset(&b);
        SG_FUZZ_CHECK(b.failures == 0);
    }

    enum sg_fwd_outcome oc = sg_forward_classify(status, curl_code);
    SG_FUZZ_CHECK(oc == SG_FWD_OK || oc == SG_FWD_RETRY || oc == SG_FWD_REJECTED);
    if (oc == SG_FWD_OK) {
        SG_FUZZ_CHECK(curl_code == 0 && status >= 200 && status <= 299);
    }
    if (curl_code != 0) {
        SG_FUZZ_CHECK(oc == SG_FWD_RETRY);
    }
    if (curl_code == 0 && (status == 429 || (status >= 500 && status <= 599))) {
        SG_FUZZ_CHECK(oc == SG_FWD_RETRY);
    }
    return 0;
}

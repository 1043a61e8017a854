/*
 * fuzz_backoff: the backend-answer handling that is ours, not curl's:
 * sg_forward_backoff_ms (Retry-After clamp, exponential backoff with full
 * jitter) and sg_forward_classify, with every argument taken from the
 * input (including negative Retry-After values, as libcurl 7.88 returns
 * for a date in the past, NaN and out-of-range jitter draws). curl parses
 * the header itself; we fuzz what we do with its result.
 *
 * Invariants: the delay never exceeds max(backoff cap, retry_after_max_ms);
 * a positive Retry-After is honoured up to its clamp; the result does not
 * depend on anything but the arguments; classify returns a known outcome
 * and 2xx is the only success.
 */
#include "fuzz.h"

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

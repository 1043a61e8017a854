/*
 * forward: delivers spooled batches to the backend (contract section 3)
 * with libcurl's multi interface driven by the libuv loop: POST
 * <url>/v1/rollups, oldest batch first, at most max_inflight at once.
 * 2xx acks the batch; 429/5xx/network errors retry with exponential backoff
 * and full jitter, honouring Retry-After (one backoff for the whole backend);
 * other 4xx move it to dead letters. Loop thread.
 */
#ifndef SG_FORWARD_H
#define SG_FORWARD_H

#include <stdint.h>
#include <stdbool.h>
#include <uv.h>

#include "metrics.h"
#include "spool.h"

enum sg_fwd_outcome { SG_FWD_OK = 0, SG_FWD_RETRY, SG_FWD_REJECTED };

/* The one place that sorts answers: 2xx ok; 429, 5xx, 3xx (not followed;
 * logged as a configuration problem) and any transport error (curl_code !=
 * 0, whatever the status) retry; other 4xx (408 included, as the contract
 * says) and 1xx rejected; no status or one outside 100..599 retries. Pure. */
enum sg_fwd_outcome sg_forward_classify(long http_status, int curl_code);

/* Delay before the next attempt after `failures` consecutive failures:
 * uniform in [0, min(max_ms, min_ms * 2^(failures-1))] using rnd in [0,1),
 * then at least retry_after_ms (which is clamped to [0, retry_after_max_ms]).
 * Pure. */
uint64_t sg_forward_backoff_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms,
                               int64_t retry_after_s, uint64_t retry_after_max_ms, double rnd);

struct sg_forward_opts {
    const char *url;               /* base URL; "/v1/rollups" is appended */
    const char *token;             /* bearer token or NULL; never logged */
    const char *gateway_id;        /* for batch_id */
    const char *ca_file;           /* or NULL */
    uint64_t timeout_ms;
    uint32_t max_inflight;
    uint64_t backoff_min_ms, backoff_max_ms, retry_after_max_ms;
};

struct sg_forward;

/* Creates the forwarder on loop; it reads batches from sp and counts into m
 * (forward_*, latency). opts strings are copied. Returns 0, SG_EINVAL (url
 * not http:// or https://, no gateway_id, max_inflight 0, timeout_ms 0,
 * backoff_max_ms < backoff_min_ms) or SG_EIO (libcurl set-up failed); on
 * error *out is NULL and nothing is left on the loop. Nothing is sent until
 * the first sg_forward_kick. */
int sg_forward_new(struct sg_forward **out, uv_loop_t *loop, struct sg_spool *sp,
                   struct sg_metrics *m, const struct sg_forward_opts *opts);

/* Reload: new limits for requests started from now on (timeout_ms,
 * max_inflight) and for the next backoff (backoff_*_ms, retry_after_max_ms).
 * Requests in flight keep theirs and finish; a lower max_inflight only stops
 * new ones from starting. The strings of opts are ignored. Returns 0, or
 * SG_EINVAL under the rules of sg_forward_new (nothing changed). */
int sg_forward_set_limits(struct sg_forward *f, const struct sg_forward_opts *opts);

/* A new batch was spooled (or the backoff should be re-checked): start
 * sending if there is room. Cheap; call after every push. */
void sg_forward_kick(struct sg_forward *f);

/* Number of requests in flight. */
uint32_t sg_forward_inflight(const struct sg_forward *f);

/* True when the spool holds nothing this forwarder has not delivered or
 * dead-lettered and nothing is in flight. */
bool sg_forward_idle(const struct sg_forward *f);

/* Stops starting new requests and aborts those in flight (their batches stay
 * spooled), closes every handle, then calls cb(arg) from the loop; free the
 * forwarder with sg_forward_free only after that. */
void sg_forward_close(struct sg_forward *f, void (*cb)(void *arg), void *arg);
void sg_forward_free(struct sg_forward *f);

#endif

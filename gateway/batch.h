/*
 * batch: rollups waiting to become batches, and the spooling of those
 * batches (encode, spool push with the marks of their windows). Design
 * notes, the "window whole" rule and the burst bound: batch.c.
 *
 * No libuv, Paho or curl: the gateway keeps the batch timer and asks
 * sg_batch_wait_ms when it is due; it kicks the forwarder after a flush.
 * Loop thread only (calls the spool, which is synchronous).
 */
#ifndef SG_BATCH_H
#define SG_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rollup.h"
#include "spool.h"

/* Full batches held back for the end of the inbox drain, counted in
 * rollups: reaching it makes sg_batch_add spool the full batches itself
 * (see "Burst bound" in batch.c). 16384 rollups are 3.7 MB. */
#define SG_BATCH_BURST_ROLLUPS 16384u

struct sg_batch;

struct sg_batch_opts {
    struct sg_spool *spool; /* borrowed; outlives the batcher */
    /* The gateway's config pointer, which a SIGHUP reload replaces whole:
     * backend.max_batch_rollups, .max_batch_delay_ms, .content_type and
     * gateway_id are read through it at each use, so live keys apply from
     * the next batch. Borrowed. */
    struct sg_config *const *cfg;
    size_t burst_rollups; /* 0 = SG_BATCH_BURST_ROLLUPS */
};

struct sg_batch_stats {
    uint64_t spooled;     /* batches stored in the spool */
    uint64_t push_errors; /* batches the spool refused (logged, not retried) */
};

/* Creates an empty batcher. Returns 0, or SG_EINVAL (NULL out, opts,
 * spool or cfg; *out is then NULL). */
int sg_batch_new(struct sg_batch **out, const struct sg_batch_opts *opts);
/* Frees the batcher and whatever is still pending, without spooling it.
 * NULL is a no-op. */
void sg_batch_free(struct sg_batch *b);

/* Appends one rollup (rollup's emit callback: r is copied). Channels of a
 * window come in order 0..n-1 and stay in one batch; a batch is closed
 * ("full") when the next window would take it past max_batch_rollups, or
 * when it reached that bound at the end of a window. Does not spool,
 * except when the full batches waiting reach the burst bound: then they
 * are spooled here. Returns the number of batches it spooled (normally
 * 0), so the caller knows to kick the forwarder. */
size_t sg_batch_add(struct sg_batch *b, const struct sg_rollup *r);

/* Spools the full batches, oldest first, and keeps the batch still being
 * filled. Returns the number of batches it tried to spool (a failed push
 * counts: logged, counted in push_errors, and its rollups are dropped;
 * the journal keeps their readings, see sg_batch_push_failed). */
size_t sg_batch_flush_full(struct sg_batch *b);

/* Spools everything pending (the full batches, then the one being
 * filled). Returns the number of batches it tried to spool; 0 when
 * nothing was pending (then nothing happens at all). */
size_t sg_batch_flush(struct sg_batch *b);

/* Rollups pending (full batches and the one being filled). */
size_t sg_batch_pending(const struct sg_batch *b);

/* Full batches waiting for sg_batch_flush_full. */
size_t sg_batch_full(const struct sg_batch *b);

/* Milliseconds from mono_ms (sg_mono_ms clock) until the oldest pending
 * rollup has waited backend.max_batch_delay_ms (0 = due now), or
 * UINT64_MAX when nothing is pending. */
uint64_t sg_batch_wait_ms(const struct sg_batch *b, uint64_t mono_ms);

/* True when the last spool push failed (cleared by the next success):
 * the gateway then keeps the journal whole, so a restart rebuilds what
 * could not be spooled. */
bool sg_batch_push_failed(const struct sg_batch *b);

/* The counters; the pointer stays valid until sg_batch_free. */
const struct sg_batch_stats *sg_batch_stats(const struct sg_batch *b);

#endif

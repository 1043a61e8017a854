/*
 * fake_spool: an in-memory implementation of spool.h for tests of modules
 * that read or fill the spool (forward, batch), plus accessors to inspect
 * it. Link it instead of sg_spool. Single-threaded; bounded at
 * FAKE_SPOOL_MAX batches. Marks are kept with their batch (the real spool
 * keeps them in their own table), enough to see what a push carried.
 */
#ifndef SG_FAKE_SPOOL_H
#define SG_FAKE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "spool.h"

#define FAKE_SPOOL_MAX 64

/* Batches currently spooled (not acked, dead or dropped). */
size_t fake_spool_count(struct sg_spool *sp);
/* Sets close_mono_ms of a spooled batch (push sets sg_mono_ms(), as the
 * real spool does; 0 stands for a batch from before a restart).
 * Returns 0 or SG_ENOTFOUND. */
int fake_spool_set_close_mono(struct sg_spool *sp, uint64_t seq, uint64_t close_mono_ms);
/* Dead letters in the order they were moved aside. */
size_t fake_spool_dead_count(struct sg_spool *sp);
/* The i-th dead letter; reason points into the fake. Returns 0 or
 * SG_ENOTFOUND. */
int fake_spool_dead_get(struct sg_spool *sp, size_t i, uint64_t *seq, int *http_status,
                        const char **reason);
/* Number of acks seen (including those for unknown seqs). */
size_t fake_spool_ack_calls(struct sg_spool *sp);
/* The marks pushed with batch seq (sensor_id points into the fake).
 * Returns 0 or SG_ENOTFOUND. */
int fake_spool_marks(struct sg_spool *sp, uint64_t seq, const struct sg_spool_mark **marks,
                     size_t *nmarks);
/* The next push fails with err (nothing stored, counted in errors, as the
 * real spool does); 0 cancels. */
void fake_spool_fail_next(struct sg_spool *sp, int err);

#endif

/*
 * fake_spool: an in-memory implementation of spool.h for tests of modules
 * that read the spool (forward), plus accessors to inspect it. Link it
 * instead of sg_spool. Single-threaded; bounded at FAKE_SPOOL_MAX batches.
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

#endif

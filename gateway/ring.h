/*
 * ring: per-series dedup of sequence numbers. A bitmap of the most recent
 * nseqs sequence numbers (nseqs a power of two) relative to the newest one
 * marked, compared in serial arithmetic (RFC 1982), so seq wraps at 2^32.
 *
 * Checking and marking are separate steps: the caller first asks
 * sg_ring_check() and marks with sg_ring_mark() only once the reading is
 * accepted (a late reading is never marked). Semantics: docs/SEMANTICS.md.
 *
 * Pure, no allocation in check/mark; one thread (the loop thread).
 */
#ifndef SG_RING_H
#define SG_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SG_RING_MIN_SEQS 64u
#define SG_RING_MAX_SEQS 65536u      /* larger rings are pointless: see SG_RING_RESET_DISTANCE */
#define SG_RING_RESET_DISTANCE 65536 /* |seq - newest| beyond this restarts the ring */

enum sg_ring_result {
    SG_RING_NEW = 0, /* not seen: ahead of the newest, or inside the ring and unmarked */
    SG_RING_SEEN,    /* inside the ring and marked: a duplicate */
    SG_RING_TOO_OLD, /* nseqs or more behind the newest: cannot tell */
    SG_RING_RESET,   /* more than 65536 away from the newest: the sensor restarted its
                      * counter; marking it restarts the ring at this seq */
};

struct sg_ring {
    uint64_t *bits;  /* nseqs bits; bit (seq & mask) says "seq was marked" */
    uint32_t mask;   /* nseqs - 1 */
    uint32_t newest; /* greatest seq marked (serial order); valid when started */
    bool started;    /* false until the first mark */
};

/* Signed serial distance a - b (RFC 1982): > 0 when a is after b. A distance
 * of exactly 2^31 is undefined in RFC 1982 and comes out as INT32_MIN. */
static inline int32_t sg_serial_diff(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b);
}

/* True when a comes before b in serial arithmetic. */
static inline bool sg_serial_lt(uint32_t a, uint32_t b)
{
    return sg_serial_diff(a, b) < 0;
}

/* Number of uint64_t words of bitmap storage a ring of nseqs needs. */
size_t sg_ring_words(uint32_t nseqs);

/* True when nseqs is a power of two in SG_RING_MIN_SEQS..SG_RING_MAX_SEQS. */
bool sg_ring_nseqs_ok(uint32_t nseqs);

/* Initialises r over caller-owned storage bits (sg_ring_words(nseqs) words,
 * which must outlive r); the ring starts empty. Returns 0, or SG_EINVAL if
 * nseqs is not acceptable (r untouched). */
int sg_ring_init(struct sg_ring *r, uint64_t *bits, uint32_t nseqs);

/* Empties the ring (keeps the storage). */
void sg_ring_clear(struct sg_ring *r);

/* Classifies seq against the ring without changing it. */
enum sg_ring_result sg_ring_check(const struct sg_ring *r, uint32_t seq);

/* Records seq as seen. Ahead of the newest: the ring slides forward, forgetting
 * the seqs that fall out. More than 65536 away: the ring restarts at seq.
 * TOO_OLD seqs cannot be recorded and are ignored. Returns the result
 * sg_ring_check() gave for seq before the mark. */
enum sg_ring_result sg_ring_mark(struct sg_ring *r, uint32_t seq);

#endif

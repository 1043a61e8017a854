/*
 * ring: bitmap of the most recent nseqs sequence numbers of one series.
 *
 * Invariant: when started, bit (s & mask) is set exactly for the marked seqs s
 * with 0 <= newest - s < nseqs (serial arithmetic); every bit for seqs that
 * slid out of that range has been cleared. Bits are addressed by the low bits
 * of seq, so sliding the ring forward by d only has to clear d bits (or all of
 * them when d >= nseqs). Loop thread only; no allocation.
 */
#include "ring.h"

#include <string.h>

#include "common.h"

size_t sg_ring_words(uint32_t nseqs)
{
    return ((size_t)nseqs + 63u) / 64u;
}

bool sg_ring_nseqs_ok(uint32_t nseqs)
{
    return nseqs >= SG_RING_MIN_SEQS && nseqs <= SG_RING_MAX_SEQS && (nseqs & (nseqs - 1u)) == 0;
}

int sg_ring_init(struct sg_ring *r, uint64_t *bits, uint32_t nseqs)
{
    if (r == NULL || bits == NULL || !sg_ring_nseqs_ok(nseqs)) {
        return SG_EINVAL;
    }
    r->bits = bits;
    r->mask = nseqs - 1u;
    r->newest = 0;
    r->started = false;
    memset(bits, 0, sg_ring_words(nseqs) * sizeof(uint64_t));
    return 0;
}

void sg_ring_clear(struct sg_ring *r)
{
    memset(r->bits, 0, sg_ring_words(r->mask + 1u) * sizeof(uint64_t));
    r->newest = 0;
    r->started = false;
}

static inline bool bit_test(const struct sg_ring *r, uint32_t seq)
{
    uint32_t b = seq & r->mask;
    return (r->bits[b >> 6] >> (b & 63u)) & 1u;
}

static inline void bit_set(struct sg_ring *r, uint32_t seq)
{
    uint32_t b = seq & r->mask;
    r->bits[b >> 6] |= (uint64_t)1 << (b & 63u);
}

static inline void bit_clear(struct sg_ring *r, uint32_t seq)
{
    uint32_t b = seq & r->mask;
    r->bits[b >> 6] &= ~((uint64_t)1 << (b & 63u));
}

enum sg_ring_result sg_ring_check(const struct sg_ring *r, uint32_t seq)
{
    if (!r->started) {
        return SG_RING_NEW;
    }
    int64_t d = sg_serial_diff(seq, r->newest);
    if (d > SG_RING_RESET_DISTANCE || d < -SG_RING_RESET_DISTANCE) {
        return SG_RING_RESET;
    }
    if (d > 0) {
        return SG_RING_NEW;
    }
    if (-d > (int64_t)r->mask) {
        return SG_RING_TOO_OLD;
    }
    return bit_test(r, seq) ? SG_RING_SEEN : SG_RING_NEW;
}

enum sg_ring_result sg_ring_mark(struct sg_ring *r, uint32_t seq)
{
    enum sg_ring_result res = sg_ring_check(r, seq);
    switch (res) {
    case SG_RING_TOO_OLD:
        return res;
    case SG_RING_SEEN:
        return res;
    case SG_RING_RESET:
        sg_ring_clear(r);
        break;
    case SG_RING_NEW:
        break;
    }
    if (!r->started) {
        r->started = true;
        r->newest = seq;
        bit_set(r, seq);
        return res;
    }
    int32_t d = sg_serial_diff(seq, r->newest);
    if (d > 0) {
        /* Slide forward: seqs newest+1 .. seq enter the ring unmarked, which
         * also forgets the ones that leave it (they share bit positions). */
        if ((uint32_t)d > r->mask) {
            memset(r->bits, 0, sg_ring_words(r->mask + 1u) * sizeof(uint64_t));
        } else {
            for (uint32_t s = r->newest + 1u; s != seq; s++) {
                bit_clear(r, s);
            }
        }
        r->newest = seq;
    }
    bit_set(r, seq);
    return res;
}

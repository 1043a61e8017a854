/*
 * sketch: a DDSketch-style quantile sketch with relative accuracy alpha.
 *
 * Mapping. gamma = 2^(1/n), with n the smallest whole number of buckets per
 * octave for which (gamma - 1) / (gamma + 1) <= alpha (n = 70 at alpha
 * 0.005, so gamma = 1.00995 and the accuracy is 0.00495). A nonzero value x
 * lands in the bucket with index k = ceil(log_gamma |x|) = ceil(n log2 |x|),
 * i.e. the bucket (gamma^(k-1), gamma^k]; the bucket's representative value
 * 2 gamma^k / (gamma + 1) is within alpha relative of every value in it.
 * Because gamma is an n-th root of two, k = n * e + j for |x| = 2^e * f,
 * f in [1, 2), and j = ceil(n log2 f) comes from a small table indexed by the
 * top bits of the mantissa plus one comparison with the bucket boundary that
 * falls inside that table cell: no log() per value. (Alphas so small that the
 * table would exceed SG_SKETCH_TABLE_MAX cells use log2() for the same
 * mapping.) Positive and negative values have separate stores (indexed by
 * magnitude); exact zeros have their own count. Denormals and magnitudes up
 * to DBL_MAX are indexed normally (|k| < 77 000 at alpha 0.005), so no value
 * is forced to zero.
 *
 * Stores are sparse: sorted arrays of bin indexes and counts, so memory is
 * proportional to the distinct buckets used. Their blocks come in size
 * classes (8, 16, 32, ... bins) from free lists kept in the shared params:
 * reset and destroy return a sketch's blocks there, and growth takes the
 * next class from there, so once the free lists hold the peak demand no
 * sketch operation allocates. sg_sketch_params_destroy() frees the lists.
 *
 * Memory bound: each store holds at most max_bins bins. When a store would
 * exceed it, its bins for the lowest values are collapsed into their
 * neighbour (positive store: smallest magnitudes; negative store: largest
 * magnitudes, i.e. the most negative values). Quantiles at or below the
 * collapsed range lose the alpha guarantee; the higher ones keep it. At
 * alpha 0.005 and 4096 bins a store spans about 17 decades before any
 * collapse happens.
 *
 * Quantile q reports the value of the element at 0-based rank
 * floor(q * (count - 1)) of the sorted values, within alpha relative,
 * clamped to the exact [min, max] of the values added (ranks 0 and count - 1
 * give min and max exactly).
 *
 * One thread; no I/O.
 */
#ifndef SG_SKETCH_H
#define SG_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#define SG_SKETCH_DEFAULT_ALPHA 0.005
#define SG_SKETCH_DEFAULT_MAX_BINS 4096u

#define SG_SKETCH_TABLE_MAX 1024u /* mantissa-table cells at most (alpha >= about 0.001) */
#define SG_SKETCH_CLASSES 28u      /* block size classes: 8 << c bins, up to 2^30 */

/* Mapping and limits shared by many sketches (one per engine), and the free
 * lists of bin blocks those sketches share. Also counts the heap bytes of
 * every bin block (in use or free). */
struct sg_sketch_params {
    double alpha;         /* configured relative accuracy, 1e-6 <= alpha < 0.5 */
    double gamma;         /* 2^(1/n): bucket k is (gamma^(k-1), gamma^k] */
    double log_gamma;     /* ln(gamma) */
    double log_rep;       /* ln(2 / (1 + gamma)): representative = exp(k ln gamma + log_rep) */
    uint32_t n;           /* buckets per octave */
    uint32_t table_shift; /* 52 - table bits; 0 when the table is not used (log2 path) */
    uint32_t max_bins;    /* per store, >= 2 */
    uint32_t nclasses;    /* size classes in use: class nclasses - 1 holds max_bins */
    size_t bytes;         /* heap bytes of bin blocks, in use or on the free lists */
    void *free_blocks[SG_SKETCH_CLASSES]; /* per size class, linked through the block */
    uint64_t bound[SG_SKETCH_TABLE_MAX];  /* mantissa of the boundary in the cell, or ~0 */
    uint32_t base[SG_SKETCH_TABLE_MAX];   /* boundaries below the cell */
};

/* Bins of one sign, ascending by index: idx[i] and cnt[i] for i < nbins. Both
 * arrays live in one allocation (cnt right after cap indexes). */
struct sg_sketch_store {
    int32_t *idx;
    uint64_t *cnt;
    uint32_t nbins;
    uint32_t cls; /* size class of the block; meaningful while idx != NULL */
};

struct sg_sketch {
    struct sg_sketch_params *params; /* not owned; must outlive the sketch */
    struct sg_sketch_store pos;      /* x > 0, by ceil(log_gamma x) */
    struct sg_sketch_store neg;      /* x < 0, by ceil(log_gamma -x) */
    uint64_t zero_count;             /* x == 0 (either sign) */
    uint64_t count;                  /* all values */
    double min, max;                 /* exact extremes; +inf/-inf when empty */
};

/* Bucket of one value, computed once and added to several sketches with the
 * same params (e.g. one per window width). sign: 1, -1, or 0 for zero. */
struct sg_sketch_key {
    int32_t index;
    int32_t sign;
};

/* Fills p for relative accuracy alpha (1e-6 <= alpha < 0.5) and max_bins per store
 * (>= 2; 0 means SG_SKETCH_DEFAULT_MAX_BINS). Returns 0, or SG_EINVAL with p
 * untouched. p must not be copied once a sketch uses it. */
int sg_sketch_params_init(struct sg_sketch_params *p, double alpha, uint32_t max_bins);

/* Frees the blocks on p's free lists. Every sketch using p must have been
 * destroyed first. NULL is a no-op. */
void sg_sketch_params_destroy(struct sg_sketch_params *p);

/* Makes s an empty sketch using params (no allocation yet). */
void sg_sketch_init(struct sg_sketch *s, struct sg_sketch_params *params);

/* Returns the bins to the params' free lists; s may be initialised again.
 * NULL is a no-op. */
void sg_sketch_destroy(struct sg_sketch *s);

/* Empties s; its bins go back to the params' free lists. */
void sg_sketch_reset(struct sg_sketch *s);

/* Bucket of a finite value x under p. */
struct sg_sketch_key sg_sketch_key_of(const struct sg_sketch_params *p, double x);

/* Adds finite x whose key is k (= sg_sketch_key_of(s->params, x)). Allocates
 * only when a store outgrows its block and the free list of the next size
 * class is empty (aborts on OOM). */
void sg_sketch_add_key(struct sg_sketch *s, struct sg_sketch_key k, double x);

/* Adds x. Returns 0, or SG_EINVAL for a non-finite x (nothing changed). */
int sg_sketch_add(struct sg_sketch *s, double x);

/* Value at 0-based rank floor(q * (count - 1)) within alpha relative (see the
 * top of this file), q clamped to [0, 1]. NAN when the sketch is empty. */
double sg_sketch_quantile(const struct sg_sketch *s, double q);

/* Number of values added. */
static inline uint64_t sg_sketch_count(const struct sg_sketch *s)
{
    return s->count;
}

/* Heap bytes of the bin blocks s holds now. */
size_t sg_sketch_memory_bytes(const struct sg_sketch *s);

#endif

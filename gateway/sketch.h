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
 * Stores are sparse: sorted arrays of bins, so memory is proportional to
 * the distinct buckets used. A store starts narrow: each bin is one 32-bit
 * word, (bucket - base) << 16 | count, with base fixed at the first bucket
 * minus 32768, so the words sort like the buckets and a bin costs 4 bytes.
 * Up to SG_SKETCH_INLINE bins live inside the store itself (no block, no
 * pointer chase); beyond that the store takes a block. A store widens to
 * the general format (int32 bucket + uint64 count, 12 bytes a bin) when a
 * count would pass 65535, a bucket falls outside base + [0, 65535] (values
 * about 10^141 times apart), or the store reaches max_bins. Blocks come in
 * size classes (4, 6, 8, 12, 16, 24, ... bins, narrow and wide apart) from
 * free lists kept in the shared params: reset and destroy return a sketch's
 * blocks there, and growth takes the next class from there, so once the free
 * lists hold the peak demand no sketch operation allocates. So that a past
 * peak is not held forever, sg_sketch_params_trim() keeps at most as many
 * free blocks of a class as were in use at once at the most since the
 * previous trim, and frees the rest. sg_sketch_params_destroy() frees the
 * lists.
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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SG_SKETCH_DEFAULT_ALPHA 0.005
#define SG_SKETCH_DEFAULT_MAX_BINS 4096u
#define SG_SKETCH_TABLE_MAX 1024u /* mantissa-table cells at most (alpha >= about 0.001) */
#define SG_SKETCH_CLASSES 48u     /* block size classes: 4, 6, 8, 12, ... bins, up to 2^24 */
#define SG_SKETCH_INLINE 2u       /* narrow bins held inside a store */
#define SG_SKETCH_MAX_BINS_LIMIT (1u << 24)

/* Mapping and limits shared by many sketches (one per engine), and the free
 * lists of bin blocks those sketches share. Also counts the heap bytes of
 * every bin block (in use or free). Every sketch function takes the params
 * its sketch was made with. */
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
    uint32_t cap[SG_SKETCH_CLASSES];         /* bins per block of a class (class 0: inline) */
    void *free_blocks[2][SG_SKETCH_CLASSES]; /* [wide][class], linked through the block */
    uint32_t nfree[2][SG_SKETCH_CLASSES];    /* blocks on each free list */
    uint32_t used[2][SG_SKETCH_CLASSES];     /* blocks of each class in sketches now */
    uint32_t peak[2][SG_SKETCH_CLASSES];     /* most of used[] since the last trim */
    uint64_t bound[SG_SKETCH_TABLE_MAX];     /* mantissa of the boundary in the cell, or ~0 */
    uint32_t base[SG_SKETCH_TABLE_MAX];      /* boundaries below the cell */
};

/* Bins of one sign, ascending by bucket. Narrow (wide == 0): packed words
 * (bucket - base) << 16 | count, inline while cls == 0, else in a block of
 * class cls. Wide: a block of class cls holding cap int32 buckets then cap
 * uint64 counts. */
struct sg_sketch_store {
    union {
        uint32_t inl[SG_SKETCH_INLINE];
        uint32_t *words;
        int32_t *idx;
    } u;
    int32_t base; /* narrow: bucket of offset 0 */
    uint32_t nbins : 24;
    uint32_t cls : 7;
    uint32_t wide : 1;
};

struct sg_sketch {
    struct sg_sketch_store pos; /* x > 0, by ceil(log_gamma x) */
    struct sg_sketch_store neg; /* x < 0, by ceil(log_gamma -x) */
    uint64_t zero_count;        /* x == 0 (either sign) */
    double min, max;            /* exact extremes; +inf/-inf when empty */
};

/* Bucket of one value, computed once and added to several sketches with the
 * same params (e.g. one per window width). sign: 1, -1, or 0 for zero. */
struct sg_sketch_key {
    int32_t index;
    int32_t sign;
};

/* Fills p for relative accuracy alpha (1e-6 <= alpha < 0.5) and max_bins per store
 * (2..SG_SKETCH_MAX_BINS_LIMIT; 0 means SG_SKETCH_DEFAULT_MAX_BINS). Returns 0, or
 * SG_EINVAL with p untouched. p must not be copied once a sketch uses it. */
int sg_sketch_params_init(struct sg_sketch_params *p, double alpha, uint32_t max_bins);

/* Frees the blocks on p's free lists. Every sketch using p must have been
 * destroyed first. NULL is a no-op. */
void sg_sketch_params_destroy(struct sg_sketch_params *p);

/* Frees the free blocks of each class beyond the most blocks of that class
 * in use at once since the previous trim, then starts a new period. Cheap
 * (one pass over the classes plus the blocks freed). Call it with a period
 * longer than the demand's cycle (the rollup engine: twice its widest window
 * plus the lateness), or the next cycle allocates again. Returns the bytes
 * freed. */
size_t sg_sketch_params_trim(struct sg_sketch_params *p);

/* Makes s an empty sketch (no allocation). */
void sg_sketch_init(struct sg_sketch *s);

/* Returns the bins to p's free lists; s may be initialised again. NULL is a
 * no-op. */
void sg_sketch_destroy(struct sg_sketch *s, struct sg_sketch_params *p);

/* Empties s; its bins go back to p's free lists. */
void sg_sketch_reset(struct sg_sketch *s, struct sg_sketch_params *p);

/* Bucket of a finite value x under p. */
struct sg_sketch_key sg_sketch_key_of(const struct sg_sketch_params *p, double x);

/* Adds finite x whose key is k (= sg_sketch_key_of(p, x)). reserve: bins
 * the store of k's sign is expected to reach (0: no idea); when that store
 * first outgrows its inline bins it takes a block of at least that many
 * (at most max_bins), instead of growing class by class. Many sketches that
 * grow at the same pace (windows of one epoch) would otherwise leave blocks
 * of every smaller class on the free lists. Allocates only when a store
 * outgrows its block and the free list of the class it needs is empty
 * (aborts on OOM). */
void sg_sketch_add_key(struct sg_sketch *s, struct sg_sketch_params *p, struct sg_sketch_key k,
                       double x, uint32_t reserve);

/* Adds x. Returns 0, or SG_EINVAL for a non-finite x (nothing changed). */
int sg_sketch_add(struct sg_sketch *s, struct sg_sketch_params *p, double x);

/* Value at 0-based rank floor(q * (count - 1)) within alpha relative (see the
 * top of this file), q clamped to [0, 1]. NAN when the sketch is empty.
 * count must be sg_sketch_count(s) (callers that know it save the pass). */
double sg_sketch_quantile(const struct sg_sketch *s, const struct sg_sketch_params *p, double q,
                          uint64_t count);

/* Number of values added (a pass over the bins). */
uint64_t sg_sketch_count(const struct sg_sketch *s, const struct sg_sketch_params *p);

/* Bins of one store (sign 1: positive, -1: negative): how many, and the
 * bucket and count of bin i < that, ascending by bucket. For tests and
 * diagnostics. */
uint32_t sg_sketch_nbins(const struct sg_sketch *s, int sign);
void sg_sketch_bin(const struct sg_sketch *s, const struct sg_sketch_params *p, int sign,
                   uint32_t i, int32_t *bucket, uint64_t *count);

/* True when the store of that sign uses the wide (12 bytes a bin) format. */
bool sg_sketch_is_wide(const struct sg_sketch *s, int sign);

/* Heap bytes of the bin blocks s holds now (inline bins cost none). */
size_t sg_sketch_memory_bytes(const struct sg_sketch *s, const struct sg_sketch_params *p);

#endif

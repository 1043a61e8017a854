/*
 * sketch: DDSketch-style log-bucket quantile sketch (see sketch.h for the
 * mapping, the memory bound and the rank convention).
 *
 * Invariants: each store's idx[] is strictly ascending; nbins <= the
 * capacity of its size class <= max_bins rounded up to even; a store with
 * nbins == 0 holds no block; count == zero_count + the sum of all cnt[];
 * min/max are the exact extremes of the values added. The table boundaries
 * 2^(i/n) are rounded to the nearest double, so a value within one ulp of a
 * boundary may land in the neighbouring bucket, which moves its
 * representative by at most about 1e-16 relative beyond the accuracy.
 *
 * One thread; allocation only when a store grows into a size class whose
 * free list is empty.
 */
#include "sketch.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define STORE_MIN_CAP 8u
#define MANT_BITS 52u
#define MANT_MASK ((UINT64_C(1) << MANT_BITS) - 1u)
#define MAX_BUCKETS_PER_OCTAVE (1u << 20) /* keeps |k| < 2^31 for every double */

/* Fills the mantissa table: cell c covers mantissas [c, c + 1) << shift and
 * holds at most one boundary 2^(i/n) (the cells are narrower than the
 * smallest gap 2^(1/n) - 1). */
static void table_init(struct sg_sketch_params *p, uint32_t bits)
{
    uint32_t cells = 1u << bits;
    uint32_t shift = MANT_BITS - bits;
    for (uint32_t c = 0; c < cells; c++) {
        p->bound[c] = UINT64_MAX;
        p->base[c] = 0;
    }
    /* Boundary i's mantissa, then base[c] = boundaries in cells below c. */
    for (uint32_t i = 0; i < p->n; i++) {
        double b = (double)exp2l((long double)i / (long double)p->n);
        uint64_t bits64;
        memcpy(&bits64, &b, sizeof bits64);
        uint64_t mant = b >= 2.0 ? MANT_MASK : bits64 & MANT_MASK;
        uint32_t c = (uint32_t)(mant >> shift);
        p->bound[c] = mant;
        if (c + 1u < cells) {
            p->base[c + 1u]++;
        }
    }
    for (uint32_t c = 1; c < cells; c++) {
        p->base[c] += p->base[c - 1u];
    }
    p->table_shift = shift;
}

int sg_sketch_params_init(struct sg_sketch_params *p, double alpha, uint32_t max_bins)
{
    if (p == NULL || !(alpha >= 1e-6 && alpha < 0.5)) {
        return SG_EINVAL;
    }
    if (max_bins == 0) {
        max_bins = SG_SKETCH_DEFAULT_MAX_BINS;
    }
    if (max_bins < 2 || max_bins > (1u << 30)) {
        return SG_EINVAL;
    }
    /* The smallest n with (gamma - 1) / (gamma + 1) <= alpha for gamma =
     * 2^(1/n), i.e. n >= 1 / log2((1 + alpha) / (1 - alpha)). */
    double limit = (1.0 + alpha) / (1.0 - alpha);
    double nd = ceil(1.0 / log2(limit));
    if (nd < 1.0) {
        nd = 1.0;
    }
    uint32_t n = (uint32_t)nd;
    while (n > 1 && (exp2(1.0 / (double)(n - 1u)) - 1.0) / (exp2(1.0 / (double)(n - 1u)) + 1.0) <=
                        alpha) {
        n--;
    }
    while ((exp2(1.0 / (double)n) - 1.0) / (exp2(1.0 / (double)n) + 1.0) > alpha) {
        n++;
    }
    if (n > MAX_BUCKETS_PER_OCTAVE) {
        return SG_EINVAL;
    }
    memset(p, 0, sizeof(*p));
    p->alpha = alpha;
    p->n = n;
    p->gamma = exp2(1.0 / (double)n);
    p->log_gamma = log(2.0) / (double)n;
    p->log_rep = log(2.0 / (1.0 + p->gamma));
    p->max_bins = max_bins;
    /* Size classes up to the one that holds max_bins. */
    uint32_t top = (max_bins + 1u) & ~1u;
    uint32_t cls = 0;
    while ((STORE_MIN_CAP << cls) < top) {
        cls++;
    }
    p->nclasses = cls + 1u;
    /* Cells narrower than the smallest boundary gap, with a factor 2 to
     * spare for the rounding of the boundaries. */
    double gap = p->gamma - 1.0;
    uint32_t bits = 1;
    while (bits < MANT_BITS && ldexp(1.0, -(int)bits) * 2.0 > gap) {
        bits++;
    }
    if ((1u << bits) <= SG_SKETCH_TABLE_MAX && bits < MANT_BITS) {
        table_init(p, bits);
    } else {
        p->table_shift = 0;
    }
    return 0;
}

static uint32_t class_cap(const struct sg_sketch_params *p, uint32_t cls)
{
    uint32_t top = (p->max_bins + 1u) & ~1u;
    uint32_t cap = STORE_MIN_CAP << cls;
    return cap < top ? cap : top;
}

static size_t block_bytes(uint32_t cap)
{
    /* cap is even (a power of two >= 8, or max_bins rounded up to even), so
     * the counts that follow the indexes are 8-byte aligned. */
    return (size_t)cap * (sizeof(int32_t) + sizeof(uint64_t));
}

void sg_sketch_params_destroy(struct sg_sketch_params *p)
{
    if (p == NULL) {
        return;
    }
    for (uint32_t c = 0; c < SG_SKETCH_CLASSES; c++) {
        while (p->free_blocks[c] != NULL) {
            void *b = p->free_blocks[c];
            memcpy(&p->free_blocks[c], b, sizeof(void *));
            p->bytes -= block_bytes(class_cap(p, c));
            free(b);
        }
    }
}

static void store_init(struct sg_sketch_store *st)
{
    st->idx = NULL;
    st->cnt = NULL;
    st->nbins = 0;
    st->cls = 0;
}

/* Returns the store's block to its class's free list. */
static void store_release(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    if (st->idx != NULL) {
        void *b = st->idx;
        memcpy(b, &p->free_blocks[st->cls], sizeof(void *));
        p->free_blocks[st->cls] = b;
    }
    store_init(st);
}

static void store_grow(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    uint32_t ncls = st->idx == NULL ? 0 : st->cls + 1u;
    uint32_t ncap = class_cap(p, ncls);
    char *mem = p->free_blocks[ncls];
    if (mem != NULL) {
        memcpy(&p->free_blocks[ncls], mem, sizeof(void *));
    } else {
        mem = sg_xmalloc(block_bytes(ncap));
        p->bytes += block_bytes(ncap);
    }
    int32_t *nidx = (int32_t *)(void *)mem;
    uint64_t *ncnt = (uint64_t *)(void *)(mem + (size_t)ncap * sizeof(int32_t));
    if (st->nbins > 0) {
        memcpy(nidx, st->idx, st->nbins * sizeof(int32_t));
        memcpy(ncnt, st->cnt, st->nbins * sizeof(uint64_t));
    }
    uint32_t n = st->nbins;
    store_release(p, st);
    st->idx = nidx;
    st->cnt = ncnt;
    st->nbins = n;
    st->cls = ncls;
}

static inline uint32_t store_cap(const struct sg_sketch_params *p, const struct sg_sketch_store *st)
{
    return st->idx == NULL ? 0 : class_cap(p, st->cls);
}

/* First position whose index is >= k. */
static inline uint32_t store_lower_bound(const struct sg_sketch_store *st, int32_t k)
{
    uint32_t lo = 0;
    uint32_t hi = st->nbins;
    while (lo < hi) {
        uint32_t mid = (lo + hi) >> 1;
        if (st->idx[mid] < k) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void store_insert_at(struct sg_sketch_store *st, uint32_t i, int32_t k)
{
    uint32_t tail = st->nbins - i;
    if (tail > 0) {
        memmove(st->idx + i + 1, st->idx + i, tail * sizeof(int32_t));
        memmove(st->cnt + i + 1, st->cnt + i, tail * sizeof(uint64_t));
    }
    st->idx[i] = k;
    st->cnt[i] = 1;
    st->nbins++;
}

/* Adds one value of bucket k. collapse_low: when full, merge the bins of the
 * lowest indexes (positive store); otherwise the highest (negative store,
 * whose highest indexes are the most negative values). */
static void store_add(struct sg_sketch_params *p, struct sg_sketch_store *st, int32_t k,
                      bool collapse_low)
{
    /* Fast path: sensor values mostly fall in the highest or lowest bin. */
    uint32_t n = st->nbins;
    if (n > 0 && st->idx[n - 1] == k) {
        st->cnt[n - 1]++;
        return;
    }
    uint32_t i = store_lower_bound(st, k);
    if (i < n && st->idx[i] == k) {
        st->cnt[i]++;
        return;
    }
    if (n < p->max_bins) {
        if (n == store_cap(p, st)) {
            store_grow(p, st);
        }
        store_insert_at(st, i, k);
        return;
    }
    /* Full: collapse instead of growing. */
    if (collapse_low) {
        if (i == 0) {
            st->cnt[0]++;
            return;
        }
        if (i == 1) {
            /* k becomes the lowest bin and absorbs the old lowest one. */
            st->idx[0] = k;
            st->cnt[0]++;
            return;
        }
        /* Merge bin 0 into bin 1, then insert k at i - 1 after shifting
         * bins 1 .. i-1 one place down. */
        st->cnt[1] += st->cnt[0];
        memmove(st->idx, st->idx + 1, (i - 1) * sizeof(int32_t));
        memmove(st->cnt, st->cnt + 1, (i - 1) * sizeof(uint64_t));
        st->idx[i - 1] = k;
        st->cnt[i - 1] = 1;
    } else {
        if (i == n) {
            st->cnt[n - 1]++;
            return;
        }
        if (i == n - 1) {
            /* k becomes the highest bin and absorbs the old highest one. */
            st->idx[n - 1] = k;
            st->cnt[n - 1]++;
            return;
        }
        /* Merge the last bin into the one before it, then insert k at i. */
        st->cnt[n - 2] += st->cnt[n - 1];
        st->nbins--;
        store_insert_at(st, i, k);
    }
}

void sg_sketch_init(struct sg_sketch *s, struct sg_sketch_params *params)
{
    s->params = params;
    store_init(&s->pos);
    store_init(&s->neg);
    s->zero_count = 0;
    s->count = 0;
    s->min = INFINITY;
    s->max = -INFINITY;
}

void sg_sketch_destroy(struct sg_sketch *s)
{
    if (s == NULL) {
        return;
    }
    store_release(s->params, &s->pos);
    store_release(s->params, &s->neg);
    sg_sketch_init(s, s->params);
}

void sg_sketch_reset(struct sg_sketch *s)
{
    store_release(s->params, &s->pos);
    store_release(s->params, &s->neg);
    s->zero_count = 0;
    s->count = 0;
    s->min = INFINITY;
    s->max = -INFINITY;
}

struct sg_sketch_key sg_sketch_key_of(const struct sg_sketch_params *p, double x)
{
    struct sg_sketch_key k = {0, 0};
    if (x == 0.0) {
        return k;
    }
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    k.sign = (bits >> 63) ? -1 : 1;
    int32_t e = (int32_t)((bits >> MANT_BITS) & 0x7ffu);
    if (e == 0) {
        /* Denormal: scale by 2^64 (exact) to normalise, and take it back
         * out of the exponent. */
        double y = fabs(x) * 0x1p64;
        memcpy(&bits, &y, sizeof bits);
        e = (int32_t)((bits >> MANT_BITS) & 0x7ffu) - 64;
    }
    e -= 1023;
    uint64_t mant = bits & MANT_MASK;
    int32_t j;
    if (p->table_shift != 0) {
        uint32_t c = (uint32_t)(mant >> p->table_shift);
        j = (int32_t)p->base[c] + (mant > p->bound[c]);
    } else {
        /* The same mapping for alphas too small for the table. */
        double f;
        uint64_t fb = mant | (UINT64_C(1023) << MANT_BITS);
        memcpy(&f, &fb, sizeof f);
        j = (int32_t)ceil(log2(f) * (double)p->n);
    }
    k.index = e * (int32_t)p->n + j;
    return k;
}

void sg_sketch_add_key(struct sg_sketch *s, struct sg_sketch_key k, double x)
{
    if (k.sign > 0) {
        store_add(s->params, &s->pos, k.index, true);
    } else if (k.sign < 0) {
        store_add(s->params, &s->neg, k.index, false);
    } else {
        s->zero_count++;
    }
    s->count++;
    if (x < s->min) {
        s->min = x;
    }
    if (x > s->max) {
        s->max = x;
    }
}

int sg_sketch_add(struct sg_sketch *s, double x)
{
    if (!isfinite(x)) {
        return SG_EINVAL;
    }
    sg_sketch_add_key(s, sg_sketch_key_of(s->params, x), x);
    return 0;
}

static double representative(const struct sg_sketch_params *p, int32_t k)
{
    /* One exp() of the whole exponent: gamma^k alone would overflow for the
     * top bucket even where the representative does not. */
    return exp((double)k * p->log_gamma + p->log_rep);
}

double sg_sketch_quantile(const struct sg_sketch *s, double q)
{
    if (s->count == 0) {
        return NAN;
    }
    if (!(q > 0.0)) {
        q = 0.0;
    } else if (q > 1.0) {
        q = 1.0;
    }
    /* The rank convention of the contract: element floor(q * (count - 1)),
     * 0-based, of the sorted values. The element sits in the first bin whose
     * cumulative count exceeds the rank. */
    uint64_t rank = (uint64_t)floor(q * (double)(s->count - 1));
    /* The extremes are known exactly. */
    if (rank == 0) {
        return s->min;
    }
    if (rank >= s->count - 1) {
        return s->max;
    }
    uint64_t cum = 0;
    double v = 0.0;
    bool found = false;

    /* Negative values, most negative (highest magnitude index) first. */
    for (uint32_t i = s->neg.nbins; i-- > 0;) {
        cum += s->neg.cnt[i];
        if (cum > rank) {
            v = -representative(s->params, s->neg.idx[i]);
            found = true;
            break;
        }
    }
    if (!found) {
        cum += s->zero_count;
        if (cum > rank) {
            v = 0.0;
            found = true;
        }
    }
    if (!found) {
        for (uint32_t i = 0; i < s->pos.nbins; i++) {
            cum += s->pos.cnt[i];
            if (cum > rank) {
                v = representative(s->params, s->pos.idx[i]);
                found = true;
                break;
            }
        }
    }
    if (!found) {
        v = s->max; /* unreachable while count matches the bins */
    }
    if (v < s->min) {
        v = s->min;
    }
    if (v > s->max) {
        v = s->max;
    }
    return v;
}

size_t sg_sketch_memory_bytes(const struct sg_sketch *s)
{
    return block_bytes(store_cap(s->params, &s->pos)) + block_bytes(store_cap(s->params, &s->neg));
}

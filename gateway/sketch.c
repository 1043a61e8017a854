/*
 * sketch: DDSketch-style log-bucket quantile sketch (see sketch.h for the
 * mapping, the memory bound and the rank convention).
 *
 * Invariants: each store's idx[] is strictly ascending; nbins <= cap <=
 * params->max_bins; count == zero_count + the sum of all cnt[]; min/max are
 * the exact extremes of the values added. Rounding of log() at a bucket
 * boundary may put a value in the neighbouring bucket, which moves its
 * representative by at most about 1e-13 relative beyond alpha.
 *
 * One thread; allocation only on store growth (amortised doubling).
 */
#include "sketch.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define STORE_MIN_CAP 8u

int sg_sketch_params_init(struct sg_sketch_params *p, double alpha, uint32_t max_bins)
{
    if (p == NULL || !(alpha > 0.0 && alpha < 0.5)) {
        return SG_EINVAL;
    }
    if (max_bins == 0) {
        max_bins = SG_SKETCH_DEFAULT_MAX_BINS;
    }
    if (max_bins < 2 || max_bins > (1u << 30)) {
        return SG_EINVAL;
    }
    p->alpha = alpha;
    p->gamma = (1.0 + alpha) / (1.0 - alpha);
    p->log_gamma = log1p(2.0 * alpha / (1.0 - alpha));
    p->inv_log_gamma = 1.0 / p->log_gamma;
    p->log_rep = log(2.0 / (1.0 + p->gamma));
    p->max_bins = max_bins;
    p->bytes = 0;
    return 0;
}

static void store_init(struct sg_sketch_store *st)
{
    st->idx = NULL;
    st->cnt = NULL;
    st->nbins = 0;
    st->cap = 0;
}

static size_t store_bytes(uint32_t cap)
{
    /* cap is even (a power of two >= 8, or max_bins rounded up to even), so
     * the counts that follow the indexes are 8-byte aligned. */
    return (size_t)cap * (sizeof(int32_t) + sizeof(uint64_t));
}

static void store_destroy(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    if (st->cap > 0) {
        p->bytes -= store_bytes(st->cap);
        free(st->idx);
    }
    store_init(st);
}

static void store_grow(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    uint32_t limit = (p->max_bins + 1u) & ~1u;
    uint32_t ncap = st->cap == 0 ? STORE_MIN_CAP : st->cap * 2u;
    if (ncap > limit) {
        ncap = limit;
    }
    char *mem = sg_xmalloc(store_bytes(ncap));
    int32_t *nidx = (int32_t *)(void *)mem;
    uint64_t *ncnt = (uint64_t *)(void *)(mem + (size_t)ncap * sizeof(int32_t));
    if (st->nbins > 0) {
        memcpy(nidx, st->idx, st->nbins * sizeof(int32_t));
        memcpy(ncnt, st->cnt, st->nbins * sizeof(uint64_t));
    }
    if (st->cap > 0) {
        p->bytes -= store_bytes(st->cap);
        free(st->idx);
    }
    p->bytes += store_bytes(ncap);
    st->idx = nidx;
    st->cnt = ncnt;
    st->cap = ncap;
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
        if (n == st->cap) {
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
    store_destroy(s->params, &s->pos);
    store_destroy(s->params, &s->neg);
    sg_sketch_init(s, s->params);
}

void sg_sketch_reset(struct sg_sketch *s)
{
    s->pos.nbins = 0;
    s->neg.nbins = 0;
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
    double m = fabs(x);
    k.sign = x > 0.0 ? 1 : -1;
    /* |log(m)| <= 745 for every finite nonzero double, so the index stays far
     * inside int32 range for any alpha above 1e-5. */
    k.index = (int32_t)ceil(log(m) * p->inv_log_gamma);
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
    return store_bytes(s->pos.cap) + store_bytes(s->neg.cap);
}

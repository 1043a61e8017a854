/*
 * sketch: DDSketch-style log-bucket quantile sketch (see sketch.h for the
 * mapping, the memory bound and the rank convention).
 *
 * Invariants: each store's buckets are strictly ascending (narrow: the
 * packed words are, since the offset is in the high half and counts are
 * 1..65535); nbins <= the capacity of its class <= max_bins rounded up to
 * even; a store with nbins == 0 is narrow, inline and holds no block; a
 * narrow store has nbins <= max_bins, a wide one starts at class >= 1;
 * min/max are the exact extremes of the values added; used[w][c] counts the
 * blocks of class c held by sketches, nfree[w][c] those on the free list. The table boundaries
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

#define NARROW_BIAS 32768 /* offset of the first bucket of a narrow store */
#define NARROW_MAX_OFF 65535
#define NARROW_CNT_MASK 0xffffu
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
    if (max_bins < 2 || max_bins > SG_SKETCH_MAX_BINS_LIMIT) {
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
    while (n > 1 &&
           (exp2(1.0 / (double)(n - 1u)) - 1.0) / (exp2(1.0 / (double)(n - 1u)) + 1.0) <= alpha) {
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
    /* Size classes up to the one that holds max_bins (rounded up to even,
     * so the counts of a wide block are 8-byte aligned): class 0 is the
     * inline store, then 4, 6, 8, 12, 16, 24, ... bins. */
    uint32_t top = (max_bins + 1u) & ~1u;
    p->cap[0] = SG_SKETCH_INLINE;
    uint32_t cls = 0;
    do { /* at least class 1: a wide store needs a block */
        cls++;
        uint64_t cap =
            (cls & 1u) ? (UINT64_C(4) << ((cls - 1u) / 2u)) : (UINT64_C(6) << ((cls - 2u) / 2u));
        p->cap[cls] = cap < top ? (uint32_t)cap : top;
    } while (p->cap[cls] < top);
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

static size_t block_bytes(const struct sg_sketch_params *p, uint32_t wide, uint32_t cls)
{
    return (size_t)p->cap[cls] * (wide ? sizeof(int32_t) + sizeof(uint64_t) : sizeof(uint32_t));
}

void sg_sketch_params_destroy(struct sg_sketch_params *p)
{
    if (p == NULL) {
        return;
    }
    for (uint32_t w = 0; w < 2; w++) {
        for (uint32_t c = 0; c < SG_SKETCH_CLASSES; c++) {
            while (p->free_blocks[w][c] != NULL) {
                void *b = p->free_blocks[w][c];
                memcpy(&p->free_blocks[w][c], b, sizeof(void *));
                p->bytes -= block_bytes(p, w, c);
                p->nfree[w][c]--;
                free(b);
            }
        }
    }
}

size_t sg_sketch_params_trim(struct sg_sketch_params *p)
{
    size_t freed = 0;
    for (uint32_t w = 0; w < 2; w++) {
        for (uint32_t c = 1; c < p->nclasses; c++) {
            while (p->nfree[w][c] > p->peak[w][c]) {
                void *b = p->free_blocks[w][c];
                memcpy(&p->free_blocks[w][c], b, sizeof(void *));
                p->nfree[w][c]--;
                freed += block_bytes(p, w, c);
                free(b);
            }
            p->peak[w][c] = p->used[w][c];
        }
    }
    p->bytes -= freed;
    return freed;
}

/* A block of class cls (>= 1), from the free list or the heap. */
static void *block_take(struct sg_sketch_params *p, uint32_t wide, uint32_t cls)
{
    void *b = p->free_blocks[wide][cls];
    if (b != NULL) {
        memcpy(&p->free_blocks[wide][cls], b, sizeof(void *));
        p->nfree[wide][cls]--;
    } else {
        b = sg_xmalloc(block_bytes(p, wide, cls));
        p->bytes += block_bytes(p, wide, cls);
    }
    if (++p->used[wide][cls] > p->peak[wide][cls]) {
        p->peak[wide][cls] = p->used[wide][cls];
    }
    return b;
}

static void block_put(struct sg_sketch_params *p, uint32_t wide, uint32_t cls, void *b)
{
    memcpy(b, &p->free_blocks[wide][cls], sizeof(void *));
    p->free_blocks[wide][cls] = b;
    p->nfree[wide][cls]++;
    p->used[wide][cls]--;
}

static inline void store_init(struct sg_sketch_store *st)
{
    st->u.words = NULL;
    st->base = 0;
    st->nbins = 0;
    st->cls = 0;
    st->wide = 0;
}

/* Gives the store's block (if any) back to its free list; the store is
 * empty after. */
static void store_release(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    if (st->wide || st->cls != 0) {
        block_put(p, st->wide, st->cls, st->u.words);
    }
    store_init(st);
}

static inline uint32_t *narrow_words(struct sg_sketch_store *st)
{
    return st->cls == 0 ? st->u.inl : st->u.words;
}

static inline const uint32_t *narrow_words_c(const struct sg_sketch_store *st)
{
    return st->cls == 0 ? st->u.inl : st->u.words;
}

static inline uint64_t *wide_cnt(const struct sg_sketch_params *p, const struct sg_sketch_store *st)
{
    return (uint64_t *)(void *)((char *)st->u.idx + (size_t)p->cap[st->cls] * sizeof(int32_t));
}

/* Bucket and count of bin i. */
static inline void store_bin(const struct sg_sketch_params *p, const struct sg_sketch_store *st,
                             uint32_t i, int32_t *k, uint64_t *c)
{
    if (st->wide) {
        *k = st->u.idx[i];
        *c = wide_cnt(p, st)[i];
    } else {
        uint32_t w = narrow_words_c(st)[i];
        *k = (int32_t)((int64_t)st->base + (int64_t)(w >> 16));
        *c = w & NARROW_CNT_MASK;
    }
}

/* Turns a narrow store into a wide one with room for one more bin (or for
 * max_bins when it is full). */
static void store_widen(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    uint32_t n = st->nbins;
    uint32_t need = n < p->max_bins ? n + 1u : n;
    uint32_t cls = 1;
    while (p->cap[cls] < need) {
        cls++;
    }
    char *mem = block_take(p, 1, cls);
    int32_t *idx = (int32_t *)(void *)mem;
    uint64_t *cnt = (uint64_t *)(void *)(mem + (size_t)p->cap[cls] * sizeof(int32_t));
    for (uint32_t i = 0; i < n; i++) {
        int32_t k;
        uint64_t c;
        store_bin(p, st, i, &k, &c);
        idx[i] = k;
        cnt[i] = c;
    }
    store_release(p, st);
    st->u.idx = idx;
    st->nbins = n;
    st->cls = cls;
    st->wide = 1;
}

static void wide_grow(struct sg_sketch_params *p, struct sg_sketch_store *st)
{
    uint32_t ncls = st->cls + 1u;
    uint32_t ncap = p->cap[ncls];
    char *mem = block_take(p, 1, ncls);
    int32_t *nidx = (int32_t *)(void *)mem;
    uint64_t *ncnt = (uint64_t *)(void *)(mem + (size_t)ncap * sizeof(int32_t));
    uint32_t n = st->nbins;
    memcpy(nidx, st->u.idx, n * sizeof(int32_t));
    memcpy(ncnt, wide_cnt(p, st), n * sizeof(uint64_t));
    store_release(p, st);
    st->u.idx = nidx;
    st->nbins = n;
    st->cls = ncls;
    st->wide = 1;
}

/* First position whose bucket is >= k (wide store). */
static inline uint32_t wide_lower_bound(const int32_t *idx, uint32_t n, int32_t k)
{
    uint32_t lo = 0;
    uint32_t hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) >> 1;
        if (idx[mid] < k) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void wide_insert_at(const struct sg_sketch_params *p, struct sg_sketch_store *st, uint32_t i,
                           int32_t k)
{
    int32_t *idx = st->u.idx;
    uint64_t *cnt = wide_cnt(p, st);
    uint32_t tail = st->nbins - i;
    if (tail > 0) {
        memmove(idx + i + 1, idx + i, tail * sizeof(int32_t));
        memmove(cnt + i + 1, cnt + i, tail * sizeof(uint64_t));
    }
    idx[i] = k;
    cnt[i] = 1;
    st->nbins++;
}

/* Adds one value of bucket k to a wide store. collapse_low: when full,
 * merge the bins of the lowest indexes (positive store); otherwise the
 * highest (negative store, whose highest indexes are the most negative
 * values). */
static void wide_add(struct sg_sketch_params *p, struct sg_sketch_store *st, int32_t k,
                     bool collapse_low)
{
    int32_t *idx = st->u.idx;
    uint64_t *cnt = wide_cnt(p, st);
    uint32_t n = st->nbins;
    if (n > 0 && idx[n - 1] == k) {
        cnt[n - 1]++;
        return;
    }
    uint32_t i = wide_lower_bound(idx, n, k);
    if (i < n && idx[i] == k) {
        cnt[i]++;
        return;
    }
    if (n < p->max_bins) {
        if (n == p->cap[st->cls]) {
            wide_grow(p, st);
        }
        wide_insert_at(p, st, i, k);
        return;
    }
    /* Full: collapse instead of growing. */
    if (collapse_low) {
        if (i == 0) {
            cnt[0]++;
            return;
        }
        if (i == 1) {
            /* k becomes the lowest bin and absorbs the old lowest one. */
            idx[0] = k;
            cnt[0]++;
            return;
        }
        /* Merge bin 0 into bin 1, then insert k at i - 1 after shifting
         * bins 1 .. i-1 one place down. */
        cnt[1] += cnt[0];
        memmove(idx, idx + 1, (i - 1) * sizeof(int32_t));
        memmove(cnt, cnt + 1, (i - 1) * sizeof(uint64_t));
        idx[i - 1] = k;
        cnt[i - 1] = 1;
    } else {
        if (i == n) {
            cnt[n - 1]++;
            return;
        }
        if (i == n - 1) {
            /* k becomes the highest bin and absorbs the old highest one. */
            idx[n - 1] = k;
            cnt[n - 1]++;
            return;
        }
        /* Merge the last bin into the one before it, then insert k at i. */
        cnt[n - 2] += cnt[n - 1];
        st->nbins--;
        wide_insert_at(p, st, i, k);
    }
}

/* First position whose word is >= key in w[0..n), n >= 1; branch-free, as
 * the compares are unpredictable. */
static inline uint32_t narrow_lower_bound(const uint32_t *w, uint32_t n, uint32_t key)
{
    const uint32_t *b = w;
    uint32_t len = n;
    while (len > 1) {
        uint32_t half = len >> 1;
        b += (b[half - 1] < key) ? half : 0;
        len -= half;
    }
    return (uint32_t)(b - w) + (*b < key);
}

/* The rest of store_add() for a narrow store: k's bucket is off from the
 * base (or the store is empty, or off is out of range), i its lower bound
 * when in range. Inserts, grows, or widens. */
static void __attribute__((noinline))
narrow_add_slow(struct sg_sketch_params *p, struct sg_sketch_store *st, int32_t k, int64_t off,
                uint32_t i, bool collapse_low, uint32_t reserve)
{
    uint32_t n = st->nbins;
    if (n == 0) {
        st->base = k - NARROW_BIAS; /* |k| < 2^31 - 2^16: no overflow */
        st->u.inl[0] = ((uint32_t)NARROW_BIAS << 16) | 1u;
        st->nbins = 1;
        return;
    }
    uint32_t key = (uint32_t)off << 16;
    uint32_t *w = narrow_words(st);
    if (off < 0 || off > NARROW_MAX_OFF || n == p->max_bins ||
        (i < n && (w[i] & ~NARROW_CNT_MASK) == key)) {
        /* Out of the span, full, or the bin's count is at 65535. */
        store_widen(p, st);
        wide_add(p, st, k, collapse_low);
        return;
    }
    if (n == p->cap[st->cls]) {
        uint32_t ncls = st->cls + 1u;
        if (st->cls == 0 && reserve > n + 1u) {
            /* First block: the size the caller expects this store to reach,
             * so that it need not pass through (and leave on the free lists)
             * every smaller class on the way. */
            while (ncls + 1u < p->nclasses && p->cap[ncls] < reserve) {
                ncls++;
            }
        }
        int32_t base = st->base;
        uint32_t *nw = block_take(p, 0, ncls);
        memcpy(nw, w, i * sizeof(uint32_t));
        memcpy(nw + i + 1, w + i, (n - i) * sizeof(uint32_t));
        nw[i] = key | 1u;
        store_release(p, st);
        st->base = base;
        st->u.words = nw;
        st->nbins = n + 1u;
        st->cls = ncls;
        return;
    }
    memmove(w + i + 1, w + i, (n - i) * sizeof(uint32_t));
    w[i] = key | 1u;
    st->nbins = n + 1u;
}

/* Adds one value of bucket k (see wide_add() for collapse_low; reserve: see
 * sg_sketch_add_key()). The common case, a narrow store that already has
 * k's bin with room in its count, stays here. */
static inline void store_add(struct sg_sketch_params *p, struct sg_sketch_store *st, int32_t k,
                             bool collapse_low, uint32_t reserve)
{
    if (st->wide) {
        wide_add(p, st, k, collapse_low);
        return;
    }
    uint32_t n = st->nbins;
    int64_t off = (int64_t)k - (int64_t)st->base;
    uint32_t i = 0;
    if (n != 0 && off >= 0 && off <= NARROW_MAX_OFF) {
        uint32_t key = (uint32_t)off << 16;
        uint32_t *w = narrow_words(st);
        i = narrow_lower_bound(w, n, key);
        if (i < n && (w[i] & ~NARROW_CNT_MASK) == key &&
            (w[i] & NARROW_CNT_MASK) != NARROW_CNT_MASK) {
            w[i]++;
            return;
        }
    }
    narrow_add_slow(p, st, k, off, i, collapse_low, reserve);
}

void sg_sketch_init(struct sg_sketch *s)
{
    store_init(&s->pos);
    store_init(&s->neg);
    s->zero_count = 0;
    s->min = INFINITY;
    s->max = -INFINITY;
}

void sg_sketch_destroy(struct sg_sketch *s, struct sg_sketch_params *p)
{
    if (s == NULL) {
        return;
    }
    sg_sketch_reset(s, p);
}

void sg_sketch_reset(struct sg_sketch *s, struct sg_sketch_params *p)
{
    store_release(p, &s->pos);
    store_release(p, &s->neg);
    s->zero_count = 0;
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

void sg_sketch_add_key(struct sg_sketch *s, struct sg_sketch_params *p, struct sg_sketch_key k,
                       double x, uint32_t reserve)
{
    if (k.sign > 0) {
        store_add(p, &s->pos, k.index, true, reserve);
    } else if (k.sign < 0) {
        store_add(p, &s->neg, k.index, false, reserve);
    } else {
        s->zero_count++;
    }
    if (x < s->min) {
        s->min = x;
    }
    if (x > s->max) {
        s->max = x;
    }
}

int sg_sketch_add(struct sg_sketch *s, struct sg_sketch_params *p, double x)
{
    if (!isfinite(x)) {
        return SG_EINVAL;
    }
    sg_sketch_add_key(s, p, sg_sketch_key_of(p, x), x, 0);
    return 0;
}

static uint64_t store_total(const struct sg_sketch_params *p, const struct sg_sketch_store *st)
{
    uint64_t t = 0;
    if (st->wide) {
        const uint64_t *cnt = wide_cnt(p, st);
        for (uint32_t i = 0; i < st->nbins; i++) {
            t += cnt[i];
        }
    } else {
        const uint32_t *w = narrow_words_c(st);
        for (uint32_t i = 0; i < st->nbins; i++) {
            t += w[i] & NARROW_CNT_MASK;
        }
    }
    return t;
}

uint64_t sg_sketch_count(const struct sg_sketch *s, const struct sg_sketch_params *p)
{
    return s->zero_count + store_total(p, &s->pos) + store_total(p, &s->neg);
}

static double representative(const struct sg_sketch_params *p, int32_t k)
{
    /* One exp() of the whole exponent: gamma^k alone would overflow for the
     * top bucket even where the representative does not. */
    return exp((double)k * p->log_gamma + p->log_rep);
}

double sg_sketch_quantile(const struct sg_sketch *s, const struct sg_sketch_params *p, double q,
                          uint64_t count)
{
    if (count == 0) {
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
    uint64_t rank = (uint64_t)floor(q * (double)(count - 1));
    /* The extremes are known exactly. */
    if (rank == 0) {
        return s->min;
    }
    if (rank >= count - 1) {
        return s->max;
    }
    uint64_t cum = 0;
    double v = 0.0;
    bool found = false;
    int32_t k;
    uint64_t c;

    /* Negative values, most negative (highest magnitude index) first. */
    for (uint32_t i = s->neg.nbins; i-- > 0;) {
        store_bin(p, &s->neg, i, &k, &c);
        cum += c;
        if (cum > rank) {
            v = -representative(p, k);
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
            store_bin(p, &s->pos, i, &k, &c);
            cum += c;
            if (cum > rank) {
                v = representative(p, k);
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

uint32_t sg_sketch_nbins(const struct sg_sketch *s, int sign)
{
    return sign > 0 ? s->pos.nbins : s->neg.nbins;
}

void sg_sketch_bin(const struct sg_sketch *s, const struct sg_sketch_params *p, int sign,
                   uint32_t i, int32_t *bucket, uint64_t *count)
{
    store_bin(p, sign > 0 ? &s->pos : &s->neg, i, bucket, count);
}

bool sg_sketch_is_wide(const struct sg_sketch *s, int sign)
{
    return (sign > 0 ? s->pos.wide : s->neg.wide) != 0;
}

static size_t store_bytes(const struct sg_sketch_params *p, const struct sg_sketch_store *st)
{
    return st->wide || st->cls != 0 ? block_bytes(p, st->wide, st->cls) : 0;
}

size_t sg_sketch_memory_bytes(const struct sg_sketch *s, const struct sg_sketch_params *p)
{
    return store_bytes(p, &s->pos) + store_bytes(p, &s->neg);
}

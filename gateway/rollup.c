/*
 * rollup: the aggregation engine (rollup.h; rules in docs/SEMANTICS.md).
 *
 * Layout. Series live in a struct sg_series_table; each series record carries
 * a struct series_state payload: the greatest accepted ts_ms and, per window
 * width, the watermark closed_before_ms, the pending late count and a singly
 * linked list of its open windows, ascending by start (oldest at the head),
 * plus a hint to the window used last. Windows come from one of two pools
 * (one-channel kinds and ACCEL_G with three channels), each a set of fixed
 * 256-window chunks with a free list; a closed window's sketch bins go back
 * to the free lists of the engine's sketch params (sketch.h), where the next
 * window takes them, so in steady state no reading allocates.
 *
 * Invariants: an open window of width w has end = start + w >
 * closed_before_ms of its series and width; windows with count == 0 hold only
 * duplicates and are freed without being emitted; series_state.open is the
 * number of open windows of the series over all widths; every reading passed
 * to sg_rollup_add() increments exactly one verdicts[] counter (in finish()).
 *
 * Per-channel statistics: sum, Welford's running mean and M2 (numerically
 * stable population variance; rms comes from them too), the value at the
 * latest ts_ms, and a sketch that also keeps the exact min and max.
 *
 * Choices the semantics leave open: a flush (shutdown) also raises each
 * watermark to the end of the windows it emits, so a reading arriving after a
 * flush for such a window is late and no window is ever emitted twice. An
 * evicted series drops its pending late counts (its late readings were still
 * counted as verdicts). Readings are given cheap structural checks (id length,
 * kind, channel count, finite values) even when the decoder passed them, since
 * the engine's memory safety depends on them.
 *
 * Memory: a series costs about 300 bytes (see series.h) plus its open
 * windows: 56 + 88 * channels bytes each, with up to 2 sketch bins per sign
 * and channel inside the window; beyond that 4 bytes per bin (12 in the
 * rare wide format, sketch.h) in blocks of size classes 4, 6, 8, 12, ...
 * bins. Closed windows' blocks wait on free lists for the next windows;
 * every 1.25 widest windows plus the lateness the tick frees the free blocks
 * beyond the peak demand of that period. A store that outgrows its inline
 * bins reserves the running mean size of its (kind, channel, sign), so the
 * stores of one epoch, which grow in step, do not leave blocks of every
 * smaller class on the free lists.
 *
 * The emit callback must not call back into the engine.
 *
 * Loop thread only; pure (time is passed in).
 */
#include "rollup.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ring.h"
#include "series.h"
#include "sketch.h"

#define NONE UINT32_MAX
#define POOL_CHUNK_SHIFT 8u
#define POOL_CHUNK_WINDOWS (1u << POOL_CHUNK_SHIFT)

/* 88 bytes. rms needs no sum of squares: sum(x^2) / n = mean^2 + m2 / n,
 * two non-negative terms (no cancellation), each as accurate as a running
 * sum of squares. The sketch's count is the window's count (every accepted
 * reading adds a value to each channel). */
struct chan {
    double sum;
    double mean;         /* Welford running mean */
    double m2;           /* Welford sum of squared deviations from the mean */
    double last;         /* value of the first accepted reading at last_ts_ms */
    struct sg_sketch sk; /* quantiles, exact min and max */
};

/* 56 bytes before the channels. Widths are below 2^32 ms, so the first and
 * last ts fit as offsets from the start. */
struct window {
    uint64_t start_ms;
    uint64_t count; /* accepted readings */
    uint64_t duplicates;
    uint64_t faulty;
    uint32_t first_off; /* first ts_ms - start_ms */
    uint32_t last_off;  /* last ts_ms - start_ms */
    uint32_t seq_lo;    /* serially lowest accepted seq */
    uint32_t seq_hi;    /* serially highest accepted seq */
    uint32_t next;      /* next open window of the series and width, or NONE;
                         * free-list link when free */
    struct chan ch[];   /* pool->nchan channels */
};

struct pool {
    char **chunks;
    uint32_t nchunks;
    uint32_t hwm; /* windows ever handed out (their sketches are initialised) */
    uint32_t free_head;
    uint32_t nchan;
    size_t stride;
    size_t bytes;
};

struct width_state {
    uint64_t closed_before_ms; /* windows with end <= this are closed */
    uint64_t late_pending;     /* late readings not yet reported */
    uint32_t head;             /* oldest open window, or NONE */
    uint32_t hint;             /* window used last, or NONE */
};

struct series_state {
    uint64_t max_ts_ms; /* greatest accepted ts_ms; valid when has_max_ts */
    uint32_t open;      /* open windows over all widths */
    uint32_t has_max_ts;
    struct width_state w[]; /* one per configured width */
};

struct sg_rollup_engine {
    struct sg_rollup_opts opts;
    struct sg_series_table *series;
    struct sg_sketch_params sk;
    struct pool pools[2]; /* [0]: one channel, [1]: three channels */
    struct sg_rollup_stats stats;
    bool replaying; /* journal replay: late readings were counted before the crash */
    /* Per kind, channel and sign (0: positive, 1: negative): a running mean
     * (x16) of the bins of sketch stores that outgrew their inline bins, and
     * the bins a store reserves when it does so (sketch.h). */
    uint32_t bins_avg16[SG_KIND_MAX + 1][SG_MAX_CHANNELS][2];
    uint32_t reserve[SG_KIND_MAX + 1][SG_MAX_CHANNELS][2];
    uint64_t trim_period_ms;
    uint64_t next_trim_ms; /* gateway clock of the next sketch free-list trim; 0: unset */
};

static inline uint32_t kind_nchan(uint8_t kind)
{
    return kind == SG_KIND_ACCEL_G ? 3u : 1u;
}

static inline struct pool *pool_of(struct sg_rollup_engine *e, uint8_t kind)
{
    return &e->pools[kind == SG_KIND_ACCEL_G ? 1 : 0];
}

static inline uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s < a ? UINT64_MAX : s;
}

/* floor((t - L) / w) * w, or 0 when t < L: the gateway-clock and sensor
 * watermark formula of SEMANTICS.md. */
static inline uint64_t watermark(uint64_t t, uint64_t lateness_ms, uint64_t w)
{
    if (t < lateness_ms) {
        return 0;
    }
    uint64_t x = t - lateness_ms;
    return x - x % w;
}

/* ---- window pool ------------------------------------------------------ */

static void pool_init(struct pool *p, uint32_t nchan)
{
    memset(p, 0, sizeof(*p));
    p->free_head = NONE;
    p->nchan = nchan;
    p->stride = sizeof(struct window) + nchan * sizeof(struct chan);
}

static inline struct window *pool_get(const struct pool *p, uint32_t idx)
{
    return (struct window *)(void *)(p->chunks[idx >> POOL_CHUNK_SHIFT] +
                                     (size_t)(idx & (POOL_CHUNK_WINDOWS - 1u)) * p->stride);
}

static uint32_t pool_take(struct pool *p)
{
    uint32_t idx;
    if (p->free_head != NONE) {
        idx = p->free_head;
        p->free_head = pool_get(p, idx)->next;
        return idx;
    }
    idx = p->hwm;
    uint32_t c = idx >> POOL_CHUNK_SHIFT;
    if (c == p->nchunks) {
        p->chunks = sg_xrealloc(p->chunks, (size_t)(c + 1u) * sizeof(char *));
        p->chunks[c] = sg_xmalloc(POOL_CHUNK_WINDOWS * p->stride);
        p->nchunks = c + 1u;
        p->bytes += POOL_CHUNK_WINDOWS * p->stride + sizeof(char *);
    }
    p->hwm++;
    struct window *w = pool_get(p, idx);
    for (uint32_t c2 = 0; c2 < p->nchan; c2++) {
        sg_sketch_init(&w->ch[c2].sk);
    }
    return idx;
}

static void pool_put(struct pool *p, uint32_t idx)
{
    struct window *w = pool_get(p, idx);
    w->next = p->free_head;
    p->free_head = idx;
}

static void pool_destroy(struct pool *p, struct sg_sketch_params *sk)
{
    for (uint32_t i = 0; i < p->hwm; i++) {
        struct window *w = pool_get(p, i);
        for (uint32_t c = 0; c < p->nchan; c++) {
            sg_sketch_destroy(&w->ch[c].sk, sk);
        }
    }
    for (uint32_t c = 0; c < p->nchunks; c++) {
        free(p->chunks[c]);
    }
    free(p->chunks);
    memset(p, 0, sizeof(*p));
}

/* ---- engine lifecycle --------------------------------------------------- */

int sg_rollup_engine_new(struct sg_rollup_engine **out, const struct sg_rollup_opts *opts)
{
    if (out == NULL || opts == NULL || opts->nwindows < 1 || opts->nwindows > SG_MAX_WINDOWS ||
        opts->max_series < 1 || !sg_ring_nseqs_ok(opts->ring_seqs)) {
        return SG_EINVAL;
    }
    for (size_t i = 0; i < opts->nwindows; i++) {
        if (opts->windows_ms[i] == 0 || opts->windows_ms[i] > UINT32_MAX) {
            return SG_EINVAL;
        }
    }
    struct sg_sketch_params sk;
    if (sg_sketch_params_init(&sk, opts->sketch_alpha, 0) != 0) {
        return SG_EINVAL;
    }
    struct sg_series_opts so = {
        .max_series = opts->max_series,
        .ring_seqs = opts->ring_seqs,
        .payload_bytes = sizeof(struct series_state) + opts->nwindows * sizeof(struct width_state),
    };
    struct sg_series_table *t = NULL;
    int rc = sg_series_table_new(&t, &so);
    if (rc != 0) {
        return rc;
    }
    struct sg_rollup_engine *e = sg_xcalloc(1, sizeof(*e));
    e->opts = *opts;
    e->series = t;
    e->sk = sk;
    uint64_t widest = 0;
    for (size_t i = 0; i < opts->nwindows; i++) {
        if (opts->windows_ms[i] > widest) {
            widest = opts->windows_ms[i];
        }
    }
    /* Demand for bins repeats with the window widths (windows are epoch
     * aligned), so any period longer than the widest window plus the
     * lateness sees every class's peak of a cycle. */
    e->trim_period_ms = sat_add(sat_add(widest, widest / 4), opts->allowed_lateness_ms);
    if (e->trim_period_ms < 1000) {
        e->trim_period_ms = 1000;
    }
    pool_init(&e->pools[0], 1);
    pool_init(&e->pools[1], 3);
    *out = e;
    return 0;
}

void sg_rollup_engine_free(struct sg_rollup_engine *e)
{
    if (e == NULL) {
        return;
    }
    pool_destroy(&e->pools[0], &e->sk);
    pool_destroy(&e->pools[1], &e->sk);
    sg_sketch_params_destroy(&e->sk);
    sg_series_table_free(e->series);
    free(e);
}

const struct sg_rollup_stats *sg_rollup_stats(const struct sg_rollup_engine *e)
{
    return &e->stats;
}

size_t sg_rollup_memory_bytes(const struct sg_rollup_engine *e)
{
    return sizeof(*e) + sg_series_memory_bytes(e->series) + e->pools[0].bytes + e->pools[1].bytes +
           e->sk.bytes;
}

void sg_rollup_memory_detail(const struct sg_rollup_engine *e, struct sg_rollup_memory *out)
{
    out->series = sg_series_memory_bytes(e->series);
    out->windows = e->pools[0].bytes + e->pools[1].bytes;
    out->bins = e->sk.bytes;
}

/* ---- emitting ------------------------------------------------------------ */

static void emit_window(struct sg_rollup_engine *e, const struct sg_series *s,
                        struct width_state *ws, uint64_t width_ms, const struct window *win,
                        uint32_t nchan, bool partial)
{
    struct sg_rollup r;
    memcpy(r.sensor_id, s->sensor_id, (size_t)s->id_len + 1u);
    r.kind = s->kind;
    r.partial = partial;
    r.window_start_ms = win->start_ms;
    r.window_ms = width_ms;
    r.count = win->count;
    r.first_ts_ms = win->start_ms + win->first_off;
    r.last_ts_ms = win->start_ms + win->last_off;
    uint64_t span = (uint64_t)(uint32_t)(win->seq_hi - win->seq_lo) + 1u;
    r.gaps = span > win->count ? span - win->count : 0;
    r.duplicates = win->duplicates;
    r.faulty = win->faulty;
    r.late = ws->late_pending;
    ws->late_pending = 0;

    double n = (double)win->count;
    for (uint32_t c = 0; c < nchan; c++) {
        const struct chan *ch = &win->ch[c];
        r.channel = (uint8_t)c;
        r.min = ch->sk.min;
        r.max = ch->sk.max;
        r.sum = ch->sum;
        r.mean = ch->sum / n;
        r.stddev = ch->m2 > 0.0 ? sqrt(ch->m2 / n) : 0.0;
        r.rms = sqrt(ch->mean * ch->mean + ch->m2 / n);
        r.last = ch->last;
        r.p50 = sg_sketch_quantile(&ch->sk, &e->sk, 0.50, win->count);
        r.p95 = sg_sketch_quantile(&ch->sk, &e->sk, 0.95, win->count);
        r.p99 = sg_sketch_quantile(&ch->sk, &e->sk, 0.99, win->count);
        if (e->opts.emit != NULL) {
            e->opts.emit(e->opts.emit_ctx, &r);
        }
    }
    e->stats.rollups += nchan;
    e->stats.windows_closed++;
    if (partial) {
        e->stats.windows_partial++;
    }
}

/* Updates the expected size of the sketch stores of (kind, channel) from
 * one that is done: a running mean over the stores that needed a block, and
 * a reserve a sixteenth above it. */
static void learn_bins(struct sg_rollup_engine *e, uint8_t kind, uint32_t c,
                       const struct sg_sketch *sk)
{
    for (int j = 0; j < 2; j++) {
        uint32_t nb = sg_sketch_nbins(sk, j == 0 ? 1 : -1);
        if (nb <= SG_SKETCH_INLINE) {
            continue;
        }
        if (nb > 65535u) {
            nb = 65535u;
        }
        int64_t avg = e->bins_avg16[kind][c][j];
        avg += ((int64_t)nb * 16 - avg) / 8;
        e->bins_avg16[kind][c][j] = (uint32_t)avg;
        e->reserve[kind][c][j] = (uint32_t)(avg / 16 + avg / 256);
    }
}

/* Emits (oldest first) and frees the open windows of width i of series s that
 * are closed by its watermark, or all of them when flush is set. */
static void close_windows(struct sg_rollup_engine *e, struct sg_series *s, struct series_state *ss,
                          size_t i, bool flush)
{
    struct width_state *ws = &ss->w[i];
    uint64_t width_ms = e->opts.windows_ms[i];
    struct pool *p = pool_of(e, s->kind);
    while (ws->head != NONE) {
        uint32_t idx = ws->head;
        struct window *win = pool_get(p, idx);
        uint64_t end = sat_add(win->start_ms, width_ms);
        if (!flush && end > ws->closed_before_ms) {
            break;
        }
        if (flush && end > ws->closed_before_ms) {
            /* A flushed window is over: a reading for it later is late, so
             * no window is ever emitted twice. */
            ws->closed_before_ms = end;
        }
        if (win->count > 0) {
            emit_window(e, s, ws, width_ms, win, p->nchan, flush);
        }
        ws->head = win->next;
        if (ws->hint == idx) {
            ws->hint = NONE;
        }
        for (uint32_t c = 0; c < p->nchan; c++) {
            learn_bins(e, s->kind, c, &win->ch[c].sk);
            sg_sketch_reset(&win->ch[c].sk, &e->sk);
        }
        pool_put(p, idx);
        ss->open--;
        e->stats.open_windows--;
    }
}

/* Raises the watermark of width i to at least cb and closes what that closes. */
static inline void advance(struct sg_rollup_engine *e, struct sg_series *s, struct series_state *ss,
                           size_t i, uint64_t cb)
{
    struct width_state *ws = &ss->w[i];
    if (cb > ws->closed_before_ms) {
        ws->closed_before_ms = cb;
        close_windows(e, s, ss, i, false);
    }
}

/* ---- adding ---------------------------------------------------------------- */

static inline enum sg_verdict finish(struct sg_rollup_engine *e, enum sg_verdict v)
{
    e->stats.verdicts[v]++;
    return v;
}

static enum sg_verdict invalid(struct sg_rollup_engine *e, int reason)
{
    if (reason > 0 && reason < SG_INVALID_COUNT) {
        e->stats.invalid_by_reason[reason]++;
    }
    return finish(e, SG_VERDICT_INVALID);
}

/* Cheap structural checks that protect the engine itself (the decoder does
 * the full validation and sets r->invalid). */
static int structural_check(const struct sg_reading *r)
{
    if (r->id_len == 0 || r->id_len > SG_SENSOR_ID_MAX) {
        return SG_INVALID_SENSOR_ID;
    }
    if (r->kind < 1 || r->kind > SG_KIND_MAX) {
        return SG_INVALID_KIND;
    }
    if (r->nvalues != kind_nchan(r->kind)) {
        return SG_INVALID_CHANNELS;
    }
    for (uint32_t c = 0; c < r->nvalues; c++) {
        if (!isfinite(r->values[c])) {
            return SG_INVALID_VALUE;
        }
    }
    return SG_INVALID_NONE;
}

/* The open window of width i starting at start_ms, created (empty) if absent. */
static uint32_t window_get(struct sg_rollup_engine *e, struct series_state *ss, struct pool *p,
                           size_t i, uint64_t start_ms)
{
    struct width_state *ws = &ss->w[i];
    uint32_t prev = NONE;
    uint32_t cur = ws->head;
    while (cur != NONE) {
        struct window *w = pool_get(p, cur);
        if (w->start_ms >= start_ms) {
            if (w->start_ms == start_ms) {
                ws->hint = cur;
                return cur;
            }
            break;
        }
        prev = cur;
        cur = w->next;
    }
    uint32_t idx = pool_take(p);
    struct window *w = pool_get(p, idx);
    w->start_ms = start_ms;
    w->count = 0;
    w->duplicates = 0;
    w->faulty = 0;
    w->first_off = 0;
    w->last_off = 0;
    w->seq_lo = 0;
    w->seq_hi = 0;
    w->next = cur;
    if (prev == NONE) {
        ws->head = idx;
    } else {
        pool_get(p, prev)->next = idx;
    }
    ws->hint = idx;
    ss->open++;
    e->stats.open_windows++;
    return idx;
}

static inline void window_add(struct window *w, uint32_t nchan, struct sg_sketch_params *sk,
                              const uint32_t (*reserve)[2], const struct sg_reading *r,
                              const struct sg_sketch_key *keys)
{
    /* ts is inside the window, which is narrower than 2^32 ms. */
    uint32_t off = (uint32_t)(r->ts_ms - w->start_ms);
    if (w->count == 0) {
        w->first_off = off;
        w->last_off = off;
        w->seq_lo = r->seq;
        w->seq_hi = r->seq;
        for (uint32_t c = 0; c < nchan; c++) {
            struct chan *ch = &w->ch[c];
            ch->sum = 0.0;
            ch->mean = 0.0;
            ch->m2 = 0.0;
            ch->last = r->values[c];
        }
    } else {
        if (off < w->first_off) {
            w->first_off = off;
        }
        if (off > w->last_off) {
            /* Strictly later only: on a tie the first accepted value stays. */
            w->last_off = off;
            for (uint32_t c = 0; c < nchan; c++) {
                w->ch[c].last = r->values[c];
            }
        }
        if (sg_serial_lt(r->seq, w->seq_lo)) {
            w->seq_lo = r->seq;
        }
        if (sg_serial_lt(w->seq_hi, r->seq)) {
            w->seq_hi = r->seq;
        }
    }
    w->count++;
    w->faulty += r->status != 0;
    double n = (double)w->count;
    for (uint32_t c = 0; c < nchan; c++) {
        struct chan *ch = &w->ch[c];
        double x = r->values[c];
        ch->sum += x;
        double d = x - ch->mean;
        ch->mean += d / n;
        ch->m2 += d * (x - ch->mean);
        sg_sketch_add_key(&ch->sk, sk, keys[c], x, reserve[c][keys[c].sign < 0]);
    }
}

/* The verdict of a reading that passed the checks of precheck(); hash is
 * sg_series_hash() of its key. */
/* A new series starts with the gateway-clock watermark of now_ms. */
static void series_init(struct sg_rollup_engine *e, struct series_state *ss, uint64_t now_ms)
{
    e->stats.active_series++;
    for (size_t i = 0; i < e->opts.nwindows; i++) {
        ss->w[i].head = NONE;
        ss->w[i].hint = NONE;
        ss->w[i].closed_before_ms =
            watermark(now_ms, e->opts.allowed_lateness_ms, e->opts.windows_ms[i]);
    }
}

static enum sg_verdict add_checked(struct sg_rollup_engine *e, const struct sg_reading *r,
                                   uint64_t hash, uint64_t now_ms)
{
    struct sg_series *s = NULL;
    bool created = false;
    int rc = sg_series_find_or_add(e->series, r->sensor_id, r->id_len, r->kind, hash, now_ms, &s,
                                   &created);
    if (rc == SG_EFULL) {
        return invalid(e, SG_INVALID_SERIES_LIMIT);
    }
    if (rc != 0) {
        return invalid(e, SG_INVALID_SENSOR_ID);
    }
    struct series_state *ss = sg_series_payload(s);
    size_t nw = e->opts.nwindows;
    uint64_t lateness = e->opts.allowed_lateness_ms;
    if (created) {
        series_init(e, ss, now_ms);
    }
    s->last_active_ms = now_ms;

    /* Window of every width; the hint saves the division for the common case
     * of a reading landing in the window used last. */
    struct pool *p = pool_of(e, r->kind);
    uint64_t ts = r->ts_ms;
    uint64_t start[SG_MAX_WINDOWS];
    uint32_t win[SG_MAX_WINDOWS];
    bool late = false;
    uint32_t closed_mask = 0; /* widths whose window for ts is closed */
    for (size_t i = 0; i < nw; i++) {
        struct width_state *ws = &ss->w[i];
        uint64_t width_ms = e->opts.windows_ms[i];
        win[i] = NONE;
        if (ws->hint != NONE) {
            const struct window *h = pool_get(p, ws->hint);
            if (ts >= h->start_ms && ts - h->start_ms < width_ms) {
                win[i] = ws->hint;
                start[i] = h->start_ms;
                continue; /* an open window is never closed */
            }
        }
        start[i] = ts - ts % width_ms;
        if (sat_add(start[i], width_ms) <= ws->closed_before_ms) {
            if (!e->replaying) {
                ws->late_pending++;
            }
            late = true;
            closed_mask |= 1u << i;
        }
    }
    if (late) {
        if (!e->replaying) {
            return finish(e, SG_VERDICT_LATE);
        }
        /* Replay decides per width: a width whose window already reached
         * the spool before the restart is skipped, the others are rebuilt.
         * (A reading that was late for one width in the first run is thus
         * rebuilt into the others: docs/DURABILITY.md.) */
        if (closed_mask == (1u << nw) - 1u) {
            e->stats.replay_skipped++;
            return SG_VERDICT_LATE;
        }
    }

    enum sg_ring_result rr = sg_ring_check(&s->ring, r->seq);
    if (rr == SG_RING_SEEN) {
        for (size_t i = 0; i < nw; i++) {
            if (closed_mask & (1u << i)) {
                continue;
            }
            uint32_t idx = win[i] != NONE ? win[i] : window_get(e, ss, p, i, start[i]);
            pool_get(p, idx)->duplicates++;
        }
        return finish(e, SG_VERDICT_DUPLICATE);
    }

    uint32_t nchan = p->nchan;
    struct sg_sketch_key keys[SG_MAX_CHANNELS];
    for (uint32_t c = 0; c < nchan; c++) {
        keys[c] = sg_sketch_key_of(&e->sk, r->values[c]);
    }
    for (size_t i = 0; i < nw; i++) {
        if (closed_mask & (1u << i)) {
            continue;
        }
        uint32_t idx = win[i] != NONE ? win[i] : window_get(e, ss, p, i, start[i]);
        window_add(pool_get(p, idx), nchan, &e->sk, e->reserve[r->kind], r, keys);
    }
    if (rr == SG_RING_TOO_OLD) {
        e->stats.ring_overflows++;
    } else {
        if (rr == SG_RING_RESET) {
            e->stats.seq_resets++;
        }
        sg_ring_mark(&s->ring, r->seq);
    }

    /* Sensor watermark: only a new greatest ts_ms can move it. */
    if (!ss->has_max_ts || ts > ss->max_ts_ms) {
        ss->has_max_ts = 1;
        ss->max_ts_ms = ts;
        if (ts >= lateness) {
            for (size_t i = 0; i < nw; i++) {
                advance(e, s, ss, i, watermark(ts, lateness, e->opts.windows_ms[i]));
            }
        }
    }
    return finish(e, SG_VERDICT_ACCEPTED);
}

/* The invalid reason of r (set by the decoder, or found by the structural
 * checks), SG_INVALID_NONE if it may go on. */
static inline int precheck(const struct sg_reading *r)
{
    if (r->invalid != SG_INVALID_NONE) {
        return r->invalid;
    }
    return structural_check(r);
}

enum sg_verdict sg_rollup_add(struct sg_rollup_engine *e, const struct sg_reading *r,
                              uint64_t now_ms)
{
    int bad = precheck(r);
    if (bad != SG_INVALID_NONE) {
        return invalid(e, bad);
    }
    return add_checked(e, r, sg_series_hash(r->sensor_id, r->id_len, r->kind), now_ms);
}

#define BATCH_GROUP 16

/* Starts loading what add_checked() will touch for a reading of an existing
 * series: the ring word of its seq and the window it used last. */
static void prefetch_state(const struct sg_rollup_engine *e, const struct sg_reading *r,
                           uint64_t hash)
{
    struct sg_series *s = sg_series_find(e->series, r->sensor_id, r->id_len, r->kind, hash);
    if (s == NULL) {
        return;
    }
    __builtin_prefetch(&s->ring.bits[(r->seq & s->ring.mask) >> 6]);
    const struct series_state *ss = sg_series_payload(s);
    const struct pool *p = &e->pools[r->kind == SG_KIND_ACCEL_G ? 1 : 0];
    for (size_t i = 0; i < e->opts.nwindows; i++) {
        uint32_t h = ss->w[i].hint;
        if (h != NONE) {
            const char *w = (const char *)pool_get(p, h);
            for (size_t off = 0; off < p->stride; off += 64) {
                __builtin_prefetch(w + off);
            }
        }
    }
}

size_t sg_rollup_add_batch(struct sg_rollup_engine *e, const struct sg_reading *r, size_t n,
                           uint64_t now_ms, enum sg_verdict *verdicts)
{
    size_t accepted = 0;
    uint64_t hash[BATCH_GROUP];
    int bad[BATCH_GROUP];
    for (size_t base = 0; base < n; base += BATCH_GROUP) {
        size_t m = n - base < BATCH_GROUP ? n - base : BATCH_GROUP;
        /* Stage 1: hash every key and start loading its slot; stage 2: start
         * loading the records; stage 3: the real work, in input order. */
        for (size_t k = 0; k < m; k++) {
            const struct sg_reading *x = &r[base + k];
            bad[k] = precheck(x);
            if (bad[k] == SG_INVALID_NONE) {
                hash[k] = sg_series_hash(x->sensor_id, x->id_len, x->kind);
                sg_series_prefetch_slot(e->series, hash[k]);
            }
        }
        for (size_t k = 0; k < m; k++) {
            if (bad[k] == SG_INVALID_NONE) {
                sg_series_prefetch_record(e->series, hash[k]);
            }
        }
        for (size_t k = 0; k < m; k++) {
            if (bad[k] == SG_INVALID_NONE) {
                prefetch_state(e, &r[base + k], hash[k]);
            }
        }
        for (size_t k = 0; k < m; k++) {
            enum sg_verdict v;
            if (bad[k] != SG_INVALID_NONE) {
                v = invalid(e, bad[k]);
            } else {
                v = add_checked(e, &r[base + k], hash[k], now_ms);
            }
            accepted += v == SG_VERDICT_ACCEPTED;
            if (verdicts != NULL) {
                verdicts[base + k] = v;
            }
        }
    }
    return accepted;
}

void sg_rollup_tick(struct sg_rollup_engine *e, uint64_t now_ms)
{
    if (e->next_trim_ms == 0) {
        e->next_trim_ms = sat_add(now_ms, e->trim_period_ms);
    } else if (now_ms >= e->next_trim_ms) {
        sg_sketch_params_trim(&e->sk);
        e->next_trim_ms = sat_add(now_ms, e->trim_period_ms);
    }
    size_t nw = e->opts.nwindows;
    uint64_t lateness = e->opts.allowed_lateness_ms;
    uint32_t cursor = 0;
    struct sg_series *s;
    while ((s = sg_series_next(e->series, &cursor)) != NULL) {
        struct series_state *ss = sg_series_payload(s);
        if (now_ms >= lateness) {
            for (size_t i = 0; i < nw; i++) {
                advance(e, s, ss, i, watermark(now_ms, lateness, e->opts.windows_ms[i]));
            }
        }
        if (ss->open == 0 && now_ms >= s->last_active_ms &&
            now_ms - s->last_active_ms >= e->opts.series_idle_ms) {
            sg_series_remove(e->series, s);
            e->stats.series_evicted++;
            e->stats.active_series--;
        }
    }
}

void sg_rollup_flush(struct sg_rollup_engine *e)
{
    size_t nw = e->opts.nwindows;
    uint32_t cursor = 0;
    struct sg_series *s;
    while ((s = sg_series_next(e->series, &cursor)) != NULL) {
        struct series_state *ss = sg_series_payload(s);
        for (size_t i = 0; i < nw; i++) {
            close_windows(e, s, ss, i, true);
        }
    }
}

int sg_rollup_restore(struct sg_rollup_engine *e, const char *sensor_id, size_t id_len,
                      uint8_t kind, uint64_t window_ms, uint64_t closed_before_ms, uint64_t now_ms)
{
    if (id_len == 0 || id_len > SG_SENSOR_ID_MAX || kind < 1 || kind > SG_KIND_MAX) {
        return SG_EINVAL;
    }
    size_t i = 0;
    while (i < e->opts.nwindows && e->opts.windows_ms[i] != window_ms) {
        i++;
    }
    if (i == e->opts.nwindows) {
        return SG_ENOTFOUND; /* a width no longer configured */
    }
    struct sg_series *s = NULL;
    bool created = false;
    int rc = sg_series_find_or_add(e->series, sensor_id, id_len, kind,
                                   sg_series_hash(sensor_id, id_len, kind), now_ms, &s, &created);
    if (rc != 0) {
        return rc;
    }
    struct series_state *ss = sg_series_payload(s);
    if (created) {
        /* Only the mark closes windows here: replay moves the gateway
         * clock forward record by record, as the first run did. */
        series_init(e, ss, 0);
        s->last_active_ms = now_ms;
    }
    if (closed_before_ms > ss->w[i].closed_before_ms) {
        ss->w[i].closed_before_ms = closed_before_ms;
    }
    return 0;
}

void sg_rollup_set_series_idle(struct sg_rollup_engine *e, uint64_t series_idle_ms)
{
    if (e != NULL && series_idle_ms > 0) {
        e->opts.series_idle_ms = series_idle_ms;
    }
}

void sg_rollup_set_replay(struct sg_rollup_engine *e, bool replaying)
{
    e->replaying = replaying;
}

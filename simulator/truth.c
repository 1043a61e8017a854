/*
 * truth: brute-force ground truth for docs/SEMANTICS.md.
 *
 * Deliberately naive and independent of gateway/rollup.c: every accepted
 * reading of every open window is kept (value per channel, ts, seq, status);
 * every seq ever accepted by a series is kept in a hash set (exact dedup, no
 * ring); a window's rollup is computed only when it is emitted, by sorting
 * the values and taking exact ranks, with long double two-pass sums.
 *
 * Closing: only the sensor watermark (after an accepted reading) and the
 * gateway clock at series creation move closed_before[w]; the simulator
 * makes sure the gateway's periodic clock never closes a window first
 * (docs/SIMULATOR.md). Single-threaded.
 */
#include "truth.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "reading.h"

/* One open window of one width: all its accepted readings, in accept order. */
struct twin {
    uint64_t start_ms;
    size_t n; /* accepted readings */
    size_t cap;
    double *vals;     /* n * nch values, reading-major */
    uint64_t *ts;     /* n event times */
    uint32_t *seq;    /* n seqs */
    uint32_t *status; /* n status words */
    uint64_t dups;    /* duplicates whose ts falls here */
};

/* One series (sensor_id, kind). */
struct tseries {
    char id[SG_TRUTH_ID_CAP];
    size_t id_len;
    int kind;
    int nch;
    uint64_t hash;
    bool has_max;
    uint64_t max_ts;                              /* greatest accepted ts */
    uint64_t closed_before[SG_TRUTH_MAX_WINDOWS]; /* windows ending <= this are closed */
    uint64_t pending_late[SG_TRUTH_MAX_WINDOWS];  /* late since the last emitted window */
    struct twin **open[SG_TRUTH_MAX_WINDOWS];     /* open windows per width, by start */
    size_t nopen[SG_TRUTH_MAX_WINDOWS];
    size_t capopen[SG_TRUTH_MAX_WINDOWS];
    uint64_t *seqset;  /* accepted seqs; UINT64_MAX = empty */
    size_t seqset_cap; /* power of two */
    size_t seqset_n;
};

struct sg_truth {
    struct sg_truth_opts o;
    struct tseries **slots; /* hash table of series, NULL = empty */
    size_t nslots;          /* power of two */
    struct tseries **order; /* series in creation order */
    size_t nseries;
    size_t capseries;
    struct sg_truth_rollup *rollups;
    size_t nrollups;
    size_t caprollups;
    uint64_t counts[SG_TRUTH_NVERDICTS];
    bool finished;
};

bool sg_truth_id_ok(const char *s, size_t len)
{
    if (len < 1 || len > 64) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

static uint64_t hash_key(const char *id, size_t len, int kind)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ULL;
    }
    h ^= (uint64_t)(unsigned)kind;
    h *= 1099511628211ULL;
    return h ^ (h >> 29);
}

int sg_truth_new(struct sg_truth **out, const struct sg_truth_opts *opts)
{
    if (out == NULL || opts == NULL || opts->nwindows < 1 ||
        opts->nwindows > SG_TRUTH_MAX_WINDOWS) {
        return SG_EINVAL;
    }
    for (size_t i = 0; i < opts->nwindows; i++) {
        if (opts->windows_ms[i] == 0) {
            return SG_EINVAL;
        }
    }
    struct sg_truth *t = sg_xcalloc(1, sizeof(*t));
    t->o = *opts;
    t->nslots = 1024;
    t->slots = sg_xcalloc(t->nslots, sizeof(*t->slots));
    *out = t;
    return 0;
}

static void twin_free(struct twin *w)
{
    if (w == NULL) {
        return;
    }
    free(w->vals);
    free(w->ts);
    free(w->seq);
    free(w->status);
    free(w);
}

void sg_truth_free(struct sg_truth *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->nseries; i++) {
        struct tseries *s = t->order[i];
        for (size_t w = 0; w < t->o.nwindows; w++) {
            for (size_t k = 0; k < s->nopen[w]; k++) {
                twin_free(s->open[w][k]);
            }
            free(s->open[w]);
        }
        free(s->seqset);
        free(s);
    }
    free(t->order);
    free(t->slots);
    free(t->rollups);
    free(t);
}

/* ---- the per-series set of accepted seqs (exact dedup) ---- */

static size_t seq_slot(uint32_t seq, size_t cap)
{
    uint64_t h = (uint64_t)seq * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & (cap - 1);
}

static bool seqset_has(const struct tseries *s, uint32_t seq)
{
    if (s->seqset_cap == 0) {
        return false;
    }
    for (size_t i = seq_slot(seq, s->seqset_cap);; i = (i + 1) & (s->seqset_cap - 1)) {
        if (s->seqset[i] == UINT64_MAX) {
            return false;
        }
        if (s->seqset[i] == seq) {
            return true;
        }
    }
}

static void seqset_put_raw(uint64_t *tab, size_t cap, uint32_t seq)
{
    size_t i = seq_slot(seq, cap);
    while (tab[i] != UINT64_MAX) {
        i = (i + 1) & (cap - 1);
    }
    tab[i] = seq;
}

static void seqset_add(struct tseries *s, uint32_t seq)
{
    if ((s->seqset_n + 1) * 2 > s->seqset_cap) {
        size_t ncap = s->seqset_cap ? s->seqset_cap * 2 : 64;
        uint64_t *tab = sg_xmalloc(ncap * sizeof(*tab));
        for (size_t i = 0; i < ncap; i++) {
            tab[i] = UINT64_MAX;
        }
        for (size_t i = 0; i < s->seqset_cap; i++) {
            if (s->seqset[i] != UINT64_MAX) {
                seqset_put_raw(tab, ncap, (uint32_t)s->seqset[i]);
            }
        }
        free(s->seqset);
        s->seqset = tab;
        s->seqset_cap = ncap;
    }
    seqset_put_raw(s->seqset, s->seqset_cap, seq);
    s->seqset_n++;
}

/* ---- series table ---- */

static void table_insert(struct tseries **slots, size_t nslots, struct tseries *s)
{
    size_t i = (size_t)s->hash & (nslots - 1);
    while (slots[i] != NULL) {
        i = (i + 1) & (nslots - 1);
    }
    slots[i] = s;
}

static struct tseries *series_find(struct sg_truth *t, const struct sg_truth_reading *r, uint64_t h)
{
    for (size_t i = (size_t)h & (t->nslots - 1);; i = (i + 1) & (t->nslots - 1)) {
        struct tseries *s = t->slots[i];
        if (s == NULL) {
            return NULL;
        }
        if (s->hash == h && s->kind == r->kind && s->id_len == r->id_len &&
            memcmp(s->id, r->sensor_id, r->id_len) == 0) {
            return s;
        }
    }
}

static uint64_t floor_to(uint64_t x, uint64_t w)
{
    return x / w * w;
}

static struct tseries *series_create(struct sg_truth *t, const struct sg_truth_reading *r,
                                     uint64_t h, uint64_t now_ms)
{
    if ((t->nseries + 1) * 2 > t->nslots) {
        size_t n2 = t->nslots * 2;
        struct tseries **slots = sg_xcalloc(n2, sizeof(*slots));
        for (size_t i = 0; i < t->nseries; i++) {
            table_insert(slots, n2, t->order[i]);
        }
        free(t->slots);
        t->slots = slots;
        t->nslots = n2;
    }
    if (t->nseries == t->capseries) {
        t->capseries = t->capseries ? t->capseries * 2 : 256;
        t->order = sg_xrealloc(t->order, t->capseries * sizeof(*t->order));
    }
    struct tseries *s = sg_xcalloc(1, sizeof(*s));
    memcpy(s->id, r->sensor_id, r->id_len);
    s->id_len = r->id_len;
    s->kind = r->kind;
    s->nch = (r->kind == SG_KIND_ACCEL_G) ? 3 : 1;
    s->hash = h;
    /* The gateway clock closes windows of a new series up to now - L. */
    for (size_t w = 0; w < t->o.nwindows; w++) {
        if (now_ms >= t->o.allowed_lateness_ms) {
            s->closed_before[w] = floor_to(now_ms - t->o.allowed_lateness_ms, t->o.windows_ms[w]);
        }
    }
    table_insert(t->slots, t->nslots, s);
    t->order[t->nseries++] = s;
    return s;
}

/* ---- windows ---- */

/* The open window of width index w starting at start, created if absent. */
static struct twin *window_get(struct tseries *s, size_t w, uint64_t start)
{
    size_t k = 0;
    while (k < s->nopen[w] && s->open[w][k]->start_ms < start) {
        k++;
    }
    if (k < s->nopen[w] && s->open[w][k]->start_ms == start) {
        return s->open[w][k];
    }
    if (s->nopen[w] == s->capopen[w]) {
        s->capopen[w] = s->capopen[w] ? s->capopen[w] * 2 : 4;
        s->open[w] = sg_xrealloc(s->open[w], s->capopen[w] * sizeof(*s->open[w]));
    }
    memmove(&s->open[w][k + 1], &s->open[w][k], (s->nopen[w] - k) * sizeof(*s->open[w]));
    struct twin *win = sg_xcalloc(1, sizeof(*win));
    win->start_ms = start;
    s->open[w][k] = win;
    s->nopen[w]++;
    return win;
}

static void window_add(struct twin *win, int nch, const struct sg_truth_reading *r)
{
    if (win->n == win->cap) {
        win->cap = win->cap ? win->cap * 2 : 16;
        win->vals = sg_xrealloc(win->vals, win->cap * (size_t)nch * sizeof(double));
        win->ts = sg_xrealloc(win->ts, win->cap * sizeof(uint64_t));
        win->seq = sg_xrealloc(win->seq, win->cap * sizeof(uint32_t));
        win->status = sg_xrealloc(win->status, win->cap * sizeof(uint32_t));
    }
    for (int c = 0; c < nch; c++) {
        win->vals[win->n * (size_t)nch + (size_t)c] = r->values[c];
    }
    win->ts[win->n] = r->ts_ms;
    win->seq[win->n] = r->seq;
    win->status[win->n] = r->status;
    win->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Signed distance b - a in serial arithmetic (RFC 1982) on 32 bits. */
static int64_t serial_diff(uint32_t a, uint32_t b)
{
    uint32_t d = b - a;
    return d >= 0x80000000u ? (int64_t)d - 0x100000000LL : (int64_t)d;
}

static void push_rollup(struct sg_truth *t, const struct sg_truth_rollup *r)
{
    if (t->nrollups == t->caprollups) {
        t->caprollups = t->caprollups ? t->caprollups * 2 : 1024;
        t->rollups = sg_xrealloc(t->rollups, t->caprollups * sizeof(*t->rollups));
    }
    t->rollups[t->nrollups++] = *r;
}

/* Emits one window of width index w (one rollup per channel), if it holds an
 * accepted reading; it takes the series' pending late count of that width.
 * Frees the window. */
static void window_emit(struct sg_truth *t, struct tseries *s, size_t w, struct twin *win)
{
    if (win->n == 0) {
        /* Only duplicates: never emitted (SEMANTICS.md, "Closing"). */
        twin_free(win);
        return;
    }
    size_t n = win->n;
    uint64_t late = s->pending_late[w];
    s->pending_late[w] = 0;

    uint64_t first_ts = win->ts[0];
    uint64_t last_ts = win->ts[0];
    size_t last_i = 0;
    uint64_t faulty = 0;
    int64_t lo = 0;
    int64_t hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (win->ts[i] < first_ts) {
            first_ts = win->ts[i];
        }
        if (win->ts[i] > last_ts) {
            last_ts = win->ts[i];
            last_i = i; /* strictly greater: a tie keeps the one accepted first */
        }
        if (win->status[i] != 0) {
            faulty++;
        }
        int64_t d = serial_diff(win->seq[0], win->seq[i]);
        if (d < lo) {
            lo = d;
        }
        if (d > hi) {
            hi = d;
        }
    }
    uint64_t gaps = (uint64_t)(hi - lo + 1) - (uint64_t)n;

    double *sorted = sg_xmalloc(n * sizeof(double));
    for (int c = 0; c < s->nch; c++) {
        struct sg_truth_rollup r;
        memset(&r, 0, sizeof(r));
        memcpy(r.sensor_id, s->id, s->id_len);
        r.kind = s->kind;
        r.channel = (unsigned)c;
        r.window_start_ms = win->start_ms;
        r.window_ms = t->o.windows_ms[w];
        r.count = n;
        long double sum = 0.0L;
        long double sumsq = 0.0L;
        for (size_t i = 0; i < n; i++) {
            double x = win->vals[i * (size_t)s->nch + (size_t)c];
            sorted[i] = x;
            sum += x;
            sumsq += (long double)x * x;
        }
        long double mean = sum / (long double)n;
        long double dev = 0.0L;
        for (size_t i = 0; i < n; i++) {
            long double d = (long double)sorted[i] - mean;
            dev += d * d;
        }
        qsort(sorted, n, sizeof(double), cmp_double);
        r.min = sorted[0];
        r.max = sorted[n - 1];
        r.sum = (double)sum;
        r.mean = (double)mean;
        r.stddev = (double)sqrtl(dev / (long double)n);
        r.rms = (double)sqrtl(sumsq / (long double)n);
        r.first_ts_ms = first_ts;
        r.last_ts_ms = last_ts;
        r.last = win->vals[last_i * (size_t)s->nch + (size_t)c];
        /* Exact rank floor(q * (count - 1)) with q = 50/100, 95/100, 99/100. */
        r.p50 = sorted[(50 * (n - 1)) / 100];
        r.p95 = sorted[(95 * (n - 1)) / 100];
        r.p99 = sorted[(99 * (n - 1)) / 100];
        r.gaps = gaps;
        r.duplicates = win->dups;
        r.faulty = faulty;
        r.late = late;
        push_rollup(t, &r);
    }
    free(sorted);
    twin_free(win);
}

/* Emits the open windows of width index w whose end <= closed_before[w],
 * oldest first. */
static void close_width(struct sg_truth *t, struct tseries *s, size_t w)
{
    uint64_t width = t->o.windows_ms[w];
    size_t k = 0;
    while (k < s->nopen[w] && s->open[w][k]->start_ms + width <= s->closed_before[w]) {
        k++;
    }
    for (size_t i = 0; i < k; i++) {
        window_emit(t, s, w, s->open[w][i]);
    }
    memmove(&s->open[w][0], &s->open[w][k], (s->nopen[w] - k) * sizeof(*s->open[w]));
    s->nopen[w] -= k;
}

static bool reading_valid(const struct sg_truth *t, const struct sg_truth_reading *r,
                          uint64_t now_ms)
{
    if (!sg_truth_id_ok(r->sensor_id, r->id_len)) {
        return false;
    }
    if (r->kind < 1 || r->kind > 9) {
        return false;
    }
    size_t want = (r->kind == SG_KIND_ACCEL_G) ? 3 : 1;
    if (r->nvalues != want) {
        return false;
    }
    for (size_t i = 0; i < r->nvalues; i++) {
        if (!isfinite(r->values[i])) {
            return false;
        }
    }
    if (now_ms >= t->o.max_past_ms && r->ts_ms < now_ms - t->o.max_past_ms) {
        return false;
    }
    if (r->ts_ms > now_ms + t->o.max_future_ms) {
        return false;
    }
    return true;
}

enum sg_truth_verdict sg_truth_add(struct sg_truth *t, const struct sg_truth_reading *r,
                                   uint64_t now_ms)
{
    enum sg_truth_verdict v;
    if (t->finished || r->id_len > SG_TRUTH_ID_CAP || r->nvalues > SG_TRUTH_MAX_VALUES ||
        !reading_valid(t, r, now_ms)) {
        v = SG_TRUTH_INVALID;
        goto done;
    }
    uint64_t h = hash_key(r->sensor_id, r->id_len, r->kind);
    struct tseries *s = series_find(t, r, h);
    if (s == NULL) {
        s = series_create(t, r, h, now_ms);
    }

    /* Late: its window is closed in at least one width. */
    bool late = false;
    for (size_t w = 0; w < t->o.nwindows; w++) {
        uint64_t end = floor_to(r->ts_ms, t->o.windows_ms[w]) + t->o.windows_ms[w];
        if (end <= s->closed_before[w]) {
            s->pending_late[w]++;
            late = true;
        }
    }
    if (late) {
        v = SG_TRUTH_LATE;
        goto done;
    }

    if (seqset_has(s, r->seq)) {
        for (size_t w = 0; w < t->o.nwindows; w++) {
            window_get(s, w, floor_to(r->ts_ms, t->o.windows_ms[w]))->dups++;
        }
        v = SG_TRUTH_DUPLICATE;
        goto done;
    }

    seqset_add(s, r->seq);
    for (size_t w = 0; w < t->o.nwindows; w++) {
        window_add(window_get(s, w, floor_to(r->ts_ms, t->o.windows_ms[w])), s->nch, r);
    }
    if (!s->has_max || r->ts_ms > s->max_ts) {
        s->max_ts = r->ts_ms;
        s->has_max = true;
    }
    if (s->max_ts >= t->o.allowed_lateness_ms) {
        for (size_t w = 0; w < t->o.nwindows; w++) {
            uint64_t cb = floor_to(s->max_ts - t->o.allowed_lateness_ms, t->o.windows_ms[w]);
            if (cb > s->closed_before[w]) {
                s->closed_before[w] = cb;
                close_width(t, s, w);
            }
        }
    }
    v = SG_TRUTH_ACCEPTED;
done:
    t->counts[v]++;
    return v;
}

struct pending_emit {
    struct twin *win;
    size_t w;
    uint64_t width;
};

static int cmp_pending(const void *a, const void *b)
{
    const struct pending_emit *x = a;
    const struct pending_emit *y = b;
    if (x->win->start_ms != y->win->start_ms) {
        return x->win->start_ms < y->win->start_ms ? -1 : 1;
    }
    return (x->width > y->width) - (x->width < y->width);
}

void sg_truth_finish(struct sg_truth *t)
{
    if (t->finished) {
        return;
    }
    t->finished = true;
    for (size_t i = 0; i < t->nseries; i++) {
        struct tseries *s = t->order[i];
        size_t total = 0;
        for (size_t w = 0; w < t->o.nwindows; w++) {
            total += s->nopen[w];
        }
        if (total == 0) {
            continue;
        }
        struct pending_emit *pe = sg_xmalloc(total * sizeof(*pe));
        size_t k = 0;
        for (size_t w = 0; w < t->o.nwindows; w++) {
            for (size_t j = 0; j < s->nopen[w]; j++) {
                pe[k].win = s->open[w][j];
                pe[k].w = w;
                pe[k].width = t->o.windows_ms[w];
                k++;
            }
            s->nopen[w] = 0;
        }
        qsort(pe, total, sizeof(*pe), cmp_pending);
        for (size_t j = 0; j < total; j++) {
            window_emit(t, s, pe[j].w, pe[j].win);
        }
        free(pe);
    }
}

uint64_t sg_truth_count(const struct sg_truth *t, enum sg_truth_verdict v)
{
    return (v >= 0 && v < SG_TRUTH_NVERDICTS) ? t->counts[v] : 0;
}

const struct sg_truth_rollup *sg_truth_rollups(const struct sg_truth *t, size_t *n)
{
    *n = t->nrollups;
    return t->rollups;
}

int sg_truth_write(const struct sg_truth *t, const struct sg_truth_summary *s, FILE *f)
{
    fprintf(f,
            "{\"type\":\"summary\",\"readings_sent\":%" PRIu64 ",\"payloads_sent\":%" PRIu64
            ",\"malformed_payloads\":%" PRIu64 ",\"expected\":{\"accepted\":%" PRIu64
            ",\"duplicate\":%" PRIu64 ",\"late\":%" PRIu64 ",\"invalid\":%" PRIu64
            "},\"windows_ms\":[",
            s->readings_sent, s->payloads_sent, s->malformed_payloads, t->counts[SG_TRUTH_ACCEPTED],
            t->counts[SG_TRUTH_DUPLICATE], t->counts[SG_TRUTH_LATE], t->counts[SG_TRUTH_INVALID]);
    for (size_t w = 0; w < t->o.nwindows; w++) {
        fprintf(f, "%s%" PRIu64, w ? "," : "", t->o.windows_ms[w]);
    }
    fprintf(f,
            "],\"allowed_lateness_ms\":%" PRIu64 ",\"rollups\":%zu,\"sensors\":%" PRIu64
            ",\"start_ms\":%" PRIu64 ",\"end_ms\":%" PRIu64 "}\n",
            t->o.allowed_lateness_ms, t->nrollups, s->sensors, s->start_ms, s->end_ms);
    for (size_t i = 0; i < t->nrollups; i++) {
        const struct sg_truth_rollup *r = &t->rollups[i];
        fprintf(f,
                "{\"type\":\"rollup\",\"sensor_id\":\"%s\",\"kind\":\"%s\",\"channel\":%u,"
                "\"window_start_ms\":%" PRIu64 ",\"window_ms\":%" PRIu64 ",\"count\":%" PRIu64
                ",\"min\":%.17g,\"max\":%.17g,\"sum\":%.17g,\"mean\":%.17g,\"stddev\":%.17g,"
                "\"rms\":%.17g,\"first_ts_ms\":%" PRIu64 ",\"last_ts_ms\":%" PRIu64
                ",\"last\":%.17g,\"p50\":%.17g,\"p95\":%.17g,\"p99\":%.17g,\"gaps\":%" PRIu64
                ",\"duplicates\":%" PRIu64 ",\"faulty\":%" PRIu64 ",\"late\":%" PRIu64 "}\n",
                r->sensor_id, sg_kind_name(r->kind), r->channel, r->window_start_ms, r->window_ms,
                r->count, r->min, r->max, r->sum, r->mean, r->stddev, r->rms, r->first_ts_ms,
                r->last_ts_ms, r->last, r->p50, r->p95, r->p99, r->gaps, r->duplicates, r->faulty,
                r->late);
    }
    if (fflush(f) != 0 || ferror(f)) {
        return SG_EIO;
    }
    return 0;
}

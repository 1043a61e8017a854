/*
 * truth and fleet: the ground truth on small hand-made sequences whose
 * expected rollups are worked out by hand from docs/SEMANTICS.md (late,
 * duplicate, out of order within lateness, several widths, gaps across the
 * 2^32 wrap, exact quantiles and moments, validation bounds), and the fleet:
 * determinism, payloads protobuf-c decodes (or must reject), and each
 * injected fault landing in the verdict it was made for.
 */
#include "fleet.h"
#include "truth.h"

#include "sensegate.pb-c.h"
#include "sg_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T0 1000000020000ULL /* a multiple of 60000: windows start here */
#define NOW (T0 + 1000)     /* gateway clock in the hand-made tests: closes nothing */

static struct sg_truth *mk(uint64_t w1, uint64_t w2)
{
    struct sg_truth_opts o = {.nwindows = w2 ? 2 : 1,
                              .allowed_lateness_ms = 2000,
                              .max_past_ms = 3600000,
                              .max_future_ms = 300000};
    o.windows_ms[0] = w1;
    o.windows_ms[1] = w2;
    struct sg_truth *t = NULL;
    CU_ASSERT_FATAL(sg_truth_new(&t, &o) == 0);
    return t;
}

static struct sg_truth_reading rd(const char *id, int kind, uint64_t ts_off, uint32_t seq, double v)
{
    struct sg_truth_reading r;
    memset(&r, 0, sizeof(r));
    r.id_len = strlen(id);
    memcpy(r.sensor_id, id, r.id_len);
    r.kind = kind;
    r.ts_ms = T0 + ts_off;
    r.seq = seq;
    r.nvalues = kind == 8 ? 3 : 1;
    for (size_t i = 0; i < r.nvalues; i++) {
        r.values[i] = v + (double)i;
    }
    return r;
}

static enum sg_truth_verdict add(struct sg_truth *t, const char *id, uint64_t ts_off, uint32_t seq,
                                 double v)
{
    struct sg_truth_reading r = rd(id, 1, ts_off, seq, v);
    return sg_truth_add(t, &r, NOW);
}

static const struct sg_truth_rollup *find(struct sg_truth *t, const char *id, uint64_t start_off,
                                          uint64_t w, unsigned ch)
{
    size_t n;
    const struct sg_truth_rollup *r = sg_truth_rollups(t, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r[i].sensor_id, id) == 0 && r[i].window_start_ms == T0 + start_off &&
            r[i].window_ms == w && r[i].channel == ch) {
            return &r[i];
        }
    }
    return NULL;
}

static size_t nrollups(struct sg_truth *t)
{
    size_t n;
    sg_truth_rollups(t, &n);
    return n;
}

/* A window closes when the sensor's newest accepted ts reaches end + L. */
static void test_late(void)
{
    struct sg_truth *t = mk(10000, 0);
    CU_ASSERT_EQUAL(add(t, "a", 1000, 1, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "a", 11999, 2, 2.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(nrollups(t), 0); /* 11999 - 2000 < 10000: still open */
    CU_ASSERT_EQUAL(add(t, "a", 9999, 3, 3.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "a", 12000, 4, 4.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(nrollups(t), 1); /* [0, 10000) closed at exactly end + L */
    const struct sg_truth_rollup *r = find(t, "a", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 2);
    CU_ASSERT_EQUAL(r->first_ts_ms, T0 + 1000);
    CU_ASSERT_EQUAL(r->last_ts_ms, T0 + 9999);
    CU_ASSERT_EQUAL(r->last, 3.0);
    CU_ASSERT_EQUAL(r->late, 0);
    CU_ASSERT_EQUAL(r->gaps, 1); /* seqs 1 and 3 */
    CU_ASSERT_EQUAL(add(t, "a", 9999, 5, 5.0), SG_TRUTH_LATE);
    CU_ASSERT_EQUAL(add(t, "a", 500, 6, 6.0), SG_TRUTH_LATE);
    /* A duplicate of an accepted seq whose window closed is late, not duplicate. */
    CU_ASSERT_EQUAL(add(t, "a", 1000, 1, 1.0), SG_TRUTH_LATE);
    CU_ASSERT_EQUAL(add(t, "a", 25000, 7, 7.0), SG_TRUTH_ACCEPTED);
    r = find(t, "a", 10000, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 2); /* 11999 and 12000 */
    CU_ASSERT_EQUAL(r->late, 3);  /* taken by the next window emitted */
    sg_truth_finish(t);
    r = find(t, "a", 20000, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 1);
    CU_ASSERT_EQUAL(r->late, 0);
    CU_ASSERT_EQUAL(nrollups(t), 3);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_ACCEPTED), 5);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_LATE), 3);
    sg_truth_free(t);
}

static void test_duplicate(void)
{
    struct sg_truth *t = mk(10000, 0);
    CU_ASSERT_EQUAL(add(t, "d", 1000, 10, 5.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "d", 2000, 11, 6.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "d", 1000, 10, 5.0), SG_TRUTH_DUPLICATE);
    CU_ASSERT_EQUAL(add(t, "d", 2000, 11, 6.0), SG_TRUTH_DUPLICATE);
    CU_ASSERT_EQUAL(add(t, "d", 3000, 12, 7.0), SG_TRUTH_ACCEPTED);
    /* Same seq, other series: not a duplicate. */
    CU_ASSERT_EQUAL(add(t, "e", 3000, 12, 7.0), SG_TRUTH_ACCEPTED);
    struct sg_truth_reading other_kind = rd("d", 2, 3000, 12, 7.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &other_kind, NOW), SG_TRUTH_ACCEPTED);
    sg_truth_finish(t);
    const struct sg_truth_rollup *r = find(t, "d", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->kind, 1);
    CU_ASSERT_EQUAL(r->count, 3);
    CU_ASSERT_EQUAL(r->duplicates, 2);
    CU_ASSERT_EQUAL(r->gaps, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->sum, 18.0, 0);
    CU_ASSERT_EQUAL(nrollups(t), 3);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_DUPLICATE), 2);
    sg_truth_free(t);
}

/* Within lateness: accepted into its (older) window; the watermark does not move back. */
static void test_out_of_order(void)
{
    struct sg_truth *t = mk(10000, 0);
    CU_ASSERT_EQUAL(add(t, "o", 9000, 1, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "o", 10500, 3, 3.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "o", 11900, 4, 4.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "o", 9500, 2, 2.0), SG_TRUTH_ACCEPTED); /* 11900 - 9500 < L */
    CU_ASSERT_EQUAL(nrollups(t), 0);
    CU_ASSERT_EQUAL(add(t, "o", 12100, 5, 5.0), SG_TRUTH_ACCEPTED);
    const struct sg_truth_rollup *r = find(t, "o", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 2);
    CU_ASSERT_EQUAL(r->gaps, 0);
    CU_ASSERT_EQUAL(r->last_ts_ms, T0 + 9500);
    CU_ASSERT_EQUAL(r->last, 2.0);
    sg_truth_free(t);
}

/* Several widths: late counts only where the window is closed. */
static void test_two_widths(void)
{
    struct sg_truth *t = mk(10000, 60000);
    CU_ASSERT_EQUAL(add(t, "m", 1000, 1, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "m", 13000, 2, 2.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(nrollups(t), 1);
    CU_ASSERT_EQUAL(add(t, "m", 5000, 3, 3.0), SG_TRUTH_LATE); /* closed in 10 s only */
    sg_truth_finish(t);
    CU_ASSERT_EQUAL(nrollups(t), 3);
    const struct sg_truth_rollup *r = find(t, "m", 10000, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->late, 1);
    r = find(t, "m", 0, 60000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 2);
    CU_ASSERT_EQUAL(r->late, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->sum, 3.0, 0);
    sg_truth_free(t);
}

static void test_gaps_wrap(void)
{
    struct sg_truth *t = mk(10000, 0);
    CU_ASSERT_EQUAL(add(t, "w", 1000, 1, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "w", 1100, 0xFFFFFFFEu, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "w", 1200, 0xFFFFFFFFu, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "w", 1300, 2, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "w", 1400, 1, 1.0), SG_TRUTH_DUPLICATE);
    /* 0xFFFFFFFE .. 2 spans 5 seqs, 4 present: seq 0 is missing. */
    CU_ASSERT_EQUAL(add(t, "x", 1000, 0x7FFFFFF0u, 1.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "x", 1000, 0x80000005u, 1.0), SG_TRUTH_ACCEPTED);
    sg_truth_finish(t);
    const struct sg_truth_rollup *r = find(t, "w", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 4);
    CU_ASSERT_EQUAL(r->gaps, 1);
    CU_ASSERT_EQUAL(r->duplicates, 1);
    r = find(t, "x", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->gaps, 20); /* 0x15 + 1 - 2 across 2^31, no wrap involved */
    sg_truth_free(t);
}

static void test_stats_exact(void)
{
    struct sg_truth *t = mk(10000, 0);
    /* The textbook set: mean 5, population stddev 2, rms sqrt(29). */
    const double v[] = {4, 9, 2, 5, 4, 7, 4, 5};
    for (unsigned i = 0; i < 8; i++) {
        struct sg_truth_reading r = rd("s", 1, 1000 + 100 * i, 100 + i, v[i]);
        if (i == 3) {
            r.status = 4;
        }
        CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_ACCEPTED);
    }
    /* A tie on the greatest ts: last is the value accepted first. */
    CU_ASSERT_EQUAL(add(t, "tie", 5000, 1, 11.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "tie", 5000, 2, 12.0), SG_TRUTH_ACCEPTED);
    CU_ASSERT_EQUAL(add(t, "tie", 4000, 3, 13.0), SG_TRUTH_ACCEPTED);
    sg_truth_finish(t);
    const struct sg_truth_rollup *r = find(t, "s", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->count, 8);
    CU_ASSERT_DOUBLE_EQUAL(r->min, 2.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->max, 9.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->sum, 40.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->mean, 5.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->stddev, 2.0, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(r->rms, sqrt(29.0), 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(r->last, 5.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(r->p50, 4.0, 0); /* sorted 2 4 4 4 5 5 7 9, rank 3 */
    CU_ASSERT_DOUBLE_EQUAL(r->p95, 7.0, 0); /* rank floor(6.65) = 6 */
    CU_ASSERT_DOUBLE_EQUAL(r->p99, 7.0, 0); /* rank floor(6.93) = 6 */
    CU_ASSERT_EQUAL(r->faulty, 1);
    r = find(t, "tie", 0, 10000, 0);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_DOUBLE_EQUAL(r->last, 11.0, 0);
    CU_ASSERT_EQUAL(r->first_ts_ms, T0 + 4000);
    sg_truth_free(t);
}

/* Quantile ranks on a shuffled 0..n-1: the value at rank k is k itself. */
static void test_quantile_ranks(void)
{
    const size_t sizes[] = {1, 2, 20, 100, 101, 1000};
    const size_t want[][3] = {
        {0, 0, 0}, {0, 0, 0}, {9, 18, 18}, {49, 94, 98}, {50, 95, 99}, {499, 949, 989},
    };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        struct sg_truth *t = mk(10000, 0);
        size_t n = sizes[k];
        struct sg_fleet_rng rng;
        sg_fleet_rng_seed(&rng, 7 + k);
        double *vals = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            vals[i] = (double)i;
        }
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(sg_fleet_rng_next(&rng) % i);
            double tmp = vals[i - 1];
            vals[i - 1] = vals[j];
            vals[j] = tmp;
        }
        for (size_t i = 0; i < n; i++) {
            CU_ASSERT_EQUAL(add(t, "q", 1000 + i, (uint32_t)i, vals[i]), SG_TRUTH_ACCEPTED);
        }
        sg_truth_finish(t);
        const struct sg_truth_rollup *r = find(t, "q", 0, 10000, 0);
        CU_ASSERT_FATAL(r != NULL);
        CU_ASSERT_DOUBLE_EQUAL(r->p50, (double)want[k][0], 0);
        CU_ASSERT_DOUBLE_EQUAL(r->p95, (double)want[k][1], 0);
        CU_ASSERT_DOUBLE_EQUAL(r->p99, (double)want[k][2], 0);
        CU_ASSERT_DOUBLE_EQUAL(r->min, 0.0, 0);
        CU_ASSERT_DOUBLE_EQUAL(r->max, (double)(n - 1), 0);
        free(vals);
        sg_truth_free(t);
    }
}

static void test_invalid(void)
{
    struct sg_truth *t = mk(10000, 0);
    struct sg_truth_reading r = rd("ok-1", 1, 1000, 1, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_ACCEPTED);
    r = rd("bad id", 1, 1000, 2, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ab", 1, 1000, 2, 1.0);
    r.sensor_id[1] = '\0'; /* embedded NUL: "a" must not be taken */
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("", 1, 1000, 2, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("x", 1, 1000, 2, 1.0);
    memset(r.sensor_id, 'x', 65);
    r.id_len = 65;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r.id_len = 64;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_ACCEPTED);
    r = rd("ok-1", 0, 1000, 3, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ok-1", 10, 1000, 3, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ok-1", 8, 1000, 3, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_ACCEPTED); /* new series, 3 channels */
    r.nvalues = 1;
    r.seq = 4;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ok-1", 1, 1000, 5, NAN);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ok-1", 1, 1000, 5, INFINITY);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    r = rd("ok-1", 1, 1000, 5, 1.0);
    r.nvalues = 2;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_INVALID);
    /* Skew bounds are inclusive: ts == now - max_past and now + max_future are
     * valid (the first is late: the clock closed its window when the series began). */
    r = rd("skew", 1, 0, 1, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, r.ts_ms + 3600000), SG_TRUTH_LATE);
    r.seq = 2;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, r.ts_ms + 3600001), SG_TRUTH_INVALID);
    r = rd("skew2", 1, 1000, 1, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, r.ts_ms - 300000), SG_TRUTH_ACCEPTED);
    r.seq = 2;
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, r.ts_ms - 300001), SG_TRUTH_INVALID);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_INVALID), 12);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_ACCEPTED), 4);
    CU_ASSERT_EQUAL(sg_truth_count(t, SG_TRUTH_LATE), 1);
    sg_truth_free(t);
}

/* The gateway clock closes a new series' old windows: its first reading can be late. */
static void test_new_series_clock(void)
{
    struct sg_truth *t = mk(10000, 0);
    struct sg_truth_reading r = rd("n", 1, 5000, 1, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, T0 + 100000), SG_TRUTH_LATE); /* closed to 90000 */
    r = rd("n", 1, 95000, 2, 1.0);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, T0 + 100000), SG_TRUTH_ACCEPTED);
    sg_truth_finish(t);
    CU_ASSERT_EQUAL(nrollups(t), 1);
    const struct sg_truth_rollup *ro = find(t, "n", 90000, 10000, 0);
    CU_ASSERT_FATAL(ro != NULL);
    CU_ASSERT_EQUAL(ro->late, 1);
    sg_truth_free(t);
}

static void test_accel_channels(void)
{
    struct sg_truth *t = mk(10000, 0);
    struct sg_truth_reading r = rd("acc-1", 8, 1000, 1, 0.5);
    CU_ASSERT_EQUAL(sg_truth_add(t, &r, NOW), SG_TRUTH_ACCEPTED);
    sg_truth_finish(t);
    CU_ASSERT_EQUAL(nrollups(t), 3);
    for (unsigned c = 0; c < 3; c++) {
        const struct sg_truth_rollup *ro = find(t, "acc-1", 0, 10000, c);
        CU_ASSERT_FATAL(ro != NULL);
        CU_ASSERT_DOUBLE_EQUAL(ro->last, 0.5 + c, 0);
    }
    sg_truth_free(t);
}

/* ---- fleet ---- */

static void fleet_opts(struct sg_fleet_opts *o, uint64_t seed)
{
    sg_fleet_opts_default(o);
    o->sensors = 40;
    o->duration_ms = 60000;
    o->start_ms = T0 + 123;
    o->seed = seed;
}

/* A hash of everything the fleet emits. */
static uint64_t fleet_digest(const struct sg_fleet_opts *o)
{
    struct sg_fleet *f = NULL;
    CU_ASSERT_FATAL(sg_fleet_new(&f, o) == 0);
    uint64_t h = 1469598103934665603ULL;
    struct sg_fleet_msg m;
    while (sg_fleet_next(f, &m) == 1) {
        for (size_t i = 0; i < m.len; i++) {
            h = (h ^ m.payload[i]) * 1099511628211ULL;
        }
        for (const char *p = m.topic; *p; p++) {
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        }
        h = (h ^ m.sim_time_ms) * 1099511628211ULL;
    }
    sg_fleet_free(f);
    return h;
}

static void test_fleet_deterministic(void)
{
    struct sg_fleet_opts o;
    fleet_opts(&o, 5);
    o.dup_frac = o.ooo_frac = o.late_frac = o.invalid_frac = o.malformed_frac = 0.05;
    uint64_t a = fleet_digest(&o);
    CU_ASSERT_EQUAL(a, fleet_digest(&o));
    o.seed = 6;
    CU_ASSERT_NOT_EQUAL(a, fleet_digest(&o));
}

/* protobuf-c decodes every well-formed payload and rejects every malformed one. */
static void test_fleet_decodes(void)
{
    struct sg_fleet_opts o;
    fleet_opts(&o, 9);
    o.sensors = 13;
    o.malformed_frac = 0.2;
    o.invalid_frac = 0.05;
    struct sg_fleet *f = NULL;
    CU_ASSERT_FATAL(sg_fleet_new(&f, &o) == 0);
    struct sg_fleet_msg m;
    uint64_t last_time = 0;
    uint64_t good = 0;
    uint64_t bad = 0;
    uint64_t readings = 0;
    bool kinds[10] = {false};
    bool wrapped = false;
    while (sg_fleet_next(f, &m) == 1) {
        CU_ASSERT(m.sim_time_ms >= last_time);
        last_time = m.sim_time_ms;
        CU_ASSERT(strncmp(m.topic, "sensors/city/", 13) == 0 ||
                  strncmp(m.topic, "sensors/mems/", 13) == 0);
        Sensegate__V1__ReadingBatch *b =
            sensegate__v1__reading_batch__unpack(NULL, m.len, m.payload);
        if (m.malformed) {
            CU_ASSERT(b == NULL);
            bad++;
            sensegate__v1__reading_batch__free_unpacked(b, NULL);
            continue;
        }
        CU_ASSERT_FATAL(b != NULL);
        good++;
        CU_ASSERT_EQUAL(b->n_readings, m.nreadings);
        CU_ASSERT(m.nreadings >= 1 && m.nreadings <= o.readings_per_batch);
        const char *dev = strrchr(m.topic, '/') + 1;
        CU_ASSERT_STRING_EQUAL(b->device_id, dev);
        for (size_t i = 0; i < b->n_readings; i++) {
            const Sensegate__V1__Reading *r = b->readings[i];
            if (r->kind >= 1 && r->kind <= 9) {
                kinds[r->kind] = true;
            }
            if (r->seq == 0) {
                wrapped = true;
            }
        }
        readings += b->n_readings;
        sensegate__v1__reading_batch__free_unpacked(b, NULL);
    }
    const struct sg_fleet_stats *st = sg_fleet_stats(f);
    CU_ASSERT_EQUAL(st->payloads, good + bad);
    CU_ASSERT_EQUAL(st->malformed, bad);
    CU_ASSERT_EQUAL(st->readings, readings);
    CU_ASSERT(bad > 0);
    for (int k = 1; k <= 9; k++) {
        CU_ASSERT(kinds[k]);
    }
    (void)wrapped;
    sg_fleet_free(f);
}

struct fault_run {
    uint64_t v[SG_TRUTH_NVERDICTS];
    struct sg_fleet_stats st;
    size_t rollups;
};

static void run_faults(struct sg_fleet_opts *o, struct fault_run *out)
{
    struct sg_truth_opts to = {.nwindows = o->nwindows,
                               .allowed_lateness_ms = o->allowed_lateness_ms,
                               .max_past_ms = 3600000,
                               .max_future_ms = 300000};
    memcpy(to.windows_ms, o->windows_ms, sizeof(to.windows_ms));
    struct sg_truth *t = NULL;
    CU_ASSERT_FATAL(sg_truth_new(&t, &to) == 0);
    o->truth = t;
    struct sg_fleet *f = NULL;
    CU_ASSERT_FATAL(sg_fleet_new(&f, o) == 0);
    struct sg_fleet_msg m;
    while (sg_fleet_next(f, &m) == 1) {
    }
    sg_truth_finish(t);
    for (int v = 0; v < SG_TRUTH_NVERDICTS; v++) {
        out->v[v] = sg_truth_count(t, (enum sg_truth_verdict)v);
    }
    out->st = *sg_fleet_stats(f);
    sg_truth_rollups(t, &out->rollups);
    sg_fleet_free(f);
    sg_truth_free(t);
    o->truth = NULL;
}

static void test_fleet_faults(void)
{
    struct sg_fleet_opts o;
    struct fault_run r;
    uint64_t total;

    /* No faults: everything accepted. */
    fleet_opts(&o, 3);
    run_faults(&o, &r);
    total = r.st.readings;
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_ACCEPTED], total);
    CU_ASSERT(r.rollups > 0);

    /* Out of order within lateness: still all accepted. */
    fleet_opts(&o, 3);
    o.ooo_frac = 0.1;
    run_faults(&o, &r);
    CU_ASSERT(r.st.inj_ooo > 100);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_ACCEPTED], r.st.readings);

    /* Invalid: exactly the injected ones. */
    fleet_opts(&o, 3);
    o.invalid_frac = 0.05;
    run_faults(&o, &r);
    CU_ASSERT(r.st.inj_invalid > 50);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_INVALID], r.st.inj_invalid);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_ACCEPTED] + r.v[SG_TRUTH_INVALID], r.st.readings);

    /* Late: held past window end + L; only those still out at the very end may not be. */
    fleet_opts(&o, 3);
    o.late_frac = 0.03;
    o.windows_ms[1] = 60000;
    o.nwindows = 2;
    run_faults(&o, &r);
    CU_ASSERT(r.st.inj_late > 50);
    CU_ASSERT(r.v[SG_TRUTH_LATE] <= r.st.inj_late);
    CU_ASSERT(r.v[SG_TRUTH_LATE] * 10 >= r.st.inj_late * 7);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_ACCEPTED] + r.v[SG_TRUTH_LATE], r.st.readings);

    /* Duplicates: duplicate, or late when the window closed in between. */
    fleet_opts(&o, 3);
    o.dup_frac = 0.05;
    run_faults(&o, &r);
    CU_ASSERT(r.st.inj_dup > 50);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_DUPLICATE] + r.v[SG_TRUTH_LATE], r.st.inj_dup);
    CU_ASSERT(r.v[SG_TRUTH_DUPLICATE] * 2 >= r.st.inj_dup);
    CU_ASSERT_EQUAL(r.v[SG_TRUTH_ACCEPTED] + r.st.inj_dup, r.st.readings);

    /* Everything at once: the verdicts add up to the readings sent. */
    fleet_opts(&o, 4);
    o.dup_frac = o.ooo_frac = o.late_frac = o.invalid_frac = o.malformed_frac = 0.04;
    run_faults(&o, &r);
    CU_ASSERT_EQUAL(r.v[0] + r.v[1] + r.v[2] + r.v[3], r.st.readings);
    CU_ASSERT(r.st.malformed > 0);
}

static void test_fleet_bad_opts(void)
{
    struct sg_fleet_opts o;
    struct sg_fleet *f = NULL;
    fleet_opts(&o, 1);
    o.sensors = 0;
    CU_ASSERT_EQUAL(sg_fleet_new(&f, &o), -2);
    fleet_opts(&o, 1);
    o.ooo_frac = 0.6;
    o.late_frac = 0.6;
    CU_ASSERT_EQUAL(sg_fleet_new(&f, &o), -2);
    fleet_opts(&o, 1);
    o.nwindows = 0;
    CU_ASSERT_EQUAL(sg_fleet_new(&f, &o), -2);
    CU_ASSERT(f == NULL);
}

static const struct sg_test truth_closing_and_late_tests[] = {
    {"window closes at end + L; late goes to the next window", test_late},
    {"late counted only for the widths that closed", test_two_widths},
    {"gateway clock at series creation", test_new_series_clock},
    SG_TEST_END,
};
static const struct sg_test truth_duplicates_and_order_tests[] = {
    {"duplicates per series", test_duplicate},
    {"out of order within lateness", test_out_of_order},
    {"gaps across the 2^32 wrap", test_gaps_wrap},
    SG_TEST_END,
};
static const struct sg_test truth_statistics_tests[] = {
    {"exact moments, last on a tie, faulty", test_stats_exact},
    {"quantile ranks floor(q*(n-1))", test_quantile_ranks},
    {"ACCEL_G has three channels", test_accel_channels},
    SG_TEST_END,
};
static const struct sg_test truth_validation_tests[] = {
    {"invalid rules and skew bounds", test_invalid},
    SG_TEST_END,
};
static const struct sg_test fleet_tests[] = {
    {"same seed same bytes, other seed other bytes", test_fleet_deterministic},
    {"payloads decode with protobuf-c, malformed ones do not", test_fleet_decodes},
    {"each fault lands in its verdict", test_fleet_faults},
    {"bad options rejected", test_fleet_bad_opts},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"truth: closing and late", NULL, NULL, truth_closing_and_late_tests},
    {"truth: duplicates and order", NULL, NULL, truth_duplicates_and_order_tests},
    {"truth: statistics", NULL, NULL, truth_statistics_tests},
    {"truth: validation", NULL, NULL, truth_validation_tests},
    {"fleet", NULL, NULL, fleet_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

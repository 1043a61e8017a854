/*
 * rollup: verdicts (invalid, late, duplicate, accepted) and windows per
 * docs/SEMANTICS.md: dedup, late (a duplicate after close is late), gaps
 * across the seq wrap, faulty, partial on flush, several widths, per-series
 * watermarks, gateway-clock closing, the series limit, eviction, and a
 * property test of a random stream against an independent simple model with
 * brute-force statistics of every emitted window.
 * Long file: one suite per rule of docs/SEMANTICS.md plus the property test's
 * independent model, all on the collector at the top.
 */
#include "common.h"
#include "rollup.h"
#include "series.h"
#include "sg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000000ULL /* a gateway clock, aligned to 10 s */

/* ---- collector of emitted rollups ---- */

struct collector {
    struct sg_rollup *r;
    size_t *step; /* input step during which each rollup was emitted */
    size_t n;
    size_t cap;
    size_t cur_step;
};

static struct collector col;

static void collect(void *ctx, const struct sg_rollup *r)
{
    struct collector *c = ctx;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->r = realloc(c->r, c->cap * sizeof(*c->r));
        c->step = realloc(c->step, c->cap * sizeof(*c->step));
    }
    c->r[c->n] = *r;
    c->step[c->n] = c->cur_step;
    c->n++;
}

static void col_reset(void)
{
    free(col.r);
    free(col.step);
    memset(&col, 0, sizeof col);
}

static struct sg_rollup_opts base_opts(void)
{
    struct sg_rollup_opts o;
    memset(&o, 0, sizeof o);
    o.windows_ms[0] = 1000;
    o.nwindows = 1;
    o.allowed_lateness_ms = 0;
    o.max_series = 100;
    o.ring_seqs = 64;
    o.series_idle_ms = 60000;
    o.sketch_alpha = 0.005;
    o.emit = collect;
    o.emit_ctx = &col;
    return o;
}

static struct sg_rollup_engine *engine(const struct sg_rollup_opts *o)
{
    col_reset();
    struct sg_rollup_engine *e = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_rollup_engine_new(&e, o), 0);
    return e;
}

static struct sg_reading rd(const char *id, int kind, uint64_t ts, uint32_t seq, double v)
{
    struct sg_reading r;
    memset(&r, 0, sizeof r);
    snprintf(r.sensor_id, sizeof r.sensor_id, "%s", id);
    r.id_len = (uint8_t)strlen(r.sensor_id);
    r.kind = (uint8_t)kind;
    r.ts_ms = ts;
    r.seq = seq;
    r.nvalues = kind == SG_KIND_ACCEL_G ? 3 : 1;
    for (int c = 0; c < r.nvalues; c++) {
        r.values[c] = v + c;
    }
    return r;
}

static enum sg_verdict add(struct sg_rollup_engine *e, const char *id, uint64_t ts, uint32_t seq,
                           double v, uint64_t now)
{
    struct sg_reading r = rd(id, SG_KIND_TEMPERATURE_C, ts, seq, v);
    return sg_rollup_add(e, &r, now);
}

static uint64_t verdict_sum(const struct sg_rollup_stats *st)
{
    uint64_t s = 0;
    for (int i = 0; i < SG_VERDICT_COUNT; i++) {
        s += st->verdicts[i];
    }
    return s;
}

/* ---- focused tests ---- */

static void test_options(void)
{
    struct sg_rollup_engine *e = NULL;
    struct sg_rollup_opts o = base_opts();
    o.nwindows = 0;
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    o = base_opts();
    o.windows_ms[0] = 0;
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    o = base_opts();
    o.windows_ms[0] = (uint64_t)UINT32_MAX + 1u; /* ts offsets in a window are 32-bit */
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    o = base_opts();
    o.ring_seqs = 100;
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    o = base_opts();
    o.sketch_alpha = 0;
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    o = base_opts();
    o.max_series = 0;
    CU_ASSERT_EQUAL(sg_rollup_engine_new(&e, &o), SG_EINVAL);
    CU_ASSERT_PTR_NULL(e);
    sg_rollup_engine_free(NULL);
}

static void test_dedup(void)
{
    struct sg_rollup_opts o = base_opts();
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 100, 7, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 100, 7, 1.0, T0), SG_VERDICT_DUPLICATE);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 200, 7, 5.0, T0), SG_VERDICT_DUPLICATE); /* same seq */
    CU_ASSERT_EQUAL(add(e, "a", T0 + 300, 8, 2.0, T0), SG_VERDICT_ACCEPTED);
    /* Same seq, other series: not a duplicate. */
    CU_ASSERT_EQUAL(add(e, "b", T0 + 100, 7, 1.0, T0), SG_VERDICT_ACCEPTED);
    struct sg_reading r = rd("a", SG_KIND_HUMIDITY_PCT, T0 + 100, 7, 1.0);
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_ACCEPTED);
    /* A duplicate in a window with no accepted reading: counted, not emitted. */
    CU_ASSERT_EQUAL(add(e, "b", T0 + 5100, 7, 1.0, T0), SG_VERDICT_DUPLICATE);
    sg_rollup_tick(e, T0 + 1000);
    CU_ASSERT_EQUAL_FATAL(col.n, 3);
    const struct sg_rollup *a = &col.r[0];
    CU_ASSERT_STRING_EQUAL(a->sensor_id, "a");
    CU_ASSERT_EQUAL(a->kind, SG_KIND_TEMPERATURE_C);
    CU_ASSERT_EQUAL(a->count, 2);
    CU_ASSERT_EQUAL(a->duplicates, 2);
    CU_ASSERT_EQUAL(a->window_start_ms, T0);
    CU_ASSERT_EQUAL(a->window_ms, 1000);
    CU_ASSERT_EQUAL(a->gaps, 0);
    CU_ASSERT(!a->partial);
    CU_ASSERT_DOUBLE_EQUAL(a->sum, 3.0, 0);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_ACCEPTED], 4);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_DUPLICATE], 3);
    CU_ASSERT_EQUAL(st->rollups, 3);
    CU_ASSERT_EQUAL(st->windows_closed, 3);
    CU_ASSERT_EQUAL(st->active_series, 3);
    CU_ASSERT_EQUAL(st->open_windows, 1); /* b's duplicate-only window at T0+5000 */
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 3);
    CU_ASSERT_EQUAL(st->open_windows, 0);
    sg_rollup_engine_free(e);
}

static void test_late(void)
{
    struct sg_rollup_opts o = base_opts();
    o.allowed_lateness_ms = 500;
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 10, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 1400, 2, 2.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL_FATAL(col.n, 0); /* max_ts - L = T0+900 < end T0+1000 */
    CU_ASSERT_EQUAL(add(e, "s", T0 + 1500, 3, 3.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL_FATAL(col.n, 1); /* closed by the sensor's own clock */
    CU_ASSERT_EQUAL(col.r[0].count, 1);
    CU_ASSERT_EQUAL(col.r[0].late, 0);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 999, 4, 9.0, T0), SG_VERDICT_LATE);
    /* The duplicate of an accepted reading whose window closed is late. */
    CU_ASSERT_EQUAL(add(e, "s", T0 + 10, 1, 1.0, T0), SG_VERDICT_LATE);
    /* seq 4 was not marked by its late arrival. */
    CU_ASSERT_EQUAL(add(e, "s", T0 + 1600, 4, 4.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 1600, 4, 4.0, T0), SG_VERDICT_DUPLICATE);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 2600, 5, 5.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL_FATAL(col.n, 2);
    CU_ASSERT_EQUAL(col.r[1].window_start_ms, T0 + 1000);
    CU_ASSERT_EQUAL(col.r[1].count, 3);
    CU_ASSERT_EQUAL(col.r[1].late, 2); /* taken by the next emitted window */
    CU_ASSERT_EQUAL(col.r[1].duplicates, 1);
    CU_ASSERT_EQUAL(col.r[1].first_ts_ms, T0 + 1400);
    CU_ASSERT_EQUAL(col.r[1].last_ts_ms, T0 + 1600);
    CU_ASSERT_EQUAL(col.r[1].last, 4.0);
    CU_ASSERT_EQUAL(col.r[1].gaps, 0);
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 3);
    CU_ASSERT_EQUAL(col.r[2].late, 0); /* reset after being taken */
    CU_ASSERT(col.r[2].partial);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_LATE], 2);
    CU_ASSERT_EQUAL(verdict_sum(st), 8);
    sg_rollup_engine_free(e);
}

static void test_gaps_wrap_faulty_last(void)
{
    struct sg_rollup_opts o = base_opts();
    struct sg_rollup_engine *e = engine(&o);
    uint32_t seqs[] = {0xFFFFFFFEu, 2u, 0xFFFFFFFFu, 1u, 5u};
    uint64_t ts[] = {T0 + 1, T0 + 50, T0 + 2, T0 + 50, T0 + 40};
    double v[] = {10, 20, 30, 40, 50};
    for (int i = 0; i < 5; i++) {
        struct sg_reading r = rd("w", SG_KIND_NOISE_DBA, ts[i], seqs[i], v[i]);
        r.status = (i == 1 || i == 4) ? 0x4u : 0u;
        CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_ACCEPTED);
    }
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 1);
    const struct sg_rollup *r = &col.r[0];
    CU_ASSERT_EQUAL(r->count, 5);
    CU_ASSERT_EQUAL(r->gaps, 3); /* 0xFFFFFFFE..5 is 8 seqs; 0, 3, 4 missing */
    CU_ASSERT_EQUAL(r->faulty, 2);
    CU_ASSERT_EQUAL(r->first_ts_ms, T0 + 1);
    CU_ASSERT_EQUAL(r->last_ts_ms, T0 + 50);
    CU_ASSERT_EQUAL(r->last, 20.0); /* tie at T0+50: the first accepted */
    CU_ASSERT_EQUAL(r->min, 10.0);
    CU_ASSERT_EQUAL(r->max, 50.0);
    CU_ASSERT_DOUBLE_EQUAL(r->mean, 30.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(r->stddev, sqrt(200.0), 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(r->rms, sqrt((100.0 + 400 + 900 + 1600 + 2500) / 5), 1e-12);
    CU_ASSERT(fabs(r->p50 - 30.0) <= 0.3);
    CU_ASSERT(fabs(r->p95 - 40.0) <= 0.4); /* rank floor(0.95*4) = 3 */
    CU_ASSERT(r->partial);
    CU_ASSERT_EQUAL(sg_rollup_stats(e)->windows_partial, 1);
    sg_rollup_engine_free(e);
}

static void test_invalid_and_accel(void)
{
    struct sg_rollup_opts o = base_opts();
    struct sg_rollup_engine *e = engine(&o);
    struct sg_reading r = rd("x", SG_KIND_TEMPERATURE_C, T0, 1, 1.0);
    r.invalid = SG_INVALID_TS_FUTURE;
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_INVALID);
    r = rd("x", SG_KIND_TEMPERATURE_C, T0, 1, NAN);
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_INVALID);
    r = rd("x", SG_KIND_ACCEL_G, T0, 1, 1.0);
    r.nvalues = 1;
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_INVALID);
    r = rd("x", 0, T0, 1, 1.0);
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_INVALID);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->invalid_by_reason[SG_INVALID_TS_FUTURE], 1);
    CU_ASSERT_EQUAL(st->invalid_by_reason[SG_INVALID_VALUE], 1);
    CU_ASSERT_EQUAL(st->invalid_by_reason[SG_INVALID_CHANNELS], 1);
    CU_ASSERT_EQUAL(st->invalid_by_reason[SG_INVALID_KIND], 1);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_INVALID], 4);
    CU_ASSERT_EQUAL(st->active_series, 0); /* invalid readings create no series */

    for (uint32_t i = 0; i < 4; i++) {
        r = rd("acc-1", SG_KIND_ACCEL_G, T0 + i * 10, i, (double)i);
        CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_ACCEPTED);
    }
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 3);
    for (uint8_t c = 0; c < 3; c++) {
        CU_ASSERT_EQUAL(col.r[c].channel, c);
        CU_ASSERT_EQUAL(col.r[c].kind, SG_KIND_ACCEL_G);
        CU_ASSERT_EQUAL(col.r[c].count, 4);
        CU_ASSERT_DOUBLE_EQUAL(col.r[c].sum, 6.0 + 4 * c, 1e-12);
        CU_ASSERT_EQUAL(col.r[c].min, 0.0 + c);
        CU_ASSERT_EQUAL(col.r[c].max, 3.0 + c);
        CU_ASSERT_EQUAL(col.r[c].last, 3.0 + c);
    }
    CU_ASSERT_EQUAL(st->rollups, 3);
    CU_ASSERT_EQUAL(st->windows_closed, 1);
    sg_rollup_engine_free(e);
}

static void test_several_widths(void)
{
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[0] = 1000;
    o.windows_ms[1] = 5000;
    o.nwindows = 2;
    o.allowed_lateness_ms = 200;
    struct sg_rollup_engine *e = engine(&o);
    /* One reading every 250 ms for 12 s. */
    for (uint32_t i = 0; i < 48; i++) {
        CU_ASSERT_EQUAL(add(e, "m", T0 + i * 250, i, (double)i, T0), SG_VERDICT_ACCEPTED);
    }
    /* Closed: 1 s windows up to end <= floor((T0+11750-200)/1000)*1000 =
     * T0+11000, i.e. 11 of them; 5 s windows up to end <= T0+10000: 2. */
    size_t n1 = 0;
    size_t n5 = 0;
    for (size_t i = 0; i < col.n; i++) {
        const struct sg_rollup *r = &col.r[i];
        if (r->window_ms == 1000) {
            CU_ASSERT_EQUAL(r->window_start_ms, T0 + n1 * 1000);
            CU_ASSERT_EQUAL(r->count, 4);
            CU_ASSERT_DOUBLE_EQUAL(r->sum, 4.0 * (4.0 * (double)n1) + 6.0, 1e-9);
            n1++;
        } else {
            CU_ASSERT_EQUAL(r->window_ms, 5000);
            CU_ASSERT_EQUAL(r->window_start_ms, T0 + n5 * 5000);
            CU_ASSERT_EQUAL(r->count, 20);
            CU_ASSERT_EQUAL(r->first_ts_ms, T0 + n5 * 5000);
            CU_ASSERT_EQUAL(r->last_ts_ms, T0 + n5 * 5000 + 4750);
            n5++;
        }
    }
    CU_ASSERT_EQUAL(n1, 11);
    CU_ASSERT_EQUAL(n5, 2);
    /* Late for the 1 s width only (its window closed): late, counted there. */
    CU_ASSERT_EQUAL(add(e, "m", T0 + 10900, 100, 0.0, T0), SG_VERDICT_LATE);
    col.n = 0;
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 2);
    for (size_t i = 0; i < col.n; i++) {
        CU_ASSERT(col.r[i].partial);
        if (col.r[i].window_ms == 1000) {
            CU_ASSERT_EQUAL(col.r[i].window_start_ms, T0 + 11000);
            CU_ASSERT_EQUAL(col.r[i].late, 1);
        } else {
            CU_ASSERT_EQUAL(col.r[i].window_start_ms, T0 + 10000);
            CU_ASSERT_EQUAL(col.r[i].count, 8);
            CU_ASSERT_EQUAL(col.r[i].late, 0);
        }
    }
    /* After a flush those windows are over: a reading for them is late. */
    CU_ASSERT_EQUAL(add(e, "m", T0 + 11900, 200, 0.0, T0), SG_VERDICT_LATE);
    sg_rollup_engine_free(e);
}

static void test_per_series_watermark(void)
{
    struct sg_rollup_opts o = base_opts();
    o.allowed_lateness_ms = 100;
    struct sg_rollup_engine *e = engine(&o);
    /* Sensor "fast" runs 60 s ahead; it must not make "slow" late. */
    CU_ASSERT_EQUAL(add(e, "fast", T0 + 60000, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "fast", T0 + 61500, 2, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL_FATAL(col.n, 1);
    CU_ASSERT_STRING_EQUAL(col.r[0].sensor_id, "fast");
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 5, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 1050, 2, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 700, 3, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 1100, 4, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL_FATAL(col.n, 2);
    CU_ASSERT_STRING_EQUAL(col.r[1].sensor_id, "slow");
    CU_ASSERT_EQUAL(col.r[1].count, 2);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 800, 5, 1.0, T0), SG_VERDICT_LATE);
    /* Duplicate, late and invalid readings do not move the watermark. */
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 1100, 4, 1.0, T0), SG_VERDICT_DUPLICATE);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 9000, 4, 1.0, T0), SG_VERDICT_DUPLICATE);
    CU_ASSERT_EQUAL(add(e, "slow", T0 + 1500, 6, 1.0, T0), SG_VERDICT_ACCEPTED);
    sg_rollup_engine_free(e);
}

static void test_gateway_clock_tick(void)
{
    struct sg_rollup_opts o = base_opts();
    o.allowed_lateness_ms = 2000;
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(add(e, "g", T0 + 500, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    sg_rollup_tick(e, T0 + 2999); /* floor((now-L)/w)*w = T0: not closed */
    CU_ASSERT_EQUAL_FATAL(col.n, 0);
    sg_rollup_tick(e, T0 + 3000);
    CU_ASSERT_EQUAL_FATAL(col.n, 1);
    CU_ASSERT(!col.r[0].partial);
    CU_ASSERT_EQUAL(add(e, "g", T0 + 900, 2, 1.0, T0 + 3000), SG_VERDICT_LATE);
    /* A new series starts with the gateway-clock watermark. */
    CU_ASSERT_EQUAL(add(e, "h", T0 + 900, 1, 1.0, T0 + 3000), SG_VERDICT_LATE);
    CU_ASSERT_EQUAL(add(e, "h2", T0 + 1000, 1, 1.0, T0 + 3000), SG_VERDICT_ACCEPTED);
    sg_rollup_tick(e, T0 + 3999);
    CU_ASSERT_EQUAL_FATAL(col.n, 1);
    sg_rollup_tick(e, T0 + 4000);
    CU_ASSERT_EQUAL_FATAL(col.n, 2);
    CU_ASSERT_STRING_EQUAL(col.r[1].sensor_id, "h2");
    CU_ASSERT_EQUAL(sg_rollup_stats(e)->open_windows, 0);
    sg_rollup_engine_free(e);
}

static void test_series_limit(void)
{
    struct sg_rollup_opts o = base_opts();
    o.max_series = 2;
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(add(e, "a", T0, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "b", T0, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "c", T0, 1, 1.0, T0), SG_VERDICT_INVALID);
    struct sg_reading r = rd("a", SG_KIND_PM10_UGM3, T0, 1, 1.0); /* same id, new kind */
    CU_ASSERT_EQUAL(sg_rollup_add(e, &r, T0), SG_VERDICT_INVALID);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 1, 2, 1.0, T0), SG_VERDICT_ACCEPTED);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->invalid_by_reason[SG_INVALID_SERIES_LIMIT], 2);
    CU_ASSERT_EQUAL(st->active_series, 2);
    sg_rollup_engine_free(e);
}

static void test_eviction(void)
{
    struct sg_rollup_opts o = base_opts();
    o.max_series = 2;
    o.series_idle_ms = 10000;
    o.allowed_lateness_ms = 1000;
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 100, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "b", T0 + 100, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "b", T0 + 5100, 2, 1.0, T0 + 5000), SG_VERDICT_ACCEPTED);
    size_t mem_before = sg_rollup_memory_bytes(e);
    CU_ASSERT(mem_before > 0);
    sg_rollup_tick(e, T0 + 9999); /* a idle 9999 ms: stays */
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->series_evicted, 0);
    sg_rollup_tick(e, T0 + 10000); /* a idle 10 s, no open window: evicted */
    CU_ASSERT_EQUAL(st->series_evicted, 1);
    CU_ASSERT_EQUAL(st->active_series, 1);
    CU_ASSERT_EQUAL(add(e, "c", T0 + 10000, 1, 1.0, T0 + 10000), SG_VERDICT_ACCEPTED);
    /* b's window at T0+5000 closed at T0+7000 and b is idle since T0+5000. */
    sg_rollup_tick(e, T0 + 14999);
    CU_ASSERT_EQUAL(st->series_evicted, 1);
    sg_rollup_tick(e, T0 + 15000);
    CU_ASSERT_EQUAL(st->series_evicted, 2);
    /* a comes back with a fresh ring and the gateway-clock watermark. */
    CU_ASSERT_EQUAL(add(e, "a", T0 + 15000, 1, 1.0, T0 + 15000), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "a", T0 + 13000, 0, 1.0, T0 + 15000), SG_VERDICT_LATE);
    CU_ASSERT_EQUAL(st->active_series, 2);
    /* c has an open window: not evicted however idle. */
    CU_ASSERT_EQUAL(add(e, "c", T0 + 900000, 2, 1.0, T0 + 15000), SG_VERDICT_ACCEPTED);
    sg_rollup_tick(e, T0 + 40000);
    CU_ASSERT_EQUAL(st->series_evicted, 3); /* only a */
    CU_ASSERT_EQUAL(st->active_series, 1);
    CU_ASSERT(sg_rollup_memory_bytes(e) >= mem_before); /* capacity is kept for reuse */
    sg_rollup_engine_free(e);
}

static void test_ring_overflow_and_reset(void)
{
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[0] = 100000;
    struct sg_rollup_engine *e = engine(&o);
    for (uint32_t s = 1000; s < 1100; s++) {
        CU_ASSERT_EQUAL(add(e, "r", T0 + s, s, 1.0, T0), SG_VERDICT_ACCEPTED);
    }
    /* 100 behind the newest with a 64-seq ring: accepted unchecked. */
    CU_ASSERT_EQUAL(add(e, "r", T0 + 1, 999, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "r", T0 + 1, 999, 1.0, T0), SG_VERDICT_ACCEPTED);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->ring_overflows, 2);
    /* Counter restart. */
    CU_ASSERT_EQUAL(add(e, "r", T0 + 2000, 0, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(st->seq_resets, 0); /* 1099 -> 0 is within 65536 */
    CU_ASSERT_EQUAL(add(e, "r", T0 + 2001, 4000000000u, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(st->seq_resets, 1);
    CU_ASSERT_EQUAL(add(e, "r", T0 + 2002, 4000000000u, 1.0, T0), SG_VERDICT_DUPLICATE);
    sg_rollup_engine_free(e);
}

/* ---- batch entry point: same verdicts and rollups as one at a time ---- */

static void test_batch_equals_single(void)
{
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[1] = 3000;
    o.nwindows = 2;
    o.allowed_lateness_ms = 300;
    o.max_series = 40;
    size_t n = 6000;
    struct sg_reading *in = calloc(n, sizeof(*in));
    uint64_t *now = calloc(n, sizeof(*now));
    uint64_t x = 12345;
    uint64_t t = T0;
    uint32_t seq[50] = {0};
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (i % 37 == 0) {
            t += x % 400; /* the gateway clock moves between batches of 37 */
        }
        now[i] = t;
        int sid = (int)(x % 50);
        char id[16];
        snprintf(id, sizeof id, "b-%d", sid);
        if (x % 11 == 0 && i > 0) {
            in[i] = in[i - 1 - (x >> 20) % (i < 40 ? i : 40)];
        } else {
            in[i] = rd(id, sid % 5 == 0 ? SG_KIND_ACCEL_G : SG_KIND_STRAIN_UE, t - (x >> 8) % 900,
                       seq[sid]++, (double)((x >> 30) % 1000) / 7.0);
            in[i].invalid = (x >> 50) % 40 == 0 ? SG_INVALID_TS_PAST : 0;
        }
    }
    enum sg_verdict *va = calloc(n, sizeof(*va));
    enum sg_verdict *vb = calloc(n, sizeof(*vb));
    struct sg_rollup_engine *a = engine(&o);
    for (size_t i = 0; i < n; i++) {
        va[i] = sg_rollup_add(a, &in[i], now[i]);
        if (i % 37 == 36) {
            sg_rollup_tick(a, now[i]);
        }
    }
    sg_rollup_flush(a);
    struct collector ca = col;
    memset(&col, 0, sizeof col);
    struct sg_rollup_engine *b = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_rollup_engine_new(&b, &o), 0);
    size_t acc = 0;
    for (size_t i = 0; i < n; i += 37) {
        size_t m = n - i < 37 ? n - i : 37;
        acc += sg_rollup_add_batch(b, &in[i], m, now[i], &vb[i]);
        if (m == 37) {
            sg_rollup_tick(b, now[i]);
        }
    }
    sg_rollup_flush(b);
    CU_ASSERT_EQUAL(memcmp(va, vb, n * sizeof(*va)), 0);
    CU_ASSERT_EQUAL(acc, sg_rollup_stats(a)->verdicts[SG_VERDICT_ACCEPTED]);
    CU_ASSERT(acc > n / 2);
    CU_ASSERT_EQUAL_FATAL(col.n, ca.n);
    size_t diff = 0;
    for (size_t i = 0; i < col.n; i++) {
        const struct sg_rollup *p = &ca.r[i];
        const struct sg_rollup *q = &col.r[i];
        diff += strcmp(p->sensor_id, q->sensor_id) != 0 || p->channel != q->channel ||
                p->window_start_ms != q->window_start_ms || p->window_ms != q->window_ms ||
                p->count != q->count || p->sum != q->sum || p->p99 != q->p99 ||
                p->late != q->late || p->duplicates != q->duplicates || p->partial != q->partial;
    }
    CU_ASSERT_EQUAL(diff, 0);
    CU_ASSERT(memcmp(sg_rollup_stats(a), sg_rollup_stats(b), sizeof(struct sg_rollup_stats)) == 0);
    free(ca.r);
    free(ca.step);
    sg_rollup_engine_free(a);
    sg_rollup_engine_free(b);
    free(in);
    free(now);
    free(va);
    free(vb);
}

/* ---- the series table on its own: random adds and removes vs a bitmap ---- */

#define ST_KEYS 6000

static void series_table_random(size_t max_series, uint32_t nkeys)
{
    struct sg_series_table *t = NULL;
    struct sg_series_opts so = {.max_series = max_series, .ring_seqs = 64, .payload_bytes = 24};
    CU_ASSERT_EQUAL_FATAL(sg_series_table_new(&t, &so), 0);
    struct sg_series_opts bad = so;
    bad.ring_seqs = 65;
    struct sg_series_table *t2 = NULL;
    CU_ASSERT_EQUAL(sg_series_table_new(&t2, &bad), SG_EINVAL);
    static unsigned char live[ST_KEYS];
    memset(live, 0, sizeof live);
    size_t nlive = 0;
    size_t errors = 0;
    uint64_t x = 88172645463325252ULL;
    for (int step = 0; step < 200000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t k = (uint32_t)(x % nkeys);
        char id[32];
        snprintf(id, sizeof id, "sensor-%u", k / 2);
        uint8_t kind = (uint8_t)(1 + k % 2); /* same id, two kinds */
        size_t len = strlen(id);
        uint64_t h = sg_series_hash(id, len, kind);
        struct sg_series *s = sg_series_find(t, id, len, kind, h);
        if ((s != NULL) != (live[k] != 0)) {
            errors++;
        }
        if (s != NULL && (s->kind != kind || strcmp(s->sensor_id, id) != 0)) {
            errors++;
        }
        if (s != NULL && ((x >> 40) % 3 == 0)) {
            uint32_t *pl = sg_series_payload(s);
            if (*pl != k) {
                errors++;
            }
            sg_series_remove(t, s);
            live[k] = 0;
            nlive--;
        } else if (s == NULL) {
            bool created = false;
            int rc = sg_series_find_or_add(t, id, len, kind, h, 0, &s, &created);
            if (nlive >= max_series) {
                if (rc != SG_EFULL) {
                    errors++;
                }
            } else if (rc != 0 || !created) {
                errors++;
            } else {
                uint32_t *pl = sg_series_payload(s);
                if (pl[0] != 0 || pl[5] != 0) { /* payload zeroed */
                    errors++;
                }
                *pl = k;
                if (sg_ring_check(&s->ring, 1) != SG_RING_NEW) {
                    errors++;
                }
                sg_ring_mark(&s->ring, (uint32_t)k);
                live[k] = 1;
                nlive++;
            }
        } else if (sg_ring_check(&s->ring, (uint32_t)k) != SG_RING_SEEN) {
            errors++; /* rings do not bleed between records */
        }
        if (sg_series_count(t) != nlive) {
            errors++;
        }
    }
    CU_ASSERT_EQUAL(errors, 0);
    size_t seen = 0;
    uint32_t cursor = 0;
    struct sg_series *s;
    while ((s = sg_series_next(t, &cursor)) != NULL) {
        uint32_t *pl = sg_series_payload(s);
        CU_ASSERT(live[*pl]);
        seen++;
    }
    CU_ASSERT_EQUAL(seen, nlive);
    CU_ASSERT(nlive > max_series / 2);
    CU_ASSERT(sg_series_memory_bytes(t) > nlive * sizeof(struct sg_series));
    sg_series_table_free(t);
    sg_series_table_free(NULL);
}

static void test_series_table_random(void)
{
    series_table_random(2500, ST_KEYS);
    /* Small tables: probe runs often wrap around the end of the slots. */
    series_table_random(31, 80);
    series_table_random(5, 12);
}

/* ---- property test: random stream vs an independent model ---- */

#define P_SENSORS 7
#define P_MAX_SERIES 6
#define P_N 12000
#define P_NW 2

struct p_input {
    struct sg_reading r;
    int model; /* expected verdict */
    int got;
};

struct p_window {
    int sensor;
    int wi;
    uint64_t start;
    size_t *acc; /* input indexes of accepted readings, in order */
    size_t nacc;
    size_t capacc;
    uint64_t dups;
    int emitted;      /* channel-0 rollups seen */
    long closed_step; /* step at which the model closed it, or -1 */
};

struct p_series {
    int exists;
    uint64_t cb[P_NW];
    uint64_t max_ts;
    int has_max;
    uint32_t *seqs; /* accepted seqs */
    size_t nseqs;
    size_t capseqs;
    size_t *late_at[P_NW]; /* input index of each late reading per width */
    size_t nlate[P_NW];
    size_t caplate[P_NW];
};

static const uint64_t p_widths[P_NW] = {1000, 5000};
#define P_L 700

static struct p_input *pin;
static struct p_window *pw;
static size_t npw;
static size_t cappw;
static struct p_series ps[P_SENSORS];

static uint64_t prng;

static uint32_t p_rand(void)
{
    prng = prng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(prng >> 33);
}

static double p_unit(void)
{
    return (double)p_rand() / 2147483648.0;
}

static uint64_t floor_to(uint64_t t, uint64_t w)
{
    return t / w * w;
}

static struct p_window *p_window(int sensor, int wi, uint64_t start)
{
    for (size_t i = npw; i-- > 0;) {
        if (pw[i].sensor == sensor && pw[i].wi == wi && pw[i].start == start) {
            return &pw[i];
        }
    }
    if (npw == cappw) {
        cappw = cappw ? cappw * 2 : 256;
        pw = realloc(pw, cappw * sizeof(*pw));
    }
    struct p_window *w = &pw[npw++];
    memset(w, 0, sizeof *w);
    w->sensor = sensor;
    w->wi = wi;
    w->start = start;
    w->closed_step = -1;
    return w;
}

static int p_sensor_of(const char *id)
{
    return atoi(id + 1);
}

/* The model's verdict for input i at gateway time now, applied to its state. */
static int p_model(size_t i, uint64_t now, size_t *live)
{
    const struct sg_reading *r = &pin[i].r;
    if (r->invalid) {
        return SG_VERDICT_INVALID;
    }
    if (!isfinite(r->values[0])) {
        return SG_VERDICT_INVALID;
    }
    int s = p_sensor_of(r->sensor_id);
    struct p_series *m = &ps[s];
    if (!m->exists) {
        if (*live >= P_MAX_SERIES) {
            return SG_VERDICT_INVALID;
        }
        (*live)++;
        m->exists = 1;
        for (int w = 0; w < P_NW; w++) {
            m->cb[w] = now >= P_L ? floor_to(now - P_L, p_widths[w]) : 0;
        }
    }
    int late = 0;
    for (int w = 0; w < P_NW; w++) {
        uint64_t start = floor_to(r->ts_ms, p_widths[w]);
        if (start + p_widths[w] <= m->cb[w]) {
            late = 1;
            if (m->nlate[w] == m->caplate[w]) {
                m->caplate[w] = m->caplate[w] ? m->caplate[w] * 2 : 64;
                m->late_at[w] = realloc(m->late_at[w], m->caplate[w] * sizeof(size_t));
            }
            m->late_at[w][m->nlate[w]++] = i;
        }
    }
    if (late) {
        return SG_VERDICT_LATE;
    }
    int dup = 0;
    for (size_t k = 0; k < m->nseqs; k++) {
        if (m->seqs[k] == r->seq) {
            dup = 1;
            break;
        }
    }
    for (int w = 0; w < P_NW; w++) {
        struct p_window *win = p_window(s, w, floor_to(r->ts_ms, p_widths[w]));
        if (dup) {
            win->dups++;
        } else {
            if (win->nacc == win->capacc) {
                win->capacc = win->capacc ? win->capacc * 2 : 16;
                win->acc = realloc(win->acc, win->capacc * sizeof(size_t));
            }
            win->acc[win->nacc++] = i;
        }
    }
    if (dup) {
        return SG_VERDICT_DUPLICATE;
    }
    if (m->nseqs == m->capseqs) {
        m->capseqs = m->capseqs ? m->capseqs * 2 : 256;
        m->seqs = realloc(m->seqs, m->capseqs * sizeof(uint32_t));
    }
    m->seqs[m->nseqs++] = r->seq;
    if (!m->has_max || r->ts_ms > m->max_ts) {
        m->has_max = 1;
        m->max_ts = r->ts_ms;
    }
    for (int w = 0; w < P_NW; w++) {
        if (m->max_ts >= P_L) {
            uint64_t cb = floor_to(m->max_ts - P_L, p_widths[w]);
            if (cb > m->cb[w]) {
                m->cb[w] = cb;
            }
        }
    }
    return SG_VERDICT_ACCEPTED;
}

static void p_model_tick(uint64_t now)
{
    for (int s = 0; s < P_SENSORS; s++) {
        if (!ps[s].exists || now < P_L) {
            continue;
        }
        for (int w = 0; w < P_NW; w++) {
            uint64_t cb = floor_to(now - P_L, p_widths[w]);
            if (cb > ps[s].cb[w]) {
                ps[s].cb[w] = cb;
            }
        }
    }
}

/* Notes the step at which each model window with an accepted reading closes. */
static void p_scan_closed(size_t step)
{
    for (size_t i = 0; i < npw; i++) {
        struct p_window *w = &pw[i];
        if (w->closed_step < 0 && w->nacc > 0 &&
            w->start + p_widths[w->wi] <= ps[w->sensor].cb[w->wi]) {
            w->closed_step = (long)step;
        }
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static int close_rel(double got, double want, double rel)
{
    if (want == 0.0) {
        return fabs(got) <= 1e-12;
    }
    return fabs(got - want) <= rel * fabs(want);
}

static size_t p_fail;

#define P_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (p_fail++ < 10) {                                                                   \
                fprintf(stderr, "\n  property: %s failed (line %d)\n", #cond, __LINE__);           \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Brute-force statistics of one emitted rollup against the model window. */
static void p_check_rollup(const struct sg_rollup *r, size_t emit_step, size_t prev_emit_step,
                           int first_emit)
{
    int s = p_sensor_of(r->sensor_id);
    int wi = r->window_ms == p_widths[0] ? 0 : 1;
    P_CHECK(r->window_ms == p_widths[wi]);
    struct p_window *win = NULL;
    for (size_t i = 0; i < npw; i++) {
        if (pw[i].sensor == s && pw[i].wi == wi && pw[i].start == r->window_start_ms) {
            win = &pw[i];
        }
    }
    P_CHECK(win != NULL);
    if (win == NULL) {
        return;
    }
    if (r->channel == 0) {
        P_CHECK(win->emitted == 0); /* never twice */
        win->emitted++;
    }
    /* Emitted in exactly the step in which the model closed it; a partial
     * one only if the model never closed it. */
    if (r->partial) {
        P_CHECK(win->closed_step == -1);
    } else {
        P_CHECK(win->closed_step == (long)emit_step);
    }
    size_t n = win->nacc;
    P_CHECK(n > 0);
    P_CHECK(r->count == n);
    P_CHECK(r->duplicates == win->dups);
    double *v = malloc(n * sizeof(double));
    double sum = 0;
    double sumsq = 0;
    uint64_t first = UINT64_MAX;
    uint64_t last = 0;
    double lastv = 0;
    uint64_t faulty = 0;
    uint32_t ref = pin[win->acc[0]].r.seq;
    int64_t lo = 0;
    int64_t hi = 0;
    for (size_t k = 0; k < n; k++) {
        const struct sg_reading *x = &pin[win->acc[k]].r;
        double val = x->values[r->channel];
        v[k] = val;
        sum += val;
        sumsq += val * val;
        if (x->ts_ms < first) {
            first = x->ts_ms;
        }
        if (k == 0 || x->ts_ms > last) {
            last = x->ts_ms;
            lastv = val;
        }
        faulty += x->status != 0;
        int64_t d = (int32_t)(x->seq - ref);
        if (d < lo) {
            lo = d;
        }
        if (d > hi) {
            hi = d;
        }
    }
    double mean = sum / (double)n;
    double var = 0;
    for (size_t k = 0; k < n; k++) {
        var += (v[k] - mean) * (v[k] - mean);
    }
    var /= (double)n;
    qsort(v, n, sizeof(double), cmp_d);
    P_CHECK(r->min == v[0]);
    P_CHECK(r->max == v[n - 1]);
    P_CHECK(close_rel(r->sum, sum, 1e-9));
    P_CHECK(close_rel(r->mean, mean, 1e-9));
    P_CHECK(fabs(r->stddev - sqrt(var)) <= 1e-9 * (fabs(mean) + sqrt(var)) + 1e-12);
    P_CHECK(close_rel(r->rms, sqrt(sumsq / (double)n), 1e-9));
    P_CHECK(r->first_ts_ms == first);
    P_CHECK(r->last_ts_ms == last);
    P_CHECK(r->last == lastv);
    P_CHECK(r->faulty == faulty);
    P_CHECK(r->gaps == (uint64_t)(hi - lo + 1) - n);
    static const double q[3] = {0.5, 0.95, 0.99};
    double got[3] = {r->p50, r->p95, r->p99};
    for (int k = 0; k < 3; k++) {
        double exact = v[(size_t)floor(q[k] * (double)(n - 1))];
        P_CHECK(close_rel(got[k], exact, 0.01));
    }
    free(v);
    /* late: the late readings of this series and width since its previous
     * emitted window (all emitted during an earlier step than this one). */
    struct p_series *m = &ps[s];
    uint64_t want_late = 0;
    for (size_t k = 0; k < m->nlate[wi]; k++) {
        size_t at = m->late_at[wi][k];
        if (at < emit_step && (first_emit || at >= prev_emit_step)) {
            want_late++;
        }
    }
    P_CHECK(r->late == want_late);
}

static void test_property_random_stream(void)
{
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[0] = p_widths[0];
    o.windows_ms[1] = p_widths[1];
    o.nwindows = P_NW;
    o.allowed_lateness_ms = P_L;
    o.max_series = P_MAX_SERIES;
    o.ring_seqs = 1024;
    o.series_idle_ms = UINT64_MAX; /* no eviction in this test */
    struct sg_rollup_engine *e = engine(&o);
    pin = calloc(P_N + 1, sizeof(*pin));
    memset(ps, 0, sizeof ps);
    npw = 0;
    p_fail = 0;
    prng = 20240601;

    uint32_t ctr[P_SENSORS];
    int64_t offset[P_SENSORS];
    for (int s = 0; s < P_SENSORS; s++) {
        ctr[s] = (s % 2) ? 0xFFFFFC00u + (uint32_t)s * 37u : (uint32_t)s * 1000u; /* some wrap */
        offset[s] = s == 1 ? 4000 : (s == 2 ? -900 : 0); /* a fast and a slow clock */
    }
    uint64_t now = T0;
    size_t live = 0;
    size_t n = 0;
    size_t resends = 0;
    while (n < P_N) {
        now += p_rand() % 40;
        /* The first readings create series 0..5 in order, so the series
         * limit always falls on s6 and the ACCEL_G series s3 exists. */
        int warm = n < P_MAX_SERIES;
        int s = warm ? (int)n : (int)(p_rand() % P_SENSORS);
        struct sg_reading r;
        uint32_t u = p_rand() % 100;
        if (u < 12 && !warm) {
            /* Redelivery of an earlier reading (QoS 1 or a replaying node). */
            size_t back = 1 + p_rand() % (n < 120 ? n : 120);
            r = pin[n - back].r;
            resends++;
        } else {
            int64_t jitter = (int64_t)(p_rand() % 2200) - 1700;
            uint64_t ts = (uint64_t)((int64_t)now + offset[s] + jitter);
            char id[8];
            snprintf(id, sizeof id, "s%d", s);
            int kind = s == 3 ? SG_KIND_ACCEL_G : SG_KIND_PM2_5_UGM3;
            double val = 20.0 + 5.0 * sin((double)n * 0.01) + 3.0 * (p_unit() - 0.5);
            if (p_rand() % 50 == 0) {
                val = -val * 100.0; /* outliers, negative */
            }
            if (p_rand() % 30 == 0) {
                val = 0.0;
            }
            uint32_t seq = ctr[s]++;
            if (p_rand() % 40 == 0) {
                ctr[s] += p_rand() % 4; /* lost readings: gaps */
            }
            r = rd(id, kind, ts, seq, val);
            r.status = p_rand() % 25 == 0 ? 1u : 0u;
            uint32_t bad = p_rand() % 100;
            if (warm) {
                r.status = 0; /* the first readings stay valid */
            } else if (bad < 3) {
                r.invalid = (uint8_t)(1 + p_rand() % (SG_INVALID_COUNT - 1));
            } else if (bad < 4) {
                r.values[0] = NAN;
            }
        }
        pin[n].r = r;
        col.cur_step = n;
        pin[n].model = p_model(n, now, &live);
        pin[n].got = sg_rollup_add(e, &pin[n].r, now);
        p_scan_closed(n);
        n++;
        if (p_rand() % 50 == 0) {
            col.cur_step = n; /* a tick between readings n-1 and n */
            p_model_tick(now);
            sg_rollup_tick(e, now);
            p_scan_closed(n);
        }
    }
    col.cur_step = n;
    sg_rollup_flush(e);

    /* Verdicts: per reading equal to the model, counters add up. */
    uint64_t want[SG_VERDICT_COUNT] = {0};
    size_t mismatch = 0;
    for (size_t i = 0; i < n; i++) {
        want[pin[i].model]++;
        if (pin[i].model != pin[i].got) {
            if (mismatch++ < 5) {
                fprintf(stderr, "\n  reading %zu: model %d engine %d\n", i, pin[i].model,
                        pin[i].got);
            }
        }
    }
    CU_ASSERT_EQUAL(mismatch, 0);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(verdict_sum(st), n);
    for (int v = 0; v < SG_VERDICT_COUNT; v++) {
        CU_ASSERT_EQUAL(st->verdicts[v], want[v]);
    }
    uint64_t by_reason = 0;
    for (int k = 0; k < SG_INVALID_COUNT; k++) {
        by_reason += st->invalid_by_reason[k];
    }
    CU_ASSERT_EQUAL(by_reason, st->verdicts[SG_VERDICT_INVALID]);
    /* The stream exercised every verdict. */
    CU_ASSERT(want[SG_VERDICT_ACCEPTED] > n / 2);
    CU_ASSERT(want[SG_VERDICT_DUPLICATE] > 100);
    CU_ASSERT(want[SG_VERDICT_LATE] > 100);
    CU_ASSERT(want[SG_VERDICT_INVALID] > 100);
    CU_ASSERT(st->invalid_by_reason[SG_INVALID_SERIES_LIMIT] > 0);
    CU_ASSERT(resends > 0);

    /* Every emitted rollup against brute force, in emission order. */
    size_t last_emit[P_SENSORS][P_NW];
    int emitted_before[P_SENSORS][P_NW];
    memset(emitted_before, 0, sizeof emitted_before);
    size_t partial = 0;
    size_t accel = 0;
    for (size_t i = 0; i < col.n; i++) {
        const struct sg_rollup *r = &col.r[i];
        int s = p_sensor_of(r->sensor_id);
        int wi = r->window_ms == p_widths[0] ? 0 : 1;
        p_check_rollup(r, col.step[i], last_emit[s][wi], !emitted_before[s][wi]);
        if (r->kind == SG_KIND_ACCEL_G) {
            accel++;
        }
        if (r->partial) {
            partial++;
            P_CHECK(col.step[i] == n);
        }
        if (r->channel == (r->kind == SG_KIND_ACCEL_G ? 2 : 0)) {
            last_emit[s][wi] = col.step[i];
            emitted_before[s][wi] = 1;
        }
    }
    CU_ASSERT(partial > 0);
    CU_ASSERT(accel > 0);
    /* Every model window with an accepted reading was emitted exactly once. */
    size_t with_acc = 0;
    for (size_t i = 0; i < npw; i++) {
        if (pw[i].nacc > 0) {
            with_acc++;
            P_CHECK(pw[i].emitted == 1);
        } else {
            P_CHECK(pw[i].emitted == 0);
        }
    }
    CU_ASSERT(with_acc > 100);
    if (getenv("SG_TEST_VERBOSE") != NULL) {
        fprintf(stderr,
                "\n  accepted %llu duplicate %llu late %llu invalid %llu windows %zu "
                "rollups %zu\n",
                (unsigned long long)want[0], (unsigned long long)want[1],
                (unsigned long long)want[2], (unsigned long long)want[3], with_acc, col.n);
    }
    CU_ASSERT_EQUAL(st->windows_closed, with_acc);
    CU_ASSERT_EQUAL(p_fail, 0);
    CU_ASSERT_EQUAL(st->open_windows, 0);

    for (size_t i = 0; i < npw; i++) {
        free(pw[i].acc);
    }
    free(pw);
    pw = NULL;
    cappw = 0;
    for (int s = 0; s < P_SENSORS; s++) {
        free(ps[s].seqs);
        for (int w = 0; w < P_NW; w++) {
            free(ps[s].late_at[w]);
        }
    }
    free(pin);
    sg_rollup_engine_free(e);
}

/* Crash recovery: a restored mark closes the windows that reached the spool
 * before the crash; replaying the journal then rebuilds only the rest, and
 * skips (without a verdict) readings of windows already emitted. */
static void test_restore_and_replay(void)
{
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[1] = 2000;
    o.nwindows = 2;
    struct sg_rollup_engine *e = engine(&o);
    CU_ASSERT_EQUAL(sg_rollup_restore(e, "s", 1, SG_KIND_TEMPERATURE_C, 1000, T0 + 1000, T0), 0);
    CU_ASSERT_EQUAL(sg_rollup_restore(e, "s", 1, SG_KIND_TEMPERATURE_C, 2000, T0, T0), 0);
    CU_ASSERT_EQUAL(sg_rollup_restore(e, "s", 1, SG_KIND_TEMPERATURE_C, 5000, T0, T0),
                    SG_ENOTFOUND);
    CU_ASSERT_EQUAL(sg_rollup_restore(e, "", 0, SG_KIND_TEMPERATURE_C, 1000, T0, T0), SG_EINVAL);
    sg_rollup_set_replay(e, true);
    /* Window [T0, T0+1000) of width 1000 reached the spool, the 2000 one
     * did not: the reading is rebuilt into width 2000 only. */
    CU_ASSERT_EQUAL(add(e, "s", T0 + 10, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "s", T0 + 1100, 2, 2.0, T0), SG_VERDICT_ACCEPTED);
    /* Closed for every width: skipped without a verdict. */
    CU_ASSERT_EQUAL(add(e, "s", T0 - 500, 7, 1.0, T0), SG_VERDICT_LATE);
    const struct sg_rollup_stats *st = sg_rollup_stats(e);
    CU_ASSERT_EQUAL(st->replay_skipped, 1);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_LATE], 0);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_ACCEPTED], 2);
    sg_rollup_set_replay(e, false);
    /* After replay a late reading counts again, and goes into `late`. */
    CU_ASSERT_EQUAL(add(e, "s", T0 + 20, 3, 3.0, T0), SG_VERDICT_LATE);
    CU_ASSERT_EQUAL(st->verdicts[SG_VERDICT_LATE], 1);
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 2);
    CU_ASSERT_EQUAL(col.r[0].window_start_ms, T0 + 1000);
    CU_ASSERT_EQUAL(col.r[0].window_ms, 1000);
    CU_ASSERT_EQUAL(col.r[0].count, 1);
    CU_ASSERT_EQUAL(col.r[0].late, 1);
    CU_ASSERT_EQUAL(col.r[1].window_start_ms, T0);
    CU_ASSERT_EQUAL(col.r[1].window_ms, 2000);
    CU_ASSERT_EQUAL(col.r[1].count, 2); /* T0+10 and T0+1100 */
    sg_rollup_engine_free(e);
}

/* ---- window memory (perfA2) ---- */

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_sketch_blocks_trimmed(void)
{
    /* Three windows of 300 distinct values (sketch blocks), then windows of
     * one repeated value (inline bins): after a few trim periods the tick
     * has given every bin block back to the heap. Quantiles stay right
     * throughout. */
    struct sg_rollup_opts o = base_opts();
    struct sg_rollup_engine *e = engine(&o);
    struct sg_rollup_memory md;
    uint32_t seq = 0;
    double vals[300];
    for (uint64_t w = 0; w < 3; w++) {
        for (uint32_t i = 0; i < 300; i++) {
            vals[i] = (w % 2 ? -1.0 : 1.0) * 10.0 * pow(1.02, (double)((i * 7u) % 300u));
            uint64_t ts = T0 + w * 1000 + i * 3;
            CU_ASSERT_EQUAL(add(e, "a", ts, ++seq, vals[i], ts), SG_VERDICT_ACCEPTED);
        }
        sg_rollup_tick(e, T0 + (w + 1) * 1000);
        CU_ASSERT_EQUAL_FATAL(col.n, w + 1);
        qsort(vals, 300, sizeof(double), cmp_dbl);
        const struct sg_rollup *r = &col.r[w];
        CU_ASSERT_EQUAL(r->count, 300);
        CU_ASSERT(fabs(r->p50 - vals[149]) <= 0.01 * fabs(vals[149]));
        CU_ASSERT(fabs(r->p95 - vals[284]) <= 0.01 * fabs(vals[284]));
        CU_ASSERT(fabs(r->p99 - vals[296]) <= 0.01 * fabs(vals[296]));
    }
    sg_rollup_memory_detail(e, &md);
    CU_ASSERT(md.bins >= 300 * sizeof(uint32_t)); /* on the free lists now */
    size_t windows = md.windows;
    for (uint64_t w = 3; w < 12; w++) {
        for (uint32_t i = 0; i < 50; i++) {
            uint64_t ts = T0 + w * 1000 + i * 10;
            CU_ASSERT_EQUAL(add(e, "a", ts, ++seq, 5.0, ts), SG_VERDICT_ACCEPTED);
        }
        sg_rollup_tick(e, T0 + (w + 1) * 1000);
        CU_ASSERT_EQUAL_FATAL(col.n, w + 1);
        CU_ASSERT_EQUAL(col.r[w].p50, 5.0);
        CU_ASSERT_EQUAL(col.r[w].p99, 5.0);
    }
    sg_rollup_memory_detail(e, &md);
    CU_ASSERT_EQUAL(md.bins, 0);
    CU_ASSERT_EQUAL(md.windows, windows);
    CU_ASSERT(sg_rollup_memory_bytes(e) >= md.series + md.windows + md.bins);
    sg_rollup_engine_free(e);
}

static void test_rms_without_sum_of_squares(void)
{
    /* rms from mean and M2 against a long double sum of squares: a large
     * offset with small spread, values of both signs around zero, and a
     * constant. */
    static const double offs[] = {1e6, 0.0, -3.75};
    static const double spread[] = {1e-3, 5.0, 0.0};
    for (size_t t = 0; t < 3; t++) {
        struct sg_rollup_opts o = base_opts();
        struct sg_rollup_engine *e = engine(&o);
        long double sq = 0.0L;
        uint32_t n = 997;
        for (uint32_t i = 0; i < n; i++) {
            double x = offs[t] + spread[t] * sin((double)i * 0.7);
            sq += (long double)x * (long double)x;
            CU_ASSERT_EQUAL(add(e, "r", T0 + i, i + 1, x, T0), SG_VERDICT_ACCEPTED);
        }
        sg_rollup_flush(e);
        CU_ASSERT_EQUAL_FATAL(col.n, 1);
        double exact = (double)sqrtl(sq / (long double)n);
        CU_ASSERT(fabs(col.r[0].rms - exact) <= 1e-13 * fabs(exact));
        sg_rollup_engine_free(e);
    }
}

static void test_widest_window_ts_offsets(void)
{
    /* The widest width: first and last ts at both ends of one window come
     * back exact (they are kept as offsets from the start). */
    struct sg_rollup_opts o = base_opts();
    o.windows_ms[0] = UINT32_MAX;
    struct sg_rollup_engine *e = engine(&o);
    uint64_t start = T0 - T0 % UINT32_MAX;
    uint64_t last = start + UINT32_MAX - 1u;
    CU_ASSERT_EQUAL(add(e, "w", start + 7, 1, 1.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "w", last, 2, 2.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "w", start, 3, 3.0, T0), SG_VERDICT_ACCEPTED);
    CU_ASSERT_EQUAL(add(e, "w", last, 4, 4.0, T0), SG_VERDICT_ACCEPTED); /* tie: first stays */
    sg_rollup_flush(e);
    CU_ASSERT_EQUAL_FATAL(col.n, 1);
    CU_ASSERT_EQUAL(col.r[0].window_start_ms, start);
    CU_ASSERT_EQUAL(col.r[0].first_ts_ms, start);
    CU_ASSERT_EQUAL(col.r[0].last_ts_ms, last);
    CU_ASSERT_EQUAL(col.r[0].last, 2.0);
    CU_ASSERT_EQUAL(col.r[0].count, 4);
    sg_rollup_engine_free(e);
}

static const struct sg_test options_tests[] = {
    {"bad_options_rejected", test_options},
    SG_TEST_END,
};
static const struct sg_test dedup_tests[] = {
    {"duplicate_counted_in_window", test_dedup},
    {"ring_overflow_and_seq_reset", test_ring_overflow_and_reset},
    SG_TEST_END,
};
static const struct sg_test late_tests[] = {
    {"late_and_duplicate_after_close", test_late},
    {"restore_marks_and_replay", test_restore_and_replay},
    SG_TEST_END,
};
static const struct sg_test stats_tests[] = {
    {"gaps_across_wrap_faulty_last_tie", test_gaps_wrap_faulty_last},
    {"invalid_reasons_and_accel_channels", test_invalid_and_accel},
    {"rms_without_sum_of_squares", test_rms_without_sum_of_squares},
    {"sketch_blocks_trimmed", test_sketch_blocks_trimmed},
    {"widest_window_ts_offsets", test_widest_window_ts_offsets},
    SG_TEST_END,
};
static const struct sg_test widths_tests[] = {
    {"several_widths_and_partial_flush", test_several_widths},
    SG_TEST_END,
};
static const struct sg_test closing_tests[] = {
    {"per_series_watermark", test_per_series_watermark},
    {"gateway_clock_tick", test_gateway_clock_tick},
    SG_TEST_END,
};
static const struct sg_test series_tests[] = {
    {"series_limit", test_series_limit},
    {"idle_eviction", test_eviction},
    {"table_random_add_remove", test_series_table_random},
    SG_TEST_END,
};
static const struct sg_test batch_tests[] = {
    {"batch_equals_single", test_batch_equals_single},
    SG_TEST_END,
};
static const struct sg_test property_tests[] = {
    {"random_stream_vs_model", test_property_random_stream},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"options", NULL, NULL, options_tests},
    {"dedup", NULL, NULL, dedup_tests},
    {"late", NULL, NULL, late_tests},
    {"stats", NULL, NULL, stats_tests},
    {"widths", NULL, NULL, widths_tests},
    {"closing", NULL, NULL, closing_tests},
    {"series", NULL, NULL, series_tests},
    {"batch", NULL, NULL, batch_tests},
    {"property", NULL, NULL, property_tests},
    SG_SUITE_END,
};

int main(void)
{
    int rc = sg_test_main(suites);
    col_reset();
    return rc;
}

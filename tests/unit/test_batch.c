/*
 * test_batch: batch.c (batch assembly and spooling) against the in-memory
 * fake spool (fake_spool.c) in place of sg_spool, with the real encoder.
 * Bodies are JSON; a batch's rollups are counted by their "sensor_id" keys.
 */
#include <stdint.h>
#include <string.h>

#include "sg_test.h"

#include "batch.h"
#include "common.h"
#include "encode.h"
#include "fake_spool.h"
#include "reading.h"

#define GW_ID "gw-test"
#define OPEN_MS 1000u /* the fake's first seq is OPEN_MS * 10^6 + 1 */

struct fx {
    struct sg_config cfg;
    struct sg_config *cfgp; /* what a reload would swap */
    struct sg_spool *sp;
    struct sg_batch *b;
};

static void fx_open(struct fx *fx, uint64_t max_batch_rollups, size_t burst_rollups)
{
    memset(fx, 0, sizeof(*fx));
    fx->cfg.gateway_id = GW_ID;
    fx->cfg.backend.content_type = SG_CT_JSON;
    fx->cfg.backend.max_batch_rollups = max_batch_rollups;
    fx->cfg.backend.max_batch_delay_ms = 1000;
    fx->cfgp = &fx->cfg;
    struct sg_spool_opts so = {.dir = "unused", .now_ms = OPEN_MS};
    CU_ASSERT_EQUAL_FATAL(sg_spool_open(&fx->sp, &so), 0);
    struct sg_batch_opts bo = {.spool = fx->sp, .cfg = &fx->cfgp, .burst_rollups = burst_rollups};
    CU_ASSERT_EQUAL_FATAL(sg_batch_new(&fx->b, &bo), 0);
}

static void fx_close(struct fx *fx)
{
    sg_batch_free(fx->b);
    sg_spool_close(fx->sp);
}

/* Adds every channel of one window; returns what sg_batch_add reported
 * spooled (summed). */
static size_t add_window(struct fx *fx, const char *sensor_id, int kind, uint64_t start_ms,
                         uint64_t window_ms)
{
    size_t spooled = 0;
    int nch = sg_kind_channels(kind);
    for (int ch = 0; ch < nch; ch++) {
        struct sg_rollup r;
        memset(&r, 0, sizeof(r));
        snprintf(r.sensor_id, sizeof(r.sensor_id), "%s", sensor_id);
        r.kind = (uint8_t)kind;
        r.channel = (uint8_t)ch;
        r.window_start_ms = start_ms;
        r.window_ms = window_ms;
        r.count = 1;
        r.min = r.max = r.sum = r.mean = r.rms = r.last = 1.0;
        r.p50 = r.p95 = r.p99 = 1.0;
        r.first_ts_ms = r.last_ts_ms = start_ms;
        spooled += sg_batch_add(fx->b, &r);
    }
    return spooled;
}

static size_t count_str(const uint8_t *body, size_t len, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (size_t i = 0; i + k <= len; i++) {
        if (memcmp(body + i, needle, k) == 0) {
            n++;
        }
    }
    return n;
}

/* The first occurrence of needle in body[0, len), or NULL. */
static const char *find_str(const uint8_t *body, size_t len, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= len; i++) {
        if (memcmp(body + i, needle, k) == 0) {
            return (const char *)body + i;
        }
    }
    return NULL;
}

/* The i-th spooled batch (oldest first) into *out (body allocated). */
static int nth_batch(struct fx *fx, size_t i, struct sg_spool_batch *out)
{
    uint64_t after = 0;
    for (size_t k = 0;; k++) {
        int rc = sg_spool_peek(fx->sp, after, out);
        if (rc != 0 || k == i) {
            return rc;
        }
        after = out->seq;
        sg_spool_batch_clear(out);
    }
}

/* Rollups in each spooled batch, oldest first; returns the batch count. */
static size_t batch_sizes(struct fx *fx, size_t *sizes, size_t cap)
{
    size_t n = 0;
    struct sg_spool_batch sb;
    while (n < cap && nth_batch(fx, n, &sb) == 0) {
        sizes[n++] = count_str(sb.body, sb.len, "\"sensor_id\":");
        sg_spool_batch_clear(&sb);
    }
    return n;
}

/* Each batch holds whole windows only: its rollups are exactly the
 * channels of the windows its marks name (one mark per window). */
static void assert_whole_windows(struct fx *fx)
{
    struct sg_spool_batch sb;
    for (size_t i = 0; nth_batch(fx, i, &sb) == 0; i++) {
        const struct sg_spool_mark *mk = NULL;
        size_t nmk = 0, channels = 0;
        CU_ASSERT_EQUAL(fake_spool_marks(fx->sp, sb.seq, &mk, &nmk), 0);
        for (size_t k = 0; k < nmk; k++) {
            channels += (size_t)sg_kind_channels(mk[k].kind);
        }
        CU_ASSERT_EQUAL(count_str(sb.body, sb.len, "\"sensor_id\":"), channels);
        CU_ASSERT_EQUAL(count_str(sb.body, sb.len, "\"channel\":0,"), nmk);
        sg_spool_batch_clear(&sb);
    }
}

static void test_split_at_max(void)
{
    struct fx fx;
    char id[16];
    fx_open(&fx, 4, 0);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "t%d", i);
        CU_ASSERT_EQUAL(add_window(&fx, id, SG_KIND_TEMPERATURE_C, 10000, 10000), 0);
    }
    /* emit only appends: nothing spooled yet */
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 0);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 10);
    CU_ASSERT_EQUAL(sg_batch_full(fx.b), 2);
    CU_ASSERT_EQUAL(sg_batch_flush_full(fx.b), 2);
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 2);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 2); /* the batch being filled stays */
    CU_ASSERT_EQUAL(sg_batch_full(fx.b), 0);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 1);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 0);
    size_t sizes[8];
    CU_ASSERT_EQUAL_FATAL(batch_sizes(&fx, sizes, 8), 3);
    CU_ASSERT_EQUAL(sizes[0], 4);
    CU_ASSERT_EQUAL(sizes[1], 4);
    CU_ASSERT_EQUAL(sizes[2], 2);
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->spooled, 3);
    fx_close(&fx);
}

/* max 4: T T | A(3) | A(3) T: the accel window goes whole into the next
 * batch rather than fill the first one up to the bound. */
static void test_accel_never_split(void)
{
    struct fx fx;
    fx_open(&fx, 4, 0);
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    add_window(&fx, "t1", SG_KIND_TEMPERATURE_C, 0, 10000);
    add_window(&fx, "a0", SG_KIND_ACCEL_G, 0, 10000);
    add_window(&fx, "a1", SG_KIND_ACCEL_G, 0, 10000);
    add_window(&fx, "t2", SG_KIND_TEMPERATURE_C, 0, 10000);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 3);
    size_t sizes[8];
    CU_ASSERT_EQUAL_FATAL(batch_sizes(&fx, sizes, 8), 3);
    CU_ASSERT_EQUAL(sizes[0], 2);
    CU_ASSERT_EQUAL(sizes[1], 3);
    CU_ASSERT_EQUAL(sizes[2], 4);
    assert_whole_windows(&fx);
    fx_close(&fx);
}

/* A bound below the channel count: the accel window alone makes a batch
 * of 3, the only way past max_batch_rollups. */
static void test_accel_over_small_bound(void)
{
    struct fx fx;
    fx_open(&fx, 2, 0);
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    add_window(&fx, "a0", SG_KIND_ACCEL_G, 0, 10000);
    add_window(&fx, "t1", SG_KIND_TEMPERATURE_C, 0, 10000);
    CU_ASSERT_EQUAL(sg_batch_full(fx.b), 2);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 3);
    size_t sizes[8];
    CU_ASSERT_EQUAL_FATAL(batch_sizes(&fx, sizes, 8), 3);
    CU_ASSERT_EQUAL(sizes[0], 1);
    CU_ASSERT_EQUAL(sizes[1], 3);
    CU_ASSERT_EQUAL(sizes[2], 1);
    assert_whole_windows(&fx);
    fx_close(&fx);
}

/* Many mixed windows at several bounds: no batch over the bound unless it
 * is one accel window, and every window whole. */
static void test_mixed_bounds(void)
{
    for (uint64_t max = 1; max <= 7; max++) {
        struct fx fx;
        char id[16];
        fx_open(&fx, max, 0);
        for (int i = 0; i < 40; i++) {
            snprintf(id, sizeof(id), "s%d", i);
            add_window(&fx, id, i % 3 == 1 ? SG_KIND_ACCEL_G : SG_KIND_NOISE_DBA, 0, 10000);
        }
        CU_ASSERT(sg_batch_flush(fx.b) > 0);
        size_t sizes[FAKE_SPOOL_MAX];
        size_t n = batch_sizes(&fx, sizes, FAKE_SPOOL_MAX), total = 0;
        for (size_t i = 0; i < n; i++) {
            CU_ASSERT(sizes[i] <= max || sizes[i] == 3);
            total += sizes[i];
        }
        CU_ASSERT_EQUAL(total, 13 * 3 + 27);
        assert_whole_windows(&fx);
        fx_close(&fx);
    }
}

static void test_marks(void)
{
    struct fx fx;
    fx_open(&fx, 100, 0);
    add_window(&fx, "temp-1", SG_KIND_TEMPERATURE_C, 20000, 10000);
    add_window(&fx, "accel-1", SG_KIND_ACCEL_G, 0, 60000);
    add_window(&fx, "temp-1", SG_KIND_TEMPERATURE_C, 0, 60000);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 1);
    struct sg_spool_batch sb;
    CU_ASSERT_EQUAL_FATAL(nth_batch(&fx, 0, &sb), 0);
    CU_ASSERT_EQUAL(count_str(sb.body, sb.len, "\"sensor_id\":"), 5);
    const struct sg_spool_mark *mk = NULL;
    size_t nmk = 0;
    CU_ASSERT_EQUAL(fake_spool_marks(fx.sp, sb.seq, &mk, &nmk), 0);
    CU_ASSERT_EQUAL_FATAL(nmk, 3); /* one per window, not per channel */
    CU_ASSERT_STRING_EQUAL(mk[0].sensor_id, "temp-1");
    CU_ASSERT_EQUAL(mk[0].kind, SG_KIND_TEMPERATURE_C);
    CU_ASSERT_EQUAL(mk[0].window_ms, 10000);
    CU_ASSERT_EQUAL(mk[0].closed_before_ms, 30000);
    CU_ASSERT_STRING_EQUAL(mk[1].sensor_id, "accel-1");
    CU_ASSERT_EQUAL(mk[1].kind, SG_KIND_ACCEL_G);
    CU_ASSERT_EQUAL(mk[1].window_ms, 60000);
    CU_ASSERT_EQUAL(mk[1].closed_before_ms, 60000);
    CU_ASSERT_STRING_EQUAL(mk[2].sensor_id, "temp-1");
    CU_ASSERT_EQUAL(mk[2].window_ms, 60000);
    CU_ASSERT_EQUAL(mk[2].closed_before_ms, 60000);
    sg_spool_batch_clear(&sb);
    fx_close(&fx);
}

/* A refused push: logged, counted, its rollups gone; push_failed holds
 * until a later push succeeds. */
static void test_push_failed(void)
{
    struct fx fx;
    fx_open(&fx, 100, 0);
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    fake_spool_fail_next(fx.sp, SG_EIO);
    CU_ASSERT_FALSE(sg_batch_push_failed(fx.b));
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 1);
    CU_ASSERT_TRUE(sg_batch_push_failed(fx.b));
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->push_errors, 1);
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->spooled, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(fx.sp)->errors, 1);
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 0);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 0);
    /* Still failed until the next push: an empty flush changes nothing. */
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 0);
    CU_ASSERT_TRUE(sg_batch_push_failed(fx.b));
    add_window(&fx, "t1", SG_KIND_TEMPERATURE_C, 0, 10000);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 1);
    CU_ASSERT_FALSE(sg_batch_push_failed(fx.b));
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->push_errors, 1);
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->spooled, 1);
    /* The failed batch's seq is never reused. */
    struct sg_spool_batch sb;
    CU_ASSERT_EQUAL_FATAL(nth_batch(&fx, 0, &sb), 0);
    CU_ASSERT_EQUAL(sb.seq, OPEN_MS * 1000000ULL + 2);
    sg_spool_batch_clear(&sb);
    fx_close(&fx);
}

/* batch_id is sg_encode_batch_id(gateway_id, seq), seqs increase, and the
 * first rollup's arrival is the batch's close time. */
static void test_batch_ids(void)
{
    struct fx fx;
    char id[16];
    fx_open(&fx, 2, 0);
    uint64_t t0 = sg_mono_ms();
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "t%d", i);
        add_window(&fx, id, SG_KIND_TEMPERATURE_C, 0, 10000);
    }
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 3);
    uint64_t t1 = sg_mono_ms();
    struct sg_spool_batch sb;
    uint64_t prev = 0;
    size_t n = 0;
    for (; nth_batch(&fx, n, &sb) == 0; n++) {
        char want[160], got[160] = "";
        CU_ASSERT(sb.seq > prev);
        CU_ASSERT_EQUAL(sb.seq, OPEN_MS * 1000000ULL + 1 + n);
        prev = sb.seq;
        sg_encode_batch_id(want, sizeof(want), GW_ID, sb.seq);
        const char *p = find_str(sb.body, sb.len, "\"batch_id\":\"");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        p += 12;
        const char *q = memchr(p, '"', sb.len - (size_t)(p - (const char *)sb.body));
        CU_ASSERT_PTR_NOT_NULL_FATAL(q);
        snprintf(got, sizeof(got), "%.*s", (int)(q - p), p);
        CU_ASSERT_STRING_EQUAL(got, want);
        CU_ASSERT(sb.close_mono_ms >= t0 && sb.close_mono_ms <= t1);
        sg_spool_batch_clear(&sb);
    }
    CU_ASSERT_EQUAL(n, 3);
    fx_close(&fx);
}

static void test_flush_nothing(void)
{
    struct fx fx;
    fx_open(&fx, 4, 0);
    CU_ASSERT_EQUAL(sg_batch_flush_full(fx.b), 0);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 0);
    CU_ASSERT_EQUAL(sg_batch_wait_ms(fx.b, sg_mono_ms()), UINT64_MAX);
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 0);
    CU_ASSERT_FALSE(sg_batch_push_failed(fx.b));
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->spooled, 0);
    CU_ASSERT_EQUAL(sg_batch_stats(fx.b)->push_errors, 0);
    /* No sequence number was taken. */
    CU_ASSERT_EQUAL(sg_spool_next_seq(fx.sp), OPEN_MS * 1000000ULL + 1);
    /* A flush of full batches with only a batch being filled is nothing too. */
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    CU_ASSERT_EQUAL(sg_batch_flush_full(fx.b), 0);
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 0);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 1);
    fx_close(&fx);
}

/* The timer's question: due max_batch_delay_ms after the oldest pending
 * rollup came in. */
static void test_wait_ms(void)
{
    struct fx fx;
    fx_open(&fx, 4, 0);
    uint64_t t0 = sg_mono_ms();
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    uint64_t t1 = sg_mono_ms();
    uint64_t w = sg_batch_wait_ms(fx.b, t1);
    CU_ASSERT(w <= 1000 && w >= 1000 - (t1 - t0));
    CU_ASSERT_EQUAL(sg_batch_wait_ms(fx.b, t1 + 1000), 0);
    CU_ASSERT_EQUAL(sg_batch_wait_ms(fx.b, t1 + 5000), 0);
    fx.cfg.backend.max_batch_delay_ms = 0; /* live: read at each call */
    CU_ASSERT_EQUAL(sg_batch_wait_ms(fx.b, t1), 0);
    fx_close(&fx);
}

/* Past the burst bound sg_batch_add spools the full batches itself, so a
 * burst of windows never holds more than bound + 2 x max + 2 rollups. */
static void test_burst_bound(void)
{
    struct fx fx;
    char id[16];
    fx_open(&fx, 4, 8);
    size_t spooled = 0;
    for (int i = 0; i < 7; i++) {
        snprintf(id, sizeof(id), "t%d", i);
        spooled += add_window(&fx, id, SG_KIND_TEMPERATURE_C, 0, 10000);
    }
    CU_ASSERT_EQUAL(spooled, 0);
    CU_ASSERT_EQUAL(sg_batch_full(fx.b), 1);
    /* The 8th closes the second full batch: 8 rollups in full batches. */
    CU_ASSERT_EQUAL(add_window(&fx, "t7", SG_KIND_TEMPERATURE_C, 0, 10000), 2);
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 2);
    CU_ASSERT_EQUAL(sg_batch_pending(fx.b), 0);
    size_t peak = 0;
    spooled = 0;
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        spooled += add_window(&fx, id, i % 2 ? SG_KIND_ACCEL_G : SG_KIND_TEMPERATURE_C, 0, 10000);
        peak = sg_batch_pending(fx.b) > peak ? sg_batch_pending(fx.b) : peak;
    }
    CU_ASSERT(spooled > 0);
    CU_ASSERT(peak <= 8 + 2 * 4 + 2);
    sg_batch_flush(fx.b);
    assert_whole_windows(&fx);
    fx_close(&fx);
}

/* A reload swaps the config pointer: the next window sees the new bound. */
static void test_reload_bound(void)
{
    struct fx fx;
    fx_open(&fx, 4, 0);
    struct sg_config small = fx.cfg;
    small.backend.max_batch_rollups = 1;
    add_window(&fx, "t0", SG_KIND_TEMPERATURE_C, 0, 10000);
    add_window(&fx, "t1", SG_KIND_TEMPERATURE_C, 0, 10000);
    fx.cfgp = &small;
    add_window(&fx, "t2", SG_KIND_TEMPERATURE_C, 0, 10000);
    add_window(&fx, "t3", SG_KIND_TEMPERATURE_C, 0, 10000);
    CU_ASSERT_EQUAL(sg_batch_flush(fx.b), 3);
    size_t sizes[8];
    CU_ASSERT_EQUAL_FATAL(batch_sizes(&fx, sizes, 8), 3);
    CU_ASSERT_EQUAL(sizes[0], 2);
    CU_ASSERT_EQUAL(sizes[1], 1);
    CU_ASSERT_EQUAL(sizes[2], 1);
    fx_close(&fx);
}

static void test_bad_args(void)
{
    static int dummy;
    struct sg_batch *b = (struct sg_batch *)(void *)&dummy;
    CU_ASSERT_EQUAL(sg_batch_new(&b, NULL), SG_EINVAL);
    CU_ASSERT_PTR_NULL(b);
    struct sg_batch_opts bo = {0};
    CU_ASSERT_EQUAL(sg_batch_new(&b, &bo), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_batch_new(NULL, &bo), SG_EINVAL);
    sg_batch_free(NULL);
}

static const struct sg_test assembly_tests[] = {
    {"splits at max_batch_rollups", test_split_at_max},
    {"accel window never split", test_accel_never_split},
    {"accel window over a bound below 3", test_accel_over_small_bound},
    {"mixed windows at bounds 1..7", test_mixed_bounds},
    {"reload bound from the next window", test_reload_bound},
    SG_TEST_END,
};

static const struct sg_test spool_tests[] = {
    {"one mark per window", test_marks},
    {"failed push counted, state until a success", test_push_failed},
    {"batch ids and increasing seqs", test_batch_ids},
    {"flush of nothing does nothing", test_flush_nothing},
    SG_TEST_END,
};

static const struct sg_test when_tests[] = {
    {"wait for the oldest rollup", test_wait_ms},
    {"burst bound spools inside add", test_burst_bound},
    {"bad arguments", test_bad_args},
    SG_TEST_END,
};

static const struct sg_suite suites[] = {
    {"assembly", NULL, NULL, assembly_tests},
    {"spooling", NULL, NULL, spool_tests},
    {"when", NULL, NULL, when_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

/*
 * fuzz_decode: untrusted payload bytes through the whole core path, as the
 * gateway's loop runs it: sg_decode_batch (direct wire decoder, validation),
 * checked against sg_decode_batch_reference (pre-scan + protobuf-c unpack)
 * on every input -> sg_rollup_add_batch with a fixed gateway
 * clock (plus the excess readings) -> a second arrival of the same payload
 * (duplicates / late) -> gateway-clock ticks -> idle eviction -> flush ->
 * sg_encode_batch of every emitted rollup, and the JSON is parsed back.
 *
 * The engine's options come from a hash of the input, so one corpus covers
 * several configurations (one or three widths, lateness 0 or 2 s, a tiny
 * max_series so the cardinality cap is hit). Everything is deterministic.
 *
 * Invariants checked (a violation aborts = a finding): every reading gets
 * exactly one verdict; decode errors leave no readings; rollups are well
 * formed (count > 0, window aligned, first/last inside the window, min <=
 * max, channel < channels of the kind); the engine's memory returns to a
 * bound after flush and eviction; JSON output parses.
 */
#include "fuzz.h"

#include "buf.h"
#include "common.h"
#include "decode.h"
#include "decode_ref.h"
#include "encode.h"
#include "reading.h"
#include "rollup.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Simulator start used for the seed corpus (fuzz/seedgen.c); the clock sits
 * a minute after it so seeds are inside the skew bounds. */
#define FUZZ_START_MS UINT64_C(1764400000000)
#define FUZZ_NOW_MS (FUZZ_START_MS + 60000u)
#define FUZZ_MAX_ROLLUPS 4096

struct sink {
    struct sg_rollup rollups[FUZZ_MAX_ROLLUPS];
    size_t n;
    uint64_t emitted;
};

static struct sink g_sink;

static void check_rollup(const struct sg_rollup *r)
{
    SG_FUZZ_CHECK(r->count > 0);
    SG_FUZZ_CHECK(r->window_ms > 0);
    SG_FUZZ_CHECK(r->window_start_ms % r->window_ms == 0);
    SG_FUZZ_CHECK(r->first_ts_ms >= r->window_start_ms);
    SG_FUZZ_CHECK(r->last_ts_ms < r->window_start_ms + r->window_ms);
    SG_FUZZ_CHECK(r->first_ts_ms <= r->last_ts_ms);
    SG_FUZZ_CHECK(r->kind >= 1 && r->kind <= SG_KIND_MAX);
    SG_FUZZ_CHECK(r->channel < sg_kind_channels(r->kind));
    SG_FUZZ_CHECK(sg_sensor_id_ok(r->sensor_id, strlen(r->sensor_id)));
    SG_FUZZ_CHECK(!isnan(r->min) && !isnan(r->max) && r->min <= r->max);
    SG_FUZZ_CHECK(r->last >= r->min && r->last <= r->max);
}

static void on_emit(void *ctx, const struct sg_rollup *r)
{
    struct sink *s = ctx;
    check_rollup(r);
    s->emitted++;
    if (s->n < FUZZ_MAX_ROLLUPS) {
        s->rollups[s->n++] = *r;
    }
}

static uint32_t fnv1a(const uint8_t *d, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ d[i]) * 16777619u;
    }
    return h;
}

static void encode_and_parse(const struct sink *s, int content_type)
{
    struct sg_buf out = SG_BUF_INIT;
    int rc = sg_encode_batch(&out, content_type, "gw-fuzz-001", "gw-fuzz-001:00000000000000000001",
                             FUZZ_NOW_MS, s->rollups, s->n);
    SG_FUZZ_CHECK(rc == 0);
    if (content_type == 0) {
        json_error_t jerr;
        json_t *j = json_loadb(out.data, out.len, 0, &jerr);
        SG_FUZZ_CHECK(j != NULL);
        json_t *arr = json_object_get(j, "rollups");
        SG_FUZZ_CHECK(json_is_array(arr) && json_array_size(arr) == s->n);
        json_decref(j);
    }
    sg_buf_free(&out);
}

/* The direct decoder must answer exactly as the protobuf-c reference on
 * every input: return code, count, excess, arena figure, every reading. */
static void check_against_reference(struct sg_decoder *dec, struct sg_decoder *ref,
                                    const uint8_t *data, size_t size, uint64_t now, int rc,
                                    const struct sg_reading *rd, size_t n)
{
    const struct sg_reading *rr = NULL;
    size_t nr = 0;
    int rrc = sg_decode_batch_reference(ref, data, size, now, &rr, &nr);
    SG_FUZZ_CHECK(rrc == rc);
    SG_FUZZ_CHECK(nr == n);
    SG_FUZZ_CHECK(sg_decode_excess(ref) == sg_decode_excess(dec));
    if (rc != 0) {
        return;
    }
    SG_FUZZ_CHECK(sg_decoder_arena_last(ref) == sg_decoder_arena_last(dec));
    for (size_t i = 0; i < n; i++) {
        const struct sg_reading *a = &rd[i], *b = &rr[i];
        SG_FUZZ_CHECK(a->ts_ms == b->ts_ms && a->seq == b->seq && a->status == b->status);
        SG_FUZZ_CHECK(a->kind == b->kind && a->nvalues == b->nvalues);
        SG_FUZZ_CHECK(a->id_len == b->id_len && strcmp(a->sensor_id, b->sensor_id) == 0);
        SG_FUZZ_CHECK(memcmp(a->values, b->values, sizeof a->values) == 0);
        SG_FUZZ_CHECK(a->invalid == b->invalid);
    }
}

/* Feeds one arrival; returns the number of verdicts it produced. */
static uint64_t arrive(struct sg_decoder *dec, struct sg_decoder *ref, struct sg_rollup_engine *eng,
                       const uint8_t *data, size_t size, uint64_t now, int *decode_rc)
{
    const struct sg_reading *rd = NULL;
    size_t n = 0;
    int rc = sg_decode_batch(dec, data, size, now, &rd, &n);
    *decode_rc = rc;
    check_against_reference(dec, ref, data, size, now, rc, rd, n);
    if (rc != 0) {
        SG_FUZZ_CHECK(rd == NULL && n == 0 && sg_decode_excess(dec) == 0);
        SG_FUZZ_CHECK(rc == SG_EDECODE || rc == SG_ETOOBIG);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        SG_FUZZ_CHECK(rd[i].invalid < SG_INVALID_COUNT);
        SG_FUZZ_CHECK(rd[i].nvalues <= SG_MAX_CHANNELS);
        SG_FUZZ_CHECK(rd[i].id_len <= SG_SENSOR_ID_MAX);
        SG_FUZZ_CHECK(strlen(rd[i].sensor_id) == rd[i].id_len);
        if (rd[i].invalid == SG_INVALID_NONE) {
            SG_FUZZ_CHECK(sg_reading_validate(&rd[i], now, 3600000, 300000) == SG_INVALID_NONE);
        }
    }
    enum sg_verdict v[64];
    size_t accepted = sg_rollup_add_batch(eng, rd, n, now, n <= 64 ? v : NULL);
    SG_FUZZ_CHECK(accepted <= n);
    size_t excess = sg_decode_excess(dec);
    for (size_t k = 0; k < excess; k++) {
        enum sg_verdict x = sg_rollup_add(eng, sg_decode_excess_reading(), now);
        SG_FUZZ_CHECK(x == SG_VERDICT_INVALID);
    }
    return n + excess;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t h = fnv1a(data, size);
    struct sg_decode_limits lim = {
        .max_payload_bytes = (h & 1) ? 4096 : 0,
        .max_readings_per_batch = (h & 2) ? 3 : 0,
        .arena_bytes = 0,
        .max_past_ms = 3600000,
        .max_future_ms = 300000,
    };
    /* Decoders keep no state between payloads (the arena is reset per
     * call), so one per limits variant is reused: a fresh 1 MiB arena per
     * input would make the fuzzer ten times slower. */
    static struct sg_decoder *decs[4], *refs[4];
    struct sg_decoder **dp = &decs[h & 3];
    if (*dp == NULL) {
        SG_FUZZ_CHECK(sg_decoder_new(dp, &lim) == 0);
        SG_FUZZ_CHECK(sg_decoder_new(&refs[h & 3], &lim) == 0);
    }
    struct sg_decoder *dec = *dp;
    struct sg_decoder *ref = refs[h & 3];

    struct sg_rollup_opts ro = {
        .nwindows = 1,
        .windows_ms = {10000},
        .allowed_lateness_ms = (h & 4) ? 0 : 2000,
        .max_series = (h & 8) ? 2 : 1000,
        .ring_seqs = 64,
        .series_idle_ms = 400000,
        .sketch_alpha = 0.005,
        .emit = on_emit,
        .emit_ctx = &g_sink,
    };
    if (h & 16) {
        ro.nwindows = 3;
        ro.windows_ms[1] = 1000;
        ro.windows_ms[2] = 60000;
    }
    struct sg_rollup_engine *eng = NULL;
    SG_FUZZ_CHECK(sg_rollup_engine_new(&eng, &ro) == 0);
    g_sink.n = 0;
    g_sink.emitted = 0;

    int rc1 = 0, rc2 = 0;
    uint64_t total = arrive(dec, ref, eng, data, size, FUZZ_NOW_MS, &rc1);
    sg_rollup_tick(eng, FUZZ_NOW_MS + 15000);
    /* The same bytes again (a QoS 1 redelivery), a little later. */
    total += arrive(dec, ref, eng, data, size, FUZZ_NOW_MS + 16000, &rc2);
    SG_FUZZ_CHECK(rc1 == rc2);

    const struct sg_rollup_stats *st = sg_rollup_stats(eng);
    uint64_t sum = 0;
    for (int i = 0; i < SG_VERDICT_COUNT; i++) {
        sum += st->verdicts[i];
    }
    SG_FUZZ_CHECK(sum == total);
    uint64_t inv = 0;
    for (int i = 0; i < SG_INVALID_COUNT; i++) {
        inv += st->invalid_by_reason[i];
    }
    SG_FUZZ_CHECK(inv == st->verdicts[SG_VERDICT_INVALID]);
    SG_FUZZ_CHECK(st->active_series <= ro.max_series);

    /* Gateway clock far ahead: every window closes, idle series go. */
    sg_rollup_tick(eng, FUZZ_NOW_MS + 2000000);
    SG_FUZZ_CHECK(st->open_windows == 0);
    SG_FUZZ_CHECK(st->active_series == 0);
    sg_rollup_flush(eng);
    SG_FUZZ_CHECK(st->rollups == g_sink.emitted);

    encode_and_parse(&g_sink, (h & 32) ? 1 : 0);

    sg_rollup_engine_free(eng);
    return 0;
}

/*
 * encode: rollup batches as JSON (the default body of POST /v1/rollups) or
 * as protobuf RollupBatch.
 *
 * The protobuf form is built without a per-rollup allocation: protobuf-c
 * packs the batch header (fields 1-3) and then each Rollup is packed from
 * one stack message and framed as field 4 by hand. Concatenated repeated
 * fields are exactly what a single pack of the whole RollupBatch would
 * produce, since protobuf-c writes fields in field-number order.
 *
 * Pure; the caller's buffer is the only state. Any thread.
 */
#include "encode.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "reading.h"
#include "sensegate.pb-c.h"

/* Field 4 (rollups), wire type 2: (4 << 3) | 2. */
#define ROLLUP_BATCH_ROLLUPS_TAG 0x22u

void sg_encode_batch_id(char *out, size_t cap, const char *gateway_id, uint64_t seq)
{
    if (out == NULL || cap == 0) {
        return;
    }
    snprintf(out, cap, "%s:%020" PRIu64, gateway_id != NULL ? gateway_id : "", seq);
}

/* ,"key": */
static void put_key(struct sg_buf *b, const char *key)
{
    sg_buf_putc(b, ',');
    sg_buf_putc(b, '"');
    sg_buf_puts(b, key);
    sg_buf_putc(b, '"');
    sg_buf_putc(b, ':');
}

static void put_u64_field(struct sg_buf *b, const char *key, uint64_t v)
{
    put_key(b, key);
    sg_buf_put_u64(b, v);
}

static void put_double_field(struct sg_buf *b, const char *key, double v)
{
    put_key(b, key);
    sg_buf_put_double(b, v);
}

static void put_json_rollup(struct sg_buf *b, const struct sg_rollup *r)
{
    sg_buf_puts(b, "{\"sensor_id\":");
    sg_buf_put_json_str(b, r->sensor_id);
    put_key(b, "kind");
    sg_buf_put_json_str(b, sg_kind_name(r->kind));
    put_u64_field(b, "channel", r->channel);
    put_u64_field(b, "window_start_ms", r->window_start_ms);
    put_u64_field(b, "window_ms", r->window_ms);
    put_u64_field(b, "count", r->count);
    put_double_field(b, "min", r->min);
    put_double_field(b, "max", r->max);
    put_double_field(b, "sum", r->sum);
    put_double_field(b, "mean", r->mean);
    put_double_field(b, "stddev", r->stddev);
    put_double_field(b, "rms", r->rms);
    put_u64_field(b, "first_ts_ms", r->first_ts_ms);
    put_u64_field(b, "last_ts_ms", r->last_ts_ms);
    put_double_field(b, "last", r->last);
    put_double_field(b, "p50", r->p50);
    put_double_field(b, "p95", r->p95);
    put_double_field(b, "p99", r->p99);
    put_u64_field(b, "gaps", r->gaps);
    put_u64_field(b, "duplicates", r->duplicates);
    put_u64_field(b, "faulty", r->faulty);
    put_u64_field(b, "late", r->late);
    put_key(b, "partial");
    sg_buf_puts(b, r->partial ? "true" : "false");
    sg_buf_putc(b, '}');
}

static void encode_json(struct sg_buf *b, const char *gateway_id, const char *batch_id,
                        uint64_t sent_at_ms, const struct sg_rollup *rollups, size_t n)
{
    sg_buf_puts(b, "{\"gateway_id\":");
    sg_buf_put_json_str(b, gateway_id);
    put_key(b, "batch_id");
    sg_buf_put_json_str(b, batch_id);
    put_u64_field(b, "sent_at_ms", sent_at_ms);
    put_key(b, "rollups");
    sg_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            sg_buf_putc(b, ',');
        }
        put_json_rollup(b, &rollups[i]);
    }
    sg_buf_puts(b, "]}");
}

/* Appends a protobuf-c message, packed, at the end of b. */
static void put_packed(struct sg_buf *b, const ProtobufCMessage *m, size_t size)
{
    sg_buf_reserve(b, size);
    size_t w = protobuf_c_message_pack(m, (uint8_t *)b->data + b->len);
    b->len += w;
    b->data[b->len] = '\0';
}

static void put_varint(struct sg_buf *b, uint64_t v)
{
    char tmp[10];
    size_t n = 0;
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v != 0) {
            c |= 0x80;
        }
        tmp[n++] = (char)c;
    } while (v != 0);
    sg_buf_append(b, tmp, n);
}

static void encode_protobuf(struct sg_buf *b, const char *gateway_id, const char *batch_id,
                            uint64_t sent_at_ms, const struct sg_rollup *rollups, size_t n)
{
    Sensegate__V1__RollupBatch hdr = SENSEGATE__V1__ROLLUP_BATCH__INIT;
    /* protobuf-c's message structs are not const-correct; pack only reads. */
    hdr.gateway_id = (char *)gateway_id;
    hdr.batch_id = (char *)batch_id;
    hdr.sent_at_ms = sent_at_ms;
    put_packed(b, &hdr.base, sensegate__v1__rollup_batch__get_packed_size(&hdr));

    for (size_t i = 0; i < n; i++) {
        const struct sg_rollup *r = &rollups[i];
        Sensegate__V1__Rollup m = SENSEGATE__V1__ROLLUP__INIT;
        m.sensor_id = (char *)r->sensor_id;
        m.kind = (Sensegate__V1__Kind)r->kind;
        m.channel = r->channel;
        m.window_start_ms = r->window_start_ms;
        m.window_ms = r->window_ms;
        m.count = r->count;
        m.min = r->min;
        m.max = r->max;
        m.sum = r->sum;
        m.mean = r->mean;
        m.stddev = r->stddev;
        m.rms = r->rms;
        m.first_ts_ms = r->first_ts_ms;
        m.last_ts_ms = r->last_ts_ms;
        m.last = r->last;
        m.p50 = r->p50;
        m.p95 = r->p95;
        m.p99 = r->p99;
        m.gaps = r->gaps;
        m.duplicates = r->duplicates;
        m.faulty = r->faulty;
        m.late = r->late;
        m.partial = r->partial ? 1 : 0;

        size_t size = sensegate__v1__rollup__get_packed_size(&m);
        put_varint(b, ROLLUP_BATCH_ROLLUPS_TAG);
        put_varint(b, size);
        put_packed(b, &m.base, size);
    }
}

int sg_encode_batch(struct sg_buf *out, int content_type, const char *gateway_id,
                    const char *batch_id, uint64_t sent_at_ms, const struct sg_rollup *rollups,
                    size_t n)
{
    if (out == NULL || gateway_id == NULL || batch_id == NULL || (rollups == NULL && n > 0)) {
        return SG_EINVAL;
    }
    if (content_type != SG_CT_JSON && content_type != SG_CT_PROTOBUF) {
        return SG_EINVAL;
    }
    sg_buf_reset(out);
    if (content_type == SG_CT_JSON) {
        encode_json(out, gateway_id, batch_id, sent_at_ms, rollups, n);
    } else {
        encode_protobuf(out, gateway_id, batch_id, sent_at_ms, rollups, n);
    }
    return 0;
}

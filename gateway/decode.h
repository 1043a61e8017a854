/*
 * decode: one MQTT payload (protobuf sensegate.v1.ReadingBatch, contract
 * section 1) -> an array of struct sg_reading, each already validated
 * (r->invalid set, enum sg_invalid).
 *
 * The payload is untrusted. sg_decode_batch() decodes the wire format
 * directly into the readings array (no malloc per message) and accepts and
 * rejects exactly what protobuf-c does, including its arena cap: a payload
 * whose protobuf-c unpack would need more than arena_bytes is SG_EDECODE.
 * The previous protobuf-c path (pre-scan, unpack into a bounded bump arena,
 * copy), sg_decode_batch_reference(), lives in tests/ref/decode_ref.h: only
 * the differential tests and fuzzers link it, never the gateway.
 *
 * One decoder per thread (the loop thread in the gateway); not thread-safe.
 */
#ifndef SG_DECODE_H
#define SG_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reading.h"

#define SG_DECODE_DEFAULT_MAX_PAYLOAD (64u * 1024u)     /* bytes */
#define SG_DECODE_DEFAULT_MAX_READINGS 10000u           /* readings per batch */
#define SG_DECODE_ARENA_MIN (64u * 1024u)               /* bytes */
#define SG_DECODE_ARENA_MAX (64u * 1024u * 1024u)       /* bytes */

struct sg_decode_limits {
    size_t max_payload_bytes;      /* larger payloads: SG_ETOOBIG; 0 = default (64 KiB) */
    size_t max_readings_per_batch; /* readings beyond: invalid (batch_limit); 0 = default */
    size_t arena_bytes;            /* protobuf-c heap per message; 0 = 16 x max_payload_bytes,
                                      always clamped to [ARENA_MIN, ARENA_MAX] */
    uint64_t max_past_ms;          /* ts_ms < now - max_past_ms: invalid (ts_past) */
    uint64_t max_future_ms;        /* ts_ms > now + max_future_ms: invalid (ts_future) */
};

struct sg_decoder;

/* Creates a decoder with the given limits (copied). Allocates the arena and
 * the initial readings array up front. Returns 0 and sets *out, or SG_EINVAL
 * if out or lim is NULL (nothing allocated). Aborts on out-of-memory. */
int sg_decoder_new(struct sg_decoder **out, const struct sg_decode_limits *lim);

/* Reload: new reading limits for the next payload: max_readings_per_batch
 * (0 = default), max_past_ms, max_future_ms. The arena and
 * max_payload_bytes stay as created. Loop thread. */
void sg_decoder_set_limits(struct sg_decoder *d, size_t max_readings_per_batch,
                           uint64_t max_past_ms, uint64_t max_future_ms);

/* Frees the decoder and everything it owns. NULL is a no-op. */
void sg_decoder_free(struct sg_decoder *d);

/* Decodes one payload buf[0..len) with the gateway clock now_ms (arrival
 * time) and validates every reading.
 *
 * Returns:
 *  0            *readings / *nreadings hold the decoded readings in wire
 *               order, each with r->invalid = enum sg_invalid (0 = valid).
 *               The first max_readings_per_batch readings are in the array;
 *               any beyond the limit are not decoded at all, only counted:
 *               see sg_decode_excess(). An empty batch gives 0 readings.
 *  SG_ETOOBIG   len > max_payload_bytes (nothing decoded).
 *  SG_EDECODE   not a valid ReadingBatch (bad wire format, rejected by
 *               protobuf-c) or the arena cap was hit (nothing counted).
 *  SG_EINVAL    d, readings or nreadings NULL, or buf NULL with len > 0.
 * On any error *readings = NULL, *nreadings = 0 and sg_decode_excess() = 0.
 *
 * Validation (contract section 2, docs/SEMANTICS.md), first reason wins:
 * sensor_id (empty, > 64 chars, bad character, embedded NUL), kind (not
 * 1..9), channels (not 1, or 3 for ACCEL_G; more than 3 values are never
 * copied), value (NaN or infinite), ts_past / ts_future with inclusive
 * bounds: valid iff now_ms - max_past_ms <= ts_ms <= now_ms + max_future_ms.
 * For a reading with a bad sensor_id, r->sensor_id holds at most its first
 * 64 bytes up to any NUL (for logging only).
 *
 * The array is owned by the decoder and stays valid until the next call or
 * sg_decoder_free(). No allocation in steady state: the arena is reset per
 * call and the array only grows (amortised) up to max_readings_per_batch. */
int sg_decode_batch(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                    const struct sg_reading **readings, size_t *nreadings);

/* Number of readings in the last successfully decoded batch beyond
 * max_readings_per_batch. They are not in the readings array; the caller
 * must count each as invalid (SG_INVALID_BATCH_LIMIT), e.g. by passing
 * sg_decode_excess_reading() to sg_rollup_add() that many times. */
size_t sg_decode_excess(const struct sg_decoder *d);

/* A static reading with invalid = SG_INVALID_BATCH_LIMIT, to stand for each
 * excess reading. Never NULL; any thread. */
const struct sg_reading *sg_decode_excess_reading(void);

/* Arena bytes the last call needed (0 after SG_ETOOBIG / SG_EINVAL or an
 * empty payload). The reference decoder measures protobuf-c's arena; the
 * direct decoder computes the same figure without allocating, and rejects
 * a payload (SG_EDECODE) when it exceeds the arena cap, as protobuf-c
 * would. For the differential tests and for sizing arena_bytes. */
size_t sg_decoder_arena_last(const struct sg_decoder *d);

/* Peak arena bytes used by one message since the decoder was created
 * (for sizing arena_bytes; a diagnostic, not a metric contract). */
size_t sg_decoder_arena_peak(const struct sg_decoder *d);

/* True if topic[0..len) has the contract shape
 * sensors/<programme>/<district>/<device_id>: exactly four '/'-separated
 * levels, the first "sensors", none empty, no NUL, '+' or '#'. Pure. */
bool sg_decode_topic_ok(const char *topic, size_t len);

#endif

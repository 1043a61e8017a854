/*
 * decode_ref: the protobuf-c reference decoder, for tests and fuzzers only.
 *
 * It answers the same question as sg_decode_batch() (gateway/decode.c, the
 * gateway's direct wire decoder), the old way: a wire pre-scan, then
 * protobuf-c's generic unpack into a bounded bump arena, then copy and
 * validation. tests/unit/test_decode.c and fuzz/fuzz_decode.c run both on
 * every input and check that they agree field by field. The gateway binary
 * never links this (scripts/check-layering checks with nm).
 */
#ifndef SG_DECODE_REF_H
#define SG_DECODE_REF_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"

/* The reference decoder: the same contract and results as sg_decode_batch()
 * on the same decoder d (limits, readings array, excess, arena figures),
 * computed with protobuf-c: return code, readings, invalid reasons, excess
 * and sg_decoder_arena_last() (measured here, computed there) must all be
 * equal. Its arena (arena_bytes of the decoder's limits) and pre-scan
 * buffers are made on the first call and freed by sg_decoder_free(). Not for
 * the gateway: slower, and it allocates the whole arena. */
int sg_decode_batch_reference(struct sg_decoder *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                              const struct sg_reading **readings, size_t *nreadings);

#endif

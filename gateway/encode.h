/*
 * encode: rollups -> the body of POST /v1/rollups (contract section 3), as
 * JSON or as protobuf sensegate.v1.RollupBatch, and the batch_id format.
 * Pure, no allocation besides growing the caller's buffer; any thread, one
 * buffer per thread.
 */
#ifndef SG_ENCODE_H
#define SG_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rollup.h"

/* "<gateway_id>:" + 20 digits + NUL fits in this many bytes plus the id. */
#define SG_BATCH_ID_SEQ_DIGITS 20

/* Encodes one batch into out, which is reset first (its capacity is kept):
 * on return out->data[0..out->len) is exactly the request body.
 *
 * content_type is enum sg_content_type (config.h):
 *  SG_CT_JSON      {"gateway_id":"...","batch_id":"...","sent_at_ms":N,
 *                   "rollups":[{"sensor_id":"...","kind":"TEMPERATURE_C",
 *                   "channel":0,"window_start_ms":...,...,"partial":false}]}
 *                  with every field of contract section 2 in that order.
 *                  Doubles are written so they read back to the same bits
 *                  (sg_buf_put_double); a non-finite double becomes null.
 *  SG_CT_PROTOBUF  sensegate.v1.RollupBatch in protobuf wire format.
 *
 * Returns 0, or SG_EINVAL (out, gateway_id or batch_id NULL, rollups NULL
 * with n > 0, unknown content_type); on error out is left unchanged.
 * Aborts on out-of-memory (buffer growth). */
int sg_encode_batch(struct sg_buf *out, int content_type, const char *gateway_id,
                    const char *batch_id, uint64_t sent_at_ms, const struct sg_rollup *rollups,
                    size_t n);

/* Writes "<gateway_id>:<seq as 20 digits, zero-padded>" into out (cap
 * bytes, always NUL-terminated when cap > 0, truncated if too small).
 * strlen(gateway_id) + 22 bytes always suffice. */
void sg_encode_batch_id(char *out, size_t cap, const char *gateway_id, uint64_t seq);

#endif

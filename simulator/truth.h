/*
 * truth: the brute-force ground truth of docs/SEMANTICS.md.
 *
 * Fed every reading in the order the gateway receives it, it gives each one
 * the verdict the gateway must give (accepted, duplicate, late, invalid) and
 * keeps every accepted value of every open window, so that the rollups can
 * be computed exactly when windows close: sorted values, exact quantile
 * ranks, two-pass standard deviation. It shares no code with
 * gateway/rollup.c on purpose, so that either can catch the other.
 *
 * Assumptions (true for sensegate-sim, see docs/SIMULATOR.md): the gateway
 * gets every reading in this order, and its clock never closes a window
 * before the sensor's own watermark does, so only the sensor watermark (and
 * the gateway clock at series creation) closes windows here.
 *
 * Single-threaded, pure: time is passed in.
 */
#ifndef SG_TRUTH_H
#define SG_TRUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SG_TRUTH_MAX_WINDOWS 8
#define SG_TRUTH_ID_CAP 80 /* sensor_id bytes a test reading may carry (ids of 65+ are invalid) */
#define SG_TRUTH_MAX_VALUES 4 /* values a test reading may carry (4 = a wrong channel count) */

/* Verdicts, in the order of SEMANTICS.md. */
enum sg_truth_verdict {
    SG_TRUTH_ACCEPTED = 0,
    SG_TRUTH_DUPLICATE,
    SG_TRUTH_LATE,
    SG_TRUTH_INVALID,
    SG_TRUTH_NVERDICTS
};

/* One reading exactly as it appears on the wire (after protobuf decoding):
 * the sensor_id keeps its wire length, so an embedded NUL or an over-long
 * id can be represented. */
struct sg_truth_reading {
    char sensor_id[SG_TRUTH_ID_CAP]; /* id_len bytes, not necessarily NUL-terminated */
    size_t id_len;                   /* wire length of sensor_id */
    int kind;                        /* raw enum value, may be out of range */
    uint64_t ts_ms;                  /* event time, epoch ms */
    uint32_t seq;                    /* per-sensor counter */
    uint32_t status;                 /* 0 ok, else fault bits */
    size_t nvalues;                  /* <= SG_TRUTH_MAX_VALUES */
    double values[SG_TRUTH_MAX_VALUES];
};

/* One expected rollup: one channel of one emitted window. */
struct sg_truth_rollup {
    char sensor_id[SG_TRUTH_ID_CAP]; /* NUL-terminated (valid ids only) */
    int kind;
    unsigned channel;
    uint64_t window_start_ms;
    uint64_t window_ms;
    uint64_t count;
    double min, max, sum, mean, stddev, rms; /* stddev: population */
    uint64_t first_ts_ms, last_ts_ms;
    double last;
    double p50, p95, p99; /* exact: sorted value at rank floor(q * (count - 1)) */
    uint64_t gaps, duplicates, faulty, late;
};

struct sg_truth_opts {
    uint64_t windows_ms[SG_TRUTH_MAX_WINDOWS]; /* widths, each > 0 */
    size_t nwindows;                           /* 1..SG_TRUTH_MAX_WINDOWS */
    uint64_t allowed_lateness_ms;              /* L */
    uint64_t max_past_ms;                      /* validation.max_past_ms */
    uint64_t max_future_ms;                    /* validation.max_future_ms */
};

/* What the summary line needs besides the verdict counts. */
struct sg_truth_summary {
    uint64_t readings_sent;      /* readings inside well-formed payloads */
    uint64_t payloads_sent;      /* all payloads, malformed ones included */
    uint64_t malformed_payloads; /* payloads protobuf-c must reject */
    uint64_t sensors;            /* sensors in the fleet */
    uint64_t start_ms;           /* simulated start, epoch ms */
    uint64_t end_ms;             /* simulated end, epoch ms */
};

struct sg_truth;

/* Creates an empty truth. Returns 0 and sets *out, or SG_EINVAL for bad
 * options (nothing allocated). */
int sg_truth_new(struct sg_truth **out, const struct sg_truth_opts *opts);

/* Frees everything. NULL is a no-op. */
void sg_truth_free(struct sg_truth *t);

/* Gives r the verdict SEMANTICS.md prescribes when it arrives at gateway
 * clock now_ms (used for the max_past/max_future checks and for the clock
 * watermark of a new series), and applies it: accepted readings go into
 * their windows, windows the sensor watermark closes are emitted. Must not
 * be called after sg_truth_finish. */
enum sg_truth_verdict sg_truth_add(struct sg_truth *t, const struct sg_truth_reading *r,
                                   uint64_t now_ms);

/* Emits every still-open window as shutdown does (oldest first per series).
 * Idempotent. */
void sg_truth_finish(struct sg_truth *t);

/* Readings that got verdict v so far. */
uint64_t sg_truth_count(const struct sg_truth *t, enum sg_truth_verdict v);

/* The rollups emitted so far, in emission order; *n gets their number. The
 * array belongs to t and moves on the next sg_truth_add/finish. */
const struct sg_truth_rollup *sg_truth_rollups(const struct sg_truth *t, size_t *n);

/* Writes the truth file (docs/SIMULATOR.md): the summary line, then one
 * JSON line per rollup. Call after sg_truth_finish. Returns 0 or SG_EIO
 * (errno set by stdio). */
int sg_truth_write(const struct sg_truth *t, const struct sg_truth_summary *s, FILE *f);

/* True if s[0..len) is a valid sensor_id: 1..64 chars of [A-Za-z0-9._:-].
 * The truth's own check, independent of gateway/reading.c. */
bool sg_truth_id_ok(const char *s, size_t len);

#endif

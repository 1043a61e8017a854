/*
 * rollup: the aggregation engine. Per series (sensor_id, kind) and per
 * configured window width, epoch-aligned tumbling windows; every reading gets
 * exactly one verdict (accepted, duplicate, late, invalid), counted here and
 * nowhere else. Closed windows come out through the emit callback as one
 * struct sg_rollup per channel. Semantics: docs/SEMANTICS.md.
 *
 * Pure and single-threaded (the loop thread): time is passed in, no I/O.
 */
#ifndef SG_ROLLUP_H
#define SG_ROLLUP_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#include "reading.h"

#define SG_MAX_WINDOWS 8   /* configured window widths at most */

enum sg_verdict {
    SG_VERDICT_ACCEPTED = 0,
    SG_VERDICT_DUPLICATE,
    SG_VERDICT_LATE,
    SG_VERDICT_INVALID,
    SG_VERDICT_COUNT
};

/* One rollup: contract section 2, one channel of one window of one series. */
struct sg_rollup {
    char sensor_id[SG_SENSOR_ID_MAX + 1];
    uint8_t kind;
    uint8_t channel;
    bool partial;              /* cut short by shutdown, not closed */
    uint64_t window_start_ms;
    uint64_t window_ms;
    uint64_t count;            /* accepted readings */
    double min, max, sum, mean, stddev, rms;   /* stddev is the population one */
    uint64_t first_ts_ms, last_ts_ms;
    double last;               /* value at last_ts_ms */
    double p50, p95, p99;      /* within 1 % of the exact rank floor(q*(count-1)) */
    uint64_t gaps;             /* seqs missing between lowest and highest seen */
    uint64_t duplicates;       /* readings of this window dropped as duplicate */
    uint64_t faulty;           /* accepted with status != 0 */
    uint64_t late;             /* late readings of this series+width since its previous rollup */
};

/* Called once per channel of every closed window, in the order windows
 * close. r is valid only during the call. */
typedef void (*sg_rollup_emit_cb)(void *ctx, const struct sg_rollup *r);

struct sg_rollup_opts {
    uint64_t windows_ms[SG_MAX_WINDOWS];  /* widths, each 1..UINT32_MAX ms (49 days) */
    size_t nwindows;                      /* 1..SG_MAX_WINDOWS */
    uint64_t allowed_lateness_ms;
    size_t max_series;            /* live series bound; a new one beyond it is invalid */
    uint32_t ring_seqs;           /* dedup ring per series, power of two, >= 64 */
    uint64_t series_idle_ms;      /* evict series with no open window idle this long */
    double sketch_alpha;          /* relative accuracy of quantiles, e.g. 0.005 */
    sg_rollup_emit_cb emit;
    void *emit_ctx;
};

struct sg_rollup_stats {
    uint64_t verdicts[SG_VERDICT_COUNT];     /* every reading lands in exactly one */
    uint64_t invalid_by_reason[SG_INVALID_COUNT];
    uint64_t rollups;                        /* struct sg_rollup emitted */
    uint64_t windows_closed;                 /* windows emitted (any width) */
    uint64_t windows_partial;                /* of which cut short by flush */
    uint64_t active_series;                  /* gauge */
    uint64_t open_windows;                   /* gauge */
    uint64_t series_evicted;                 /* idle series removed */
    uint64_t ring_overflows;                 /* seq older than the dedup ring: accepted unchecked */
    uint64_t seq_resets;                     /* seq jumped by more than 2^16: ring restarted */
    uint64_t replay_skipped;                 /* journal replay: readings of emitted windows */
};

struct sg_rollup_engine;

/* Creates an engine. Returns 0 and sets *out, or SG_EINVAL for bad options
 * (nothing allocated). */
int sg_rollup_engine_new(struct sg_rollup_engine **out, const struct sg_rollup_opts *opts);
/* Frees everything, without emitting. NULL is a no-op. */
void sg_rollup_engine_free(struct sg_rollup_engine *e);

/* Gives one reading its verdict and, if accepted, adds it to its window in
 * every width. A reading with r->invalid != 0 is counted invalid. now_ms is
 * the gateway clock. May emit (closing windows whose series watermark moved). */
enum sg_verdict sg_rollup_add(struct sg_rollup_engine *e, const struct sg_reading *r,
                              uint64_t now_ms);

/* Same as calling sg_rollup_add() on r[0..n) in order, but overlaps the
 * memory latency of the series lookups (prefetching), which matters with many
 * series. verdicts may be NULL; otherwise verdicts[i] gets r[i]'s verdict.
 * Returns the number of readings accepted. */
size_t sg_rollup_add_batch(struct sg_rollup_engine *e, const struct sg_reading *r, size_t n,
                           uint64_t now_ms, enum sg_verdict *verdicts);

/* Gateway-clock close: emits every window with end + lateness <= now_ms, and
 * evicts idle series. Call about once a second. */
void sg_rollup_tick(struct sg_rollup_engine *e, uint64_t now_ms);

/* Emits every open window with partial = true (shutdown). */
void sg_rollup_flush(struct sg_rollup_engine *e);

/* Counters and gauges; the pointer stays valid for the engine's life. */
const struct sg_rollup_stats *sg_rollup_stats(const struct sg_rollup_engine *e);

/* Crash recovery (docs/DURABILITY.md). Before the journal is replayed, the
 * gateway restores, per series and width, the end of the newest window
 * whose rollups reached the spool: windows ending at or before
 * closed_before_ms count as closed. Creates the series if needed (with the
 * gateway-clock watermark of now_ms). Returns 0, SG_EINVAL, SG_ENOTFOUND
 * (window_ms is not configured any more: ignore) or SG_EFULL (max_series). */
int sg_rollup_restore(struct sg_rollup_engine *e, const char *sensor_id, size_t id_len,
                      uint8_t kind, uint64_t window_ms, uint64_t closed_before_ms, uint64_t now_ms);

/* While replaying, a reading for a closed window is skipped without a
 * verdict (it was counted by the run that first received it; see
 * stats.replay_skipped); every other reading is handled as usual. */
void sg_rollup_set_replay(struct sg_rollup_engine *e, bool replaying);

/* Reload: series with no open window idle this long are evicted from the
 * next idle sweep on. The caller keeps it above max_future_ms +
 * allowed_lateness_ms + max(windows_ms) (sg_config_check does). */
void sg_rollup_set_series_idle(struct sg_rollup_engine *e, uint64_t series_idle_ms);

/* Bytes of memory the engine holds now (tables, windows, sketches). */
size_t sg_rollup_memory_bytes(const struct sg_rollup_engine *e);

/* Where sg_rollup_memory_bytes() goes (heap bytes). */
struct sg_rollup_memory {
    size_t series;  /* series table: slots, records, dedup rings */
    size_t windows; /* window pools (per-channel statistics, inline sketch bins) */
    size_t bins;    /* sketch bin blocks, in use or on the free lists */
};
void sg_rollup_memory_detail(const struct sg_rollup_engine *e, struct sg_rollup_memory *out);

#endif

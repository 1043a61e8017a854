/*
 * spool: the bounded on-disk queue of rollup batches waiting for the
 * backend, and their dead letters. One SQLite file (WAL) in spool.dir;
 * layout and guarantees in docs/SPOOL.md. A batch keeps its sequence number
 * (and so its batch_id) across restarts; sequence numbers never repeat.
 * Loop thread only (calls are synchronous; a FULL commit is ~0.3 ms here).
 */
#ifndef SG_SPOOL_H
#define SG_SPOOL_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

struct sg_spool;

struct sg_spool_opts {
    const char *dir;          /* created if missing (mode 0700) */
    uint64_t max_bytes;       /* bound on the sum of body bytes (0 = none) */
    uint64_t max_batches;     /* bound on the number of batches (0 = none) */
    bool fsync;               /* true: synchronous=FULL; false: NORMAL */
    uint64_t now_ms;          /* gateway clock at open; seeds the sequence */
};

/* One spooled batch. body is owned by the struct: release with
 * sg_spool_batch_clear. */
struct sg_spool_batch {
    uint64_t seq;             /* spool sequence; batch_id = <gateway_id>:<%020 seq> */
    uint64_t created_ms;      /* when it was first spooled (epoch ms) */
    uint64_t close_mono_ms;   /* not stored: when its oldest rollup's window
                               * closed (sg_spool_note_close), else sg_mono_ms()
                               * when it was pushed, in this process; 0 after
                               * a restart */
    int content_type;         /* enum sg_content_type */
    uint8_t *body;            /* the exact bytes to POST, frozen at creation */
    size_t len;
};

struct sg_spool_stats {
    uint64_t batches;         /* gauge */
    uint64_t bytes;           /* gauge: sum of body bytes */
    uint64_t dropped;         /* counter: dropped at the bound since open */
    uint64_t dead_letters;    /* gauge: rows in dead letters */
    uint64_t errors;          /* counter: failed writes since open */
    uint64_t quarantined;     /* counter: corrupt files moved aside at open */
    uint64_t oldest_created_ms; /* 0 when empty */
    /* Added after the first draft of this header (append-only): */
    uint64_t dead_dropped;    /* counter: oldest dead letters dropped at their bound since open */
    uint64_t dropped_lifetime; /* counter: batches dropped at the bound over the file's life */
};

/* Opens (or creates) <dir>/spool.db. A file that fails its integrity check
 * is renamed to spool.db.corrupt-<ms> (counted in quarantined, logged at
 * error level with the reason) and a new one is started. Returns 0, or
 * SG_EINVAL (bad opts), SG_EIO (dir not creatable/writable, database not
 * openable, or the directory is locked by another process (errno EBUSY);
 * errno kept, so the caller can log the path and strerror(errno)), or
 * SG_EVERSION (a spool.db of a schema version this build does not read;
 * logged here naming both versions), or SG_ECORRUPT (the fresh file made
 * after a quarantine failed its check too) — *out is then NULL.
 * Loop thread (or before the loop starts). */
int sg_spool_open(struct sg_spool **out, const struct sg_spool_opts *opts);
/* Closes the database. NULL is a no-op. */
void sg_spool_close(struct sg_spool *sp);

/* Reserves the next sequence number (strictly greater than any ever handed
 * out by this spool file, and >= now_ms * 10^6 at open). Numbers are
 * reserved on disk in blocks, so one that is handed out but never pushed is
 * still never handed out again, even after a restart; the block write is the
 * only I/O here (once per 1024 calls) and a failure of it is counted in
 * errors and does not stop the call (the clock seed still protects). */
uint64_t sg_spool_next_seq(struct sg_spool *sp);

/* Stores a batch under seq (from sg_spool_next_seq), durably, then drops the
 * oldest batches while over a bound (counted in dropped), all in one
 * transaction. The batch just pushed is never dropped; a batch that alone
 * exceeds max_bytes is refused with SG_EFULL and counted in dropped. The
 * body is copied; the caller keeps it. Returns 0, SG_EFULL, SG_EINVAL (bad
 * argument or seq already stored), or SG_EIO (nothing stored; counted in
 * errors; sg_spool_last_error has SQLite's message). */
int sg_spool_push(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                  size_t len, uint64_t created_ms);

/* The oldest batch with seq > after_seq into *out (body allocated).
 * Returns 0, SG_ENOTFOUND (none), or SG_EIO. */
int sg_spool_peek(struct sg_spool *sp, uint64_t after_seq, struct sg_spool_batch *out);

/* Delivered: removes the batch. SG_ENOTFOUND if it is not there (dropped at
 * the bound meanwhile), which callers may ignore; SG_EIO on a failed write. */
int sg_spool_ack(struct sg_spool *sp, uint64_t seq);

/* Rejected by the backend: moves the batch to dead letters with the status
 * and a snippet of the answer (reason may be NULL; at most 256 bytes kept).
 * Dead letters have their own bound of max_bytes / max_batches; the oldest
 * are dropped beyond it (dead_dropped). Returns 0, SG_ENOTFOUND or SG_EIO. */
int sg_spool_dead(struct sg_spool *sp, uint64_t seq, int http_status, const char *reason);

/* True if seq is still in the spool (not acked, dead or dropped). False on
 * a read error too (counted in errors). */
bool sg_spool_contains(struct sg_spool *sp, uint64_t seq);

/* The current figures; the pointer stays valid until sg_spool_close. */
const struct sg_spool_stats *sg_spool_stats(struct sg_spool *sp);

/* SQLite's message for the last failed call on sp ("" if none). Valid until
 * the next call on sp. The caller logs it once with its own context. */
const char *sg_spool_last_error(struct sg_spool *sp);

/* Free disk space below which sg_spool_push refuses new batches (SG_EFULL,
 * counted as dropped): 1 MiB for a WAL checkpoint plus 1/8 of the file
 * system between 64 KiB and 8 MiB. It keeps room for the deletes that let
 * a full spool drain. */
uint64_t sg_spool_min_free_bytes(const struct sg_spool *sp);

/* Reload: new bounds (0 = none), enforced from the next push on (and the
 * dead letters' from the next dead-lettering); what is stored now is not
 * dropped until then. Loop thread. */
void sg_spool_set_bounds(struct sg_spool *sp, uint64_t max_bytes, uint64_t max_batches);

/* Releases out->body. */
void sg_spool_batch_clear(struct sg_spool_batch *b);

/* ---- window marks (added after the first draft; schema version 2) ------
 * A mark says: for series (sensor_id, kind) and width window_ms, every
 * window ending at or before closed_before_ms has been spooled (or was
 * delivered). Marks are committed in the same transaction as the batch
 * that carries those rollups, so after a crash the journal replay can skip
 * the windows that were already emitted (docs/DURABILITY.md). */
struct sg_spool_mark {
    const char *sensor_id;      /* NUL-terminated */
    uint8_t kind;
    uint64_t window_ms;         /* the window width */
    uint64_t closed_before_ms;  /* end (exclusive, epoch ms) of the newest emitted window */
};

/* Like sg_spool_push, and in the same transaction upserts each mark,
 * keeping the greater closed_before_ms per (sensor_id, kind, window_ms)
 * (a key may repeat within marks). If the push fails for any reason
 * (SG_EINVAL, SG_EFULL, SG_EIO) no mark is stored. marks may be NULL when
 * nmarks is 0. Also SG_EINVAL for a NULL sensor_id or a value above
 * INT64_MAX (nothing stored). Loop thread. */
int sg_spool_push_marked(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                         size_t len, uint64_t created_ms, const struct sg_spool_mark *marks,
                         size_t nmarks);

/* The next batch pushed holds a rollup whose window closed at mono_ms
 * (sg_mono_ms() clock): its close_mono_ms becomes the earliest time noted
 * since the previous successful push (never later than its push time), so
 * sensegate_delivery_delay_seconds runs from window close to 2xx, batch
 * wait and the pushes ahead of it in a burst included. A push forgets the
 * note whatever its outcome. 0 is ignored. Loop thread. */
void sg_spool_note_close(struct sg_spool *sp, uint64_t mono_ms);

/* Receives one stored mark; m and m->sensor_id are valid only during the
 * call, which must not call into the spool. */
typedef void (*sg_spool_mark_cb)(void *ctx, const struct sg_spool_mark *m);

/* Calls cb for every stored mark (in key order). At start, before the
 * journal replay. Returns 0, SG_EINVAL (NULL argument) or SG_EIO (read
 * error; the marks before it were delivered). */
int sg_spool_load_marks(struct sg_spool *sp, sg_spool_mark_cb cb, void *ctx);

/* Deletes the marks with closed_before_ms < older_than_ms (their windows
 * are older than anything the journal can still replay). One transaction.
 * Returns 0 or SG_EIO (nothing deleted; counted in errors). */
int sg_spool_prune_marks(struct sg_spool *sp, uint64_t older_than_ms);

#endif

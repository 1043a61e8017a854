/*
 * batch: turns the rollups that rollup's emit callback hands over into
 * batches, and spools each one (encode, then one spool transaction with
 * the marks of its windows).
 *
 * pending[] holds the full batches, oldest first (full[] says where each
 * ends), then the batch being filled ("open"). Invariants:
 *
 *  - Window whole: a window's channels are never split across batches
 *    (its spool mark must cover all of them). A batch never exceeds
 *    backend.max_batch_rollups: when a whole window would not fit, the
 *    open batch is closed first. Only a bound below a window's channel
 *    count (3 for accel_g) makes a batch of that one window, over the
 *    bound.
 *  - One mark per window (its channel 0 rollup) with closed_before_ms =
 *    window end, committed in the transaction of the batch that carries
 *    the window, so a journal replay after a crash skips exactly these
 *    windows.
 *  - Delivery delay: each batch remembers when its first rollup came in
 *    (its oldest window closed then; one clock read per batch) and notes
 *    that with sg_spool_note_close just before its push, so
 *    sensegate_delivery_delay_seconds runs from window close, batch wait
 *    and the pushes ahead of it included.
 *  - push_failed: the last push failed (cleared by the next success). A
 *    failed batch is logged, counted and dropped here; the gateway keeps
 *    the journal whole meanwhile, so a restart rebuilds it.
 *
 * When: sg_batch_add only appends. The gateway spools the full batches
 * after it has handled an inbox drain (and on its tick, at recovery and at
 * stop), so no SQLite FULL commit runs inside rollup's emit callback, and
 * the rest when the batch timer it keeps fires (sg_batch_wait_ms).
 *
 * Burst bound: one call into rollup can close very many windows at once.
 * Windows are epoch-aligned, so a gateway-clock tick, the partial flush at
 * stop, a journal replay or a drain of a full inbox after a broker
 * reconnect emit a window per live series and width (up to
 * limits.max_series x widths x 3 channels). Measured with the real rollup
 * engine, this module and the real spool (sizeof(struct sg_rollup) = 224
 * bytes; one reading per series, a third of them accel_g, widths 10 s and
 * 60 s, then one tick that closes everything): 20 000 series emit 66 668
 * rollups in one call, 14.9 MB held until it returns if nothing is
 * spooled before; 200 000 series (the default limits.max_series) 666 668
 * rollups, 149 MB. Before this module every full batch was spooled inside
 * the emit callback, so at most max_batch_rollups + 2 were held (112 KB
 * at the default 500). So sg_batch_add spools the full batches itself
 * once they hold SG_BATCH_BURST_ROLLUPS (16384) rollups: pending stays
 * below 16384 + 2 x max_batch_rollups + 2 (measured peak 16 499 rollups,
 * 3.7 MB, for both fleet sizes), while a drain that closes fewer windows
 * than that runs no commit inside emit (in steady traffic each series'
 * windows close as its next reading arrives, so a drain of a few
 * milliseconds of messages closes few). Why that figure: it is 32
 * batches at the default bound, and small next to the inbox (32 MiB) and
 * the series table; at max_batch_rollups >= 16384 each full batch is
 * spooled as soon as it is full, as before this module existed.
 *
 * Thread: the loop thread only.
 */
#include "batch.h"

#include "buf.h"
#include "common.h"
#include "encode.h"
#include "log.h"
#include "reading.h"

#include <stdlib.h>
#include <string.h>

struct cut {
    size_t end;             /* one past the batch's last rollup in pending[] */
    uint64_t close_mono_ms; /* sg_mono_ms() when its first rollup came in */
};

struct sg_batch {
    struct sg_spool *spool;
    struct sg_config *const *cfg;
    size_t burst_rollups;
    struct sg_rollup *pending; /* the full batches, then the open one */
    size_t npending, cap_pending;
    struct cut *full; /* the full batches, oldest first */
    size_t nfull, cap_full;
    uint64_t open_mono_ms;       /* sg_mono_ms() at the open batch's first rollup */
    struct sg_spool_mark *marks; /* scratch for one push */
    size_t cap_marks;
    struct sg_buf body; /* scratch: the encoded batch */
    bool push_failed;
    struct sg_batch_stats stats;
};

int sg_batch_new(struct sg_batch **out, const struct sg_batch_opts *opts)
{
    if (out == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;
    if (opts == NULL || opts->spool == NULL || opts->cfg == NULL) {
        return SG_EINVAL;
    }
    struct sg_batch *b = sg_xcalloc(1, sizeof *b);
    b->spool = opts->spool;
    b->cfg = opts->cfg;
    b->burst_rollups = opts->burst_rollups ? opts->burst_rollups : SG_BATCH_BURST_ROLLUPS;
    b->body = (struct sg_buf)SG_BUF_INIT;
    *out = b;
    return 0;
}

void sg_batch_free(struct sg_batch *b)
{
    if (b == NULL) {
        return;
    }
    free(b->pending);
    free(b->full);
    free(b->marks);
    sg_buf_free(&b->body);
    free(b);
}

/* Where the open batch starts in pending[]. */
static size_t open_start(const struct sg_batch *b)
{
    return b->nfull > 0 ? b->full[b->nfull - 1].end : 0;
}

static void close_open(struct sg_batch *b)
{
    if (b->nfull == b->cap_full) {
        b->cap_full = b->cap_full ? b->cap_full * 2 : 8;
        b->full = sg_xrealloc(b->full, b->cap_full * sizeof *b->full);
    }
    b->full[b->nfull++] = (struct cut){.end = b->npending, .close_mono_ms = b->open_mono_ms};
}

/* Encodes pending[start, start + n) and stores it with its marks. */
static void push(struct sg_batch *b, size_t start, size_t n, uint64_t close_mono_ms)
{
    const struct sg_config *c = *b->cfg;
    const struct sg_rollup *rs = b->pending + start;
    /* The spool keeps the earliest note since its last push, and every
     * push forgets it: noted now, it is this batch's. */
    sg_spool_note_close(b->spool, close_mono_ms);
    uint64_t seq = sg_spool_next_seq(b->spool);
    char batch_id[160];
    sg_encode_batch_id(batch_id, sizeof batch_id, c->gateway_id, seq);
    uint64_t now = sg_now_ms();
    sg_buf_reset(&b->body);
    /* sent_at_ms is frozen at creation: a retried batch is byte-identical,
     * so a backend that fingerprints Idempotency-Key bodies accepts it. */
    int rc = sg_encode_batch(&b->body, (int)c->backend.content_type, c->gateway_id, batch_id, now,
                             rs, n);
    if (n > b->cap_marks) {
        b->cap_marks = n;
        b->marks = sg_xrealloc(b->marks, n * sizeof *b->marks);
    }
    /* One mark per window (its first channel): committed with the batch,
     * so a journal replay after a crash skips exactly these windows. */
    size_t nmarks = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sg_rollup *r = &rs[i];
        if (r->channel == 0) {
            b->marks[nmarks++] = (struct sg_spool_mark){
                .sensor_id = r->sensor_id,
                .kind = r->kind,
                .window_ms = r->window_ms,
                .closed_before_ms = r->window_start_ms + r->window_ms,
            };
        }
    }
    if (rc == 0) {
        rc =
            sg_spool_push_marked(b->spool, seq, (int)c->backend.content_type,
                                 (const uint8_t *)b->body.data, b->body.len, now, b->marks, nmarks);
        if (rc == 0) {
            b->stats.spooled++;
        }
    }
    b->push_failed = rc != 0;
    if (rc != 0) {
        b->stats.push_errors++;
        /* Counted in sensegate_spool_errors_total / dropped; never silent. */
        sg_log(SG_LOG_ERROR, "spool", "cannot store batch %s (%zu rollups): %s (%s)", batch_id, n,
               sg_strerror(rc), sg_spool_last_error(b->spool));
    }
}

size_t sg_batch_add(struct sg_batch *b, const struct sg_rollup *r)
{
    const struct sg_config *c = *b->cfg;
    size_t max = (size_t)c->backend.max_batch_rollups;
    int nch = sg_kind_channels(r->kind);
    size_t open = b->npending - open_start(b);
    /* Never split a window's channels across batches, and never let a
     * batch grow past max_batch_rollups to keep them together: close the
     * open batch first when the whole window would not fit. */
    if (r->channel == 0 && open > 0 && open + (size_t)nch > max) {
        close_open(b);
        open = 0;
    }
    if (open == 0) {
        /* The batch's oldest window closed now: later rollups of the batch
         * closed later, so one clock read per batch. */
        b->open_mono_ms = sg_mono_ms();
    }
    if (b->npending == b->cap_pending) {
        b->cap_pending = b->cap_pending ? b->cap_pending * 2 : 64;
        b->pending = sg_xrealloc(b->pending, b->cap_pending * sizeof *b->pending);
    }
    b->pending[b->npending++] = *r;
    open++;
    bool last_channel = r->channel + 1 >= nch;
    if (last_channel && open >= max) {
        close_open(b);
    }
    /* The burst bound (top of this file). */
    if (b->nfull > 0 && open_start(b) >= b->burst_rollups) {
        return sg_batch_flush_full(b);
    }
    return 0;
}

size_t sg_batch_flush_full(struct sg_batch *b)
{
    size_t nbatches = b->nfull;
    if (nbatches == 0) {
        return 0;
    }
    size_t start = 0;
    for (size_t i = 0; i < nbatches; i++) {
        push(b, start, b->full[i].end - start, b->full[i].close_mono_ms);
        start = b->full[i].end;
    }
    /* The open batch moves to the front (at most max_batch_rollups + 2). */
    memmove(b->pending, b->pending + start, (b->npending - start) * sizeof *b->pending);
    b->npending -= start;
    b->nfull = 0;
    return nbatches;
}

size_t sg_batch_flush(struct sg_batch *b)
{
    size_t nbatches = sg_batch_flush_full(b);
    if (b->npending > 0) {
        push(b, 0, b->npending, b->open_mono_ms);
        b->npending = 0;
        nbatches++;
    }
    return nbatches;
}

size_t sg_batch_pending(const struct sg_batch *b)
{
    return b->npending;
}

size_t sg_batch_full(const struct sg_batch *b)
{
    return b->nfull;
}

uint64_t sg_batch_wait_ms(const struct sg_batch *b, uint64_t mono_ms)
{
    if (b->npending == 0) {
        return UINT64_MAX;
    }
    uint64_t oldest = b->nfull > 0 ? b->full[0].close_mono_ms : b->open_mono_ms;
    uint64_t due = oldest + (*b->cfg)->backend.max_batch_delay_ms;
    return due > mono_ms ? due - mono_ms : 0;
}

bool sg_batch_push_failed(const struct sg_batch *b)
{
    return b->push_failed;
}

const struct sg_batch_stats *sg_batch_stats(const struct sg_batch *b)
{
    return &b->stats;
}

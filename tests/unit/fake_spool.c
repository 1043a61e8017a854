/*
 * fake_spool: spool.h kept in memory, sorted by seq, for loop tests of the
 * forwarder and tests of the batcher. Same contract as gateway/spool.c
 * where they rely on it: peek returns the oldest batch after a seq with a
 * copy of its body, ack and dead remove it, sequence numbers never repeat,
 * a failed push stores nothing (marks included), and a push takes the
 * earliest sg_spool_note_close since the last push as its close_mono_ms.
 */
#include "fake_spool.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

struct fake_batch {
    uint64_t seq;
    uint64_t created_ms;
    uint64_t close_mono_ms;
    int content_type;
    uint8_t *body;
    size_t len;
    struct sg_spool_mark *marks; /* sensor_id strings owned here */
    size_t nmarks;
};

struct fake_dead {
    uint64_t seq;
    int http_status;
    char reason[256];
};

struct sg_spool {
    struct fake_batch b[FAKE_SPOOL_MAX]; /* sorted by seq */
    size_t n;
    struct fake_dead dead[FAKE_SPOOL_MAX];
    size_t ndead;
    uint64_t next_seq;
    size_t ack_calls;
    struct sg_spool_stats stats;
    uint64_t close_note_ms; /* earliest note since the last push; 0 = none */
    int fail_next;          /* the next push fails with this (0 = none) */
};

static void update_stats(struct sg_spool *sp)
{
    size_t i;

    sp->stats.batches = sp->n;
    sp->stats.bytes = 0;
    for (i = 0; i < sp->n; i++) {
        sp->stats.bytes += sp->b[i].len;
    }
    sp->stats.dead_letters = sp->ndead;
    sp->stats.oldest_created_ms = sp->n > 0 ? sp->b[0].created_ms : 0;
}

static long find(struct sg_spool *sp, uint64_t seq)
{
    size_t i;

    for (i = 0; i < sp->n; i++) {
        if (sp->b[i].seq == seq) {
            return (long)i;
        }
    }
    return -1;
}

static void batch_free(struct fake_batch *b)
{
    size_t i;

    free(b->body);
    for (i = 0; i < b->nmarks; i++) {
        free((char *)b->marks[i].sensor_id);
    }
    free(b->marks);
}

static void remove_at(struct sg_spool *sp, size_t i)
{
    batch_free(&sp->b[i]);
    memmove(&sp->b[i], &sp->b[i + 1], (sp->n - i - 1) * sizeof(sp->b[0]));
    sp->n--;
    update_stats(sp);
}

int sg_spool_open(struct sg_spool **out, const struct sg_spool_opts *opts)
{
    struct sg_spool *sp;

    if (out == NULL || opts == NULL) {
        return SG_EINVAL;
    }
    sp = sg_xcalloc(1, sizeof(*sp));
    sp->next_seq = opts->now_ms * 1000000ULL + 1;
    *out = sp;
    return 0;
}

void sg_spool_close(struct sg_spool *sp)
{
    size_t i;

    if (sp == NULL) {
        return;
    }
    for (i = 0; i < sp->n; i++) {
        batch_free(&sp->b[i]);
    }
    free(sp);
}

uint64_t sg_spool_next_seq(struct sg_spool *sp)
{
    return sp->next_seq++;
}

int sg_spool_push(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                  size_t len, uint64_t created_ms)
{
    return sg_spool_push_marked(sp, seq, content_type, body, len, created_ms, NULL, 0);
}

int sg_spool_push_marked(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                         size_t len, uint64_t created_ms, const struct sg_spool_mark *marks,
                         size_t nmarks)
{
    struct fake_batch *nb;
    uint64_t note = sp->close_note_ms;
    uint64_t now = sg_mono_ms();
    size_t i;

    sp->close_note_ms = 0; /* as spool.c: forgotten whatever the outcome */
    if (sp->fail_next != 0) {
        int err = sp->fail_next;
        sp->fail_next = 0;
        sp->stats.errors++;
        return err;
    }
    if (sp->n == FAKE_SPOOL_MAX || find(sp, seq) >= 0) {
        sp->stats.errors++;
        return SG_EIO;
    }
    for (i = sp->n; i > 0 && sp->b[i - 1].seq > seq; i--) {
        sp->b[i] = sp->b[i - 1];
    }
    nb = &sp->b[i];
    memset(nb, 0, sizeof(*nb));
    nb->seq = seq;
    nb->created_ms = created_ms;
    /* As spool.c: the earliest close noted, else the push time. */
    nb->close_mono_ms = note != 0 && note < now ? note : now;
    nb->content_type = content_type;
    nb->body = sg_xmalloc(len > 0 ? len : 1);
    memcpy(nb->body, body, len);
    nb->len = len;
    if (nmarks > 0) {
        nb->marks = sg_xcalloc(nmarks, sizeof(*nb->marks));
        for (i = 0; i < nmarks; i++) {
            nb->marks[i] = marks[i];
            nb->marks[i].sensor_id = sg_xstrdup(marks[i].sensor_id);
        }
        nb->nmarks = nmarks;
    }
    sp->n++;
    if (seq >= sp->next_seq) {
        sp->next_seq = seq + 1;
    }
    update_stats(sp);
    return 0;
}

int sg_spool_peek(struct sg_spool *sp, uint64_t after_seq, struct sg_spool_batch *out)
{
    size_t i;

    for (i = 0; i < sp->n; i++) {
        if (sp->b[i].seq > after_seq) {
            out->seq = sp->b[i].seq;
            out->created_ms = sp->b[i].created_ms;
            out->close_mono_ms = sp->b[i].close_mono_ms;
            out->content_type = sp->b[i].content_type;
            out->len = sp->b[i].len;
            out->body = sg_xmalloc(out->len > 0 ? out->len : 1);
            memcpy(out->body, sp->b[i].body, out->len);
            return 0;
        }
    }
    return SG_ENOTFOUND;
}

int sg_spool_ack(struct sg_spool *sp, uint64_t seq)
{
    long i = find(sp, seq);

    sp->ack_calls++;
    if (i < 0) {
        return SG_ENOTFOUND;
    }
    remove_at(sp, (size_t)i);
    return 0;
}

int sg_spool_dead(struct sg_spool *sp, uint64_t seq, int http_status, const char *reason)
{
    long i = find(sp, seq);
    struct fake_dead *d;

    if (i < 0) {
        return SG_ENOTFOUND;
    }
    if (sp->ndead == FAKE_SPOOL_MAX) {
        return SG_EIO;
    }
    d = &sp->dead[sp->ndead++];
    d->seq = seq;
    d->http_status = http_status;
    strncpy(d->reason, reason != NULL ? reason : "", sizeof(d->reason) - 1);
    d->reason[sizeof(d->reason) - 1] = '\0';
    remove_at(sp, (size_t)i);
    return 0;
}

bool sg_spool_contains(struct sg_spool *sp, uint64_t seq)
{
    return find(sp, seq) >= 0;
}

const struct sg_spool_stats *sg_spool_stats(struct sg_spool *sp)
{
    return &sp->stats;
}

void sg_spool_batch_clear(struct sg_spool_batch *b)
{
    if (b == NULL) {
        return;
    }
    free(b->body);
    b->body = NULL;
    b->len = 0;
}

size_t fake_spool_count(struct sg_spool *sp)
{
    return sp->n;
}

int fake_spool_set_close_mono(struct sg_spool *sp, uint64_t seq, uint64_t close_mono_ms)
{
    long i = find(sp, seq);

    if (i < 0) {
        return SG_ENOTFOUND;
    }
    sp->b[i].close_mono_ms = close_mono_ms;
    return 0;
}

size_t fake_spool_dead_count(struct sg_spool *sp)
{
    return sp->ndead;
}

int fake_spool_dead_get(struct sg_spool *sp, size_t i, uint64_t *seq, int *http_status,
                        const char **reason)
{
    if (i >= sp->ndead) {
        return SG_ENOTFOUND;
    }
    *seq = sp->dead[i].seq;
    *http_status = sp->dead[i].http_status;
    *reason = sp->dead[i].reason;
    return 0;
}

size_t fake_spool_ack_calls(struct sg_spool *sp)
{
    return sp->ack_calls;
}

void sg_spool_note_close(struct sg_spool *sp, uint64_t mono_ms)
{
    if (sp != NULL && mono_ms != 0 && (sp->close_note_ms == 0 || mono_ms < sp->close_note_ms)) {
        sp->close_note_ms = mono_ms;
    }
}

int fake_spool_marks(struct sg_spool *sp, uint64_t seq, const struct sg_spool_mark **marks,
                     size_t *nmarks)
{
    long i = find(sp, seq);

    if (i < 0) {
        return SG_ENOTFOUND;
    }
    *marks = sp->b[i].marks;
    *nmarks = sp->b[i].nmarks;
    return 0;
}

void fake_spool_fail_next(struct sg_spool *sp, int err)
{
    sp->fail_next = err;
}

const char *sg_spool_last_error(struct sg_spool *sp)
{
    (void)sp;
    return "fake spool";
}

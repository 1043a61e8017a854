/*
 * Unit tests for the spool (gateway/spool.c): order, ack, dead letters,
 * sequence numbers across restarts, the bounds, byte-exact reopen,
 * quarantine of corrupt files, schema versions, unusable directories and
 * the directory lock, window marks (upsert keeps the max, load, prune,
 * atomic with the batch) and the version 1 -> 2 migration. Each test works
 * in its own temporary directory.
 * Ends with a small benchmark print (not an assertion) of push+ack cost.
 * Long file: one test per spool guarantee, all on the open/push/fill helpers
 * at the top (a split would copy them).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common.h"
#include "log.h"
#include "spool.h"
#include "sg_test.h"

/* A fixed gateway clock for the tests (2026-01-01T00:00:00Z). */
#define NOW_MS UINT64_C(1767225600000)
#define SCALE UINT64_C(1000000)

static char tmpdir[256];
static char spooldir[300];

static int suite_init(void)
{
    if (sg_test_mkdtemp(tmpdir, sizeof(tmpdir), "test_spool") != 0) {
        return -1;
    }
    /* A directory that does not exist yet: open must create it (mkdir -p). */
    snprintf(spooldir, sizeof(spooldir), "%s/a/b/spool", tmpdir);
    return 0;
}

static int suite_clean(void)
{
    return sg_test_rm_rf(tmpdir);
}

/* Whether mkopts asks for synchronous=FULL. Most tests are about logic,
 * not power loss, so they run without fsync to stay fast on a busy disk;
 * the reopen tests switch it on to cover the FULL path. */
static bool use_fsync;

static struct sg_spool_opts mkopts(uint64_t max_bytes, uint64_t max_batches, uint64_t now_ms)
{
    struct sg_spool_opts o = {.dir = spooldir, .max_bytes = max_bytes,
                              .max_batches = max_batches, .fsync = use_fsync, .now_ms = now_ms};
    return o;
}

static struct sg_spool *open_ok(uint64_t max_bytes, uint64_t max_batches, uint64_t now_ms)
{
    struct sg_spool *sp = NULL;
    struct sg_spool_opts o = mkopts(max_bytes, max_batches, now_ms);
    int rc = sg_spool_open(&sp, &o);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sp);
    return sp;
}

/* Deterministic body bytes for (seed, len). */
static void fill(uint8_t *b, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
}

static uint64_t push_n(struct sg_spool *sp, size_t len, uint32_t seed, uint64_t created_ms)
{
    uint8_t *b = malloc(len + 1);
    fill(b, len, seed);
    uint64_t seq = sg_spool_next_seq(sp);
    int rc = sg_spool_push(sp, seq, (int)(seed % 2), b, len, created_ms);
    CU_ASSERT_EQUAL(rc, 0);
    free(b);
    return seq;
}

static bool body_is(const struct sg_spool_batch *b, size_t len, uint32_t seed)
{
    uint8_t *want = malloc(len + 1);
    fill(want, len, seed);
    bool ok = b->len == len && (len == 0 || memcmp(b->body, want, len) == 0);
    free(want);
    return ok;
}

static void wipe_spool(void)
{
    sg_test_rm_rf(spooldir);
}

/* Every peeked seq from after_seq on, in order; returns the count. */
static size_t peek_all(struct sg_spool *sp, uint64_t *seqs, size_t cap)
{
    struct sg_spool_batch b;
    uint64_t after = 0;
    size_t n = 0;
    while (sg_spool_peek(sp, after, &b) == 0) {
        if (n < cap) {
            seqs[n] = b.seq;
        }
        n++;
        after = b.seq;
        sg_spool_batch_clear(&b);
    }
    return n;
}

/* ---- order and ack ---------------------------------------------------- */

static void test_push_peek_order(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    struct sg_spool_batch b;
    uint64_t s[4];
    size_t lens[4] = {10, 0, 4096, 77};

    for (int i = 0; i < 4; i++) {
        s[i] = push_n(sp, lens[i], (uint32_t)i + 1, NOW_MS + (uint64_t)i);
    }
    CU_ASSERT(s[0] < s[1] && s[1] < s[2] && s[2] < s[3]);
    uint64_t after = 0;
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(sg_spool_peek(sp, after, &b), 0);
        CU_ASSERT_EQUAL(b.seq, s[i]);
        CU_ASSERT_EQUAL(b.created_ms, NOW_MS + (uint64_t)i);
        CU_ASSERT_EQUAL(b.content_type, (i + 1) % 2);
        CU_ASSERT(b.close_mono_ms != 0); /* pushed in this process */
        CU_ASSERT(body_is(&b, lens[i], (uint32_t)i + 1));
        after = b.seq;
        sg_spool_batch_clear(&b);
        CU_ASSERT_PTR_NULL(b.body);
    }
    CU_ASSERT_EQUAL(sg_spool_peek(sp, after, &b), SG_ENOTFOUND);
    /* Peek does not remove. */
    CU_ASSERT_EQUAL(sg_spool_peek(sp, 0, &b), 0);
    CU_ASSERT_EQUAL(b.seq, s[0]);
    sg_spool_batch_clear(&b);

    const struct sg_spool_stats *st = sg_spool_stats(sp);
    CU_ASSERT_EQUAL(st->batches, 4);
    CU_ASSERT_EQUAL(st->bytes, 10 + 0 + 4096 + 77);
    CU_ASSERT_EQUAL(st->oldest_created_ms, NOW_MS);
    CU_ASSERT_EQUAL(st->errors, 0);
    sg_spool_close(sp);
}

static void test_ack(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    struct sg_spool_batch b;
    uint64_t s1 = push_n(sp, 100, 1, NOW_MS + 1);
    uint64_t s2 = push_n(sp, 200, 2, NOW_MS + 2);
    uint64_t s3 = push_n(sp, 300, 3, NOW_MS + 3);

    CU_ASSERT(sg_spool_contains(sp, s2));
    CU_ASSERT_EQUAL(sg_spool_ack(sp, s2), 0);
    CU_ASSERT(!sg_spool_contains(sp, s2));
    CU_ASSERT_EQUAL(sg_spool_ack(sp, s2), SG_ENOTFOUND);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 2);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 400);

    CU_ASSERT_EQUAL(sg_spool_peek(sp, s1, &b), 0);
    CU_ASSERT_EQUAL(b.seq, s3);
    sg_spool_batch_clear(&b);

    CU_ASSERT_EQUAL(sg_spool_ack(sp, s1), 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->oldest_created_ms, NOW_MS + 3);
    CU_ASSERT_EQUAL(sg_spool_ack(sp, s3), 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->oldest_created_ms, 0);
    CU_ASSERT_EQUAL(sg_spool_peek(sp, 0, &b), SG_ENOTFOUND);
    CU_ASSERT_EQUAL(sg_spool_ack(sp, 12345), SG_ENOTFOUND);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->errors, 0);
    CU_ASSERT_STRING_EQUAL(sg_spool_last_error(sp), "");
    sg_spool_close(sp);
}

/* ---- dead letters ----------------------------------------------------- */

static void test_dead(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    uint64_t s1 = push_n(sp, 50, 7, NOW_MS);
    uint64_t s2 = push_n(sp, 60, 8, NOW_MS);
    char longreason[600];
    memset(longreason, 'x', sizeof(longreason) - 1);
    longreason[sizeof(longreason) - 1] = '\0';

    CU_ASSERT_EQUAL(sg_spool_dead(sp, s1, 400, "{\"error\":\"bad field\"}"), 0);
    CU_ASSERT_EQUAL(sg_spool_dead(sp, s2, 422, longreason), 0);
    CU_ASSERT_EQUAL(sg_spool_dead(sp, s2, 422, NULL), SG_ENOTFOUND);
    CU_ASSERT(!sg_spool_contains(sp, s1));
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dead_letters, 2);
    sg_spool_close(sp);

    /* Look at the rows with SQLite itself. */
    char path[400];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "SELECT seq, http_status, reason, content_type, body "
                                             "FROM dead_letter ORDER BY seq",
                                             -1, &st, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    CU_ASSERT_EQUAL((uint64_t)sqlite3_column_int64(st, 0), s1);
    CU_ASSERT_EQUAL(sqlite3_column_int(st, 1), 400);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(st, 2), "{\"error\":\"bad field\"}");
    CU_ASSERT_EQUAL(sqlite3_column_int(st, 3), 1);
    struct sg_spool_batch fake = {.body = (uint8_t *)(uintptr_t)sqlite3_column_blob(st, 4),
                                  .len = (size_t)sqlite3_column_bytes(st, 4)};
    CU_ASSERT(body_is(&fake, 50, 7));
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    CU_ASSERT_EQUAL((uint64_t)sqlite3_column_int64(st, 0), s2);
    CU_ASSERT_EQUAL(sqlite3_column_bytes(st, 2), 256);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* Dead letters survive a reopen in the totals. */
    sp = open_ok(1 << 20, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dead_letters, 2);
    sg_spool_close(sp);
}

static void test_dead_bound(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 3, NOW_MS);
    uint64_t s[5];
    for (int i = 0; i < 5; i++) {
        s[i] = push_n(sp, 10, (uint32_t)i, NOW_MS);
        CU_ASSERT_EQUAL(sg_spool_dead(sp, s[i], 400, "no"), 0);
    }
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dead_letters, 3);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dead_dropped, 2);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped, 0);
    sg_spool_close(sp);
}

/* ---- sequence numbers ------------------------------------------------- */

static void test_seq_clock_seed(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    uint64_t a = sg_spool_next_seq(sp);
    CU_ASSERT(a >= NOW_MS * SCALE);
    CU_ASSERT(a < (NOW_MS + 1) * SCALE);
    uint64_t prev = a;
    for (int i = 0; i < 3000; i++) { /* crosses several reservation blocks */
        uint64_t b = sg_spool_next_seq(sp);
        CU_ASSERT_FATAL(b > prev);
        prev = b;
    }
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->errors, 0);
    sg_spool_close(sp);

    /* A later clock moves the sequence up to now_ms * 10^6. */
    sp = open_ok(1 << 20, 0, NOW_MS + 5000);
    uint64_t c = sg_spool_next_seq(sp);
    CU_ASSERT(c >= (NOW_MS + 5000) * SCALE);
    CU_ASSERT(c > prev);
    sg_spool_close(sp);
}

static void test_seq_across_reopen(void)
{
    use_fsync = true;
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    uint64_t hi = 0;
    for (int i = 0; i < 5; i++) {
        hi = push_n(sp, 20, (uint32_t)i, NOW_MS);
    }
    /* Acked everything: the batch table is empty. */
    struct sg_spool_batch b;
    while (sg_spool_peek(sp, 0, &b) == 0) {
        CU_ASSERT_EQUAL(sg_spool_ack(sp, b.seq), 0);
        sg_spool_batch_clear(&b);
    }
    /* Reserved (put in a body) but never pushed. */
    uint64_t reserved = sg_spool_next_seq(sp);
    CU_ASSERT(reserved > hi);
    sg_spool_close(sp);

    /* Same clock, and then a clock that stepped back an hour: the stored
     * high-water mark alone must keep the numbers going up. */
    uint64_t clocks[2] = {NOW_MS, NOW_MS - 3600000};
    uint64_t last = reserved;
    for (int k = 0; k < 2; k++) {
        sp = open_ok(1 << 20, 0, clocks[k]);
        uint64_t n = sg_spool_next_seq(sp);
        CU_ASSERT(n > last);
        /* Many reservations without a push, then a restart. */
        for (int i = 0; i < 1500; i++) {
            n = sg_spool_next_seq(sp);
        }
        last = n;
        sg_spool_close(sp);
    }
    sp = open_ok(1 << 20, 0, NOW_MS - 7200000);
    uint64_t n = sg_spool_next_seq(sp);
    CU_ASSERT(n > last);
    /* A seq pushed beyond anything reserved (not from next_seq) raises the
     * stored high-water mark in the push's own transaction. */
    uint64_t far = n + 1000000;
    uint8_t one = 1;
    CU_ASSERT_EQUAL(sg_spool_push(sp, far, 0, &one, 1, NOW_MS), 0);
    sg_spool_close(sp);
    sp = open_ok(1 << 20, 0, NOW_MS - 7200000);
    CU_ASSERT(sg_spool_next_seq(sp) > far);
    far += 5000000;
    CU_ASSERT_EQUAL(sg_spool_push(sp, far, 0, &one, 1, NOW_MS), 0);
    CU_ASSERT(sg_spool_next_seq(sp) > far);
    sg_spool_close(sp);
    use_fsync = false;
}

static void test_push_rejects_duplicate_seq(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    uint8_t body[4] = {1, 2, 3, 4};
    uint64_t s = push_n(sp, 8, 1, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_push(sp, s, 0, body, 4, NOW_MS), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_spool_push(sp, 0, 0, body, 4, NOW_MS), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_spool_push(sp, sg_spool_next_seq(sp), 0, NULL, 4, NOW_MS), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 8);
    /* The spool is still usable after the failed insert. */
    push_n(sp, 8, 2, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 2);
    sg_spool_close(sp);
}

/* ---- bounds ----------------------------------------------------------- */

static void test_bound_bytes(void)
{
    wipe_spool();
    enum { N = 40 };
    const uint64_t max_bytes = 5000;
    struct sg_spool *sp = open_ok(max_bytes, 0, NOW_MS);
    uint64_t seqs[N];
    size_t lens[N];
    srand(12345);
    for (int i = 0; i < N; i++) {
        lens[i] = (size_t)(rand() % 1500);
        seqs[i] = push_n(sp, lens[i], (uint32_t)i, NOW_MS + (uint64_t)i);
    }
    /* Expected: the longest suffix of pushes whose sum fits, computed
     * directly (each push drops oldest until it fits, which keeps exactly
     * that suffix because every single batch fits on its own). Simulate it
     * push by push. */
    size_t first = 0;
    uint64_t sum = 0;
    uint64_t dropped = 0;
    for (int i = 0; i < N; i++) {
        sum += lens[i];
        while (sum > max_bytes) {
            sum -= lens[first++];
            dropped++;
        }
    }
    uint64_t got[N];
    size_t n = peek_all(sp, got, N);
    CU_ASSERT_EQUAL(n, N - first);
    for (size_t i = 0; i < n && first + i < N; i++) {
        CU_ASSERT_EQUAL(got[i], seqs[first + i]);
    }
    const struct sg_spool_stats *st = sg_spool_stats(sp);
    CU_ASSERT_EQUAL(st->bytes, sum);
    CU_ASSERT(st->bytes <= max_bytes);
    CU_ASSERT_EQUAL(st->batches, N - first);
    CU_ASSERT_EQUAL(st->dropped, dropped);
    CU_ASSERT(dropped > 0);
    CU_ASSERT_EQUAL(st->oldest_created_ms, NOW_MS + first);
    sg_spool_close(sp);

    /* Totals and the lifetime drop count survive a reopen; dropped is
     * per-open. */
    sp = open_ok(max_bytes, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, sum);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, N - first);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped_lifetime, dropped);
    sg_spool_close(sp);
}

static void test_bound_count(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 4, NOW_MS);
    uint64_t seqs[10];
    for (int i = 0; i < 10; i++) {
        seqs[i] = push_n(sp, 30, (uint32_t)i, NOW_MS);
    }
    uint64_t got[10];
    size_t n = peek_all(sp, got, 10);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(got[i], seqs[6 + i]);
    }
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped, 6);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 120);
    CU_ASSERT(!sg_spool_contains(sp, seqs[5]));
    /* An ack of a batch dropped meanwhile is "not found", not an error. */
    CU_ASSERT_EQUAL(sg_spool_ack(sp, seqs[0]), SG_ENOTFOUND);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->errors, 0);
    sg_spool_close(sp);
}

/* close_mono_ms is remembered for every batch pushed in this process, also
 * after out-of-order acks and many drops at the bound. */
static void test_close_mono(void)
{
    wipe_spool();
    struct sg_spool *sp = NULL;
    struct sg_spool_opts o = mkopts(1 << 20, 10, NOW_MS);
    CU_ASSERT_EQUAL_FATAL(sg_spool_open(&sp, &o), 0);
    struct sg_spool_batch b;
    uint64_t s[3000];
    /* Model: what should be spooled (a window of seqs with holes). */
    static uint64_t model[3000];
    size_t mhead = 0, mlen = 0;
    for (int i = 0; i < 3000; i++) {
        s[i] = push_n(sp, 5, (uint32_t)i, NOW_MS);
        model[mhead + mlen++] = s[i];
        while (mlen > 10) {
            mhead++;
            mlen--;
        }
        if (i % 7 == 3) {
            CU_ASSERT_EQUAL(sg_spool_ack(sp, s[i - 1]), 0);
            for (size_t k = mhead; k < mhead + mlen; k++) {
                if (model[k] == s[i - 1]) {
                    memmove(&model[k], &model[k + 1], (mhead + mlen - k - 1) * sizeof(model[0]));
                    mlen--;
                    break;
                }
            }
        }
    }
    uint64_t after = 0, prev_mono = 0;
    int n = 0;
    while (sg_spool_peek(sp, after, &b) == 0) {
        CU_ASSERT(b.close_mono_ms != 0);
        CU_ASSERT(b.close_mono_ms >= prev_mono);
        CU_ASSERT(n < (int)mlen && b.seq == model[mhead + (size_t)n]);
        prev_mono = b.close_mono_ms;
        after = b.seq;
        sg_spool_batch_clear(&b);
        n++;
    }
    CU_ASSERT_EQUAL(n, (int)mlen);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, mlen);
    sg_spool_close(sp);
}

/* sg_spool_note_close: the earliest note since the last push becomes the
 * next pushed batch's close_mono_ms (never later than its push time); a
 * push forgets it, also one that fails; 0 and later notes change nothing. */
static void test_close_note(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    struct sg_spool_batch b;
    uint64_t t0 = sg_mono_ms();
    CU_ASSERT_FATAL(t0 > 1000);

    sg_spool_note_close(sp, t0 - 700);
    sg_spool_note_close(sp, 0);         /* ignored */
    sg_spool_note_close(sp, t0 - 300);  /* later: the earlier one stays */
    uint64_t a = push_n(sp, 10, 1, NOW_MS);
    uint64_t c = push_n(sp, 10, 2, NOW_MS); /* no note: its push time */
    sg_spool_note_close(sp, t0 + 3600000);   /* after the push: push time wins */
    uint64_t d = push_n(sp, 10, 3, NOW_MS);
    /* A failed push (seq already stored) forgets the note too. */
    sg_spool_note_close(sp, t0 - 900);
    uint8_t body[4] = {1, 2, 3, 4};
    CU_ASSERT_NOT_EQUAL(sg_spool_push(sp, a, 0, body, sizeof body, NOW_MS), 0);
    uint64_t e = push_n(sp, 10, 4, NOW_MS);
    uint64_t t1 = sg_mono_ms();

    uint64_t want_min[4] = {t0 - 700, t0, t0, t0};
    uint64_t want_max[4] = {t0 - 700, t1, t1, t1};
    uint64_t seqs[4] = {a, c, d, e};
    uint64_t after = 0;
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(sg_spool_peek(sp, after, &b), 0);
        CU_ASSERT_EQUAL(b.seq, seqs[i]);
        CU_ASSERT(b.close_mono_ms >= want_min[i] && b.close_mono_ms <= want_max[i]);
        after = b.seq;
        sg_spool_batch_clear(&b);
    }
    sg_spool_note_close(NULL, t0); /* no-op */
    sg_spool_close(sp);
}

static void test_oversize_refused(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1000, 0, NOW_MS);
    uint64_t a = push_n(sp, 600, 1, NOW_MS);
    uint8_t *big = calloc(1, 1001);
    uint64_t s = sg_spool_next_seq(sp);
    CU_ASSERT_EQUAL(sg_spool_push(sp, s, 0, big, 1001, NOW_MS), SG_EFULL);
    CU_ASSERT(!sg_spool_contains(sp, s));
    CU_ASSERT(sg_spool_contains(sp, a));
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 600);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->errors, 0);
    /* Exactly max_bytes fits, and pushes out the older one. */
    uint64_t b = sg_spool_next_seq(sp);
    CU_ASSERT_EQUAL(sg_spool_push(sp, b, 0, big, 1000, NOW_MS), 0);
    CU_ASSERT(sg_spool_contains(sp, b));
    CU_ASSERT(!sg_spool_contains(sp, a));
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->dropped, 2);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, 1000);
    free(big);
    sg_spool_close(sp);
}

/* ---- reopen ----------------------------------------------------------- */

static void test_reopen_byte_exact(void)
{
    use_fsync = true;
    wipe_spool();
    enum { N = 12 };
    struct sg_spool *sp = open_ok(1 << 24, 0, NOW_MS);
    uint64_t seqs[N];
    size_t lens[N];
    uint64_t total = 0;
    for (int i = 0; i < N; i++) {
        lens[i] = i == 3 ? 0 : (size_t)(i * 7919 % 70000);
        total += lens[i];
        seqs[i] = push_n(sp, lens[i], (uint32_t)i + 100, NOW_MS + 10 * (uint64_t)i);
    }
    sg_spool_close(sp);

    sp = open_ok(1 << 24, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, N);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, total);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->oldest_created_ms, NOW_MS);
    struct sg_spool_batch b;
    uint64_t after = 0;
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(sg_spool_peek(sp, after, &b), 0);
        CU_ASSERT_EQUAL(b.seq, seqs[i]);
        CU_ASSERT_EQUAL(b.created_ms, NOW_MS + 10 * (uint64_t)i);
        CU_ASSERT_EQUAL(b.content_type, (int)((i + 100) % 2));
        CU_ASSERT(body_is(&b, lens[i], (uint32_t)i + 100));
        CU_ASSERT_EQUAL(b.close_mono_ms, 0); /* not stored across a restart */
        after = b.seq;
        sg_spool_batch_clear(&b);
    }
    CU_ASSERT(sg_spool_next_seq(sp) > seqs[N - 1]);
    sg_spool_close(sp);
    use_fsync = false;
}

/* ---- corruption, versions, directories -------------------------------- */

static int count_quarantined(char *name, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c '^spool.db.corrupt-[0-9-]*$'", spooldir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f != NULL) {
        if (fscanf(f, "%d", &n) != 1) {
            n = -1;
        }
        pclose(f);
    }
    if (name != NULL) {
        snprintf(name, cap, "%s/spool.db.corrupt-%" PRIu64, spooldir, NOW_MS);
    }
    return n;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void test_corrupt_garbage(void)
{
    wipe_spool();
    char path[400], moved[400];
    char garbage[8192];
    for (size_t i = 0; i < sizeof(garbage); i++) {
        garbage[i] = (char)(i * 31 + 7);
    }
    mkdir(tmpdir, 0700);
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS); /* creates the dirs */
    sg_spool_close(sp);
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    write_file(path, garbage, sizeof(garbage));

    sp = open_ok(1 << 20, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->quarantined, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 0);
    CU_ASSERT(sg_spool_next_seq(sp) >= NOW_MS * SCALE);
    push_n(sp, 10, 1, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 1);
    sg_spool_close(sp);
    CU_ASSERT_EQUAL(count_quarantined(moved, sizeof(moved)), 1);
    /* The quarantined file is the garbage, unchanged. */
    struct stat st;
    CU_ASSERT_EQUAL(stat(moved, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, (off_t)sizeof(garbage));

    /* A second corrupt file at the same clock does not overwrite the first. */
    write_file(path, garbage, sizeof(garbage));
    sp = open_ok(1 << 20, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->quarantined, 1);
    sg_spool_close(sp);
    CU_ASSERT_EQUAL(count_quarantined(NULL, 0), 2);
}

static void test_corrupt_truncated(void)
{
    wipe_spool();
    char path[400];
    struct sg_spool *sp = open_ok(1 << 24, 0, NOW_MS);
    for (int i = 0; i < 40; i++) {
        push_n(sp, 3000 + (size_t)i * 100, (uint32_t)i, NOW_MS);
    }
    sg_spool_close(sp); /* the last close checkpoints and removes the WAL */
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT(st.st_size > 100000);
    CU_ASSERT_EQUAL_FATAL(truncate(path, st.st_size / 2), 0);

    sp = open_ok(1 << 24, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->quarantined, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 0);
    sg_spool_close(sp);
    CU_ASSERT_EQUAL(count_quarantined(NULL, 0), 1);
}

/* A damaged b-tree page with an intact header: only quick_check sees it. */
static void test_corrupt_page(void)
{
    wipe_spool();
    char path[400];
    sqlite3 *db = NULL;
    sqlite3_int64 root = 0, page_size = 0;
    struct sg_spool *sp = open_ok(1 << 24, 0, NOW_MS);
    for (int i = 0; i < 40; i++) {
        push_n(sp, 3000, (uint32_t)i, NOW_MS);
    }
    sg_spool_close(sp);
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "SELECT rootpage, (SELECT page_size FROM "
                                             "pragma_page_size) FROM sqlite_schema "
                                             "WHERE name = 'batch'",
                                             -1, &st, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_step(st), SQLITE_ROW);
    root = sqlite3_column_int64(st, 0);
    page_size = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    CU_ASSERT_FATAL(root > 1 && page_size >= 512);

    /* Overwrite the cell pointers of the batch table's root page. */
    int fd = open(path, O_WRONLY);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t junk[200];
    memset(junk, 0xff, sizeof(junk));
    CU_ASSERT_EQUAL(pwrite(fd, junk, sizeof(junk), (off_t)((root - 1) * page_size + 12)),
                    (ssize_t)sizeof(junk));
    close(fd);

    sp = open_ok(1 << 24, 0, NOW_MS);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->quarantined, 1);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 0);
    sg_spool_close(sp);
    CU_ASSERT_EQUAL(count_quarantined(NULL, 0), 1);
}

static void test_unknown_version(void)
{
    wipe_spool();
    char path[400];
    sqlite3 *db = NULL;
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    push_n(sp, 10, 1, NOW_MS);
    sg_spool_close(sp);
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "UPDATE state SET v = 99 WHERE k = 'schema_version'", NULL,
                                 NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(db);

    struct sg_spool_opts o = mkopts(1 << 20, 0, NOW_MS);
    sp = (struct sg_spool *)&o; /* must be reset to NULL */
    CU_ASSERT_EQUAL(sg_spool_open(&sp, &o), SG_EVERSION);
    CU_ASSERT_PTR_NULL(sp);
    /* Not quarantined: the file is intact, just newer than this build. */
    CU_ASSERT_EQUAL(count_quarantined(NULL, 0), 0);
    struct stat st;
    CU_ASSERT_EQUAL(stat(path, &st), 0);

    /* A valid SQLite file that is not a spool is refused the same way. */
    wipe_spool();
    mkdir(tmpdir, 0700);
    sp = open_ok(1 << 20, 0, NOW_MS);
    sg_spool_close(sp);
    unlink(path);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TABLE other(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(sg_spool_open(&sp, &o), SG_EVERSION);
    CU_ASSERT_PTR_NULL(sp);
}

static void test_unusable_dir(void)
{
    char file[400], sub[450];
    snprintf(file, sizeof(file), "%s/plainfile", tmpdir);
    write_file(file, "x", 1);
    snprintf(sub, sizeof(sub), "%s/sub/deeper", file);
    struct sg_spool_opts o = mkopts(1 << 20, 0, NOW_MS);
    o.dir = sub;
    struct sg_spool *sp = NULL;
    errno = 0;
    CU_ASSERT_EQUAL(sg_spool_open(&sp, &o), SG_EIO);
    CU_ASSERT_EQUAL(errno, ENOTDIR);
    CU_ASSERT_PTR_NULL(sp);

    /* The spool dir itself is a regular file. */
    o.dir = file;
    errno = 0;
    CU_ASSERT_EQUAL(sg_spool_open(&sp, &o), SG_EIO);
    CU_ASSERT_EQUAL(errno, ENOTDIR);
    CU_ASSERT_PTR_NULL(sp);

    o.dir = "";
    CU_ASSERT_EQUAL(sg_spool_open(&sp, &o), SG_EINVAL);
}

static void test_dir_locked(void)
{
    wipe_spool();
    struct sg_spool *a = open_ok(1 << 20, 0, NOW_MS);
    struct sg_spool *b = NULL;
    struct sg_spool_opts o = mkopts(1 << 20, 0, NOW_MS);
    errno = 0;
    CU_ASSERT_EQUAL(sg_spool_open(&b, &o), SG_EIO);
    CU_ASSERT_EQUAL(errno, EBUSY);
    CU_ASSERT_PTR_NULL(b);
    sg_spool_close(a);
    b = open_ok(1 << 20, 0, NOW_MS);
    sg_spool_close(b);
}

/* ---- window marks ----------------------------------------------------- */

/* A loaded mark, copied out of the callback. */
struct lmark {
    char id[80];
    uint8_t kind;
    uint64_t window_ms;
    uint64_t closed_before_ms;
};

struct lmarks {
    struct lmark m[64];
    size_t n;
};

static void on_mark(void *ctx, const struct sg_spool_mark *m)
{
    struct lmarks *l = ctx;
    if (l->n < sizeof(l->m) / sizeof(l->m[0])) {
        struct lmark *x = &l->m[l->n];
        snprintf(x->id, sizeof(x->id), "%s", m->sensor_id);
        x->kind = m->kind;
        x->window_ms = m->window_ms;
        x->closed_before_ms = m->closed_before_ms;
    }
    l->n++;
}

static int cmp_lmark(const void *a, const void *b)
{
    const struct lmark *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0) {
        return c;
    }
    if (x->kind != y->kind) {
        return x->kind < y->kind ? -1 : 1;
    }
    return x->window_ms < y->window_ms ? -1 : x->window_ms > y->window_ms;
}

static struct lmarks load_sorted(struct sg_spool *sp)
{
    struct lmarks l;
    memset(&l, 0, sizeof(l));
    CU_ASSERT_EQUAL(sg_spool_load_marks(sp, on_mark, &l), 0);
    qsort(l.m, l.n < 64 ? l.n : 64, sizeof(l.m[0]), cmp_lmark);
    return l;
}

static uint64_t push_marked_n(struct sg_spool *sp, uint32_t seed, const struct sg_spool_mark *m,
                              size_t n)
{
    uint8_t b[32];
    fill(b, sizeof(b), seed);
    uint64_t seq = sg_spool_next_seq(sp);
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, seq, 0, b, sizeof(b), NOW_MS, m, n), 0);
    return seq;
}

/* The model: the max closed_before_ms per key over every mark pushed, as
 * a sorted list, computed without the spool. */
static struct lmarks model_of(const struct sg_spool_mark *const *sets, const size_t *ns,
                              size_t nsets, uint64_t prune_below)
{
    struct lmarks l;
    memset(&l, 0, sizeof(l));
    for (size_t s = 0; s < nsets; s++) {
        for (size_t i = 0; i < ns[s]; i++) {
            const struct sg_spool_mark *m = &sets[s][i];
            size_t k = 0;
            while (k < l.n && !(strcmp(l.m[k].id, m->sensor_id) == 0 && l.m[k].kind == m->kind &&
                                l.m[k].window_ms == m->window_ms)) {
                k++;
            }
            if (k == l.n) {
                snprintf(l.m[k].id, sizeof(l.m[k].id), "%s", m->sensor_id);
                l.m[k].kind = m->kind;
                l.m[k].window_ms = m->window_ms;
                l.m[k].closed_before_ms = m->closed_before_ms;
                l.n++;
            } else if (m->closed_before_ms > l.m[k].closed_before_ms) {
                l.m[k].closed_before_ms = m->closed_before_ms;
            }
        }
    }
    size_t keep = 0;
    for (size_t k = 0; k < l.n; k++) {
        if (l.m[k].closed_before_ms >= prune_below) {
            l.m[keep++] = l.m[k];
        }
    }
    l.n = keep;
    qsort(l.m, l.n, sizeof(l.m[0]), cmp_lmark);
    return l;
}

static bool lmarks_eq(const struct lmarks *a, const struct lmarks *b)
{
    if (a->n != b->n) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (cmp_lmark(&a->m[i], &b->m[i]) != 0 ||
            a->m[i].closed_before_ms != b->m[i].closed_before_ms) {
            return false;
        }
    }
    return true;
}

static void test_marks_upsert_load_prune(void)
{
    use_fsync = true;
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    static const struct sg_spool_mark m1[] = {
        {"s-1", 1, 10000, 1000000}, {"s-1", 1, 60000, 960000}, {"s-1", 2, 10000, 990000},
        {"s-2", 1, 10000, 1000000}, {"s-1", 1, 10000, 1010000}, /* repeats a key: max wins */
    };
    static const struct sg_spool_mark m2[] = {
        {"s-1", 1, 10000, 990000},   /* lower: must not move the mark back */
        {"s-2", 1, 10000, 1020000},  /* higher: moves it on */
        {"s-3", 9, 10000, 500000},
    };
    static const struct sg_spool_mark m3[] = {{"s-4", 3, 10000, 2000000}};
    const struct sg_spool_mark *const sets[] = {m1, m2, m3};
    const size_t ns[] = {5, 3, 1};

    struct lmarks none = load_sorted(sp);
    CU_ASSERT_EQUAL(none.n, 0);
    push_marked_n(sp, 1, m1, 5);
    push_marked_n(sp, 2, m2, 3);
    /* A push without marks leaves them alone; one with marks and no
     * other change too. */
    push_n(sp, 10, 3, NOW_MS);
    push_marked_n(sp, 4, NULL, 0);
    struct lmarks got = load_sorted(sp);
    struct lmarks want = model_of(sets, ns, 2, 0);
    CU_ASSERT_EQUAL(want.n, 5);
    CU_ASSERT(lmarks_eq(&got, &want));
    /* The lower value of m2 did not win: s-1/1/10000 stays at 1010000. */
    CU_ASSERT_EQUAL(got.m[0].closed_before_ms, 1010000);
    push_marked_n(sp, 5, m3, 1);
    sg_spool_close(sp);

    /* Durable across reopen; then prune. */
    sp = open_ok(1 << 20, 0, NOW_MS);
    got = load_sorted(sp);
    want = model_of(sets, ns, 3, 0);
    CU_ASSERT(lmarks_eq(&got, &want));
    CU_ASSERT_EQUAL(sg_spool_prune_marks(sp, 1000000), 0); /* < 1000000 goes */
    got = load_sorted(sp);
    want = model_of(sets, ns, 3, 1000000);
    CU_ASSERT_EQUAL(want.n, 3);
    CU_ASSERT(lmarks_eq(&got, &want));
    CU_ASSERT_EQUAL(sg_spool_prune_marks(sp, UINT64_MAX), 0);
    got = load_sorted(sp);
    CU_ASSERT_EQUAL(got.n, 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->errors, 0);
    /* Bad arguments store nothing. */
    static const struct sg_spool_mark bad_id[] = {{NULL, 1, 10000, 1}};
    static const struct sg_spool_mark bad_val[] = {{"x", 1, 10000, UINT64_MAX}};
    uint8_t b[4] = {0};
    uint64_t seq = sg_spool_next_seq(sp);
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, seq, 0, b, 4, NOW_MS, bad_id, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, seq, 0, b, 4, NOW_MS, bad_val, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, seq, 0, b, 4, NOW_MS, NULL, 2), SG_EINVAL);
    CU_ASSERT(!sg_spool_contains(sp, seq));
    CU_ASSERT_EQUAL(sg_spool_load_marks(sp, NULL, NULL), SG_EINVAL);
    sg_spool_close(sp);
    use_fsync = false;
}

static size_t count_marks(struct sg_spool *sp)
{
    struct lmarks l = load_sorted(sp);
    return l.n;
}

/* If the push fails, no mark is stored: a duplicate seq, an oversize
 * batch, and a failure in the middle of the marks (a trigger that aborts
 * on one sensor id, after the batch row and the first mark were written). */
static void test_marks_atomic(void)
{
    wipe_spool();
    static const struct sg_spool_mark m[] = {{"a", 1, 10000, 100}, {"b", 1, 10000, 200}};
    struct sg_spool *sp = open_ok(1000, 0, NOW_MS);
    uint64_t s1 = push_n(sp, 10, 1, NOW_MS);
    uint8_t body[8] = {0};
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, s1, 0, body, 8, NOW_MS, m, 2), SG_EINVAL);
    CU_ASSERT_EQUAL(count_marks(sp), 0);
    uint8_t *big = calloc(1, 1001);
    CU_ASSERT_EQUAL(
        sg_spool_push_marked(sp, sg_spool_next_seq(sp), 0, big, 1001, NOW_MS, m, 2), SG_EFULL);
    free(big);
    CU_ASSERT_EQUAL(count_marks(sp), 0);
    sg_spool_close(sp);

    char path[400];
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db,
                                 "CREATE TRIGGER boom BEFORE INSERT ON mark "
                                 "WHEN NEW.sensor_id = 'boom' BEGIN "
                                 "SELECT RAISE(ABORT, 'injected failure'); END",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(db);

    sp = open_ok(1000, 0, NOW_MS);
    static const struct sg_spool_mark mb[] = {{"a", 1, 10000, 100}, {"boom", 1, 10000, 1}};
    uint64_t before_batches = sg_spool_stats(sp)->batches;
    uint64_t before_bytes = sg_spool_stats(sp)->bytes;
    uint64_t s2 = sg_spool_next_seq(sp);
    int rc = sg_spool_push_marked(sp, s2, 0, body, 8, NOW_MS, mb, 2);
    CU_ASSERT(rc == SG_EINVAL || rc == SG_EIO);
    CU_ASSERT(strstr(sg_spool_last_error(sp), "injected failure") != NULL);
    CU_ASSERT(!sg_spool_contains(sp, s2));
    CU_ASSERT_EQUAL(count_marks(sp), 0);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, before_batches);
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->bytes, before_bytes);
    /* The same push without the bad mark goes through, marks included. */
    CU_ASSERT_EQUAL(sg_spool_push_marked(sp, s2, 0, body, 8, NOW_MS, mb, 1), 0);
    CU_ASSERT(sg_spool_contains(sp, s2));
    CU_ASSERT_EQUAL(count_marks(sp), 1);
    sg_spool_close(sp);
}

/* A version 1 file (before marks) is migrated in place: batches kept,
 * marks usable, version now 2. */
static void test_migrate_v1(void)
{
    wipe_spool();
    struct sg_spool *sp = open_ok(1 << 20, 0, NOW_MS);
    uint64_t s1 = push_n(sp, 40, 1, NOW_MS);
    sg_spool_close(sp);
    char path[400];
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", spooldir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db,
                                 "DROP TABLE mark; "
                                 "UPDATE state SET v = 1 WHERE k = 'schema_version'",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(db);

    sp = open_ok(1 << 20, 0, NOW_MS);
    CU_ASSERT(sg_spool_contains(sp, s1));
    CU_ASSERT_EQUAL(sg_spool_stats(sp)->batches, 1);
    static const struct sg_spool_mark m[] = {{"a", 1, 10000, 100}};
    push_marked_n(sp, 2, m, 1);
    CU_ASSERT_EQUAL(count_marks(sp), 1);
    sg_spool_close(sp);

    sqlite3_int64 ver = 0;
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(
        sqlite3_prepare_v2(db, "SELECT v FROM state WHERE k = 'schema_version'", -1, &st, NULL),
        SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    ver = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(ver, 2);
}

/* ---- benchmark (printed, not asserted) -------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Push then ack n batches (or fewer, if 0.25 s of pushing passed: the test
 * must stay fast on a slow disk) and print the median and mean per op. */
static void bench_one(bool fsync_on, size_t body_len, int n)
{
    wipe_spool();
    struct sg_spool_opts o = mkopts(1 << 28, 0, NOW_MS);
    o.fsync = fsync_on;
    struct sg_spool *sp = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_spool_open(&sp, &o), 0);
    uint8_t *body = malloc(body_len);
    double *tp = calloc((size_t)n, sizeof(double));
    double *ta = calloc((size_t)n, sizeof(double));
    uint64_t *seqs = calloc((size_t)n, sizeof(uint64_t));
    fill(body, body_len, 9);
    double start = mono_s();
    int done = 0;
    for (; done < n && mono_s() - start < 0.25; done++) {
        double t0 = mono_s();
        seqs[done] = sg_spool_next_seq(sp);
        CU_ASSERT_EQUAL(sg_spool_push(sp, seqs[done], 0, body, body_len, NOW_MS), 0);
        tp[done] = mono_s() - t0;
    }
    for (int i = 0; i < done; i++) {
        struct sg_spool_batch b;
        double t0 = mono_s();
        CU_ASSERT_EQUAL(sg_spool_peek(sp, 0, &b), 0);
        CU_ASSERT_EQUAL(b.seq, seqs[i]);
        CU_ASSERT_EQUAL(sg_spool_ack(sp, b.seq), 0);
        ta[i] = mono_s() - t0;
        sg_spool_batch_clear(&b);
    }
    double sp_sum = 0, sa_sum = 0;
    for (int i = 0; i < done; i++) {
        sp_sum += tp[i];
        sa_sum += ta[i];
    }
    qsort(tp, (size_t)done, sizeof(double), cmp_double);
    qsort(ta, (size_t)done, sizeof(double), cmp_double);
    printf("\n  bench fsync=%-3s body=%5zu B n=%3d: push p50 %6.0f us mean %6.0f us;"
           " peek+ack p50 %6.0f us mean %6.0f us",
           fsync_on ? "on" : "off", body_len, done, tp[done / 2] * 1e6, sp_sum * 1e6 / done,
           ta[done / 2] * 1e6, sa_sum * 1e6 / done);
    free(body);
    free(tp);
    free(ta);
    free(seqs);
    sg_spool_close(sp);
}

/* push_marked with nmarks marks per batch (4 KiB body), n batches or
 * 0.5 s; every batch moves every mark on (an update, as at run time). */
static void bench_marked(bool fsync_on, size_t nmarks, int n)
{
    wipe_spool();
    struct sg_spool_opts o = mkopts(1 << 28, 0, NOW_MS);
    o.fsync = fsync_on;
    struct sg_spool *sp = NULL;
    CU_ASSERT_EQUAL_FATAL(sg_spool_open(&sp, &o), 0);
    struct sg_spool_mark *m = calloc(nmarks, sizeof(*m));
    char(*ids)[24] = calloc(nmarks, sizeof(*ids));
    uint8_t body[4096];
    double *tp = calloc((size_t)n, sizeof(double));
    fill(body, sizeof(body), 5);
    for (size_t i = 0; i < nmarks; i++) {
        snprintf(ids[i], sizeof(ids[i]), "sensor-%06zu", i * 7919 % 1000003);
        m[i].sensor_id = ids[i];
        m[i].kind = (uint8_t)(1 + i % 9);
        m[i].window_ms = 10000;
    }
    double start = mono_s();
    int done = 0;
    for (; done < n && mono_s() - start < 0.5; done++) {
        for (size_t i = 0; i < nmarks; i++) {
            m[i].closed_before_ms = NOW_MS + 10000 * (uint64_t)done;
        }
        double t0 = mono_s();
        uint64_t seq = sg_spool_next_seq(sp);
        CU_ASSERT_EQUAL(sg_spool_push_marked(sp, seq, 0, body, sizeof(body), NOW_MS, m, nmarks),
                        0);
        tp[done] = mono_s() - t0;
    }
    double sum = 0;
    for (int i = 0; i < done; i++) {
        sum += tp[i];
    }
    qsort(tp, (size_t)done, sizeof(double), cmp_double);
    printf("\n  bench fsync=%-3s push_marked body=4096 B marks=%3zu n=%3d: p50 %7.0f us"
           " mean %7.0f us",
           fsync_on ? "on" : "off", nmarks, done, tp[done / 2] * 1e6, sum * 1e6 / done);
    free(m);
    free(ids);
    free(tp);
    sg_spool_close(sp);
}

static void test_bench(void)
{
    bench_marked(true, 500, 100);
    bench_marked(false, 500, 100);
    bench_marked(true, 0, 100);
    bench_one(true, 4096, 300);
    bench_one(false, 4096, 300);
    bench_one(true, 256, 300);
    bench_one(false, 256, 300);
    printf("\n");
}

/* One suite per test: each gets a fresh temporary directory. */
static const struct sg_suite suites[] = {
    {"order", suite_init, suite_clean,
     SG_TESTS({"push then peek returns batches oldest first", test_push_peek_order})},
    {"ack", suite_init, suite_clean, SG_TESTS({"ack removes and updates totals", test_ack})},
    {"dead", suite_init, suite_clean,
     SG_TESTS({"dead letters keep status, reason and body", test_dead})},
    {"dead_bound", suite_init, suite_clean,
     SG_TESTS({"dead letters are bounded", test_dead_bound})},
    {"seq_seed", suite_init, suite_clean,
     SG_TESTS({"seq >= now_ms*10^6 and strictly increasing", test_seq_clock_seed})},
    {"seq_reopen", suite_init, suite_clean,
     SG_TESTS({"seq increases across reopen after all acked", test_seq_across_reopen})},
    {"seq_dup", suite_init, suite_clean,
     SG_TESTS({"a stored seq cannot be pushed twice", test_push_rejects_duplicate_seq})},
    {"bound_bytes", suite_init, suite_clean,
     SG_TESTS({"max_bytes drops the oldest and counts", test_bound_bytes})},
    {"bound_count", suite_init, suite_clean,
     SG_TESTS({"max_batches drops the oldest and counts", test_bound_count})},
    {"close_mono", suite_init, suite_clean,
     SG_TESTS({"push time is kept in memory", test_close_mono})},
    {"close_note", suite_init, suite_clean,
     SG_TESTS({"a noted window close time becomes close_mono_ms", test_close_note})},
    {"oversize", suite_init, suite_clean,
     SG_TESTS({"a batch over max_bytes is refused", test_oversize_refused})},
    {"reopen", suite_init, suite_clean,
     SG_TESTS({"reopen keeps batches byte-exact", test_reopen_byte_exact})},
    {"corrupt_garbage", suite_init, suite_clean,
     SG_TESTS({"garbage file is quarantined", test_corrupt_garbage})},
    {"corrupt_truncated", suite_init, suite_clean,
     SG_TESTS({"truncated db is quarantined", test_corrupt_truncated})},
    {"corrupt_page", suite_init, suite_clean,
     SG_TESTS({"damaged b-tree page is quarantined", test_corrupt_page})},
    {"version", suite_init, suite_clean,
     SG_TESTS({"unknown schema version is rejected", test_unknown_version})},
    {"dir", suite_init, suite_clean,
     SG_TESTS({"unusable directory gives SG_EIO and errno", test_unusable_dir})},
    {"lock", suite_init, suite_clean,
     SG_TESTS({"a second open of one dir is refused", test_dir_locked})},
    {"marks", suite_init, suite_clean,
     SG_TESTS({"marks: upsert keeps max, load, prune, durable", test_marks_upsert_load_prune})},
    {"marks_atomic", suite_init, suite_clean,
     SG_TESTS({"marks: a failed push stores no mark", test_marks_atomic})},
    {"migrate", suite_init, suite_clean,
     SG_TESTS({"a version 1 spool is migrated to 2", test_migrate_v1})},
    {"bench", suite_init, suite_clean, SG_TESTS({"push+ack cost (printed)", test_bench})},
    SG_SUITE_END,
};

int main(void)
{
    /* Quarantine and version errors are logged by design; keep the test
     * output readable. */
    sg_log_min_level = SG_LOG_ERROR + 1;
    return sg_test_main(suites);
}

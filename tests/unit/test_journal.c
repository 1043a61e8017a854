/*
 * Unit tests for the ingest journal (gateway/journal.c): CRC-32C, round trip
 * across size and age rotation, replay after truncation at every byte
 * offset, a flipped byte at every offset, headers (torn, foreign, unknown
 * version), trim, concurrent appends from two threads while trim runs, the
 * sync thread, and a real ENOSPC on a tiny tmpfs (root only). Ends with a
 * printed (not asserted) append cost. Each suite has its own temp dir.
 * Long file: one suite per journal property, all on the record log and
 * segment helpers at the top (a split would copy them).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


#include "common.h"
#include "journal.h"
#include "log.h"
#include "sg_test.h"

static char tmpdir[256];
static char jdir[300];

static int suite_init(void)
{
    if (sg_test_mkdtemp(tmpdir, sizeof(tmpdir), "test_journal") != 0) {
        return -1;
    }
    /* Not there yet: open must create it (mkdir -p). */
    snprintf(jdir, sizeof(jdir), "%s/a/b/journal", tmpdir);
    return 0;
}

static int suite_clean(void)
{
    /* The disk-full test mounts a tmpfs here; a failed (fatal) assertion
     * may have skipped its umount. */
    char mnt[400];
    snprintf(mnt, sizeof(mnt), "%s/tiny", tmpdir);
    umount2(mnt, MNT_DETACH);
    return sg_test_rm_rf(tmpdir);
}

static void wipe(void)
{
    sg_test_rm_rf(jdir);
}

/* ---- a record log to compare against ---------------------------------- */

struct rec {
    uint64_t arrival_ms;
    uint8_t *topic;
    size_t topic_len;
    uint8_t *payload;
    size_t payload_len;
};

struct reclog {
    struct rec *r;
    size_t n, cap;
};

static void reclog_add(struct reclog *l, uint64_t arrival_ms, const void *t, size_t tl,
                       const void *p, size_t pl)
{
    if (l->n == l->cap) {
        l->cap = l->cap == 0 ? 64 : l->cap * 2;
        l->r = realloc(l->r, l->cap * sizeof(*l->r));
    }
    struct rec *x = &l->r[l->n++];
    x->arrival_ms = arrival_ms;
    x->topic = malloc(tl + 1);
    x->payload = malloc(pl + 1);
    if (tl > 0) {
        memcpy(x->topic, t, tl);
    }
    if (pl > 0) {
        memcpy(x->payload, p, pl);
    }
    x->topic_len = tl;
    x->payload_len = pl;
}

static void reclog_free(struct reclog *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->r[i].topic);
        free(l->r[i].payload);
    }
    free(l->r);
    memset(l, 0, sizeof(*l));
}

static void on_rec(void *ctx, uint64_t arrival_ms, const char *topic, size_t topic_len,
                   const uint8_t *payload, size_t payload_len)
{
    reclog_add(ctx, arrival_ms, topic, topic_len, payload, payload_len);
}

static bool rec_eq(const struct rec *a, const struct rec *b)
{
    return a->arrival_ms == b->arrival_ms && a->topic_len == b->topic_len &&
           a->payload_len == b->payload_len && memcmp(a->topic, b->topic, a->topic_len) == 0 &&
           memcmp(a->payload, b->payload, a->payload_len) == 0;
}

/* True if got[0..n) equals want[0..n) and both have exactly n records. */
static bool logs_eq(const struct reclog *got, const struct reclog *want, size_t n)
{
    if (got->n != n || want->n < n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!rec_eq(&got->r[i], &want->r[i])) {
            return false;
        }
    }
    return true;
}

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

static struct sg_journal *open_ok(uint64_t seg_bytes, uint64_t seg_ms, uint64_t sync_ms)
{
    struct sg_journal *j = NULL;
    struct sg_journal_opts o = {
        .dir = jdir, .segment_bytes = seg_bytes, .segment_ms = seg_ms, .sync_ms = sync_ms};
    int rc = sg_journal_open(&j, &o);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

/* Appends (and records in want) a record with the given sizes. */
static void append_rec(struct sg_journal *j, struct reclog *want, uint64_t arrival_ms,
                       size_t tl, size_t pl, uint32_t seed)
{
    uint8_t *t = malloc(tl + 1), *p = malloc(pl + 1);
    fill(t, tl, seed);
    fill(p, pl, seed + 7777);
    CU_ASSERT_EQUAL(sg_journal_append(j, arrival_ms, (const char *)t, tl, p, pl), 0);
    if (want != NULL) {
        reclog_add(want, arrival_ms, t, tl, p, pl);
    }
    free(t);
    free(p);
}

static struct sg_journal_stats stats_of(struct sg_journal *j)
{
    struct sg_journal_stats s;
    sg_journal_stats(j, &s);
    return s;
}

/* Number of files in jdir whose name starts with prefix and ends with suffix. */
static int count_files(const char *prefix, const char *suffix)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "ls %s 2>/dev/null | grep -c '^%s.*%s$'", jdir, prefix, suffix);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f != NULL) {
        if (fscanf(f, "%d", &n) != 1) {
            n = -1;
        }
        pclose(f);
    }
    return n;
}

static void seg_path(char *buf, size_t cap, uint64_t seq)
{
    snprintf(buf, cap, "%s/journal-%020" PRIu64 ".log", jdir, seq);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return NULL;
    }
    uint8_t *b = malloc((size_t)st.st_size + 1);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        free(b);
        return NULL;
    }
    *len = fread(b, 1, (size_t)st.st_size, f);
    fclose(f);
    return b;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- CRC -------------------------------------------------------------- */

/* Bit at a time, straight from the definition: the independent reference. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1u) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
    }
    return ~crc;
}

static void crc_known_answers(void)
{
    CU_ASSERT_EQUAL(sg_journal_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(sg_journal_crc32c(0, "", 0), 0);
    /* RFC 3720 B.4: 32 bytes of zeros, of 0xff, and 0..31. */
    uint8_t b[32];
    memset(b, 0, sizeof(b));
    CU_ASSERT_EQUAL(sg_journal_crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof(b));
    CU_ASSERT_EQUAL(sg_journal_crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) {
        b[i] = (uint8_t)i;
    }
    CU_ASSERT_EQUAL(sg_journal_crc32c(0, b, 32), 0x46DD794Eu);
    /* Chaining over every split point equals one pass. */
    uint8_t big[1000];
    fill(big, sizeof(big), 3);
    uint32_t whole = sg_journal_crc32c(0, big, sizeof(big));
    for (size_t cut = 0; cut <= sizeof(big); cut += 37) {
        CU_ASSERT_EQUAL(sg_journal_crc32c(sg_journal_crc32c(0, big, cut), big + cut,
                                          sizeof(big) - cut),
                        whole);
    }
    /* Every length 0..300 at every alignment 0..7, chained from a random
     * start value, against the bitwise reference. */
    uint8_t buf[320];
    fill(buf, sizeof(buf), 11);
    int bad = 0;
    for (size_t al = 0; al < 8; al++) {
        for (size_t n = 0; n <= 300; n++) {
            uint32_t start = (uint32_t)(n * 2654435761u + al);
            bad += sg_journal_crc32c(start, buf + al, n) != crc_bitwise(start, buf + al, n);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* Both implementations: the CPU instruction (when this machine has it) and
 * the portable tables. */
static void test_crc(void)
{
    bool hw = sg_journal__crc_use_hw(true);
    crc_known_answers();
    CU_ASSERT_FALSE(sg_journal__crc_use_hw(false));
    crc_known_answers();
    CU_ASSERT_EQUAL(sg_journal__crc_use_hw(true), hw);
    printf(" (CRC instruction %s) ", hw ? "tested" : "not available here");
}

/* ---- round trip ------------------------------------------------------- */

static void test_roundtrip_rotation(void)
{
    wipe();
    struct reclog want = {0}, got = {0};
    /* Size rotation: segments of at most 600 bytes. */
    struct sg_journal *j = open_ok(600, 1000000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT_EQUAL(got.n, 0);
    size_t bytes = 0;
    for (uint32_t i = 0; i < 200; i++) {
        size_t tl = i % 5 == 0 ? 0 : 10 + i % 30;
        size_t pl = i % 7 == 0 ? 0 : (i * 37) % 400;
        append_rec(j, &want, 1000 + i, tl, pl, i);
        bytes += 18 + tl + pl;
    }
    /* A record bigger than a whole segment still goes in (alone). */
    append_rec(j, &want, 5000, 3, 2000, 999);
    bytes += 18 + 3 + 2000;
    /* A topic with NUL bytes is kept byte for byte. */
    {
        static const char t[] = {'a', '\0', 'b'};
        CU_ASSERT_EQUAL(sg_journal_append(j, 5001, t, 3, "x", 1), 0);
        reclog_add(&want, 5001, t, 3, "x", 1);
        bytes += 18 + 3 + 1;
    }
    struct sg_journal_stats s = stats_of(j);
    CU_ASSERT_EQUAL(s.appended, want.n);
    CU_ASSERT_EQUAL(s.bytes, bytes);
    CU_ASSERT_EQUAL(s.errors, 0);
    uint64_t segs = s.segments;
    CU_ASSERT(segs > 50);
    /* Bad arguments. */
    CU_ASSERT_EQUAL(sg_journal_append(j, 1, NULL, 3, "x", 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_journal_append(j, 1, "t", 1, NULL, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_journal_append(j, 1, "t", 70000, "x", 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_journal_append(NULL, 1, "t", 1, "x", 1), SG_EINVAL);
    /* Replay is for start-up only. */
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), SG_EINVAL);
    sg_journal_close(j);

    /* Every segment file is within the bound unless it holds one record. */
    CU_ASSERT_EQUAL(count_files("journal-", ".log"), (int)segs);
    char p[400];
    seg_path(p, sizeof(p), 1);
    CU_ASSERT(file_size(p) > 8 && file_size(p) <= 600);

    j = open_ok(600, 1000000, 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, segs);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    s = stats_of(j);
    CU_ASSERT_EQUAL(s.replayed_records, want.n);
    CU_ASSERT_EQUAL(s.torn_tails, 0);
    /* Appends after a restart go to a new segment after the old ones. */
    append_rec(j, &want, 6000, 4, 4, 1);
    CU_ASSERT_EQUAL(stats_of(j).segments, segs + 1);
    sg_journal_close(j);
    reclog_free(&got);
    j = open_ok(600, 1000000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    sg_journal_close(j);
    reclog_free(&got);
    reclog_free(&want);
}

static void test_age_rotation(void)
{
    wipe();
    struct reclog want = {0}, got = {0};
    struct sg_journal *j = open_ok(1 << 20, 1000, 0);
    /* arrival 0, 300, ..., 5700: a new segment whenever arrival reaches the
     * segment's first arrival + 1000, i.e. firsts at 0, 1200, 2400, 3600,
     * 4800 (each 4 steps of 300 later) => 5 segments. */
    for (uint32_t i = 0; i < 20; i++) {
        append_rec(j, &want, 300u * i, 5, 10, i);
    }
    CU_ASSERT_EQUAL(stats_of(j).segments, 5);
    /* A clock that steps back does not rotate. */
    append_rec(j, &want, 100, 5, 10, 77);
    CU_ASSERT_EQUAL(stats_of(j).segments, 5);
    sg_journal_close(j);
    j = open_ok(1 << 20, 1000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    sg_journal_close(j);
    reclog_free(&got);
    reclog_free(&want);
}

/* Names are zero-padded to 20 digits, so name order is number order even
 * across a digit boundary (segment 9 vs 10). */
static void test_names_sort(void)
{
    wipe();
    struct reclog want = {0}, got = {0};
    struct sg_journal *j = open_ok(40, 1000000, 0); /* one record per segment */
    for (uint32_t i = 0; i < 12; i++) {
        append_rec(j, &want, 100 + i, 2, 10, i);
    }
    sg_journal_close(j);
    char p[400];
    seg_path(p, sizeof(p), 10);
    CU_ASSERT(file_size(p) > 0);
    seg_path(p, sizeof(p), 12);
    CU_ASSERT(file_size(p) > 0);
    j = open_ok(40, 1000000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    sg_journal_close(j);
    reclog_free(&got);
    reclog_free(&want);
}

/* ---- torn tails ------------------------------------------------------- */

/* Writes three records into one fresh segment, returns its bytes and the
 * record end offsets computed from the documented layout. */
static uint8_t *make_segment(struct reclog *want, size_t *len, size_t ends[3])
{
    static const size_t tl[3] = {5, 0, 11};
    static const size_t pl[3] = {7, 20, 0};
    wipe();
    struct sg_journal *j = open_ok(1 << 20, 1000000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, NULL, NULL), 0);
    size_t off = 8;
    for (int i = 0; i < 3; i++) {
        append_rec(j, want, 1000 + (uint64_t)i * 10, tl[i], pl[i], (uint32_t)i + 40);
        off += 18 + tl[i] + pl[i];
        ends[i] = off;
    }
    sg_journal_close(j);
    char p[400];
    seg_path(p, sizeof(p), 1);
    uint8_t *b = read_file(p, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(*len, ends[2]);
    /* The header as documented. */
    CU_ASSERT(memcmp(b, "SGJ1\x01\x00\x00\x00", 8) == 0);
    return b;
}

static void test_truncate_every_offset(void)
{
    struct reclog want = {0};
    size_t len = 0, ends[3];
    uint8_t *seg = make_segment(&want, &len, ends);
    char p[400];

    for (size_t cut = 0; cut <= len; cut++) {
        struct reclog got = {0};
        size_t intact = 0;
        for (int i = 0; i < 3; i++) {
            intact += ends[i] <= cut;
        }
        bool boundary = cut == 8 || cut == ends[0] || cut == ends[1] || cut == ends[2];

        wipe();
        struct sg_journal *j = open_ok(1 << 20, 1000000, 0); /* creates the dir */
        sg_journal_close(j);
        seg_path(p, sizeof(p), 1);
        write_file(p, seg, cut);

        j = open_ok(1 << 20, 1000000, 0);
        CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
        struct sg_journal_stats s = stats_of(j);
        if (!logs_eq(&got, &want, intact) || s.torn_tails != (boundary ? 0u : 1u) ||
            s.replayed_records != intact) {
            CU_FAIL("replay of a truncated segment");
            fprintf(stderr, "\n  cut=%zu got=%zu want=%zu torn=%" PRIu64 "\n", cut, got.n,
                    intact, s.torn_tails);
        }
        /* The tail was cut off (or the empty segment removed). */
        if (intact > 0) {
            CU_ASSERT_EQUAL(file_size(p), (off_t)ends[intact - 1]);
        } else {
            CU_ASSERT_EQUAL(file_size(p), -1);
        }
        /* New records follow the intact ones, and nothing is torn now. */
        CU_ASSERT_EQUAL(sg_journal_append(j, 7777, "new", 3, "after", 5), 0);
        sg_journal_close(j);
        reclog_free(&got);

        j = open_ok(1 << 20, 1000000, 0);
        CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
        CU_ASSERT_EQUAL(stats_of(j).torn_tails, 0);
        CU_ASSERT_EQUAL_FATAL(got.n, intact + 1);
        got.n--;
        CU_ASSERT(logs_eq(&got, &want, intact));
        got.n++;
        const struct rec *last = &got.r[intact];
        CU_ASSERT(last->arrival_ms == 7777 && last->topic_len == 3 && last->payload_len == 5 &&
                  memcmp(last->payload, "after", 5) == 0);
        sg_journal_close(j);
        reclog_free(&got);
    }
    free(seg);
    reclog_free(&want);
}

static void test_flipped_byte(void)
{
    struct reclog want = {0};
    size_t len = 0, ends[3];
    uint8_t *seg = make_segment(&want, &len, ends);
    char p[400];

    /* Every byte of every record (the header has its own test). */
    for (size_t pos = 8; pos < len; pos++) {
        struct reclog got = {0};
        size_t bad = pos < ends[0] ? 0 : pos < ends[1] ? 1 : 2;
        wipe();
        struct sg_journal *j = open_ok(1 << 20, 1000000, 0);
        sg_journal_close(j);
        seg_path(p, sizeof(p), 1);
        seg[pos] ^= 0x5a;
        write_file(p, seg, len);
        seg[pos] ^= 0x5a;

        j = open_ok(1 << 20, 1000000, 0);
        CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
        if (!logs_eq(&got, &want, bad) || stats_of(j).torn_tails != 1) {
            CU_FAIL("a flipped byte must end the segment at its record");
            fprintf(stderr, "\n  pos=%zu got=%zu want=%zu\n", pos, got.n, bad);
        }
        CU_ASSERT_EQUAL(file_size(p), bad == 0 ? -1 : (off_t)ends[bad - 1]);
        sg_journal_close(j);
        reclog_free(&got);
    }
    free(seg);
    reclog_free(&want);
}

/* An absurd length (a huge len in an otherwise short file) is refused
 * without allocating it. */
static void test_absurd_length(void)
{
    wipe();
    struct sg_journal *j = open_ok(1 << 20, 1000000, 0);
    sg_journal_close(j);
    uint8_t b[8 + 18] = {'S', 'G', 'J', '1', 1, 0, 0, 0};
    memset(b + 8, 0xff, 18); /* len = 4 GiB - 1 */
    char p[400];
    seg_path(p, sizeof(p), 3);
    write_file(p, b, sizeof(b));
    j = open_ok(1 << 20, 1000000, 0);
    struct reclog got = {0};
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT_EQUAL(got.n, 0);
    CU_ASSERT_EQUAL(stats_of(j).torn_tails, 1);
    CU_ASSERT_EQUAL(stats_of(j).segments, 0);
    /* The next segment number is above the one found. */
    CU_ASSERT_EQUAL(sg_journal_append(j, 1, "t", 1, "p", 1), 0);
    sg_journal_close(j);
    seg_path(p, sizeof(p), 4);
    CU_ASSERT(file_size(p) > 8);
}

/* ---- headers ---------------------------------------------------------- */

static void test_headers(void)
{
    char p[400], p2[400];
    struct sg_journal_opts o = {.dir = jdir, .segment_bytes = 0, .segment_ms = 0, .sync_ms = 0};
    struct sg_journal *j = NULL;

    /* Unknown version: refused, file untouched. */
    wipe();
    j = open_ok(0, 0, 0);
    sg_journal_close(j);
    uint8_t v2[8 + 4] = {'S', 'G', 'J', '1', 2, 0, 0, 0, 1, 2, 3, 4};
    seg_path(p, sizeof(p), 5);
    write_file(p, v2, sizeof(v2));
    j = (struct sg_journal *)&o; /* must be reset to NULL */
    CU_ASSERT_EQUAL(sg_journal_open(&j, &o), SG_EVERSION);
    CU_ASSERT_PTR_NULL(j);
    CU_ASSERT_EQUAL(file_size(p), (off_t)sizeof(v2));

    /* Torn header (a prefix of ours, or zeros): deleted. Foreign magic:
     * moved aside. A good segment next to them still replays. */
    wipe();
    struct reclog want = {0}, got = {0};
    j = open_ok(0, 0, 0);
    append_rec(j, &want, 10, 3, 3, 1);
    sg_journal_close(j);
    seg_path(p, sizeof(p), 2);
    write_file(p, "SGJ", 3);
    seg_path(p, sizeof(p), 3);
    write_file(p, "\0\0\0\0\0\0\0\0\0\0", 10);
    seg_path(p2, sizeof(p2), 4);
    write_file(p2, "GIF89a-not-a-journal", 20);
    j = open_ok(0, 0, 0);
    struct sg_journal_stats s = stats_of(j);
    CU_ASSERT_EQUAL(s.torn_tails, 2);
    CU_ASSERT_EQUAL(s.quarantined, 1);
    CU_ASSERT_EQUAL(s.segments, 1);
    CU_ASSERT_EQUAL(file_size(p), -1);
    CU_ASSERT_EQUAL(file_size(p2), -1);
    strcat(p2, ".corrupt");
    CU_ASSERT_EQUAL(file_size(p2), 20);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, 1));
    /* New segments are numbered above every file seen, the foreign one too. */
    append_rec(j, NULL, 20, 1, 1, 2);
    sg_journal_close(j);
    seg_path(p, sizeof(p), 5);
    CU_ASSERT(file_size(p) > 8);
    reclog_free(&got);
    reclog_free(&want);

    /* Other names in the directory are ignored. */
    snprintf(p, sizeof(p), "%s/journal-1.log", jdir);
    write_file(p, "x", 1);
    snprintf(p, sizeof(p), "%s/journal-0000000000000000000x.log", jdir);
    write_file(p, "x", 1);
    j = open_ok(0, 0, 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, 2);
    CU_ASSERT_EQUAL(stats_of(j).quarantined, 0);
    sg_journal_close(j);
}

static void test_open_errors(void)
{
    char file[400], sub[450];
    struct sg_journal *j = NULL;
    struct sg_journal_opts o = {.dir = ""};
    CU_ASSERT_EQUAL(sg_journal_open(&j, &o), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_journal_open(&j, NULL), SG_EINVAL);
    snprintf(file, sizeof(file), "%s/plainfile", tmpdir);
    write_file(file, "x", 1);
    snprintf(sub, sizeof(sub), "%s/sub", file);
    o.dir = sub;
    errno = 0;
    CU_ASSERT_EQUAL(sg_journal_open(&j, &o), SG_EIO);
    CU_ASSERT_EQUAL(errno, ENOTDIR);
    CU_ASSERT_PTR_NULL(j);

    /* A second open of the same directory is refused while the first holds it. */
    wipe();
    struct sg_journal *a = open_ok(0, 0, 0);
    o.dir = jdir;
    errno = 0;
    CU_ASSERT_EQUAL(sg_journal_open(&j, &o), SG_EIO);
    CU_ASSERT_EQUAL(errno, EBUSY);
    sg_journal_close(a);
    a = open_ok(0, 0, 0);
    sg_journal_close(a);
    sg_journal_close(NULL);
    struct sg_journal_stats s;
    sg_journal_stats(NULL, &s);
    CU_ASSERT_EQUAL(s.appended, 0);
}

/* ---- trim ------------------------------------------------------------- */

static void test_trim(void)
{
    wipe();
    struct reclog got = {0};
    /* Age rotation every 1000 ms: segments [0..999], [1000..1999], ... */
    struct sg_journal *j = open_ok(1 << 20, 1000, 0);
    for (uint64_t t = 0; t < 5000; t += 100) {
        append_rec(j, NULL, t, 4, 8, (uint32_t)t);
    }
    CU_ASSERT_EQUAL(stats_of(j).segments, 5);
    /* Newest arrivals: 900, 1900, 2900, 3900, 4900 (current). */
    CU_ASSERT_EQUAL(sg_journal_trim(j, 900), 0); /* 900 is not < 900 */
    CU_ASSERT_EQUAL(stats_of(j).segments, 5);
    CU_ASSERT_EQUAL(sg_journal_trim(j, 2000), 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, 3);
    CU_ASSERT_EQUAL(stats_of(j).trimmed_segments, 2);
    CU_ASSERT_EQUAL(count_files("journal-", ".log"), 3);
    char p[400];
    seg_path(p, sizeof(p), 1);
    CU_ASSERT_EQUAL(file_size(p), -1);
    seg_path(p, sizeof(p), 3);
    CU_ASSERT(file_size(p) > 8);
    /* The current segment (newest 4900) stays even if the horizon passes
     * the closed ones. */
    CU_ASSERT_EQUAL(sg_journal_trim(j, 4900), 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, 1);
    /* ...and goes when everything in it is older too; the next append
     * starts a fresh segment. */
    CU_ASSERT_EQUAL(sg_journal_trim(j, 4901), 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, 0);
    CU_ASSERT_EQUAL(stats_of(j).trimmed_segments, 5);
    append_rec(j, NULL, 9000, 4, 8, 1);
    CU_ASSERT_EQUAL(stats_of(j).segments, 1);
    for (uint64_t t = 9100; t < 12000; t += 100) {
        append_rec(j, NULL, t, 4, 8, (uint32_t)t);
    }
    sg_journal_close(j);

    /* Segments of unknown age (no replay yet) are never trimmed; after a
     * replay their newest arrival is known again. */
    j = open_ok(1 << 20, 1000, 0);
    uint64_t before = stats_of(j).segments;
    CU_ASSERT_EQUAL(before, 3);
    CU_ASSERT_EQUAL(sg_journal_trim(j, UINT64_MAX), 0);
    CU_ASSERT_EQUAL(stats_of(j).segments, before);
    sg_journal_close(j);
    j = open_ok(1 << 20, 1000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT_EQUAL(got.n, 30);
    CU_ASSERT_EQUAL(sg_journal_trim(j, 11000), 0); /* newest 9900, 10900 go; 11900 stays */
    CU_ASSERT_EQUAL(stats_of(j).segments, 1);
    sg_journal_close(j);
    reclog_free(&got);
}

/* ---- concurrency ------------------------------------------------------ */

#define PER_THREAD 20000u
#define TRIM_BELOW 10000u

struct writer {
    struct sg_journal *j;
    uint32_t id;
    uint64_t failures;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char topic[32];
    uint32_t body[8];
    int tl = snprintf(topic, sizeof(topic), "sensors/t/w%u", w->id);
    for (uint32_t i = 0; i < PER_THREAD; i++) {
        body[0] = w->id;
        body[1] = i;
        for (int k = 2; k < 8; k++) {
            body[k] = i * 31u + (uint32_t)k;
        }
        /* Arrival i: both threads walk the same clock range. */
        if (sg_journal_append(w->j, i, topic, (size_t)tl, body, sizeof(body)) != 0) {
            w->failures++;
        }
    }
    return NULL;
}

struct seen {
    uint32_t next[2];       /* next expected i per writer (order check) */
    uint8_t *have[2];       /* have[w][i] = times seen */
    uint64_t bad;
};

static void on_seen(void *ctx, uint64_t arrival_ms, const char *topic, size_t topic_len,
                    const uint8_t *payload, size_t payload_len)
{
    struct seen *s = ctx;
    uint32_t body[8];
    if (payload_len != sizeof(body) || topic_len < 2) {
        s->bad++;
        return;
    }
    memcpy(body, payload, sizeof(body));
    uint32_t w = body[0], i = body[1];
    if (w > 1 || i >= PER_THREAD || arrival_ms != i ||
        (uint32_t)(topic[topic_len - 1] - '0') != w) {
        s->bad++;
        return;
    }
    for (int k = 2; k < 8; k++) {
        if (body[k] != i * 31u + (uint32_t)k) {
            s->bad++;
            return;
        }
    }
    if (i < s->next[w]) {
        s->bad++; /* out of order or repeated */
    }
    s->next[w] = i + 1;
    s->have[w][i]++;
}

static void test_concurrent_append_trim(void)
{
    wipe();
    /* Small segments so rotation happens constantly; a 1 ms sync thread so
     * fdatasync runs concurrently too. */
    struct sg_journal *j = open_ok(8192, 1000000, 1);
    struct writer w[2] = {{.j = j, .id = 0}, {.j = j, .id = 1}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[k], NULL, writer_main, &w[k]), 0);
    }
    uint64_t trims = 0;
    for (;;) {
        CU_ASSERT_EQUAL(sg_journal_trim(j, TRIM_BELOW), 0);
        trims++;
        struct sg_journal_stats s = stats_of(j);
        if (s.appended + s.errors >= 2 * PER_THREAD) {
            break;
        }
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k], NULL);
    }
    CU_ASSERT_EQUAL(sg_journal_trim(j, TRIM_BELOW), 0);
    struct sg_journal_stats s = stats_of(j);
    CU_ASSERT_EQUAL(w[0].failures + w[1].failures, 0);
    CU_ASSERT_EQUAL(s.appended, 2 * PER_THREAD);
    CU_ASSERT_EQUAL(s.errors, 0);
    CU_ASSERT(s.trimmed_segments > 0);
    sg_journal_close(j);

    struct seen seen = {{0, 0}, {calloc(PER_THREAD, 1), calloc(PER_THREAD, 1)}, 0};
    j = open_ok(8192, 1000000, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_seen, &seen), 0);
    CU_ASSERT_EQUAL(stats_of(j).torn_tails, 0);
    CU_ASSERT_EQUAL(seen.bad, 0);
    /* Nothing at or above the trim horizon is missing, nothing is twice. */
    uint64_t missing = 0, dup = 0, present_old = 0;
    for (int k = 0; k < 2; k++) {
        for (uint32_t i = 0; i < PER_THREAD; i++) {
            missing += i >= TRIM_BELOW && seen.have[k][i] == 0;
            dup += seen.have[k][i] > 1;
            present_old += i < TRIM_BELOW && seen.have[k][i] == 1;
        }
    }
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(dup, 0);
    printf("\n  trims=%" PRIu64 " trimmed_segments=%" PRIu64 " old records kept=%" PRIu64 "/%u ",
           trims, s.trimmed_segments, present_old, 2 * TRIM_BELOW);
    sg_journal_close(j);
    free(seen.have[0]);
    free(seen.have[1]);
}

/* ---- sync thread ------------------------------------------------------ */

static void test_sync_thread(void)
{
    wipe();
    struct reclog want = {0}, got = {0};
    struct sg_journal *j = open_ok(4096, 1000000, 1);
    for (uint32_t i = 0; i < 300; i++) {
        append_rec(j, &want, i, 8, 50, i);
    }
    /* Wait (bounded) for the 1 ms sync thread to run a round. */
    struct timespec start, now, pause = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (stats_of(j).syncs > 0) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 3) {
            break;
        }
        nanosleep(&pause, NULL);
    }
    CU_ASSERT(stats_of(j).syncs > 0);
    CU_ASSERT_EQUAL(stats_of(j).errors, 0);
    sg_journal_close(j);
    j = open_ok(4096, 1000000, 1000);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    sg_journal_close(j);
    reclog_free(&got);
    reclog_free(&want);
}

/* ---- kill -9 while appending ------------------------------------------ */

/* Record i of the crash tests: mostly small (stored through the mapping),
 * every 97th larger than the mapping takes (pwritev), some ticks (empty),
 * and some whose len is a multiple of 256, so the record starts with a zero
 * byte that is not the zero tail. */
static void crash_sizes(int i, size_t *tl, size_t *pl)
{
    if (i % 97 == 5) {
        *tl = 20;
        *pl = 3000;
    } else if (i % 50 == 7) {
        *tl = 0;
        *pl = 0;
    } else if (i % 10 == 3) {
        *tl = 100;
        *pl = 146 + (size_t)(i % 3) * 256; /* len = 256, 512 or 768 */
    } else {
        *tl = 10 + (size_t)(i % 40);
        *pl = 50 + (size_t)(i * 37) % 650;
    }
}

static void crash_record(int i, uint8_t *t, uint8_t *p, size_t *tl, size_t *pl)
{
    crash_sizes(i, tl, pl);
    fill(t, *tl, (uint32_t)i);
    fill(p, *pl, (uint32_t)i + 7777);
}

/* A child appends n records and dies by SIGKILL without closing the
 * journal, so its last segment keeps the zeros written ahead of the
 * appends. Returns the records it appended, in want. */
static void crash_child(int n, uint64_t seg_bytes, uint64_t sync_ms, struct reclog *want)
{
    uint8_t t[200], p[4000];
    size_t tl, pl;
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct sg_journal *j = NULL;
        struct sg_journal_opts o = {
            .dir = jdir, .segment_bytes = seg_bytes, .segment_ms = 1000000, .sync_ms = sync_ms};
        if (sg_journal_open(&j, &o) != 0) {
            _exit(3);
        }
        for (int i = 0; i < n; i++) {
            crash_record(i, t, p, &tl, &pl);
            if (sg_journal_append(j, (uint64_t)i + 1, (const char *)t, tl, p, pl) != 0) {
                _exit(4);
            }
        }
        kill(getpid(), SIGKILL);
        _exit(5);
    }
    int st = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_FATAL(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    for (int i = 0; i < n; i++) {
        crash_record(i, t, p, &tl, &pl);
        reclog_add(want, (uint64_t)i + 1, t, tl, p, pl);
    }
}

/* The newest segment file (highest number) and its size. */
static uint64_t last_seg(char *path, size_t cap)
{
    uint64_t seq = 0;
    for (uint64_t s = 1; s < 1000; s++) {
        seg_path(path, cap, s);
        if (file_size(path) >= 0) {
            seq = s;
        }
    }
    seg_path(path, cap, seq);
    return seq;
}

static void test_kill9_zero_tail(void)
{
    static const struct {
        uint64_t seg_bytes;
        uint64_t sync_ms;
    } cases[] = {{8u << 20, 0}, {200000, 0}, {200000, 5}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (int damage = 0; damage < 2; damage++) {
            struct reclog want = {0}, got = {0};
            char p[400];
            wipe();
            crash_child(3000, cases[c].seg_bytes, cases[c].sync_ms, &want);
            uint64_t seq = last_seg(p, sizeof(p));
            CU_ASSERT_FATAL(seq > 0);
            off_t before = file_size(p);
            /* The zeros written ahead are there (the path under test). */
            CU_ASSERT(before > 8 && before % 4096 == 0);
            if (damage) {
                /* Something that is not zero after the last record: torn. */
                int fd = open(p, O_WRONLY);
                CU_ASSERT_FATAL(fd >= 0);
                CU_ASSERT_EQUAL(pwrite(fd, "\x01", 1, before - 1), 1);
                close(fd);
            }
            struct sg_journal *j = open_ok(cases[c].seg_bytes, 1000000, 0);
            CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
            struct sg_journal_stats s = stats_of(j);
            if (!logs_eq(&got, &want, want.n) || s.torn_tails != (uint64_t)damage) {
                CU_FAIL("kill -9: every appended record replays, zeros are a clean end");
                fprintf(stderr, "\n  case=%zu damage=%d got=%zu want=%zu torn=%" PRIu64 "\n", c,
                        damage, got.n, want.n, s.torn_tails);
            }
            /* The zeros were cut off: the file ends at its last record. */
            off_t after = file_size(p);
            CU_ASSERT(after > 8 && after < before);
            sg_journal_close(j);
            reclog_free(&got);
            /* A second start sees the same records and nothing torn. */
            j = open_ok(cases[c].seg_bytes, 1000000, 0);
            CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
            CU_ASSERT(logs_eq(&got, &want, want.n));
            CU_ASSERT_EQUAL(stats_of(j).torn_tails, 0);
            CU_ASSERT_EQUAL(file_size(p), after);
            sg_journal_close(j);
            reclog_free(&got);
            reclog_free(&want);
        }
    }
}

/* A clean close leaves no zeros: every segment ends at its last record,
 * with records stored through the mapping and through pwritev. */
static void test_close_cuts_zeros(void)
{
    uint8_t t[200], pl_buf[4000];
    size_t tl, pl;
    wipe();
    struct sg_journal *j = open_ok(8u << 20, 1000000, 0);
    uint64_t end = 8;
    for (int i = 0; i < 1000; i++) {
        crash_record(i, t, pl_buf, &tl, &pl);
        CU_ASSERT_EQUAL(sg_journal_append(j, (uint64_t)i + 1, (const char *)t, tl, pl_buf, pl), 0);
        end += 18 + tl + pl;
    }
    sg_journal_close(j);
    char p[400];
    seg_path(p, sizeof(p), 1);
    CU_ASSERT_EQUAL(file_size(p), (off_t)end);
}

/* ---- disk full -------------------------------------------------------- */

static void test_enospc(void)
{
    char mnt[400];
    snprintf(mnt, sizeof(mnt), "%s/tiny", tmpdir);
    mkdir(mnt, 0700);
    if (geteuid() != 0 || mount("none", mnt, "tmpfs", 0, "size=64k") != 0) {
        printf("\n  SKIPPED: needs root and a tmpfs mount (%s) ", strerror(errno));
        rmdir(mnt);
        return;
    }
    struct sg_journal *j = NULL;
    /* 10000-byte segments end mid-page, so the disk fills in the middle of
     * a record (a short write), not only at a segment's header. */
    struct sg_journal_opts o = {.dir = mnt, .segment_bytes = 10000, .segment_ms = 1000000,
                                .sync_ms = 1};
    CU_ASSERT_EQUAL_FATAL(sg_journal_open(&j, &o), 0);
    struct reclog want = {0}, got = {0};
    uint8_t payload[700];
    int ok = 0, failed = 0;
    uint64_t t = 0;
    /* Fill the disk: every failure is SG_EIO, counted, and leaves no part of
     * its record behind. */
    for (int i = 0; i < 400; i++, t++) {
        fill(payload, sizeof(payload), (uint32_t)i);
        int rc = sg_journal_append(j, t, "x/y", 3, payload, sizeof(payload));
        if (rc == 0) {
            reclog_add(&want, t, "x/y", 3, payload, sizeof(payload));
            ok++;
        } else {
            CU_ASSERT_EQUAL(rc, SG_EIO);
            failed++;
        }
    }
    CU_ASSERT(ok > 10);
    CU_ASSERT(failed > 100);
    CU_ASSERT_EQUAL(stats_of(j).errors, (uint64_t)failed);
    /* A restart on the full disk replays exactly the acknowledged records:
     * no failed write left a fragment behind. */
    sg_journal_close(j);
    CU_ASSERT_EQUAL_FATAL(sg_journal_open(&j, &o), 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT_EQUAL(stats_of(j).torn_tails, 0);
    CU_ASSERT(logs_eq(&got, &want, want.n));
    reclog_free(&got);
    /* Space comes back (everything older than the last acknowledged record
     * trimmed): appends work again, without a restart. */
    uint64_t last_ok = want.r[want.n - 1].arrival_ms;
    CU_ASSERT_EQUAL(sg_journal_trim(j, last_ok), 0);
    CU_ASSERT(stats_of(j).trimmed_segments > 0);
    int after = 0;
    for (int i = 0; i < 5; i++, t++) {
        fill(payload, sizeof(payload), (uint32_t)i + 1000);
        if (sg_journal_append(j, t, "x/y", 3, payload, sizeof(payload)) == 0) {
            reclog_add(&want, t, "x/y", 3, payload, sizeof(payload));
            after++;
        }
    }
    CU_ASSERT_EQUAL(after, 5);
    sg_journal_close(j);

    /* Replay: no torn tail; what replays is an ordered subsequence of the
     * acknowledged appends (older ones may have been trimmed) and ends with
     * the last one before the trim horizon and the five after it. */
    CU_ASSERT_EQUAL_FATAL(sg_journal_open(&j, &o), 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, on_rec, &got), 0);
    CU_ASSERT_EQUAL(stats_of(j).torn_tails, 0);
    size_t wi = 0, matched = 0;
    for (size_t gi = 0; gi < got.n; gi++) {
        while (wi < want.n && !rec_eq(&got.r[gi], &want.r[wi])) {
            wi++;
        }
        matched += wi < want.n;
        wi++;
    }
    CU_ASSERT_EQUAL(matched, got.n);
    CU_ASSERT_FATAL(got.n >= 6);
    for (size_t k = 1; k <= 6; k++) {
        CU_ASSERT(rec_eq(&got.r[got.n - k], &want.r[want.n - k]));
    }
    sg_journal_close(j);
    reclog_free(&got);
    reclog_free(&want);
    CU_ASSERT_EQUAL(umount(mnt), 0);
    rmdir(mnt);
}

/* ---- cost (printed, not asserted) ------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_one(uint64_t sync_ms, size_t payload_len, int n)
{
    wipe();
    struct sg_journal *j = open_ok(0, 0, sync_ms);
    uint8_t *payload = malloc(payload_len);
    fill(payload, payload_len, 1);
    static const char topic[] = "sensors/city/jinshui/dev-000123";
    double t0 = mono_s();
    int done = 0;
    for (; done < n; done++) {
        if (sg_journal_append(j, (uint64_t)done, topic, sizeof(topic) - 1, payload,
                              payload_len) != 0) {
            break;
        }
        if ((done & 1023) == 0 && mono_s() - t0 > 0.5) {
            done++;
            break;
        }
    }
    double dt = mono_s() - t0;
    sg_journal_close(j);
    double t1 = mono_s();
    j = open_ok(0, 0, 0);
    CU_ASSERT_EQUAL(sg_journal_replay(j, NULL, NULL), 0);
    double dr = mono_s() - t1;
    CU_ASSERT_EQUAL(stats_of(j).replayed_records, (uint64_t)done);
    sg_journal_close(j);
    printf("\n  bench sync_ms=%-4" PRIu64 " payload=%5zu B n=%6d: append %6.0f ns/record"
           " (%5.1f MB/s); replay %5.0f ns/record",
           sync_ms, payload_len, done, dt * 1e9 / done,
           (double)done * (double)(payload_len + 49) / dt / 1e6, dr * 1e9 / done);
    free(payload);
}

static void test_bench(void)
{
    bench_one(0, 200, 100000);
    bench_one(1000, 200, 100000);
    bench_one(1000, 4096, 10000);
    bench_one(10, 200, 100000);
    printf("\n");
}

/* One suite per test: each gets a fresh temporary directory. */
static const struct sg_suite suites[] = {
    {"crc", suite_init, suite_clean, SG_TESTS({"CRC-32C known answers and chaining", test_crc})},
    {"roundtrip", suite_init, suite_clean,
     SG_TESTS({"append/replay round trip across size rotation", test_roundtrip_rotation})},
    {"age", suite_init, suite_clean,
     SG_TESTS({"segments rotate by arrival age", test_age_rotation})},
    {"names", suite_init, suite_clean,
     SG_TESTS({"zero-padded names replay in number order", test_names_sort})},
    {"truncate", suite_init, suite_clean,
     SG_TESTS({"truncation at every byte offset", test_truncate_every_offset})},
    {"flip", suite_init, suite_clean,
     SG_TESTS({"a flipped byte ends the segment at its record", test_flipped_byte})},
    {"absurd", suite_init, suite_clean,
     SG_TESTS({"an absurd length is a torn tail, not an allocation", test_absurd_length})},
    {"headers", suite_init, suite_clean,
     SG_TESTS({"torn, foreign and unknown-version headers", test_headers})},
    {"open", suite_init, suite_clean,
     SG_TESTS({"bad dirs and the directory lock", test_open_errors})},
    {"trim", suite_init, suite_clean,
     SG_TESTS({"trim deletes only old closed segments", test_trim})},
    {"concurrent", suite_init, suite_clean,
     SG_TESTS({"2 appending threads while trim runs lose nothing", test_concurrent_append_trim})},
    {"sync", suite_init, suite_clean,
     SG_TESTS({"the sync thread runs and data replays", test_sync_thread})},
    {"enospc", suite_init, suite_clean,
     SG_TESTS({"disk full: counted, clean, recovers", test_enospc})},
    {"kill9", suite_init, suite_clean,
     SG_TESTS({"kill -9 mid-segment: all records, zeros are a clean end", test_kill9_zero_tail})},
    {"closecut", suite_init, suite_clean,
     SG_TESTS({"close cuts the zeros written ahead", test_close_cuts_zeros})},
    {"bench", suite_init, suite_clean, SG_TESTS({"append cost (printed)", test_bench})},
    SG_SUITE_END,
};

int main(void)
{
    /* Torn tails and refused versions are logged by design; keep the
     * output readable. */
    sg_log_min_level = SG_LOG_ERROR + 1;
    return sg_test_main(suites);
}

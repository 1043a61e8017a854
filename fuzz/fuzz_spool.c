/*
 * fuzz_spool: arbitrary bytes as <spool.dir>/spool.db, then everything the
 * gateway does with an existing spool at start and while running:
 * sg_spool_open (quick_check, schema version check or v1 -> v2 migration,
 * quarantine of a corrupt file), sg_spool_load_marks, sg_spool_peek over
 * the stored batches, one push with a mark, ack, dead letter,
 * prune_marks, close. fsync on or off comes from a hash of the input. A
 * spool that opens must hand back batches with sane fields; nothing may
 * crash, hang or leak.
 */
#include "fuzz.h"

#include "common.h"
#include "spool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FUZZ_NOW_MS UINT64_C(1764400060000)

static void on_mark(void *ctx, const struct sg_spool_mark *m)
{
    size_t *n = ctx;
    SG_FUZZ_CHECK(m->sensor_id != NULL);
    SG_FUZZ_CHECK(strlen(m->sensor_id) < 1u << 20);
    (*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[600], db[700];
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "%s/spool", sg_fuzz_tmpdir());
        snprintf(db, sizeof db, "%s/spool.db", dir);
    }
    sg_fuzz_empty_dir(dir);
    mkdir(dir, 0700);
    sg_fuzz_write_file(db, data, size);

    uint32_t h = 0;
    for (size_t i = 0; i < size && i < 64; i++) {
        h = h * 31u + data[i];
    }
    struct sg_spool_opts o = {
        .dir = dir,
        .max_bytes = 1u << 20,
        .max_batches = 64,
        .fsync = (h & 1) != 0,
        .now_ms = FUZZ_NOW_MS,
    };
    struct sg_spool *sp = NULL;
    int rc = sg_spool_open(&sp, &o);
    if (rc != 0) {
        SG_FUZZ_CHECK(sp == NULL);
        SG_FUZZ_CHECK(rc == SG_EIO || rc == SG_EVERSION || rc == SG_ECORRUPT);
        return 0;
    }
    size_t nmarks = 0;
    (void)sg_spool_load_marks(sp, on_mark, &nmarks);

    const struct sg_spool_stats *st = sg_spool_stats(sp);
    uint64_t after = 0, last = 0;
    size_t seen = 0;
    struct sg_spool_batch b;
    while (seen < 256 && sg_spool_peek(sp, after, &b) == 0) {
        SG_FUZZ_CHECK(b.seq > after);
        SG_FUZZ_CHECK(b.len == 0 || b.body != NULL);
        after = b.seq;
        last = b.seq;
        sg_spool_batch_clear(&b);
        seen++;
    }
    if (seen > 0 && (h & 2)) {
        (void)sg_spool_ack(sp, last);
    }
    uint64_t seq = sg_spool_next_seq(sp);
    SG_FUZZ_CHECK(seq > last);
    static const uint8_t body[] = "{\"rollups\":[]}";
    struct sg_spool_mark mk = {.sensor_id = "fz-1", .kind = 1, .window_ms = 10000,
                               .closed_before_ms = FUZZ_NOW_MS};
    rc = sg_spool_push_marked(sp, seq, 0, body, sizeof body - 1, FUZZ_NOW_MS, &mk, 1);
    if (rc == 0) {
        SG_FUZZ_CHECK(sg_spool_contains(sp, seq));
        if (h & 4) {
            (void)sg_spool_dead(sp, seq, 400, "bad request \xff\xfe");
        } else {
            (void)sg_spool_ack(sp, seq);
        }
    }
    (void)sg_spool_prune_marks(sp, FUZZ_NOW_MS - 1);
    (void)st->batches;
    sg_spool_close(sp);
    return 0;
}

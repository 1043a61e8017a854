/*
 * fuzz_journal: arbitrary bytes as one ingest journal segment
 * (<dir>/journal-00000000000000000001.log), then what the gateway does at
 * start: sg_journal_open (header check, quarantine of foreign files),
 * sg_journal_replay (every intact record handed back, a torn or corrupt
 * tail truncated), one append and a trim, close. Each replayed record must
 * lie inside the limits the format promises, and replaying the truncated
 * result again must give the same records (idempotent recovery).
 */
#include "fuzz.h"

#include "common.h"
#include "journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct seen {
    size_t n;
    uint64_t bytes;
    uint32_t crc;
};

static void on_record(void *ctx, uint64_t arrival_ms, const char *topic, size_t topic_len,
                      const uint8_t *payload, size_t payload_len)
{
    struct seen *s = ctx;
    SG_FUZZ_CHECK(topic_len <= 65535);
    SG_FUZZ_CHECK(payload_len <= SG_JOURNAL_MAX_PAYLOAD);
    SG_FUZZ_CHECK(topic_len == 0 || topic != NULL);
    SG_FUZZ_CHECK(payload_len == 0 || payload != NULL);
    s->n++;
    s->bytes += topic_len + payload_len;
    /* Touch every byte (ASan checks the buffers are really that long). */
    s->crc = sg_journal_crc32c(s->crc, &arrival_ms, sizeof arrival_ms);
    s->crc = sg_journal_crc32c(s->crc, topic, topic_len);
    s->crc = sg_journal_crc32c(s->crc, payload, payload_len);
}

static int replay_once(const char *dir, struct seen *s, int append)
{
    struct sg_journal_opts o = {.dir = dir, .segment_bytes = 1u << 20, .segment_ms = 10000,
                                .sync_ms = 0};
    struct sg_journal *j = NULL;
    int rc = sg_journal_open(&j, &o);
    if (rc != 0) {
        SG_FUZZ_CHECK(j == NULL);
        SG_FUZZ_CHECK(rc == SG_EIO || rc == SG_EVERSION || rc == SG_EINVAL);
        return rc;
    }
    rc = sg_journal_replay(j, on_record, s);
    if (rc == 0 && append) {
        static const uint8_t p[] = {0x0a, 0x03, 'd', 'e', 'v'};
        SG_FUZZ_CHECK(sg_journal_append(j, UINT64_C(1764400060000), "sensors/a/b/dev", 15, p,
                                        sizeof p) == 0);
        (void)sg_journal_trim(j, 1);
    }
    sg_journal_close(j);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[600], seg[700];
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "%s/journal", sg_fuzz_tmpdir());
        snprintf(seg, sizeof seg, "%s/journal-00000000000000000001.log", dir);
    }
    sg_fuzz_empty_dir(dir);
    mkdir(dir, 0700);
    sg_fuzz_write_file(seg, data, size);

    struct seen a = {0}, b = {0};
    int rc1 = replay_once(dir, &a, 0);
    /* Recovery is idempotent: a second start sees exactly the same
     * records (the first one only cut damaged tails). */
    int rc2 = replay_once(dir, &b, 1);
    if (rc1 == 0 && rc2 == 0) {
        SG_FUZZ_CHECK(a.n == b.n && a.bytes == b.bytes && a.crc == b.crc);
    }
    return 0;
}

/*
 * seedgen: writes the generated part of the fuzz seed corpora into OUTDIR:
 *   decode/   payloads of the simulated fleet (sg_fleet, the simulator's own
 *             generator, with every fault on: duplicates, invalid readings,
 *             malformed payloads), at the clock fuzz_decode.c uses;
 *   journal/  real journal segments written by sg_journal_append;
 *   spool/    real spool.db files with batches, marks and a dead letter;
 *   backoff/  argument tuples for fuzz_backoff.c.
 * (fuzz/run adds tests/data/payloads and the YAML fixtures.) Deterministic.
 * Usage: seedgen OUTDIR
 */
#include "encode.h"
#include "fleet.h"
#include "journal.h"
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define START_MS UINT64_C(1764400000000)

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len) {
        fprintf(stderr, "seedgen: cannot write %s: %s\n", path, strerror(errno));
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb");
    if (f == NULL) {
        fprintf(stderr, "seedgen: cannot read %s: %s\n", from, strerror(errno));
        return -1;
    }
    static unsigned char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return write_file(to, buf, n);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            char p[8192];
            int n = snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (n > 0 && (size_t)n < sizeof p) {
                unlink(p);
            }
        }
    }
    closedir(d);
    rmdir(dir);
}

static struct sg_fleet *fleet(uint32_t sensors, uint64_t seed, double faults)
{
    struct sg_fleet_opts o;
    sg_fleet_opts_default(&o);
    o.sensors = sensors;
    o.duration_ms = 60000;
    o.start_ms = START_MS;
    o.seed = seed;
    o.readings_per_batch = 5;
    o.dup_frac = faults;
    o.invalid_frac = faults;
    o.ooo_frac = faults;
    o.malformed_frac = faults;
    struct sg_fleet *f = NULL;
    if (sg_fleet_new(&f, &o) != 0) {
        fprintf(stderr, "seedgen: sg_fleet_new failed\n");
        exit(1);
    }
    return f;
}

static int gen_decode(const char *out)
{
    struct sg_fleet *f = fleet(20, 7, 0.1);
    struct sg_fleet_msg m;
    int i = 0;
    while (i < 120 && sg_fleet_next(f, &m) == 1) {
        /* Every malformed one, and a spread of the good ones. */
        if (m.malformed || i % 3 == 0) {
            char p[8192];
            snprintf(p, sizeof p, "%s/fleet-%03d%s.bin", out, i, m.malformed ? "-malformed" : "");
            if (write_file(p, m.payload, m.len) != 0) {
                return -1;
            }
        }
        i++;
    }
    sg_fleet_free(f);
    return 0;
}

static int gen_journal(const char *out, const char *scratch)
{
    for (int k = 0; k < 3; k++) {
        char dir[8192];
        snprintf(dir, sizeof dir, "%s/j%d", scratch, k);
        rm_dir(dir);
        struct sg_journal_opts o = {.dir = dir, .segment_bytes = 0, .segment_ms = 0, .sync_ms = 0};
        struct sg_journal *j = NULL;
        if (sg_journal_open(&j, &o) != 0) {
            fprintf(stderr, "seedgen: journal open %s failed\n", dir);
            return -1;
        }
        struct sg_fleet *f = fleet(4, 11 + (uint64_t)k, k == 2 ? 0.2 : 0.0);
        struct sg_fleet_msg m;
        for (int i = 0; i < 4 + 6 * k && sg_fleet_next(f, &m) == 1; i++) {
            sg_journal_append(j, START_MS + 1000u * (uint64_t)i, m.topic, strlen(m.topic),
                              m.payload, m.len);
        }
        sg_fleet_free(f);
        sg_journal_close(j);
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, "journal-", 8) == 0) {
                char from[16384], to[16384];
                snprintf(from, sizeof from, "%s/%s", dir, de->d_name);
                snprintf(to, sizeof to, "%s/segment-%d.log", out, k);
                if (copy_file(from, to) != 0) {
                    closedir(d);
                    return -1;
                }
            }
        }
        if (d != NULL) {
            closedir(d);
        }
        rm_dir(dir);
    }
    return 0;
}

static int gen_spool(const char *out, const char *scratch)
{
    for (int k = 0; k < 2; k++) {
        char dir[8192];
        snprintf(dir, sizeof dir, "%s/s%d", scratch, k);
        rm_dir(dir);
        struct sg_spool_opts o = {.dir = dir, .max_bytes = 1u << 20, .max_batches = 100,
                                  .fsync = false, .now_ms = START_MS};
        struct sg_spool *sp = NULL;
        if (sg_spool_open(&sp, &o) != 0) {
            fprintf(stderr, "seedgen: spool open %s failed\n", dir);
            return -1;
        }
        for (int i = 0; i < 3 + 3 * k; i++) {
            char body[256], sid[32], batch_id[64];
            struct sg_spool_mark mk = {.sensor_id = sid, .kind = (uint8_t)(1 + i % 9),
                                       .window_ms = 10000,
                                       .closed_before_ms = START_MS + 10000u * (uint64_t)i};
            uint64_t seq = sg_spool_next_seq(sp);
            /* The body a gateway would have spooled: its batch_id as on the wire. */
            sg_encode_batch_id(batch_id, sizeof batch_id, "gw", seq);
            int n = snprintf(body, sizeof body,
                             "{\"gateway_id\":\"gw\",\"batch_id\":\"%s\",\"rollups\":[]}",
                             batch_id);
            snprintf(sid, sizeof sid, "s-%d", i);
            sg_spool_push_marked(sp, seq, i % 2, (const uint8_t *)body, (size_t)n, START_MS, &mk,
                                 1);
            if (i == 1) {
                sg_spool_dead(sp, seq, 422, "conflict");
            }
        }
        sg_spool_close(sp);
        char from[16384], to[16384];
        snprintf(from, sizeof from, "%s/spool.db", dir);
        snprintf(to, sizeof to, "%s/spool-%d.db", out, k);
        if (copy_file(from, to) != 0) {
            return -1;
        }
        rm_dir(dir);
    }
    return 0;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static int gen_backoff(const char *out)
{
    /* failures, min, max, retry_after_s, retry_after_max, rnd bits, status, curl code */
    static const struct {
        uint32_t f;
        uint64_t min, max;
        int64_t ra;
        uint64_t ramax;
        double rnd;
        int32_t status;
        int8_t curl;
    } t[] = {
        {1, 500, 300000, 0, 3600000, 0.5, 503, 0},
        {40, 500, 300000, 120, 3600000, 0.999, 429, 0},
        {3, 1, 86400000, -1764400000, 3600000, 0.25, 503, 0},
        {UINT32_MAX, UINT64_MAX, UINT64_MAX, INT64_MAX, UINT64_MAX, 0.9999999, 200, 0},
        {2, 1000, 10, 5, 0, 0.0, 0, 28},
        {1, 500, 300000, 0, 3600000, 0.1, 401, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        unsigned char b[49];
        uint64_t rb;
        memcpy(&rb, &t[i].rnd, sizeof rb);
        put_be(b, t[i].f, 4);
        put_be(b + 4, t[i].min, 8);
        put_be(b + 12, t[i].max, 8);
        put_be(b + 20, (uint64_t)t[i].ra, 8);
        put_be(b + 28, t[i].ramax, 8);
        put_be(b + 36, rb, 8);
        put_be(b + 44, (uint64_t)(uint32_t)t[i].status, 4);
        b[48] = (unsigned char)t[i].curl;
        char p[8192];
        snprintf(p, sizeof p, "%s/args-%zu.bin", out, i);
        if (write_file(p, b, sizeof b) != 0) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seedgen OUTDIR\n");
        return 2;
    }
    const char *out = argv[1];
    const char *subs[] = {"decode", "journal", "spool", "backoff", "scratch"};
    char p[5][4096];
    mkdir(out, 0755);
    for (int i = 0; i < 5; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s", out, subs[i]);
        mkdir(p[i], 0755);
    }
    int rc = gen_decode(p[0]) | gen_journal(p[1], p[4]) | gen_spool(p[2], p[4]) | gen_backoff(p[3]);
    rmdir(p[4]);
    return rc ? 1 : 0;
}

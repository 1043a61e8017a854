/*
 * sg-bench-inproc: the gateway's hot path with no broker. ReadingBatch
 * payloads made by the simulator's fleet library (sg_fleet) are prepared up
 * front, then pushed through decode -> validate -> rollup -> encode (JSON
 * batches of max_batch_rollups, into one reused buffer), exactly as
 * gateway.c's on_inbox()/on_rollup()/flush_batch() do, minus the spool.
 *
 * Phases: warm-up (the first --warm-frac of the payloads: every series is
 * created, pools and sketches grow) and steady (the rest). Only the steady
 * phase is timed, counted for allocations and, under callgrind
 * (--collect-atstart=no), instrumented; so "instructions per reading" is the
 * steady per-reading cost.
 *
 * The allocation proof: this executable defines malloc/calloc/realloc/free
 * itself (glibc's are reached as __libc_*), so every allocation of the
 * process is seen, including those inside protobuf-c and libc, not only the
 * ones our code links against. Counting is on only during the steady phase.
 * (Built only without sanitizers, which interpose malloc themselves.)
 *
 * Output: one JSON object on stdout (the driver, bench/bench.py, collects
 * it), a human line on stderr.
 *
 * Not a test: it asserts nothing about time.
 */
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <valgrind/callgrind.h>

#include "buf.h"
#include "common.h"
#include "config.h"
#include "decode.h"
#include "encode.h"
#include "fleet.h"
#include "rollup.h"

/* ---- counting allocator --------------------------------------------- */

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);

void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void free(void *p);

static _Atomic int count_on;
static _Atomic uint64_t n_malloc, n_free, n_realloc, bytes_alloc;

void *malloc(size_t n)
{
    if (atomic_load_explicit(&count_on, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&bytes_alloc, n, memory_order_relaxed);
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (atomic_load_explicit(&count_on, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&bytes_alloc, n * size, memory_order_relaxed);
    }
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (atomic_load_explicit(&count_on, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&n_realloc, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&bytes_alloc, n, memory_order_relaxed);
    }
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p != NULL && atomic_load_explicit(&count_on, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
    }
    __libc_free(p);
}

/* ---- the pipeline ----------------------------------------------------- */

#define MAX_BATCH_ROLLUPS 500
/* The gateway clock runs behind sim time, as in the end-to-end runs at a
 * high --speedup: windows close by the sensor watermark, not by ticks. */
#define GW_CLOCK_LAG_MS 30000u

struct pipe {
    struct sg_decoder *dec;
    struct sg_rollup_engine *eng;
    struct sg_rollup pending[MAX_BATCH_ROLLUPS + SG_MAX_CHANNELS];
    size_t npending;
    struct sg_buf body;
    uint64_t batch_seq;
    uint64_t batches;
    uint64_t body_bytes;
    uint64_t now_ms;
    uint64_t ns_decode, ns_rollup, ns_encode;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void flush_batch(struct pipe *p)
{
    if (p->npending == 0) {
        return;
    }
    uint64_t t0 = mono_ns();
    char batch_id[96];
    sg_encode_batch_id(batch_id, sizeof batch_id, "gw-bench-001", ++p->batch_seq);
    sg_encode_batch(&p->body, SG_CT_JSON, "gw-bench-001", batch_id, p->now_ms, p->pending,
                    p->npending);
    p->batches++;
    p->body_bytes += p->body.len;
    p->npending = 0;
    p->ns_encode += mono_ns() - t0;
}

static void on_rollup(void *ctx, const struct sg_rollup *r)
{
    struct pipe *p = ctx;
    p->pending[p->npending++] = *r;
    bool last_channel = r->channel + 1 >= sg_kind_channels(r->kind);
    if (last_channel && p->npending >= MAX_BATCH_ROLLUPS) {
        /* Time spent here is encode, not rollup: subtracted by the caller. */
        flush_batch(p);
    }
}

struct payload {
    uint32_t off;
    uint32_t len;
    uint64_t t_ms;
};

static long rss_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, kl) == 0) {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* The old sg_buf_put_double (printf + strtod), as the reference. */
static size_t ref_double(char *tmp, size_t cap, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, cap, "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v) {
            break;
        }
    }
    return strlen(tmp);
}

/* --check-doubles N: sg_buf_put_double against the reference on N values of
 * the shapes rollups carry (fixed-resolution readings, their sums, means,
 * sketch representatives, random bits in and out of the fast range): every
 * one must read back bit-exact and be no longer than the reference. Also
 * times both. Returns the number of failures. */
static uint64_t check_doubles(uint64_t n)
{
    struct sg_fleet_rng rng;
    sg_fleet_rng_seed(&rng, 7);
    struct sg_buf b = SG_BUF_INIT;
    uint64_t bad = 0, longer = 0, shorter = 0, same_text = 0;
    double *vals = sg_xmalloc(n * sizeof *vals);
    for (uint64_t i = 0; i < n; i++) {
        double u = sg_fleet_rng_unit(&rng);
        uint64_t r = sg_fleet_rng_next(&rng);
        double v;
        switch (i % 6) {
        case 0: /* a reading of 0.01 resolution */
            v = (double)(int64_t)(r % 2000000) / 100.0 - 5000.0;
            break;
        case 1: /* a sum / mean of such readings */
            v = ((double)(r % 100000) / 100.0) * (1.0 + u) / 3.0;
            break;
        case 2: /* a sketch representative */
            v = 2.0 * pow(1.01005, (double)(int)(r % 4000) - 2000) / 2.01005;
            break;
        case 3: { /* random bits in [1e-5, 1e17) */
            v = pow(10.0, -5.0 + 22.0 * u);
            break;
        }
        case 4: { /* any finite double */
            uint64_t bits = r;
            memcpy(&v, &bits, sizeof v);
            if (!isfinite(v) || v == 0.0) {
                v = 1.5;
            }
            break;
        }
        default: /* integers-plus-a-bit and negatives */
            v = -((double)(r % 1000000) + u);
            break;
        }
        vals[i] = v;
    }
    char ref[48];
    uint64_t t0 = mono_ns();
    for (uint64_t i = 0; i < n; i++) {
        sg_buf_reset(&b);
        sg_buf_put_double(&b, vals[i]);
        double back = strtod(b.data, NULL);
        if (memcmp(&back, &vals[i], sizeof back) != 0) {
            if (bad < 10) {
                fprintf(stderr, "check-doubles: %.17g printed as %s\n", vals[i], b.data);
            }
            bad++;
        }
        size_t rl = ref_double(ref, sizeof ref, vals[i]);
        if (b.len > rl) {
            longer++;
            if (longer < 10) {
                fprintf(stderr, "check-doubles: %s longer than %s\n", b.data, ref);
            }
        } else if (b.len < rl) {
            shorter++;
            if (shorter < 4) {
                fprintf(stderr, "check-doubles: %s shorter than %s\n", b.data, ref);
            }
        }
        same_text += strcmp(b.data, ref) == 0;
    }
    uint64_t t1 = mono_ns();
    for (uint64_t i = 0; i < n; i++) {
        sg_buf_reset(&b);
        sg_buf_put_double(&b, vals[i]);
    }
    uint64_t t2 = mono_ns();
    for (uint64_t i = 0; i < n; i++) {
        ref_double(ref, sizeof ref, vals[i]);
    }
    uint64_t t3 = mono_ns();
    (void)t0;
    (void)t1;
    printf("{\"values\":%" PRIu64 ",\"not_round_trip\":%" PRIu64 ",\"longer_than_printf\":%" PRIu64
           ",\"shorter_than_printf\":%" PRIu64 ",\"same_text\":%" PRIu64
           ",\"ns_per_double\":%.1f,\"ns_per_double_printf_strtod\":%.1f}\n",
           n, bad, longer, shorter, same_text, (double)(t2 - t1) / (double)n,
           (double)(t3 - t2) / (double)n);
    free(vals);
    sg_buf_free(&b);
    return bad + longer;
}

static void usage(void)
{
    fprintf(stderr, "usage: sg-bench-inproc --series N [--readings R] [--batch B] [--rate-hz H]\n"
                    "                       [--warm-frac F] [--ring-seqs S] [--seed S]\n");
}

int main(int argc, char **argv)
{
    uint64_t series = 100000, target = 6000000, batch = 20, ring = 1024, seed = 1;
    double rate_hz = 0.0, warm_frac = 0.0;
    if (argc == 3 && strcmp(argv[1], "--check-doubles") == 0) {
        uint64_t n = 0;
        if (sg_parse_u64(argv[2], 1, 1000000000, &n) != 0) {
            usage();
            return 2;
        }
        return check_doubles(n) == 0 ? 0 : 1;
    }
    /* Every option takes a value: walk the arguments in (flag, value) pairs. */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(a, "--series") == 0) {
            rc = sg_parse_u64(v, 1, 10000000, &series);
        } else if (strcmp(a, "--readings") == 0) {
            rc = sg_parse_u64(v, 1000, 1000000000, &target);
        } else if (strcmp(a, "--batch") == 0) {
            rc = sg_parse_u64(v, 1, 10000, &batch);
        } else if (strcmp(a, "--ring-seqs") == 0) {
            rc = sg_parse_u64(v, 64, 65536, &ring);
        } else if (strcmp(a, "--seed") == 0) {
            rc = sg_parse_u64(v, 0, UINT64_MAX, &seed);
        } else if (strcmp(a, "--rate-hz") == 0) {
            rc = sg_parse_double(v, &rate_hz);
        } else if (strcmp(a, "--warm-frac") == 0) {
            rc = sg_parse_double(v, &warm_frac);
        } else {
            usage();
            return 2;
        }
        if (rc != 0) {
            usage();
            return 2;
        }
    }

    /* Fleet: one series per sensor. About 2.4 readings/s per sensor at 1 Hz
     * (accelerometers read 10x). Pick the rate so every series gets enough
     * readings for windows to open and close (10 s windows), and the span
     * so that about `target` readings come out. */
    if (rate_hz <= 0.0) {
        rate_hz = (double)target / ((double)series * 2.4 * 60.0);
        if (rate_hz > 100.0) {
            rate_hz = 100.0;
        }
        if (rate_hz < 1.0) {
            rate_hz = 1.0;
        }
    }
    double per_s = (double)series * 2.4 * rate_hz;
    uint64_t duration_ms = (uint64_t)((double)target / per_s * 1000.0) + 1500;
    if (warm_frac <= 0.0) {
        /* Every series must exist before the steady phase: the first
         * reading of a sensor comes within 1.1 periods of the start. */
        double first_ms = 1100.0 / rate_hz + 100.0;
        warm_frac = first_ms / (double)duration_ms;
        if (warm_frac < 0.3) {
            warm_frac = 0.3;
        }
    }

    struct sg_fleet_opts fo;
    sg_fleet_opts_default(&fo);
    fo.sensors = (uint32_t)series;
    fo.rate_hz = rate_hz;
    fo.readings_per_batch = (uint32_t)batch;
    fo.duration_ms = duration_ms;
    fo.start_ms = 1700000000000ull;
    fo.seed = seed;
    fo.speedup = 1e6;
    struct sg_fleet *fl = NULL;
    if (sg_fleet_new(&fl, &fo) != 0) {
        fprintf(stderr, "sg-bench-inproc: bad fleet options\n");
        return 2;
    }
    uint64_t t_gen = mono_ns();
    struct sg_buf store = SG_BUF_INIT;
    struct payload *pl = NULL;
    size_t npl = 0, cappl = 0;
    uint64_t total_readings = 0;
    struct sg_fleet_msg m;
    while (sg_fleet_next(fl, &m) == 1) {
        if (npl == cappl) {
            cappl = cappl ? cappl * 2 : 4096;
            pl = sg_xrealloc(pl, cappl * sizeof *pl);
        }
        pl[npl++] = (struct payload){(uint32_t)store.len, (uint32_t)m.len, m.sim_time_ms};
        sg_buf_append(&store, m.payload, m.len);
        total_readings += m.nreadings;
    }
    sg_fleet_free(fl);
    double gen_s = (double)(mono_ns() - t_gen) / 1e9;

    long rss_before = rss_kb("VmRSS:");

    struct pipe *p = sg_xcalloc(1, sizeof *p);
    struct sg_decode_limits lim = {
        .max_payload_bytes = 262144,
        .max_readings_per_batch = 10000,
        .max_past_ms = 3600000,
        .max_future_ms = 300000,
    };
    if (sg_decoder_new(&p->dec, &lim) != 0) {
        return 1;
    }
    struct sg_rollup_opts ro = {
        .windows_ms = {10000},
        .nwindows = 1,
        .allowed_lateness_ms = 2000,
        .max_series = series + 16,
        .ring_seqs = (uint32_t)ring,
        .series_idle_ms = 900000,
        .sketch_alpha = 0.005,
        .emit = on_rollup,
        .emit_ctx = p,
    };
    if (sg_rollup_engine_new(&p->eng, &ro) != 0) {
        fprintf(stderr, "sg-bench-inproc: bad engine options\n");
        return 2;
    }

    size_t warm_end = (size_t)((double)npl * warm_frac);
    uint64_t next_tick = fo.start_ms - GW_CLOCK_LAG_MS + 1000;
    uint64_t steady_readings = 0, steady_msgs = 0, steady_accepted = 0;
    uint64_t wall0 = 0, cpu0 = 0, dec0 = 0, rol0 = 0, enc0 = 0;
    uint64_t decode_errors = 0;
    for (size_t i = 0; i < npl; i++) {
        if (i == warm_end) {
            dec0 = p->ns_decode;
            rol0 = p->ns_rollup;
            enc0 = p->ns_encode;
            atomic_store(&count_on, 1);
            CALLGRIND_START_INSTRUMENTATION;
            wall0 = mono_ns();
            cpu0 = cpu_ns();
        }
        uint64_t now = pl[i].t_ms - GW_CLOCK_LAG_MS;
        p->now_ms = now;
        /* Gateway clock: ticks once a (simulated) second, as the loop does. */
        while (now >= next_tick) {
            uint64_t e0 = p->ns_encode;
            uint64_t t0 = mono_ns();
            sg_rollup_tick(p->eng, next_tick);
            p->ns_rollup += mono_ns() - t0 - (p->ns_encode - e0);
            next_tick += 1000;
        }
        const struct sg_reading *rd = NULL;
        size_t n = 0;
        uint64_t t0 = mono_ns();
        int rc = sg_decode_batch(p->dec, (const uint8_t *)store.data + pl[i].off, pl[i].len, now,
                                 &rd, &n);
        uint64_t t1 = mono_ns();
        p->ns_decode += t1 - t0;
        if (rc != 0) {
            decode_errors++;
            continue;
        }
        uint64_t e0 = p->ns_encode;
        size_t acc = sg_rollup_add_batch(p->eng, rd, n, now, NULL);
        p->ns_rollup += mono_ns() - t1 - (p->ns_encode - e0);
        if (i >= warm_end) {
            steady_readings += n;
            steady_msgs++;
            steady_accepted += acc;
        }
    }
    /* The last partial batch belongs to the steady phase too. */
    flush_batch(p);
    uint64_t cpu1 = cpu_ns();
    uint64_t wall1 = mono_ns();
    CALLGRIND_STOP_INSTRUMENTATION;
    atomic_store(&count_on, 0);

    const struct sg_rollup_stats *st = sg_rollup_stats(p->eng);
    size_t live = (size_t)st->active_series;
    size_t mem = sg_rollup_memory_bytes(p->eng);
    struct sg_rollup_memory md;
    sg_rollup_memory_detail(p->eng, &md);
    double per = live ? 1.0 / (double)live : 0.0;
    long rss_after = rss_kb("VmRSS:");
    long hwm = rss_kb("VmHWM:");
    double cpu_s = (double)(cpu1 - cpu0) / 1e9;
    double wall_s = (double)(wall1 - wall0) / 1e9;
    double rps = steady_readings / cpu_s;
    double ring_bytes = (double)ring / 8.0;
    uint64_t open_windows = st->open_windows;

    printf("{\"series\":%" PRIu64 ",\"live_series\":%zu,\"readings_per_batch\":%" PRIu64
           ",\"rate_hz\":%.3f,\"payloads\":%zu,\"readings_total\":%" PRIu64
           ",\"steady_messages\":%" PRIu64 ",\"steady_readings\":%" PRIu64
           ",\"steady_accepted\":%" PRIu64 ",\"decode_errors\":%" PRIu64
           ",\"cpu_s\":%.4f,\"wall_s\":%.4f,\"readings_per_s_per_core\":%.0f"
           ",\"ns_per_reading\":{\"decode\":%.1f,\"rollup\":%.1f,\"encode\":%.1f}"
           ",\"rollups\":%" PRIu64 ",\"batches\":%" PRIu64 ",\"json_bytes\":%" PRIu64
           ",\"steady_mallocs\":%" PRIu64 ",\"steady_reallocs\":%" PRIu64
           ",\"steady_frees\":%" PRIu64 ",\"steady_alloc_bytes\":%" PRIu64
           ",\"engine_bytes\":%zu,\"engine_bytes_per_series\":%.1f"
           ",\"engine_per_series\":{\"series\":%.1f,\"windows\":%.1f,\"bins\":%.1f}"
           ",\"ring_bytes_per_series\":%.0f,\"open_windows\":%" PRIu64
           ",\"rss_delta_bytes_per_series\":%.1f,\"rss_kb_before\":%ld,\"rss_kb_after\":%ld"
           ",\"vmhwm_kb\":%ld,\"gen_s\":%.2f}\n",
           series, live, batch, rate_hz, npl, total_readings, steady_msgs, steady_readings,
           steady_accepted, decode_errors, cpu_s, wall_s, rps,
           (double)(p->ns_decode - dec0) / (double)steady_readings,
           (double)(p->ns_rollup - rol0) / (double)steady_readings,
           (double)(p->ns_encode - enc0) / (double)steady_readings, st->rollups, p->batches,
           p->body_bytes, atomic_load(&n_malloc), atomic_load(&n_realloc), atomic_load(&n_free),
           atomic_load(&bytes_alloc), mem, live ? (double)mem / (double)live : 0.0,
           (double)md.series * per, (double)md.windows * per, (double)md.bins * per, ring_bytes,
           open_windows, live ? (double)(rss_after - rss_before) * 1024.0 / (double)live : 0.0,
           rss_before, rss_after, hwm, gen_s);
    fprintf(stderr,
            "inproc: series=%zu batch=%" PRIu64 " steady readings=%" PRIu64
            " in %.3f cpu-s: %.2f M readings/s/core; mallocs=%" PRIu64 " frees=%" PRIu64
            " engine %.0f B/series (series %.0f, windows %.0f, bins %.0f)\n",
            live, batch, steady_readings, cpu_s, rps / 1e6, atomic_load(&n_malloc),
            atomic_load(&n_free), live ? (double)mem / (double)live : 0.0, (double)md.series * per,
            (double)md.windows * per, (double)md.bins * per);

    sg_rollup_engine_free(p->eng);
    sg_decoder_free(p->dec);
    sg_buf_free(&p->body);
    free(p);
    sg_buf_free(&store);
    free(pl);
    return 0;
}

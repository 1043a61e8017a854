/*
 * fleet: the simulated sensor fleet of sensegate-sim (docs/SIMULATOR.md).
 *
 * Event-driven: a min-heap orders sensors by the event time of their next
 * reading (ties by sensor index). Each reading goes into its device's batch;
 * a full batch becomes one payload whose sim time is the event time of the
 * reading that filled it. Faults are decided per reading with one PRNG, so
 * the same options give the same bytes. The protobuf encoding is written by
 * hand (it is tiny) so that readings protobuf-c cannot build, such as a
 * sensor_id with an embedded NUL, can be sent; tests check that protobuf-c
 * decodes every well-formed payload and rejects every malformed one.
 *
 * Invariants: payloads come out in non-decreasing sim time; a held-back
 * out-of-order reading is released before any accepted reading of its
 * sensor reaches ts + allowed_lateness; a duplicate is released while its
 * seq is at most DUP_MAX_BEHIND behind its sensor's newest (well inside the
 * gateway's dedup ring). Single-threaded.
 */
#include "fleet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "common.h"
#include "reading.h"

#define TOPIC_CAP 96
#define DEVID_CAP 32
#define DUP_MAX_BEHIND 32u /* seqs: far inside any dedup ring (>= 64) */
#define HOUR_MS 3600000.0
#define TWO_HOURS_MS 7200000ULL
#define TZ_OFFSET_H 8.0 /* local time of the simulated city: UTC+8 */

/* A reading as generated and encoded (may be deliberately invalid). */
struct rd {
    char id[SG_TRUTH_ID_CAP];
    size_t id_len;
    int kind;
    uint64_t ts_ms;
    uint32_t seq;
    uint32_t status;
    size_t nvalues;
    double values[SG_TRUTH_MAX_VALUES];
    bool has_pos;
    double lat, lon;
    uint32_t sensor; /* index of the generating sensor */
};

enum hold_kind { HOLD_OOO, HOLD_LATE };

struct held {
    struct rd r;
    enum hold_kind kind;
    uint32_t after;      /* HOLD_OOO: subsequent readings still to wait for */
    uint64_t release_ts; /* HOLD_LATE: release after a reading with ts >= this */
};

struct sensor {
    char id[SG_TRUTH_ID_CAP];
    size_t id_len;
    int kind;
    uint32_t device;
    double period_ms;
    double phase_ms;
    uint64_t k;        /* readings generated */
    uint64_t next_ts;  /* event time of the next reading */
    uint32_t seq;      /* seq of the next reading */
    uint32_t ooo_max;  /* most readings an out-of-order one may be held across */
    double offset;     /* per-sensor calibration offset */
    double walk;       /* slow random walk */
    double f1, f2, ph; /* ACCEL_G: structural modes (Hz) and phase */
    struct held *held;
    size_t nheld, capheld;
};

enum dev_type { DT_AQ, DT_NZ, DT_TF, DT_WL, DT_ACC, DT_SG, DT_COUNT };

struct device {
    char id[DEVID_CAP];
    char topic[TOPIC_CAP];
    enum dev_type type;
    bool has_pos;
    double lat, lon;
    struct rd *buf; /* readings of the batch being filled */
    size_t n;
    struct rd *dupcand; /* readings of this batch to re-publish in the next one */
    size_t ndupcand, capdupcand;
    /* Episodes (PM pollution, rain on the river), shared by the device's sensors. */
    uint64_t ep_start, ep_end;
    double ep_amp;
};

struct outmsg {
    char topic[TOPIC_CAP];
    uint8_t *payload;
    size_t len;
    uint64_t sim_time_ms;
    uint32_t nreadings;
    bool malformed;
};

struct sg_fleet {
    struct sg_fleet_opts o;
    struct sg_fleet_rng rng;
    struct sensor *sensors;
    uint32_t nsensors;
    struct device *devices;
    uint32_t ndevices;
    uint32_t *heap; /* sensor indices, min-heap on (next_ts, index) */
    uint32_t nheap;
    uint64_t end_ms;
    uint64_t wmin;    /* smallest window width */
    uint64_t now_sim; /* sim time of the event being processed */
    struct outmsg *q; /* payloads ready, FIFO */
    size_t qhead, qn, qcap;
    struct outmsg cur; /* the one last returned */
    bool flushed;
    struct sg_buf enc; /* scratch: one ReadingBatch */
    struct sg_buf sub; /* scratch: one Reading */
    struct sg_fleet_stats st;
};

/* ---- PRNG: splitmix64 seeds xoshiro256** ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void sg_fleet_rng_seed(struct sg_fleet_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&x);
    }
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t sg_fleet_rng_next(struct sg_fleet_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sg_fleet_rng_unit(struct sg_fleet_rng *r)
{
    return (double)(sg_fleet_rng_next(r) >> 11) * 0x1.0p-53;
}

static uint64_t rng_below(struct sg_fleet_rng *r, uint64_t n)
{
    return n ? sg_fleet_rng_next(r) % n : 0;
}

/* Standard normal (Box-Muller; one of the pair, for simplicity). */
static double rng_gauss(struct sg_fleet_rng *r)
{
    double u1 = sg_fleet_rng_unit(r);
    double u2 = sg_fleet_rng_unit(r);
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* ---- options ---- */

void sg_fleet_opts_default(struct sg_fleet_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->sensors = 300;
    opts->rate_hz = 1.0;
    opts->readings_per_batch = 10;
    opts->duration_ms = 240000;
    opts->seed = 1;
    opts->speedup = 20.0;
    opts->windows_ms[0] = 10000;
    opts->nwindows = 1;
    opts->allowed_lateness_ms = 2000;
}

static bool frac_ok(double x)
{
    return x >= 0.0 && x <= 1.0;
}

static bool opts_ok(const struct sg_fleet_opts *o)
{
    if (o->sensors < 1 || o->sensors > 10000000 || !(o->rate_hz > 0.0) || o->rate_hz > 100.0 ||
        o->readings_per_batch < 1 || o->readings_per_batch > 100000 || o->duration_ms == 0 ||
        !(o->speedup >= 1.0) || o->nwindows < 1 || o->nwindows > SG_TRUTH_MAX_WINDOWS) {
        return false;
    }
    for (size_t i = 0; i < o->nwindows; i++) {
        if (o->windows_ms[i] == 0) {
            return false;
        }
    }
    if (o->id_prefix != NULL) {
        size_t n = strlen(o->id_prefix);
        if (n > SG_FLEET_ID_PREFIX_MAX || strspn(o->id_prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                               "abcdefghijklmnopqrstuvwxyz"
                                                               "0123456789._:-") != n) {
            return false;
        }
    }
    if (!frac_ok(o->dup_frac) || !frac_ok(o->ooo_frac) || !frac_ok(o->late_frac) ||
        !frac_ok(o->invalid_frac) || !frac_ok(o->malformed_frac) ||
        o->ooo_frac + o->late_frac + o->invalid_frac > 1.0) {
        return false;
    }
    return true;
}

/* ---- fleet layout ---- */

struct dev_spec {
    const char *prefix;
    const char *programme;
    int digits;
    int nsensors;
    int kinds[4];
    const char *suffix[4]; /* NULL: the sensor_id is the device_id */
};

static const struct dev_spec SPECS[DT_COUNT] = {
    [DT_AQ] = {"aq",
               "city",
               6,
               4,
               {SG_KIND_PM2_5_UGM3, SG_KIND_PM10_UGM3, SG_KIND_TEMPERATURE_C, SG_KIND_HUMIDITY_PCT},
               {".pm25", ".pm10", ".t", ".rh"}},
    [DT_NZ] = {"nz", "city", 6, 1, {SG_KIND_NOISE_DBA}, {NULL}},
    [DT_TF] = {"tf", "city", 6, 1, {SG_KIND_TRAFFIC_FLOW_VPM}, {NULL}},
    [DT_WL] = {"wl", "city", 6, 1, {SG_KIND_WATER_LEVEL_M}, {NULL}},
    [DT_ACC] = {"acc", "mems", 4, 1, {SG_KIND_ACCEL_G}, {NULL}},
    [DT_SG] = {"sg", "mems", 4, 2, {SG_KIND_STRAIN_UE, SG_KIND_STRAIN_UE}, {".s1", ".s2"}},
};

/* The repeating device pattern: its first ten sensors cover all nine kinds. */
static const enum dev_type PATTERN[] = {DT_AQ, DT_NZ, DT_TF, DT_WL, DT_ACC,
                                        DT_SG, DT_TF, DT_NZ, DT_ACC};
#define NPATTERN (sizeof(PATTERN) / sizeof(PATTERN[0]))

static const char *const CITY_DISTRICTS[] = {"jinshui", "zhongyuan", "erqi",  "guancheng",
                                             "huiji",   "zhengdong", "gaoxin"};
static const char *const MEMS_DISTRICTS[] = {"bridge-07", "bridge-12", "tunnel-03", "bridge-21"};

static void heap_swap(uint32_t *h, uint32_t a, uint32_t b)
{
    uint32_t t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static bool heap_less(const struct sg_fleet *f, uint32_t a, uint32_t b)
{
    const struct sensor *x = &f->sensors[a];
    const struct sensor *y = &f->sensors[b];
    return x->next_ts < y->next_ts || (x->next_ts == y->next_ts && a < b);
}

static void heap_down(struct sg_fleet *f, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1;
        uint32_t r = l + 1;
        uint32_t m = i;
        if (l < f->nheap && heap_less(f, f->heap[l], f->heap[m])) {
            m = l;
        }
        if (r < f->nheap && heap_less(f, f->heap[r], f->heap[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(f->heap, i, m);
        i = m;
    }
}

/* Event time of reading k of sensor s: phase + k periods + a little jitter. */
static uint64_t reading_ts(struct sg_fleet *f, const struct sensor *s, uint64_t k)
{
    double jitter = (sg_fleet_rng_unit(&f->rng) - 0.5) * 0.2 * s->period_ms;
    return f->o.start_ms + (uint64_t)(s->phase_ms + (double)k * s->period_ms + jitter);
}

static void build_layout(struct sg_fleet *f)
{
    uint32_t n = f->o.sensors;
    f->sensors = sg_xcalloc(n, sizeof(*f->sensors));
    f->devices = sg_xcalloc(n, sizeof(*f->devices)); /* at most one device per sensor */
    uint32_t type_count[DT_COUNT] = {0};
    uint32_t ncity = 0;
    uint32_t nmems = 0;
    uint32_t si = 0;
    for (uint32_t di = 0; si < n; di++) {
        enum dev_type type = PATTERN[di % NPATTERN];
        const struct dev_spec *sp = &SPECS[type];
        struct device *d = &f->devices[di];
        d->type = type;
        uint32_t num = ++type_count[type];
        snprintf(d->id, sizeof(d->id), "%s%s-%0*u", f->o.id_prefix ? f->o.id_prefix : "",
                 sp->prefix, sp->digits, num);
        const char *district;
        if (strcmp(sp->programme, "city") == 0) {
            district = CITY_DISTRICTS[ncity++ % (sizeof(CITY_DISTRICTS) / sizeof(char *))];
        } else {
            district = MEMS_DISTRICTS[nmems++ % (sizeof(MEMS_DISTRICTS) / sizeof(char *))];
        }
        snprintf(d->topic, sizeof(d->topic), "sensors/%s/%s/%s", sp->programme, district, d->id);
        d->buf = sg_xcalloc(f->o.readings_per_batch, sizeof(*d->buf));
        /* A third of the devices report a GNSS fix with each reading. */
        d->has_pos = (rng_below(&f->rng, 3) == 0);
        d->lat = 34.75 + (sg_fleet_rng_unit(&f->rng) - 0.5) * 0.2;
        d->lon = 113.65 + (sg_fleet_rng_unit(&f->rng) - 0.5) * 0.3;
        d->ep_start = f->o.start_ms + rng_below(&f->rng, 120000);
        d->ep_end = d->ep_start + 30000 + rng_below(&f->rng, 150000);
        d->ep_amp = 0.5 + sg_fleet_rng_unit(&f->rng) * 2.5;
        for (int j = 0; j < sp->nsensors && si < n; j++, si++) {
            struct sensor *s = &f->sensors[si];
            s->kind = sp->kinds[j];
            s->device = di;
            if (sp->suffix[j] != NULL) {
                snprintf(s->id, sizeof(s->id), "%s%s", d->id, sp->suffix[j]);
            } else {
                snprintf(s->id, sizeof(s->id), "%s", d->id);
            }
            s->id_len = strlen(s->id);
            double rate = f->o.rate_hz * (s->kind == SG_KIND_ACCEL_G ? 10.0 : 1.0);
            s->period_ms = 1000.0 / rate;
            if (s->period_ms < 1.0) {
                s->period_ms = 1.0;
            }
            s->phase_ms = s->period_ms * (0.1 + sg_fleet_rng_unit(&f->rng));
            /* A fifth of the sensors start just below 2^32 to exercise wrap-around. */
            if (rng_below(&f->rng, 5) == 0) {
                s->seq = (uint32_t)(0x100000000ULL - 1 - rng_below(&f->rng, 600));
            } else {
                s->seq = (uint32_t)sg_fleet_rng_next(&f->rng);
            }
            /* Held across k readings, the gap is <= k*p + 0.2p + 1 ms; keep it < L. */
            double room =
                ((double)f->o.allowed_lateness_ms - 2.0 - 0.2 * s->period_ms) / s->period_ms;
            s->ooo_max = room >= 1.0 ? (uint32_t)fmin(room, 64.0) : 0;
            s->offset = rng_gauss(&f->rng);
            s->f1 = 1.5 + sg_fleet_rng_unit(&f->rng) * 2.5;
            s->f2 = 3.0 + sg_fleet_rng_unit(&f->rng) * 4.0;
            s->ph = sg_fleet_rng_unit(&f->rng) * 2.0 * M_PI;
            s->next_ts = reading_ts(f, s, 0);
        }
        f->ndevices = di + 1;
    }
    f->nsensors = n;
    f->heap = sg_xmalloc(n * sizeof(*f->heap));
    for (uint32_t i = 0; i < n; i++) {
        f->heap[i] = i;
    }
    f->nheap = n;
    for (uint32_t i = n / 2; i-- > 0;) {
        heap_down(f, i);
    }
}

int sg_fleet_new(struct sg_fleet **out, const struct sg_fleet_opts *opts)
{
    if (out == NULL || opts == NULL || !opts_ok(opts)) {
        return SG_EINVAL;
    }
    struct sg_fleet *f = sg_xcalloc(1, sizeof(*f));
    f->o = *opts;
    sg_fleet_rng_seed(&f->rng, opts->seed);
    f->end_ms = opts->start_ms + opts->duration_ms;
    f->wmin = opts->windows_ms[0];
    for (size_t i = 1; i < opts->nwindows; i++) {
        if (opts->windows_ms[i] < f->wmin) {
            f->wmin = opts->windows_ms[i];
        }
    }
    build_layout(f);
    *out = f;
    return 0;
}

void sg_fleet_free(struct sg_fleet *f)
{
    if (f == NULL) {
        return;
    }
    for (uint32_t i = 0; i < f->nsensors; i++) {
        free(f->sensors[i].held);
    }
    for (uint32_t i = 0; i < f->ndevices; i++) {
        free(f->devices[i].buf);
        free(f->devices[i].dupcand);
    }
    for (size_t i = f->qhead; i < f->qn; i++) {
        free(f->q[i].payload);
    }
    free(f->q);
    free(f->cur.payload);
    free(f->sensors);
    free(f->devices);
    free(f->heap);
    sg_buf_free(&f->enc);
    sg_buf_free(&f->sub);
    free(f);
}

/* ---- signals ---- */

static double local_hour(uint64_t ts_ms)
{
    return fmod((double)ts_ms / HOUR_MS + TZ_OFFSET_H, 24.0);
}

static double bump(double h, double centre, double width)
{
    double d = h - centre;
    return exp(-(d * d) / (2.0 * width * width));
}

/* Traffic intensity 0..~1.2: morning and evening rush hours, a midday plateau. */
static double traffic_profile(double h)
{
    return 0.12 + 0.9 * bump(h, 8.0, 1.0) + 0.85 * bump(h, 18.0, 1.3) + 0.3 * bump(h, 13.0, 3.0);
}

/* Level of the device's current episode at ts (0 outside), advancing to the
 * next episode once this one is over. Sensors of a device ask in time order. */
static double episode(struct sg_fleet *f, struct device *d, uint64_t ts)
{
    while (ts >= d->ep_end) {
        d->ep_start = d->ep_end + 20000 + rng_below(&f->rng, 200000);
        d->ep_end = d->ep_start + 30000 + rng_below(&f->rng, 150000);
        d->ep_amp = 0.5 + sg_fleet_rng_unit(&f->rng) * 2.5;
    }
    if (ts < d->ep_start) {
        return 0.0;
    }
    double x = (double)(ts - d->ep_start) / (double)(d->ep_end - d->ep_start);
    return d->ep_amp * sin(M_PI * x);
}

static double quantize(double x, double step)
{
    return round(x / step) * step;
}

static void gen_values(struct sg_fleet *f, struct sensor *s, uint64_t ts, struct rd *r)
{
    struct device *d = &f->devices[s->device];
    double h = local_hour(ts);
    double diurnal = sin(2.0 * M_PI * (h - 9.0) / 24.0); /* peaks mid-afternoon */
    double tp = traffic_profile(h);
    double g = rng_gauss(&f->rng);
    double t_s = (double)ts / 1000.0;
    s->walk = 0.999 * s->walk + 0.02 * rng_gauss(&f->rng);
    r->nvalues = 1;
    switch (s->kind) {
    case SG_KIND_TEMPERATURE_C:
        r->values[0] = quantize(14.0 + s->offset + 7.0 * diurnal + s->walk + 0.05 * g, 0.01);
        break;
    case SG_KIND_HUMIDITY_PCT:
        r->values[0] = quantize(fmin(100.0, fmax(5.0, 62.0 + 3.0 * s->offset - 18.0 * diurnal +
                                                          5.0 * s->walk + 0.3 * g)),
                                0.1);
        break;
    case SG_KIND_PM2_5_UGM3:
        r->values[0] = quantize(fmax(0.0, (28.0 + 4.0 * s->offset + 18.0 * tp) *
                                              (1.0 + episode(f, d, ts)) * exp(0.08 * g)),
                                0.1);
        break;
    case SG_KIND_PM10_UGM3:
        r->values[0] = quantize(fmax(0.0, (50.0 + 6.0 * s->offset + 30.0 * tp) *
                                              (1.0 + 0.8 * episode(f, d, ts)) * exp(0.1 * g)),
                                0.1);
        break;
    case SG_KIND_NOISE_DBA: {
        double v = 50.0 + s->offset + 14.0 * tp + 2.5 * g;
        if (sg_fleet_rng_unit(&f->rng) < 0.02) {
            v += 15.0 + 15.0 * sg_fleet_rng_unit(&f->rng); /* horn, truck, motorbike */
        }
        r->values[0] = quantize(fmin(120.0, fmax(30.0, v)), 0.1);
        break;
    }
    case SG_KIND_TRAFFIC_FLOW_VPM: {
        double lambda = 2.0 + 40.0 * tp * (1.0 + 0.2 * s->offset);
        r->values[0] = fmax(0.0, round(lambda + sqrt(fmax(lambda, 0.0)) * g));
        break;
    }
    case SG_KIND_WATER_LEVEL_M:
        r->values[0] =
            quantize(2.4 + 0.1 * s->offset + 0.15 * sin(2.0 * M_PI * (double)ts / (6.0 * HOUR_MS)) +
                         0.2 * episode(f, d, ts) + 0.002 * s->walk + 0.002 * g,
                     0.001);
        break;
    case SG_KIND_ACCEL_G: {
        double amp = 0.004 + 0.02 * tp * (1.0 + 0.5 * episode(f, d, ts));
        r->nvalues = 3;
        r->values[0] = amp * sin(2.0 * M_PI * s->f1 * t_s + s->ph) + 0.002 * g;
        r->values[1] = 0.6 * amp * sin(2.0 * M_PI * s->f2 * t_s) + 0.002 * rng_gauss(&f->rng);
        r->values[2] = 1.0 + 0.3 * amp * sin(2.0 * M_PI * s->f1 * t_s) + 0.003 * rng_gauss(&f->rng);
        break;
    }
    case SG_KIND_STRAIN_UE:
    default:
        r->values[0] = quantize(150.0 + 20.0 * s->offset + 80.0 * tp * (1.0 + episode(f, d, ts)) +
                                    10.0 * sin(2.0 * M_PI * (h - 14.0) / 24.0) + 2.0 * g,
                                0.1);
        break;
    }
}

/* ---- protobuf encoding (proto3 wire format, by hand) ---- */

static void put_varint(struct sg_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    sg_buf_append(b, tmp, n);
}

static void put_fixed64(struct sg_buf *b, double d)
{
    uint64_t v;
    uint8_t tmp[8];
    memcpy(&v, &d, sizeof(v));
    for (int i = 0; i < 8; i++) {
        tmp[i] = (uint8_t)(v >> (8 * i));
    }
    sg_buf_append(b, tmp, 8);
}

static void put_bytes_field(struct sg_buf *b, unsigned field, const void *p, size_t n)
{
    put_varint(b, ((uint64_t)field << 3) | 2);
    put_varint(b, n);
    sg_buf_append(b, p, n);
}

static void encode_reading(struct sg_buf *b, const struct rd *r)
{
    if (r->id_len > 0) {
        put_bytes_field(b, 1, r->id, r->id_len);
    }
    if (r->kind != 0) {
        put_varint(b, 2 << 3);
        put_varint(b, (uint64_t)(uint32_t)r->kind);
    }
    if (r->ts_ms != 0) {
        put_varint(b, 3 << 3);
        put_varint(b, r->ts_ms);
    }
    if (r->seq != 0) {
        put_varint(b, 4 << 3);
        put_varint(b, r->seq);
    }
    if (r->nvalues > 0) {
        put_varint(b, (5 << 3) | 2);
        put_varint(b, 8 * r->nvalues);
        for (size_t i = 0; i < r->nvalues; i++) {
            put_fixed64(b, r->values[i]);
        }
    }
    if (r->status != 0) {
        put_varint(b, 6 << 3);
        put_varint(b, r->status);
    }
    if (r->has_pos) {
        put_varint(b, (7 << 3) | 2);
        put_varint(b, 18);
        put_varint(b, (1 << 3) | 1);
        put_fixed64(b, r->lat);
        put_varint(b, (2 << 3) | 1);
        put_fixed64(b, r->lon);
    }
}

static void queue_push(struct sg_fleet *f, const char *topic, const struct sg_buf *b,
                       uint32_t nreadings, bool malformed)
{
    if (f->qn == f->qcap) {
        f->qcap = f->qcap ? f->qcap * 2 : 16;
        f->q = sg_xrealloc(f->q, f->qcap * sizeof(*f->q));
    }
    struct outmsg *m = &f->q[f->qn++];
    snprintf(m->topic, sizeof(m->topic), "%s", topic);
    m->payload = sg_xmalloc(b->len ? b->len : 1);
    memcpy(m->payload, b->data, b->len);
    m->len = b->len;
    m->sim_time_ms = f->now_sim;
    m->nreadings = nreadings;
    m->malformed = malformed;
}

/* Bytes protobuf-c must reject, whatever it does with unknown fields. */
static void push_malformed(struct sg_fleet *f, const struct device *d)
{
    struct sg_buf *b = &f->enc;
    sg_buf_reset(b);
    put_bytes_field(b, 1, d->id, strlen(d->id));
    switch (rng_below(&f->rng, 4)) {
    case 0: /* readings: a length beyond the end of the payload */
        put_varint(b, (2 << 3) | 2);
        put_varint(b, 200);
        sg_buf_append(b,
                      "\x0a\x03"
                      "abc",
                      5);
        break;
    case 1: /* device_id again, with wire type 7 (does not exist) */
        put_varint(b, (1 << 3) | 7);
        sg_buf_append(b, "\x01\x02\x03", 3);
        break;
    case 2: { /* a Reading whose packed doubles are 7 bytes long */
        uint8_t inner[] = {0x0a, 0x03, 'x', 'y', 'z', 0x2a, 0x07, 1, 2, 3, 4, 5, 6, 7};
        put_bytes_field(b, 2, inner, sizeof(inner));
        break;
    }
    default: /* readings with wire type 7 */
        put_varint(b, (2 << 3) | 7);
        sg_buf_append(b, "\x00\x00", 2);
        break;
    }
    queue_push(f, d->topic, b, 0, true);
}

static uint64_t truth_now(const struct sg_fleet *f)
{
    return f->o.start_ms + (uint64_t)((double)(f->now_sim - f->o.start_ms) / f->o.speedup);
}

static void feed_truth(struct sg_fleet *f, const struct rd *r)
{
    struct sg_truth_reading tr;
    memcpy(tr.sensor_id, r->id, sizeof(tr.sensor_id));
    tr.id_len = r->id_len;
    tr.kind = r->kind;
    tr.ts_ms = r->ts_ms;
    tr.seq = r->seq;
    tr.status = r->status;
    tr.nvalues = r->nvalues;
    memcpy(tr.values, r->values, sizeof(tr.values));
    sg_truth_add(f->o.truth, &tr, truth_now(f));
}

static void device_append(struct sg_fleet *f, struct device *d, const struct rd *r);

/* Encodes the device's batch into one payload (then maybe a malformed one),
 * feeds its readings to the truth, and starts the next batch with the
 * duplicates chosen from this one. */
static void device_publish(struct sg_fleet *f, struct device *d)
{
    if (d->n == 0) {
        return;
    }
    struct sg_buf *b = &f->enc;
    sg_buf_reset(b);
    put_bytes_field(b, 1, d->id, strlen(d->id));
    for (size_t i = 0; i < d->n; i++) {
        sg_buf_reset(&f->sub);
        encode_reading(&f->sub, &d->buf[i]);
        put_bytes_field(b, 2, f->sub.data, f->sub.len);
        if (f->o.truth != NULL) {
            feed_truth(f, &d->buf[i]);
        }
    }
    queue_push(f, d->topic, b, (uint32_t)d->n, false);
    d->n = 0;
    if (f->o.malformed_frac > 0.0 && sg_fleet_rng_unit(&f->rng) < f->o.malformed_frac) {
        push_malformed(f, d);
    }
    if (d->ndupcand == 0) {
        return;
    }
    /* Re-publish in this next batch; duplicates are never candidates themselves. */
    size_t nd = d->ndupcand;
    struct rd *dups = d->dupcand;
    d->dupcand = NULL;
    d->ndupcand = 0;
    d->capdupcand = 0;
    for (size_t i = 0; i < nd; i++) {
        const struct sensor *s = &f->sensors[dups[i].sensor];
        if ((uint32_t)(s->seq - dups[i].seq) <= DUP_MAX_BEHIND) {
            f->st.inj_dup++;
            device_append(f, d, &dups[i]);
        }
    }
    free(dups);
}

static void device_append(struct sg_fleet *f, struct device *d, const struct rd *r)
{
    d->buf[d->n++] = *r;
    if (d->n == f->o.readings_per_batch) {
        device_publish(f, d);
    }
}

static void add_dupcand(struct device *d, const struct rd *r)
{
    if (d->ndupcand == d->capdupcand) {
        d->capdupcand = d->capdupcand ? d->capdupcand * 2 : 4;
        d->dupcand = sg_xrealloc(d->dupcand, d->capdupcand * sizeof(*d->dupcand));
    }
    d->dupcand[d->ndupcand++] = *r;
}

static void hold(struct sensor *s, const struct held *h)
{
    if (s->nheld == s->capheld) {
        s->capheld = s->capheld ? s->capheld * 2 : 4;
        s->held = sg_xrealloc(s->held, s->capheld * sizeof(*s->held));
    }
    s->held[s->nheld++] = *h;
}

/* Turns r into one of the invalid variants of contract section 2. */
static void make_invalid(struct sg_fleet *f, struct rd *r)
{
    switch (rng_below(&f->rng, 13)) {
    case 0:
        r->values[0] = NAN;
        break;
    case 1:
        r->values[r->nvalues - 1] = INFINITY;
        break;
    case 2:
        r->values[0] = -INFINITY;
        break;
    case 3: /* a space inside the id */
        r->id[r->id_len > 2 ? 2 : 0] = ' ';
        break;
    case 4: /* a topic separator inside the id */
        r->id[r->id_len - 1] = '/';
        break;
    case 5: /* 65 characters */
        memset(r->id, 'x', 65);
        r->id_len = 65;
        break;
    case 6: /* empty */
        r->id_len = 0;
        break;
    case 7: /* embedded NUL: protobuf-c would silently truncate it to a valid id */
        r->id[r->id_len] = '\0';
        r->id[r->id_len + 1] = 'z';
        r->id_len += 2;
        break;
    case 8: /* wrong channel count */
        r->nvalues = (r->kind == SG_KIND_ACCEL_G) ? 2 : 3;
        r->values[1] = r->values[0];
        r->values[2] = r->values[0];
        break;
    case 9:
        r->kind = 0;
        break;
    case 10:
        r->kind = 12;
        break;
    case 11:
        r->ts_ms -= TWO_HOURS_MS;
        break;
    default:
        r->ts_ms += TWO_HOURS_MS;
        break;
    }
}

/* Generates the next reading of sensor si (at its next_ts) with its faults,
 * then releases the held-back readings that are due. */
static void step_sensor(struct sg_fleet *f, uint32_t si)
{
    struct sensor *s = &f->sensors[si];
    struct device *d = &f->devices[s->device];
    struct rd r;
    memset(&r, 0, sizeof(r));
    memcpy(r.id, s->id, s->id_len);
    r.id_len = s->id_len;
    r.kind = s->kind;
    r.ts_ms = s->next_ts;
    r.seq = s->seq++;
    r.sensor = si;
    gen_values(f, s, r.ts_ms, &r);
    if (sg_fleet_rng_unit(&f->rng) < (s->kind == SG_KIND_ACCEL_G ? 0.002 : 0.005)) {
        static const uint32_t bits[] = {0x1, 0x2, 0x4, 0x10, 0x11};
        r.status = bits[rng_below(&f->rng, 5)];
        f->st.inj_faulty++;
    }
    if (d->has_pos) {
        r.has_pos = true;
        r.lat = d->lat + 2e-6 * rng_gauss(&f->rng); /* GNSS noise, ~0.2 m */
        r.lon = d->lon + 2e-6 * rng_gauss(&f->rng);
    }

    double u = sg_fleet_rng_unit(&f->rng);
    double inv = f->o.invalid_frac;
    double late = inv + f->o.late_frac;
    double ooo = late + f->o.ooo_frac;
    bool held_now = false;
    if (u < inv) {
        make_invalid(f, &r);
        f->st.inj_invalid++;
        device_append(f, d, &r);
    } else if (u < late) {
        struct held h = {.r = r, .kind = HOLD_LATE};
        h.release_ts = r.ts_ms + f->wmin + f->o.allowed_lateness_ms +
                       (uint64_t)(2.0 * s->period_ms) + rng_below(&f->rng, f->wmin / 2 + 1);
        hold(s, &h);
        f->st.inj_late++;
        held_now = true;
    } else if (u < ooo && s->ooo_max > 0) {
        struct held h = {.r = r, .kind = HOLD_OOO};
        h.after = 1 + (uint32_t)rng_below(&f->rng, s->ooo_max);
        hold(s, &h);
        f->st.inj_ooo++;
        held_now = true;
    } else {
        bool dup = f->o.dup_frac > 0.0 && sg_fleet_rng_unit(&f->rng) < f->o.dup_frac;
        device_append(f, d, &r);
        if (dup) {
            add_dupcand(d, &r);
        }
    }

    /* Release what is due after this reading (never the one just held). */
    size_t keep = 0;
    size_t nheld = s->nheld - (held_now ? 1 : 0);
    for (size_t i = 0; i < nheld; i++) {
        struct held *h = &s->held[i];
        bool due;
        if (h->kind == HOLD_OOO) {
            due = (--h->after == 0);
        } else {
            due = r.ts_ms >= h->release_ts;
        }
        if (due) {
            device_append(f, d, &h->r);
        } else {
            s->held[keep++] = *h;
        }
    }
    if (held_now) {
        s->held[keep++] = s->held[s->nheld - 1];
    }
    s->nheld = keep;
}

/* End of the simulated span: every held-back reading goes out, then every
 * partly filled batch, device by device. */
static void flush_all(struct sg_fleet *f)
{
    f->now_sim = f->end_ms;
    for (uint32_t si = 0; si < f->nsensors; si++) {
        struct sensor *s = &f->sensors[si];
        for (size_t i = 0; i < s->nheld; i++) {
            device_append(f, &f->devices[s->device], &s->held[i].r);
        }
        s->nheld = 0;
    }
    for (uint32_t di = 0; di < f->ndevices; di++) {
        while (f->devices[di].n > 0) {
            device_publish(f, &f->devices[di]);
        }
    }
    f->flushed = true;
}

int sg_fleet_next(struct sg_fleet *f, struct sg_fleet_msg *msg)
{
    free(f->cur.payload);
    f->cur.payload = NULL;
    while (f->qhead == f->qn && !f->flushed) {
        f->qhead = 0;
        f->qn = 0;
        uint32_t si = f->heap[0];
        struct sensor *s = &f->sensors[si];
        if (s->next_ts >= f->end_ms) {
            flush_all(f);
            break;
        }
        f->now_sim = s->next_ts;
        step_sensor(f, si);
        s->k++;
        s->next_ts = reading_ts(f, s, s->k);
        heap_down(f, 0);
    }
    if (f->qhead == f->qn) {
        return 0;
    }
    f->cur = f->q[f->qhead++];
    msg->topic = f->cur.topic;
    msg->payload = f->cur.payload;
    msg->len = f->cur.len;
    msg->sim_time_ms = f->cur.sim_time_ms;
    msg->nreadings = f->cur.nreadings;
    msg->malformed = f->cur.malformed;
    f->st.payloads++;
    f->st.bytes += f->cur.len;
    if (f->cur.malformed) {
        f->st.malformed++;
    } else {
        f->st.readings += f->cur.nreadings;
    }
    return 1;
}

const struct sg_fleet_stats *sg_fleet_stats(const struct sg_fleet *f)
{
    return &f->st;
}

uint32_t sg_fleet_sensors(const struct sg_fleet *f)
{
    return f->nsensors;
}

uint32_t sg_fleet_devices(const struct sg_fleet *f)
{
    return f->ndevices;
}

/*
 * fleet: a deterministic simulated sensor fleet (docs/SIMULATOR.md).
 *
 * N sensors of all nine kinds, grouped into devices; each device publishes a
 * protobuf sensegate.v1.ReadingBatch of readings_per_batch readings to
 * sensors/<programme>/<district>/<device_id>. Faults (duplicates, out of
 * order, late, invalid readings, malformed payloads) are injected as
 * fractions. Same options ⇒ same payload bytes, in the same order.
 *
 * When opts.truth is set, every reading of every well-formed payload is fed
 * to it (in publish order) with the gateway clock the simulator expects at
 * publish time: start_ms + (sim_time_ms - start_ms) / speedup.
 *
 * Used by sensegate-sim and, in-process, by the benchmark. Single-threaded.
 */
#ifndef SG_FLEET_H
#define SG_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "truth.h"

struct sg_fleet_opts {
    uint32_t sensors;            /* N, >= 1 */
    double rate_hz;              /* readings per second per sensor (ACCEL_G: x10), > 0 */
    uint32_t readings_per_batch; /* readings per ReadingBatch, >= 1 */
    uint64_t duration_ms;        /* simulated time span, > 0 */
    uint64_t start_ms;           /* simulated start, epoch ms */
    uint64_t seed;               /* PRNG seed */
    double speedup;              /* sim ms per real ms, >= 1; only for the truth's clock */
    uint64_t windows_ms[SG_TRUTH_MAX_WINDOWS]; /* window widths, for late injection */
    size_t nwindows;
    uint64_t allowed_lateness_ms; /* L, for out-of-order and late injection */
    double dup_frac;              /* of readings re-published in a later batch */
    double ooo_frac;              /* of readings held back < L in event time */
    double late_frac;             /* of readings held back past window end + L */
    double invalid_frac;          /* of readings replaced by an invalid variant */
    double malformed_frac;        /* per payload: chance of an extra malformed payload */
    struct sg_truth *truth;       /* optional, borrowed: gets every reading */
    const char *id_prefix;        /* optional, borrowed: prepended to every device_id (and so
                                   * to every sensor_id and topic); NULL or "" = none; at most
                                   * SG_FLEET_ID_PREFIX_MAX chars of [A-Za-z0-9._:-] */
};

/* Longest id_prefix sg_fleet_new accepts. */
#define SG_FLEET_ID_PREFIX_MAX 16

/* One payload to publish. Pointers stay valid until the next sg_fleet_next
 * or sg_fleet_free. */
struct sg_fleet_msg {
    const char *topic;      /* NUL-terminated */
    const uint8_t *payload; /* protobuf bytes */
    size_t len;             /* payload bytes */
    uint64_t sim_time_ms;   /* publish when sim time reaches this */
    uint32_t nreadings;     /* readings inside (0 if malformed) */
    bool malformed;         /* bytes protobuf-c must reject */
};

/* Counters, cumulative over what sg_fleet_next returned so far. */
struct sg_fleet_stats {
    uint64_t payloads;    /* all payloads, malformed included */
    uint64_t malformed;   /* malformed payloads */
    uint64_t readings;    /* readings in well-formed payloads */
    uint64_t bytes;       /* payload bytes */
    uint64_t inj_dup;     /* duplicates injected */
    uint64_t inj_ooo;     /* readings held back within lateness */
    uint64_t inj_late;    /* readings held back past their window */
    uint64_t inj_invalid; /* invalid readings injected */
    uint64_t inj_faulty;  /* readings with status != 0 */
};

struct sg_fleet;

/* Fills opts with the defaults of sensegate-sim (300 sensors, 1 Hz, 10 per
 * batch, 240 s, speedup 20, seed 1, windows [10000], L 2000, no faults,
 * start_ms 0: set it). */
void sg_fleet_opts_default(struct sg_fleet_opts *opts);

/* Builds the fleet. Returns 0 and sets *out, or SG_EINVAL for bad options
 * (nothing allocated). */
int sg_fleet_new(struct sg_fleet **out, const struct sg_fleet_opts *opts);

/* Frees the fleet (not opts.truth). NULL is a no-op. */
void sg_fleet_free(struct sg_fleet *f);

/* The next payload in publish order: returns 1 and fills *msg, or 0 when
 * the simulated span is over and every held-back reading went out. Payloads
 * come in non-decreasing sim_time_ms. */
int sg_fleet_next(struct sg_fleet *f, struct sg_fleet_msg *msg);

/* Counters so far. */
const struct sg_fleet_stats *sg_fleet_stats(const struct sg_fleet *f);

/* Sensors in the fleet, and devices. */
uint32_t sg_fleet_sensors(const struct sg_fleet *f);
uint32_t sg_fleet_devices(const struct sg_fleet *f);

/* Deterministic PRNG (splitmix64-seeded xoshiro256**), exposed for tests. */
struct sg_fleet_rng {
    uint64_t s[4];
};
void sg_fleet_rng_seed(struct sg_fleet_rng *r, uint64_t seed);
uint64_t sg_fleet_rng_next(struct sg_fleet_rng *r);
/* Uniform in [0, 1). */
double sg_fleet_rng_unit(struct sg_fleet_rng *r);

#endif

/*
 * reading: one sensor reading as the gateway holds it after decoding, the
 * kinds of contract section 1, and the reasons a reading is invalid.
 * Plain data, no allocation; any thread.
 */
#ifndef SG_READING_H
#define SG_READING_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#define SG_SENSOR_ID_MAX 64   /* contract: 1..64 chars of [A-Za-z0-9._:-] */
#define SG_MAX_CHANNELS 3     /* ACCEL_G has x, y, z */

/* Values equal the protobuf enum sensegate.v1.Kind (part of the contract). */
enum sg_kind {
    SG_KIND_UNSPECIFIED = 0,
    SG_KIND_TEMPERATURE_C = 1,
    SG_KIND_HUMIDITY_PCT = 2,
    SG_KIND_PM2_5_UGM3 = 3,
    SG_KIND_PM10_UGM3 = 4,
    SG_KIND_NOISE_DBA = 5,
    SG_KIND_TRAFFIC_FLOW_VPM = 6,
    SG_KIND_WATER_LEVEL_M = 7,
    SG_KIND_ACCEL_G = 8,
    SG_KIND_STRAIN_UE = 9,
    SG_KIND_MAX = 9,
};

/* Why a reading is invalid; 0 means it passed validation. Each has a
 * `reason` label value on sensegate_invalid_readings_total. */
enum sg_invalid {
    SG_INVALID_NONE = 0,
    SG_INVALID_SENSOR_ID,   /* empty, longer than 64, bad character, embedded NUL */
    SG_INVALID_KIND,        /* 0 or not a known Kind */
    SG_INVALID_CHANNELS,    /* values count does not fit the kind */
    SG_INVALID_VALUE,       /* NaN or infinite value */
    SG_INVALID_TS_PAST,     /* older than validation.max_past_ms */
    SG_INVALID_TS_FUTURE,   /* further ahead than validation.max_future_ms */
    SG_INVALID_SERIES_LIMIT,/* a new series beyond limits.max_series */
    SG_INVALID_BATCH_LIMIT, /* beyond limits.max_readings_per_batch */
    SG_INVALID_COUNT
};

struct sg_reading {
    uint64_t ts_ms;                    /* event time at the sensor, epoch ms */
    uint32_t seq;                      /* per-sensor counter, wraps at 2^32 */
    uint32_t status;                   /* 0 = ok, else fault bits */
    uint8_t kind;                      /* enum sg_kind (may be out of range if invalid) */
    uint8_t nvalues;                   /* channels present, <= SG_MAX_CHANNELS */
    uint8_t id_len;                    /* strlen(sensor_id) */
    uint8_t invalid;                   /* enum sg_invalid, set by validation */
    double values[SG_MAX_CHANNELS];
    char sensor_id[SG_SENSOR_ID_MAX + 1];
};

/* "TEMPERATURE_C" etc.; "KIND_UNSPECIFIED" for 0 and unknown values. */
const char *sg_kind_name(int kind);
/* Parses an enum name back; returns the kind or -1. */
int sg_kind_parse(const char *name);
/* Channels a kind carries: 3 for ACCEL_G, 1 for the others, 0 if unknown. */
int sg_kind_channels(int kind);
/* Label text of an invalid reason ("sensor_id", "kind", ...). */
const char *sg_invalid_name(int reason);
/* True if s[0..len) is 1..64 chars of [A-Za-z0-9._:-]. */
bool sg_sensor_id_ok(const char *s, size_t len);

/* Validates fields against contract section 2 with the gateway clock now_ms.
 * Returns enum sg_invalid (SG_INVALID_NONE if valid). Pure. */
int sg_reading_validate(const struct sg_reading *r, uint64_t now_ms, uint64_t max_past_ms,
                        uint64_t max_future_ms);

#endif

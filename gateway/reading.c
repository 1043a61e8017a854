/*
 * reading: kind names and the field validation of contract section 2.
 * Pure; any thread.
 */
#include "reading.h"

#include <math.h>
#include <string.h>

static const char *const kind_names[] = {
    "KIND_UNSPECIFIED", "TEMPERATURE_C",    "HUMIDITY_PCT",  "PM2_5_UGM3", "PM10_UGM3",
    "NOISE_DBA",        "TRAFFIC_FLOW_VPM", "WATER_LEVEL_M", "ACCEL_G",    "STRAIN_UE",
};

static const char *const invalid_names[SG_INVALID_COUNT] = {
    "none",      "sensor_id", "kind",         "channels",    "value",
    "ts_past",   "ts_future", "series_limit", "batch_limit",
};

const char *sg_kind_name(int kind)
{
    if (kind < 0 || kind > SG_KIND_MAX) {
        return kind_names[0];
    }
    return kind_names[kind];
}

int sg_kind_parse(const char *name)
{
    for (int k = 0; k <= SG_KIND_MAX; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            return k;
        }
    }
    return -1;
}

int sg_kind_channels(int kind)
{
    if (kind < 1 || kind > SG_KIND_MAX) {
        return 0;
    }
    return kind == SG_KIND_ACCEL_G ? 3 : 1;
}

const char *sg_invalid_name(int reason)
{
    if (reason < 0 || reason >= SG_INVALID_COUNT) {
        return "unknown";
    }
    return invalid_names[reason];
}

bool sg_sensor_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > SG_SENSOR_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

int sg_reading_validate(const struct sg_reading *r, uint64_t now_ms, uint64_t max_past_ms,
                        uint64_t max_future_ms)
{
    if (!sg_sensor_id_ok(r->sensor_id, r->id_len)) {
        return SG_INVALID_SENSOR_ID;
    }
    int nch = sg_kind_channels(r->kind);
    if (nch == 0) {
        return SG_INVALID_KIND;
    }
    if (r->nvalues != nch) {
        return SG_INVALID_CHANNELS;
    }
    for (int i = 0; i < nch; i++) {
        if (!isfinite(r->values[i])) {
            return SG_INVALID_VALUE;
        }
    }
    /* Inclusive bounds: now - max_past <= ts <= now + max_future. */
    if (now_ms > max_past_ms && r->ts_ms < now_ms - max_past_ms) {
        return SG_INVALID_TS_PAST;
    }
    if (r->ts_ms > now_ms && r->ts_ms - now_ms > max_future_ms) {
        return SG_INVALID_TS_FUTURE;
    }
    return SG_INVALID_NONE;
}

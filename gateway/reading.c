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

/* 1 for the characters a sensor_id may hold: [A-Za-z0-9._:-]. */
#define ID_DIGITS ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, \
                  ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1
#define ID_UPPER ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, \
                 ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, \
                 ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, \
                 ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1
#define ID_LOWER ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, \
                 ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, \
                 ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, \
                 ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1
static const unsigned char id_char_ok[256] = {
    ID_DIGITS, ID_UPPER, ID_LOWER, ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
};

bool sg_sensor_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > SG_SENSOR_ID_MAX) {
        return false;
    }
    /* A table lookup per character, and one branch at the end: ids are
     * almost always valid, so there is nothing to gain by stopping early. */
    unsigned ok = 1;
    for (size_t i = 0; i < len; i++) {
        ok &= id_char_ok[(unsigned char)s[i]];
    }
    return ok != 0;
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

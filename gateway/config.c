/*
 * config: loads the YAML configuration into struct sg_config and checks it.
 *
 * Three layers, in this order:
 *  1. A libyaml pass over the file records every key path ("mqtt.qos",
 *     "windows_ms[1]") with the line and column of its key and value and the
 *     raw scalar text. It reports YAML syntax errors, aliases and extra
 *     documents. This is where line numbers come from: libcyaml 1.3.1 only
 *     gives them in log backtraces, and not for unknown keys.
 *  2. libcyaml loads the file with the one schema (top_fields below): it
 *     rejects unknown keys, duplicate keys and values of the wrong shape.
 *     Its log_fn output is collected and turned into one message.
 *  3. The rules table gives each key its default and its range. libcyaml
 *     1.3.1 has no defaults, ranges or validation callbacks and accepts
 *     "-5" for an unsigned field (it wraps) and "maybe" for a bool, so every
 *     number and bool is parsed again from its raw text with sg_parse_u64.
 *     Absent keys get their defaults; then check_all() runs the range and
 *     cross-field rules, which sg_config_check() also exposes.
 *
 * Every message is "FILE:LINE:COL: key.path: what is wrong", or
 * "FILE: key.path: ..." when the key is not in the file (a default, or a
 * struct checked with sg_config_check()).
 *
 * All memory of a struct sg_config comes from malloc (libcyaml's mem_fn is
 * realloc/free here), so cyaml_free() frees a loaded and a default config
 * alike. Loop thread, or main before the loop starts; no global state.
 */
#include "config.h"

#include "common.h"

#include <cyaml/cyaml.h>
#include <yaml.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1024 * 1024) /* a config is a few KiB; refuse anything silly */
#define MAX_DEPTH 16                 /* our schema nests two levels */
#define MAX_NODES 4096
#define CYLOG_CAP 2048

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */
/* ------------------------------------------------------------------------ */

/* Offsets of members of the anonymous section structs, relative to the
 * section: libcyaml places nested mapping fields relative to the parent. */
/* clang-format off */
#define SZ(m) ((uint32_t)sizeof(((struct sg_config *)NULL)->m))
#define TOP(m) ((uint32_t)offsetof(struct sg_config, m))
#define IN(sect, m) \
    ((uint32_t)(offsetof(struct sg_config, sect.m) - offsetof(struct sg_config, sect)))

#define F_UINT(k, off, size) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_UINT, .flags = CYAML_FLAG_OPTIONAL, .data_size = (size) } }
#define F_INT(k, off, size) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_INT, .flags = CYAML_FLAG_OPTIONAL, .data_size = (size) } }
#define F_BOOL(k, off, size) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_BOOL, .flags = CYAML_FLAG_OPTIONAL, .data_size = (size) } }
#define F_STR(k, off) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_STRING, .flags = CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, \
                 .data_size = sizeof(char), .string = { .min = 0, .max = CYAML_UNLIMITED } } }
#define F_ENUM(k, off, size, strs) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_ENUM, .flags = CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, \
                 .data_size = (size), \
                 .enumeration = { .strings = (strs), .count = CYAML_ARRAY_LEN(strs) } } }
#define F_SEQ(k, off, size, coff, csize, ent, maxn) \
    { .key = (k), .data_offset = (off), .count_offset = (coff), .count_size = (uint8_t)(csize), \
      .value = { .type = CYAML_SEQUENCE, .flags = CYAML_FLAG_OPTIONAL, .data_size = (size), \
                 .sequence = { .entry = (ent), .min = 0, .max = (maxn) } } }
#define F_MAP(k, off, size, flds) \
    { .key = (k), .data_offset = (off), \
      .value = { .type = CYAML_MAPPING, .flags = CYAML_FLAG_OPTIONAL, .data_size = (size), \
                 .mapping = { .fields = (flds) } } }

/* clang-format on */

static const cyaml_schema_value_t str_entry = {
    .type = CYAML_STRING,
    .flags = CYAML_FLAG_POINTER,
    .data_size = sizeof(char),
    .string = {.min = 0, .max = CYAML_UNLIMITED},
};
static const cyaml_schema_value_t u64_entry = {
    .type = CYAML_UINT,
    .flags = CYAML_FLAG_DEFAULT,
    .data_size = sizeof(uint64_t),
};
static const cyaml_strval_t content_types[] = {
    {"json", SG_CT_JSON},
    {"protobuf", SG_CT_PROTOBUF},
};

static const cyaml_schema_field_t mqtt_fields[] = {
    F_STR("uri", IN(mqtt, uri)),
    F_STR("client_id", IN(mqtt, client_id)),
    F_SEQ("topics", IN(mqtt, topics), sizeof(char *), IN(mqtt, ntopics), SZ(mqtt.ntopics),
          &str_entry, SG_CONFIG_MAX_TOPICS),
    F_INT("qos", IN(mqtt, qos), SZ(mqtt.qos)),
    F_INT("version", IN(mqtt, version), SZ(mqtt.version)),
    F_BOOL("clean_session", IN(mqtt, clean_session), SZ(mqtt.clean_session)),
    F_UINT("keepalive_s", IN(mqtt, keepalive_s), SZ(mqtt.keepalive_s)),
    F_UINT("session_expiry_s", IN(mqtt, session_expiry_s), SZ(mqtt.session_expiry_s)),
    F_UINT("reconnect_min_ms", IN(mqtt, reconnect_min_ms), SZ(mqtt.reconnect_min_ms)),
    F_UINT("reconnect_max_ms", IN(mqtt, reconnect_max_ms), SZ(mqtt.reconnect_max_ms)),
    F_STR("username", IN(mqtt, username)),
    F_STR("password_file", IN(mqtt, password_file)),
    F_STR("ca_file", IN(mqtt, ca_file)),
    F_STR("cert_file", IN(mqtt, cert_file)),
    F_STR("key_file", IN(mqtt, key_file)),
    CYAML_FIELD_END};

static const cyaml_schema_field_t validation_fields[] = {
    F_UINT("max_past_ms", IN(validation, max_past_ms), SZ(validation.max_past_ms)),
    F_UINT("max_future_ms", IN(validation, max_future_ms), SZ(validation.max_future_ms)),
    CYAML_FIELD_END};

static const cyaml_schema_field_t limits_fields[] = {
    F_UINT("max_payload_bytes", IN(limits, max_payload_bytes), SZ(limits.max_payload_bytes)),
    F_UINT("max_readings_per_batch", IN(limits, max_readings_per_batch),
           SZ(limits.max_readings_per_batch)),
    F_UINT("max_series", IN(limits, max_series), SZ(limits.max_series)),
    F_UINT("series_idle_ms", IN(limits, series_idle_ms), SZ(limits.series_idle_ms)),
    F_UINT("ring_seqs", IN(limits, ring_seqs), SZ(limits.ring_seqs)),
    F_UINT("inbox_bytes", IN(limits, inbox_bytes), SZ(limits.inbox_bytes)),
    CYAML_FIELD_END};

static const cyaml_schema_field_t backend_fields[] = {
    F_STR("url", IN(backend, url)),
    F_STR("token_file", IN(backend, token_file)),
    F_ENUM("content_type", IN(backend, content_type), SZ(backend.content_type), content_types),
    F_UINT("max_batch_rollups", IN(backend, max_batch_rollups), SZ(backend.max_batch_rollups)),
    F_UINT("max_batch_delay_ms", IN(backend, max_batch_delay_ms), SZ(backend.max_batch_delay_ms)),
    F_UINT("timeout_ms", IN(backend, timeout_ms), SZ(backend.timeout_ms)),
    F_UINT("max_inflight", IN(backend, max_inflight), SZ(backend.max_inflight)),
    F_UINT("backoff_min_ms", IN(backend, backoff_min_ms), SZ(backend.backoff_min_ms)),
    F_UINT("backoff_max_ms", IN(backend, backoff_max_ms), SZ(backend.backoff_max_ms)),
    F_UINT("retry_after_max_ms", IN(backend, retry_after_max_ms), SZ(backend.retry_after_max_ms)),
    F_STR("ca_file", IN(backend, ca_file)),
    CYAML_FIELD_END};

static const cyaml_schema_field_t spool_fields[] = {
    F_STR("dir", IN(spool, dir)), F_UINT("max_bytes", IN(spool, max_bytes), SZ(spool.max_bytes)),
    F_UINT("max_batches", IN(spool, max_batches), SZ(spool.max_batches)),
    F_BOOL("fsync", IN(spool, fsync), SZ(spool.fsync)), CYAML_FIELD_END};

static const cyaml_schema_field_t metrics_fields[] = {F_STR("listen", IN(metrics, listen)),
                                                      F_STR("port_file", IN(metrics, port_file)),
                                                      CYAML_FIELD_END};

/* The YAML section "log" maps onto the adjacent top-level members log_level
 * and log_format: the section starts at log_level. */
static const cyaml_schema_field_t log_fields[] = {
    F_STR("level", 0),
    F_STR("format", (uint32_t)(offsetof(struct sg_config, log_format) -
                               offsetof(struct sg_config, log_level))),
    CYAML_FIELD_END};

static const cyaml_schema_field_t top_fields[] = {
    F_STR("gateway_id", TOP(gateway_id)),
    F_MAP("mqtt", TOP(mqtt), SZ(mqtt), mqtt_fields),
    F_SEQ("windows_ms", TOP(windows_ms), sizeof(uint64_t), TOP(nwindows), SZ(nwindows), &u64_entry,
          SG_CONFIG_MAX_WINDOWS),
    F_UINT("allowed_lateness_ms", TOP(allowed_lateness_ms), SZ(allowed_lateness_ms)),
    F_MAP("validation", TOP(validation), SZ(validation), validation_fields),
    F_MAP("limits", TOP(limits), SZ(limits), limits_fields),
    F_MAP("backend", TOP(backend), SZ(backend), backend_fields),
    F_MAP("spool", TOP(spool), SZ(spool), spool_fields),
    F_MAP("metrics", TOP(metrics), SZ(metrics), metrics_fields),
    F_UINT("stats_interval_s", TOP(stats_interval_s), SZ(stats_interval_s)),
    F_UINT("shutdown_timeout_ms", TOP(shutdown_timeout_ms), SZ(shutdown_timeout_ms)),
    F_MAP("log", TOP(log_level), SZ(log_level) + SZ(log_format), log_fields),
    F_BOOL("allow_root", TOP(allow_root), SZ(allow_root)),
    CYAML_FIELD_END};

static const cyaml_schema_value_t top_schema = {
    .type = CYAML_MAPPING,
    .flags = CYAML_FLAG_POINTER,
    .data_size = sizeof(struct sg_config),
    .mapping = {.fields = top_fields},
};

/* ------------------------------------------------------------------------ */
/* Rules: default and range of every leaf key of the schema                 */
/* ------------------------------------------------------------------------ */

/* One row per leaf key. Integers: value in min..max. Strings: length in
 * min..max bytes (min 0 = optional, unset by default). Sequences: each
 * entry in min..max (numbers) or of min..max bytes (strings); an absent
 * sequence gets one entry, def or def_str. Bools and enums use def. */
struct rule {
    const char *path;
    uint64_t min;
    uint64_t max;
    uint64_t def;
    const char *def_str;
    const char *const *words; /* NULL-terminated allowed values of a string */
};

#define DAY_MS UINT64_C(86400000)
#define YEAR_MS (365 * DAY_MS)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const struct rule rules[] = {
    {"gateway_id", 1, 64, 0, "gw-local-001", NULL},
    {"mqtt.uri", 1, 1024, 0, "tcp://127.0.0.1:1883", NULL},
    {"mqtt.client_id", 1, 256, 0, NULL, NULL}, /* default: sensegate-<gateway_id> */
    {"mqtt.topics", 1, 1024, 0, "sensors/#", NULL},
    {"mqtt.qos", 0, 1, 1, NULL, NULL},
    {"mqtt.version", 3, 5, 3, NULL, NULL},
    {"mqtt.clean_session", 0, 1, 0, NULL, NULL},
    {"mqtt.keepalive_s", 0, 65535, 30, NULL, NULL},
    {"mqtt.session_expiry_s", 0, UINT32_MAX, 86400, NULL, NULL},
    {"mqtt.reconnect_min_ms", 100, 3600000, 500, NULL, NULL},
    {"mqtt.reconnect_max_ms", 100, 3600000, 30000, NULL, NULL},
    {"mqtt.username", 0, 1024, 0, NULL, NULL},
    {"mqtt.password_file", 0, 4096, 0, NULL, NULL},
    {"mqtt.ca_file", 0, 4096, 0, NULL, NULL},
    {"mqtt.cert_file", 0, 4096, 0, NULL, NULL},
    {"mqtt.key_file", 0, 4096, 0, NULL, NULL},
    {"windows_ms", 1, DAY_MS, 10000, NULL, NULL},
    {"allowed_lateness_ms", 0, DAY_MS, 2000, NULL, NULL},
    {"validation.max_past_ms", 1000, YEAR_MS, 3600000, NULL, NULL},
    {"validation.max_future_ms", 0, DAY_MS, 300000, NULL, NULL},
    {"limits.max_payload_bytes", 64, 16777216, 262144, NULL, NULL},
    {"limits.max_readings_per_batch", 1, 1000000, 10000, NULL, NULL},
    {"limits.max_series", 1, 100000000, 200000, NULL, NULL},
    {"limits.series_idle_ms", 1000, YEAR_MS, 900000, NULL, NULL},
    {"limits.ring_seqs", 64, 65536, 1024, NULL, NULL},
    {"limits.inbox_bytes", 65536, UINT64_C(4294967296), 33554432, NULL, NULL},
    {"backend.url", 1, 2048, 0, "http://127.0.0.1:8080", NULL},
    {"backend.token_file", 0, 4096, 0, NULL, NULL},
    {"backend.content_type", 0, 1, SG_CT_JSON, NULL, NULL},
    {"backend.max_batch_rollups", 1, 100000, 500, NULL, NULL},
    {"backend.max_batch_delay_ms", 0, 3600000, 1000, NULL, NULL},
    {"backend.timeout_ms", 100, 600000, 10000, NULL, NULL},
    {"backend.max_inflight", 1, 64, 2, NULL, NULL},
    {"backend.backoff_min_ms", 1, 3600000, 500, NULL, NULL},
    {"backend.backoff_max_ms", 1, DAY_MS, 300000, NULL, NULL},
    {"backend.retry_after_max_ms", 0, DAY_MS, 3600000, NULL, NULL},
    {"backend.ca_file", 0, 4096, 0, NULL, NULL},
    {"spool.dir", 1, 4096, 0, "/var/lib/sensegate", NULL},
    {"spool.max_bytes", 4096, UINT64_C(1099511627776), 268435456, NULL, NULL},
    {"spool.max_batches", 1, 100000000, 100000, NULL, NULL},
    {"spool.fsync", 0, 1, 1, NULL, NULL},
    {"metrics.listen", 1, 300, 0, "127.0.0.1:9464", NULL},
    {"metrics.port_file", 0, 4096, 0, NULL, NULL},
    {"stats_interval_s", 0, 86400, 10, NULL, NULL},
    {"shutdown_timeout_ms", 0, 3600000, 10000, NULL, NULL},
    {"log.level", 1, 5, 0, "info", log_levels},
    {"log.format", 1, 4, 0, "text", log_formats},
    {"allow_root", 0, 1, 0, NULL, NULL},
};

#define NRULES (sizeof rules / sizeof rules[0])

/* Finds the schema field of a dotted leaf path and its offset from the start
 * of struct sg_config. NULL if the path is not in the schema. */
static const cyaml_schema_field_t *schema_find(const char *path, size_t *offset)
{
    const cyaml_schema_field_t *fields = top_fields;
    size_t off = 0;
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        const cyaml_schema_field_t *f = fields;
        while (f->key != NULL && (strlen(f->key) != n || strncmp(f->key, p, n) != 0)) {
            f++;
        }
        if (f->key == NULL) {
            return NULL;
        }
        off += f->data_offset;
        if (dot == NULL) {
            *offset = off;
            return f;
        }
        if (f->value.type != CYAML_MAPPING) {
            return NULL;
        }
        fields = f->value.mapping.fields;
        p = dot + 1;
    }
}

static const struct rule *rule_find(const char *path)
{
    for (size_t i = 0; i < NRULES; i++) {
        if (strcmp(rules[i].path, path) == 0) {
            return &rules[i];
        }
    }
    return NULL;
}

/* Aborts if a leaf key of the schema has no rule: its default would
 * silently be zero. (apply_rules aborts for a rule without a key.) Both are
 * programming errors in the tables above, caught by any test that loads. */
static void schema_rules_agree(const cyaml_schema_field_t *fields, const char *prefix)
{
    for (const cyaml_schema_field_t *f = fields; f->key != NULL; f++) {
        char path[128];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", f->key);
        if (f->value.type == CYAML_MAPPING) {
            schema_rules_agree(f->value.mapping.fields, path);
        } else if (rule_find(path) == NULL) {
            fprintf(stderr, "config: schema key %s has no rule\n", path);
            abort();
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Key positions: a libyaml pass over the file                              */
/* ------------------------------------------------------------------------ */

enum node_kind { NODE_SCALAR, NODE_MAPPING, NODE_SEQUENCE };

/* One value in the file: its path, where its key and value start (1-based;
 * for a sequence entry both are the entry) and, for scalars, its text. */
struct node {
    char *path;
    enum node_kind kind;
    int kline, kcol;
    int vline, vcol;
    char *text;
};

struct posmap {
    struct node *v;
    size_t n, cap;
    bool has_root;
    enum node_kind root_kind;
    char *root_text; /* root scalar text (NULL or "" means an empty document) */
};

static void posmap_free(struct posmap *pm)
{
    for (size_t i = 0; i < pm->n; i++) {
        free(pm->v[i].path);
        free(pm->v[i].text);
    }
    free(pm->v);
    free(pm->root_text);
    memset(pm, 0, sizeof *pm);
}

/* Last node with this path: for a duplicated key, that is the duplicate. */
static const struct node *posmap_find(const struct posmap *pm, const char *path)
{
    if (pm == NULL) {
        return NULL;
    }
    for (size_t i = pm->n; i > 0; i--) {
        if (strcmp(pm->v[i - 1].path, path) == 0) {
            return &pm->v[i - 1];
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Error list                                                               */
/* ------------------------------------------------------------------------ */

struct errs {
    char *buf;
    size_t cap;
    size_t len;
    int n;
    const char *file;
    const struct posmap *pm;
};

static void errs_init(struct errs *e, char *buf, size_t cap, const char *file,
                      const struct posmap *pm)
{
    e->buf = buf;
    e->cap = cap;
    e->len = 0;
    e->n = 0;
    e->file = file;
    e->pm = pm;
    if (buf != NULL && cap > 0) {
        buf[0] = '\0';
    }
}

/* A short, printable rendering of a value for messages. */
static const char *shown(const char *s, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; s != NULL && s[i] != '\0' && j + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        if (i == 40 && s[i + 1] != '\0') {
            memcpy(out + j, "...", 3);
            j += 3;
            break;
        }
    }
    out[j] = '\0';
    return out;
}

/* Appends one line as given, newline-separated from the previous one,
 * truncating at the buffer's end. Counts it even when it does not fit. */
__attribute__((format(printf, 2, 3))) static void errs_raw(struct errs *e, const char *fmt, ...)
{
    e->n++;
    if (e->buf == NULL || e->cap == 0 || e->len + 1 >= e->cap) {
        return;
    }
    size_t room = e->cap - e->len;
    int w = snprintf(e->buf + e->len, room, "%s", e->len > 0 ? "\n" : "");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(e->buf + e->len + w, room - (size_t)w, fmt, ap);
    va_end(ap);
    if (m < 0) {
        e->buf[e->len] = '\0';
        return;
    }
    size_t total = (size_t)w + (size_t)m;
    e->len = total < room ? e->len + total : e->cap - 1;
}

/* Appends "FILE:LINE:COL: key: message" (line 0 = no position, key NULL or
 * "" = no key). */
__attribute__((format(printf, 5, 6))) static void errs_at(struct errs *e, int line, int col,
                                                          const char *key, const char *fmt, ...)
{
    char msg[1024];
    char where[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0) {
        snprintf(where, sizeof where, ":%d:%d", line, col);
    }
    char keybuf[64];
    bool k = key != NULL && key[0] != '\0';
    errs_raw(e, "%s%s: %s%s%s", e->file, where, k ? shown(key, keybuf, sizeof keybuf) : "",
             k ? ": " : "", msg);
}

struct line_ref {
    char *text;
    long line, col;
    size_t order;
};

static int line_cmp(const void *a, const void *b)
{
    const struct line_ref *x = a, *y = b;
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    if (x->col != y->col) {
        return x->col < y->col ? -1 : 1;
    }
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* Sorts the lines by their FILE:LINE:COL, as a compiler reports them,
 * stably; lines without a position go last. */
static void errs_sort(struct errs *e)
{
    if (e->buf == NULL || e->len == 0) {
        return;
    }
    size_t flen = strlen(e->file);
    size_t n = 1;
    for (size_t i = 0; i < e->len; i++) {
        n += e->buf[i] == '\n';
    }
    struct line_ref *v = sg_xcalloc(n, sizeof *v);
    char *copy = sg_xstrdup(e->buf);
    char *save = NULL;
    size_t k = 0;
    for (char *ln = strtok_r(copy, "\n", &save); ln != NULL && k < n;
         ln = strtok_r(NULL, "\n", &save)) {
        char *end = NULL;
        v[k].text = ln;
        v[k].line = LONG_MAX;
        v[k].col = LONG_MAX;
        v[k].order = k;
        if (strncmp(ln, e->file, flen) == 0 && ln[flen] == ':') {
            long l = strtol(ln + flen + 1, &end, 10);
            if (end != ln + flen + 1 && *end == ':') {
                v[k].line = l;
                v[k].col = strtol(end + 1, NULL, 10);
            }
        }
        k++;
    }
    qsort(v, k, sizeof *v, line_cmp);
    size_t w = 0;
    for (size_t i = 0; i < k; i++) {
        size_t len = strlen(v[i].text);
        bool sep = w > 0;
        memcpy(e->buf + w + sep, v[i].text, len);
        if (sep) {
            e->buf[w] = '\n';
        }
        w += len + sep;
    }
    e->buf[w] = '\0';
    free(copy);
    free(v);
}

/* Reports a problem with the value of paths[0] ("must ..."). The position
 * is that of the first of paths present in the file; when that is another
 * key, the line names it and then the subject ("b: a must ..."). Without
 * any, the line has no position. paths is NULL-terminated. */
__attribute__((format(printf, 3, 4))) static void errs_key(struct errs *e, const char *const *paths,
                                                           const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (size_t i = 0; paths[i] != NULL; i++) {
        const struct node *nd = posmap_find(e->pm, paths[i]);
        if (nd != NULL && i == 0) {
            errs_at(e, nd->vline, nd->vcol, paths[0], "%s", msg);
            return;
        }
        if (nd != NULL) {
            errs_at(e, nd->vline, nd->vcol, paths[i], "%s %s", paths[0], msg);
            return;
        }
    }
    errs_at(e, 0, 0, paths[0], "%s", msg);
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------------ */
/* The libyaml pass                                                         */
/* ------------------------------------------------------------------------ */

struct frame {
    enum node_kind kind;
    char *path;
    bool want_key;   /* mapping: next scalar is a key */
    char *key;       /* mapping: pending key */
    int kline, kcol; /* mapping: where the pending key is */
    size_t index;    /* sequence: next entry index */
};

static char *join_path(const char *parent, const char *key, size_t index, bool is_index)
{
    size_t n = strlen(parent) + (key ? strlen(key) : 0) + 32;
    char *s = sg_xmalloc(n);
    if (is_index) {
        snprintf(s, n, "%s[%zu]", parent, index);
    } else if (parent[0] == '\0') {
        snprintf(s, n, "%s", key);
    } else {
        snprintf(s, n, "%s.%s", parent, key);
    }
    return s;
}

static void posmap_add(struct posmap *pm, char *path, enum node_kind kind, int kline, int kcol,
                       int vline, int vcol, const char *text)
{
    if (pm->n == pm->cap) {
        pm->cap = pm->cap ? pm->cap * 2 : 64;
        pm->v = sg_xrealloc(pm->v, pm->cap * sizeof pm->v[0]);
    }
    struct node *nd = &pm->v[pm->n++];
    nd->path = path;
    nd->kind = kind;
    nd->kline = kline;
    nd->kcol = kcol;
    nd->vline = vline;
    nd->vcol = vcol;
    nd->text = text ? sg_xstrdup(text) : NULL;
}

/* Walks the YAML events of data and fills pm. Returns 0, or SG_EINVAL with
 * the syntax (or unsupported-construct) error in e. */
static int scan_positions(const unsigned char *data, size_t len, struct posmap *pm, struct errs *e)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct frame st[MAX_DEPTH];
    size_t depth = 0;
    int ndocs = 0;
    int rc = SG_EINVAL;
    bool done = false;

    if (!yaml_parser_initialize(&parser)) {
        errs_at(e, 0, 0, NULL, "cannot initialise the YAML parser");
        return SG_EINVAL;
    }
    yaml_parser_set_input_string(&parser, data, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_READER_ERROR) {
                errs_at(e, 0, 0, NULL, "YAML error: %s at byte %zu", parser.problem,
                        parser.problem_offset);
            } else if (parser.context != NULL) {
                errs_at(e, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1,
                        NULL, "YAML syntax error: %s (%s at line %d, column %d)",
                        parser.problem ? parser.problem : "invalid YAML", parser.context,
                        (int)parser.context_mark.line + 1, (int)parser.context_mark.column + 1);
            } else {
                errs_at(e, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1,
                        NULL, "YAML syntax error: %s",
                        parser.problem ? parser.problem : "invalid YAML");
            }
            goto cleanup;
        }
        int line = (int)ev.start_mark.line + 1;
        int col = (int)ev.start_mark.column + 1;
        enum node_kind kind = NODE_SCALAR;
        bool is_node = false;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs > 1) {
                errs_at(e, line, col, NULL, "only one YAML document is allowed");
                yaml_event_delete(&ev);
                goto cleanup;
            }
            break;
        case YAML_ALIAS_EVENT:
            errs_at(e, line, col, NULL, "YAML aliases (*%s) are not supported",
                    (const char *)ev.data.alias.anchor);
            yaml_event_delete(&ev);
            goto cleanup;
        case YAML_SCALAR_EVENT:
            is_node = true;
            kind = NODE_SCALAR;
            break;
        case YAML_MAPPING_START_EVENT:
            is_node = true;
            kind = NODE_MAPPING;
            break;
        case YAML_SEQUENCE_START_EVENT:
            is_node = true;
            kind = NODE_SEQUENCE;
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            free(st[depth].path);
            free(st[depth].key);
            break;
        default:
            break;
        }
        if (is_node) {
            const char *text = kind == NODE_SCALAR ? (const char *)ev.data.scalar.value : NULL;
            char *path = NULL;
            int kline = line, kcol = col;
            if (depth == 0) {
                pm->has_root = true;
                pm->root_kind = kind;
                if (text != NULL) {
                    pm->root_text = sg_xstrdup(text);
                }
                path = sg_xstrdup("");
            } else {
                struct frame *f = &st[depth - 1];
                if (f->kind == NODE_MAPPING && f->want_key) {
                    if (kind != NODE_SCALAR) {
                        errs_at(e, line, col, f->path, "keys must be plain words");
                        yaml_event_delete(&ev);
                        goto cleanup;
                    }
                    f->key = sg_xstrdup(text);
                    f->kline = line;
                    f->kcol = col;
                    f->want_key = false;
                    yaml_event_delete(&ev);
                    continue;
                }
                if (f->kind == NODE_MAPPING) {
                    path = join_path(f->path, f->key, 0, false);
                    kline = f->kline;
                    kcol = f->kcol;
                    free(f->key);
                    f->key = NULL;
                    f->want_key = true;
                } else {
                    path = join_path(f->path, NULL, f->index++, true);
                }
                if (pm->n >= MAX_NODES) {
                    errs_at(e, line, col, NULL, "too many keys (more than %d)", MAX_NODES);
                    free(path);
                    yaml_event_delete(&ev);
                    goto cleanup;
                }
                posmap_add(pm, sg_xstrdup(path), kind, kline, kcol, line, col, text);
            }
            if (kind != NODE_SCALAR) {
                if (depth == MAX_DEPTH) {
                    errs_at(e, line, col, path, "nested too deeply");
                    free(path);
                    yaml_event_delete(&ev);
                    goto cleanup;
                }
                st[depth].kind = kind;
                st[depth].path = path;
                st[depth].want_key = true;
                st[depth].key = NULL;
                st[depth].index = 0;
                depth++;
            } else {
                free(path);
            }
        }
        yaml_event_delete(&ev);
    }
    rc = 0;

cleanup:
    while (depth > 0) {
        depth--;
        free(st[depth].path);
        free(st[depth].key);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* libcyaml: log collection and translation                                 */
/* ------------------------------------------------------------------------ */

struct cylog {
    char text[CYLOG_CAP];
    size_t len;
};

__attribute__((format(printf, 3, 0))) static void cy_log(cyaml_log_t level, void *ctx,
                                                         const char *fmt, va_list args)
{
    struct cylog *lg = ctx;
    if (level < CYAML_LOG_ERROR || lg->len + 1 >= sizeof lg->text) {
        return;
    }
    int w = vsnprintf(lg->text + lg->len, sizeof lg->text - lg->len, fmt, args);
    if (w > 0) {
        lg->len += (size_t)w;
        if (lg->len >= sizeof lg->text) {
            lg->len = sizeof lg->text - 1;
        }
    }
}

/* All our memory is plain malloc, so a config is freed the same way whether
 * libcyaml or the defaults filled it. */
static void *cy_mem(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

static const cyaml_config_t cy_config_base = {
    .log_fn = cy_log,
    .mem_fn = cy_mem,
    .log_level = CYAML_LOG_ERROR,
    .flags = CYAML_CFG_NO_ALIAS,
};

/* What a leaf key accepts, for messages: "must be 0..1". */
static void describe(const cyaml_schema_field_t *f, const struct rule *r, char *out, size_t cap)
{
    cyaml_type_e t = f->value.type;
    if (t == CYAML_SEQUENCE) {
        t = f->value.sequence.entry->type;
    }
    switch (t) {
    case CYAML_INT:
    case CYAML_UINT:
        snprintf(out, cap, "must be %llu..%llu", (unsigned long long)r->min,
                 (unsigned long long)r->max);
        break;
    case CYAML_BOOL:
        snprintf(out, cap, "must be true or false");
        break;
    case CYAML_ENUM: {
        size_t w = (size_t)snprintf(out, cap, "must be one of:");
        for (uint32_t i = 0; i < f->value.enumeration.count && w < cap; i++) {
            w += (size_t)snprintf(out + w, cap - w, "%s %s", i ? "," : "",
                                  f->value.enumeration.strings[i].str);
        }
        break;
    }
    case CYAML_STRING:
        if (r->words != NULL) {
            size_t w = (size_t)snprintf(out, cap, "must be one of:");
            for (size_t i = 0; r->words[i] != NULL && w < cap; i++) {
                w += (size_t)snprintf(out + w, cap - w, "%s %s", i ? "," : "", r->words[i]);
            }
        } else {
            snprintf(out, cap, "must be a string");
        }
        break;
    default:
        snprintf(out, cap, "has the wrong type");
        break;
    }
}

static const char *event_noun(const char *ev)
{
    if (strstr(ev, "SEQUENCE") != NULL) {
        return "a list";
    }
    if (strstr(ev, "MAPPING") != NULL) {
        return "a mapping";
    }
    return "a single value";
}

/* Levenshtein distance of two short strings (longer ones: a large number). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[65];
    if (la > 64 || lb > 64) {
        return 1000;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) {
                best = up + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* "unknown key; did you mean 'qos'?" or the list of valid keys. */
static void unknown_key(struct errs *e, int line, int col, const char *parent, const char *key,
                        const char *path)
{
    const cyaml_schema_field_t *fields = top_fields;
    if (parent[0] != '\0') {
        size_t off;
        const cyaml_schema_field_t *pf = schema_find(parent, &off);
        if (pf != NULL && pf->value.type == CYAML_MAPPING) {
            fields = pf->value.mapping.fields;
        }
    }
    const char *best = NULL;
    /* Suggest only near misses: one edit for short keys, two for longer. */
    size_t bestd = strlen(key) <= 4 ? 2 : 3;
    char list[512];
    size_t w = 0;
    list[0] = '\0';
    for (const cyaml_schema_field_t *f = fields; f->key != NULL; f++) {
        size_t d = edit_distance(key, f->key);
        if (d < bestd) {
            bestd = d;
            best = f->key;
        }
        if (w < sizeof list) {
            w += (size_t)snprintf(list + w, sizeof list - w, "%s%s", w ? ", " : "", f->key);
        }
    }
    if (best != NULL) {
        errs_at(e, line, col, path, "unknown key; did you mean '%s'?", best);
    } else {
        errs_at(e, line, col, path, "unknown key (valid keys here: %s)", list);
    }
}

/* Turns libcyaml's collected log ("Load: <problem>" then backtrace lines
 * "  in mapping field 'k' (line: N, column: M)", innermost first) into one
 * message naming the key path and its position. */
static void translate_cyaml(struct errs *e, const struct cylog *lg, cyaml_err_t err)
{
    char problem[256] = "";
    char parts[MAX_DEPTH][80];
    size_t nparts = 0;
    int bline = 0, bcol = 0;

    char copy[CYLOG_CAP];
    memcpy(copy, lg->text, lg->len);
    copy[lg->len] = '\0';
    char *save = NULL;
    for (char *ln = strtok_r(copy, "\n", &save); ln != NULL; ln = strtok_r(NULL, "\n", &save)) {
        char name[80];
        int l, c;
        unsigned idx;
        if (strncmp(ln, "Load: ", 6) == 0) {
            if (problem[0] == '\0' && strcmp(ln + 6, "Backtrace:") != 0) {
                snprintf(problem, sizeof problem, "%s", ln + 6);
            }
        } else if (sscanf(ln, " in mapping field '%79[^']' (line: %d, column: %d)", name, &l, &c) ==
                   3) {
            if (nparts < MAX_DEPTH) {
                snprintf(parts[nparts++], sizeof parts[0], "%s", name);
            }
            if (bline == 0) {
                bline = l;
                bcol = c;
            }
        } else if (sscanf(ln, " in sequence entry '%u' (line: %d, column: %d)", &idx, &l, &c) ==
                   3) {
            /* libcyaml 1.3.1 names an entry by the count read so far,
             * which is its 0-based index + 1 when a value fails. */
            if (nparts < MAX_DEPTH) {
                snprintf(parts[nparts++], sizeof parts[0], "[%u]", idx > 0 ? idx - 1 : 0);
            }
            if (bline == 0) {
                bline = l;
                bcol = c;
            }
        } else if (sscanf(ln, " in mapping (line: %d, column: %d)", &l, &c) == 2) {
            if (bline == 0) {
                bline = l;
                bcol = c;
            }
        }
    }

    /* The backtrace is innermost first; build the path outermost first. */
    char path[512] = "";
    char parent[512] = "";
    size_t w = 0;
    for (size_t i = nparts; i > 0; i--) {
        const char *p = parts[i - 1];
        if (w < sizeof path) {
            w += (size_t)snprintf(path + w, sizeof path - w, "%s%s",
                                  (w > 0 && p[0] != '[') ? "." : "", p);
        }
        if (i == 2) {
            snprintf(parent, sizeof parent, "%s", path);
        }
    }
    if (nparts == 1) {
        parent[0] = '\0';
    }

    const struct node *nd = posmap_find(e->pm, path);
    int line = nd ? nd->vline : bline;
    int col = nd ? nd->vcol : bcol;
    char key[128];
    char ev[64];
    size_t maxn;

    if (sscanf(problem, "Unexpected key: %127[^\n]", key) == 1) {
        /* The backtrace ends at the mapping holding the key. */
        char full[700];
        snprintf(full, sizeof full, "%s%s%s", path, path[0] ? "." : "", key);
        const struct node *kn = posmap_find(e->pm, full);
        unknown_key(e, kn ? kn->kline : line, kn ? kn->kcol : col, path, key, full);
        return;
    }
    if (sscanf(problem, "Mapping field already seen: %127[^\n]", key) == 1) {
        /* The backtrace names the duplicate itself. */
        errs_at(e, nd ? nd->kline : line, nd ? nd->kcol : col, path,
                "duplicate key (already set above)");
        return;
    }
    if (sscanf(problem, "Excessive entries (%zu max) in sequence", &maxn) == 1) {
        char *br = strrchr(path, '[');
        if (br != NULL) {
            *br = '\0';
        }
        nd = posmap_find(e->pm, path);
        errs_at(e, nd ? nd->vline : line, nd ? nd->vcol : col, path,
                "too many entries (at most %zu)", maxn);
        return;
    }

    /* A value libcyaml could not read: say what the key accepts. */
    const char *leaf = path;
    char seqpath[512];
    snprintf(seqpath, sizeof seqpath, "%s", path);
    char *br = strrchr(seqpath, '[');
    if (br != NULL) {
        *br = '\0';
        leaf = seqpath;
    }
    size_t off;
    const cyaml_schema_field_t *f = path[0] ? schema_find(leaf, &off) : NULL;
    const struct rule *r = rule_find(leaf);
    bool got_event = sscanf(problem, "Expecting %*s got event: %63s", ev) == 1;
    char got[128] = "";
    if (got_event) {
        if (nd != NULL && nd->kind == NODE_SCALAR && nd->text != NULL && nd->text[0] == '\0') {
            snprintf(got, sizeof got, " (got an empty value)");
        } else {
            snprintf(got, sizeof got, " (got %s)", event_noun(ev));
        }
    } else if (nd != NULL && nd->text != NULL) {
        char sh[64];
        snprintf(got, sizeof got, " (got '%s')", shown(nd->text, sh, sizeof sh));
    }

    if (path[0] == '\0') {
        errs_at(e, line > 0 ? line : 1, line > 0 ? col : 1, NULL,
                "the file must be a mapping of keys (got %s)",
                got_event ? event_noun(ev) : "something else");
    } else if (f != NULL && f->value.type == CYAML_MAPPING) {
        errs_at(e, line, col, path, "must be a mapping of keys%s", got);
    } else if (f != NULL && f->value.type == CYAML_SEQUENCE && br == NULL) {
        errs_at(e, line, col, path, "must be a list, e.g. [a, b]%s", got);
    } else if (f != NULL && r != NULL) {
        char what[256];
        describe(f, r, what, sizeof what);
        errs_at(e, line, col, path, "%s%s", what, got);
    } else {
        errs_at(e, line, col, path, "%s (%s)", problem[0] ? problem : "invalid",
                cyaml_strerror(err));
    }
}

/* ------------------------------------------------------------------------ */
/* Values: defaults, raw-text parsing, range checks                         */
/* ------------------------------------------------------------------------ */

static void store_int(void *p, const cyaml_schema_value_t *v, uint64_t x)
{
    if (v->data_size == 8) {
        uint64_t y = x;
        memcpy(p, &y, sizeof y);
    } else if (v->data_size == 4 && v->type == CYAML_UINT) {
        uint32_t y = (uint32_t)x;
        memcpy(p, &y, sizeof y);
    } else if (v->data_size == 4) {
        int32_t y = (int32_t)x;
        memcpy(p, &y, sizeof y);
    } else if (v->data_size == 1) {
        uint8_t y = (uint8_t)x;
        memcpy(p, &y, sizeof y);
    } else {
        abort(); /* schema sizes are fixed above; anything else is a bug */
    }
}

/* Reads an integer field; negative signed values come back as 0 with *neg. */
static uint64_t load_int(const void *p, const cyaml_schema_value_t *v, bool *neg)
{
    *neg = false;
    if (v->data_size == 8) {
        uint64_t y;
        memcpy(&y, p, sizeof y);
        return y;
    }
    if (v->data_size == 4 && v->type == CYAML_UINT) {
        uint32_t y;
        memcpy(&y, p, sizeof y);
        return y;
    }
    if (v->data_size == 4) {
        int32_t y;
        memcpy(&y, p, sizeof y);
        *neg = y < 0;
        return y < 0 ? 0 : (uint64_t)y;
    }
    uint8_t y;
    memcpy(&y, p, sizeof y);
    return y;
}

static uint64_t type_max(const cyaml_schema_value_t *v)
{
    if (v->data_size == 8) {
        return UINT64_MAX;
    }
    if (v->data_size == 4) {
        return v->type == CYAML_UINT ? UINT32_MAX : INT32_MAX;
    }
    return UINT8_MAX;
}

/* Parses one scalar's raw text into the field at p. Numbers must be plain
 * decimal (no sign, hex or junk); bools true or false. 0 or SG_EINVAL. */
static int parse_scalar(struct errs *e, const struct node *nd, const cyaml_schema_field_t *f,
                        const cyaml_schema_value_t *v, const struct rule *r, void *p)
{
    char sh[64];
    char what[256];
    const char *text = nd->text ? nd->text : "";
    if (v->type == CYAML_INT || v->type == CYAML_UINT) {
        uint64_t x;
        if (sg_parse_u64(text, 0, type_max(v), &x) != 0) {
            describe(f, r, what, sizeof what);
            errs_at(e, nd->vline, nd->vcol, nd->path, "%s (got '%s')", what,
                    shown(text, sh, sizeof sh));
            return SG_EINVAL;
        }
        store_int(p, v, x);
    } else if (v->type == CYAML_BOOL) {
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
            errs_at(e, nd->vline, nd->vcol, nd->path, "must be true or false (got '%s')",
                    shown(text, sh, sizeof sh));
            return SG_EINVAL;
        }
        store_int(p, v, strcmp(text, "true") == 0);
    }
    return 0;
}

/* Applies defaults to absent keys and, with a file, re-parses present
 * scalars from their raw text. Returns 0 or SG_EINVAL (errors in e). */
static int apply_rules(struct sg_config *c, const struct posmap *pm, struct errs *e)
{
    int rc = 0;
    schema_rules_agree(top_fields, "");
    for (size_t i = 0; i < NRULES; i++) {
        const struct rule *r = &rules[i];
        size_t off;
        const cyaml_schema_field_t *f = schema_find(r->path, &off);
        if (f == NULL) {
            abort(); /* rules and schema disagree: a bug, caught by test_config */
        }
        char *base = (char *)c + off;
        const struct node *nd = posmap_find(pm, r->path);
        const cyaml_schema_value_t *v = &f->value;

        if (v->type == CYAML_SEQUENCE) {
            const cyaml_schema_value_t *ev = v->sequence.entry;
            size_t count;
            memcpy(&count, (char *)c + (off - f->data_offset) + f->count_offset, sizeof count);
            if (nd == NULL) {
                count = 1;
                if (ev->type == CYAML_STRING) {
                    char *s = sg_xstrdup(r->def_str);
                    memcpy(base, &s, sizeof s);
                } else {
                    store_int(base, ev, r->def);
                }
                memcpy((char *)c + (off - f->data_offset) + f->count_offset, &count, sizeof count);
                continue;
            }
            if (ev->type == CYAML_STRING) {
                continue;
            }
            for (size_t j = 0; j < count; j++) {
                char ep[128];
                snprintf(ep, sizeof ep, "%s[%zu]", r->path, j);
                const struct node *en = posmap_find(pm, ep);
                if (en != NULL && parse_scalar(e, en, f, ev, r, base + j * ev->data_size) != 0) {
                    rc = SG_EINVAL;
                }
            }
            continue;
        }
        if (v->type == CYAML_STRING) {
            char *s;
            memcpy(&s, base, sizeof s);
            if (nd == NULL && r->def_str != NULL) {
                s = sg_xstrdup(r->def_str);
                memcpy(base, &s, sizeof s);
            } else if (s != NULL && s[0] == '\0' && r->min == 0) {
                /* An empty optional string means "not set". */
                free(s);
                s = NULL;
                memcpy(base, &s, sizeof s);
            }
            continue;
        }
        if (nd == NULL) {
            store_int(base, v, r->def);
        } else if (v->type != CYAML_ENUM && parse_scalar(e, nd, f, v, r, base) != 0) {
            rc = SG_EINVAL;
        }
    }

    /* Derived defaults and normal forms. */
    if (c->mqtt.client_id == NULL && c->gateway_id != NULL) {
        size_t n = strlen(c->gateway_id) + sizeof "sensegate-";
        c->mqtt.client_id = sg_xmalloc(n);
        snprintf(c->mqtt.client_id, n, "sensegate-%s", c->gateway_id);
    }
    if (c->backend.url != NULL) {
        /* POST <url>/v1/rollups: "http://h:1/" must not become "http://h:1//v1". */
        size_t n = strlen(c->backend.url);
        while (n > 0 && c->backend.url[n - 1] == '/') {
            c->backend.url[--n] = '\0';
        }
    }
    return rc;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* An MQTT topic filter: '+' and '#' only as whole levels, '#' only last. */
static bool topic_filter_ok(const char *t)
{
    if (t[0] == '\0') {
        return false;
    }
    for (const char *p = t; *p != '\0'; p++) {
        bool level_start = p == t || p[-1] == '/';
        bool level_end = p[1] == '\0' || p[1] == '/';
        if (*p == '+' && !(level_start && level_end)) {
            return false;
        }
        if (*p == '#' && !(level_start && p[1] == '\0')) {
            return false;
        }
    }
    return true;
}

static bool id_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

/* The text after "scheme://" up to the next '/', or NULL if empty. */
static bool has_host(const char *url)
{
    const char *h = strstr(url, "://");
    return h != NULL && h[3] != '\0' && h[3] != '/' && h[3] != ':';
}

/* Generic per-rule checks on the struct's values: ranges, lengths, word
 * lists, non-empty sequences. */
static void check_rules(const struct sg_config *c, struct errs *e)
{
    char sh[64];
    for (size_t i = 0; i < NRULES; i++) {
        const struct rule *r = &rules[i];
        size_t off;
        const cyaml_schema_field_t *f = schema_find(r->path, &off);
        const char *base = (const char *)c + off;
        const cyaml_schema_value_t *v = &f->value;
        bool neg;
        if (v->type == CYAML_SEQUENCE) {
            const cyaml_schema_value_t *ev = v->sequence.entry;
            size_t count;
            memcpy(&count, (const char *)c + (off - f->data_offset) + f->count_offset,
                   sizeof count);
            if (count == 0 || count > v->sequence.max) {
                errs_key(e, KEYS(r->path), "must list 1..%u entries (got %zu)", v->sequence.max,
                         count);
                continue;
            }
            for (size_t j = 0; j < count; j++) {
                char ep[128];
                snprintf(ep, sizeof ep, "%s[%zu]", r->path, j);
                if (ev->type == CYAML_STRING) {
                    const char *s;
                    memcpy(&s, base + j * sizeof s, sizeof s);
                    size_t n = s ? strlen(s) : 0;
                    if (n < r->min || n > r->max) {
                        errs_key(e, KEYS(ep, r->path), "must be %llu..%llu bytes long",
                                 (unsigned long long)r->min, (unsigned long long)r->max);
                    }
                } else {
                    uint64_t x = load_int(base + j * ev->data_size, ev, &neg);
                    if (neg || x < r->min || x > r->max) {
                        errs_key(e, KEYS(ep, r->path), "must be %llu..%llu (got %llu)",
                                 (unsigned long long)r->min, (unsigned long long)r->max,
                                 (unsigned long long)x);
                    }
                }
            }
        } else if (v->type == CYAML_STRING) {
            const char *s;
            memcpy(&s, base, sizeof s);
            size_t n = s ? strlen(s) : 0;
            if (s == NULL && r->min == 0) {
                continue;
            }
            if (r->words != NULL) {
                size_t k = 0;
                while (r->words[k] != NULL && strcmp(r->words[k], s ? s : "") != 0) {
                    k++;
                }
                if (r->words[k] == NULL) {
                    char what[256];
                    describe(f, r, what, sizeof what);
                    errs_key(e, KEYS(r->path), "%s (got '%s')", what, shown(s, sh, sizeof sh));
                }
            } else if (n == 0 && r->min > 0) {
                errs_key(e, KEYS(r->path), "must not be empty");
            } else if (n < r->min || n > r->max) {
                errs_key(e, KEYS(r->path), "must be %llu..%llu bytes long",
                         (unsigned long long)r->min, (unsigned long long)r->max);
            }
        } else if (v->type == CYAML_INT || v->type == CYAML_UINT || v->type == CYAML_ENUM) {
            uint64_t x = load_int(base, v, &neg);
            if (neg || x < r->min || x > r->max) {
                char what[256];
                describe(f, r, what, sizeof what);
                if (neg) {
                    errs_key(e, KEYS(r->path), "%s (got a negative number)", what);
                } else {
                    errs_key(e, KEYS(r->path), "%s (got %llu)", what, (unsigned long long)x);
                }
            }
        }
    }
}

/* Every check on a loaded struct: per-key ranges, then cross-field rules.
 * Positions come from pm when the key is in the file. */
static int check_all(const struct sg_config *c, struct errs *e)
{
    char sh[64];
    int before = e->n;

    check_rules(c, e);

    if (c->gateway_id != NULL) {
        for (const char *p = c->gateway_id; *p != '\0'; p++) {
            if (!id_char_ok(*p)) {
                errs_key(e, KEYS("gateway_id"),
                         "must be 1..64 characters of [A-Za-z0-9._:-] (got '%s')",
                         shown(c->gateway_id, sh, sizeof sh));
                break;
            }
        }
    }

    static const char *const mqtt_schemes[] = {"tcp://",   "ssl://", "mqtt://",
                                               "mqtts://", "ws://",  "wss://"};
    if (c->mqtt.uri != NULL && c->mqtt.uri[0] != '\0') {
        bool ok = false;
        for (size_t i = 0; i < sizeof mqtt_schemes / sizeof mqtt_schemes[0]; i++) {
            ok = ok || has_prefix(c->mqtt.uri, mqtt_schemes[i]);
        }
        if (!ok || !has_host(c->mqtt.uri)) {
            errs_key(e, KEYS("mqtt.uri"),
                     "must be tcp://, ssl://, mqtt://, mqtts://, ws:// or wss:// followed by "
                     "host:port (got '%s')",
                     shown(c->mqtt.uri, sh, sizeof sh));
        }
    }

    for (size_t i = 0; i < c->mqtt.ntopics && i < SG_CONFIG_MAX_TOPICS; i++) {
        char ep[64];
        snprintf(ep, sizeof ep, "mqtt.topics[%zu]", i);
        if (c->mqtt.topics[i] != NULL && c->mqtt.topics[i][0] != '\0' &&
            !topic_filter_ok(c->mqtt.topics[i])) {
            errs_key(e, KEYS(ep, "mqtt.topics"),
                     "not a valid topic filter: '+' and '#' must fill a whole level and '#' "
                     "must be last (got '%s')",
                     shown(c->mqtt.topics[i], sh, sizeof sh));
        }
    }

    if (c->mqtt.version == 4) {
        errs_key(e, KEYS("mqtt.version"), "must be 3 (MQTT 3.1.1) or 5 (MQTT 5), not 4");
    }
    if (c->mqtt.reconnect_min_ms > c->mqtt.reconnect_max_ms) {
        errs_key(e, KEYS("mqtt.reconnect_min_ms", "mqtt.reconnect_max_ms"),
                 "must not exceed mqtt.reconnect_max_ms (%u) (got %u)", c->mqtt.reconnect_max_ms,
                 c->mqtt.reconnect_min_ms);
    }
    if ((c->mqtt.cert_file == NULL) != (c->mqtt.key_file == NULL)) {
        errs_key(e, KEYS("mqtt.cert_file", "mqtt.key_file"),
                 "must be set together with mqtt.key_file (client certificate and its key)");
    }

    uint64_t wmax = 0;
    for (size_t i = 0; i < c->nwindows && i < SG_CONFIG_MAX_WINDOWS; i++) {
        wmax = c->windows_ms[i] > wmax ? c->windows_ms[i] : wmax;
        for (size_t j = 0; j < i; j++) {
            if (c->windows_ms[j] == c->windows_ms[i]) {
                char ep[64];
                snprintf(ep, sizeof ep, "windows_ms[%zu]", i);
                errs_key(e, KEYS(ep, "windows_ms"),
                         "%llu is listed twice; each window width must be different",
                         (unsigned long long)c->windows_ms[i]);
                break;
            }
        }
    }

    uint64_t need = c->validation.max_future_ms + c->allowed_lateness_ms + wmax;
    if (c->limits.series_idle_ms <= need) {
        errs_key(e,
                 KEYS("limits.series_idle_ms", "validation.max_future_ms", "allowed_lateness_ms",
                      "windows_ms"),
                 "must be greater than validation.max_future_ms + allowed_lateness_ms + "
                 "max(windows_ms) = %llu (got %llu), or a window could be emitted twice",
                 (unsigned long long)need, (unsigned long long)c->limits.series_idle_ms);
    }

    uint64_t rs = c->limits.ring_seqs;
    if (rs != 0 && (rs & (rs - 1)) != 0) {
        errs_key(e, KEYS("limits.ring_seqs"), "must be a power of two in 64..65536 (got %llu)",
                 (unsigned long long)rs);
    }
    if (c->limits.inbox_bytes < c->limits.max_payload_bytes) {
        errs_key(e, KEYS("limits.inbox_bytes", "limits.max_payload_bytes"),
                 "must be at least limits.max_payload_bytes (%llu) to hold one message "
                 "(got %llu)",
                 (unsigned long long)c->limits.max_payload_bytes,
                 (unsigned long long)c->limits.inbox_bytes);
    }

    if (c->backend.url != NULL && c->backend.url[0] != '\0' &&
        ((!has_prefix(c->backend.url, "http://") && !has_prefix(c->backend.url, "https://")) ||
         !has_host(c->backend.url))) {
        errs_key(e, KEYS("backend.url"),
                 "must be http:// or https:// followed by a host (got '%s')",
                 shown(c->backend.url, sh, sizeof sh));
    }
    if (c->backend.backoff_min_ms > c->backend.backoff_max_ms) {
        errs_key(e, KEYS("backend.backoff_min_ms", "backend.backoff_max_ms"),
                 "must not exceed backend.backoff_max_ms (%llu) (got %llu)",
                 (unsigned long long)c->backend.backoff_max_ms,
                 (unsigned long long)c->backend.backoff_min_ms);
    }

    if (c->metrics.listen != NULL && c->metrics.listen[0] != '\0') {
        char host[256];
        uint16_t port;
        if (sg_parse_hostport(c->metrics.listen, host, sizeof host, &port) != 0 ||
            host[0] == '\0') {
            errs_key(e, KEYS("metrics.listen"),
                     "must be host:port, e.g. 127.0.0.1:9464 (port 0 = any free port) "
                     "(got '%s')",
                     shown(c->metrics.listen, sh, sizeof sh));
        }
    }

    return e->n > before ? SG_EINVAL : 0;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

int sg_config_check(const struct sg_config *c, char *err, size_t errcap)
{
    struct errs e;
    errs_init(&e, err, errcap, (c && c->path) ? c->path : "<config>", NULL);
    if (c == NULL) {
        errs_at(&e, 0, 0, NULL, "no configuration");
        return SG_EINVAL;
    }
    return check_all(c, &e);
}

void sg_config_free(struct sg_config *c)
{
    if (c == NULL) {
        return;
    }
    free(c->path);
    c->path = NULL;
    struct cylog lg = {.len = 0};
    cyaml_config_t cfg = cy_config_base;
    cfg.log_ctx = &lg;
    cyaml_free(&cfg, &top_schema, c, 0);
}

/* Reads the whole file (bounded). Returns 0 or SG_EIO/SG_ETOOBIG with the
 * message in e. */
static int read_file(const char *path, unsigned char **out, size_t *len, struct errs *e)
{
    unsigned char *buf = NULL;
    size_t n = 0;
    int rc = SG_EIO;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        errs_raw(e, "cannot open %s: %s", path, strerror(errno));
        return SG_EIO;
    }
    /* Grow as needed: a config is a few KiB, so no 1 MiB buffer per load. */
    size_t cap = 8192;
    buf = sg_xmalloc(cap);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap || n > MAX_FILE_BYTES) {
            break;
        }
        cap = cap * 2 > MAX_FILE_BYTES + 1 ? MAX_FILE_BYTES + 1 : cap * 2;
        buf = sg_xrealloc(buf, cap);
    }
    if (ferror(f)) {
        errs_raw(e, "cannot read %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (n > MAX_FILE_BYTES) {
        errs_at(e, 0, 0, NULL, "file larger than %d bytes; is this the right file?",
                MAX_FILE_BYTES);
        rc = SG_ETOOBIG;
        goto cleanup;
    }
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;

cleanup:
    free(buf);
    fclose(f);
    return rc;
}

int sg_config_load(struct sg_config **out, const char *path, char *err, size_t errcap)
{
    struct posmap pm = {0};
    struct errs e;
    struct cylog lg = {.len = 0};
    unsigned char *data = NULL;
    size_t len = 0;
    struct sg_config *c = NULL;
    int rc = SG_EINVAL;

    errs_init(&e, err, errcap, path ? path : "<defaults>", &pm);
    if (out == NULL) {
        errs_at(&e, 0, 0, NULL, "no output pointer");
        return SG_EINVAL;
    }
    *out = NULL;

    if (path != NULL) {
        if (read_file(path, &data, &len, &e) != 0) {
            goto cleanup;
        }
        if (scan_positions(data, len, &pm, &e) != 0) {
            goto cleanup;
        }
    }

    /* An empty file or document (no keys, or a lone "~") means all defaults;
     * libcyaml would call the null document a scalar. */
    bool empty =
        !pm.has_root || (pm.root_kind == NODE_SCALAR &&
                         (pm.root_text == NULL || pm.root_text[0] == '\0' ||
                          strcmp(pm.root_text, "~") == 0 || strcmp(pm.root_text, "null") == 0));
    if (!empty) {
        cyaml_config_t cfg = cy_config_base;
        cfg.log_ctx = &lg;
        cyaml_err_t cerr = cyaml_load_data(data, len, &cfg, &top_schema, (cyaml_data_t **)&c, NULL);
        if (cerr != CYAML_OK) {
            translate_cyaml(&e, &lg, cerr);
            c = NULL;
            goto cleanup;
        }
    }
    if (c == NULL) {
        c = sg_xcalloc(1, sizeof *c);
    }
    c->path = sg_xstrdup(path ? path : "<defaults>");

    if (apply_rules(c, &pm, &e) != 0) {
        errs_sort(&e);
        goto cleanup;
    }
    if (check_all(c, &e) != 0) {
        errs_sort(&e);
        goto cleanup;
    }
    *out = c;
    c = NULL;
    rc = 0;

cleanup:
    sg_config_free(c);
    posmap_free(&pm);
    free(data);
    return rc;
}

/*
 * config: loads the YAML configuration into struct sg_config and checks it.
 *
 * One table, keys[] below, describes every key once: its type, where it
 * lives in struct sg_config, its default (or how an unset value follows
 * other keys), its range, and whether SIGHUP applies it live (and when) or
 * it needs a restart (and why). Everything else is driven by that table:
 * loading, defaults, range checks, "did you mean" suggestions, the reload
 * diff (sg_config_reload_merge) and the reload table in docs/OPERATING.md,
 * which a unit test compares with it.
 *
 * Loading reads the file once and walks it once with libyaml, recording
 * every value with its path ("mqtt.qos", "windows_ms[1]"), the line and
 * column of its key and value, and its raw text. Then, in three phases,
 * each reported in full before stopping:
 *  1. shape: unknown and duplicate keys, a list or mapping where the table
 *     wants something else, too many entries;
 *  2. values: numbers are plain decimal (no sign, hex or junk), bools true
 *     or false, enums one of their words;
 *  3. checks: per-key ranges from the table, then the cross-field rules,
 *     which sg_config_check() also exposes.
 * Problems are structs (struct sg_config_error) sorted by position, and
 * printed as "FILE:LINE:COL: key.path: what is wrong", or "FILE: key.path:
 * ..." when the key is not in the file.
 *
 * All memory of a struct sg_config is plain malloc. Loop thread, or main
 * before the loop starts; no global state.
 *
 * Long file: the table and everything it drives (loading, checks, the
 * reload merge) share its private accessors, and the 48 rows with their
 * notes are 130 lines of it. The libyaml position pass and the error list
 * are the parts that could move to a file of their own.
 */
#include "config.h"

#include "common.h"

#include <yaml.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1024 * 1024) /* a config is a few KiB; refuse anything silly */
#define MAX_DEPTH 16                 /* our keys nest two levels */
#define MAX_NODES 4096

#define DAY_MS UINT64_C(86400000)
#define YEAR_MS (365 * DAY_MS)

/* ------------------------------------------------------------------------ */
/* The table                                                                */
/* ------------------------------------------------------------------------ */

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const content_types[] = {"json", "protobuf", NULL}; /* = enum sg_content_type */

#define OFF(f) offsetof(struct sg_config, f)

/* clang-format off */
#define NUM(n, t, f, mn, mx, d, lv, nt) \
    { .name = (n), .type = (t), .off = OFF(f), .min = (mn), .max = (mx), .def = (d), \
      .live = (lv), .note = (nt) }
#define STR(n, f, mn, mx, d, lv, nt) \
    { .name = (n), .type = SG_KEY_STR, .off = OFF(f), .min = (mn), .max = (mx), .def_str = (d), \
      .live = (lv), .note = (nt) }
#define WORD(n, f, w, d, lv, nt) \
    { .name = (n), .type = SG_KEY_WORD, .off = OFF(f), .min = 1, .max = 16, .def_str = (d), \
      .words = (w), .live = (lv), .note = (nt) }

#define RESTART_MQTT "the MQTT client is created once, at start, with it"
#define RESTART_TLS "read by the MQTT client when it is created, at start"

static const struct sg_config_key keys[] = {
    STR("gateway_id", gateway_id, 1, 64, "gw-local-001", false,
        "names every batch_id, the metrics and the default client id; batches already spooled "
        "carry the old one"),
    STR("mqtt.uri", mqtt.uri, 1, 1024, "tcp://127.0.0.1:1883", false, RESTART_MQTT),
    {.name = "mqtt.client_id", .type = SG_KEY_STR, .off = OFF(mqtt.client_id), .min = 1,
     .max = 256, .derived = "sensegate-<gateway_id>", .live = false,
     .note = "the broker finds our persistent session by it; " RESTART_MQTT},
    {.name = "mqtt.topics", .type = SG_KEY_STRLIST, .off = OFF(mqtt.topics),
     .count_off = OFF(mqtt.ntopics), .max_entries = SG_CONFIG_MAX_TOPICS, .min = 1, .max = 1024,
     .def_str = "sensors/#", .live = true,
     .note = "at once: removed filters are unsubscribed, added ones subscribed (on the next "
             "connect when disconnected)"},
    NUM("mqtt.qos", SG_KEY_INT, mqtt.qos, 0, 1, 1, true,
        "at once: every filter is subscribed again with the new QoS"),
    NUM("mqtt.version", SG_KEY_INT, mqtt.version, 3, 5, 3, false, RESTART_MQTT),
    NUM("mqtt.clean_session", SG_KEY_BOOL, mqtt.clean_session, 0, 1, 0, false, RESTART_MQTT),
    NUM("mqtt.keepalive_s", SG_KEY_U32, mqtt.keepalive_s, 0, 65535, 30, false, RESTART_MQTT),
    NUM("mqtt.session_expiry_s", SG_KEY_U32, mqtt.session_expiry_s, 0, UINT32_MAX, 86400, false,
        RESTART_MQTT),
    NUM("mqtt.reconnect_min_ms", SG_KEY_U32, mqtt.reconnect_min_ms, 100, 3600000, 500, true,
        "at the next reconnect delay"),
    NUM("mqtt.reconnect_max_ms", SG_KEY_U32, mqtt.reconnect_max_ms, 100, 3600000, 30000, true,
        "at the next reconnect delay"),
    STR("mqtt.username", mqtt.username, 0, 1024, NULL, false, RESTART_MQTT),
    STR("mqtt.password_file", mqtt.password_file, 0, 4096, NULL, false,
        "the password is read once, at start"),
    STR("mqtt.ca_file", mqtt.ca_file, 0, 4096, NULL, false, RESTART_TLS),
    STR("mqtt.cert_file", mqtt.cert_file, 0, 4096, NULL, false, RESTART_TLS),
    STR("mqtt.key_file", mqtt.key_file, 0, 4096, NULL, false, RESTART_TLS),
    {.name = "windows_ms", .type = SG_KEY_U64LIST, .off = OFF(windows_ms),
     .count_off = OFF(nwindows), .max_entries = SG_CONFIG_MAX_WINDOWS, .min = 1, .max = DAY_MS,
     .def = 10000, .live = false,
     .note = "open windows and the journal replay after a crash are laid out by these widths"},
    NUM("allowed_lateness_ms", SG_KEY_U64, allowed_lateness_ms, 0, DAY_MS, 2000, false,
        "open windows were scheduled to close with it; a change would close some early or "
        "emit a window twice"),
    NUM("validation.max_past_ms", SG_KEY_U64, validation.max_past_ms, 1000, YEAR_MS, 3600000,
        true, "on the next reading"),
    NUM("validation.max_future_ms", SG_KEY_U64, validation.max_future_ms, 0, DAY_MS, 300000, true,
        "on the next reading (and the journal's retention)"),
    NUM("limits.max_payload_bytes", SG_KEY_U64, limits.max_payload_bytes, 64, 16777216, 262144,
        false, "checked on the MQTT thread, and it sizes the decoder's arena and the inbox"),
    NUM("limits.max_readings_per_batch", SG_KEY_U64, limits.max_readings_per_batch, 1, 1000000,
        10000, true, "on the next payload"),
    NUM("limits.max_series", SG_KEY_U64, limits.max_series, 1, 100000000, 200000, false,
        "the series table is laid out for it at start"),
    {.name = "limits.series_idle_ms", .type = SG_KEY_U64, .off = OFF(limits.series_idle_ms),
     .min = 1000, .max = YEAR_MS, .def = 900000,
     .derived = "900000 + whatever allowed_lateness_ms + max(windows_ms) exceed 12000",
     .live = true, .note = "at the next idle sweep (every second)"},
    NUM("limits.ring_seqs", SG_KEY_U64, limits.ring_seqs, 64, 65536, 1024, false,
        "every series' duplicate ring is allocated with it"),
    NUM("limits.inbox_bytes", SG_KEY_U64, limits.inbox_bytes, 65536, UINT64_C(4294967296),
        33554432, false, "the inbox between the MQTT thread and the loop is allocated at start"),
    STR("backend.url", backend.url, 1, 2048, "http://127.0.0.1:8080", false,
        "batches already spooled were made for this backend; the forwarder is set up for it "
        "at start"),
    STR("backend.token_file", backend.token_file, 0, 4096, NULL, false,
        "the token is read once, at start"),
    {.name = "backend.content_type", .type = SG_KEY_ENUM, .off = OFF(backend.content_type),
     .min = 0, .max = 1, .def = SG_CT_JSON, .words = content_types, .live = true,
     .note = "for the next batch (spooled batches keep theirs)"},
    NUM("backend.max_batch_rollups", SG_KEY_U64, backend.max_batch_rollups, 1, 100000, 500, true,
        "for the next rollup"),
    NUM("backend.max_batch_delay_ms", SG_KEY_U64, backend.max_batch_delay_ms, 0, 3600000, 1000,
        true, "for the next batch"),
    NUM("backend.timeout_ms", SG_KEY_U64, backend.timeout_ms, 100, 600000, 10000, true,
        "on the next request"),
    NUM("backend.max_inflight", SG_KEY_U64, backend.max_inflight, 1, 64, 2, true,
        "on the next request (requests in flight finish)"),
    NUM("backend.backoff_min_ms", SG_KEY_U64, backend.backoff_min_ms, 1, 3600000, 500, true,
        "at the next failure"),
    NUM("backend.backoff_max_ms", SG_KEY_U64, backend.backoff_max_ms, 1, DAY_MS, 300000, true,
        "at the next failure"),
    NUM("backend.retry_after_max_ms", SG_KEY_U64, backend.retry_after_max_ms, 0, DAY_MS, 3600000,
        true, "at the next Retry-After"),
    STR("backend.ca_file", backend.ca_file, 0, 4096, NULL, false,
        "the forwarder is set up with it at start"),
    STR("spool.dir", spool.dir, 1, 4096, "/var/lib/sensegate", false,
        "the spool and the journal are open in it"),
    NUM("spool.max_bytes", SG_KEY_U64, spool.max_bytes, 4096, UINT64_C(1099511627776), 268435456,
        true, "on the next push"),
    NUM("spool.max_batches", SG_KEY_U64, spool.max_batches, 1, 100000000, 100000, true,
        "on the next push"),
    NUM("spool.fsync", SG_KEY_BOOL, spool.fsync, 0, 1, 1, false,
        "the spool database and the journal are opened with it"),
    STR("metrics.listen", metrics.listen, 1, 300, "127.0.0.1:9464", false,
        "the listening socket is bound at start"),
    STR("metrics.port_file", metrics.port_file, 0, 4096, NULL, false,
        "written once, when the socket is bound"),
    NUM("stats_interval_s", SG_KEY_U64, stats_interval_s, 0, 86400, 10, true,
        "at the next tick"),
    NUM("shutdown_timeout_ms", SG_KEY_U64, shutdown_timeout_ms, 0, 3600000, 10000, true,
        "at the next SIGTERM"),
    WORD("log.level", log_level, log_levels, "info", true, "at once"),
    WORD("log.format", log_format, log_formats, "text", true, "at once"),
    NUM("allow_root", SG_KEY_BOOL, allow_root, 0, 1, 0, false,
        "checked once, before the gateway starts"),
};
/* clang-format on */

#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= 64, "set_keys is a 64-bit mask");

size_t sg_config_nkeys(void)
{
    return NKEYS;
}

const struct sg_config_key *sg_config_key_at(size_t i)
{
    return i < NKEYS ? &keys[i] : NULL;
}

const struct sg_config_key *sg_config_key_find(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            return &keys[i];
        }
    }
    return NULL;
}

static size_t key_index(const struct sg_config_key *k)
{
    return (size_t)(k - keys);
}

/* Typed access to a key's storage. */
static char **str_at(struct sg_config *c, const struct sg_config_key *k)
{
    return (char **)((char *)c + k->off);
}
static char *const *cstr_at(const struct sg_config *c, const struct sg_config_key *k)
{
    return (char *const *)((const char *)c + k->off);
}
static size_t *count_at(struct sg_config *c, const struct sg_config_key *k)
{
    return (size_t *)((char *)c + k->count_off);
}
static size_t ccount(const struct sg_config *c, const struct sg_config_key *k)
{
    return *(const size_t *)((const char *)c + k->count_off);
}

/* Numbers, bools and enums as uint64_t; *neg for a negative int. */
static uint64_t num_get(const struct sg_config *c, const struct sg_config_key *k, bool *neg)
{
    const char *p = (const char *)c + k->off;
    *neg = false;
    switch (k->type) {
    case SG_KEY_BOOL:
        return *(const bool *)p;
    case SG_KEY_INT:
    case SG_KEY_ENUM: {
        int v;
        memcpy(&v, p, sizeof v);
        *neg = v < 0;
        return v < 0 ? 0 : (uint64_t)v;
    }
    case SG_KEY_U32:
        return *(const uint32_t *)p;
    case SG_KEY_U64:
        return *(const uint64_t *)p;
    default:
        abort(); /* not a number: a bug in the caller */
    }
}

static void num_set(struct sg_config *c, const struct sg_config_key *k, uint64_t x)
{
    char *p = (char *)c + k->off;
    switch (k->type) {
    case SG_KEY_BOOL:
        *(bool *)p = x != 0;
        break;
    case SG_KEY_INT:
    case SG_KEY_ENUM: {
        int v = (int)x;
        memcpy(p, &v, sizeof v);
        break;
    }
    case SG_KEY_U32:
        *(uint32_t *)p = (uint32_t)x;
        break;
    case SG_KEY_U64:
        *(uint64_t *)p = x;
        break;
    default:
        abort();
    }
}

/* The largest value the storage of a number key holds. */
static uint64_t type_max(const struct sg_config_key *k)
{
    switch (k->type) {
    case SG_KEY_INT:
        return INT_MAX;
    case SG_KEY_U32:
        return UINT32_MAX;
    default:
        return UINT64_MAX;
    }
}

/* A section is the part before the first dot of some key. */
static bool is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < NKEYS; i++) {
        if (strncmp(keys[i].name, path, n) == 0 && keys[i].name[n] == '.') {
            return true;
        }
    }
    return false;
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
    int root_line, root_col;
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
    struct sg_config_errors *list;
    int n;
    const struct posmap *pm;
};

static void errs_init(struct errs *e, struct sg_config_errors *list, const char *file,
                      const struct posmap *pm)
{
    free(list->file);
    list->file = sg_xstrdup(file);
    list->n = 0;
    e->list = list;
    e->n = 0;
    e->pm = pm;
}

static struct sg_config_error *errs_push(struct errs *e)
{
    struct sg_config_errors *l = e->list;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = sg_xrealloc(l->v, l->cap * sizeof l->v[0]);
    }
    struct sg_config_error *x = &l->v[l->n++];
    memset(x, 0, sizeof *x);
    e->n++;
    return x;
}

void sg_config_errors_free(struct sg_config_errors *e)
{
    if (e == NULL) {
        return;
    }
    free(e->file);
    free(e->v);
    memset(e, 0, sizeof *e);
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

/* A whole line as given ("cannot open FILE: ..."). */
__attribute__((format(printf, 2, 3))) static void errs_raw(struct errs *e, const char *fmt, ...)
{
    struct sg_config_error *x = errs_push(e);
    x->raw = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
    va_end(ap);
}

/* "FILE:LINE:COL: key: message" (line 0 = no position, key NULL or "" = no
 * key). */
__attribute__((format(printf, 5, 6))) static void errs_at(struct errs *e, int line, int col,
                                                          const char *key, const char *fmt, ...)
{
    struct sg_config_error *x = errs_push(e);
    x->line = line > 0 ? line : 0;
    x->col = line > 0 ? col : 0;
    if (key != NULL) {
        shown(key, x->key, sizeof x->key < 64 ? sizeof x->key : 64);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
    va_end(ap);
}

static int err_cmp(const void *a, const void *b)
{
    const struct sg_config_error *x = *(const struct sg_config_error *const *)a;
    const struct sg_config_error *y = *(const struct sg_config_error *const *)b;
    long xl = x->line > 0 ? x->line : LONG_MAX, yl = y->line > 0 ? y->line : LONG_MAX;
    long xc = x->line > 0 ? x->col : LONG_MAX, yc = y->line > 0 ? y->col : LONG_MAX;
    if (xl != yl) {
        return xl < yl ? -1 : 1;
    }
    if (xc != yc) {
        return xc < yc ? -1 : 1;
    }
    return x < y ? -1 : (x > y); /* stable: by insertion order */
}

/* Sorts by position, as a compiler reports, stably; positionless last. */
static void errs_sort(struct errs *e)
{
    struct sg_config_errors *l = e->list;
    if (l->n < 2) {
        return;
    }
    const struct sg_config_error **p = sg_xcalloc(l->n, sizeof *p);
    for (size_t i = 0; i < l->n; i++) {
        p[i] = &l->v[i];
    }
    qsort(p, l->n, sizeof *p, err_cmp);
    struct sg_config_error *v = sg_xcalloc(l->n, sizeof *v);
    for (size_t i = 0; i < l->n; i++) {
        v[i] = *p[i];
    }
    free(l->v);
    free(p);
    l->v = v;
    l->cap = l->n;
}

void sg_config_errors_format(const struct sg_config_errors *e, char *out, size_t cap)
{
    if (out == NULL || cap == 0) {
        return;
    }
    out[0] = '\0';
    size_t w = 0;
    for (size_t i = 0; e != NULL && i < e->n && w + 1 < cap; i++) {
        const struct sg_config_error *x = &e->v[i];
        char where[64] = "";
        if (x->line > 0) {
            snprintf(where, sizeof where, ":%d:%d", x->line, x->col);
        }
        bool k = x->key[0] != '\0';
        int m;
        if (x->raw) {
            m = snprintf(out + w, cap - w, "%s%s", i ? "\n" : "", x->msg);
        } else {
            m = snprintf(out + w, cap - w, "%s%s%s: %s%s%s", i ? "\n" : "",
                         e->file ? e->file : "", where, k ? x->key : "", k ? ": " : "", x->msg);
        }
        if (m < 0) {
            out[w] = '\0';
            return;
        }
        w = (size_t)m < cap - w ? w + (size_t)m : cap - 1;
    }
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
                pm->root_line = line;
                pm->root_col = col;
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
                    /* Paths are joined with '.' and '[i]': a key holding
                     * those would pass for another ("mqtt.qos" at the top). */
                    if (strpbrk(text, ".[]") != NULL) {
                        char *kp = join_path(f->path, text, 0, false);
                        errs_at(e, line, col, kp,
                                "unknown key; sections nest by indentation, not with '.' "
                                "(e.g. mqtt: on one line, qos: indented below it)");
                        free(kp);
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
/* Loading: shape, then values                                              */
/* ------------------------------------------------------------------------ */

/* What a key accepts, for messages: "must be 0..1". */
static void describe(const struct sg_config_key *k, char *out, size_t cap)
{
    switch (k->type) {
    case SG_KEY_INT:
    case SG_KEY_U32:
    case SG_KEY_U64:
    case SG_KEY_U64LIST:
        snprintf(out, cap, "must be %llu..%llu", (unsigned long long)k->min,
                 (unsigned long long)k->max);
        break;
    case SG_KEY_BOOL:
        snprintf(out, cap, "must be true or false");
        break;
    case SG_KEY_ENUM:
    case SG_KEY_WORD: {
        size_t w = (size_t)snprintf(out, cap, "must be one of:");
        for (size_t i = 0; k->words[i] != NULL && w < cap; i++) {
            w += (size_t)snprintf(out + w, cap - w, "%s %s", i ? "," : "", k->words[i]);
        }
        break;
    }
    default:
        snprintf(out, cap, "must be a string");
        break;
    }
}

static const char *kind_noun(const struct node *nd)
{
    if (nd->kind == NODE_SEQUENCE) {
        return "a list";
    }
    if (nd->kind == NODE_MAPPING) {
        return "a mapping";
    }
    return nd->text != NULL && nd->text[0] == '\0' ? "an empty value" : "a single value";
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

/* The names valid right under parent ("" = top level), in table order,
 * each once: "url", "mqtt", ... Calls fn for each. */
static void for_each_child(const char *parent, void (*fn)(void *ctx, const char *name, size_t n),
                           void *ctx)
{
    size_t plen = strlen(parent);
    const char *seen[NKEYS];
    size_t nseen[NKEYS];
    size_t ns = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *name = keys[i].name;
        if (plen > 0) {
            if (strncmp(name, parent, plen) != 0 || name[plen] != '.') {
                continue;
            }
            name += plen + 1;
        }
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        bool dup = false;
        for (size_t j = 0; j < ns && !dup; j++) {
            dup = nseen[j] == n && strncmp(seen[j], name, n) == 0;
        }
        if (!dup) {
            seen[ns] = name;
            nseen[ns++] = n;
            fn(ctx, name, n);
        }
    }
}

struct suggest {
    const char *key;
    char best[64];
    size_t bestd;
    char list[512];
    size_t w;
};

static void suggest_one(void *ctx, const char *name, size_t n)
{
    struct suggest *s = ctx;
    char cand[64];
    snprintf(cand, sizeof cand, "%.*s", (int)n, name);
    size_t d = edit_distance(s->key, cand);
    if (d < s->bestd) {
        s->bestd = d;
        snprintf(s->best, sizeof s->best, "%s", cand);
    }
    if (s->w < sizeof s->list) {
        s->w += (size_t)snprintf(s->list + s->w, sizeof s->list - s->w, "%s%s", s->w ? ", " : "",
                                 cand);
    }
}

/* "unknown key; did you mean 'qos'?" or the list of valid keys. */
static void unknown_key(struct errs *e, const struct node *nd)
{
    const char *dot = strrchr(nd->path, '.');
    char parent[256];
    snprintf(parent, sizeof parent, "%.*s", dot ? (int)(dot - nd->path) : 0, nd->path);
    /* Suggest only near misses: one edit for short keys, two for longer. */
    struct suggest s = {.key = dot ? dot + 1 : nd->path};
    s.bestd = strlen(s.key) <= 4 ? 2 : 3;
    for_each_child(parent, suggest_one, &s);
    if (s.best[0] != '\0') {
        errs_at(e, nd->kline, nd->kcol, nd->path, "unknown key; did you mean '%s'?", s.best);
    } else {
        errs_at(e, nd->kline, nd->kcol, nd->path, "unknown key (valid keys here: %s)", s.list);
    }
}

static bool has_path_prefix(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '.' || path[n] == '[');
}

/* Phase 1: every node of the file is a known key, once, of the right shape.
 * The values stay in the nodes. Returns 0 or SG_EINVAL. */
static int check_shape(const struct posmap *pm, struct errs *e)
{
    int before = e->n;
    const char *skip = NULL; /* a bad node: its children are not looked at */
    for (size_t i = 0; i < pm->n; i++) {
        const struct node *nd = &pm->v[i];
        if (skip != NULL && has_path_prefix(nd->path, skip)) {
            continue;
        }
        skip = NULL;
        size_t len = strlen(nd->path);
        if (len > 0 && nd->path[len - 1] == ']') {
            continue; /* a list entry: looked at with its list */
        }
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            dup = strcmp(pm->v[j].path, nd->path) == 0;
        }
        if (dup) {
            errs_at(e, nd->kline, nd->kcol, nd->path, "duplicate key (already set above)");
            skip = nd->path;
            continue;
        }
        const struct sg_config_key *k = sg_config_key_find(nd->path);
        if (k == NULL && is_section(nd->path)) {
            if (nd->kind != NODE_MAPPING) {
                errs_at(e, nd->vline, nd->vcol, nd->path, "must be a mapping of keys (got %s)",
                        kind_noun(nd));
                skip = nd->path;
            }
            continue;
        }
        if (k == NULL) {
            unknown_key(e, nd);
            skip = nd->path;
            continue;
        }
        char what[256];
        bool list = k->type == SG_KEY_STRLIST || k->type == SG_KEY_U64LIST;
        if (list && nd->kind != NODE_SEQUENCE) {
            errs_at(e, nd->vline, nd->vcol, nd->path, "must be a list, e.g. [a, b] (got %s)",
                    kind_noun(nd));
            skip = nd->path;
            continue;
        }
        if (!list && nd->kind != NODE_SCALAR) {
            describe(k, what, sizeof what);
            errs_at(e, nd->vline, nd->vcol, nd->path, "%s (got %s)", what, kind_noun(nd));
            skip = nd->path;
            continue;
        }
        if (!list) {
            continue;
        }
        size_t count = 0;
        for (size_t j = i + 1; j < pm->n && has_path_prefix(pm->v[j].path, nd->path); j++) {
            const struct node *en = &pm->v[j];
            if (en->path[len] != '[' || strchr(en->path + len, '.') != NULL ||
                strchr(en->path + len + 1, '[') != NULL) {
                continue; /* inside an entry: reported with the entry */
            }
            count++;
            if (en->kind != NODE_SCALAR) {
                describe(k, what, sizeof what);
                errs_at(e, en->vline, en->vcol, en->path, "%s (got %s)", what, kind_noun(en));
            }
        }
        if (count > k->max_entries) {
            errs_at(e, nd->vline, nd->vcol, nd->path, "too many entries (at most %zu)",
                    k->max_entries);
        }
        skip = nd->path;
    }
    return e->n > before ? SG_EINVAL : 0;
}

/* Parses one number or bool scalar into *x: numbers plain decimal within
 * the storage type (the range is checked later, with the other rules),
 * bools true or false. 0 or SG_EINVAL (reported). */
static int parse_value(struct errs *e, const struct node *nd, const struct sg_config_key *k,
                       uint64_t *x)
{
    char sh[64];
    char what[256];
    const char *text = nd->text ? nd->text : "";
    if (k->type == SG_KEY_BOOL) {
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
            errs_at(e, nd->vline, nd->vcol, nd->path, "must be true or false (got '%s')",
                    shown(text, sh, sizeof sh));
            return SG_EINVAL;
        }
        *x = strcmp(text, "true") == 0;
        return 0;
    }
    if (k->type == SG_KEY_ENUM) {
        for (size_t i = 0; k->words[i] != NULL; i++) {
            if (strcmp(text, k->words[i]) == 0) {
                *x = i;
                return 0;
            }
        }
    } else if (sg_parse_u64(text, 0, type_max(k), x) == 0) {
        return 0;
    }
    describe(k, what, sizeof what);
    errs_at(e, nd->vline, nd->vcol, nd->path, "%s (got '%s')", what, shown(text, sh, sizeof sh));
    return SG_EINVAL;
}

/* Phase 2: the values of the file into c, defaults for the rest (except
 * derived ones: derive()). Returns 0 or SG_EINVAL (reported). */
static int load_values(struct sg_config *c, const struct posmap *pm, struct errs *e)
{
    int rc = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct sg_config_key *k = &keys[i];
        const struct node *nd = posmap_find(pm, k->name);
        if (nd != NULL) {
            c->set_keys |= UINT64_C(1) << i;
        }
        switch (k->type) {
        case SG_KEY_STR:
        case SG_KEY_WORD: {
            const char *v = nd ? (nd->text ? nd->text : "") : k->def_str;
            if (nd != NULL && v[0] == '\0' && k->min == 0) {
                v = NULL; /* an empty optional string means "not set" */
            }
            *str_at(c, k) = v ? sg_xstrdup(v) : NULL;
            break;
        }
        case SG_KEY_STRLIST:
        case SG_KEY_U64LIST: {
            size_t n = 0;
            char ep[160];
            if (nd == NULL) {
                n = 1;
                if (k->type == SG_KEY_STRLIST) {
                    str_at(c, k)[0] = sg_xstrdup(k->def_str);
                } else {
                    ((uint64_t *)((char *)c + k->off))[0] = k->def;
                }
            }
            for (; nd != NULL && n < k->max_entries; n++) {
                snprintf(ep, sizeof ep, "%s[%zu]", k->name, n);
                const struct node *en = posmap_find(pm, ep);
                if (en == NULL) {
                    break;
                }
                if (k->type == SG_KEY_STRLIST) {
                    str_at(c, k)[n] = sg_xstrdup(en->text ? en->text : "");
                } else {
                    uint64_t x = 0;
                    if (parse_value(e, en, k, &x) != 0) {
                        rc = SG_EINVAL;
                    }
                    ((uint64_t *)((char *)c + k->off))[n] = x;
                }
            }
            *count_at(c, k) = n;
            break;
        }
        default: {
            uint64_t x = k->def;
            if (nd != NULL && parse_value(e, nd, k, &x) != 0) {
                rc = SG_EINVAL;
            }
            num_set(c, k, x);
            break;
        }
        }
    }
    return rc;
}

/* The default of limits.series_idle_ms: 900000, raised by however much
 * allowed_lateness_ms + max(windows_ms) exceed their defaults (2000 +
 * 10000), so that raising either does not make the untouched default too
 * small. validation.max_future_ms is deliberately not followed: a larger
 * value keeps every idle series in memory that much longer, so the file has
 * to say so. */
static uint64_t series_idle_default(const struct sg_config *c)
{
    uint64_t wmax = 0;
    for (size_t i = 0; i < c->nwindows && i < SG_CONFIG_MAX_WINDOWS; i++) {
        wmax = c->windows_ms[i] > wmax ? c->windows_ms[i] : wmax;
    }
    uint64_t extra = c->allowed_lateness_ms + wmax;
    return extra > 12000 ? 900000 + (extra - 12000) : 900000;
}

static bool key_set(const struct sg_config *c, const char *name)
{
    const struct sg_config_key *k = sg_config_key_find(name);
    return (c->set_keys >> key_index(k)) & 1u;
}

/* Derived defaults and normal forms; run again after a reload merge. */
static void derive(struct sg_config *c)
{
    if (!key_set(c, "mqtt.client_id") && c->gateway_id != NULL) {
        size_t n = strlen(c->gateway_id) + sizeof "sensegate-";
        free(c->mqtt.client_id);
        c->mqtt.client_id = sg_xmalloc(n);
        snprintf(c->mqtt.client_id, n, "sensegate-%s", c->gateway_id);
    }
    if (!key_set(c, "limits.series_idle_ms")) {
        c->limits.series_idle_ms = series_idle_default(c);
    }
    if (c->backend.url != NULL) {
        /* POST <url>/v1/rollups: "http://h:1/" must not become "http://h:1//v1". */
        size_t n = strlen(c->backend.url);
        while (n > 0 && c->backend.url[n - 1] == '/') {
            c->backend.url[--n] = '\0';
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Phase 3: checks                                                          */
/* ------------------------------------------------------------------------ */

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

/* Per-key checks from the table: ranges, lengths, word lists, list sizes. */
static void check_keys(const struct sg_config *c, struct errs *e)
{
    char sh[64];
    char what[256];
    for (size_t i = 0; i < NKEYS; i++) {
        const struct sg_config_key *k = &keys[i];
        const char *base = (const char *)c + k->off;
        bool neg;
        switch (k->type) {
        case SG_KEY_STRLIST:
        case SG_KEY_U64LIST: {
            size_t count = ccount(c, k);
            if (count == 0 || count > k->max_entries) {
                errs_key(e, KEYS(k->name), "must list 1..%zu entries (got %zu)", k->max_entries,
                         count);
                break;
            }
            for (size_t j = 0; j < count; j++) {
                char ep[160];
                snprintf(ep, sizeof ep, "%s[%zu]", k->name, j);
                if (k->type == SG_KEY_STRLIST) {
                    const char *s = ((char *const *)(const void *)base)[j];
                    size_t n = s ? strlen(s) : 0;
                    if (n < k->min || n > k->max) {
                        errs_key(e, KEYS(ep, k->name), "must be %llu..%llu bytes long",
                                 (unsigned long long)k->min, (unsigned long long)k->max);
                    }
                } else {
                    uint64_t x = ((const uint64_t *)(const void *)base)[j];
                    if (x < k->min || x > k->max) {
                        errs_key(e, KEYS(ep, k->name), "must be %llu..%llu (got %llu)",
                                 (unsigned long long)k->min, (unsigned long long)k->max,
                                 (unsigned long long)x);
                    }
                }
            }
            break;
        }
        case SG_KEY_STR:
        case SG_KEY_WORD: {
            const char *s = *cstr_at(c, k);
            size_t n = s ? strlen(s) : 0;
            if (s == NULL && k->min == 0) {
                break;
            }
            if (k->words != NULL) {
                size_t w = 0;
                while (k->words[w] != NULL && strcmp(k->words[w], s ? s : "") != 0) {
                    w++;
                }
                if (k->words[w] == NULL) {
                    describe(k, what, sizeof what);
                    errs_key(e, KEYS(k->name), "%s (got '%s')", what, shown(s, sh, sizeof sh));
                }
            } else if (n == 0 && k->min > 0) {
                errs_key(e, KEYS(k->name), "must not be empty");
            } else if (n < k->min || n > k->max) {
                errs_key(e, KEYS(k->name), "must be %llu..%llu bytes long",
                         (unsigned long long)k->min, (unsigned long long)k->max);
            }
            break;
        }
        case SG_KEY_BOOL:
            break;
        default: {
            uint64_t x = num_get(c, k, &neg);
            if (neg || x < k->min || x > k->max) {
                describe(k, what, sizeof what);
                if (neg) {
                    errs_key(e, KEYS(k->name), "%s (got a negative number)", what);
                } else {
                    errs_key(e, KEYS(k->name), "%s (got %llu)", what, (unsigned long long)x);
                }
            }
            break;
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

    check_keys(c, e);

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
    struct sg_config_errors list = {0};
    struct errs e;
    errs_init(&e, &list, (c && c->path) ? c->path : "<config>", NULL);
    int rc = SG_EINVAL;
    if (c == NULL) {
        errs_at(&e, 0, 0, NULL, "no configuration");
    } else {
        rc = check_all(c, &e);
    }
    sg_config_errors_format(&list, err, errcap);
    sg_config_errors_free(&list);
    return rc;
}

static void free_value(struct sg_config *c, const struct sg_config_key *k)
{
    if (k->type == SG_KEY_STR || k->type == SG_KEY_WORD) {
        free(*str_at(c, k));
        *str_at(c, k) = NULL;
    } else if (k->type == SG_KEY_STRLIST) {
        for (size_t j = 0; j < k->max_entries; j++) {
            free(str_at(c, k)[j]);
            str_at(c, k)[j] = NULL;
        }
        *count_at(c, k) = 0;
    }
}

void sg_config_free(struct sg_config *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        free_value(c, &keys[i]);
    }
    free(c->path);
    free(c);
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


int sg_config_load_errs(struct sg_config **out, const char *path, struct sg_config_errors *errs)
{
    struct posmap pm = {0};
    struct sg_config_errors local = {0};
    struct errs e;
    unsigned char *data = NULL;
    size_t len = 0;
    struct sg_config *c = NULL;
    int rc = SG_EINVAL;

    errs_init(&e, errs ? errs : &local, path ? path : "<defaults>", &pm);
    if (out == NULL) {
        errs_at(&e, 0, 0, NULL, "no output pointer");
        goto cleanup;
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

    /* An empty file or document (no keys, or a lone "~") means all defaults. */
    bool empty =
        !pm.has_root || (pm.root_kind == NODE_SCALAR &&
                         (pm.root_text == NULL || pm.root_text[0] == '\0' ||
                          strcmp(pm.root_text, "~") == 0 || strcmp(pm.root_text, "null") == 0));
    if (!empty && pm.root_kind != NODE_MAPPING) {
        errs_at(&e, pm.root_line, pm.root_col, NULL,
                "the file must be a mapping of keys (got %s)",
                pm.root_kind == NODE_SEQUENCE ? "a list" : "a single value");
        goto cleanup;
    }
    if (check_shape(&pm, &e) != 0) {
        errs_sort(&e);
        goto cleanup;
    }
    c = sg_xcalloc(1, sizeof *c);
    c->path = sg_xstrdup(path ? path : "<defaults>");
    if (load_values(c, &pm, &e) != 0) {
        errs_sort(&e);
        goto cleanup;
    }
    derive(c);
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
    sg_config_errors_free(&local);
    return rc;
}

int sg_config_load(struct sg_config **out, const char *path, char *err, size_t errcap)
{
    struct sg_config_errors errs = {0};
    int rc = sg_config_load_errs(out, path, &errs);
    if (err != NULL && errcap > 0) {
        err[0] = '\0';
        if (rc != 0) {
            sg_config_errors_format(&errs, err, errcap);
        }
    }
    sg_config_errors_free(&errs);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Values as text, comparison, reload                                      */
/* ------------------------------------------------------------------------ */

void sg_config_value_str(const struct sg_config *c, const struct sg_config_key *k, char *out,
                         size_t cap)
{
    if (out == NULL || cap == 0) {
        return;
    }
    out[0] = '\0';
    bool neg;
    switch (k->type) {
    case SG_KEY_STR:
    case SG_KEY_WORD: {
        const char *s = *cstr_at(c, k);
        /* Values go to the log (reload): never a URL's user:password. */
        sg_redact_url(s ? s : "(unset)", out, cap);
        break;
    }
    case SG_KEY_STRLIST:
    case SG_KEY_U64LIST: {
        size_t w = (size_t)snprintf(out, cap, "[");
        for (size_t j = 0; j < ccount(c, k) && j < k->max_entries && w < cap; j++) {
            if (k->type == SG_KEY_STRLIST) {
                const char *s = cstr_at(c, k)[j];
                w += (size_t)snprintf(out + w, cap - w, "%s%s", j ? ", " : "", s ? s : "");
            } else {
                w += (size_t)snprintf(out + w, cap - w, "%s%llu", j ? ", " : "",
                                      (unsigned long long)((const uint64_t *)(const void *)(
                                          (const char *)c + k->off))[j]);
            }
        }
        if (w < cap) {
            snprintf(out + w, cap - w, "]");
        }
        break;
    }
    case SG_KEY_BOOL:
        snprintf(out, cap, "%s", num_get(c, k, &neg) ? "true" : "false");
        break;
    case SG_KEY_ENUM: {
        uint64_t x = num_get(c, k, &neg);
        size_t nw = 0;
        while (k->words[nw] != NULL) {
            nw++;
        }
        snprintf(out, cap, "%s", !neg && x < nw ? k->words[x] : "?");
        break;
    }
    default: {
        uint64_t x = num_get(c, k, &neg);
        snprintf(out, cap, "%s%llu", neg ? "-" : "", (unsigned long long)x);
        break;
    }
    }
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool sg_config_key_differs(const struct sg_config *a, const struct sg_config *b,
                           const struct sg_config_key *k)
{
    bool na, nb;
    switch (k->type) {
    case SG_KEY_STR:
    case SG_KEY_WORD:
        return !str_eq(*cstr_at(a, k), *cstr_at(b, k));
    case SG_KEY_STRLIST:
    case SG_KEY_U64LIST:
        if (ccount(a, k) != ccount(b, k)) {
            return true;
        }
        for (size_t j = 0; j < ccount(a, k) && j < k->max_entries; j++) {
            if (k->type == SG_KEY_STRLIST ? !str_eq(cstr_at(a, k)[j], cstr_at(b, k)[j])
                                          : ((const uint64_t *)(const void *)((const char *)a +
                                                                             k->off))[j] !=
                                                ((const uint64_t *)(const void *)((const char *)b +
                                                                                 k->off))[j]) {
                return true;
            }
        }
        return false;
    default:
        return num_get(a, k, &na) != num_get(b, k, &nb) || na != nb;
    }
}

/* Exchanges the value of k (and whether the file set it) between a and b. */
static void swap_value(struct sg_config *a, struct sg_config *b, const struct sg_config_key *k)
{
    size_t size;
    switch (k->type) {
    case SG_KEY_STR:
    case SG_KEY_WORD:
        size = sizeof(char *);
        break;
    case SG_KEY_STRLIST:
        size = k->max_entries * sizeof(char *);
        break;
    case SG_KEY_U64LIST:
        size = k->max_entries * sizeof(uint64_t);
        break;
    case SG_KEY_BOOL:
        size = sizeof(bool);
        break;
    case SG_KEY_INT:
    case SG_KEY_ENUM:
        size = sizeof(int);
        break;
    case SG_KEY_U32:
        size = sizeof(uint32_t);
        break;
    default:
        size = sizeof(uint64_t);
        break;
    }
    unsigned char tmp[SG_CONFIG_MAX_TOPICS * sizeof(char *) + SG_CONFIG_MAX_WINDOWS * 8];
    memcpy(tmp, (char *)a + k->off, size);
    memcpy((char *)a + k->off, (char *)b + k->off, size);
    memcpy((char *)b + k->off, tmp, size);
    if (k->type == SG_KEY_STRLIST || k->type == SG_KEY_U64LIST) {
        size_t n = *count_at(a, k);
        *count_at(a, k) = *count_at(b, k);
        *count_at(b, k) = n;
    }
    uint64_t bit = UINT64_C(1) << key_index(k);
    uint64_t sa = a->set_keys & bit, sb = b->set_keys & bit;
    a->set_keys = (a->set_keys & ~bit) | sb;
    b->set_keys = (b->set_keys & ~bit) | sa;
}

int sg_config_reload_merge(struct sg_config *oc, struct sg_config *nc,
                           struct sg_config_change *changes, size_t cap, size_t *nchanges,
                           struct sg_config_errors *errs)
{
    struct sg_config_errors local = {0};
    struct errs e;
    errs_init(&e, errs ? errs : &local, nc->path ? nc->path : "<config>", NULL);
    size_t n = 0;
    uint64_t idle_before = nc->limits.series_idle_ms;

    /* Restart-only values: nc takes oc's (the same pointers). */
    for (size_t i = 0; i < NKEYS; i++) {
        if (!keys[i].live) {
            swap_value(oc, nc, &keys[i]);
        }
    }
    /* Defaults that follow restart-only keys follow the kept values. */
    if (!key_set(nc, "limits.series_idle_ms")) {
        nc->limits.series_idle_ms = series_idle_default(nc);
    }
    if (check_all(nc, &e) != 0) {
        for (size_t i = 0; i < NKEYS; i++) {
            if (!keys[i].live) {
                swap_value(oc, nc, &keys[i]);
            }
        }
        nc->limits.series_idle_ms = idle_before;
        sg_config_errors_free(&local);
        return SG_EINVAL;
    }
    /* oc now holds the file's restart-only values and nc the running ones:
     * for those keys the file's value is in oc. */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct sg_config_key *k = &keys[i];
        if (!sg_config_key_differs(oc, nc, k)) {
            continue;
        }
        if (n < cap && changes != NULL) {
            changes[n].key = k;
            sg_config_value_str(k->live ? oc : nc, k, changes[n].before,
                                sizeof changes[n].before);
            sg_config_value_str(k->live ? nc : oc, k, changes[n].after, sizeof changes[n].after);
        }
        n++;
    }
    if (nchanges != NULL) {
        *nchanges = n;
    }
    sg_config_errors_free(&local);
    return 0;
}

/*
 * config: the YAML configuration (contract section 5 plus our own keys),
 * loaded into struct sg_config from one table of keys, then cross-checked.
 * Every key, its default and its meaning: config/sensegate.yaml.
 * Loop thread (or main before the loop starts).
 */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#define SG_CONFIG_MAX_TOPICS 32
#define SG_CONFIG_MAX_WINDOWS 8

enum sg_content_type { SG_CT_JSON = 0, SG_CT_PROTOBUF = 1 };

struct sg_config {
    char *path;                       /* file it came from ("<defaults>" if none) */
    char *gateway_id;                 /* gateway_id */

    struct {
        char *uri;                    /* mqtt.uri */
        char *client_id;              /* mqtt.client_id (default sensegate-<gateway_id>) */
        char *topics[SG_CONFIG_MAX_TOPICS]; /* mqtt.topics */
        size_t ntopics;
        int qos;                      /* mqtt.qos 0|1 */
        int version;                  /* mqtt.version 3 (3.1.1) | 5 */
        bool clean_session;           /* mqtt.clean_session (default false) */
        uint32_t keepalive_s;         /* mqtt.keepalive_s */
        uint32_t session_expiry_s;    /* mqtt.session_expiry_s (MQTT 5) */
        uint32_t reconnect_min_ms;    /* mqtt.reconnect_min_ms */
        uint32_t reconnect_max_ms;    /* mqtt.reconnect_max_ms */
        char *username;               /* mqtt.username (optional) */
        char *password_file;          /* mqtt.password_file (optional) */
        char *ca_file;                /* mqtt.ca_file (optional, ssl://) */
        char *cert_file;              /* mqtt.cert_file (optional, mTLS) */
        char *key_file;               /* mqtt.key_file (optional, mTLS) */
    } mqtt;

    uint64_t windows_ms[SG_CONFIG_MAX_WINDOWS]; /* windows_ms */
    size_t nwindows;
    uint64_t allowed_lateness_ms;     /* allowed_lateness_ms */

    struct {
        uint64_t max_past_ms;         /* validation.max_past_ms */
        uint64_t max_future_ms;       /* validation.max_future_ms */
    } validation;

    struct {
        uint64_t max_payload_bytes;       /* limits.max_payload_bytes */
        uint64_t max_readings_per_batch;  /* limits.max_readings_per_batch */
        uint64_t max_series;              /* limits.max_series */
        uint64_t series_idle_ms;          /* limits.series_idle_ms */
        uint64_t ring_seqs;               /* limits.ring_seqs (power of two) */
        uint64_t inbox_bytes;             /* limits.inbox_bytes */
    } limits;

    struct {
        char *url;                    /* backend.url; POST <url>/v1/rollups */
        char *token_file;             /* backend.token_file (optional) */
        enum sg_content_type content_type; /* backend.content_type json|protobuf */
        uint64_t max_batch_rollups;   /* backend.max_batch_rollups */
        uint64_t max_batch_delay_ms;  /* backend.max_batch_delay_ms */
        uint64_t timeout_ms;          /* backend.timeout_ms */
        uint64_t max_inflight;        /* backend.max_inflight */
        uint64_t backoff_min_ms;      /* backend.backoff_min_ms */
        uint64_t backoff_max_ms;      /* backend.backoff_max_ms */
        uint64_t retry_after_max_ms;  /* backend.retry_after_max_ms */
        char *ca_file;                /* backend.ca_file (optional) */
    } backend;

    struct {
        char *dir;                    /* spool.dir */
        uint64_t max_bytes;           /* spool.max_bytes */
        uint64_t max_batches;         /* spool.max_batches */
        bool fsync;                   /* spool.fsync: true = synchronous=FULL */
    } spool;

    struct {
        char *listen;                 /* metrics.listen host:port (port 0 = any) */
        char *port_file;              /* metrics.port_file: write the bound port here */
    } metrics;

    uint64_t stats_interval_s;        /* stats_interval_s (0 = off) */
    uint64_t shutdown_timeout_ms;     /* shutdown_timeout_ms */
    char *log_level;                  /* log.level debug|info|warn|error */
    char *log_format;                 /* log.format text|json */
    /* Added with issue 5 (append-only): */
    bool allow_root;                  /* allow_root: run with euid 0 (default false) */
    /* Added with issue 11: */
    uint64_t set_keys;                /* bit i: key i of the table was in the file */
};

/* Position of every problem found in a file, as a struct: callers format it
 * ("FILE:LINE:COL: key: message") or inspect it; nothing parses text back. */
struct sg_config_error {
    int line, col;      /* 1-based; 0 = no position (a default, or a struct check) */
    bool raw;           /* msg is the whole line (cannot open/read FILE: ...) */
    char key[128];      /* "mqtt.qos", "windows_ms[1]"; "" = none */
    char msg[768];
};

struct sg_config_errors {
    char *file;                 /* as given to the loader, or "<defaults>" / "<config>" */
    struct sg_config_error *v;  /* sorted by line, then column; positionless ones last */
    size_t n, cap;
};

/* Writes the errors as "FILE:LINE:COL: key: message" lines, newline-
 * separated, no trailing newline, truncated to cap bytes (always
 * terminated when cap > 0). */
void sg_config_errors_format(const struct sg_config_errors *e, char *out, size_t cap);
/* Frees what the list holds; the struct itself may be reused. NULL is a no-op. */
void sg_config_errors_free(struct sg_config_errors *e);

/* Loads and checks path into a new config. Reads the file once. On error
 * returns SG_EINVAL, *out is NULL and errs (if not NULL) lists every
 * problem; free it with sg_config_errors_free either way. path NULL =
 * embedded defaults. */
int sg_config_load_errs(struct sg_config **out, const char *path, struct sg_config_errors *errs);

/* The same, with the errors formatted into err (errcap bytes) as by
 * sg_config_errors_format. */
int sg_config_load(struct sg_config **out, const char *path, char *err, size_t errcap);

/* Cross-field rules, run by sg_config_load; exposed for tests. */
int sg_config_check(const struct sg_config *c, char *err, size_t errcap);

/* NULL is a no-op. */
void sg_config_free(struct sg_config *c);

/* ---- The key table ---------------------------------------------------- */

enum sg_config_type {
    SG_KEY_STR,      /* char *; min..max bytes (min 0: optional, unset = NULL) */
    SG_KEY_WORD,     /* char *, one of words[] */
    SG_KEY_ENUM,     /* enum stored as int: index into words[] */
    SG_KEY_BOOL,     /* bool */
    SG_KEY_INT,      /* int, min..max */
    SG_KEY_U32,      /* uint32_t, min..max */
    SG_KEY_U64,      /* uint64_t, min..max */
    SG_KEY_STRLIST,  /* char *[max_entries] + size_t count; each entry min..max bytes */
    SG_KEY_U64LIST,  /* uint64_t[max_entries] + size_t count; each entry min..max */
};

/* One row per key of the file: config.c holds the one table
 * (sg_config_key_at). A key is live when SIGHUP applies a new value to the
 * running gateway (note says when it takes effect); otherwise a changed
 * value is logged as needing a restart and the running value is kept (note
 * says why). */
struct sg_config_key {
    const char *name;             /* dotted path, "backend.timeout_ms" */
    enum sg_config_type type;
    size_t off;                   /* offsetof(struct sg_config, ...) */
    size_t count_off;             /* lists: offset of the size_t count */
    size_t max_entries;           /* lists */
    uint64_t min, max;            /* numbers: value range; strings: length range */
    uint64_t def;                 /* numbers, bools, enums */
    const char *def_str;          /* strings, STRLIST: one entry; NULL = unset */
    const char *const *words;     /* WORD, ENUM: NULL-terminated */
    const char *derived;          /* how an unset value follows other keys, or NULL */
    bool live;
    const char *note;
};

/* Number of keys, and key i (0 <= i < n) in file order. */
size_t sg_config_nkeys(void);
const struct sg_config_key *sg_config_key_at(size_t i);
/* The key named name, or NULL. */
const struct sg_config_key *sg_config_key_find(const char *name);

/* Renders the value of k in c for logs: numbers, true/false, words,
 * "[a, b]" for lists, "(unset)" for an unset string. Truncates to cap. */
void sg_config_value_str(const struct sg_config *c, const struct sg_config_key *k, char *out,
                         size_t cap);

/* True if the value of k differs between a and b. */
bool sg_config_key_differs(const struct sg_config *a, const struct sg_config *b,
                           const struct sg_config_key *k);

/* ---- Reload ------------------------------------------------------------- */

struct sg_config_change {
    const struct sg_config_key *key;
    char before[160];            /* running value */
    char after[160];             /* value in the file */
};

/* Prepares a freshly loaded config nc to replace the running config oc.
 * Every restart-only key of nc takes oc's value (the same pointers, so
 * whatever a module borrowed from oc stays valid after oc is freed; oc gets
 * nc's values in exchange), defaults that follow other keys are derived
 * again, and the result is checked. Every key whose value in the file
 * differs from the running one is listed in changes (cap entries at most;
 * *nchanges is the true count), restart-only ones included.
 * Returns 0: nc is what should run now; the caller applies the live changes
 * and then frees oc. SG_EINVAL: nc with the running restart-only values does
 * not pass the checks (errs says why); oc and nc are exactly as before the
 * call. Pure: no I/O, no logging. */
int sg_config_reload_merge(struct sg_config *oc, struct sg_config *nc,
                           struct sg_config_change *changes, size_t cap, size_t *nchanges,
                           struct sg_config_errors *errs);

#endif

/*
 * config: the YAML configuration (contract section 5 plus our own keys),
 * loaded with libcyaml into struct sg_config, then cross-checked.
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
};

/* Loads and checks path into a new config. On error returns SG_EINVAL,
 * *out is NULL, and err (errcap bytes) holds "FILE:LINE:COL: key: message"
 * lines (one per problem, newline-separated). path NULL = embedded defaults. */
int sg_config_load(struct sg_config **out, const char *path, char *err, size_t errcap);

/* Cross-field rules, run by sg_config_load; exposed for tests. */
int sg_config_check(const struct sg_config *c, char *err, size_t errcap);

/* NULL is a no-op. */
void sg_config_free(struct sg_config *c);

#endif

/*
 * sensegate-sink: a simulated city-brain backend (contract section 3) that
 * records what it receives, and the `verify` command that checks a recording
 * against the simulator's truth (verify.c).
 *
 * HTTP runs on libmicrohttpd with one thread per connection, so a request
 * held back by the "slow" or "hang" failure modes never delays the others
 * (/_control, /_stats). All shared state (mode, counters, the batch_id table,
 * the output files) lives in one struct sink under one mutex; the condition
 * variable wakes held-back requests at shutdown. The main thread only parses
 * the command line, starts the daemon and waits for SIGTERM/SIGINT.
 *
 * Invariants: a batch is appended to --out at most once per batch_id, whole
 * (one write(2) per batch), before its line in --batches-out; a request
 * answered by a failure mode changes nothing but the counters.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "buf.h"
#include "common.h"
#include "log.h"
#include "verify.h"

#define BODY_MAX_BYTES (64u * 1024u * 1024u) /* larger bodies get 413 */
#define HANG_MS 30000u                       /* "hang" closes after this, unanswered */

/* Failure modes; the names are those of /_control and /_stats. */
enum mode {
    MODE_OK,
    MODE_503,
    MODE_429,
    MODE_400,
    MODE_500,
    MODE_SLOW,
    MODE_CLOSE,
    MODE_HANG,
    MODE_COUNT
};

static const char *const MODE_NAMES[MODE_COUNT] = {"ok",  "503",  "429",   "400",
                                                   "500", "slow", "close", "hang"};

/* The current failure mode and when it ends. */
struct mode_state {
    enum mode mode;
    uint64_t count_left;    /* requests still to get this mode; 0 = not limited by count */
    uint64_t until_mono_ms; /* mode ends at this sg_mono_ms(); 0 = not limited by time */
    char retry_after[64];   /* Retry-After for 503/429; empty = none */
    uint64_t slow_ms;       /* delay of "slow" */
};

struct sink_stats {
    uint64_t requests;          /* POST /v1/rollups, any outcome */
    uint64_t batches;           /* unique batches accepted and recorded */
    uint64_t rollups;           /* rollups recorded */
    uint64_t duplicate_batches; /* same batch_id, same body: 200, not recorded again */
    uint64_t conflicts;         /* same batch_id, different body: 422 */
    uint64_t unauthorized;      /* 401 */
    uint64_t bad_requests;      /* 400, 413, 415 (not those of mode "400") */
    uint64_t failed_by_mode[MODE_COUNT];
    uint64_t slowed; /* answers delayed by "slow" */
};

struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast when stopping */
    bool stopping;
    struct mode_state mode;
    double fail_rate; /* share of requests answered 503 while the mode is "ok" */
    uint64_t rng;     /* xorshift64* state for fail_rate */
    char *token;      /* NULL: no Authorization required */
    int out_fd;       /* --out, or -1 */
    int batches_fd;   /* --batches-out, or -1 */
    json_t *seen;     /* batch_id -> body hash (hex string) */
    struct sink_stats st;
};

/* Per-request state, kept in MHD's request closure. */
struct req {
    struct sg_buf body;
    bool too_big;
    uint64_t received_ms; /* sg_now_ms() when the whole body was in; 0 before */
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t next_rand(struct sink *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

/* FNV-1a 64 over a byte string. */
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int mode_parse(const char *name)
{
    for (int i = 0; i < MODE_COUNT; i++) {
        if (strcmp(name, MODE_NAMES[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* Writes all of buf to fd. Returns 0 or SG_EIO (errno set). */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return SG_EIO;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Waits up to ms, or until shutdown. Returns false when stopping. */
static bool wait_ms(struct sink *s, uint64_t ms)
{
    struct timespec ts;
    bool stopping;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return !stopping;
}

/* Queues a response with an optional extra header. Returns MHD's result. */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned int status, const char *ctype,
                               const char *body, const char *hname, const char *hval)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hname != NULL && hval != NULL && hval[0] != '\0') {
        MHD_add_response_header(r, hname, hval);
    }
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Answers {"ok":false,"error":msg} with the given status. */
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned int status, const char *msg,
                                     const char *hname, const char *hval)
{
    json_t *o = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    enum MHD_Result ret;

    ret =
        respond(c, status, "application/json", text != NULL ? text : "{\"ok\":false}", hname, hval);
    free(text);
    json_decref(o);
    return ret;
}

/* ---- failure modes ---------------------------------------------------- */

/* Sets the mode to ok. Caller holds s->mu. */
static void mode_reset(struct mode_state *m)
{
    memset(m, 0, sizeof(*m));
    m->mode = MODE_OK;
}

/* Returns to ok when a for_ms duration is over. Caller holds s->mu. */
static void mode_expire(struct mode_state *m)
{
    if (m->mode != MODE_OK && m->until_mono_ms != 0 && sg_mono_ms() >= m->until_mono_ms) {
        mode_reset(m);
    }
}

/* Picks the mode for one POST /v1/rollups and consumes one use of it.
 * Copies Retry-After and the delay out. Caller holds s->mu. */
static enum mode mode_take(struct sink *s, char *retry_after, size_t cap, uint64_t *slow_ms)
{
    struct mode_state *m = &s->mode;
    enum mode mode;

    mode_expire(m);
    mode = m->mode;
    snprintf(retry_after, cap, "%s", m->retry_after);
    *slow_ms = m->slow_ms;
    if (mode != MODE_OK && m->count_left > 0 && --m->count_left == 0) {
        mode_reset(m);
    }
    if (mode == MODE_OK && s->fail_rate > 0.0 &&
        (double)(next_rand(s) >> 11) * 0x1.0p-53 < s->fail_rate) {
        mode = MODE_503;
    }
    return mode;
}

/* Reads an optional non-negative integer member. Returns false if it is
 * there but not a non-negative integer. */
static bool get_opt_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL) {
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* POST /_control: {"mode", "count", "for_ms", "retry_after", "slow_ms",
 * "fail_rate"}. Not authenticated and not counted: it is the test harness's. */
static enum MHD_Result handle_control(struct sink *s, struct MHD_Connection *c, struct req *rq)
{
    json_error_t err;
    json_t *o = NULL;
    json_t *v;
    struct mode_state m;
    uint64_t count = 0;
    uint64_t for_ms = 0;
    double rate = -1.0;
    int mode = -1;
    enum MHD_Result ret;
    char msg[256];

    mode_reset(&m);
    o = json_loadb(rq->body.data != NULL ? rq->body.data : "", rq->body.len, 0, &err);
    if (!json_is_object(o)) {
        snprintf(msg, sizeof(msg), "body is not a JSON object: %s", o == NULL ? err.text : "");
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST, msg, NULL, NULL);
        goto cleanup;
    }
    v = json_object_get(o, "mode");
    if (v != NULL && (!json_is_string(v) || (mode = mode_parse(json_string_value(v))) < 0)) {
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST,
                            "mode must be one of ok, 503, 429, 400, 500, slow, close, hang", NULL,
                            NULL);
        goto cleanup;
    }
    v = json_object_get(o, "fail_rate");
    if (v != NULL && (!json_is_number(v) || (rate = json_number_value(v)) < 0.0 || rate > 1.0)) {
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST, "fail_rate must be a number 0..1", NULL, NULL);
        goto cleanup;
    }
    if (mode < 0 && rate < 0.0) {
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST, "mode (or fail_rate) is required", NULL, NULL);
        goto cleanup;
    }
    if (!get_opt_u64(o, "count", &count) || !get_opt_u64(o, "for_ms", &for_ms) ||
        !get_opt_u64(o, "slow_ms", &m.slow_ms)) {
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST,
                            "count, for_ms and slow_ms must be non-negative integers", NULL, NULL);
        goto cleanup;
    }
    v = json_object_get(o, "retry_after");
    if (json_is_string(v) && json_string_length(v) < sizeof(m.retry_after)) {
        snprintf(m.retry_after, sizeof(m.retry_after), "%s", json_string_value(v));
    } else if (json_is_integer(v) && json_integer_value(v) >= 0) {
        snprintf(m.retry_after, sizeof(m.retry_after), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
    } else if (v != NULL) {
        ret = respond_error(c, MHD_HTTP_BAD_REQUEST,
                            "retry_after must be a string (under 64 bytes) or an integer", NULL,
                            NULL);
        goto cleanup;
    }

    pthread_mutex_lock(&s->mu);
    if (mode >= 0) {
        m.mode = (enum mode)mode;
        m.count_left = mode == MODE_OK ? 0 : count;
        m.until_mono_ms = (mode == MODE_OK || for_ms == 0) ? 0 : sg_mono_ms() + for_ms;
        s->mode = m;
    }
    if (rate >= 0.0) {
        s->fail_rate = rate;
    }
    pthread_mutex_unlock(&s->mu);
    if (mode >= 0) {
        sg_log(SG_LOG_INFO, "sink",
               "control mode=%s count=%" PRIu64 " for_ms=%" PRIu64 " slow_ms=%" PRIu64
               " retry_after=%s",
               MODE_NAMES[mode], count, for_ms, m.slow_ms, m.retry_after);
    }
    if (rate >= 0.0) {
        sg_log(SG_LOG_INFO, "sink", "control fail_rate=%g", rate);
    }
    ret = respond(c, MHD_HTTP_OK, "application/json", "{\"ok\":true}", NULL, NULL);

cleanup:
    json_decref(o);
    return ret;
}

/* ---- stats ------------------------------------------------------------ */

static enum MHD_Result handle_stats(struct sink *s, struct MHD_Connection *c)
{
    json_t *o;
    json_t *by_mode = json_object();
    char *text;
    enum MHD_Result ret;

    pthread_mutex_lock(&s->mu);
    mode_expire(&s->mode);
    for (int i = 0; i < MODE_COUNT; i++) {
        if (i != MODE_OK && i != MODE_SLOW) {
            json_object_set_new(by_mode, MODE_NAMES[i],
                                json_integer((json_int_t)s->st.failed_by_mode[i]));
        }
    }
    o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:s, s:f}", "requests",
        (json_int_t)s->st.requests, "batches", (json_int_t)s->st.batches, "rollups",
        (json_int_t)s->st.rollups, "duplicate_batches", (json_int_t)s->st.duplicate_batches,
        "conflicts", (json_int_t)s->st.conflicts, "unauthorized", (json_int_t)s->st.unauthorized,
        "bad_requests", (json_int_t)s->st.bad_requests, "failed_by_mode", by_mode, "slowed",
        (json_int_t)s->st.slowed, "mode", MODE_NAMES[s->mode.mode], "fail_rate", s->fail_rate);
    pthread_mutex_unlock(&s->mu);
    text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    ret = text != NULL ? respond(c, MHD_HTTP_OK, "application/json", text, NULL, NULL) : MHD_NO;
    free(text);
    json_decref(o);
    return ret;
}

/* ---- POST /v1/rollups ------------------------------------------------- */

/* Whether the Content-Type media type is `want` (parameters ignored). */
static bool media_type_is(const char *ctype, const char *want)
{
    size_t n = strlen(want);

    if (ctype == NULL) {
        return false;
    }
    while (*ctype == ' ' || *ctype == '\t') {
        ctype++;
    }
    if (strncasecmp(ctype, want, n) != 0) {
        return false;
    }
    ctype += n;
    while (*ctype == ' ' || *ctype == '\t') {
        ctype++;
    }
    return *ctype == '\0' || *ctype == ';';
}

/* Compares without an early exit, so the time does not tell the token. */
static bool token_ok(const char *header, const char *token)
{
    static const char prefix[] = "Bearer ";
    size_t hn;
    size_t tn = strlen(token);
    unsigned char d = 0;

    if (header == NULL || strncmp(header, prefix, sizeof(prefix) - 1) != 0) {
        return false;
    }
    header += sizeof(prefix) - 1;
    hn = strlen(header);
    if (hn != tn) {
        return false;
    }
    for (size_t i = 0; i < tn; i++) {
        d |= (unsigned char)(header[i] ^ token[i]);
    }
    return d == 0;
}

/* Checks the batch body. Returns NULL or a static reason for a 400. */
static const char *check_batch(json_t *o)
{
    json_t *rollups = json_object_get(o, "rollups");
    size_t i;
    json_t *r;

    if (!json_is_object(o)) {
        return "body is not a JSON object";
    }
    if (!json_is_string(json_object_get(o, "gateway_id"))) {
        return "gateway_id missing or not a string";
    }
    if (!json_is_string(json_object_get(o, "batch_id")) ||
        json_string_length(json_object_get(o, "batch_id")) == 0) {
        return "batch_id missing, empty or not a string";
    }
    if (!json_is_integer(json_object_get(o, "sent_at_ms"))) {
        return "sent_at_ms missing or not an integer";
    }
    if (!json_is_array(rollups)) {
        return "rollups missing or not an array";
    }
    json_array_foreach(rollups, i, r)
    {
        if (!json_is_object(r) || !json_is_string(json_object_get(r, "sensor_id")) ||
            !json_is_string(json_object_get(r, "kind")) ||
            !json_is_integer(json_object_get(r, "channel")) ||
            !json_is_integer(json_object_get(r, "window_start_ms")) ||
            !json_is_integer(json_object_get(r, "window_ms")) ||
            !json_is_integer(json_object_get(r, "count"))) {
            return "a rollup lacks sensor_id, kind, channel, window_start_ms, window_ms or "
                   "count";
        }
    }
    return NULL;
}

/* The identity of a batch's content: a hash of gateway_id and rollups in a
 * canonical form (sorted keys, compact). sent_at_ms is left out: a retry may
 * carry a new send time and is still the same batch. */
static void batch_hash(json_t *o, char *hex, size_t cap)
{
    json_t *canon = json_pack("{s:O, s:O}", "gateway_id", json_object_get(o, "gateway_id"),
                              "rollups", json_object_get(o, "rollups"));
    char *text = canon != NULL ? json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    if (text == NULL) {
        fprintf(stderr, "sensegate-sink: out of memory hashing a batch\n");
        abort();
    }
    snprintf(hex, cap, "%016" PRIx64, hash_bytes(text, strlen(text)));
    free(text);
    json_decref(canon);
}

/* Renders the batch's rollup lines (unless lines is NULL: no --out, and
 * rendering 500 rollups is most of the sink's time) and its batch line.
 * received_ms is when the whole request body was in (before parsing). */
static void render_batch(json_t *o, const char *hash, uint64_t received_ms, struct sg_buf *lines,
                         struct sg_buf *bline)
{
    json_t *rollups = json_object_get(o, "rollups");
    json_t *batch_id = json_object_get(o, "batch_id");
    json_t *b;
    json_t *r;
    size_t i;
    char *text;

    json_array_foreach(rollups, i, r)
    {
        if (lines == NULL) {
            break;
        }
        json_object_set(r, "batch_id", batch_id);
        text = json_dumps(r, JSON_COMPACT);
        if (text == NULL) {
            abort();
        }
        sg_buf_puts(lines, text);
        sg_buf_putc(lines, '\n');
        free(text);
    }
    b = json_pack("{s:O, s:O, s:I, s:O, s:I, s:s}", "batch_id", batch_id, "gateway_id",
                  json_object_get(o, "gateway_id"), "rollups", (json_int_t)json_array_size(rollups),
                  "sent_at_ms", json_object_get(o, "sent_at_ms"), "received_ms",
                  (json_int_t)received_ms, "hash", hash);
    text = b != NULL ? json_dumps(b, JSON_COMPACT) : NULL;
    if (text == NULL) {
        abort();
    }
    sg_buf_puts(bline, text);
    sg_buf_putc(bline, '\n');
    free(text);
    json_decref(b);
}

/* Answers a request that a failure mode takes. */
static enum MHD_Result answer_mode(struct sink *s, struct MHD_Connection *c, enum mode mode,
                                   const char *retry_after)
{
    char msg[64];

    snprintf(msg, sizeof(msg), "failure mode %s", MODE_NAMES[mode]);
    switch (mode) {
    case MODE_503:
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, msg, MHD_HTTP_HEADER_RETRY_AFTER,
                             retry_after);
    case MODE_429:
        return respond_error(c, MHD_HTTP_TOO_MANY_REQUESTS, msg, MHD_HTTP_HEADER_RETRY_AFTER,
                             retry_after);
    case MODE_400:
        return respond_error(c, MHD_HTTP_BAD_REQUEST, msg, NULL, NULL);
    case MODE_500:
        return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, NULL, NULL);
    case MODE_HANG:
        /* Hold the request unanswered, then drop the connection. */
        wait_ms(s, HANG_MS);
        return MHD_NO;
    case MODE_CLOSE:
        return MHD_NO;
    case MODE_OK:
    case MODE_SLOW:
    case MODE_COUNT:
        break;
    }
    return MHD_NO;
}

/* The answer to one POST /v1/rollups, decided before it is sent. */
struct answer {
    unsigned int status;
    const char *error; /* NULL: {"ok":true} */
    bool duplicate;    /* 200 for a repeated batch */
    char msg[300];     /* storage for error when it is formatted */
};

/* Counts a 400/413/415 and fills the answer. */
static void bad_request(struct sink *s, struct answer *a, unsigned int status, const char *why)
{
    pthread_mutex_lock(&s->mu);
    s->st.bad_requests++;
    pthread_mutex_unlock(&s->mu);
    sg_log(SG_LOG_WARN, "sink", "bad request status=%u: %s", status, why);
    a->status = status;
    a->error = why;
}

/* Checks, dedups and records one batch; fills *a with what to answer. */
static void accept_batch(struct sink *s, struct MHD_Connection *c, struct req *rq, struct answer *a)
{
    const char *ctype =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *key;
    const char *batch_id;
    const char *bad;
    json_error_t err;
    json_t *o = NULL;
    json_t *prev;
    char hash[32];
    struct sg_buf lines = SG_BUF_INIT;
    struct sg_buf bline = SG_BUF_INIT;
    size_t nrollups;
    int wrc = 0;

    a->status = MHD_HTTP_OK;
    if (s->token != NULL &&
        !token_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                  s->token)) {
        pthread_mutex_lock(&s->mu);
        s->st.unauthorized++;
        pthread_mutex_unlock(&s->mu);
        a->status = MHD_HTTP_UNAUTHORIZED;
        a->error = "missing or wrong bearer token";
        goto cleanup;
    }
    if (rq->too_big) {
        bad_request(s, a, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
        goto cleanup;
    }
    if (media_type_is(ctype, "application/x-protobuf")) {
        bad_request(s, a, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                    "application/x-protobuf is not supported by this sink");
        goto cleanup;
    }
    if (!media_type_is(ctype, "application/json")) {
        bad_request(s, a, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        goto cleanup;
    }
    o = json_loadb(rq->body.data != NULL ? rq->body.data : "", rq->body.len, 0, &err);
    if (o == NULL) {
        snprintf(a->msg, sizeof(a->msg), "malformed JSON at line %d column %d: %s", err.line,
                 err.column, err.text);
        bad_request(s, a, MHD_HTTP_BAD_REQUEST, a->msg);
        goto cleanup;
    }
    bad = check_batch(o);
    if (bad != NULL) {
        bad_request(s, a, MHD_HTTP_BAD_REQUEST, bad);
        goto cleanup;
    }
    batch_id = json_string_value(json_object_get(o, "batch_id"));
    key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (key == NULL || strcmp(key, batch_id) != 0) {
        bad_request(s, a, MHD_HTTP_BAD_REQUEST,
                    "Idempotency-Key header missing or not equal to batch_id");
        goto cleanup;
    }

    nrollups = json_array_size(json_object_get(o, "rollups"));
    batch_hash(o, hash, sizeof(hash));
    render_batch(o, hash, rq->received_ms, s->out_fd >= 0 ? &lines : NULL, &bline);

    pthread_mutex_lock(&s->mu);
    prev = json_object_get(s->seen, batch_id);
    if (prev != NULL && strcmp(json_string_value(prev), hash) == 0) {
        s->st.duplicate_batches++;
        pthread_mutex_unlock(&s->mu);
        sg_log(SG_LOG_DEBUG, "sink", "duplicate batch batch_id=%s", batch_id);
        a->duplicate = true;
        goto cleanup;
    }
    if (prev != NULL) {
        s->st.conflicts++;
        pthread_mutex_unlock(&s->mu);
        sg_log(SG_LOG_WARN, "sink", "conflict: batch_id=%s received before with another body",
               batch_id);
        a->status = MHD_HTTP_UNPROCESSABLE_CONTENT;
        a->error = "batch_id already received with a different body";
        goto cleanup;
    }
    /* Rollups first, then the batch line: a reader that sees the batch line
     * finds all its rollups. One write per file, so no interleaving. */
    if (s->out_fd >= 0) {
        wrc = write_all(s->out_fd, lines.data != NULL ? lines.data : "", lines.len);
    }
    if (wrc == 0 && s->batches_fd >= 0) {
        wrc = write_all(s->batches_fd, bline.data, bline.len);
    }
    if (wrc == 0) {
        json_object_set_new(s->seen, batch_id, json_string(hash));
        s->st.batches++;
        s->st.rollups += nrollups;
    }
    pthread_mutex_unlock(&s->mu);
    if (wrc != 0) {
        sg_log(SG_LOG_ERROR, "sink", "cannot append batch_id=%s: %s", batch_id, strerror(errno));
        a->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        a->error = "cannot record the batch";
        goto cleanup;
    }
    sg_log(SG_LOG_DEBUG, "sink", "batch batch_id=%s rollups=%zu", batch_id, nrollups);

cleanup:
    sg_buf_free(&lines);
    sg_buf_free(&bline);
    json_decref(o);
}

static enum MHD_Result handle_rollups(struct sink *s, struct MHD_Connection *c, struct req *rq)
{
    char retry_after[64];
    uint64_t slow_ms = 0;
    enum mode mode;
    struct answer a;

    pthread_mutex_lock(&s->mu);
    s->st.requests++;
    mode = mode_take(s, retry_after, sizeof(retry_after), &slow_ms);
    if (mode == MODE_SLOW) {
        s->st.slowed++;
    } else if (mode != MODE_OK) {
        s->st.failed_by_mode[mode]++;
    }
    pthread_mutex_unlock(&s->mu);
    if (mode != MODE_OK && mode != MODE_SLOW) {
        /* The log line's time is when the answer was decided: tests measure
         * the client's wait between a 503/429 and its next request from it. */
        const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
        sg_log(SG_LOG_DEBUG, "sink", "failure mode=%s batch_id=%s retry_after=%s",
               MODE_NAMES[mode], key != NULL ? key : "-",
               retry_after[0] != '\0' ? retry_after : "-");
        return answer_mode(s, c, mode, retry_after);
    }

    memset(&a, 0, sizeof(a));
    accept_batch(s, c, rq, &a);
    /* "slow" handles the request at once and delays only the answer, as a
     * backend whose reply is late: a client that times out and retries
     * then sends a duplicate, which the batch_id lets us drop. */
    if (mode == MODE_SLOW && !wait_ms(s, slow_ms)) {
        return MHD_NO;
    }
    if (a.error != NULL) {
        return respond_error(
            c, a.status, a.error,
            a.status == MHD_HTTP_UNAUTHORIZED ? MHD_HTTP_HEADER_WWW_AUTHENTICATE : NULL, "Bearer");
    }
    return respond(c, MHD_HTTP_OK, "application/json",
                   a.duplicate ? "{\"ok\":true,\"duplicate\":true}" : "{\"ok\":true}", NULL, NULL);
}

/* ---- MHD callbacks ---------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct sink *s = cls;
    struct req *rq = *req_cls;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;

    (void)version;
    if (rq == NULL) {
        rq = sg_xcalloc(1, sizeof(*rq));
        *req_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (rq->body.len + *upload_data_size > BODY_MAX_BYTES) {
            rq->too_big = true;
        } else {
            sg_buf_append(&rq->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->received_ms == 0) {
        rq->received_ms = sg_now_ms();
    }

    if (strcmp(url, "/v1/rollups") == 0) {
        if (!is_post) {
            return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST", MHD_HTTP_HEADER_ALLOW,
                                 "POST");
        }
        return handle_rollups(s, c, rq);
    }
    if (strcmp(url, "/_control") == 0) {
        if (!is_post) {
            return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST", MHD_HTTP_HEADER_ALLOW,
                                 "POST");
        }
        return handle_control(s, c, rq);
    }
    if (strcmp(url, "/_stats") == 0 && is_get) {
        return handle_stats(s, c);
    }
    if (strcmp(url, "/healthz") == 0 && is_get) {
        return respond(c, MHD_HTTP_OK, "text/plain", "ok\n", NULL, NULL);
    }
    return respond_error(c, MHD_HTTP_NOT_FOUND, "not found", NULL, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *rq = *req_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (rq != NULL) {
        sg_buf_free(&rq->body);
        free(rq);
        *req_cls = NULL;
    }
}

/* ---- start-up --------------------------------------------------------- */

struct sink_opts {
    const char *listen;
    const char *port_file;
    const char *out;
    const char *batches_out;
    const char *token;
    const char *token_file;
    const char *retry_after;
    const char *tls_cert;   /* --tls-cert: serve HTTPS with this PEM certificate (chain) */
    const char *tls_key;    /* --tls-key: its PEM private key */
    uint64_t fail_503_ms;
    uint64_t slow_ms;
    uint64_t seed;
    double fail_rate;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sensegate-sink [--listen 127.0.0.1:0] [--port-file F] [--out rollups.jsonl]\n"
            "                      [--batches-out batches.jsonl] [--token T | --token-file F]\n"
            "                      [--fail-503-ms N] [--retry-after S] [--fail-rate 0.x --seed S]\n"
            "                      [--slow-ms N] [--log-level debug|info|warn|error]\n"
            "                      [--tls-cert CERT.pem --tls-key KEY.pem]\n"
            "       sensegate-sink verify --truth TRUTH.jsonl --received ROLLUPS.jsonl"
            " [--max-diffs 20]\n"
            "       sensegate-sink --version\n"
            "See docs/SINK.md.\n");
}

/* Parses argv into o. Returns 0, or 2 after printing why. */
static int parse_args(int argc, char **argv, struct sink_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int lvl;

        if (v == NULL) {
            fprintf(stderr, "sensegate-sink: %s: unknown option or missing value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            o->listen = v;
        } else if (strcmp(a, "--port-file") == 0) {
            o->port_file = v;
        } else if (strcmp(a, "--out") == 0) {
            o->out = v;
        } else if (strcmp(a, "--batches-out") == 0) {
            o->batches_out = v;
        } else if (strcmp(a, "--token") == 0) {
            o->token = v;
        } else if (strcmp(a, "--token-file") == 0) {
            o->token_file = v;
        } else if (strcmp(a, "--retry-after") == 0) {
            o->retry_after = v;
        } else if (strcmp(a, "--tls-cert") == 0) {
            o->tls_cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            o->tls_key = v;
        } else if (strcmp(a, "--fail-503-ms") == 0) {
            if (sg_parse_u64(v, 0, UINT32_MAX, &o->fail_503_ms) != 0) {
                fprintf(stderr, "sensegate-sink: --fail-503-ms: not a number of ms: %s\n", v);
                return 2;
            }
        } else if (strcmp(a, "--slow-ms") == 0) {
            if (sg_parse_u64(v, 0, UINT32_MAX, &o->slow_ms) != 0) {
                fprintf(stderr, "sensegate-sink: --slow-ms: not a number of ms: %s\n", v);
                return 2;
            }
        } else if (strcmp(a, "--seed") == 0) {
            if (sg_parse_u64(v, 0, UINT64_MAX, &o->seed) != 0) {
                fprintf(stderr, "sensegate-sink: --seed: not an unsigned integer: %s\n", v);
                return 2;
            }
        } else if (strcmp(a, "--fail-rate") == 0) {
            if (sg_parse_double(v, &o->fail_rate) != 0 || !(o->fail_rate >= 0.0) ||
                o->fail_rate > 1.0) {
                fprintf(stderr, "sensegate-sink: --fail-rate: not a number 0..1: %s\n", v);
                return 2;
            }
        } else if (strcmp(a, "--log-level") == 0) {
            lvl = sg_log_level_parse(v);
            if (lvl < 0) {
                fprintf(stderr, "sensegate-sink: --log-level: debug, info, warn or error\n");
                return 2;
            }
            sg_log_min_level = lvl;
        } else {
            fprintf(stderr, "sensegate-sink: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o->token != NULL && o->token_file != NULL) {
        fprintf(stderr, "sensegate-sink: --token and --token-file exclude each other\n");
        return 2;
    }
    if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
        fprintf(stderr, "sensegate-sink: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (o->fail_503_ms > 0 && o->slow_ms > 0) {
        fprintf(stderr, "sensegate-sink: --fail-503-ms and --slow-ms exclude each other\n");
        return 2;
    }
    return 0;
}

/* Reads the token file; trailing whitespace (the newline) is dropped. */
static int read_token(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "sensegate-sink: cannot open token file %s: %s\n", path, strerror(errno));
        return SG_EIO;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t')) {
        buf[--n] = '\0';
    }
    if (n == 0 || strlen(buf) != n) {
        fprintf(stderr, "sensegate-sink: token file %s is empty or holds a NUL byte\n", path);
        return SG_EINVAL;
    }
    *out = sg_xstrdup(buf);
    return 0;
}

/* Reads a whole PEM file (at most 1 MiB) into a NUL-terminated string:
 * libmicrohttpd takes the TLS certificate and key from memory. */
static int read_pem(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    size_t cap = 1u << 20, n;
    char *buf;

    if (f == NULL) {
        fprintf(stderr, "sensegate-sink: cannot open %s: %s\n", path, strerror(errno));
        return SG_EIO;
    }
    buf = sg_xmalloc(cap + 1);
    n = fread(buf, 1, cap, f);
    fclose(f);
    if (n == 0 || n == cap) {
        fprintf(stderr, "sensegate-sink: %s is empty or larger than 1 MiB\n", path);
        free(buf);
        return SG_EINVAL;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* Loads the batch_ids of an existing --batches-out file, so a restarted
 * sink still drops repeats of batches it recorded before. */
static int load_seen(const char *path, json_t *seen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t n = 0;

    if (f == NULL) {
        return errno == ENOENT ? 0 : SG_EIO;
    }
    while ((len = getline(&line, &cap, f)) > 0) {
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        json_t *id = json_object_get(o, "batch_id");
        json_t *hash = json_object_get(o, "hash");

        /* A torn last line (the sink was killed mid-write) is skipped. */
        if (json_is_string(id) && json_is_string(hash)) {
            json_object_set(seen, json_string_value(id), hash);
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (n > 0) {
        sg_log(SG_LOG_INFO, "sink", "loaded %zu earlier batch ids from %s", n, path);
    }
    return 0;
}

static int open_append(const char *path, int *fd)
{
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (*fd < 0) {
        fprintf(stderr, "sensegate-sink: cannot open %s: %s\n", path, strerror(errno));
        return SG_EIO;
    }
    return 0;
}

/* Writes the port to path via a temporary file and rename(2), so a reader
 * sees either no file or the whole number. */
static int write_port_file(const char *path, unsigned int port)
{
    struct sg_buf tmp = SG_BUF_INIT;
    char text[16];
    int fd = -1;
    int rc = 0;

    sg_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(text, sizeof(text), "%u\n", port);
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, text, strlen(text)) != 0 || close(fd) != 0) {
        fprintf(stderr, "sensegate-sink: cannot write %s: %s\n", tmp.data, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        rc = SG_EIO;
        goto cleanup;
    }
    if (rename(tmp.data, path) != 0) {
        fprintf(stderr, "sensegate-sink: cannot rename %s to %s: %s\n", tmp.data, path,
                strerror(errno));
        unlink(tmp.data);
        rc = SG_EIO;
    }

cleanup:
    sg_buf_free(&tmp);
    return rc;
}

/* Resolves --listen into an IPv4 socket address. */
static int listen_addr(const char *listen, struct sockaddr_in *sa)
{
    char host[256];
    uint16_t port;

    if (sg_parse_hostport(listen, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "sensegate-sink: --listen: expected HOST:PORT, got %s\n", listen);
        return SG_EINVAL;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof(host), "127.0.0.1");
    }
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "sensegate-sink: --listen: host must be an IPv4 address: %s\n", host);
        return SG_EINVAL;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct sink_opts o = {.listen = "127.0.0.1:0", .seed = 1};
    struct sink s;
    struct sockaddr_in sa;
    struct MHD_Daemon *d = NULL;
    const union MHD_DaemonInfo *info;
    pthread_condattr_t ca;
    sigset_t sigs;
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    int sig = 0;
    char *tls_cert = NULL, *tls_key = NULL;
    int rc = 1;

    if (argc > 1 && strcmp(argv[1], "verify") == 0) {
        return sg_verify_main(argc - 1, argv + 1);
    }
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("sensegate-sink %s\n", SG_VERSION);
        return 0;
    }

    memset(&s, 0, sizeof(s));
    s.out_fd = -1;
    s.batches_fd = -1;
    pthread_mutex_init(&s.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s.cv, &ca);
    pthread_condattr_destroy(&ca);
    s.seen = json_object();
    mode_reset(&s.mode);

    if (parse_args(argc, argv, &o) != 0) {
        rc = 2;
        goto cleanup;
    }
    if (listen_addr(o.listen, &sa) != 0) {
        rc = 2;
        goto cleanup;
    }
    if (o.token != NULL) {
        if (o.token[0] == '\0') {
            fprintf(stderr, "sensegate-sink: --token is empty\n");
            rc = 2;
            goto cleanup;
        }
        s.token = sg_xstrdup(o.token);
    } else if (o.token_file != NULL && read_token(o.token_file, &s.token) != 0) {
        goto cleanup;
    }
    if (o.tls_cert != NULL &&
        (read_pem(o.tls_cert, &tls_cert) != 0 || read_pem(o.tls_key, &tls_key) != 0)) {
        goto cleanup;
    }
    if (tls_cert != NULL && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        fprintf(stderr, "sensegate-sink: this libmicrohttpd was built without TLS\n");
        goto cleanup;
    }
    if (o.batches_out != NULL && load_seen(o.batches_out, s.seen) != 0) {
        fprintf(stderr, "sensegate-sink: cannot read %s: %s\n", o.batches_out, strerror(errno));
        goto cleanup;
    }
    if ((o.out != NULL && open_append(o.out, &s.out_fd) != 0) ||
        (o.batches_out != NULL && open_append(o.batches_out, &s.batches_fd) != 0)) {
        goto cleanup;
    }
    s.fail_rate = o.fail_rate;
    s.rng = o.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (s.rng == 0) {
        s.rng = 1;
    }
    if (o.fail_503_ms > 0) {
        s.mode.mode = MODE_503;
        s.mode.until_mono_ms = sg_mono_ms() + o.fail_503_ms;
    } else if (o.slow_ms > 0) {
        s.mode.mode = MODE_SLOW;
        s.mode.slow_ms = o.slow_ms;
    }
    if (o.retry_after != NULL) {
        snprintf(s.mode.retry_after, sizeof(s.mode.retry_after), "%s", o.retry_after);
    }

    /* Block the stop signals before MHD starts its threads, so they inherit
     * the mask and only sigwait() below sees the signals. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    {
        /* TLS options go in through an array so there is one start call. */
        struct MHD_OptionItem tls_opts[] = {
            {MHD_OPTION_HTTPS_MEM_CERT, 0, tls_cert},
            {MHD_OPTION_HTTPS_MEM_KEY, 0, tls_key},
            {MHD_OPTION_END, 0, NULL},
        };
        struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
        unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_AUTO | MHD_USE_ERROR_LOG;
        if (tls_cert != NULL) {
            flags |= MHD_USE_TLS;
        }
        d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR,
                             (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120, MHD_OPTION_ARRAY,
                             tls_cert != NULL ? tls_opts : no_opts, MHD_OPTION_END);
    }
    if (d == NULL) {
        fprintf(stderr, "sensegate-sink: cannot listen on %s\n", o.listen);
        goto cleanup;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    if (info == NULL || getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) != 0) {
        fprintf(stderr, "sensegate-sink: cannot read the bound port: %s\n", strerror(errno));
        goto cleanup;
    }
    if (o.port_file != NULL && write_port_file(o.port_file, ntohs(bound.sin_port)) != 0) {
        goto cleanup;
    }
    sg_log(SG_LOG_INFO, "sink", "listening addr=%s port=%u tls=%s token=%s out=%s",
           inet_ntoa(bound.sin_addr), ntohs(bound.sin_port), tls_cert != NULL ? "yes" : "no",
           s.token != NULL ? "yes" : "no", o.out != NULL ? o.out : "-");

    while (sigwait(&sigs, &sig) != 0) {
    }
    sg_log(SG_LOG_INFO, "sink", "stopping signal=%d", sig);
    rc = 0;

cleanup:
    /* Wake held-back requests ("slow", "hang") so MHD can join their threads. */
    pthread_mutex_lock(&s.mu);
    s.stopping = true;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    if (d != NULL) {
        MHD_stop_daemon(d);
        sg_log(SG_LOG_INFO, "sink",
               "stopped batches=%" PRIu64 " rollups=%" PRIu64 " duplicate_batches=%" PRIu64
               " conflicts=%" PRIu64,
               s.st.batches, s.st.rollups, s.st.duplicate_batches, s.st.conflicts);
    }
    if (s.out_fd >= 0) {
        close(s.out_fd);
    }
    if (s.batches_fd >= 0) {
        close(s.batches_fd);
    }
    json_decref(s.seen);
    free(s.token);
    free(tls_cert);
    if (tls_key != NULL) {
        memset(tls_key, 0, strlen(tls_key));
        free(tls_key);
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return rc;
}

/*
 * forward: delivers spooled batches to the backend with libcurl's
 * multi_socket interface driven by the libuv loop (the pattern of curl's
 * docs/examples/multi-uv.c).
 *
 * Wiring: CURLMOPT_SOCKETFUNCTION gives each socket curl wants watched one
 * uv_poll_t (struct fwd_sock, registered with curl_multi_assign);
 * CURLMOPT_TIMERFUNCTION drives one uv_timer_t. The timer callback only
 * (re)arms the uv timer; curl is called from the uv callbacks, never from
 * inside its own callbacks. Every event is followed by draining
 * curl_multi_info_read.
 *
 * Traps handled (notes/reliability-design.md C1):
 * - curl may close a socket before it reports CURL_POLL_REMOVE. A
 *   CURLOPT_CLOSESOCKETFUNCTION closes the socket's uv_poll_t first (which
 *   removes the fd from libuv's epoll set while the fd is still valid) and
 *   only then close(2)s it, so libuv never watches a dead or reused fd.
 * - socketp pointers handed back by curl are only used after they are found
 *   in our list of live sockets, so a stale pointer is never dereferenced.
 * - a uv_poll callback with status < 0 is passed on as CURL_CSELECT_ERR.
 *
 * Sending: oldest batch first. cursor_seq is the highest seq started since
 * the last failure; the next batch is sg_spool_peek(cursor_seq), skipping
 * batches still in flight. A retryable answer leaves the batch in the spool,
 * resets cursor_seq to 0 (so the oldest batch not in flight goes next) and
 * sets one backoff deadline for the whole backend; until it passes no new
 * request starts, and backoff_timer wakes the sender when it does.
 *
 * Invariants: ninflight == length of reqs <= max_inflight (until a reload
 * lowers max_inflight: then no request starts until it holds); a batch is in
 * flight at most once; the spool is changed only by ack (2xx) and dead (other
 * 4xx). The bearer token is never logged. Loop thread only.
 */
#include "forward.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "common.h"
#include "config.h"
#include "encode.h"
#include "log.h"

#ifndef SG_VERSION
#define SG_VERSION "unknown"
#endif

#define MOD "forward"
#define SNIPPET_MAX 200 /* bytes of an answer kept for dead letters */
#define CONNECT_TIMEOUT_MAX_MS 5000
#define WARN_INTERVAL_MS 10000    /* at most one retry warning per interval */
#define LOCAL_ERROR_DELAY_MS 1000 /* pause after a local failure to start a request */

/* One socket curl asked us to watch. */
struct fwd_sock {
    uv_poll_t poll;
    struct sg_forward *f;
    curl_socket_t fd;
    struct fwd_sock *next; /* in f->socks until its close starts */
};

/* One POST in flight. */
struct fwd_req {
    struct sg_forward *f;
    CURL *easy;
    struct curl_slist *headers;
    struct sg_spool_batch batch;   /* body is the POSTFIELDS buffer */
    uint64_t start_ns;             /* uv_hrtime at start */
    char snippet[SNIPPET_MAX + 1]; /* start of the answer body */
    size_t snippet_len;
    char errbuf[CURL_ERROR_SIZE];
    struct fwd_req *next;
};

/* Logs at most one line per WARN_INTERVAL_MS and counts the rest. */
struct ratelimit {
    uint64_t last_ms;    /* loop time of the last line */
    uint64_t suppressed; /* lines not written since */
    bool used;
};

struct sg_forward {
    uv_loop_t *loop;
    struct sg_spool *sp;
    struct sg_metrics *m;
    CURLM *multi;
    uv_timer_t curl_timer;    /* curl's timeout */
    uv_timer_t backoff_timer; /* wakes the sender when a backoff ends */
    char *post_url;           /* <url>/v1/rollups */
    char *auth_header;        /* "Authorization: Bearer ..." or NULL; wiped at free */
    char *gateway_id;
    char *ca_file;
    uint64_t timeout_ms;
    uint64_t retry_after_max_ms;
    uint32_t max_inflight;

    struct fwd_req *reqs; /* in flight */
    uint32_t ninflight;
    struct fwd_sock *socks;    /* watched sockets */
    uint64_t cursor_seq;       /* highest seq started since the last failure */
    uint64_t backoff_until_ms; /* loop time (uv_now); no start before it */
    struct sg_backoff bo;      /* backend.backoff_*_ms; .failures: consecutive retryable answers */
    struct ratelimit rl_retry, rl_reject, rl_local;

    unsigned open_handles; /* uv handles whose close callback has not run */
    bool closing;
    bool global_init;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void check_done(struct sg_forward *f);
static void pump(struct sg_forward *f);

enum sg_fwd_outcome sg_forward_classify(long http_status, int curl_code)
{
    if (curl_code != 0) {
        return SG_FWD_RETRY;
    }
    if (http_status >= 200 && http_status <= 299) {
        return SG_FWD_OK;
    }
    if (http_status == 429 || (http_status >= 500 && http_status <= 599)) {
        return SG_FWD_RETRY;
    }
    /* Redirects are not followed; a 3xx most likely means a wrong
     * backend.url, and dead-lettering good data for that would lose it. */
    if (http_status >= 300 && http_status <= 399) {
        return SG_FWD_RETRY;
    }
    if ((http_status >= 400 && http_status <= 499) || (http_status >= 100 && http_status <= 199)) {
        return SG_FWD_REJECTED;
    }
    /* No status at all or a status outside 1xx-5xx: the answer is broken,
     * not a verdict on the batch, so try again later. */
    return SG_FWD_RETRY;
}

/* Retry-After on top of our own backoff: at least retry_after_s, clamped to
 * retry_after_max_ms. */
static uint64_t with_retry_after(uint64_t delay_ms, int64_t retry_after_s,
                                 uint64_t retry_after_max_ms)
{
    uint64_t ra_ms = 0;

    /* libcurl 7.88.1 returns a large negative value for a Retry-After date
     * in the past (clamped only since 8.12.0): that means "now". */
    if (retry_after_s > 0) {
        if ((uint64_t)retry_after_s > retry_after_max_ms / 1000) {
            ra_ms = retry_after_max_ms;
        } else {
            ra_ms = (uint64_t)retry_after_s * 1000;
        }
        if (ra_ms > retry_after_max_ms) {
            ra_ms = retry_after_max_ms;
        }
    }
    return delay_ms > ra_ms ? delay_ms : ra_ms;
}

uint64_t sg_forward_backoff_ms(uint32_t failures, uint64_t min_ms, uint64_t max_ms,
                               int64_t retry_after_s, uint64_t retry_after_max_ms, double rnd)
{
    return with_retry_after(sg_backoff_delay_ms(failures, min_ms, max_ms, 0, rnd), retry_after_s,
                            retry_after_max_ms);
}

/* True when a line may be written now; *suppressed gets the count of lines
 * swallowed since the last one. */
static bool rl_allow(struct ratelimit *rl, uint64_t now_ms, uint64_t *suppressed)
{
    if (rl->used && now_ms - rl->last_ms < WARN_INTERVAL_MS) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ms = now_ms;
    rl->used = true;
    return true;
}

static void handle_closed(struct sg_forward *f)
{
    void (*cb)(void *arg);

    f->open_handles--;
    if (f->closing && f->open_handles == 0 && f->close_cb != NULL) {
        cb = f->close_cb;
        f->close_cb = NULL;
        cb(f->close_arg);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct fwd_sock *sk = h->data;
    struct sg_forward *f = sk->f;

    free(sk);
    handle_closed(f);
}

/* Unlinks sk and closes its poll handle; uv_close stops the watcher and
 * drops the fd from the epoll set right away, the memory goes in the close
 * callback. */
static void sock_close(struct sg_forward *f, struct fwd_sock *sk)
{
    struct fwd_sock **pp;

    for (pp = &f->socks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sk) {
            *pp = sk->next;
            break;
        }
    }
    sk->next = NULL;
    uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
}

/* Our record for fd: the one curl handed back as socketp if it is still in
 * our list (a pointer is compared, never dereferenced, before it is found),
 * else NULL; *stale gets another live record for the same fd number, which
 * can only be left over from a socket closed behind our back. */
static struct fwd_sock *sock_find(struct sg_forward *f, curl_socket_t fd, void *socketp,
                                  struct fwd_sock **stale)
{
    struct fwd_sock *sk, *hit = NULL;

    *stale = NULL;
    for (sk = f->socks; sk != NULL; sk = sk->next) {
        if (sk->fd != fd) {
            continue;
        }
        if (socketp != NULL && sk == socketp) {
            hit = sk;
        } else {
            *stale = sk;
        }
    }
    return hit;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct fwd_sock *sk = h->data;
    struct sg_forward *f = sk->f;
    curl_socket_t fd = sk->fd;
    int flags = 0, running = 0;

    if (f->closing) {
        return;
    }
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) {
            flags |= CURL_CSELECT_IN;
        }
        if (events & UV_WRITABLE) {
            flags |= CURL_CSELECT_OUT;
        }
    }
    curl_multi_socket_action(f->multi, fd, flags, &running);
    check_done(f);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct sg_forward *f = userp;
    struct fwd_sock *stale = NULL, *sk = sock_find(f, s, socketp, &stale);
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            sock_close(f, sk);
        }
        if (stale != NULL) {
            sock_close(f, stale);
        }
        curl_multi_assign(f->multi, s, NULL);
        return 0;
    }
    if (f->closing) {
        return 0;
    }
    if (stale != NULL) {
        /* libuv would abort modifying an epoll entry that vanished with the
         * old socket: drop the old watcher and start a fresh one. */
        sock_close(f, stale);
    }
    if (sk == NULL) {
        sk = sg_xcalloc(1, sizeof(*sk));
        if (uv_poll_init_socket(f->loop, &sk->poll, s) != 0) {
            free(sk);
            return -1;
        }
        sk->poll.data = sk;
        sk->f = f;
        sk->fd = s;
        sk->next = f->socks;
        f->socks = sk;
        f->open_handles++;
        curl_multi_assign(f->multi, s, sk);
    }
    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }
    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }
    if (events == 0) {
        uv_poll_stop(&sk->poll);
    } else if (uv_poll_start(&sk->poll, events, on_poll) != 0) {
        return -1;
    }
    return 0;
}

/* curl is about to close fd: stop watching it while the number still
 * refers to this socket, then close it. */
static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct sg_forward *f = clientp;
    struct fwd_sock *stale = NULL;

    /* Whatever record we hold for this fd number goes now. */
    sock_find(f, fd, NULL, &stale);
    if (stale != NULL) {
        sock_close(f, stale);
    }
    return close(fd);
}

static void on_curl_timeout(uv_timer_t *t)
{
    struct sg_forward *f = t->data;
    int running = 0;

    if (f->closing) {
        return;
    }
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

/* CURLMOPT_TIMERFUNCTION: only arms our timer. A 0 ms expiry runs on the
 * next loop turn, never synchronously (curl forbids calling it from here). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct sg_forward *f = userp;

    (void)multi;
    if (f->closing) {
        return 0;
    }
    if (timeout_ms < 0) {
        uv_timer_stop(&f->curl_timer);
    } else {
        uv_timer_start(&f->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

/* Keeps the first SNIPPET_MAX bytes of the answer; the rest is discarded
 * (but accepted, so the transfer completes normally). */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct fwd_req *r = userdata;
    size_t n = size * nmemb, take = SNIPPET_MAX - r->snippet_len;

    if (take > n) {
        take = n;
    }
    memcpy(r->snippet + r->snippet_len, ptr, take);
    r->snippet_len += take;
    r->snippet[r->snippet_len] = '\0';
    return n;
}

static void on_backoff(uv_timer_t *t)
{
    pump(t->data);
}

static bool seq_in_flight(const struct sg_forward *f, uint64_t seq)
{
    const struct fwd_req *r;

    for (r = f->reqs; r != NULL; r = r->next) {
        if (r->batch.seq == seq) {
            return true;
        }
    }
    return false;
}

/* The oldest spooled batch after cursor_seq that is not in flight. */
static int next_batch(struct sg_forward *f, struct sg_spool_batch *out)
{
    uint64_t after = f->cursor_seq;
    int rc;

    for (;;) {
        rc = sg_spool_peek(f->sp, after, out);
        if (rc != 0) {
            return rc;
        }
        if (!seq_in_flight(f, out->seq)) {
            return 0;
        }
        after = out->seq;
        sg_spool_batch_clear(out);
    }
}

static void req_free(struct fwd_req *r)
{
    if (r == NULL) {
        return;
    }
    if (r->easy != NULL) {
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    sg_spool_batch_clear(&r->batch);
    free(r);
}

/* Builds the headers of one POST. Returns NULL on allocation failure. */
static struct curl_slist *make_headers(const struct sg_forward *f, const struct fwd_req *r)
{
    struct curl_slist *h = NULL, *t;
    char key[512];

    char batch_id[sizeof(key) - sizeof("Idempotency-Key: ")];

    sg_encode_batch_id(batch_id, sizeof(batch_id), f->gateway_id, r->batch.seq);
    snprintf(key, sizeof(key), "Idempotency-Key: %s", batch_id);
    t = curl_slist_append(h, r->batch.content_type == SG_CT_PROTOBUF
                                 ? "Content-Type: application/x-protobuf"
                                 : "Content-Type: application/json");
    if (t == NULL) {
        goto fail;
    }
    h = t;
    /* An empty Expect: stops curl from waiting for a 100 Continue that a
     * backend may never send (it adds one for bodies over 1 MiB). */
    if ((t = curl_slist_append(h, "Expect:")) == NULL) {
        goto fail;
    }
    h = t;
    if ((t = curl_slist_append(h, key)) == NULL) {
        goto fail;
    }
    h = t;
    if (f->auth_header != NULL) {
        if ((t = curl_slist_append(h, f->auth_header)) == NULL) {
            goto fail;
        }
        h = t;
    }
    return h;

fail:
    curl_slist_free_all(h);
    return NULL;
}

/* Starts the POST of batch b; takes b's body whatever happens.
 * Returns 0 or SG_ENOMEM/SG_EIO. */
static int start_request(struct sg_forward *f, struct sg_spool_batch *b)
{
    struct fwd_req *r = sg_xcalloc(1, sizeof(*r));
    long connect_ms;
    CURLcode cc = CURLE_OK;
    int rc = SG_EIO;

    r->f = f;
    r->batch = *b;
    memset(b, 0, sizeof(*b));
    r->easy = curl_easy_init();
    if (r->easy == NULL) {
        goto fail;
    }
    r->headers = make_headers(f, r);
    if (r->headers == NULL) {
        rc = SG_ENOMEM;
        goto fail;
    }
    connect_ms =
        (long)(f->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? f->timeout_ms : CONNECT_TIMEOUT_MAX_MS);

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (cc == CURLE_OK) {                                                                      \
            cc = curl_easy_setopt(r->easy, (opt), (val));                                          \
        }                                                                                          \
    } while (0)
    SETOPT(CURLOPT_URL, f->post_url);
    SETOPT(CURLOPT_PRIVATE, r);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->batch.len);
    SETOPT(CURLOPT_POSTFIELDS, r->batch.len > 0 ? (const char *)r->batch.body : "");
    SETOPT(CURLOPT_HTTPHEADER, r->headers);
    SETOPT(CURLOPT_USERAGENT, "sensegate/" SG_VERSION);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    /* Never pick a proxy up from http_proxy/https_proxy in the environment. */
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, r);
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SETOPT(CURLOPT_CLOSESOCKETDATA, f);
    if (f->ca_file != NULL) {
        SETOPT(CURLOPT_CAINFO, f->ca_file);
    }
#undef SETOPT
    if (cc != CURLE_OK) {
        goto fail;
    }
    r->start_ns = uv_hrtime();
    r->next = f->reqs;
    f->reqs = r;
    f->ninflight++;
    if (curl_multi_add_handle(f->multi, r->easy) != CURLM_OK) {
        f->reqs = r->next;
        f->ninflight--;
        goto fail;
    }
    f->m->forward_inflight = f->ninflight;
    return 0;

fail:
    req_free(r);
    return rc;
}

/* Sets the backend-wide pause to at least delay_ms from now. */
static void backoff_until(struct sg_forward *f, uint64_t delay_ms)
{
    uint64_t now, until;

    /* uv_now() is the time the loop iteration began; under load that is
     * milliseconds before this answer was read, which made a Retry-After: 1
     * pause end 4 ms early in CI.  Refresh it, and add the 1 ms that loop
     * time loses by truncation, so the pause is never shorter than asked. */
    uv_update_time(f->loop);
    now = uv_now(f->loop);
    delay_ms = delay_ms >= UINT64_MAX - 1 ? UINT64_MAX : delay_ms + 1;
    until = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;

    if (until > f->backoff_until_ms) {
        f->backoff_until_ms = until;
    }
    uv_timer_start(&f->backoff_timer, on_backoff, f->backoff_until_ms - now, 0);
}

static void local_error(struct sg_forward *f, const char *what, int rc)
{
    uint64_t suppressed = 0;

    if (rl_allow(&f->rl_local, uv_now(f->loop), &suppressed)) {
        sg_log(SG_LOG_ERROR, MOD, "%s failed: %s suppressed=%" PRIu64, what, sg_strerror(rc),
               suppressed);
    }
    backoff_until(f, LOCAL_ERROR_DELAY_MS);
}

/* Starts requests while there is room, no backoff, and something to send. */
static void pump(struct sg_forward *f)
{
    struct sg_spool_batch b;
    uint64_t seq;
    int rc;

    if (f->closing || uv_now(f->loop) < f->backoff_until_ms) {
        return;
    }
    while (f->ninflight < f->max_inflight) {
        memset(&b, 0, sizeof(b));
        rc = next_batch(f, &b);
        if (rc == SG_ENOTFOUND) {
            break;
        }
        if (rc != 0) {
            local_error(f, "spool peek", rc);
            break;
        }
        seq = b.seq;
        rc = start_request(f, &b);
        if (rc != 0) {
            local_error(f, "request start", rc);
            break;
        }
        if (seq > f->cursor_seq) {
            f->cursor_seq = seq;
        }
    }
}

/* Replaces bytes that would garble a log line or a stored reason. */
static void sanitize(char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) {
            *s = ' ';
        }
    }
}

/* Copies at most cap-1 bytes of s for use inside a quoted log value. */
static void log_quote(char *out, size_t cap, const char *s)
{
    size_t i;

    for (i = 0; i + 1 < cap && s[i] != '\0'; i++) {
        out[i] = (s[i] == '"' || s[i] == '\\') ? '\'' : s[i];
    }
    out[i] = '\0';
}

static void finish(struct sg_forward *f, struct fwd_req *r, CURLcode result)
{
    char batch_id[512], answer[81];
    uint64_t now = uv_now(f->loop), suppressed = 0, delay, mono;
    curl_off_t retry_after = 0;
    struct fwd_req **pp;
    long status = 0;
    int rc;

    for (pp = &f->reqs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    f->ninflight--;
    f->m->forward_inflight = f->ninflight;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    sg_encode_batch_id(batch_id, sizeof(batch_id), f->gateway_id, r->batch.seq);
    sanitize(r->snippet);

    switch (sg_forward_classify(status, (int)result)) {
    case SG_FWD_OK:
        rc = sg_spool_ack(f->sp, r->batch.seq);
        if (rc != 0 && rc != SG_ENOTFOUND) {
            sg_log(SG_LOG_ERROR, MOD, "spool ack failed batch_id=%s: %s (%s)", batch_id,
                   sg_strerror(rc), sg_spool_last_error(f->sp));
            /* Delivered but still spooled: it is sent again after the
             * backoff (the backend drops the repeat by batch_id), which
             * retries the ack too. */
            f->cursor_seq = 0;
            backoff_until(f, f->bo.min_ms > 1000 ? f->bo.min_ms : 1000);
        }
        if (f->bo.failures > 0) {
            sg_log(SG_LOG_INFO, MOD, "backend answering again after failures=%u", f->bo.failures);
        }
        sg_backoff_reset(&f->bo);
        f->m->forward_ok++;
        sg_hist_observe(&f->m->forward_latency, (double)(uv_hrtime() - r->start_ns) / 1e9);
        /* close_mono_ms: when the batch's oldest window closed (spool.h), 0
         * after a restart. */
        if (r->batch.close_mono_ms != 0) {
            mono = sg_mono_ms();
            sg_hist_observe(&f->m->delivery_delay,
                            mono > r->batch.close_mono_ms
                                ? (double)(mono - r->batch.close_mono_ms) / 1000.0
                                : 0.0);
        }
        sg_log(SG_LOG_DEBUG, MOD, "delivered batch_id=%s status=%ld", batch_id, status);
        break;

    case SG_FWD_REJECTED:
        rc = sg_spool_dead(f->sp, r->batch.seq, (int)status, r->snippet);
        if (rc != 0 && rc != SG_ENOTFOUND) {
            sg_log(SG_LOG_ERROR, MOD, "spool dead-letter failed batch_id=%s: %s (%s)", batch_id,
                   sg_strerror(rc), sg_spool_last_error(f->sp));
            /* Still spooled: it is sent again after the backoff, which tries
             * the move again. */
            f->cursor_seq = 0;
            backoff_until(f, f->bo.min_ms > 1000 ? f->bo.min_ms : 1000);
        }
        f->m->forward_rejected++;
        if (rl_allow(&f->rl_reject, now, &suppressed)) {
            log_quote(answer, sizeof(answer), r->snippet);
            sg_log(SG_LOG_WARN, MOD,
                   "backend rejected batch, moved to dead letters batch_id=%s status=%ld "
                   "answer=\"%s\" suppressed=%" PRIu64,
                   batch_id, status, answer, suppressed);
        }
        break;

    case SG_FWD_RETRY:
        f->m->forward_retry++;
        curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &retry_after);
        /* Counts the failure; Retry-After only ever lengthens the pause. */
        delay =
            with_retry_after(sg_backoff_fail(&f->bo), (int64_t)retry_after, f->retry_after_max_ms);
        /* The batch stays spooled; start again from the oldest not in flight. */
        f->cursor_seq = 0;
        backoff_until(f, delay);
        if (rl_allow(&f->rl_retry, now, &suppressed)) {
            if (result != CURLE_OK) {
                sg_log(SG_LOG_WARN, MOD,
                       "backend unreachable, will retry batch_id=%s error=\"%s\" failures=%u "
                       "backoff_ms=%" PRIu64 " suppressed=%" PRIu64,
                       batch_id, r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(result),
                       f->bo.failures, delay, suppressed);
            } else if (status >= 300 && status <= 399) {
                sg_log(SG_LOG_ERROR, MOD,
                       "backend answered a redirect, which is not followed; check backend.url "
                       "batch_id=%s status=%ld backoff_ms=%" PRIu64 " suppressed=%" PRIu64,
                       batch_id, status, delay, suppressed);
            } else {
                sg_log(SG_LOG_WARN, MOD,
                       "backend busy or failing, will retry batch_id=%s status=%ld "
                       "retry_after_s=%" PRId64 " failures=%u backoff_ms=%" PRIu64
                       " suppressed=%" PRIu64,
                       batch_id, status, (int64_t)retry_after, f->bo.failures, delay, suppressed);
            }
        }
        break;
    }
    curl_multi_remove_handle(f->multi, r->easy);
    req_free(r);
}

/* Handles every finished transfer, then refills the pipeline. */
static void check_done(struct sg_forward *f)
{
    struct fwd_req *r;
    CURLMsg *msg;
    char *priv;
    int left = 0;

    while ((msg = curl_multi_info_read(f->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        r = (struct fwd_req *)priv;
        if (r != NULL) {
            finish(f, r, msg->data.result);
        }
    }
    pump(f);
}

/* "<url>/v1/rollups" without doubling a trailing slash. */
static char *make_post_url(const char *url)
{
    size_t n = strlen(url);
    char *s;

    while (n > 0 && url[n - 1] == '/') {
        n--;
    }
    s = sg_xmalloc(n + sizeof("/v1/rollups"));
    memcpy(s, url, n);
    memcpy(s + n, "/v1/rollups", sizeof("/v1/rollups"));
    return s;
}

static void wipe_free(char *s)
{
    volatile char *p = s;

    if (s == NULL) {
        return;
    }
    while (*p != '\0') {
        *p++ = '\0';
    }
    free(s);
}

int sg_forward_new(struct sg_forward **out, uv_loop_t *loop, struct sg_spool *sp,
                   struct sg_metrics *m, const struct sg_forward_opts *opts)
{
    struct sg_forward *f = NULL;
    size_t n;
    int rc = SG_EINVAL;

    if (out == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;
    if (loop == NULL || sp == NULL || m == NULL || opts == NULL || opts->url == NULL ||
        opts->gateway_id == NULL || opts->max_inflight == 0 || opts->timeout_ms == 0 ||
        opts->timeout_ms > LONG_MAX || opts->backoff_max_ms < opts->backoff_min_ms ||
        (strncmp(opts->url, "http://", 7) != 0 && strncmp(opts->url, "https://", 8) != 0)) {
        return SG_EINVAL;
    }
    f = sg_xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->sp = sp;
    f->m = m;
    f->timeout_ms = opts->timeout_ms;
    f->max_inflight = opts->max_inflight;
    f->retry_after_max_ms = opts->retry_after_max_ms;
    f->post_url = make_post_url(opts->url);
    f->gateway_id = sg_xstrdup(opts->gateway_id);
    f->ca_file = opts->ca_file != NULL ? sg_xstrdup(opts->ca_file) : NULL;
    if (opts->token != NULL && opts->token[0] != '\0') {
        n = strlen("Authorization: Bearer ") + strlen(opts->token) + 1;
        f->auth_header = sg_xmalloc(n);
        snprintf(f->auth_header, n, "Authorization: Bearer %s", opts->token);
    }
    sg_backoff_init(&f->bo, opts->backoff_min_ms, opts->backoff_max_ms, 0,
                    uv_hrtime() ^ ((uint64_t)(uintptr_t)f << 16));

    rc = SG_EIO;
    /* Reference-counted and thread-safe in 7.88.1 (CURL_VERSION_THREADSAFE). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        goto fail;
    }
    f->global_init = true;
    f->multi = curl_multi_init();
    if (f->multi == NULL) {
        goto fail;
    }
    if (curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)f->max_inflight) !=
            CURLM_OK) {
        goto fail;
    }
    /* uv_timer_init cannot fail (libuv src/timer.c always returns 0), so
     * nothing below needs undoing on the loop. */
    uv_timer_init(loop, &f->curl_timer);
    f->curl_timer.data = f;
    uv_timer_init(loop, &f->backoff_timer);
    f->backoff_timer.data = f;
    f->open_handles = 2;
    *out = f;
    return 0;

fail:
    if (f->multi != NULL) {
        curl_multi_cleanup(f->multi);
    }
    if (f->global_init) {
        curl_global_cleanup();
    }
    wipe_free(f->auth_header);
    free(f->post_url);
    free(f->gateway_id);
    free(f->ca_file);
    free(f);
    return rc;
}

int sg_forward_set_limits(struct sg_forward *f, const struct sg_forward_opts *opts)
{
    if (f == NULL || opts == NULL || opts->max_inflight == 0 || opts->timeout_ms == 0 ||
        opts->timeout_ms > LONG_MAX || opts->backoff_max_ms < opts->backoff_min_ms) {
        return SG_EINVAL;
    }
    f->timeout_ms = opts->timeout_ms;
    sg_backoff_set_limits(&f->bo, opts->backoff_min_ms, opts->backoff_max_ms, 0);
    f->retry_after_max_ms = opts->retry_after_max_ms;
    if (opts->max_inflight != f->max_inflight) {
        f->max_inflight = opts->max_inflight;
        /* Connections to the backend follow; curl applies it to new transfers. */
        curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)f->max_inflight);
        pump(f);
    }
    return 0;
}

void sg_forward_kick(struct sg_forward *f)
{
    if (f != NULL) {
        pump(f);
    }
}

uint32_t sg_forward_inflight(const struct sg_forward *f)
{
    return f != NULL ? f->ninflight : 0;
}

bool sg_forward_idle(const struct sg_forward *f)
{
    struct sg_spool_batch b;
    int rc;

    if (f == NULL) {
        return true;
    }
    if (f->ninflight > 0) {
        return false;
    }
    memset(&b, 0, sizeof(b));
    rc = sg_spool_peek(f->sp, 0, &b);
    sg_spool_batch_clear(&b);
    return rc == SG_ENOTFOUND;
}

void sg_forward_close(struct sg_forward *f, void (*cb)(void *arg), void *arg)
{
    struct fwd_req *r;

    if (f == NULL || f->closing) {
        return;
    }
    f->closing = true;
    f->close_cb = cb;
    f->close_arg = arg;
    uv_timer_stop(&f->curl_timer);
    uv_timer_stop(&f->backoff_timer);
    /* Abort what is in flight: the batches stay spooled and go out again
     * after a restart, under the same batch_id. */
    while ((r = f->reqs) != NULL) {
        f->reqs = r->next;
        curl_multi_remove_handle(f->multi, r->easy);
        req_free(r);
    }
    f->ninflight = 0;
    f->m->forward_inflight = 0;
    /* Closes cached connections; their sockets go through on_close_socket,
     * which closes the matching poll handles first. */
    curl_multi_cleanup(f->multi);
    f->multi = NULL;
    while (f->socks != NULL) {
        sock_close(f, f->socks);
    }
    uv_close((uv_handle_t *)&f->curl_timer, on_timer_closed);
    uv_close((uv_handle_t *)&f->backoff_timer, on_timer_closed);
}

void sg_forward_free(struct sg_forward *f)
{
    if (f == NULL) {
        return;
    }
    if (f->multi != NULL) {
        curl_multi_cleanup(f->multi);
    }
    if (f->global_init) {
        curl_global_cleanup();
    }
    wipe_free(f->auth_header);
    free(f->post_url);
    free(f->gateway_id);
    free(f->ca_file);
    free(f);
}

/*
 * Unit tests for forward: the pure outcome table and backoff function, and
 * loop tests of the real curl-on-libuv forwarder against a tiny HTTP server
 * (a libuv TCP server on 127.0.0.1:0 that answers from a script) with the
 * in-memory fake spool (fake_spool.c) in place of sg_spool.
 *
 * Build: test_forward.c fake_spool.c gateway/forward.c, linked with
 * sg_metrics sg_common libuv libcurl CUnit (not sg_spool).
 */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "common.h"
#include "config.h"
#include "fake_spool.h"
#include "forward.h"
#include "metrics.h"
#include "sg_test.h"

/* ---------------------------------------------------------------------- */
/* classify                                                               */

static void test_classify_table(void)
{
    static const struct {
        long status;
        int curl_code;
        enum sg_fwd_outcome want;
    } cases[] = {
        {200, 0, SG_FWD_OK},
        {201, 0, SG_FWD_OK},
        {202, 0, SG_FWD_OK},
        {204, 0, SG_FWD_OK},
        {299, 0, SG_FWD_OK},
        {301, 0, SG_FWD_RETRY}, /* not followed: a config problem, keep the data */
        {302, 0, SG_FWD_RETRY},
        {308, 0, SG_FWD_RETRY},
        {400, 0, SG_FWD_REJECTED},
        {401, 0, SG_FWD_REJECTED},
        {403, 0, SG_FWD_REJECTED},
        {404, 0, SG_FWD_REJECTED},
        {408, 0, SG_FWD_REJECTED}, /* contract: every 4xx but 429 is a dead letter */
        {409, 0, SG_FWD_REJECTED},
        {413, 0, SG_FWD_REJECTED},
        {422, 0, SG_FWD_REJECTED},
        {429, 0, SG_FWD_RETRY},
        {499, 0, SG_FWD_REJECTED},
        {500, 0, SG_FWD_RETRY},
        {502, 0, SG_FWD_RETRY},
        {503, 0, SG_FWD_RETRY},
        {504, 0, SG_FWD_RETRY},
        {599, 0, SG_FWD_RETRY},
        {100, 0, SG_FWD_REJECTED},
        {101, 0, SG_FWD_REJECTED},
        {0, 0, SG_FWD_RETRY},   /* no answer at all */
        {600, 0, SG_FWD_RETRY}, /* nonsense status: not a verdict */
        {0, CURLE_COULDNT_RESOLVE_HOST, SG_FWD_RETRY},
        {0, CURLE_COULDNT_CONNECT, SG_FWD_RETRY},
        {0, CURLE_OPERATION_TIMEDOUT, SG_FWD_RETRY},
        {0, CURLE_SSL_CONNECT_ERROR, SG_FWD_RETRY},
        {0, CURLE_PEER_FAILED_VERIFICATION, SG_FWD_RETRY},
        {0, CURLE_GOT_NOTHING, SG_FWD_RETRY},
        {0, CURLE_SEND_ERROR, SG_FWD_RETRY},
        {0, CURLE_RECV_ERROR, SG_FWD_RETRY},
        {200, CURLE_PARTIAL_FILE, SG_FWD_RETRY}, /* a transport error wins over a status */
        {400, CURLE_RECV_ERROR, SG_FWD_RETRY},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum sg_fwd_outcome got = sg_forward_classify(cases[i].status, cases[i].curl_code);
        if (got != cases[i].want) {
            fprintf(stderr, "\nclassify(%ld, %d) = %d, want %d\n", cases[i].status,
                    cases[i].curl_code, (int)got, (int)cases[i].want);
        }
        CU_ASSERT_EQUAL(got, cases[i].want);
    }
}

/* ---------------------------------------------------------------------- */
/* backoff                                                                */

#define RND_TOP 0.9999999999 /* the largest rnd the caller can pass, near 1 */

static void test_backoff_full_jitter_bounds(void)
{
    uint64_t prev, d, cap;
    uint32_t failures;
    int i;

    for (failures = 1; failures <= 12; failures++) {
        cap = 1000ULL << (failures - 1);
        if (cap > 300000) {
            cap = 300000;
        }
        prev = 0;
        for (i = 0; i < 1000; i++) {
            d = sg_forward_backoff_ms(failures, 1000, 300000, 0, 3600000, (double)i / 1000.0);
            CU_ASSERT(d <= cap);
            CU_ASSERT(d >= prev); /* monotone in rnd: a uniform map, not a hash */
            prev = d;
        }
        CU_ASSERT_EQUAL(sg_forward_backoff_ms(failures, 1000, 300000, 0, 3600000, 0.0), 0);
        CU_ASSERT_EQUAL(sg_forward_backoff_ms(failures, 1000, 300000, 0, 3600000, RND_TOP), cap);
    }
    /* The middle of the range maps to the middle of [0, cap]. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 0, 3600000, 0.5), 500);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(3, 1000, 300000, 0, 3600000, 0.25), 1000);
}

static void test_backoff_growth_and_cap(void)
{
    static const uint64_t want[] = {1000,  2000,   4000,   8000,   16000, 32000,
                                    64000, 128000, 256000, 300000, 300000};
    uint32_t i;

    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        CU_ASSERT_EQUAL(sg_forward_backoff_ms(i + 1, 1000, 300000, 0, 3600000, RND_TOP), want[i]);
    }
    /* No overflow for huge failure counts. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(64, 1000, 300000, 0, 3600000, RND_TOP), 300000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1000, 1000, 300000, 0, 3600000, RND_TOP), 300000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(UINT32_MAX, 1000, UINT64_MAX, 0, 3600000, 1.0),
                    UINT64_MAX);
    CU_ASSERT(sg_forward_backoff_ms(UINT32_MAX, 1000, UINT64_MAX, 0, 3600000, RND_TOP) >
              UINT64_MAX / 2);
    /* Zero failures: no exponential part. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(0, 1000, 300000, 0, 3600000, RND_TOP), 0);
    /* rnd outside [0,1) is clamped, NaN counts as 0. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(2, 1000, 300000, 0, 3600000, 1.0), 2000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(2, 1000, 300000, 0, 3600000, 7.0), 2000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(2, 1000, 300000, 0, 3600000, -0.5), 0);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(2, 1000, 300000, 0, 3600000, 0.0 / 0.0), 0);
}

static void test_backoff_retry_after(void)
{
    /* Honoured: at least the server's value even with zero jitter. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 120, 3600000, 0.0), 120000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 1, 3600000, 0.0), 1000);
    /* Longer than the exponential cap is still honoured. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 1800, 3600000, RND_TOP), 1800000);
    /* Jitter larger than Retry-After wins. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(9, 1000, 300000, 1, 3600000, RND_TOP), 256000);
    /* Clamped to retry_after_max_ms (far-future date). */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 7200, 3600000, 0.0), 3600000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, INT64_MAX, 3600000, 0.0), 3600000);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 3601, 3600000, 0.0), 3600000);
    /* libcurl 7.88.1 returns a large negative value for a past HTTP-date:
     * that is "retry now", i.e. the plain backoff. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, -350544285, 3600000, 0.0), 0);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, -350544285, 3600000, 0.5), 500);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, INT64_MIN, 3600000, 0.0), 0);
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, -1, 3600000, 0.0), 0);
    /* 0 = absent or unparsable. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 0, 3600000, 0.0), 0);
    /* A zero maximum switches Retry-After off. */
    CU_ASSERT_EQUAL(sg_forward_backoff_ms(1, 1000, 300000, 120, 0, 0.0), 0);
}

/* ---------------------------------------------------------------------- */
/* A tiny scripted HTTP server on the test loop                           */

#define SRV_MAX_REQS 32
#define SRV_MAX_CONNS 16
#define SRV_BUF 16384

struct srv_req {
    char method[16];
    char path[64];
    char idem_key[128];
    char content_type[64];
    char auth[128];
    char expect[64];
    int has_expect;
    char body[512];
    size_t body_len;
    uint64_t at_ms; /* uv_now when the request was complete */
};

struct srv;

struct srv_conn {
    uv_tcp_t tcp;
    struct srv *s;
    char buf[SRV_BUF];
    size_t len;
    int answered;
    int open;
    uv_write_t wr;
    char *resp;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    const char *const *script; /* canned answers, one per request; NULL = never answer */
    size_t nscript;
    struct srv_req reqs[SRV_MAX_REQS];
    size_t nreqs;
    struct srv_conn *conns[SRV_MAX_CONNS];
    size_t nconns;
    int open_conns;
    int max_open_conns;
    int closed_handles;
};

static void srv_on_conn_closed(uv_handle_t *h)
{
    struct srv_conn *c = h->data;

    c->s->open_conns--;
    c->open = 0;
    free(c->resp);
    c->resp = NULL;
}

static void srv_close_conn(struct srv_conn *c)
{
    if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, srv_on_conn_closed);
    }
}

static void srv_on_written(uv_write_t *wr, int status)
{
    struct srv_conn *c = wr->data;
    int keep = c->resp != NULL && strstr(c->resp, "Connection: close") == NULL;

    free(c->resp);
    c->resp = NULL;
    if (status < 0 || !keep) {
        srv_close_conn(c);
    }
}

static void srv_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct srv_conn *c = h->data;

    (void)suggested;
    buf->base = c->buf + c->len;
    buf->len = SRV_BUF - 1 - c->len;
}

/* Copies the value of header name (case-insensitive) from the header block
 * hdr into out; returns 1 if present. */
static int srv_header(const char *hdr, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name), n;
    const char *p = hdr, *eol;

    while ((eol = strstr(p, "\r\n")) != NULL && eol != p) {
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            p += nlen + 1;
            while (*p == ' ') {
                p++;
            }
            n = (size_t)(eol - p);
            if (n >= cap) {
                n = cap - 1;
            }
            memcpy(out, p, n);
            out[n] = '\0';
            return 1;
        }
        if ((size_t)(eol - p) == nlen && strncasecmp(p, name, nlen) == 0) {
            out[0] = '\0';
            return 1;
        }
        p = eol + 2;
    }
    return 0;
}

static void srv_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct srv_conn *c = st->data;
    struct srv *s = c->s;
    struct srv_req *r;
    char clen[32] = "0";
    const char *end, *answer;
    size_t hdr_len, body_len;
    uv_buf_t out;

    (void)buf;
    if (nread < 0) {
        srv_close_conn(c);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (c->answered || (end = strstr(c->buf, "\r\n\r\n")) == NULL) {
        return;
    }
    hdr_len = (size_t)(end - c->buf) + 4;
    srv_header(c->buf, "Content-Length", clen, sizeof(clen));
    body_len = (size_t)strtoul(clen, NULL, 10);
    if (c->len < hdr_len + body_len) {
        return;
    }
    if (s->nreqs == SRV_MAX_REQS) {
        srv_close_conn(c);
        return;
    }
    r = &s->reqs[s->nreqs];
    memset(r, 0, sizeof(*r));
    sscanf(c->buf, "%15s %63s", r->method, r->path);
    srv_header(c->buf, "Idempotency-Key", r->idem_key, sizeof(r->idem_key));
    srv_header(c->buf, "Content-Type", r->content_type, sizeof(r->content_type));
    srv_header(c->buf, "Authorization", r->auth, sizeof(r->auth));
    r->has_expect = srv_header(c->buf, "Expect", r->expect, sizeof(r->expect));
    r->body_len = body_len < sizeof(r->body) ? body_len : sizeof(r->body) - 1;
    memcpy(r->body, c->buf + hdr_len, r->body_len);
    r->at_ms = uv_now(s->loop);
    answer = s->nreqs < s->nscript ? s->script[s->nreqs] : NULL;
    s->nreqs++;
    /* Keep what follows this request for the next one on the connection. */
    memmove(c->buf, c->buf + hdr_len + body_len, c->len - hdr_len - body_len + 1);
    c->len -= hdr_len + body_len;
    if (answer == NULL) {
        c->answered = 1; /* hang: the client must give up or be closed */
        return;
    }
    c->resp = strdup(answer);
    out = uv_buf_init(c->resp, (unsigned int)strlen(c->resp));
    c->wr.data = c;
    uv_write(&c->wr, st, &out, 1, srv_on_written);
}

static void srv_on_connection(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    struct srv_conn *c;

    if (status < 0 || s->nconns == SRV_MAX_CONNS) {
        return;
    }
    c = calloc(1, sizeof(*c));
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->open = 1;
    s->conns[s->nconns++] = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        srv_close_conn(c);
        return;
    }
    s->open_conns++;
    if (s->open_conns > s->max_open_conns) {
        s->max_open_conns = s->open_conns;
    }
    uv_read_start((uv_stream_t *)&c->tcp, srv_on_alloc, srv_on_read);
}

static int srv_start(struct srv *s, uv_loop_t *loop, const char *const *script, size_t nscript)
{
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->script = script;
    s->nscript = nscript;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    if (uv_tcp_bind(&s->listener, (const struct sockaddr *)&sin, 0) != 0 ||
        uv_listen((uv_stream_t *)&s->listener, 16, srv_on_connection) != 0 ||
        uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

static void srv_stop(struct srv *s)
{
    size_t i;

    for (i = 0; i < s->nconns; i++) {
        srv_close_conn(s->conns[i]);
    }
    uv_close((uv_handle_t *)&s->listener, NULL);
}

static void srv_free(struct srv *s)
{
    size_t i;

    for (i = 0; i < s->nconns; i++) {
        free(s->conns[i]);
    }
    s->nconns = 0;
}

/* ---------------------------------------------------------------------- */
/* Loop fixture                                                           */

struct fixture {
    uv_loop_t loop;
    uv_timer_t watchdog;
    int timed_out;
    struct sg_spool *sp;
    struct sg_metrics m;
    struct sg_forward *f;
    struct srv srv;
    int fwd_closed;
    uint32_t max_inflight_seen; /* sampled after every loop turn */
};

static void on_watchdog(uv_timer_t *t)
{
    struct fixture *fx = t->data;

    fx->timed_out = 1;
}

static void fx_init(struct fixture *fx)
{
    struct sg_spool_opts so;

    memset(fx, 0, sizeof(*fx));
    CU_ASSERT_FATAL(uv_loop_init(&fx->loop) == 0);
    uv_timer_init(&fx->loop, &fx->watchdog);
    fx->watchdog.data = fx;
    uv_timer_start(&fx->watchdog, on_watchdog, 8000, 0);
    memset(&so, 0, sizeof(so));
    so.dir = "unused";
    so.now_ms = 1;
    CU_ASSERT_FATAL(sg_spool_open(&fx->sp, &so) == 0);
    fx->m.gateway_id = "gw-t";
}

static void fx_push(struct fixture *fx, uint64_t seq, int ct, const char *body)
{
    CU_ASSERT_FATAL(sg_spool_push(fx->sp, seq, ct, (const uint8_t *)body, strlen(body), 1000) == 0);
}

static void fx_start(struct fixture *fx, uint32_t max_inflight, uint64_t ra_max_ms, int port)
{
    struct sg_forward_opts o;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    memset(&o, 0, sizeof(o));
    o.url = url; /* copied by sg_forward_new */
    o.token = "s3cret-token";
    o.gateway_id = "gw-t";
    o.timeout_ms = 5000;
    o.max_inflight = max_inflight;
    o.backoff_min_ms = 1;
    o.backoff_max_ms = 10;
    o.retry_after_max_ms = ra_max_ms;
    CU_ASSERT_FATAL(sg_forward_new(&fx->f, &fx->loop, fx->sp, &fx->m, &o) == 0);
    sg_forward_kick(fx->f);
}

/* Runs the loop until done(fx) holds or the watchdog fires. */
static void fx_run_until(struct fixture *fx, int (*done)(struct fixture *fx))
{
    while (!done(fx) && !fx->timed_out) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (sg_forward_inflight(fx->f) > fx->max_inflight_seen) {
            fx->max_inflight_seen = sg_forward_inflight(fx->f);
        }
    }
    CU_ASSERT(!fx->timed_out);
}

static void on_fwd_closed(void *arg)
{
    struct fixture *fx = arg;

    fx->fwd_closed = 1;
}

/* Closes everything and checks that the loop closes cleanly. */
static void fx_teardown(struct fixture *fx)
{
    sg_forward_close(fx->f, on_fwd_closed, fx);
    srv_stop(&fx->srv);
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    CU_ASSERT(fx->fwd_closed);
    sg_forward_free(fx->f);
    srv_free(&fx->srv);
    CU_ASSERT_EQUAL(uv_loop_close(&fx->loop), 0);
    sg_spool_close(fx->sp);
}

/* ---------------------------------------------------------------------- */
/* Loop tests                                                             */

static const char *const script_retry_reject[] = {
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 5\r\n"
    "Connection: close\r\n\r\nbusy\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
    "bad batch: field \"x\"\r\n\x01\n",
    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
};

static int done_retry_reject(struct fixture *fx)
{
    return fx->srv.nreqs >= 4 && fake_spool_count(fx->sp) == 0 && sg_forward_inflight(fx->f) == 0;
}

static void test_loop_retry_then_ok_and_reject(void)
{
    struct fixture fx;
    uint64_t seq = 0;
    const char *reason = NULL;
    int status = 0;
    size_t i;

    fx_init(&fx);
    CU_ASSERT_FATAL(srv_start(&fx.srv, &fx.loop, script_retry_reject, 4) == 0);
    fx_push(&fx, 101, SG_CT_JSON, "{\"batch\":101}");
    fx_push(&fx, 102, SG_CT_PROTOBUF, "\x0a\x04gw-t");
    fx_push(&fx, 103, SG_CT_JSON, "{\"batch\":103}");
    /* 103 stands for a batch spooled before a restart: no close time. */
    CU_ASSERT_EQUAL(fake_spool_set_close_mono(fx.sp, 103, 0), 0);
    /* Retry-After: 1 is honoured but clamped to 300 ms so the test is fast
     * and also proves the clamp. */
    fx_start(&fx, 1, 300, fx.srv.port);
    CU_ASSERT_FALSE(sg_forward_idle(fx.f));
    fx_run_until(&fx, done_retry_reject);

    CU_ASSERT_EQUAL_FATAL(fx.srv.nreqs, 4);
    for (i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(fx.srv.reqs[i].method, "POST");
        CU_ASSERT_STRING_EQUAL(fx.srv.reqs[i].path, "/v1/rollups");
        CU_ASSERT_STRING_EQUAL(fx.srv.reqs[i].auth, "Bearer s3cret-token");
        CU_ASSERT_FALSE(fx.srv.reqs[i].has_expect);
    }
    /* Oldest first; the 503'd batch is resent with the same key and bytes. */
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[0].idem_key, "gw-t:00000000000000000101");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[1].idem_key, "gw-t:00000000000000000101");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[2].idem_key, "gw-t:00000000000000000102");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[3].idem_key, "gw-t:00000000000000000103");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[0].body, "{\"batch\":101}");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[1].body, "{\"batch\":101}");
    CU_ASSERT_EQUAL(fx.srv.reqs[2].body_len, 6);
    CU_ASSERT(memcmp(fx.srv.reqs[2].body, "\x0a\x04gw-t", 6) == 0);
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[3].body, "{\"batch\":103}");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[0].content_type, "application/json");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[2].content_type, "application/x-protobuf");
    /* Backoff honoured Retry-After up to the clamp (300 ms, not 1 s). */
    CU_ASSERT(fx.srv.reqs[1].at_ms - fx.srv.reqs[0].at_ms >= 300);
    CU_ASSERT(fx.srv.reqs[1].at_ms - fx.srv.reqs[0].at_ms < 1000);

    /* 102 went to dead letters with the status and a clean snippet. */
    CU_ASSERT_EQUAL_FATAL(fake_spool_dead_count(fx.sp), 1);
    CU_ASSERT_EQUAL(fake_spool_dead_get(fx.sp, 0, &seq, &status, &reason), 0);
    CU_ASSERT_EQUAL(seq, 102);
    CU_ASSERT_EQUAL(status, 400);
    CU_ASSERT_STRING_EQUAL(reason, "bad batch: field \"x\"    ");

    CU_ASSERT_EQUAL(fx.m.forward_ok, 2);
    CU_ASSERT_EQUAL(fx.m.forward_retry, 1);
    CU_ASSERT_EQUAL(fx.m.forward_rejected, 1);
    CU_ASSERT_EQUAL(fx.m.forward_inflight, 0);
    CU_ASSERT_EQUAL(fx.m.forward_latency.count, 2);
    CU_ASSERT_EQUAL(fx.m.delivery_delay.count, 1); /* 101; 103 had no close time */
    CU_ASSERT(fx.m.delivery_delay.sum >= 0.3);     /* it waited out the backoff */
    CU_ASSERT_EQUAL(fake_spool_ack_calls(fx.sp), 2);
    CU_ASSERT_TRUE(sg_forward_idle(fx.f));
    fx_teardown(&fx);
}

static int done_all_acked(struct fixture *fx)
{
    return fake_spool_count(fx->sp) == 0 && sg_forward_inflight(fx->f) == 0;
}

static const char *const script_ok6[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
};

static void test_loop_concurrency_bounded(void)
{
    struct fixture fx;
    char body[32];
    int seen[6] = {0};
    size_t i;
    uint64_t seq;

    fx_init(&fx);
    CU_ASSERT_FATAL(srv_start(&fx.srv, &fx.loop, script_ok6, 6) == 0);
    for (seq = 1; seq <= 6; seq++) {
        snprintf(body, sizeof(body), "{\"b\":%llu}", (unsigned long long)seq);
        fx_push(&fx, seq, SG_CT_JSON, body);
    }
    fx_start(&fx, 2, 1000, fx.srv.port);
    CU_ASSERT_EQUAL(sg_forward_inflight(fx.f), 2);
    fx_run_until(&fx, done_all_acked);

    CU_ASSERT_EQUAL(fx.srv.nreqs, 6);
    CU_ASSERT_EQUAL(fx.max_inflight_seen, 2);
    for (i = 0; i < fx.srv.nreqs; i++) {
        unsigned long long k = strtoull(fx.srv.reqs[i].idem_key + 5, NULL, 10);
        if (k >= 1 && k <= 6) {
            seen[k - 1]++;
        }
    }
    for (i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(seen[i], 1); /* each batch exactly once */
    }
    CU_ASSERT_EQUAL(fx.m.forward_ok, 6);
    CU_ASSERT_EQUAL(fx.m.forward_retry, 0);
    CU_ASSERT_EQUAL(fx.m.forward_latency.count, 6);
    CU_ASSERT_TRUE(sg_forward_idle(fx.f));
    fx_teardown(&fx);
}

static const char *const script_keepalive[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
};

static void test_loop_keepalive_reuses_connection(void)
{
    struct fixture fx;

    fx_init(&fx);
    CU_ASSERT_FATAL(srv_start(&fx.srv, &fx.loop, script_keepalive, 4) == 0);
    fx_push(&fx, 21, SG_CT_JSON, "{\"k\":21}");
    fx_push(&fx, 22, SG_CT_JSON, "{\"k\":22}");
    fx_push(&fx, 23, SG_CT_JSON, "{\"k\":23}");
    fx_start(&fx, 1, 1000, fx.srv.port);
    fx_run_until(&fx, done_all_acked);

    CU_ASSERT_EQUAL(fx.srv.nreqs, 4);
    CU_ASSERT_EQUAL(fx.srv.nconns, 1); /* one connection carried every request */
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[1].idem_key, "gw-t:00000000000000000022");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[2].idem_key, "gw-t:00000000000000000022");
    CU_ASSERT_STRING_EQUAL(fx.srv.reqs[2].body, "{\"k\":22}");
    CU_ASSERT_EQUAL(fx.m.forward_ok, 3);
    CU_ASSERT_EQUAL(fx.m.forward_retry, 1);
    /* Teardown closes the cached connection through the close-socket hook. */
    fx_teardown(&fx);
}

static int done_three_retries(struct fixture *fx)
{
    return fx->m.forward_retry >= 3;
}

static void test_loop_unreachable_keeps_batch(void)
{
    struct fixture fx;
    int port;

    fx_init(&fx);
    /* A port that was free a moment ago and has no listener now. */
    CU_ASSERT_FATAL(srv_start(&fx.srv, &fx.loop, NULL, 0) == 0);
    port = fx.srv.port;
    srv_stop(&fx.srv);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    fx_push(&fx, 7, SG_CT_JSON, "{}");
    fx_push(&fx, 8, SG_CT_JSON, "{}");
    fx_start(&fx, 1, 1000, port);
    fx_run_until(&fx, done_three_retries);

    /* Every attempt went to the oldest batch; nothing was lost or moved. */
    CU_ASSERT_EQUAL(fake_spool_count(fx.sp), 2);
    CU_ASSERT_EQUAL(fake_spool_dead_count(fx.sp), 0);
    CU_ASSERT_EQUAL(fx.m.forward_ok, 0);
    CU_ASSERT_EQUAL(fx.m.forward_rejected, 0);
    CU_ASSERT_FALSE(sg_forward_idle(fx.f));

    sg_forward_close(fx.f, on_fwd_closed, &fx);
    uv_close((uv_handle_t *)&fx.watchdog, NULL);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    CU_ASSERT(fx.fwd_closed);
    sg_forward_free(fx.f);
    srv_free(&fx.srv);
    CU_ASSERT_EQUAL(uv_loop_close(&fx.loop), 0);
    sg_spool_close(fx.sp);
}

static int done_two_hanging(struct fixture *fx)
{
    return fx->srv.nreqs >= 2;
}

static void test_loop_close_aborts_inflight(void)
{
    struct fixture fx;

    fx_init(&fx);
    /* An empty script: the server reads requests and never answers. */
    CU_ASSERT_FATAL(srv_start(&fx.srv, &fx.loop, NULL, 0) == 0);
    fx_push(&fx, 11, SG_CT_JSON, "{\"a\":1}");
    fx_push(&fx, 12, SG_CT_JSON, "{\"a\":2}");
    fx_push(&fx, 13, SG_CT_JSON, "{\"a\":3}");
    fx_start(&fx, 2, 1000, fx.srv.port);
    fx_run_until(&fx, done_two_hanging);
    CU_ASSERT_EQUAL(sg_forward_inflight(fx.f), 2);
    CU_ASSERT_EQUAL(fx.m.forward_inflight, 2);

    fx_teardown(&fx);
    /* Aborted batches stay spooled, nothing counted as an outcome. */
    CU_ASSERT_EQUAL(fx.m.forward_inflight, 0);
    CU_ASSERT_EQUAL(fx.m.forward_ok + fx.m.forward_retry + fx.m.forward_rejected, 0);
    CU_ASSERT_EQUAL(fx.srv.nreqs, 2);
}

static void test_new_rejects_bad_args(void)
{
    struct sg_forward_opts o;
    struct sg_forward *f = (struct sg_forward *)&o;
    struct sg_spool_opts so;
    struct sg_spool *sp = NULL;
    struct sg_metrics m;
    uv_loop_t loop;

    memset(&m, 0, sizeof(m));
    memset(&so, 0, sizeof(so));
    CU_ASSERT_FATAL(uv_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(sg_spool_open(&sp, &so) == 0);
    memset(&o, 0, sizeof(o));
    o.url = "ftp://127.0.0.1:1";
    o.gateway_id = "gw";
    o.timeout_ms = 1000;
    o.max_inflight = 1;
    CU_ASSERT_EQUAL(sg_forward_new(&f, &loop, sp, &m, &o), SG_EINVAL);
    CU_ASSERT_PTR_NULL(f);
    o.url = "http://127.0.0.1:1";
    o.max_inflight = 0;
    CU_ASSERT_EQUAL(sg_forward_new(&f, &loop, sp, &m, &o), SG_EINVAL);
    o.max_inflight = 1;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 5;
    CU_ASSERT_EQUAL(sg_forward_new(&f, &loop, sp, &m, &o), SG_EINVAL);
    o.backoff_max_ms = 10;
    CU_ASSERT_EQUAL(sg_forward_new(&f, &loop, sp, &m, &o), 0);
    /* Nothing spooled: idle, and kick starts nothing. */
    sg_forward_kick(f);
    CU_ASSERT_TRUE(sg_forward_idle(f));
    CU_ASSERT_EQUAL(sg_forward_inflight(f), 0);
    sg_forward_close(f, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    sg_forward_free(f);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
    sg_spool_close(sp);
}

static const struct sg_test classify_tests[] = {
    {"status and curl code table", test_classify_table},
    SG_TEST_END,
};
static const struct sg_test backoff_tests[] = {
    {"full jitter within [0, cap]", test_backoff_full_jitter_bounds},
    {"exponential growth and cap", test_backoff_growth_and_cap},
    {"Retry-After honoured and clamped", test_backoff_retry_after},
    SG_TEST_END,
};
static const struct sg_test lifecycle_tests[] = {
    {"bad arguments and empty spool", test_new_rejects_bad_args},
    SG_TEST_END,
};
static const struct sg_test delivery_tests[] = {
    {"503 then 200 same key; 400 dead-lettered", test_loop_retry_then_ok_and_reject},
    {"concurrency bounded, each batch once", test_loop_concurrency_bounded},
    {"keep-alive connection reused", test_loop_keepalive_reuses_connection},
    {"unreachable backend keeps the batch", test_loop_unreachable_keeps_batch},
    {"close aborts in-flight requests", test_loop_close_aborts_inflight},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"classify", NULL, NULL, classify_tests},
    {"backoff", NULL, NULL, backoff_tests},
    {"lifecycle", NULL, NULL, lifecycle_tests},
    {"delivery", NULL, NULL, delivery_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

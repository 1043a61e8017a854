/*
 * http: GET /metrics and GET /healthz with libmicrohttpd in external
 * polling mode on the libuv loop.
 *
 * MHD runs with MHD_USE_EPOLL and no thread of its own: its epoll fd is
 * watched by one uv_poll_t, and every readiness event calls MHD_run. After
 * each run one uv_timer_t is re-armed from MHD_get_timeout, which covers
 * connection timeouts and work MHD has buffered without a new fd event.
 * Handlers therefore run on the loop thread and read gateway state without
 * locks.
 *
 * Limits against slow or hostile clients: at most HTTP_CONN_LIMIT
 * connections, HTTP_CONN_TIMEOUT_S idle timeout, a small per-connection
 * memory pool (which also caps the request header size). Only GET is
 * served; request bodies are never read.
 *
 * Shutdown order matters: the poll handle is closed (removing the epoll fd
 * from libuv's set while the fd is valid) before MHD_stop_daemon closes it.
 * Loop thread only.
 */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"

#define MOD "http"
#define HTTP_CONN_LIMIT 64u
#define HTTP_CONN_TIMEOUT_S 10u
#define HTTP_CONN_MEMORY (16u * 1024u)
#define HTTP_PER_IP_LIMIT 16u

struct sg_http {
    uv_loop_t *loop;
    struct MHD_Daemon *daemon;
    uv_poll_t poll;   /* on MHD's epoll fd */
    uv_timer_t timer; /* MHD_get_timeout */
    sg_http_handler handler;
    void *ctx;
    uint16_t port;         /* bound TCP port */
    unsigned open_handles; /* uv handles whose close callback has not run */
    bool stopping;
    struct sg_buf body; /* reused for every answer */
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

static void on_mhd_timer(uv_timer_t *t);

/* Runs MHD once and re-arms the timer from its next deadline. */
static void run_mhd(struct sg_http *h)
{
    MHD_UNSIGNED_LONG_LONG timeout_ms = 0;

    if (h->stopping) {
        return;
    }
    MHD_run(h->daemon);
    if (MHD_get_timeout(h->daemon, &timeout_ms) == MHD_YES) {
        uv_timer_start(&h->timer, on_mhd_timer, (uint64_t)timeout_ms, 0);
    } else {
        uv_timer_stop(&h->timer);
    }
}

static void on_mhd_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void on_epoll(uv_poll_t *p, int status, int events)
{
    struct sg_http *h = p->data;

    (void)events;
    if (status < 0) {
        sg_log(SG_LOG_WARN, MOD, "poll on the listener failed: %s", uv_strerror(status));
    }
    run_mhd(h);
}

/* Sends a small static answer. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *body,
                             size_t len, const char *content_type, const char *allow)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    if (content_type != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    }
    if (allow != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* MHD access handler. Answers in the first call, before any request body
 * is read: nothing we serve takes one, and MHD discards it. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static const char not_found[] = "not found\n";
    static const char not_allowed[] = "method not allowed\n";
    struct sg_http *h = cls;
    const char *content_type = "text/plain; charset=utf-8";
    int status;

    (void)version;
    (void)upload_data;
    if (*con_cls != NULL) {
        /* A later call for the same request: only body bytes to drop. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    *con_cls = h;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof(not_allowed) - 1,
                     "text/plain; charset=utf-8", "GET");
    }
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/healthz") != 0) {
        return reply(conn, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1,
                     "text/plain; charset=utf-8", NULL);
    }
    sg_buf_reset(&h->body);
    status = h->handler(h->ctx, url, &h->body, &content_type);
    if (status < 100 || status > 599) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (strcmp(url, "/metrics") == 0 && status == 200) {
        content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
    return reply(conn, (unsigned int)status, h->body.data != NULL ? h->body.data : "", h->body.len,
                 content_type, NULL);
}

/* MHD's own error messages go through our log, one line each. fmt is
 * MHD's printf format for ap (the attribute lets the compiler check the
 * vsnprintf below instead of warning that fmt is not a literal). */
__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    /* Bad requests are the client's problem, and a scanner can send many:
     * at most one line per 10 s, with a count of those left out. Runs on
     * the loop thread only (external polling), so plain statics are fine. */
    static uint64_t window_start_ms, suppressed;
    uint64_t now = sg_mono_ms();
    if (window_start_ms != 0 && now - window_start_ms < 10000u) {
        suppressed++;
        return;
    }
    window_start_ms = now;
    sg_log(SG_LOG_WARN, MOD, "libmicrohttpd: %s (similar lines suppressed: %llu)", line,
           (unsigned long long)suppressed);
    suppressed = 0;
}

static void on_closed(uv_handle_t *handle)
{
    struct sg_http *h = handle->data;
    void (*cb)(void *arg);
    void *arg;

    if (--h->open_handles > 0) {
        return;
    }
    cb = h->stop_cb;
    arg = h->stop_arg;
    sg_buf_free(&h->body);
    free(h);
    if (cb != NULL) {
        cb(arg);
    }
}

/* IPv4 literal or "localhost" into sin. Names are not resolved: that would
 * block the loop, and an operator endpoint is configured by address. */
static int parse_listen(const char *listen, struct sockaddr_in *sin)
{
    char host[256];
    uint16_t port = 0;

    if (sg_parse_hostport(listen, host, sizeof(host), &port) != 0) {
        return SG_EINVAL;
    }
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (strcmp(host, "localhost") == 0) {
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return 0;
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        return SG_EINVAL;
    }
    return 0;
}

int sg_http_start(struct sg_http **out, uv_loop_t *loop, const char *listen,
                  sg_http_handler handler, void *ctx)
{
    const union MHD_DaemonInfo *info;
    struct sockaddr_in sin;
    struct sg_http *h = NULL;
    char addr[INET_ADDRSTRLEN];
    int epfd, rc;

    if (out == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;
    if (loop == NULL || listen == NULL || handler == NULL) {
        return SG_EINVAL;
    }
    rc = parse_listen(listen, &sin);
    if (rc != 0) {
        return rc;
    }
    inet_ntop(AF_INET, &sin.sin_addr, addr, sizeof(addr));
    if ((ntohl(sin.sin_addr.s_addr) >> 24) != 127) {
        /* An explicit choice of the operator, but /metrics has no auth. */
        sg_log(SG_LOG_WARN, MOD,
               "metrics endpoint listens on a non-loopback address, reachable from the "
               "network without authentication listen=%s",
               listen);
    }

    h = sg_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->handler = handler;
    h->ctx = ctx;
    /* The logger goes first so that MHD reports option problems through it. */
    h->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
        MHD_OPTION_CONNECTION_LIMIT, HTTP_CONN_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        HTTP_PER_IP_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, HTTP_CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (h->daemon == NULL) {
        rc = SG_EIO;
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL) {
        rc = SG_EIO;
        goto fail;
    }
    h->port = info->port;
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL) {
        rc = SG_EIO;
        goto fail;
    }
    epfd = info->epoll_fd;
    if (uv_poll_init(loop, &h->poll, epfd) != 0) {
        rc = SG_EIO;
        goto fail;
    }
    h->poll.data = h;
    h->open_handles++;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open_handles++;
    if (uv_poll_start(&h->poll, UV_READABLE, on_epoll) != 0) {
        /* Both handles are on the loop: go the normal way down. */
        sg_http_stop(h, NULL, NULL);
        return SG_EIO;
    }
    /* MHD may already have a deadline or buffered work. */
    run_mhd(h);
    sg_log(SG_LOG_INFO, MOD, "listening addr=%s port=%u", addr, (unsigned)h->port);
    *out = h;
    return 0;

fail:
    if (h->daemon != NULL) {
        MHD_stop_daemon(h->daemon);
    }
    free(h);
    return rc;
}

uint16_t sg_http_port(const struct sg_http *h)
{
    return h != NULL ? h->port : 0;
}

void sg_http_stop(struct sg_http *h, void (*cb)(void *arg), void *arg)
{
    if (h == NULL || h->stopping) {
        return;
    }
    h->stopping = true;
    h->stop_cb = cb;
    h->stop_arg = arg;
    /* uv_close takes the fd out of libuv's epoll set now, while it is still
     * MHD's epoll fd; only then may MHD close it. */
    uv_close((uv_handle_t *)&h->poll, on_closed);
    uv_close((uv_handle_t *)&h->timer, on_closed);
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
}

/*
 * Unit tests for http: the operator endpoint on a real loop, bound to
 * 127.0.0.1:0. A client thread sends raw HTTP/1.1 requests with blocking
 * sockets (the loop thread must not block) and hands the answers back
 * through a uv_async_t; then everything is closed and uv_loop_close() must
 * return 0.
 *
 * Build: test_http.c linked with sg_http (libuv, libmicrohttpd) and Threads.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "common.h"
#include "http.h"
#include "sg_test.h"

#define NREQ 5

struct answer {
    char text[4096];
    size_t len;
};

struct ctx {
    uv_loop_t loop;
    uv_async_t done;
    struct sg_http *h;
    uint16_t port;
    pthread_t thread;
    struct answer answers[NREQ];
    int handler_calls;
    int stopped;
};

static const char *const requests[NREQ] = {
    "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    "GET /metrics?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
};

static int handler(void *arg, const char *path, struct sg_buf *body, const char **content_type)
{
    struct ctx *c = arg;

    c->handler_calls++;
    if (strcmp(path, "/metrics") == 0) {
        sg_buf_puts(body, "# TYPE x counter\nx_total 1\n");
        return 200;
    }
    *content_type = "application/json";
    sg_buf_puts(body, "{\"status\":\"degraded\"}");
    return 503;
}

/* One blocking request/answer on a fresh connection. */
static void fetch(uint16_t port, const char *req, struct answer *a)
{
    struct sockaddr_in sin;
    ssize_t n;
    int fd;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    if (write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
        while (a->len < sizeof(a->text) - 1 &&
               (n = read(fd, a->text + a->len, sizeof(a->text) - 1 - a->len)) > 0) {
            a->len += (size_t)n;
        }
    }
    a->text[a->len] = '\0';
    close(fd);
}

static void *client(void *arg)
{
    struct ctx *c = arg;
    int i;

    for (i = 0; i < NREQ; i++) {
        fetch(c->port, requests[i], &c->answers[i]);
    }
    uv_async_send(&c->done);
    return NULL;
}

static void on_stopped(void *arg)
{
    struct ctx *c = arg;

    c->stopped = 1;
}

static void on_done(uv_async_t *a)
{
    struct ctx *c = a->data;

    sg_http_stop(c->h, on_stopped, c);
    uv_close((uv_handle_t *)&c->done, NULL);
}

static void test_endpoints(void)
{
    struct ctx c;

    memset(&c, 0, sizeof(c));
    CU_ASSERT_FATAL(uv_loop_init(&c.loop) == 0);
    uv_async_init(&c.loop, &c.done, on_done);
    c.done.data = &c;
    CU_ASSERT_FATAL(sg_http_start(&c.h, &c.loop, "127.0.0.1:0", handler, &c) == 0);
    c.port = sg_http_port(c.h);
    CU_ASSERT(c.port != 0);
    CU_ASSERT_FATAL(pthread_create(&c.thread, NULL, client, &c) == 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    pthread_join(c.thread, NULL);
    CU_ASSERT(c.stopped);
    CU_ASSERT_EQUAL(uv_loop_close(&c.loop), 0);

    CU_ASSERT(strncmp(c.answers[0].text, "HTTP/1.1 200", 12) == 0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(c.answers[0].text, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c.answers[0].text, "\r\n\r\n# TYPE x counter\nx_total 1\n"));
    CU_ASSERT(strncmp(c.answers[1].text, "HTTP/1.1 503", 12) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.answers[1].text, "Content-Type: application/json\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c.answers[1].text, "{\"status\":\"degraded\"}"));
    CU_ASSERT(strncmp(c.answers[2].text, "HTTP/1.1 404", 12) == 0);
    CU_ASSERT(strncmp(c.answers[3].text, "HTTP/1.1 405", 12) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.answers[3].text, "Allow: GET\r\n"));
    /* The query string is not part of the path. */
    CU_ASSERT(strncmp(c.answers[4].text, "HTTP/1.1 200", 12) == 0);
    /* 404 and 405 never reach the handler. */
    CU_ASSERT_EQUAL(c.handler_calls, 3);
}

static void test_bad_listen(void)
{
    struct sg_http *h = (struct sg_http *)&h;
    uv_loop_t loop;

    CU_ASSERT_FATAL(uv_loop_init(&loop) == 0);
    CU_ASSERT_EQUAL(sg_http_start(&h, &loop, "not-an-address", handler, NULL), SG_EINVAL);
    CU_ASSERT_PTR_NULL(h);
    CU_ASSERT_EQUAL(sg_http_start(&h, &loop, "example.invalid:80", handler, NULL), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_http_start(&h, &loop, "127.0.0.1:99999", handler, NULL), SG_EINVAL);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static const struct sg_test endpoints_tests[] = {
    {"metrics, healthz, 404, 405", test_endpoints},
    {"bad listen address", test_bad_listen},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"endpoints", NULL, NULL, endpoints_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}

/*
 * http: the operator endpoint, GET /metrics and GET /healthz, served by
 * libmicrohttpd in external-polling mode on the libuv loop (one uv_poll_t
 * on its epoll fd plus one uv_timer_t), so handlers run on the loop thread
 * and read gateway state without locks. Other paths 404, other methods 405,
 * malformed requests 400 (libmicrohttpd).
 */
#ifndef SG_HTTP_H
#define SG_HTTP_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"

/* Fills body for path ("/metrics" or "/healthz"); returns the HTTP status
 * and sets *content_type to a static string. */
typedef int (*sg_http_handler)(void *ctx, const char *path, struct sg_buf *body,
                               const char **content_type);

struct sg_http;

/* Listens on "host:port" (port 0 = any free port; see sg_http_port).
 * Returns 0, SG_EINVAL (bad address) or SG_EIO (bind failed; logged by the
 * caller). */
int sg_http_start(struct sg_http **out, uv_loop_t *loop, const char *listen,
                  sg_http_handler handler, void *ctx);
/* The bound TCP port. */
uint16_t sg_http_port(const struct sg_http *h);
/* Stops listening and closes the handles; cb(arg) runs from the loop when
 * they are closed and h is freed. */
void sg_http_stop(struct sg_http *h, void (*cb)(void *arg), void *arg);

#endif

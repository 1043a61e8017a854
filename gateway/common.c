/*
 * common: error strings, allocation that aborts on OOM, clocks, and the one
 * checked number parser. Thread-safe: no state.
 */
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *sg_strerror(int err)
{
    switch (err) {
    case SG_OK:
        return "success";
    case SG_ENOMEM:
        return "out of memory or over a configured bound";
    case SG_EINVAL:
        return "invalid argument";
    case SG_EIO:
        return "input/output error";
    case SG_EFULL:
        return "full";
    case SG_ECORRUPT:
        return "corrupt data";
    case SG_ENOTFOUND:
        return "not found";
    case SG_EVERSION:
        return "unsupported version";
    case SG_EDECODE:
        return "payload does not decode";
    case SG_ETOOBIG:
        return "too large";
    default:
        return "unknown error";
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "sensegate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *sg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        oom(n);
    }
    return p;
}

void *sg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        oom(n * size);
    }
    return p;
}

void *sg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        oom(n);
    }
    return q;
}

char *sg_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = sg_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

uint64_t sg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int sg_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return SG_EINVAL; /* empty, sign or space */
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return SG_EINVAL;
    }
    if ((uint64_t)v < min || (uint64_t)v > max) {
        return SG_EINVAL;
    }
    *out = (uint64_t)v;
    return 0;
}

int sg_parse_double(const char *s, double *out)
{
    if (s == NULL || *s == '\0') {
        return SG_EINVAL;
    }
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) {
        return SG_EINVAL;
    }
    *out = v;
    return 0;
}

int sg_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (colon == NULL || colon == s) {
        return SG_EINVAL;
    }
    size_t hlen = (size_t)(colon - s);
    if (hlen + 1 > hostcap) {
        return SG_EINVAL;
    }
    uint64_t p;
    if (sg_parse_u64(colon + 1, 0, 65535, &p) != 0) {
        return SG_EINVAL;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

void sg_redact_url(const char *url, char *out, size_t cap)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    if (at != NULL && (slash == NULL || at < slash)) {
        snprintf(out, cap, "%.*s***@%s", (int)(scheme + 3 - url), url, at + 1);
    } else {
        snprintf(out, cap, "%s", url);
    }
}

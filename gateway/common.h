/*
 * common: error codes, checked allocation, clocks and number parsing shared
 * by every module. Any thread may call these.
 */
#ifndef SG_COMMON_H
#define SG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Functions that can fail return 0 or one of these (always negative). */
enum {
    SG_OK = 0,
    SG_ENOMEM = -1,    /* a configured bound or an allocation cap was hit */
    SG_EINVAL = -2,    /* bad argument or bad input data */
    SG_EIO = -3,       /* an operating-system call failed; see errno at the call site */
    SG_EFULL = -4,     /* a bounded container is full */
    SG_ECORRUPT = -5,  /* stored data failed a check (CRC, magic, SQLite) */
    SG_ENOTFOUND = -6, /* nothing there */
    SG_EVERSION = -7,  /* stored data of a version we do not read */
    SG_EDECODE = -8,   /* a payload that does not decode */
    SG_ETOOBIG = -9,   /* input larger than its configured limit */
};

/* A static, human-readable text for an SG_E* code. Never NULL. */
const char *sg_strerror(int err);

/* Allocation that cannot fail: on out-of-memory they print the size and
 * abort. Memory is bounded by configuration, so OOM is a bug. */
void *sg_xmalloc(size_t n);
void *sg_xcalloc(size_t n, size_t size);
void *sg_xrealloc(void *p, size_t n);
char *sg_xstrdup(const char *s);

/* Copies url into out with the user:password part before the host replaced
 * by three asterisks, for logs. A string without a scheme separator or
 * without userinfo is copied as is. Truncates like snprintf. */
void sg_redact_url(const char *url, char *out, size_t cap);

/* Gateway wall clock (CLOCK_REALTIME), Unix epoch milliseconds. */
uint64_t sg_now_ms(void);
/* Monotonic clock (CLOCK_MONOTONIC), milliseconds since an arbitrary origin. */
uint64_t sg_mono_ms(void);

/* Checked decimal parse of the whole string into [min, max]: rejects empty
 * input, signs on unsigned values, trailing junk and overflow.
 * Returns 0, or SG_EINVAL (nothing stored). */
int sg_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int sg_parse_double(const char *s, double *out);

/* Splits "host:port" (IPv4 literal or name, port 0..65535) into its parts.
 * host must hold hostcap bytes. Returns 0 or SG_EINVAL. */
int sg_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port);

#endif

/*
 * log: formats one event into a stack buffer and sends it with a single
 * write(2) to stderr, so lines from the loop and from Paho's threads never
 * interleave. Any thread.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int sg_log_min_level = SG_LOG_INFO;
_Atomic int sg_log_json = 0;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int sg_log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (s != NULL && strcasecmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* Appends s as JSON string content (no quotes) to line within cap. */
static size_t json_escape(char *line, size_t pos, size_t cap, const char *s)
{
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            line[pos++] = '\\';
            line[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(line + pos, cap - pos, "\\u%04x", c);
        } else {
            line[pos++] = (char)c;
        }
    }
    return pos;
}

void sg_log_write(int level, const char *module, const char *fmt, ...)
{
    char msg[1536];
    char line[2048];
    struct timespec ts;
    struct tm tm;

    if (level < 0 || level > SG_LOG_ERROR) {
        level = SG_LOG_ERROR;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);

    size_t n;
    if (sg_log_json) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"",
                             when, level_names[level], module);
        n = json_escape(line, n, sizeof line - 3, msg);
        line[n++] = '"';
        line[n++] = '}';
    } else {
        int k = snprintf(line, sizeof line, "%s %-5s %s: %s", when, level_names[level], module, msg);
        n = k < 0 ? 0 : (size_t)k;
        if (n > sizeof line - 2) {
            n = sizeof line - 2;
        }
    }
    line[n++] = '\n';
    /* One write(2): atomic for lines below PIPE_BUF on pipes, and never
     * interleaved mid-line with other writers on a file. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

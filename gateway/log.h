/*
 * log: one line per event on stderr, written with a single write(2) so lines
 * from Paho's threads never interleave. Format:
 *   2026-11-29T14:03:07.123Z INFO  ingest: connected uri=tcp://127.0.0.1:1883
 * or, with log format json, one JSON object per line. Any thread may log.
 */
#ifndef SG_LOG_H
#define SG_LOG_H

enum sg_log_level { SG_LOG_DEBUG = 0, SG_LOG_INFO = 1, SG_LOG_WARN = 2, SG_LOG_ERROR = 3 };

/* Set on the loop (start, SIGHUP), read on every thread that logs (Paho's
 * too): atomic, so a reload racing a log line is defined behaviour. */
extern _Atomic int sg_log_min_level; /* messages below this level are not formatted */
extern _Atomic int sg_log_json;      /* 1: JSON lines instead of text */

/* Level check before any formatting happens. */
#define sg_log(level, module, ...)                                                        \
    do {                                                                                   \
        if ((level) >= sg_log_min_level) {                                                 \
            sg_log_write((level), (module), __VA_ARGS__);                                  \
        }                                                                                  \
    } while (0)

void sg_log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses "debug|info|warn|error"; returns the level or -1. */
int sg_log_level_parse(const char *s);

#endif

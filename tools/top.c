/*
 * sensegate-top: a live view of one gateway for operators, in the spirit of
 * htop. It polls the gateway's /metrics (Prometheus text) over HTTP with
 * libcurl, keeps the previous sample to turn counters into rates, and draws
 * one screen with plain ANSI escapes (no curses): the state headline
 * (FLOWING / IDLE / DISCONNECTED / DOWN), readings per second by verdict,
 * rollups and batches per second, spool depth and age, the MQTT connection,
 * and the drop reasons, worst first.
 *
 *   sensegate-top [--url URL] [--interval S] [--once] [--no-color]
 *
 * --once prints one snapshot without escapes (two samples --interval apart
 * for the rates; --interval 0 prints totals only) and exits: 0 when the
 * gateway answered, 1 when it did not. Interactive: q or Ctrl-C quits.
 *
 * Design: sample = all samples of one scrape in a flat array (a gateway
 * exposes about 130); lookups are linear, which costs nothing at this size.
 * Nothing here knows the gateway's internals beyond the metric names
 * documented in docs/OPERATING.md.
 */
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef SG_VERSION
#define SG_VERSION "unknown"
#endif

#define MAX_SAMPLES 4096
#define KEY_MAX 200

struct sample {
    char key[KEY_MAX]; /* name{labels} exactly as exposed */
    double v;
};

struct scrape {
    struct sample *s;
    size_t n;
    double t;          /* monotonic seconds when taken */
    bool ok;
};

struct body {
    char *data;
    size_t len;
};

struct opts {
    char url[1024];
    double interval_s;
    bool once;
    bool color;
};

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > 8u << 20) {
        return 0; /* a /metrics page is a few KiB; refuse anything absurd */
    }
    char *d = realloc(b->data, b->len + n + 1);
    if (d == NULL) {
        return 0;
    }
    memcpy(d + b->len, p, n);
    b->data = d;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Parses Prometheus text into sc (comments and malformed lines skipped). */
static void parse(struct scrape *sc, char *text)
{
    sc->n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0' || sc->n == MAX_SAMPLES) {
            continue;
        }
        /* The value follows the last space outside the label braces. */
        char *sp = strrchr(line, ' ');
        char *brace = strrchr(line, '}');
        if (sp == NULL || (brace != NULL && sp < brace)) {
            continue;
        }
        size_t kl = (size_t)(sp - line);
        if (kl == 0 || kl >= KEY_MAX) {
            continue;
        }
        char *end;
        errno = 0;
        double v = strtod(sp + 1, &end);
        if (end == sp + 1 || errno == ERANGE) {
            continue;
        }
        memcpy(sc->s[sc->n].key, line, kl);
        sc->s[sc->n].key[kl] = '\0';
        sc->s[sc->n].v = v;
        sc->n++;
    }
}

/* One GET of the metrics URL into sc. Returns 0, or -1 with err filled. */
static int fetch(CURL *c, const char *url, struct scrape *sc, char *err, size_t errcap)
{
    struct body b = {NULL, 0};
    char cerr[CURL_ERROR_SIZE] = "";
    long status = 0;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sensegate-top/" SG_VERSION);
    CURLcode rc = curl_easy_perform(c);
    sc->t = mono_s();
    sc->ok = false;
    if (rc != CURLE_OK) {
        snprintf(err, errcap, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
        free(b.data);
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && status != 0) { /* 0: file:// */
        snprintf(err, errcap, "%s: HTTP %ld", url, status);
        free(b.data);
        return -1;
    }
    parse(sc, b.data != NULL ? b.data : (char[]){'\0'});
    free(b.data);
    if (sc->n == 0) {
        snprintf(err, errcap, "%s: no Prometheus samples in the answer", url);
        return -1;
    }
    sc->ok = true;
    return 0;
}

/* Value of an exact sample key, or def. */
static double get(const struct scrape *sc, const char *key, double def)
{
    if (sc == NULL || !sc->ok) {
        return def;
    }
    for (size_t i = 0; i < sc->n; i++) {
        if (strcmp(sc->s[i].key, key) == 0) {
            return sc->s[i].v;
        }
    }
    return def;
}

/* Per-second rate of a counter between prev and cur; NAN when unknown
 * (no previous sample, or the counter went down: a restart). */
static double rate(const struct scrape *cur, const struct scrape *prev, const char *key)
{
    if (prev == NULL || !prev->ok || !cur->ok || cur->t <= prev->t) {
        return NAN;
    }
    double a = get(prev, key, NAN), b = get(cur, key, NAN);
    if (isnan(a) || isnan(b) || b < a) {
        return NAN;
    }
    return (b - a) / (cur->t - prev->t);
}

/* histogram_quantile over name_bucket{le="..."} samples (linear within a
 * bucket, as Prometheus does). NAN when there are no observations. */
static double quantile(const struct scrape *sc, const char *name, double q)
{
    double les[64], cum[64];
    size_t n = 0;
    char prefix[KEY_MAX];
    snprintf(prefix, sizeof prefix, "%s_bucket{le=\"", name);
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < sc->n && n < 64; i++) {
        if (strncmp(sc->s[i].key, prefix, pl) != 0) {
            continue;
        }
        const char *le = sc->s[i].key + pl;
        les[n] = strncmp(le, "+Inf", 4) == 0 ? INFINITY : strtod(le, NULL);
        cum[n] = sc->s[i].v;
        n++;
    }
    if (n == 0 || cum[n - 1] <= 0) {
        return NAN;
    }
    double rank = q * cum[n - 1];
    for (size_t i = 0; i < n; i++) {
        if (cum[i] >= rank) {
            if (isinf(les[i])) {
                return i > 0 ? les[i - 1] : NAN; /* above the top bound: report the bound */
            }
            double lo = i > 0 ? les[i - 1] : 0, clo = i > 0 ? cum[i - 1] : 0;
            if (cum[i] == clo) {
                return les[i];
            }
            return lo + (les[i] - lo) * (rank - clo) / (cum[i] - clo);
        }
    }
    return NAN;
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */

struct out {
    bool color;
    FILE *f;
};

static const char *col(const struct out *o, const char *code)
{
    return o->color ? code : "";
}

#define RESET "\033[0m"
#define BOLD "\033[1m"
#define RED "\033[31m"
#define GREEN "\033[32m"
#define YELLOW "\033[33m"
#define CYAN "\033[36m"
#define DIM "\033[2m"

static void fmt_rate(char *buf, size_t cap, double r)
{
    if (isnan(r)) {
        snprintf(buf, cap, "%s", "-");
    } else if (r >= 100) {
        snprintf(buf, cap, "%.0f", r);
    } else {
        snprintf(buf, cap, "%.1f", r);
    }
}

static void fmt_bytes(char *buf, size_t cap, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, cap, i == 0 ? "%.0f %s" : "%.1f %s", b, u[i]);
}

static void fmt_secs(char *buf, size_t cap, double s)
{
    if (isnan(s)) {
        snprintf(buf, cap, "-");
    } else if (s < 1) {
        snprintf(buf, cap, "%.0f ms", s * 1000);
    } else if (s < 120) {
        snprintf(buf, cap, "%.1f s", s);
    } else if (s < 7200) {
        snprintf(buf, cap, "%.0f min", s / 60);
    } else {
        snprintf(buf, cap, "%.1f h", s / 3600);
    }
}

struct drop {
    char label[48];
    double total;
    double per_s;
};

static int cmp_drop(const void *a, const void *b)
{
    const struct drop *x = a, *y = b;
    if (x->total != y->total) {
        return x->total < y->total ? 1 : -1;
    }
    return strcmp(x->label, y->label);
}

/* The gateway_id label of sensegate_build_info, or "?". */
static void gateway_id(const struct scrape *sc, char *buf, size_t cap)
{
    snprintf(buf, cap, "?");
    for (size_t i = 0; i < sc->n; i++) {
        const char *k = sc->s[i].key;
        if (strncmp(k, "sensegate_build_info{", 21) == 0) {
            const char *g = strstr(k, "gateway_id=\"");
            if (g != NULL) {
                g += 12;
                size_t n = strcspn(g, "\"");
                snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), g);
            }
            return;
        }
    }
}

static void render(const struct out *o, const struct opts *op, const struct scrape *cur,
                   const struct scrape *prev, const char *err)
{
    FILE *f = o->f;
    char a[64], b[64], c[64], d[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);

    if (cur == NULL || !cur->ok) {
        fprintf(f, "%ssensegate-top%s  %s  %s\n\n", col(o, BOLD), col(o, RESET), op->url, when);
        fprintf(f, "STATE     %sDOWN%s  cannot read metrics: %s\n", col(o, RED), col(o, RESET),
                err ? err : "no answer");
        return;
    }

    char gid[128];
    gateway_id(cur, gid, sizeof gid);
    double connected = get(cur, "sensegate_mqtt_connected", 0);
    double since = get(cur, "sensegate_seconds_since_last_message", NAN);
    double acc_rate = rate(cur, prev, "sensegate_readings_total{result=\"accepted\"}");
    double msg_rate = rate(cur, prev, "sensegate_mqtt_messages_total");
    const char *state, *scol;
    if (connected < 1) {
        state = "DISCONNECTED";
        scol = RED;
    } else if ((!isnan(msg_rate) && msg_rate > 0) || (!isnan(since) && since < 10)) {
        state = "FLOWING";
        scol = GREEN;
    } else {
        state = "IDLE";
        scol = YELLOW;
    }
    fprintf(f, "%ssensegate-top%s  gateway %s%s%s  %s  %s\n\n", col(o, BOLD), col(o, RESET),
            col(o, CYAN), gid, col(o, RESET), op->url, when);

    fmt_secs(a, sizeof a, since);
    fmt_rate(b, sizeof b, msg_rate);
    fprintf(f, "STATE     %s%s%s%s  mqtt %s  last message %s ago  messages %.0f (%s/s)\n",
            col(o, BOLD), col(o, scol), state, col(o, RESET), connected >= 1 ? "up" : "down", a,
            get(cur, "sensegate_mqtt_messages_total", 0), b);
    fmt_bytes(a, sizeof a, get(cur, "sensegate_inbox_bytes", 0));
    fprintf(f, "MQTT      reconnects %.0f  session lost %.0f  inbox %.0f msgs / %s  "
               "back-pressure %.1f s  overflows %.0f\n",
            get(cur, "sensegate_mqtt_reconnects_total", 0),
            get(cur, "sensegate_mqtt_session_lost_total", 0),
            get(cur, "sensegate_inbox_messages", 0), a,
            get(cur, "sensegate_inbox_wait_seconds_total", 0),
            get(cur, "sensegate_inbox_overflows_total", 0));

    /* Readings by verdict. */
    static const char *const verdicts[] = {"accepted", "duplicate", "late", "invalid"};
    double total = 0;
    for (int i = 0; i < 4; i++) {
        char key[96];
        snprintf(key, sizeof key, "sensegate_readings_total{result=\"%s\"}", verdicts[i]);
        total += get(cur, key, 0);
    }
    fprintf(f, "\n%sREADINGS%s          total        /s    share\n", col(o, BOLD), col(o, RESET));
    for (int i = 0; i < 4; i++) {
        char key[96];
        snprintf(key, sizeof key, "sensegate_readings_total{result=\"%s\"}", verdicts[i]);
        double v = get(cur, key, 0);
        fmt_rate(a, sizeof a, rate(cur, prev, key));
        fprintf(f, "  %-12s %12.0f %9s   %5.1f%%\n", verdicts[i], v, a,
                total > 0 ? 100.0 * v / total : 0.0);
    }
    fmt_rate(a, sizeof a, rate(cur, prev, "sensegate_decode_errors_total"));
    fprintf(f, "  %-12s %12.0f %9s   (payloads)\n", "decode err",
            get(cur, "sensegate_decode_errors_total", 0), a);
    double p50 = quantile(cur, "sensegate_reading_age_seconds", 0.5);
    double p99 = quantile(cur, "sensegate_reading_age_seconds", 0.99);
    fmt_secs(a, sizeof a, p50);
    fmt_secs(b, sizeof b, p99);
    fprintf(f, "  age at arrival p50 %s  p99 %s  from the future %.0f\n", a, b,
            get(cur, "sensegate_readings_from_future_total", 0));
    (void)acc_rate;

    /* Rollups. */
    fmt_rate(a, sizeof a, rate(cur, prev, "sensegate_rollups_total"));
    fprintf(f, "\n%sROLLUPS%s   %.0f (%s/s)  series %.0f  open windows %.0f  evicted %.0f  "
               "ring overflows %.0f  partial %.0f\n",
            col(o, BOLD), col(o, RESET), get(cur, "sensegate_rollups_total", 0), a,
            get(cur, "sensegate_active_series", 0), get(cur, "sensegate_open_windows", 0),
            get(cur, "sensegate_series_evicted_total", 0),
            get(cur, "sensegate_ring_overflows_total", 0),
            get(cur, "sensegate_partial_windows_total", 0));

    /* Batches. */
    fmt_rate(a, sizeof a, rate(cur, prev, "sensegate_forward_batches_total{result=\"ok\"}"));
    fmt_rate(b, sizeof b, rate(cur, prev, "sensegate_forward_batches_total{result=\"retry\"}"));
    fmt_rate(c, sizeof c, rate(cur, prev, "sensegate_forward_batches_total{result=\"rejected\"}"));
    double rej = get(cur, "sensegate_forward_batches_total{result=\"rejected\"}", 0);
    fprintf(f, "%sBATCHES%s   ok %.0f (%s/s)  retry %.0f (%s/s)  %srejected %.0f%s (%s/s)  "
               "in flight %.0f\n",
            col(o, BOLD), col(o, RESET), get(cur, "sensegate_forward_batches_total{result=\"ok\"}", 0),
            a, get(cur, "sensegate_forward_batches_total{result=\"retry\"}", 0), b,
            rej > 0 ? col(o, RED) : "", rej, rej > 0 ? col(o, RESET) : "", c,
            get(cur, "sensegate_forward_inflight", 0));
    fmt_secs(a, sizeof a, quantile(cur, "sensegate_forward_latency_seconds", 0.5));
    fmt_secs(b, sizeof b, quantile(cur, "sensegate_forward_latency_seconds", 0.99));
    fmt_secs(c, sizeof c, quantile(cur, "sensegate_delivery_delay_seconds", 0.5));
    fmt_secs(d, sizeof d, quantile(cur, "sensegate_delivery_delay_seconds", 0.99));
    fprintf(f, "          latency p50 %s p99 %s  window close to delivery p50 %s p99 %s\n", a, b,
            c, d);

    /* Spool. */
    double age = get(cur, "sensegate_spool_oldest_age_seconds", 0);
    double dropped = get(cur, "sensegate_spool_dropped_batches_total", 0);
    fmt_bytes(a, sizeof a, get(cur, "sensegate_spool_bytes", 0));
    fmt_secs(b, sizeof b, age);
    fprintf(f, "%sSPOOL%s     %.0f batches  %s  oldest %s%s%s  %sdropped %.0f%s  dead letters %.0f  "
               "errors %.0f\n",
            col(o, BOLD), col(o, RESET), get(cur, "sensegate_spool_batches", 0), a,
            age > 60 ? col(o, YELLOW) : "", b, age > 60 ? col(o, RESET) : "",
            dropped > 0 ? col(o, RED) : "", dropped, dropped > 0 ? col(o, RESET) : "",
            get(cur, "sensegate_spool_dead_letter_batches", 0),
            get(cur, "sensegate_spool_errors_total", 0));

    /* Drops, worst first: duplicates, late, each invalid reason, decode errors. */
    struct drop drops[40];
    size_t nd = 0;
    const char *simple[][2] = {
        {"duplicate", "sensegate_readings_total{result=\"duplicate\"}"},
        {"late", "sensegate_readings_total{result=\"late\"}"},
        {"decode error", "sensegate_decode_errors_total"},
        {"spool dropped", "sensegate_spool_dropped_batches_total"},
    };
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        snprintf(drops[nd].label, sizeof drops[nd].label, "%s", simple[i][0]);
        drops[nd].total = get(cur, simple[i][1], 0);
        drops[nd].per_s = rate(cur, prev, simple[i][1]);
        nd++;
    }
    const char *ipre = "sensegate_invalid_readings_total{reason=\"";
    for (size_t i = 0; i < cur->n && nd < 40; i++) {
        if (strncmp(cur->s[i].key, ipre, strlen(ipre)) != 0) {
            continue;
        }
        const char *r = cur->s[i].key + strlen(ipre);
        snprintf(drops[nd].label, sizeof drops[nd].label, "invalid: %.*s",
                 (int)strcspn(r, "\""), r);
        drops[nd].total = cur->s[i].v;
        drops[nd].per_s = rate(cur, prev, cur->s[i].key);
        nd++;
    }
    qsort(drops, nd, sizeof drops[0], cmp_drop);
    fprintf(f, "\n%sDROPS%s (worst first)       total        /s\n", col(o, BOLD), col(o, RESET));
    int shown = 0;
    for (size_t i = 0; i < nd && shown < 6; i++) {
        if (drops[i].total <= 0) {
            continue;
        }
        fmt_rate(a, sizeof a, drops[i].per_s);
        fprintf(f, "  %-22s %10.0f %9s\n", drops[i].label, drops[i].total, a);
        shown++;
    }
    if (shown == 0) {
        fprintf(f, "  %snone%s\n", col(o, GREEN), col(o, RESET));
    }

    /* Process. */
    double cpu = rate(cur, prev, "process_cpu_seconds_total");
    double start = get(cur, "process_start_time_seconds", 0);
    fmt_bytes(a, sizeof a, get(cur, "process_resident_memory_bytes", 0));
    fmt_secs(b, sizeof b, start > 0 ? difftime(now, (time_t)start) : NAN);
    fmt_rate(c, sizeof c, isnan(cpu) ? NAN : cpu * 100);
    fprintf(f, "\n%sPROCESS%s   cpu %s%%  rss %s  fds %.0f  up %s\n", col(o, BOLD), col(o, RESET),
            c, a, get(cur, "process_open_fds", 0), b);
    if (err != NULL) {
        fprintf(f, "%slast poll failed: %s%s\n", col(o, RED), err, col(o, RESET));
    }
}

/* ------------------------------------------------------------------ */
/* Main                                                                */

static void usage(FILE *f)
{
    fprintf(f, "usage: sensegate-top [--url URL] [--interval S] [--once] [--no-color]\n"
               "  --url URL       metrics endpoint (http://127.0.0.1:9464/metrics);\n"
               "                  host:port or a URL without a path gets /metrics\n"
               "  --interval S    seconds between polls (2; --once: 1, 0 = totals only)\n"
               "  --once          print one snapshot without escapes and exit\n"
               "  --no-color      no colours in the live view\n"
               "Live view keys: q quits.\n");
}

static int parse_secs(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !(v >= 0) || v > 3600) {
        return -1;
    }
    *out = v;
    return 0;
}

static void set_url(struct opts *op, const char *u)
{
    const char *scheme = strstr(u, "://");
    const char *rest = scheme ? scheme + 3 : u;
    bool has_path = strchr(rest, '/') != NULL;
    snprintf(op->url, sizeof op->url, "%s%s%s", scheme ? "" : "http://", u,
             has_path ? "" : "/metrics");
}

static struct termios saved_tio;
static bool tio_saved;

static void restore_terminal(void)
{
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
    }
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
}

/* Waits up to secs for a key; returns true if it was q/Q. */
static bool wait_key(double secs)
{
    double until = mono_s() + secs;
    while (!stop_flag) {
        double left = until - mono_s();
        if (left <= 0) {
            return false;
        }
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int n = poll(&p, 1, (int)(left * 1000) + 1);
        if (n > 0 && (p.revents & POLLIN)) {
            char ch;
            if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q')) {
                return true;
            }
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    struct opts op = {.interval_s = -1, .color = true};
    set_url(&op, "127.0.0.1:9464");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--once") == 0) {
            op.once = true;
        } else if (strcmp(a, "--no-color") == 0) {
            op.color = false;
        } else if (strcmp(a, "--url") == 0 && i + 1 < argc) {
            set_url(&op, argv[++i]);
        } else if (strcmp(a, "--interval") == 0 && i + 1 < argc) {
            if (parse_secs(argv[++i], &op.interval_s) != 0) {
                fprintf(stderr, "sensegate-top: --interval %s: want seconds in [0, 3600]\n",
                        argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("sensegate-top %s\n", SG_VERSION);
            return 0;
        } else {
            fprintf(stderr, "sensegate-top: unknown or incomplete option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (op.interval_s < 0) {
        op.interval_s = op.once ? 1 : 2;
    }
    if (!op.once && op.interval_s < 0.2) {
        op.interval_s = 0.2;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "sensegate-top: curl_global_init failed\n");
        return 1;
    }
    CURL *c = curl_easy_init();
    struct scrape s1 = {.s = calloc(MAX_SAMPLES, sizeof(struct sample))};
    struct scrape s2 = {.s = calloc(MAX_SAMPLES, sizeof(struct sample))};
    if (c == NULL || s1.s == NULL || s2.s == NULL) {
        fprintf(stderr, "sensegate-top: out of memory\n");
        return 1;
    }
    struct scrape *cur = &s1, *prev = &s2;
    char err[1200];
    int code = 0;

    if (op.once) {
        struct out o = {.color = false, .f = stdout};
        if (fetch(c, op.url, prev, err, sizeof err) != 0) {
            render(&o, &op, NULL, NULL, err);
            code = 1;
        } else {
            bool have_prev = false;
            if (op.interval_s > 0) {
                usleep((useconds_t)(op.interval_s * 1e6));
                have_prev = fetch(c, op.url, cur, err, sizeof err) == 0;
            }
            if (have_prev) {
                render(&o, &op, cur, prev, NULL);
            } else if (op.interval_s > 0) {
                render(&o, &op, NULL, NULL, err);
                code = 1;
            } else {
                render(&o, &op, prev, NULL, NULL);
            }
        }
    } else {
        struct sigaction sa = {.sa_handler = on_stop};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
            struct termios raw = saved_tio;
            raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
            raw.c_cc[VMIN] = 0;
            raw.c_cc[VTIME] = 0;
            tio_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
        }
        fputs("\033[?1049h\033[?25l", stdout);
        struct out o = {.color = op.color, .f = stdout};
        bool first = true;
        while (!stop_flag) {
            bool ok = fetch(c, op.url, cur, err, sizeof err) == 0;
            fputs("\033[H\033[2J", stdout);
            if (ok) {
                render(&o, &op, cur, first ? NULL : prev, NULL);
                struct scrape *t = prev;
                prev = cur;
                cur = t;
                first = false;
            } else {
                render(&o, &op, NULL, NULL, err);
                first = true;
            }
            fprintf(stdout, "\n%s(every %.1f s; q quits)%s", col(&o, DIM), op.interval_s,
                    col(&o, RESET));
            fflush(stdout);
            if (wait_key(op.interval_s)) {
                break;
            }
        }
        restore_terminal();
    }
    curl_easy_cleanup(c);
    curl_global_cleanup();
    free(s1.s);
    free(s2.s);
    return code;
}

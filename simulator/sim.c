/*
 * sensegate-sim: publishes the simulated fleet (fleet.c) to an MQTT broker
 * and writes the ground truth (truth.c). Options and file format:
 * docs/SIMULATOR.md.
 *
 * One Paho MQTTAsync client publishes in fleet order, so the broker sees
 * the payloads in that order. Pacing keeps simulated time at
 * start + real_elapsed * speedup, never ahead. At most MAX_INFLIGHT
 * publishes wait for their acknowledgement; the main thread blocks on a
 * condition variable that Paho's callbacks (their own threads) signal.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <MQTTAsync.h>

#include "common.h"
#include "fleet.h"
#include "truth.h"

#define MAX_INFLIGHT 1000
#define CONNECT_TIMEOUT_MS 10000
#define DRAIN_TIMEOUT_MS 30000

struct pubstate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int connect_state; /* 0 pending, 1 connected, -1 failed */
    int connect_rc;
    char connect_msg[160]; /* Paho's failure text, if any */
    uint64_t inflight;     /* publishes not yet acknowledged */
    uint64_t acked;
    uint64_t failed;
    bool lost; /* connection lost */
    bool disconnected;
};

struct simopts {
    const char *uri;
    const char *client_id;
    const char *truth_path;
    int qos;
    double max_rate;
    bool publish;
    uint64_t max_past_ms;
    uint64_t max_future_ms;
    bool start_given;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sensegate-sim --uri tcp://127.0.0.1:PORT [options]\n"
                 "  --sensors N               sensors in the fleet (300)\n"
                 "  --rate-hz R               readings/s per sensor, ACCEL_G x10 (1)\n"
                 "  --readings-per-batch N    readings per payload (10)\n"
                 "  --duration-s S            simulated seconds (240)\n"
                 "  --speedup X               simulated ms per real ms, >= 1 (20)\n"
                 "  --seed N                  PRNG seed (1)\n"
                 "  --id-prefix P             prepended to every device and sensor id (none)\n"
                 "  --qos 0|1                 publish QoS (1)\n"
                 "  --client-id ID            MQTT client id (sensegate-sim)\n"
                 "  --start-ms MS             simulated start, epoch ms (now)\n"
                 "  --windows-ms W[,W...]     window widths of the truth (10000)\n"
                 "  --allowed-lateness-ms L   (2000)\n"
                 "  --max-past-ms MS          gateway validation.max_past_ms (3600000)\n"
                 "  --max-future-ms MS        gateway validation.max_future_ms (300000)\n"
                 "  --dup-frac F --ooo-frac F --late-frac F --invalid-frac F --malformed-frac F\n"
                 "                            fault fractions in [0,1] (0)\n"
                 "  --truth FILE              write the ground truth here (JSON lines)\n"
                 "  --max-rate N              payloads/s cap, 0 = none (0)\n"
                 "  --no-publish              do not connect; only compute truth and counts\n");
}

static void on_connlost(void *ctx, char *cause)
{
    struct pubstate *ps = ctx;
    (void)cause;
    pthread_mutex_lock(&ps->mu);
    ps->lost = true;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    (void)ctx;
    (void)topic_len;
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
    struct pubstate *ps = ctx;
    (void)d;
    pthread_mutex_lock(&ps->mu);
    ps->connect_state = 1;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
    struct pubstate *ps = ctx;
    pthread_mutex_lock(&ps->mu);
    ps->connect_state = -1;
    ps->connect_rc = d ? d->code : -1;
    snprintf(ps->connect_msg, sizeof(ps->connect_msg), "%s",
             (d && d->message) ? d->message : "refused, or the broker is unreachable");
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *d)
{
    struct pubstate *ps = ctx;
    (void)d;
    pthread_mutex_lock(&ps->mu);
    ps->inflight--;
    ps->acked++;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *d)
{
    struct pubstate *ps = ctx;
    (void)d;
    pthread_mutex_lock(&ps->mu);
    ps->inflight--;
    ps->failed++;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void on_disconnected(void *ctx, MQTTAsync_successData *d)
{
    struct pubstate *ps = ctx;
    (void)d;
    pthread_mutex_lock(&ps->mu);
    ps->disconnected = true;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void on_disconnect_fail(void *ctx, MQTTAsync_failureData *d)
{
    on_disconnected(ctx, NULL);
    (void)d;
}

/* Waits on ps->cv until the deadline (monotonic ms); mutex held. */
static void wait_until(struct pubstate *ps, uint64_t deadline_mono_ms)
{
    uint64_t now = sg_mono_ms();
    if (now >= deadline_mono_ms) {
        return;
    }
    /* The condvar uses CLOCK_REALTIME: wait at most the remaining time. */
    uint64_t left = deadline_mono_ms - now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&ps->cv, &ps->mu, &ts);
}

static void sleep_ms(double ms)
{
    if (ms <= 0.0) {
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000.0);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double mono_ms_f(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int parse_windows(const char *s, struct sg_fleet_opts *o)
{
    char tmp[256];
    if (strlen(s) >= sizeof(tmp)) {
        return SG_EINVAL;
    }
    snprintf(tmp, sizeof(tmp), "%s", s);
    o->nwindows = 0;
    char *save = NULL;
    for (char *tok = strtok_r(tmp, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        uint64_t w;
        if (o->nwindows == SG_TRUTH_MAX_WINDOWS || sg_parse_u64(tok, 1, 86400000ULL, &w) != 0) {
            return SG_EINVAL;
        }
        o->windows_ms[o->nwindows++] = w;
    }
    return o->nwindows > 0 ? 0 : SG_EINVAL;
}

static int parse_frac(const char *s, double *out)
{
    double d;
    if (sg_parse_double(s, &d) != 0 || !(d >= 0.0 && d <= 1.0)) {
        return SG_EINVAL;
    }
    *out = d;
    return 0;
}

/* Parses argv into fo and so. Returns 0, 1 for --help, or -1 (message printed). */
static int parse_args(int argc, char **argv, struct sg_fleet_opts *fo, struct simopts *so)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--no-publish") == 0) {
            so->publish = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sensegate-sim: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        uint64_t u = 0;
        int rc = 0;
        if (strcmp(a, "--uri") == 0) {
            so->uri = v;
        } else if (strcmp(a, "--client-id") == 0) {
            so->client_id = v;
        } else if (strcmp(a, "--id-prefix") == 0) {
            size_t n = strlen(v);
            fo->id_prefix = v;
            rc = (n <= SG_FLEET_ID_PREFIX_MAX && strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                           "abcdefghijklmnopqrstuvwxyz"
                                                           "0123456789._:-") == n)
                     ? 0
                     : SG_EINVAL;
        } else if (strcmp(a, "--truth") == 0) {
            so->truth_path = v;
        } else if (strcmp(a, "--sensors") == 0) {
            rc = sg_parse_u64(v, 1, 10000000, &u);
            fo->sensors = (uint32_t)u;
        } else if (strcmp(a, "--rate-hz") == 0) {
            rc = sg_parse_double(v, &fo->rate_hz);
            rc = (rc == 0 && fo->rate_hz > 0.0 && fo->rate_hz <= 100.0) ? 0 : SG_EINVAL;
        } else if (strcmp(a, "--readings-per-batch") == 0) {
            rc = sg_parse_u64(v, 1, 100000, &u);
            fo->readings_per_batch = (uint32_t)u;
        } else if (strcmp(a, "--duration-s") == 0) {
            rc = sg_parse_u64(v, 1, 365ULL * 86400, &u);
            fo->duration_ms = u * 1000;
        } else if (strcmp(a, "--speedup") == 0) {
            rc = sg_parse_double(v, &fo->speedup);
            rc = (rc == 0 && fo->speedup >= 1.0 && fo->speedup <= 1e6) ? 0 : SG_EINVAL;
        } else if (strcmp(a, "--seed") == 0) {
            rc = sg_parse_u64(v, 0, UINT64_MAX, &fo->seed);
        } else if (strcmp(a, "--qos") == 0) {
            rc = sg_parse_u64(v, 0, 1, &u);
            so->qos = (int)u;
        } else if (strcmp(a, "--start-ms") == 0) {
            rc = sg_parse_u64(v, 0, 1ULL << 52, &fo->start_ms);
            so->start_given = true;
        } else if (strcmp(a, "--windows-ms") == 0) {
            rc = parse_windows(v, fo);
        } else if (strcmp(a, "--allowed-lateness-ms") == 0) {
            rc = sg_parse_u64(v, 0, 86400000ULL, &fo->allowed_lateness_ms);
        } else if (strcmp(a, "--max-past-ms") == 0) {
            rc = sg_parse_u64(v, 0, 1ULL << 40, &so->max_past_ms);
        } else if (strcmp(a, "--max-future-ms") == 0) {
            rc = sg_parse_u64(v, 0, 1ULL << 40, &so->max_future_ms);
        } else if (strcmp(a, "--dup-frac") == 0) {
            rc = parse_frac(v, &fo->dup_frac);
        } else if (strcmp(a, "--ooo-frac") == 0) {
            rc = parse_frac(v, &fo->ooo_frac);
        } else if (strcmp(a, "--late-frac") == 0) {
            rc = parse_frac(v, &fo->late_frac);
        } else if (strcmp(a, "--invalid-frac") == 0) {
            rc = parse_frac(v, &fo->invalid_frac);
        } else if (strcmp(a, "--malformed-frac") == 0) {
            rc = parse_frac(v, &fo->malformed_frac);
        } else if (strcmp(a, "--max-rate") == 0) {
            rc = sg_parse_double(v, &so->max_rate);
            rc = (rc == 0 && so->max_rate >= 0.0) ? 0 : SG_EINVAL;
        } else {
            fprintf(stderr, "sensegate-sim: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (rc != 0) {
            fprintf(stderr, "sensegate-sim: bad value for %s: '%s'\n", a, v);
            return -1;
        }
    }
    if (so->publish && so->uri == NULL) {
        fprintf(stderr, "sensegate-sim: --uri is required (or --no-publish)\n");
        return -1;
    }
    if (fo->ooo_frac + fo->late_frac + fo->invalid_frac > 1.0) {
        fprintf(stderr, "sensegate-sim: --ooo-frac + --late-frac + --invalid-frac must be <= 1\n");
        return -1;
    }
    return 0;
}

/* Connects; returns 0 or -1 (message printed). */
static int mqtt_connect(MQTTAsync *client, struct pubstate *ps, const struct simopts *so)
{
    int rc = MQTTAsync_create(client, so->uri, so->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "sensegate-sim: cannot create MQTT client for %s: %s\n", so->uri,
                MQTTAsync_strerror(rc));
        return -1;
    }
    rc = MQTTAsync_setCallbacks(*client, ps, on_connlost, on_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "sensegate-sim: MQTTAsync_setCallbacks: %s\n", MQTTAsync_strerror(rc));
        return -1;
    }
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 20;
    co.cleansession = 1;
    co.connectTimeout = CONNECT_TIMEOUT_MS / 1000;
    co.onSuccess = on_connect_ok;
    co.onFailure = on_connect_fail;
    co.context = ps;
    rc = MQTTAsync_connect(*client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "sensegate-sim: cannot connect to %s: %s\n", so->uri,
                MQTTAsync_strerror(rc));
        return -1;
    }
    uint64_t deadline = sg_mono_ms() + CONNECT_TIMEOUT_MS + 2000;
    pthread_mutex_lock(&ps->mu);
    while (ps->connect_state == 0 && sg_mono_ms() < deadline) {
        wait_until(ps, deadline);
    }
    int state = ps->connect_state;
    int crc = ps->connect_rc;
    char cmsg[sizeof(ps->connect_msg)];
    memcpy(cmsg, ps->connect_msg, sizeof(cmsg));
    pthread_mutex_unlock(&ps->mu);
    if (state != 1) {
        if (state == 0) {
            fprintf(stderr, "sensegate-sim: cannot connect to %s: timed out after %d s\n", so->uri,
                    CONNECT_TIMEOUT_MS / 1000);
        } else {
            fprintf(stderr, "sensegate-sim: cannot connect to %s: %s (%s)\n", so->uri, cmsg,
                    MQTTAsync_strerror(crc));
        }
        return -1;
    }
    return 0;
}

/* Publishes one payload, waiting while MAX_INFLIGHT are unacknowledged.
 * Returns 0 or -1 (message printed). */
static int publish_one(MQTTAsync client, struct pubstate *ps, const struct simopts *so,
                       const struct sg_fleet_msg *m)
{
    pthread_mutex_lock(&ps->mu);
    while (ps->inflight >= MAX_INFLIGHT && !ps->lost) {
        wait_until(ps, sg_mono_ms() + 100);
    }
    bool lost = ps->lost;
    if (!lost) {
        ps->inflight++;
    }
    pthread_mutex_unlock(&ps->mu);
    if (lost) {
        fprintf(stderr, "sensegate-sim: connection to %s lost\n", so->uri);
        return -1;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_pub_ok;
    ro.onFailure = on_pub_fail;
    ro.context = ps;
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)m->payload;
    msg.payloadlen = (int)m->len;
    msg.qos = so->qos;
    msg.retained = 0;
    int rc = MQTTAsync_sendMessage(client, m->topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        pthread_mutex_lock(&ps->mu);
        ps->inflight--;
        pthread_mutex_unlock(&ps->mu);
        fprintf(stderr, "sensegate-sim: publish to %s failed: %s\n", m->topic,
                MQTTAsync_strerror(rc));
        return -1;
    }
    return 0;
}

/* Waits for every publish to be acknowledged. Returns 0 or -1 (printed). */
static int drain(struct pubstate *ps, const struct simopts *so)
{
    uint64_t deadline = sg_mono_ms() + DRAIN_TIMEOUT_MS;
    pthread_mutex_lock(&ps->mu);
    while (ps->inflight > 0 && !ps->lost && sg_mono_ms() < deadline) {
        wait_until(ps, deadline);
    }
    uint64_t inflight = ps->inflight;
    uint64_t failed = ps->failed;
    bool lost = ps->lost;
    pthread_mutex_unlock(&ps->mu);
    if (inflight > 0 || failed > 0 || lost) {
        fprintf(stderr,
                "sensegate-sim: %" PRIu64 " publishes not acknowledged within %d s, %" PRIu64
                " failed%s (uri %s)\n",
                inflight, DRAIN_TIMEOUT_MS / 1000, failed, lost ? ", connection lost" : "",
                so->uri);
        return -1;
    }
    return 0;
}

static void mqtt_close(MQTTAsync client, struct pubstate *ps)
{
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 2000;
    dopt.onSuccess = on_disconnected;
    dopt.onFailure = on_disconnect_fail;
    dopt.context = ps;
    if (MQTTAsync_disconnect(client, &dopt) == MQTTASYNC_SUCCESS) {
        uint64_t deadline = sg_mono_ms() + 3000;
        pthread_mutex_lock(&ps->mu);
        while (!ps->disconnected && sg_mono_ms() < deadline) {
            wait_until(ps, deadline);
        }
        pthread_mutex_unlock(&ps->mu);
    }
}

int main(int argc, char **argv)
{
    struct sg_fleet_opts fo;
    sg_fleet_opts_default(&fo);
    struct simopts so = {.client_id = "sensegate-sim",
                         .qos = 1,
                         .publish = true,
                         .max_past_ms = 3600000,
                         .max_future_ms = 300000};
    int prc = parse_args(argc, argv, &fo, &so);
    if (prc != 0) {
        return prc > 0 ? 0 : 2;
    }

    int exit_code = 1;
    struct sg_truth *truth = NULL;
    struct sg_fleet *fleet = NULL;
    MQTTAsync client = NULL;
    FILE *tf = NULL;
    struct pubstate ps = {.connect_state = 0};
    pthread_mutex_init(&ps.mu, NULL);
    pthread_cond_init(&ps.cv, NULL);

    /* Connect first, so that the default start is the wall clock when publishing begins. */
    if (so.publish && mqtt_connect(&client, &ps, &so) != 0) {
        goto cleanup;
    }
    if (!so.start_given) {
        fo.start_ms = sg_now_ms();
    }

    struct sg_truth_opts to = {.nwindows = fo.nwindows,
                               .allowed_lateness_ms = fo.allowed_lateness_ms,
                               .max_past_ms = so.max_past_ms,
                               .max_future_ms = so.max_future_ms};
    memcpy(to.windows_ms, fo.windows_ms, sizeof(to.windows_ms));
    if (sg_truth_new(&truth, &to) != 0) {
        fprintf(stderr, "sensegate-sim: bad window options\n");
        goto cleanup;
    }
    fo.truth = truth;
    if (sg_fleet_new(&fleet, &fo) != 0) {
        fprintf(stderr, "sensegate-sim: bad fleet options\n");
        goto cleanup;
    }
    if (so.truth_path != NULL) {
        tf = fopen(so.truth_path, "w");
        if (tf == NULL) {
            fprintf(stderr, "sensegate-sim: cannot write truth file %s: %s\n", so.truth_path,
                    strerror(errno));
            goto cleanup;
        }
    }

    /* The truth relies on the simulated clock running ahead of the gateway's. */
    double lead_ms = (double)fo.duration_ms * (1.0 - 1.0 / fo.speedup);
    if (lead_ms + 30000.0 > (double)so.max_future_ms) {
        fprintf(stderr,
                "sensegate-sim: warning: simulated time runs up to %.0f s ahead of the wall "
                "clock, near or beyond max_future_ms=%" PRIu64 "; late readings become invalid\n",
                lead_ms / 1000.0, so.max_future_ms);
    }
    bool faults = fo.ooo_frac > 0 || fo.late_frac > 0 || fo.dup_frac > 0;
    if (so.publish && faults && fo.speedup < 2.0) {
        fprintf(stderr, "sensegate-sim: warning: with --speedup < 2 the gateway clock may "
                        "close windows before the sensors do; the truth assumes it does not\n");
    }
    if (so.publish && so.start_given) {
        uint64_t now = sg_now_ms();
        uint64_t d = now > fo.start_ms ? now - fo.start_ms : fo.start_ms - now;
        if (d > 60000) {
            fprintf(stderr,
                    "sensegate-sim: warning: --start-ms is %" PRIu64
                    " s away from now; the truth assumes start = now\n",
                    d / 1000);
        }
    }

    uint64_t max_period_ms = (uint64_t)(1000.0 / fo.rate_hz) + 1;
    uint64_t risky = 0;
    double t0 = mono_ms_f();
    double next_allowed = t0;
    struct sg_fleet_msg m;
    while (sg_fleet_next(fleet, &m) == 1) {
        if (!so.publish) {
            continue;
        }
        double due = t0 + (double)(m.sim_time_ms - fo.start_ms) / fo.speedup;
        if (so.max_rate > 0.0 && next_allowed > due) {
            due = next_allowed;
        }
        sleep_ms(due - mono_ms_f());
        next_allowed = mono_ms_f() + 1000.0 / (so.max_rate > 0.0 ? so.max_rate : 1e300);
        /* Published too close to the wall clock, the gateway clock could close
         * a window before the sensor's watermark does. */
        double elapsed = mono_ms_f() - t0;
        double wall = (double)fo.start_ms + elapsed;
        if (elapsed > (double)fo.allowed_lateness_ms &&
            (double)m.sim_time_ms < wall + (double)max_period_ms + 1000.0) {
            risky++;
        }
        if (publish_one(client, &ps, &so, &m) != 0) {
            goto cleanup;
        }
    }
    if (so.publish && drain(&ps, &so) != 0) {
        goto cleanup;
    }
    if (risky > 0) {
        fprintf(stderr,
                "sensegate-sim: warning: %" PRIu64 " payloads went out less than %" PRIu64
                " ms ahead of the wall clock; the gateway clock may close windows first and "
                "the truth may not hold (raise --speedup or --max-rate)\n",
                risky, max_period_ms + 1000);
    }

    sg_truth_finish(truth);
    const struct sg_fleet_stats *st = sg_fleet_stats(fleet);
    size_t nroll = 0;
    sg_truth_rollups(truth, &nroll);
    if (tf != NULL) {
        struct sg_truth_summary sum = {.readings_sent = st->readings,
                                       .payloads_sent = st->payloads,
                                       .malformed_payloads = st->malformed,
                                       .sensors = sg_fleet_sensors(fleet),
                                       .start_ms = fo.start_ms,
                                       .end_ms = fo.start_ms + fo.duration_ms};
        int wrc = sg_truth_write(truth, &sum, tf);
        if (fclose(tf) != 0 || wrc != 0) {
            tf = NULL;
            fprintf(stderr, "sensegate-sim: cannot write truth file %s: %s\n", so.truth_path,
                    strerror(errno));
            goto cleanup;
        }
        tf = NULL;
    }
    printf("sim: payloads=%" PRIu64 " malformed=%" PRIu64 " readings=%" PRIu64
           " expected accepted=%" PRIu64 " duplicate=%" PRIu64 " late=%" PRIu64 " invalid=%" PRIu64
           " rollups=%zu\n",
           st->payloads, st->malformed, st->readings, sg_truth_count(truth, SG_TRUTH_ACCEPTED),
           sg_truth_count(truth, SG_TRUTH_DUPLICATE), sg_truth_count(truth, SG_TRUTH_LATE),
           sg_truth_count(truth, SG_TRUTH_INVALID), nroll);
    fflush(stdout);
    fprintf(stderr,
            "sim: injected duplicate=%" PRIu64 " out_of_order=%" PRIu64 " late=%" PRIu64
            " invalid=%" PRIu64 " faulty=%" PRIu64 " sensors=%u devices=%u\n",
            st->inj_dup, st->inj_ooo, st->inj_late, st->inj_invalid, st->inj_faulty,
            sg_fleet_sensors(fleet), sg_fleet_devices(fleet));
    exit_code = 0;

cleanup:
    if (client != NULL) {
        if (ps.connect_state == 1) {
            mqtt_close(client, &ps);
        }
        MQTTAsync_destroy(&client);
    }
    if (tf != NULL) {
        fclose(tf);
    }
    sg_fleet_free(fleet);
    sg_truth_free(truth);
    pthread_cond_destroy(&ps.cv);
    pthread_mutex_destroy(&ps.mu);
    return exit_code;
}

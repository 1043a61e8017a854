/*
 * sg-bench-limitsub: the "limit" consumer of the benchmark. A minimal Paho
 * MQTTAsync subscriber at QoS 1 that only decodes each ReadingBatch with
 * protobuf-c and counts its readings: what any consumer of this broker
 * must at least do, so sensegate's rate is reported as a ratio of it.
 * A benchmark tool, not shipped.
 *
 *   sg-bench-limitsub --uri tcp://127.0.0.1:P --client-id ID --expect N
 *                     [--clean 0|1] [--ready-file F] [--subscribe-only]
 *                     [--idle-ms MS] [--timeout-s S]
 *
 * Writes F (atomically) once subscribed. Exits when N readings were
 * counted (or, with --expect 0 and --idle-ms, once no message came for MS
 * after the first), printing one JSON line: readings, messages, the wall clock
 * (epoch ms) of the first and of the last message, and its own CPU time.
 * --subscribe-only subscribes and disconnects (creates a persistent
 * session at the broker for a later drain with --clean 0).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "common.h"
#include "sensegate.pb-c.h"

static _Atomic uint64_t readings, messages, bad, first_ms, last_ms;
static _Atomic int state; /* 0 connecting, 1 subscribed, -1 failed */
static uint64_t expect;

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    (void)ctx;
    (void)topic_len;
    Sensegate__V1__ReadingBatch *b =
        sensegate__v1__reading_batch__unpack(NULL, (size_t)m->payloadlen, m->payload);
    uint64_t now = sg_now_ms();
    if (b != NULL) {
        atomic_fetch_add(&readings, b->n_readings);
        sensegate__v1__reading_batch__free_unpacked(b, NULL);
    } else {
        atomic_fetch_add(&bad, 1);
    }
    if (atomic_fetch_add(&messages, 1) == 0) {
        atomic_store(&first_ms, now);
    }
    atomic_store(&last_ms, now);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    atomic_store(&state, 1);
}

static void on_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)ctx;
    fprintf(stderr, "limitsub: failed: %d %s\n", r ? r->code : 0,
            r && r->message ? r->message : "");
    atomic_store(&state, -1);
}

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    MQTTAsync c = ctx;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sub_ok;
    ro.onFailure = on_fail;
    ro.context = c;
    if (MQTTAsync_subscribe(c, "sensors/#", 1, &ro) != MQTTASYNC_SUCCESS) {
        atomic_store(&state, -1);
    }
}

static void on_lost(void *ctx, char *cause)
{
    (void)ctx;
    fprintf(stderr, "limitsub: connection lost: %s\n", cause ? cause : "?");
    atomic_store(&state, -1);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    const char *uri = NULL, *cid = "sg-bench-limitsub", *ready = NULL;
    uint64_t clean = 1, timeout_s = 120, idle_ms = 0;
    bool sub_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "--subscribe-only") == 0) {
            sub_only = true;
            continue;
        }
        if (strcmp(a, "--uri") == 0) {
            uri = v;
        } else if (strcmp(a, "--client-id") == 0) {
            cid = v;
        } else if (strcmp(a, "--ready-file") == 0) {
            ready = v;
        } else if (strcmp(a, "--expect") == 0) {
            if (sg_parse_u64(v, 0, UINT64_MAX, &expect) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--clean") == 0) {
            if (sg_parse_u64(v, 0, 1, &clean) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--idle-ms") == 0) {
            if (sg_parse_u64(v, 1, 100000000, &idle_ms) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--timeout-s") == 0) {
            if (sg_parse_u64(v, 1, 100000, &timeout_s) != 0) {
                return 2;
            }
        } else {
            fprintf(stderr, "limitsub: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (uri == NULL) {
        fprintf(stderr, "limitsub: --uri is required\n");
        return 2;
    }
    MQTTAsync c;
    if (MQTTAsync_create(&c, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL) != MQTTASYNC_SUCCESS) {
        return 1;
    }
    MQTTAsync_setCallbacks(c, c, on_lost, on_message, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 60;
    co.cleansession = (int)clean;
    co.onSuccess = on_connected;
    co.onFailure = on_fail;
    co.context = c;
    if (MQTTAsync_connect(c, &co) != MQTTASYNC_SUCCESS) {
        return 1;
    }
    uint64_t t0 = sg_mono_ms();
    while (atomic_load(&state) == 0) {
        if (sg_mono_ms() - t0 > 10000) {
            fprintf(stderr, "limitsub: no subscription after 10 s\n");
            return 1;
        }
        usleep(1000);
    }
    if (atomic_load(&state) < 0) {
        return 1;
    }
    if (ready != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", ready);
        FILE *f = fopen(tmp, "w");
        if (f != NULL) {
            fprintf(f, "ok\n");
            fclose(f);
            rename(tmp, ready);
        }
    }
    int rc = 0;
    if (!sub_only) {
        t0 = sg_mono_ms();
        while (expect == 0 || atomic_load(&readings) < expect) {
            if (idle_ms > 0 && atomic_load(&messages) > 0 &&
                sg_now_ms() - atomic_load(&last_ms) >= idle_ms) {
                break;
            }
            if (atomic_load(&state) < 0 || sg_mono_ms() - t0 > timeout_s * 1000) {
                fprintf(stderr, "limitsub: gave up at %" PRIu64 " of %" PRIu64 " readings\n",
                        atomic_load(&readings), expect);
                rc = 1;
                break;
            }
            usleep(500);
        }
    }
    printf("{\"readings\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"bad\":%" PRIu64
           ",\"first_ms\":%" PRIu64 ",\"last_ms\":%" PRIu64 ",\"cpu_s\":%.3f}\n",
           atomic_load(&readings), atomic_load(&messages), atomic_load(&bad),
           atomic_load(&first_ms), atomic_load(&last_ms), cpu_s());
    fflush(stdout);
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 1000;
    MQTTAsync_disconnect(c, &dopt);
    usleep(100000);
    MQTTAsync_destroy(&c);
    return rc;
}

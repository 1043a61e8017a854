/*
 * ingest: Paho MQTTAsync client whose callbacks only hand records to the
 * inbox. Threads: sg_ingest_* run on the loop; every static callback below
 * runs on a Paho thread (MQTTAsync_rcv or MQTTAsync_send) and touches
 * nothing but the inbox. No Paho call is made while holding the inbox lock.
 */
#include "ingest.h"
#include "common.h"
#include "log.h"

#include <MQTTAsync.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sg_ingest {
    MQTTAsync client;
    struct sg_inbox *ib;
    struct sg_ingest_opts o;
    MQTTAsync_SSLOptions ssl;
    int *qos_list;
    char **forgotten; /* removed by a reload while down: unsubscribed on the next subscribe */
    size_t nforgotten;
};

static void free_forgotten(struct sg_ingest *in)
{
    for (size_t i = 0; i < in->nforgotten; i++) {
        free(in->forgotten[i]);
    }
    free(in->forgotten);
    in->forgotten = NULL;
    in->nforgotten = 0;
}

static bool in_list(char *const *list, size_t n, const char *t)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], t) == 0) {
            return true;
        }
    }
    return false;
}

const char *sg_ingest_strerror(int code)
{
    /* CONNACK return codes (MQTT 3.1.1) and reason codes (MQTT 5) come back
     * as positive codes, which MQTTAsync_strerror calls "Unknown error". */
    switch (code) {
    case 1:
        return "broker refused the connection: unacceptable protocol version";
    case 2:
        return "broker refused the connection: client identifier rejected";
    case 3:
        return "broker refused the connection: server unavailable";
    case 4:
    case 0x86:
        return "broker refused the connection: bad user name or password";
    case 5:
    case 0x87:
        return "broker refused the connection: not authorized (check mqtt.username, "
               "mqtt.password_file, the client certificate and the broker's ACL)";
    default:
        break;
    }
    const char *s = MQTTAsync_strerror(code);
    return s ? s : "unknown MQTT error";
}

/* Paho thread: the one place a message enters the gateway. It must return
 * 1: Paho 1.3.12 sends the PUBACK when this returns whatever we answer. */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct sg_ingest *in = ctx;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t plen = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    uint64_t arrival_ms = sg_now_ms();
    if (plen > in->o.max_payload_bytes) {
        sg_inbox_push_at(in->ib, SG_INBOX_MESSAGE, 1, arrival_ms, topic, tlen, NULL, 0);
    } else {
        /* Durable before the PUBACK: a kill -9 after this write loses
         * nothing (the journal is replayed at start). A failed write is
         * counted by the journal and the message goes on memory-only. */
        if (in->o.journal != NULL) {
            sg_journal_append(in->o.journal, arrival_ms, topic, tlen, msg->payload, plen);
        }
        sg_inbox_push_at(in->ib, SG_INBOX_MESSAGE, 0, arrival_ms, topic, tlen, msg->payload,
                         plen);
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_lost(void *ctx, char *cause)
{
    struct sg_ingest *in = ctx;
    (void)cause;
    sg_inbox_push(in->ib, SG_INBOX_CONNECTION_LOST, 0, NULL, 0, NULL, 0);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
    struct sg_ingest *in = ctx;
    sg_inbox_push(in->ib, SG_INBOX_CONNECTED, d ? d->alt.connect.sessionPresent : 0, NULL, 0,
                  NULL, 0);
}

static void on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    struct sg_ingest *in = ctx;
    sg_inbox_push(in->ib, SG_INBOX_CONNECTED, d ? d->alt.connect.sessionPresent : 0, NULL, 0,
                  NULL, 0);
}

static bool is_tls_uri(const char *uri)
{
    return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0 ||
           strncmp(uri, "wss://", 6) == 0;
}

/* Paho thread: for ssl:// a failed handshake or certificate check only
 * comes back as code -1; say what it can mean (an OpenSSL reason, when
 * there is one, was logged by on_ssl_error). */
static void log_tls_failure(const struct sg_ingest *in, int code, const char *msg)
{
    if (code == MQTTASYNC_FAILURE && is_tls_uri(in->o.uri)) {
        sg_log(SG_LOG_WARN, "ingest",
               "TLS connect to %s failed (%s): the broker's certificate is not signed by "
               "mqtt.ca_file, does not name this host, or the broker refused our client "
               "certificate",
               in->o.uri, msg != NULL ? msg : "no detail from Paho");
    }
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
    struct sg_ingest *in = ctx;
    log_tls_failure(in, d ? d->code : -1, d ? d->message : NULL);
    sg_inbox_push(in->ib, SG_INBOX_CONNECT_FAILED, d ? d->code : -1, NULL, 0, NULL, 0);
}

static void on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
    struct sg_ingest *in = ctx;
    log_tls_failure(in, d ? d->code : -1, d ? d->message : NULL);
    sg_inbox_push(in->ib, SG_INBOX_CONNECT_FAILED, d ? (d->code ? d->code : (int)d->reasonCode) : -1,
                  NULL, 0, NULL, 0);
}

/* The context of one subscribeMany: the topic count it asked for decides
 * which member of Paho's result union is set, and the loop may change
 * in->o.ntopics (SIGHUP) while the request is in flight. Freed by the
 * callback that ends the request. */
struct sub_req {
    struct sg_ingest *in;
    size_t count;
};

static void on_sub_ok(void *ctx, MQTTAsync_successData *d)
{
    struct sub_req *req = ctx;
    struct sg_ingest *in = req->in;
    size_t count = req->count;
    free(req);
    int rc = 0;
    if (d != NULL) {
        if (count == 1) {
            rc = d->alt.qos >= 0x80 ? d->alt.qos : 0;
        } else if (d->alt.qosList != NULL) {
            for (size_t i = 0; i < count; i++) {
                if (d->alt.qosList[i] >= 0x80) {
                    rc = d->alt.qosList[i];
                }
            }
        }
    }
    sg_inbox_push(in->ib, SG_INBOX_SUBSCRIBED, rc, NULL, 0, NULL, 0);
}

static void on_sub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    struct sub_req *req = ctx;
    struct sg_ingest *in = req->in;
    free(req);
    int rc = 0;
    if (d != NULL) {
        if (d->reasonCode >= 0x80) {
            rc = d->reasonCode;
        }
        for (int i = 0; i < d->alt.sub.reasonCodeCount; i++) {
            if (d->alt.sub.reasonCodes[i] >= 0x80) {
                rc = d->alt.sub.reasonCodes[i];
            }
        }
    }
    sg_inbox_push(in->ib, SG_INBOX_SUBSCRIBED, rc, NULL, 0, NULL, 0);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *d)
{
    struct sub_req *req = ctx;
    struct sg_ingest *in = req->in;
    free(req);
    sg_inbox_push(in->ib, SG_INBOX_SUBSCRIBED, d && d->code ? d->code : -1, NULL, 0, NULL, 0);
}

static void on_sub_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
    struct sub_req *req = ctx;
    struct sg_ingest *in = req->in;
    free(req);
    sg_inbox_push(in->ib, SG_INBOX_SUBSCRIBED, d && d->code ? d->code : -1, NULL, 0, NULL, 0);
}

static void on_disc(void *ctx, MQTTAsync_successData *d)
{
    struct sg_ingest *in = ctx;
    (void)d;
    sg_inbox_push(in->ib, SG_INBOX_DISCONNECTED, 0, NULL, 0, NULL, 0);
}

static void on_disc5(void *ctx, MQTTAsync_successData5 *d)
{
    struct sg_ingest *in = ctx;
    (void)d;
    sg_inbox_push(in->ib, SG_INBOX_DISCONNECTED, 0, NULL, 0, NULL, 0);
}

static void on_disc_fail(void *ctx, MQTTAsync_failureData *d)
{
    struct sg_ingest *in = ctx;
    sg_inbox_push(in->ib, SG_INBOX_DISCONNECTED, d ? d->code : -1, NULL, 0, NULL, 0);
}

static void on_disc_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
    struct sg_ingest *in = ctx;
    sg_inbox_push(in->ib, SG_INBOX_DISCONNECTED, d ? d->code : -1, NULL, 0, NULL, 0);
}

/* Paho thread: OpenSSL's reason when a TLS handshake with the broker fails
 * (e.g. "certificate verify failed", "unknown ca"), so the log says why the
 * connect was refused, not only that it was. OpenSSL's text never holds
 * key material. One line each; sg_log writes it with a single write(2). */
static int on_ssl_error(const char *str, size_t len, void *u)
{
    const struct sg_ingest *in = u;
    while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r')) {
        len--;
    }
    sg_log(SG_LOG_ERROR, "ingest", "TLS to the broker %s failed: %.*s", in->o.uri,
           (int)(len > 1024 ? 1024 : len), str);
    return 0;
}


int sg_ingest_new(struct sg_ingest **out, struct sg_inbox *ib, const struct sg_ingest_opts *o,
                  char *err, size_t errcap)
{
    *out = NULL;
    if (o->ntopics == 0 || o->qos < 0 || o->qos > 1) {
        snprintf(err, errcap, "mqtt: need at least one topic and qos 0 or 1");
        return SG_EINVAL;
    }
    struct sg_ingest *in = sg_xcalloc(1, sizeof *in);
    in->ib = ib;
    in->o = *o;
    in->qos_list = sg_xcalloc(o->ntopics, sizeof(int));
    for (size_t i = 0; i < o->ntopics; i++) {
        in->qos_list[i] = o->qos;
    }

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    if (o->version == 5) {
        MQTTAsync_createOptions co5 = MQTTAsync_createOptions_initializer5;
        co = co5;
    }
    /* We never publish, so Paho's own persistence buys nothing (notes A4). */
    int rc = MQTTAsync_createWithOptions(&in->client, o->uri, o->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errcap, "mqtt.uri %s: %s", o->uri, sg_ingest_strerror(rc));
        free(in->qos_list);
        free(in);
        return SG_EINVAL;
    }
    rc = MQTTAsync_setCallbacks(in->client, in, on_lost, on_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errcap, "mqtt: cannot set callbacks: %s", sg_ingest_strerror(rc));
        sg_ingest_free(in);
        return SG_EINVAL;
    }
    *out = in;
    return 0;
}

int sg_ingest_connect(struct sg_ingest *in)
{
    const struct sg_ingest_opts *o = &in->o;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    if (o->version == 5) {
        MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
        co = co5;
        co.cleanstart = o->clean_session ? 1 : 0;
        MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL};
        p.value.integer4 = o->clean_session ? 0 : o->session_expiry_s;
        MQTTProperties_add(&props, &p);
        co.connectProperties = &props;
        co.onSuccess5 = on_connect_ok5;
        co.onFailure5 = on_connect_fail5;
    } else {
        co.cleansession = o->clean_session ? 1 : 0;
        co.onSuccess = on_connect_ok;
        co.onFailure = on_connect_fail;
    }
    co.keepAliveInterval = (int)o->keepalive_s;
    co.automaticReconnect = 0; /* the loop reconnects; see ingest.h */
    co.connectTimeout = 10;
    co.context = in;
    co.username = o->username;
    co.password = o->password;
    if (is_tls_uri(o->uri)) {
        MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
        in->ssl = ssl;
        in->ssl.trustStore = o->ca_file;
        in->ssl.keyStore = o->cert_file;
        in->ssl.privateKey = o->key_file;
        in->ssl.enableServerCertAuth = 1;
        /* Paho's default verify = 0 skips the host name check (notes A8). */
        in->ssl.verify = 1;
        in->ssl.disableDefaultTrustStore = o->ca_file != NULL;
        /* Paho lowers OpenSSL's security level to 1; restore Debian's 2. */
        in->ssl.enabledCipherSuites = "DEFAULT:@SECLEVEL=2";
        in->ssl.ssl_error_cb = on_ssl_error;
        in->ssl.ssl_error_context = in;
        co.ssl = &in->ssl;
    }
    int rc = MQTTAsync_connect(in->client, &co);
    MQTTProperties_free(&props);
    return rc == MQTTASYNC_SUCCESS ? 0 : (rc < 0 ? rc : -rc);
}

int sg_ingest_subscribe(struct sg_ingest *in)
{
    /* Filters a reload removed while we were down: out of the session
     * first (Paho sends commands in order), unless they came back. */
    if (in->nforgotten > 0) {
        size_t k = 0;
        for (size_t i = 0; i < in->nforgotten; i++) {
            if (in_list(in->o.topics, in->o.ntopics, in->forgotten[i])) {
                free(in->forgotten[i]);
            } else {
                in->forgotten[k++] = in->forgotten[i];
            }
        }
        in->nforgotten = k;
        if (k > 0) {
            sg_log(SG_LOG_INFO, "ingest", "unsubscribing %zu filter(s) removed by a reload "
                                          "while disconnected", k);
            if (sg_ingest_unsubscribe(in, in->forgotten, k) == 0) {
                free_forgotten(in);
            }
        }
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    struct sub_req *req = sg_xmalloc(sizeof *req);
    req->in = in;
    req->count = in->o.ntopics;
    ro.context = req;
    if (in->o.version == 5) {
        ro.onSuccess5 = on_sub_ok5;
        ro.onFailure5 = on_sub_fail5;
    } else {
        ro.onSuccess = on_sub_ok;
        ro.onFailure = on_sub_fail;
    }
    int rc = MQTTAsync_subscribeMany(in->client, (int)in->o.ntopics, in->o.topics, in->qos_list,
                                     &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        free(req); /* an error return calls no callback */
    }
    return rc == MQTTASYNC_SUCCESS ? 0 : (rc < 0 ? rc : -rc);
}

int sg_ingest_disconnect(struct sg_ingest *in, int timeout_ms)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    if (in->o.version == 5) {
        MQTTAsync_disconnectOptions d5 = MQTTAsync_disconnectOptions_initializer5;
        d = d5;
        d.onSuccess5 = on_disc5;
        d.onFailure5 = on_disc_fail5;
    } else {
        d.onSuccess = on_disc;
        d.onFailure = on_disc_fail;
    }
    d.timeout = timeout_ms;
    d.context = in;
    int rc = MQTTAsync_disconnect(in->client, &d);
    return rc == MQTTASYNC_SUCCESS ? 0 : (rc < 0 ? rc : -rc);
}

void sg_ingest_free(struct sg_ingest *in)
{
    if (in == NULL) {
        return;
    }
    if (in->client != NULL) {
        MQTTAsync_destroy(&in->client);
    }
    free(in->qos_list);
    free_forgotten(in);
    free(in);
}

/* ------------------------------------------------------------------ */
/* Reload: topic re-diff (SIGHUP). Added topics are subscribed one per
 * SUBSCRIBE, so each answer carries exactly one granted QoS / reason code. */

static void on_sub1_ok(void *ctx, MQTTAsync_successData *d)
{
    struct sub_req *req = ctx;
    struct sg_ingest *in = req->in;
    free(req);
    int rc = d != NULL && d->alt.qos >= 0x80 ? d->alt.qos : 0;
    sg_inbox_push(in->ib, SG_INBOX_SUBSCRIBED, rc, NULL, 0, NULL, 0);
}

static void on_unsub_ok(void *ctx, MQTTAsync_successData *d)
{
    (void)ctx;
    (void)d;
    sg_log(SG_LOG_INFO, "ingest", "unsubscribe acknowledged by the broker");
}

static void on_unsub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    (void)ctx;
    (void)d;
    sg_log(SG_LOG_INFO, "ingest", "unsubscribe acknowledged by the broker");
}

static void on_unsub_fail(void *ctx, MQTTAsync_failureData *d)
{
    (void)ctx;
    sg_log(SG_LOG_WARN, "ingest", "unsubscribe refused (code %d)", d ? d->code : -1);
}

static void on_unsub_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
    (void)ctx;
    sg_log(SG_LOG_WARN, "ingest", "unsubscribe refused (code %d)",
           d ? (d->code ? d->code : (int)d->reasonCode) : -1);
}

int sg_ingest_set_topics(struct sg_ingest *in, char *const *topics, size_t ntopics, int qos)
{
    if (in == NULL || topics == NULL || ntopics == 0 || qos < 0 || qos > 1) {
        return SG_EINVAL;
    }
    int *ql = sg_xcalloc(ntopics, sizeof(int));
    for (size_t i = 0; i < ntopics; i++) {
        ql[i] = qos;
    }
    free(in->qos_list);
    in->qos_list = ql;
    in->o.topics = topics;
    in->o.ntopics = ntopics;
    in->o.qos = qos;
    return 0;
}

int sg_ingest_subscribe_topics(struct sg_ingest *in, char *const *topics, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        struct sub_req *req = sg_xmalloc(sizeof *req);
        req->in = in;
        req->count = 1;
        ro.context = req;
        if (in->o.version == 5) {
            ro.onSuccess5 = on_sub_ok5;
            ro.onFailure5 = on_sub_fail5;
        } else {
            ro.onSuccess = on_sub1_ok;
            ro.onFailure = on_sub_fail;
        }
        int rc = MQTTAsync_subscribe(in->client, topics[i], in->o.qos, &ro);
        if (rc != MQTTASYNC_SUCCESS) {
            free(req);
            return rc < 0 ? rc : -rc;
        }
    }
    return 0;
}

void sg_ingest_forget_topics(struct sg_ingest *in, char *const *topics, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (in_list(in->forgotten, in->nforgotten, topics[i])) {
            continue;
        }
        in->forgotten = sg_xrealloc(in->forgotten, (in->nforgotten + 1) * sizeof *in->forgotten);
        in->forgotten[in->nforgotten++] = sg_xstrdup(topics[i]);
    }
}

int sg_ingest_unsubscribe(struct sg_ingest *in, char *const *topics, size_t n)
{
    if (n == 0) {
        return 0;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = in;
    if (in->o.version == 5) {
        ro.onSuccess5 = on_unsub_ok5;
        ro.onFailure5 = on_unsub_fail5;
    } else {
        ro.onSuccess = on_unsub_ok;
        ro.onFailure = on_unsub_fail;
    }
    int rc = MQTTAsync_unsubscribeMany(in->client, (int)n, (char *const *)topics, &ro);
    return rc == MQTTASYNC_SUCCESS ? 0 : (rc < 0 ? rc : -rc);
}

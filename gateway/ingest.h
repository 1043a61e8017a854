/*
 * ingest: the Paho MQTTAsync client. Its callbacks run on Paho's threads and
 * only post records to the inbox (messages, connect/subscribe results,
 * connection loss); the loop decides what to do next. Reconnecting is driven
 * by the loop (gateway.c), not by Paho's automatic reconnect, so every
 * connect reports whether the broker kept our session, and every connect is
 * followed by a fresh subscribe (Paho does not re-subscribe).
 *
 * Calls below are made from the loop thread. Results arrive through the
 * inbox; a call that returns an error posts nothing.
 */
#ifndef SG_INGEST_H
#define SG_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "inbox.h"
#include "journal.h"

struct sg_ingest_opts {
    const char *uri;
    const char *client_id;
    char *const *topics;
    size_t ntopics;
    int qos;                    /* 0 or 1 */
    int version;                /* 3 (3.1.1) or 5 */
    bool clean_session;
    uint32_t keepalive_s;
    uint32_t session_expiry_s;  /* MQTT 5 */
    const char *username;       /* or NULL */
    const char *password;       /* or NULL; never logged */
    const char *ca_file;        /* ssl:// trust store, or NULL for the system CAs */
    const char *cert_file;      /* client certificate (mTLS), or NULL */
    const char *key_file;
    size_t max_payload_bytes;   /* larger payloads are not copied; posted as too large */
    struct sg_journal *journal; /* every message is appended here before the callback
                                 * returns (and so before Paho's PUBACK), or NULL */
};

struct sg_ingest;

/* Creates the client (no network yet). Returns 0, or SG_EINVAL with a
 * reason in err (bad URI or options). */
int sg_ingest_new(struct sg_ingest **out, struct sg_inbox *ib, const struct sg_ingest_opts *o,
                  char *err, size_t errcap);

/* Starts one connect attempt → SG_INBOX_CONNECTED(arg=session present) or
 * SG_INBOX_CONNECT_FAILED(arg=code). Returns 0 or a negative Paho code. */
int sg_ingest_connect(struct sg_ingest *in);

/* Subscribes to every topic → SG_INBOX_SUBSCRIBED(arg=0 ok, else code). */
int sg_ingest_subscribe(struct sg_ingest *in);

/* Reload: replaces the topic list and QoS that later sg_ingest_subscribe
 * calls (every reconnect) use. topics[0..ntopics) must stay valid while in
 * uses them (the gateway passes its config's array). Makes no network call.
 * Returns 0, or SG_EINVAL (no topics, bad qos; nothing changed). */
int sg_ingest_set_topics(struct sg_ingest *in, char *const *topics, size_t ntopics, int qos);

/* Reload: subscribes to topics[0..n) only, one SUBSCRIBE each, at the
 * current QoS → one SG_INBOX_SUBSCRIBED(arg=0 ok, else code) per topic.
 * Returns 0 or a negative Paho code (those not yet started post nothing). */
int sg_ingest_subscribe_topics(struct sg_ingest *in, char *const *topics, size_t n);

/* Reload: unsubscribes from topics[0..n). Posts nothing to the inbox; the
 * broker's answer is logged from Paho's thread (module ingest: "unsubscribe
 * acknowledged by the broker" or "unsubscribe refused"). Returns 0 or a
 * negative Paho code. */
int sg_ingest_unsubscribe(struct sg_ingest *in, char *const *topics, size_t n);

/* Reload while not connected: remembers topics[0..n) (copied) so the next
 * sg_ingest_subscribe unsubscribes them first. A persistent session keeps
 * the broker's subscriptions across a reconnect, so a filter removed while
 * the client was down would otherwise keep delivering. A filter that is in
 * the current topic list when the unsubscribe would go out is skipped. */
void sg_ingest_forget_topics(struct sg_ingest *in, char *const *topics, size_t n);

/* Starts a clean disconnect → SG_INBOX_DISCONNECTED. */
int sg_ingest_disconnect(struct sg_ingest *in, int timeout_ms);

/* Destroys the client; Paho's threads no longer call us afterwards.
 * NULL is a no-op. */
void sg_ingest_free(struct sg_ingest *in);

/* Text for a Paho return code. Payloads over max_payload_bytes are posted
 * as SG_INBOX_MESSAGE with arg 1 and no payload, so the loop counts them. */
const char *sg_ingest_strerror(int paho_code);

#endif

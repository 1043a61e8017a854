/*
 * sdnotify: tells a service manager (systemd, Type=notify) how the gateway
 * is doing, through the NOTIFY_SOCKET datagram protocol (sd_notify(3)):
 *   READY=1      once, when MQTT is connected and subscribed (the spool and
 *                the metrics listener are open by then); a later disconnect
 *                does not take it back, STATUS= says it instead
 *   RELOADING=1  at the start of a SIGHUP reload, READY=1 again at its end
 *   STOPPING=1   when SIGTERM/SIGINT starts the shutdown, before draining
 *   WATCHDOG=1   from a timer on the loop at half of WATCHDOG_USEC, so a
 *                stalled loop stops the pings and WatchdogSec= restarts us
 *   STATUS=...   one human-readable line for `systemctl status`
 *
 * Built without libsystemd (SG_SYSTEMD=OFF, or AUTO without the library),
 * every call is a no-op; sg_sdnotify_new then warns once if NOTIFY_SOCKET
 * is set, because the unit would wait for a READY=1 that never comes.
 * Without NOTIFY_SOCKET in the environment (not started by systemd), the
 * calls send nothing either.
 *
 * Thread: the loop thread only. Every function accepts sd == NULL and then
 * does nothing, so the gateway can call them before start-up finished.
 */
#ifndef SG_SDNOTIFY_H
#define SG_SDNOTIFY_H

#include <stdbool.h>
#include <uv.h>

struct sg_sdnotify;

/* True when this build was linked against libsystemd (SG_HAVE_SYSTEMD). */
bool sg_sdnotify_supported(void);

/* Allocates the notifier and, when the service manager asked for a
 * watchdog (WATCHDOG_USEC set and WATCHDOG_PID unset or ours, see
 * sd_watchdog_enabled(3)), starts a repeating timer on loop that sends
 * WATCHDOG=1 every WATCHDOG_USEC / 2. Returns 0; *out owns one timer handle
 * on loop until sg_sdnotify_close. Cannot fail other than by aborting on
 * out of memory (sg_xcalloc). */
int sg_sdnotify_new(struct sg_sdnotify **out, uv_loop_t *loop);

/* Sends READY=1 the first time it is called (later calls send only the
 * STATUS= line), together with STATUS=<fmt...>. */
void sg_sdnotify_ready(struct sg_sdnotify *sd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sends STATUS=<fmt...> (truncated to 255 bytes). */
void sg_sdnotify_status(struct sg_sdnotify *sd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A SIGHUP reload starts: RELOADING=1 with MONOTONIC_USEC= (which
 * Type=notify-reload in systemd 253 and later requires). Sends nothing
 * before the first READY=1: systemd is then still waiting for start-up. */
void sg_sdnotify_reloading(struct sg_sdnotify *sd);

/* The reload finished (applied or refused, either way the gateway runs
 * on): READY=1 again, if sg_sdnotify_reloading sent RELOADING=1. */
void sg_sdnotify_reloaded(struct sg_sdnotify *sd);

/* Shutdown begins: STOPPING=1 with a STATUS= line. Sent once; READY=1 is
 * never sent after it. The watchdog pings go on while the loop drains. */
void sg_sdnotify_stopping(struct sg_sdnotify *sd);

/* Stops the watchdog timer and closes its handle; cb(arg) runs from the
 * loop once it is closed (cb may be NULL; with sd == NULL it is not
 * called). Free sd with sg_sdnotify_free only after that, or after the
 * loop ended. */
void sg_sdnotify_close(struct sg_sdnotify *sd, void (*cb)(void *arg), void *arg);

/* Frees sd (NULL is a no-op). Its timer must be closed. */
void sg_sdnotify_free(struct sg_sdnotify *sd);

#endif

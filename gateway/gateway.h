/*
 * gateway: wires the modules together on one libuv loop and owns start-up,
 * signals, reload and the shutdown order:
 *   stop taking readings → disconnect and destroy the Paho client → drain
 *   the inbox → emit open windows as partial → spool them → deliver until
 *   the spool is empty or shutdown_timeout_ms passes → close every handle →
 *   uv_loop_close.
 * Main thread (which runs the loop).
 */
#ifndef SG_GATEWAY_H
#define SG_GATEWAY_H

#include "config.h"

/* Runs the gateway until SIGTERM/SIGINT. Takes ownership of cfg.
 * Returns the process exit code: 0 after a clean stop, 1 if start-up
 * failed (the reason was logged). */
int sg_gateway_run(struct sg_config *cfg);

#endif

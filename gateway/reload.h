/*
 * reload: SIGHUP. Loads the file the gateway runs with into a new config,
 * keeps every restart-only key at its running value (logged by name as
 * needing a restart when the file changed it), applies every changed live
 * key to the module that uses it, then swaps the whole config. The key table
 * in config.c says which keys are live. Loop thread only.
 */
#ifndef SG_RELOAD_H
#define SG_RELOAD_H

#include <stdbool.h>

#include "config.h"
#include "decode.h"
#include "forward.h"
#include "ingest.h"
#include "rollup.h"
#include "spool.h"

/* The running modules a reload applies live keys to. Any may be NULL (not
 * started): its keys then only change in the config. */
struct sg_reload_targets {
    struct sg_ingest *ingest;
    bool mqtt_live;             /* connected and subscribed (or subscribing): topic
                                 * changes go to the broker now, else on connect */
    struct sg_decoder *dec;
    struct sg_rollup_engine *eng;
    struct sg_spool *spool;
    struct sg_forward *fwd;
};

enum sg_reload_outcome {
    SG_RELOAD_NOTHING,     /* running on embedded defaults: no file to read */
    SG_RELOAD_REFUSED,     /* the file did not load or check: nothing changed (logged) */
    SG_RELOAD_DONE,        /* *cfg is the new config; the old one is freed */
    SG_RELOAD_RESUBSCRIBE, /* as DONE, but subscribing to the added topics failed to
                            * start: the caller reconnects (which subscribes to all) */
};

/* Reloads (*cfg)->path. Logs every changed key: live ones with the value
 * applied, restart-only ones as "needs restart" with the value kept; then
 * "SIGHUP: reloaded FILE (...)". On SG_RELOAD_DONE / _RESUBSCRIBE the old
 * config is freed: no module holds a pointer into it any more (restart-only
 * values move over to the new config unchanged, and the ingest client gets
 * the new topic list). */
enum sg_reload_outcome sg_reload(struct sg_config **cfg, const struct sg_reload_targets *t);

#endif

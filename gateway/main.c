/*
 * sensegate: command line. `--config FILE` runs the gateway, `--check-config
 * FILE` validates a file and exits 0 (silent) or 1 (the problems on stderr,
 * each naming file, line and key), `--version` prints the version.
 */
#include "config.h"
#include "gateway.h"
#include "log.h"

#include <MQTTAsync.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* True when the broker URI needs TLS (the schemes ingest.c connects with
 * SSL options). */
static bool mqtt_uri_is_tls(const char *uri)
{
    return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0 ||
           strncmp(uri, "wss://", 6) == 0;
}

/* Process-wide set-up that keeps an idle gateway small (docs/PERFORMANCE.md,
 * "Idle RSS"). Must run before the first MQTTAsync_create.
 * - Paho initialises OpenSSL (error strings, config, algorithm tables:
 *   about 1.6 MB of libcrypto pages) unless told not to; a tcp:// or ws://
 *   broker never needs it. For a TLS URI it does it as before (OpenSSL 3
 *   would also initialise itself on the first SSL_CTX_new).
 * (M_ARENA_MAX for Paho's threads was measured too: 8 kB less idle, not
 * worth a knob.) */
static void process_setup(const struct sg_config *cfg)
{
    MQTTAsync_init_options io = MQTTAsync_init_options_initializer;

    io.do_openssl_init = mqtt_uri_is_tls(cfg->mqtt.uri) ? 1 : 0;
    MQTTAsync_global_init(&io);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sensegate [--config FILE] [--allow-root]\n"
               "           run the gateway (embedded defaults without FILE)\n"
               "       sensegate --check-config FILE   check a configuration file\n"
               "       sensegate --version\n"
               "       sensegate --help\n"
               "Configuration keys: see config/sensegate.yaml; metrics at GET /metrics.\n");
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    const char *check = NULL;
    bool allow_root = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("sensegate %s\n", SG_VERSION);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(a, "--allow-root") == 0) {
            allow_root = true;
        } else if (strncmp(a, "--config=", 9) == 0) {
            config = a + 9;
        } else if (strcmp(a, "--check-config") == 0 && i + 1 < argc) {
            check = argv[++i];
        } else if (strncmp(a, "--check-config=", 15) == 0) {
            check = a + 15;
        } else {
            fprintf(stderr, "sensegate: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    char err[4096];
    struct sg_config *cfg = NULL;
    if (check != NULL) {
        if (sg_config_load(&cfg, check, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        sg_config_free(cfg);
        return 0;
    }
    if (sg_config_load(&cfg, config, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* The gateway parses bytes from devices it does not control; it needs no
     * privilege (ports above 1024, its own spool dir), so root is refused
     * unless the operator says so. */
    if (geteuid() == 0) {
        if (!allow_root && !cfg->allow_root) {
            fprintf(stderr,
                    "sensegate: refusing to run as root: run it as an unprivileged user that owns "
                    "spool.dir (e.g. a 'sensegate' system user), or set allow_root: true in the "
                    "configuration (or pass --allow-root) if you really mean it\n");
            sg_config_free(cfg);
            return 1;
        }
        sg_log(SG_LOG_WARN, "gateway",
               "running as root (allow_root); an unprivileged user is safer");
    }
    process_setup(cfg);
    return sg_gateway_run(cfg);
}

/*
 * fuzz_config: arbitrary bytes as a configuration file through
 * sg_config_load (one libyaml pass driven by the key table, rules,
 * cross-field checks), exactly what `sensegate --check-config` and SIGHUP
 * run. A file that loads must pass sg_config_check again and hold values in
 * their documented ranges; an error must come with a message. No leak on
 * either path (LeakSanitizer).
 */
#include "fuzz.h"

#include "config.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[600];
    if (path[0] == '\0') {
        snprintf(path, sizeof path, "%s/sensegate.yaml", sg_fuzz_tmpdir());
    }
    sg_fuzz_write_file(path, data, size);

    char err[4096];
    struct sg_config *c = NULL;
    int rc = sg_config_load(&c, path, err, sizeof err);
    if (rc != 0) {
        SG_FUZZ_CHECK(c == NULL);
        SG_FUZZ_CHECK(err[0] != '\0');
        SG_FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
        return 0;
    }
    SG_FUZZ_CHECK(c != NULL);
    SG_FUZZ_CHECK(sg_config_check(c, err, sizeof err) == 0);
    SG_FUZZ_CHECK(c->gateway_id != NULL && c->mqtt.uri != NULL && c->backend.url != NULL);
    SG_FUZZ_CHECK(c->mqtt.ntopics >= 1 && c->mqtt.ntopics <= SG_CONFIG_MAX_TOPICS);
    SG_FUZZ_CHECK(c->nwindows >= 1 && c->nwindows <= SG_CONFIG_MAX_WINDOWS);
    for (size_t i = 0; i < c->nwindows; i++) {
        SG_FUZZ_CHECK(c->windows_ms[i] > 0);
    }
    SG_FUZZ_CHECK(c->mqtt.qos == 0 || c->mqtt.qos == 1);
    SG_FUZZ_CHECK(c->limits.max_payload_bytes >= 64);
    SG_FUZZ_CHECK(c->limits.inbox_bytes >= c->limits.max_payload_bytes);
    SG_FUZZ_CHECK(c->limits.max_series >= 1 && c->limits.max_readings_per_batch >= 1);
    SG_FUZZ_CHECK((c->limits.ring_seqs & (c->limits.ring_seqs - 1)) == 0);
    SG_FUZZ_CHECK(c->backend.backoff_min_ms <= c->backend.backoff_max_ms);
    SG_FUZZ_CHECK(c->spool.dir != NULL && c->metrics.listen != NULL);
    sg_config_free(c);
    return 0;
}

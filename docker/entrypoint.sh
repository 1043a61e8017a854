#!/usr/bin/env bash
# Container entrypoint. "sensegate [args]" runs the gateway with
# /etc/sensegate/sensegate.yaml when one is mounted, else with a config
# written from the SENSEGATE_* environment variables (see docs/OPERATING.md).
# Any other command (sensegate-sim, sensegate-sink, sensegate-top, bash) runs as is.
set -euo pipefail

if [[ "${1:-sensegate}" != "sensegate" ]]; then
    exec "$@"
fi
shift || true

conf=/etc/sensegate/sensegate.yaml
if [[ ! -f "$conf" ]]; then
    conf="${TMPDIR:-/tmp}/sensegate.yaml"
    topics="${SENSEGATE_MQTT_TOPICS:-sensors/#}"
    cat > "$conf" <<YAML
gateway_id: "${SENSEGATE_GATEWAY_ID:-gw-container-001}"
mqtt:
  uri: "${SENSEGATE_MQTT_URI:-tcp://broker:1883}"
  client_id: "sensegate-${SENSEGATE_GATEWAY_ID:-gw-container-001}"
  topics: ["${topics//,/\", \"}"]
  qos: ${SENSEGATE_MQTT_QOS:-1}
windows_ms: [${SENSEGATE_WINDOWS_MS:-10000}]
backend:
  url: "${SENSEGATE_BACKEND_URL:-http://sink:8080}"
spool:
  dir: "${SENSEGATE_SPOOL_DIR:-/var/lib/sensegate}"
metrics:
  listen: "${SENSEGATE_METRICS_LISTEN:-0.0.0.0:9464}"
stats_interval_s: ${SENSEGATE_STATS_INTERVAL_S:-10}
log:
  level: "${SENSEGATE_LOG_LEVEL:-info}"
  format: "${SENSEGATE_LOG_FORMAT:-text}"
YAML
fi
exec /usr/local/bin/sensegate --config "$conf" "$@"

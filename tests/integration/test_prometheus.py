"""A real Prometheus scrapes a real gateway.

Debian's `prometheus` (installed by scripts/install-deps.sh) is started on a
free 127.0.0.1 port with a config that scrapes the gateway's metrics port
every second, while sensegate-sim publishes a fleet with every kind of fault.
Then PromQL through Prometheus's HTTP API (/api/v1/query) must return exactly
the reading counts the simulator sent, by verdict and in total, and the
payload and decode-error counts. `promtool check metrics` must pass on the
gateway's exposition, and `promtool check rules` on
docker/sensegate-alerts.yml. Without prometheus or promtool the test is a skip
(exit 77), never a pass.
"""
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

from harness import SKIP, SOURCE_DIR, Env, Proc, Runner, free_port, http_get, wait_for

# The gateway refuses to run as root unless told (CI runs as root).
ROOT_OK = {"allow_root": True} if os.geteuid() == 0 else {}

FAULTS = ["--dup-frac", "0.02", "--ooo-frac", "0.02", "--late-frac", "0.01",
          "--invalid-frac", "0.01", "--malformed-frac", "0.01"]


def find(name):
    return shutil.which(name) or (os.path.exists(f"/usr/bin/{name}") and f"/usr/bin/{name}")


def start_prometheus(env, target_port):
    """Starts prometheus on a free loopback port scraping 127.0.0.1:target_port
    every second; returns the Proc with .port. Retries on a port race."""
    conf = os.path.join(env.dir, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n"
                "  scrape_interval: 1s\n"
                "  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: sensegate\n"
                "    scrape_interval: 1s\n"
                "    scrape_timeout: 900ms\n"
                "    static_configs:\n"
                f"      - targets: ['127.0.0.1:{target_port}']\n")
    for attempt in range(5):
        port = free_port()
        data = os.path.join(env.dir, f"prom-data-{attempt}")
        proc = Proc("prometheus", [find("prometheus"), f"--config.file={conf}",
                                   f"--storage.tsdb.path={data}",
                                   f"--web.listen-address=127.0.0.1:{port}",
                                   "--log.level=warn"],
                    os.path.join(env.dir, f"prometheus-{attempt}.log"))
        env.procs.append(proc)
        try:
            wait_for(lambda: (not proc.alive() and "exit") or
                     http_get(port, "/-/ready", timeout=1)[0] == 200, 30, "prometheus /-/ready")
        except TimeoutError:
            pass
        if proc.alive():
            proc.port = port
            return proc
    raise RuntimeError(f"prometheus did not start:\n{proc.output()}")


def promql(prom, query):
    """Instant query → {labels-tuple: value} ('' key for an unlabelled result)."""
    status, body = http_get(prom.port, "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert status == 200, body
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    out = {}
    for r in doc["data"]["result"]:
        key = tuple(sorted(r["metric"].items())) or ""
        out[key] = float(r["value"][1])
    return out


def scalar(prom, query):
    r = promql(prom, query)
    return next(iter(r.values())) if len(r) == 1 else None


def test_promtool_check_metrics():
    env = Env("promtool")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        gw = env.start_gateway(env.gateway_config(broker.port, sink.port, **ROOT_OK))
        env.run_sim(broker.port, "--sensors", "30", "--duration-s", "30", "--speedup", "30",
                    "--seed", "2", *FAULTS)
        status, body = http_get(gw.metrics_port, "/metrics")
        assert status == 200, body
        r = subprocess.run([find("promtool"), "check", "metrics"], input=body.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = r.stdout.decode()
        assert r.returncode == 0 and out.strip() == "", f"promtool check metrics:\n{out}"
        # The suggested alert rules shipped with the container parse.
        rules = os.path.join(SOURCE_DIR, "docker", "sensegate-alerts.yml")
        r = subprocess.run([find("promtool"), "check", "rules", rules], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, r.stdout.decode()
        ok = True
    finally:
        env.close(failed=not ok)


def test_prometheus_counts_what_the_simulator_sent():
    env = Env("prometheus")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        gw = env.start_gateway(env.gateway_config(broker.port, sink.port, **ROOT_OK))
        prom = start_prometheus(env, gw.metrics_port)
        wait_for(lambda: scalar(prom, 'up{job="sensegate"}') == 1, 30,
                 "prometheus to scrape the gateway (up == 1)")
        # About 8 s of publishing at 1 s scrapes: several samples mid-run.
        sim = env.start_sim(broker.port, "--sensors", "150", "--duration-s", "160",
                            "--speedup", "20", "--seed", "9", *FAULTS)
        summary = env.finish_sim(sim)
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total")
                 >= summary["payloads_sent"], 60, "the gateway to receive every payload")

        want_total = summary["readings_sent"]
        wait_for(lambda: scalar(prom, "sum(sensegate_readings_total)") == want_total, 30,
                 f"sum(sensegate_readings_total) == {want_total} in prometheus")
        by_result = {dict(k)["result"]: v for k, v in
                     promql(prom, "sum by (result) (sensegate_readings_total)").items()}
        assert by_result == {k: float(v) for k, v in summary["expected"].items()}, \
            (by_result, summary["expected"])
        assert scalar(prom, "sensegate_mqtt_messages_total") == summary["payloads_sent"]
        assert scalar(prom, "sensegate_decode_errors_total") == summary["malformed_payloads"]
        # The invalid reasons add up to the invalid verdicts.
        assert scalar(prom, "sum(sensegate_invalid_readings_total)") == \
            summary["expected"]["invalid"]
        # Prometheus saw the counters move while the simulator ran, not just the end.
        changes = scalar(prom, "changes(sensegate_readings_total{result=\"accepted\"}[5m])")
        assert changes is not None and changes >= 3, changes
        # Histograms are usable from PromQL (the contract's latency histogram).
        q = scalar(prom, "histogram_quantile(0.5, sum by (le) "
                         "(sensegate_forward_latency_seconds_bucket))")
        assert q is not None and q > 0, q
        print(f"prometheus: sum(sensegate_readings_total) = {want_total}, by result {by_result}, "
              f"{int(changes)} changes seen, forward latency p50 ~ {q:.3f} s")
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    if not find("prometheus") or not find("promtool"):
        print("SKIP: prometheus/promtool not found (Debian package prometheus; "
              "scripts/install-deps.sh installs it)")
        sys.exit(SKIP)
    r = Runner()
    for t in (test_promtool_check_metrics, test_prometheus_counts_what_the_simulator_sent):
        r.run(t)
    r.finish()

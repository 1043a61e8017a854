"""SIGHUP reload, key by key (issue 11).

One gateway runs against a real broker and sink. For every key of the
reload table in docs/OPERATING.md (which unit_config keeps equal to the C
table), the test writes the config with that key changed, sends SIGHUP and
reads what the gateway logged up to "SIGHUP: reloaded":

- a live key is logged as "KEY: OLD -> NEW applied (...)", and the gateway
  behaves accordingly where that is visible from outside (topics subscribed,
  JSON log lines, ...);
- a restart-only key is logged as "KEY: NEW in the file needs restart;
  keeping OLD", and the running value stays (gateway_id in /healthz, the
  metrics listener, the broker session);
- no other key is reported, so a key the reload ignored would fail here.

Then the original file is restored with another SIGHUP: live keys go back
(logged), restart-only ones were never changed (nothing logged). A key of
the table without a step here fails the test, so no key goes untested.

A second scenario checks two live keys by behaviour alone, with readings
flowing: backend.timeout_ms (a backend slower than the new timeout starts
getting retried) and spool.max_batches (batches piling up while the backend
answers 503 are dropped at the new bound on the next push). A third one
does the same for the decoder's limits: limits.max_readings_per_batch and
validation.max_future_ms turn readings the gateway accepted before the
reload into invalid ones (batch_limit, ts_future) after it.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from harness import Env, Runner, http_get, wait_for, wait_log

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "OPERATING.md")

RETRY = 'sensegate_forward_batches_total{result="retry"}'
OK = 'sensegate_forward_batches_total{result="ok"}'

CHANGE_RE = re.compile(r"SIGHUP: ([a-z_.]+): (.*?) (?:-> (.*?) applied \(|in the file needs "
                       r"restart; keeping (.*?) \()")


def doc_keys():
    """{key: live?} from the reload table of docs/OPERATING.md."""
    text = open(DOC).read()
    body = text.split("<!-- reload-keys: begin -->", 1)[1].split("<!-- reload-keys: end -->")[0]
    keys = {}
    for line in body.splitlines():
        m = re.match(r"\| `([^`]+)` \| (live|restart) \|", line)
        if m:
            keys[m.group(1)] = m.group(2) == "live"
    assert len(keys) >= 40, f"reload table not found in {DOC}"
    return keys


def steps(env, base_root):
    """[{key: (new value in YAML terms, old as logged, new as logged)}] --
    one step per key, except the client certificate and its key, which are
    only valid together."""
    d = env.dir
    one = {
        "gateway_id": ("gw-test-002", "gw-test-001", "gw-test-002"),
        "mqtt.uri": ("tcp://127.0.0.1:1", None, "tcp://127.0.0.1:1"),
        "mqtt.client_id": ("sensegate-other", None, "sensegate-other"),
        "mqtt.topics": (["sensors/#", "other/+"], "[sensors/#]", "[sensors/#, other/+]"),
        "mqtt.qos": (0, "1", "0"),
        "mqtt.version": (5, "3", "5"),
        "mqtt.clean_session": (True, "false", "true"),
        "mqtt.keepalive_s": (60, "30", "60"),
        "mqtt.session_expiry_s": (100, "86400", "100"),
        "mqtt.reconnect_min_ms": (1000, "500", "1000"),
        "mqtt.reconnect_max_ms": (60000, "30000", "60000"),
        "mqtt.username": ("someone", "(unset)", "someone"),
        "mqtt.password_file": (f"{d}/pw", "(unset)", f"{d}/pw"),
        "mqtt.ca_file": (f"{d}/ca.pem", "(unset)", f"{d}/ca.pem"),
        "windows_ms": ([60000], "[10000]", "[60000]"),
        "allowed_lateness_ms": (5000, "2000", "5000"),
        "validation.max_past_ms": (7200000, "3600000", "7200000"),
        "validation.max_future_ms": (600000, "300000", "600000"),
        "limits.max_payload_bytes": (131072, "262144", "131072"),
        "limits.max_readings_per_batch": (500, "10000", "500"),
        "limits.max_series": (1000, "200000", "1000"),
        "limits.series_idle_ms": (1000000, "900000", "1000000"),
        "limits.ring_seqs": (2048, "1024", "2048"),
        "limits.inbox_bytes": (16777216, "33554432", "16777216"),
        "backend.url": ("http://127.0.0.1:1", None, "http://127.0.0.1:1"),
        "backend.token_file": (f"{d}/token", "(unset)", f"{d}/token"),
        "backend.content_type": ("protobuf", "json", "protobuf"),
        "backend.max_batch_rollups": (50, "500", "50"),
        "backend.max_batch_delay_ms": (300, "200", "300"),
        "backend.timeout_ms": (2000, "10000", "2000"),
        "backend.max_inflight": (4, "2", "4"),
        "backend.backoff_min_ms": (200, "100", "200"),
        "backend.backoff_max_ms": (4000, "2000", "4000"),
        "backend.retry_after_max_ms": (60000, "3600000", "60000"),
        "backend.ca_file": (f"{d}/bca.pem", "(unset)", f"{d}/bca.pem"),
        "spool.dir": (f"{d}/other-spool", None, f"{d}/other-spool"),
        "spool.max_bytes": (1048576, "268435456", "1048576"),
        "spool.max_batches": (1000, "100000", "1000"),
        "spool.fsync": (False, "true", "false"),
        "metrics.listen": ("127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:1"),
        "metrics.port_file": (f"{d}/other.port", None, f"{d}/other.port"),
        "stats_interval_s": (1, "2", "1"),
        "shutdown_timeout_ms": (20000, "15000", "20000"),
        "log.level": ("debug", "info", "debug"),
        "log.format": ("json", "text", "json"),
        "allow_root": (not base_root, "true" if base_root else "false",
                       "false" if base_root else "true"),
    }
    out = [{k: v} for k, v in one.items()]
    out.append({"mqtt.cert_file": (f"{d}/c.pem", "(unset)", f"{d}/c.pem"),
                "mqtt.key_file": (f"{d}/c.key", "(unset)", f"{d}/c.key")})
    return out


def reload_and_read(gw, what):
    """SIGHUP, then the log from just before it to "SIGHUP: reloaded"."""
    off = len(gw.output())
    gw.send(signal.SIGHUP)
    end = wait_log(gw, "SIGHUP: reloaded ", 10, what, after=off)
    nl = gw.output().find("\n", end)
    return gw.output()[off:nl if nl >= 0 else None]


def changes(seg):
    """{key: (live?, old, new)} of every key line the reload logged."""
    got = {}
    for m in CHANGE_RE.finditer(seg):
        key, first, applied_new, kept = m.groups()
        if applied_new is not None:
            got[key] = (True, first, applied_new)
        else:
            got[key] = (False, kept, first)
    return got


def test_every_key():
    env = Env("reload")
    ok = False
    try:
        live = doc_keys()
        broker = env.start_broker()
        sink = env.start_sink()
        base_root = os.geteuid() == 0
        cfg = env.gateway_config(broker.port, sink.port)
        base = open(cfg).read()
        gw = env.start_gateway(cfg)
        port = gw.metrics_port

        plan = steps(env, base_root)
        covered = set(k for s in plan for k in s)
        assert covered == set(live), (f"keys without a step: {sorted(set(live) - covered)}; "
                                      f"steps for no key: {sorted(covered - set(live))}")

        for step in plan:
            over = {k.replace(".", "__"): v[0] for k, v in step.items()}
            env.gateway_config(broker.port, sink.port, **over)
            names = ", ".join(step)
            seg = reload_and_read(gw, f"the reload of {names}")
            got = changes(seg)
            assert set(got) == set(step), f"{names}: logged {sorted(got)}:\n{seg}"
            for key, (_, old, new) in step.items():
                is_live, log_old, log_new = got[key]
                assert is_live == live[key], f"{key}: logged as {'live' if is_live else 'restart'}"
                assert log_new == new, f"{key}: new value logged as {log_new!r}, want {new!r}"
                if old is not None:
                    assert log_old == old, f"{key}: old value logged as {log_old!r}, want {old!r}"
            napplied = sum(1 for k in step if live[k])
            assert (f"; {napplied} key(s) applied, {len(step) - napplied} need restart)"
                    in seg), seg

            # What can be seen from outside.
            if "mqtt.topics" in step:
                assert "SIGHUP: mqtt.topics: subscribing other/+ (qos 1)" in seg, seg
            if "mqtt.qos" in step:
                assert "SIGHUP: mqtt.topics: subscribing sensors/# (qos 0)" in seg, seg
            if "log.format" in step:
                line = [ln for ln in seg.splitlines() if "SIGHUP: reloaded " in ln][0]
                assert json.loads(line)["msg"].startswith("SIGHUP: reloaded "), line
            status, body = http_get(port, "/healthz")   # listener and session kept
            assert status == 200, (names, status, body)
            assert json.loads(body)["gateway_id"] == "gw-test-001", body

            # Back to the original file: live keys return, restart-only ones
            # never changed.
            with open(cfg, "w") as f:
                f.write(base)
            seg = reload_and_read(gw, f"the restore after {names}")
            back = changes(seg)
            want_back = {k for k in step if live[k]}
            assert set(back) == want_back, f"restore after {names}: logged {sorted(back)}:\n{seg}"
            for key in want_back:
                assert back[key][1:] == (step[key][2], step[key][1] or back[key][2]), \
                    (key, back[key])

        assert gw.alive()
        out = gw.output()
        assert out.count(" started gateway_id=") == 1, "the gateway restarted"
        assert env.metric(gw, "sensegate_mqtt_reconnects_total") == 0
        assert gw.stop(timeout=30) == 0
        print(f"    {len(plan)} reloads of {len(live)} keys "
              f"({sum(live.values())} live, {len(live) - sum(live.values())} restart-only)")
        ok = True
    finally:
        env.close(failed=not ok)


def test_live_keys_take_effect():
    env = Env("reload-live")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        base = dict(windows_ms=[2000], backend__max_batch_rollups=100)
        cfg = env.gateway_config(broker.port, sink.port, **base)
        gw = env.start_gateway(cfg)

        # A backend that answers after 1.5 s: fine with timeout_ms 10000.
        env.sink_control(sink, mode="slow", slow_ms=1500)
        sim = env.start_sim(broker.port, "--sensors", "40", "--duration-s", "80", "--speedup",
                            "4", "--seed", "31", "--windows-ms", "2000")
        wait_for(lambda: env.metric(gw, OK) >= 2, 30, "two slow deliveries")
        assert env.metric(gw, RETRY) == 0, "retries before the timeout was lowered"

        # timeout_ms 1000: the next requests time out and are retried.
        env.gateway_config(broker.port, sink.port, backend__timeout_ms=1000, **base)
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: backend.timeout_ms: 10000 -> 1000 applied", 10)
        wait_for(lambda: env.metric(gw, RETRY) > 0, 30, "a retry after timeout_ms 1000")

        # The backend refuses everything: batches pile up in the spool...
        env.sink_control(sink, mode="503")
        wait_for(lambda: env.metric(gw, "sensegate_spool_batches") >= 4, 30,
                 ">= 4 spooled batches")
        assert env.metric(gw, "sensegate_spool_dropped_batches_total") == 0
        # ...until spool.max_batches 2 applies at the next push.
        env.gateway_config(broker.port, sink.port, backend__timeout_ms=1000,
                           spool__max_batches=2, **base)
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: spool.max_batches: 100000 -> 2 applied", 10)
        wait_for(lambda: env.metric(gw, "sensegate_spool_dropped_batches_total") > 0, 30,
                 "batches dropped at spool.max_batches 2")
        wait_for(lambda: env.metric(gw, "sensegate_spool_batches") <= 2, 10,
                 "the spool within its new bound")

        env.sink_control(sink, mode="ok")
        env.finish_sim(sim)
        wait_for(lambda: env.metric(gw, "sensegate_spool_batches") == 0, 30, "the spool drained")
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


def test_decoder_limits_take_effect():
    env = Env("reload-decode")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port)
        gw = env.start_gateway(cfg)
        inv = 'sensegate_invalid_readings_total{reason="%s"}'
        # Readings 200 s ahead of the clock, 10 per payload: all accepted
        # under the defaults (max_future_ms 300000, 10000 per payload).
        ahead = ["--sensors", "5", "--duration-s", "20", "--speedup", "20",
                 "--readings-per-batch", "10"]

        def run(tag, seed, *extra):
            s = env.run_sim(broker.port, *ahead, "--seed", str(seed), *extra, tag=tag)
            wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total") >= total[0] +
                     s["payloads_sent"], 30, f"the payloads of {tag}")
            total[0] += s["payloads_sent"]
            return s

        total = [0]
        future = str(int(time.time() * 1000) + 200000)
        run("sim1", 41, "--start-ms", future)
        m = env.metrics(gw)
        assert m[inv % "ts_future"] == 0 and m[inv % "batch_limit"] == 0, m

        env.gateway_config(broker.port, sink.port, limits__max_readings_per_batch=4)
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: limits.max_readings_per_batch: 10000 -> 4 applied", 10)
        run("sim2", 42)
        m = env.metrics(gw)
        assert m[inv % "batch_limit"] > 0, m
        assert m[inv % "ts_future"] == 0, m

        env.gateway_config(broker.port, sink.port, validation__max_future_ms=60000)
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: validation.max_future_ms: 300000 -> 60000 applied", 10)
        before = env.metric(gw, inv % "batch_limit")
        future = str(int(time.time() * 1000) + 200000)
        run("sim3", 43, "--start-ms", future)
        m = env.metrics(gw)
        assert m[inv % "ts_future"] > 0, m
        assert m[inv % "batch_limit"] == before, \
            "limits.max_readings_per_batch not back at 10000"
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


def test_topic_removed_while_down():
    """A filter removed by a SIGHUP while the broker is away must not keep
    delivering once the persistent session comes back (the broker kept the
    subscription in the session); and a URL's password never reaches the
    reload log."""
    env = Env("reload-down")
    ok = False
    try:
        pub = shutil.which("mosquitto_pub")
        if not pub:
            print("SKIP: mosquitto_pub not found")
            sys.exit(77)
        broker = env.start_broker(persistence=True)
        sink = env.start_sink()
        both = ["sensors/a/#", "sensors/b/#"]
        cfg = env.gateway_config(broker.port, sink.port, mqtt__topics=both)
        gw = env.start_gateway(cfg)
        msgs = "sensegate_mqtt_messages_total"

        def publish(port, topic):
            subprocess.run([pub, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                            "-m", "not protobuf"], check=True, timeout=10)

        publish(broker.port, "sensors/b/d1/dev1")
        wait_for(lambda: env.metric(gw, msgs) == 1, 10, "the message on sensors/b")

        assert broker.stop() == 0
        wait_for(lambda: http_get(gw.metrics_port, "/healthz")[0] == 503, 20,
                 "/healthz 503 with the broker down")
        after = len(gw.output())
        env.gateway_config(broker.port, sink.port, mqtt__topics=["sensors/a/#"],
                           backend__url=f"http://reader:s3cret@127.0.0.1:{sink.port}")
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: reloaded", 10, after=after)
        seg = gw.output()[after:]
        assert "not connected; the new topics apply on connect" in seg, seg
        assert "backend.url: http://***@127.0.0.1" in seg, seg
        assert "s3cret" not in gw.output(), "a password from backend.url reached the log"

        broker = env.start_broker(persistence=True, port=broker.port, tag=broker.tag,
                                  log_tag="mosquitto-2")
        env.wait_healthy(gw)
        wait_log(gw, "unsubscribing 1 filter(s) removed by a reload while disconnected", 10)
        wait_log(gw, "unsubscribe acknowledged by the broker", 10)
        # In publish order: b (removed) first, then a (kept). Once a is
        # counted, b would have been counted before it had it been delivered.
        publish(broker.port, "sensors/b/d1/dev1")
        publish(broker.port, "sensors/a/d1/dev1")
        wait_for(lambda: env.metric(gw, msgs) >= 2, 10, "the message on sensors/a")
        assert env.metric(gw, msgs) == 2, "a message on the removed filter was delivered"
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    r = Runner()
    r.run(test_every_key)
    r.run(test_live_keys_take_effect)
    r.run(test_decoder_limits_take_effect)
    r.run(test_topic_removed_while_down)
    r.finish()

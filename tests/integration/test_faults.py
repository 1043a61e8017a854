"""Fault tests (issue 3, item 6) on real parts: mosquitto, sensegate-sim,
sensegate, sensegate-sink.

Each scenario holds the same exact criteria, adapted to what it breaks:
- identity: readings the simulator sent == accepted + duplicate + late +
  invalid, each equal to the ground truth (harness.check_identity);
- every accepted reading is in exactly one rollup at the sink after its
  batch_id dedup (`sensegate-sink verify` exit 0, or exactly the rollups of
  the batches whose loss is counted missing);
- every drop is counted (dead letters, spool drops, spool errors).

Waits are conditions with deadlines, never fixed sleeps. Every process is
stopped and every mount undone in Env.close. Run:
    SG_BUILD_DIR=build python3 tests/integration/test_faults.py [name ...]
"""
import calendar
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from harness import (Env, Runner, binary, check_identity, free_port, http_get, merge_summaries,
                     read_jsonl, rollup_key, stable_port, verify_diffs, verify_key, wait_for, wait_log,
                     write_truth)

FAULTS = ["--dup-frac", "0.02", "--ooo-frac", "0.02", "--late-frac", "0.01",
          "--invalid-frac", "0.01", "--malformed-frac", "0.01"]

RETRY = 'sensegate_forward_batches_total{result="retry"}'
OK = 'sensegate_forward_batches_total{result="ok"}'
REJECTED = 'sensegate_forward_batches_total{result="rejected"}'


# ---------------------------------------------------------------- helpers

def wait_received(env, gw, payloads, timeout=60):
    """Waits until the gateway has taken every payload the simulator sent."""
    wait_for(lambda: (not gw.alive() and env._died(gw)) or
             env.metric(gw, "sensegate_mqtt_messages_total") >= payloads, timeout,
             f"the gateway to receive {payloads} payloads")


def assert_identity(env, gw, summary):
    got, problems = check_identity(summary, env.metrics(gw))
    assert not problems, "\n".join(problems)
    return got


def stop_gateway(gw, timeout=30):
    t0 = time.monotonic()
    rc = gw.stop(timeout=timeout)
    took = time.monotonic() - t0
    assert rc == 0, f"gateway exit code {rc} after SIGTERM:\n{gw.output()[-3000:]}"
    return took


def assert_verify(env, truth, sink):
    code, out = env.verify(truth, sink.out)
    assert code == 0, out
    print("   ", out.strip().splitlines()[-1])
    return out


def sink_batches(sink):
    return read_jsonl(sink.batches)


def batch_seq(batch_id):
    return int(batch_id.rsplit(":", 1)[1])


def log_time_ms(line):
    """Epoch ms of a log line of gateway/log.c (2026-01-01T00:00:00.123Z ...)."""
    stamp = line.split(" ", 1)[0]
    t = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) * 1000 + int(stamp[20:23])


def final_stats(gw):
    """The key=value pairs of the gateway's last stats line (written at exit)."""
    lines = [ln for ln in gw.output().splitlines() if " stats: stats " in ln]
    assert lines, "no stats line in the gateway log"
    out = {}
    for tok in lines[-1].split(" stats: stats ", 1)[1].split():
        k, _, v = tok.partition("=")
        out[k] = int(v) if v.isdigit() else v
    return out


class Scraper:
    """Samples /metrics while a condition is waited for; keeps every sample."""

    def __init__(self, env, gw):
        self.env, self.gw, self.samples = env, gw, []

    def sample(self):
        m = self.env.metrics(self.gw)
        self.samples.append(m)
        return m


# ---------------------------------------------------------------- scenarios

def test_backend_refused_then_back():
    """Sink stopped (connection refused) for > 5 windows of 2 s while the
    fleet runs, then restarted on the same port: nothing lost, nothing
    duplicated, retries counted, spool drained."""
    env = Env("refused")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink(port=stable_port())
        cfg = env.gateway_config(broker.port, sink.port, windows_ms=[2000],
                                 backend__max_batch_rollups=100)
        gw = env.start_gateway(cfg)
        sink.stop()
        t_down = time.monotonic()
        sim = env.start_sim(broker.port, "--sensors", "80", "--duration-s", "40", "--speedup", "4",
                            "--seed", "21", "--windows-ms", "2000", *FAULTS)
        # While the backend refuses connections, batches pile up in the spool.
        wait_for(lambda: env.metric(gw, RETRY) > 0 and
                 env.metric(gw, "sensegate_spool_batches") >= 5, 30,
                 "retries and >= 5 spooled batches while the sink is down")
        summary = env.finish_sim(sim)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        # Down for longer than five 2 s windows (the run itself takes ~10 s).
        wait_for(lambda: time.monotonic() - t_down >= 5 * 2.0 + 0.5, 15, "5 windows of outage")
        m = env.metrics(gw)
        spooled, retries = m["sensegate_spool_batches"], m[RETRY]
        assert m[OK] == 0, f"batches delivered while the sink was down: {m[OK]}"
        down_s = time.monotonic() - t_down
        sink = env.restart_sink(sink)
        wait_for(lambda: env.metric(gw, "sensegate_spool_batches") == 0, 30,
                 "the spool to drain after the sink is back")
        m = env.metrics(gw)
        assert m[RETRY] > 0
        assert m["sensegate_spool_dropped_batches_total"] == 0
        assert m["sensegate_spool_errors_total"] == 0
        stop_gateway(gw)
        assert_verify(env, summary["truth"], sink)
        print(f"    outage {down_s:.1f}s, {int(spooled)} batches spooled, "
              f"{int(retries)} retries, delivered {int(m[OK])} after restart")
        ok = True
    finally:
        env.close(failed=not ok)


def test_503_retry_after_honoured():
    """Sink answers 503 with Retry-After: 1 three times, then 200. The
    gateway's own backoff is capped at 300 ms, so only an honoured
    Retry-After explains gaps of >= 1 s; the retried batch keeps its id."""
    env = Env("retryafter")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink("--log-level", "debug")
        cfg = env.gateway_config(broker.port, sink.port, backend__max_inflight=1,
                                 backend__backoff_min_ms=100, backend__backoff_max_ms=300)
        gw = env.start_gateway(cfg)
        n503 = 3
        env.sink_control(sink, mode="503", retry_after="1", count=n503)
        summary = env.run_sim(broker.port, "--sensors", "60", "--duration-s", "30", "--speedup",
                              "20", "--seed", "5", *FAULTS)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        wait_for(lambda: env.sink_stats(sink)["failed_by_mode"].get("503", 0) == n503 and
                 env.metric(gw, "sensegate_spool_batches") == 0, 30,
                 "three 503s and then an empty spool")
        m = env.metrics(gw)
        assert m[RETRY] == n503, f"retries {m[RETRY]}, 503 answers {n503}"
        stop_gateway(gw)
        assert_verify(env, summary["truth"], sink)
        sink.stop()
        # Every POST the sink took, in order, from its debug log.
        events = []
        for line in sink.output().splitlines():
            if " sink: failure mode=" in line:
                bid = line.split("batch_id=", 1)[1].split()[0]
                events.append((log_time_ms(line), "503", bid))
            elif " sink: batch batch_id=" in line or " sink: duplicate batch batch_id=" in line:
                bid = line.split("batch_id=", 1)[1].split()[0]
                events.append((log_time_ms(line), "200", bid))
        fails = [i for i, e in enumerate(events) if e[1] == "503"]
        assert len(fails) == n503, events[:10]
        gaps = []
        for i in fails:
            assert i + 1 < len(events), "no request after a 503"
            gap = events[i + 1][0] - events[i][0]
            gaps.append(gap)
            # Log stamps are cut to the ms: allow 2 ms of rounding.
            assert gap >= 1000 - 2, f"next request {gap} ms after a 503 with Retry-After: 1"
            assert gap < 5000, f"next request only {gap} ms after a 503 (stalled?)"
            assert events[i + 1][2] == events[i][2], \
                f"after a 503 for {events[i][2]} the gateway sent {events[i + 1][2]} first"
        print(f"    gaps after 503 + Retry-After 1: {gaps} ms")
        ok = True
    finally:
        env.close(failed=not ok)


def test_400_one_batch_dead_lettered():
    """Sink answers 400 to exactly one POST: that batch is in dead_letter
    (exactly one row), counted, never retried; every other rollup arrives,
    and the only rollups missing at the sink are those of that batch."""
    env = Env("deadletter")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, backend__max_batch_rollups=50)
        gw = env.start_gateway(cfg)
        env.sink_control(sink, mode="400", count=1)
        summary = env.run_sim(broker.port, "--sensors", "60", "--duration-s", "40", "--speedup",
                              "20", "--seed", "9", *FAULTS)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        wait_for(lambda: env.metric(gw, REJECTED) == 1 and
                 env.metric(gw, "sensegate_spool_batches") == 0, 30,
                 "one rejected batch and an empty spool")
        m = env.metrics(gw)
        assert m["sensegate_spool_dead_letter_batches"] == 1, m
        assert m[RETRY] == 0, m[RETRY]
        stop_gateway(gw)
        m_stats = final_stats(gw)
        assert m_stats["fwd_rejected"] == 1 and m_stats["dead_letters"] == 1, m_stats
        assert env.sink_stats(sink)["failed_by_mode"].get("400", 0) == 1

        db = sqlite3.connect(os.path.join(env.dir, "gateway-spool", "spool.db"))
        rows = db.execute("SELECT seq, http_status, reason, content_type, body, bytes "
                          "FROM dead_letter").fetchall()
        db.close()
        assert len(rows) == 1, f"dead_letter rows: {len(rows)}"
        seq, status, reason, ctype, body, nbytes = rows[0]
        assert status == 400 and ctype == 0 and nbytes == len(body), (status, ctype, nbytes)
        assert "failure mode 400" in reason, reason
        dead = json.loads(body)
        assert batch_seq(dead["batch_id"]) == seq
        dead_keys = {rollup_key(r) for r in dead["rollups"]}
        assert dead_keys and len(dead_keys) == len(dead["rollups"])
        assert dead["batch_id"] not in {b["batch_id"] for b in sink_batches(sink)}

        # Against the full truth: exactly the dead batch's rollups are missing.
        code, out = env.verify(summary["truth"], sink.out, max_diffs=100000)
        d = verify_diffs(out)
        assert code == 1 and not (d["unexpected"] or d["duplicate"] or d["mismatch"] or
                                  d["malformed"]), out[-3000:]
        missing = {verify_key(x) for x in d["missing"]}
        assert missing == dead_keys, (f"missing {len(missing)} rollups, dead batch holds "
                                      f"{len(dead_keys)}; differ: {missing ^ dead_keys}")
        # And the truth minus that batch matches the sink exactly.
        rest = os.path.join(env.dir, "truth-minus-dead.jsonl")
        n = write_truth(rest, [summary], exclude=dead_keys)
        assert n == summary["rollups"] - len(dead_keys)
        assert_verify(env, rest, sink)
        print(f"    dead letter {dead['batch_id']}: {len(dead_keys)} rollups; "
              f"{n} others delivered")
        ok = True
    finally:
        env.close(failed=not ok)


def test_broker_restart_persistent_session():
    """Broker (with persistence) restarted between two simulator runs with
    disjoint sensor ids; run 2 is published while the gateway is still in
    its reconnect backoff, so only the persistent session can deliver it."""
    env = Env("brokerrestart")
    ok = False
    try:
        broker = env.start_broker(persistence=True, port=stable_port())
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, mqtt__reconnect_min_ms=10000,
                                 mqtt__reconnect_max_ms=20000)
        gw = env.start_gateway(cfg)
        s1 = env.run_sim(broker.port, "--sensors", "60", "--duration-s", "30", "--speedup", "20",
                         "--seed", "31", "--id-prefix", "r1.", *FAULTS, tag="sim1")
        wait_received(env, gw, s1["payloads_sent"])
        assert_identity(env, gw, s1)
        msgs1 = env.metric(gw, "sensegate_mqtt_messages_total")

        broker = env.restart_broker(broker)
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_connected") == 0, 10,
                 "the gateway to see the broker go away")
        # Run 2 starts 60 s ahead of the wall clock, so the gateway clock
        # cannot close its windows while its readings wait at the broker.
        start2 = int(time.time() * 1000) + 60000
        s2 = env.run_sim(broker.port, "--sensors", "40", "--duration-s", "20", "--speedup", "20",
                         "--seed", "32", "--id-prefix", "r2.", "--start-ms", str(start2),
                         *FAULTS, tag="sim2")
        m = env.metrics(gw)
        assert m["sensegate_mqtt_connected"] == 0 and m["sensegate_mqtt_messages_total"] == msgs1, \
            ("the gateway reconnected before run 2 was published: the test cannot show the "
             "persistent session (raise mqtt.reconnect_min_ms)")
        t_pub = time.monotonic()
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_connected") == 1, 30,
                 "the gateway to reconnect")
        out = gw.output()
        assert out.count("ingest: subscribed topics=") == 2, "no re-subscribe logged"
        assert "session_present=1" in out, "broker did not resume the session"
        both = merge_summaries([s1, s2])
        wait_received(env, gw, both["payloads_sent"])
        took = time.monotonic() - t_pub
        m = env.metrics(gw)
        assert m["sensegate_mqtt_reconnects_total"] == 1, m["sensegate_mqtt_reconnects_total"]
        assert m["sensegate_mqtt_session_lost_total"] == 0
        assert_identity(env, gw, both)
        stop_gateway(gw)
        truth = os.path.join(env.dir, "truth-both.jsonl")
        assert write_truth(truth, [s1, s2]) == both["rollups"]
        assert_verify(env, truth, sink)
        print(f"    run 2: {s2['payloads_sent']} payloads queued at the broker, all in "
              f"{took:.1f}s after publishing")
        ok = True
    finally:
        env.close(failed=not ok)


def test_spool_bound_while_backend_down():
    """spool.max_batches 5 with the sink down: the oldest batches are dropped
    and counted, the spool never exceeds its bounds, and after the sink is
    back exactly the dropped batches are missing."""
    env = Env("spoolbound")
    ok = False
    try:
        max_batches, max_bytes, per_batch = 5, 60000, 20
        broker = env.start_broker()
        sink = env.start_sink(port=stable_port())
        cfg = env.gateway_config(broker.port, sink.port, windows_ms=[2000],
                                 backend__max_batch_rollups=per_batch,
                                 spool__max_batches=max_batches, spool__max_bytes=max_bytes)
        gw = env.start_gateway(cfg)
        sim = env.start_sim(broker.port, "--sensors", "60", "--duration-s", "40", "--speedup", "5",
                            "--seed", "41", "--windows-ms", "2000", *FAULTS)
        scr = Scraper(env, gw)
        # The first batch reaches the sink (so its number is known), then it goes down.
        wait_for(lambda: sink_batches(sink), 30, "the first batch at the sink")
        sink.stop()
        wait_for(lambda: scr.sample()["sensegate_spool_dropped_batches_total"] > 0 and
                 not sim.alive(), 60,
                 "the simulator to finish and the spool to drop at its bound")
        summary = env.finish_sim(sim)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        sink = env.restart_sink(sink)
        wait_for(lambda: scr.sample()["sensegate_spool_batches"] == 0, 30,
                 "the spool to drain after the sink is back")
        for m in scr.samples:
            assert m["sensegate_spool_bytes"] <= max_bytes, m["sensegate_spool_bytes"]
            assert m["sensegate_spool_batches"] <= max_batches, m["sensegate_spool_batches"]
        assert max(m["sensegate_spool_batches"] for m in scr.samples) == max_batches
        stop_gateway(gw)
        st = final_stats(gw)
        db = sqlite3.connect(os.path.join(env.dir, "gateway-spool", "spool.db"))
        state = dict(db.execute("SELECT k, v FROM state").fetchall())
        db.close()
        dropped = state["dropped_total"]
        assert dropped == st["spool_dropped"] and dropped > 0, (state, st)
        assert st["spool_batches"] == 0 and state["batches"] == 0

        seqs = sorted(batch_seq(b["batch_id"]) for b in sink_batches(sink))
        assert len(seqs) == len(set(seqs))
        # accel_g windows (3 rollups, never split) must not push a batch
        # past max_batch_rollups: CI once saw batches of 21 here.
        sizes = [b["rollups"] for b in sink_batches(sink)]
        assert max(sizes) <= per_batch, f"batch sizes {sizes} over max_batch_rollups {per_batch}"
        gaps = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
        # A batch dropped from the spool while its POST is in flight is counted
        # as dropped and still delivered when that POST succeeds (forward.c
        # ignores SG_ENOTFOUND at ack): at most max_inflight (2) of them at a time.
        lost = len(gaps)
        assert lost <= dropped, f"{lost} batch numbers never delivered, only {dropped} dropped"
        assert dropped - lost <= 2 * 2, f"{dropped} dropped but only {lost} missing"
        code, out = env.verify(summary["truth"], sink.out, max_diffs=100000)
        d = verify_diffs(out)
        assert not (d["unexpected"] or d["duplicate"] or d["mismatch"] or d["malformed"]), \
            out[-3000:]
        received = len(read_jsonl(sink.out))
        missing = len(d["missing"])
        assert received + missing == summary["rollups"]
        assert received == st["rollups"] - missing, (received, st["rollups"], missing)
        assert lost <= missing <= lost * per_batch, (lost, missing)
        print(f"    {dropped} batches dropped ({lost} never delivered, {missing} rollups), "
              f"{len(seqs)} delivered ({received} rollups), {len(scr.samples)} scrapes "
              f"within bounds")
        ok = True
    finally:
        env.close(failed=not ok)


def test_unwritable_spool_dir():
    """spool.dir below a regular file: exit 1 at once, naming the path."""
    env = Env("unwritable")
    ok = False
    try:
        blocker = os.path.join(env.dir, "not-a-dir")
        with open(blocker, "w") as f:
            f.write("x\n")
        spool_dir = os.path.join(blocker, "spool")
        cfg = env.gateway_config(free_port(), free_port(), spool__dir=spool_dir)
        t0 = time.monotonic()
        r = subprocess.run([binary("sensegate"), "--config", cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        took = time.monotonic() - t0
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 1, f"exit code {r.returncode} (negative = signal):\n{err}"
        assert took < 5, f"took {took:.1f}s to give up"
        assert spool_dir in err, f"stderr does not name {spool_dir}:\n{err}"
        assert "Not a directory" in err or "ENOTDIR" in err, err
        assert "Sanitizer" not in err and "runtime error" not in err, err
        print(f"    exit 1 in {took:.2f}s: {[x for x in err.splitlines() if spool_dir in x][0]}")
        ok = True
    finally:
        env.close(failed=not ok)


def filter_rollups(src, prefix, dst):
    """Copies the rollup lines of sensors whose id starts with prefix."""
    n = 0
    with open(dst, "w") as out:
        for r in read_jsonl(src):
            if r["sensor_id"].startswith(prefix):
                out.write(json.dumps(r) + "\n")
                n += 1
    return n


def test_disk_full_tmpfs():
    """spool.dir on a 4 MiB tmpfs with the sink down until the disk is full:
    no crash, ingestion goes on, failed spool writes are counted (and every
    rollup lost is in a batch the log names as not stored), /healthz says so.
    When the sink is back the spooled batches are delivered, the spool drains
    and a second run published afterwards is delivered in full."""
    env = Env("diskfull")
    ok = False
    try:
        mnt = os.path.join(env.dir, "tmpfs")
        os.makedirs(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            print(f"SKIP test_disk_full_tmpfs: cannot mount a tmpfs: {r.stdout.decode().strip()}")
            ok = True
            return
        env.cleanups.append(lambda: subprocess.run(["umount", "-l", mnt], check=True))
        broker = env.start_broker()
        sink = env.start_sink(port=stable_port())
        cfg = env.gateway_config(broker.port, sink.port, windows_ms=[2000],
                                 backend__max_batch_rollups=50, shutdown_timeout_ms=5000,
                                 spool__dir=os.path.join(mnt, "spool"))
        gw = env.start_gateway(cfg)
        sink.stop()
        sim = env.start_sim(broker.port, "--sensors", "300", "--duration-s", "60", "--speedup",
                            "5", "--seed", "51", "--windows-ms", "2000", "--id-prefix", "r1.",
                            *FAULTS, tag="sim1")
        # A full disk shows as failed writes (or, for a spool that keeps
        # free space in reserve, as counted drops at its bound).
        wait_for(lambda: (not gw.alive() and env._died(gw)) or
                 env.metric(gw, "sensegate_spool_errors_total") > 0 or
                 env.metric(gw, "sensegate_spool_dropped_batches_total") > 0, 30,
                 "a failed spool write (or a counted drop) on the full disk")
        status, body = http_get(gw.metrics_port, "/healthz")
        health = json.loads(body)
        if env.metric(gw, "sensegate_spool_errors_total") > 0:
            assert health["spool_ok"] is False and health["status"] == "degraded", (status, body)
        s1 = env.finish_sim(sim)
        wait_received(env, gw, s1["payloads_sent"])
        assert gw.alive()
        assert_identity(env, gw, s1)
        m = env.metrics(gw)
        errors1, spooled = m["sensegate_spool_errors_total"], m["sensegate_spool_batches"]
        assert spooled > 0 and errors1 + m["sensegate_spool_dropped_batches_total"] > 0

        # The backend is back: what is spooled is delivered...
        sink = env.restart_sink(sink)
        wait_for(lambda: env.metric(gw, OK) >= spooled, 15,
                 f"the {int(spooled)} spooled batches to be delivered")
        # ...and acknowledged, which frees the spool (not a hard wait: see below).
        try:
            wait_for(lambda: env.metric(gw, "sensegate_spool_batches") == 0, 10,
                     "the spool to drain")
            drained = True
        except TimeoutError:
            drained = False
        m = env.metrics(gw)
        stuck = m["sensegate_spool_batches"]

        # A second run after the backend is back must be delivered in full.
        errors_before2 = m["sensegate_spool_errors_total"]
        s2 = env.run_sim(broker.port, "--sensors", "40", "--duration-s", "20", "--speedup", "20",
                         "--seed", "52", "--windows-ms", "2000", "--id-prefix", "r2.", *FAULTS,
                         tag="sim2")
        both = merge_summaries([s1, s2])
        wait_received(env, gw, both["payloads_sent"])
        assert_identity(env, gw, both)
        errors2 = env.metric(gw, "sensegate_spool_errors_total") - errors_before2
        stop_gateway(gw)
        st = final_stats(gw)

        # Every lost rollup is in a batch the gateway counted and named.
        not_stored = [int(ln.split(" (", 1)[1].split(" rollups)", 1)[0])
                      for ln in gw.output().splitlines() if "spool: cannot store batch " in ln]
        truth = os.path.join(env.dir, "truth-both.jsonl")
        write_truth(truth, [s1, s2])
        code, out = env.verify(truth, sink.out, max_diffs=100000)
        d = verify_diffs(out)
        assert not (d["unexpected"] or d["duplicate"] or d["mismatch"] or d["malformed"]), \
            out[-3000:]
        missing = len(d["missing"])
        if st["spool_dropped"] == 0:
            assert missing == sum(not_stored), \
                f"{missing} rollups missing, {sum(not_stored)} in batches logged as not stored"
        else:
            assert sum(not_stored) <= missing <= sum(not_stored) + 50 * st["spool_dropped"], \
                (missing, sum(not_stored), st["spool_dropped"])
        r2_file = os.path.join(env.dir, "received-r2.jsonl")
        got2 = filter_rollups(sink.out, "r2.", r2_file)
        print(f"    run 1: {int(errors1)} failed spool writes, {int(spooled)} batches kept and "
              f"delivered; spool after the sink came back: {int(stuck)} batch(es)")
        print(f"    run 2 (after the sink was back): {got2} of {s2['rollups']} rollups "
              f"delivered, {int(errors2)} more failed spool writes; {missing} rollups lost "
              f"in total, all in {len(not_stored)} batches logged 'cannot store batch'")
        code2, out2 = env.verify(s2["truth"], r2_file)
        assert drained and code2 == 0, (
            "GATEWAY BUG (spool on a full disk never recovers): after the backend came back "
            f"the {int(spooled)} spooled batches were delivered but the spool still holds "
            f"{int(stuck)} (acks fail: "
            f"{[ln for ln in gw.output().splitlines() if 'spool ack failed' in ln][:1]}), and "
            f"run 2 lost {s2['rollups'] - got2} of {s2['rollups']} rollups to "
            f"{int(errors2)} failed spool writes. verify run 2: {out2.strip()[-300:]}")
        ok = True
    finally:
        env.close(failed=not ok)


def test_sigterm_mid_window_partial():
    """SIGTERM while windows are open: they are delivered as partial, the
    gateway exits 0, and the sink matches the truth."""
    env = Env("sigterm")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port)
        gw = env.start_gateway(cfg)
        summary = env.run_sim(broker.port, "--sensors", "80", "--duration-s", "35", "--speedup",
                              "20", "--seed", "61", *FAULTS)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        m = env.metrics(gw)
        assert m["sensegate_open_windows"] > 0, "no window open: nothing to cut short"
        assert not any(r.get("partial") for r in read_jsonl(sink.out))
        took = stop_gateway(gw)
        partial = [r for r in read_jsonl(sink.out) if r.get("partial") is True]
        assert partial, "no partial rollup at the sink"
        out = gw.output()
        assert "emitted" in out and "partial window(s)" in out
        assert "stopped cleanly" in out
        assert_verify(env, summary["truth"], sink)
        print(f"    exit 0 in {took:.2f}s; {len(partial)} partial rollups "
              f"({int(m['sensegate_open_windows'])} windows were open)")
        ok = True
    finally:
        env.close(failed=not ok)


def test_sighup_good_and_bad_config():
    """SIGHUP with a good file (stats_interval_s 2 -> 1: takes effect) and
    with a bad one (unknown key: logged with file:line:key, old config
    kept); the gateway keeps running, healthy and counting, no restart."""
    env = Env("sighup")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, stats_interval_s=2)
        gw = env.start_gateway(cfg)
        sim = env.start_sim(broker.port, "--sensors", "60", "--duration-s", "60", "--speedup", "8",
                            "--seed", "71", *FAULTS)
        text = open(cfg).read()

        def stats_times(after):
            return [log_time_ms(ln) for ln in gw.output()[after:].splitlines()
                    if " stats: stats " in ln]

        # Good: stats every second from now on.
        with open(cfg, "w") as f:
            f.write(text.replace("stats_interval_s: 2", "stats_interval_s: 1"))
        gw.send(signal.SIGHUP)
        pos = wait_log(gw, "config: SIGHUP: reloaded " + cfg, 10)
        wait_for(lambda: len(stats_times(pos)) >= 4, 10, "four stats lines after the reload")
        t = stats_times(pos)
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert all(900 <= g < 1900 for g in gaps), f"stats gaps after reload: {gaps} ms"

        # Bad: an unknown key on a known line, and stats_interval_s 3.
        bad = text.replace("stats_interval_s: 2", "stats_interval_s: 3") + "bogus_key: 1\n"
        line = bad.splitlines().index("bogus_key: 1") + 1
        with open(cfg, "w") as f:
            f.write(bad)
        msgs = env.metric(gw, "sensegate_mqtt_messages_total")
        gw.send(signal.SIGHUP)
        pos = wait_log(gw, "config: SIGHUP: keeping the running configuration: ", 10)
        err_line = gw.output()[pos:].splitlines()[0]
        assert f"{cfg}:{line}:" in err_line and "bogus_key" in err_line, err_line
        assert http_get(gw.metrics_port, "/healthz")[0] == 200
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total") > msgs, 10,
                 "messages still counted after the bad reload")
        wait_for(lambda: len(stats_times(pos)) >= 4, 10, "four stats lines after the bad reload")
        t = stats_times(pos)
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert all(900 <= g < 1900 for g in gaps), f"old interval not kept: {gaps} ms"

        summary = env.finish_sim(sim)
        wait_received(env, gw, summary["payloads_sent"])
        assert_identity(env, gw, summary)
        assert gw.alive()
        out = gw.output()
        assert out.count(" started gateway_id=") == 1, "the gateway restarted"
        assert env.metric(gw, "sensegate_mqtt_reconnects_total") == 0
        stop_gateway(gw)
        assert_verify(env, summary["truth"], sink)
        print(f"    bad reload refused: {err_line[:100]}")
        ok = True
    finally:
        env.close(failed=not ok)


TESTS = [test_backend_refused_then_back, test_503_retry_after_honoured,
         test_400_one_batch_dead_lettered, test_broker_restart_persistent_session,
         test_spool_bound_while_backend_down, test_unwritable_spool_dir, test_disk_full_tmpfs,
         test_sigterm_mid_window_partial, test_sighup_good_and_bad_config]

if __name__ == "__main__":
    only = set(sys.argv[1:])
    r = Runner()
    t0 = time.monotonic()
    for t in TESTS:
        if not only or t.__name__ in only:
            r.run(t)
    print(f"total {time.monotonic() - t0:.1f}s")
    r.finish()

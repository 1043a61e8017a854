#!/usr/bin/env python3
"""Integration test of sensegate-sink (the simulated backend) and its verifier.

Runs the real binary ($SG_BUILD_DIR/simulator/sensegate-sink) on port 0, reads
the port from --port-file, and checks auth, dedup, conflicts, validation, every
failure mode, /_stats, restart dedup, SIGTERM, and `sensegate-sink verify`
against hand-made truth/received files. Python 3 stdlib only; no fixed sleeps,
only polls with deadlines. Prints 'N passed, M failed'; exits 1 on any failure.
"""
import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("SG_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
SINK = os.path.join(BUILD, "simulator", "sensegate-sink")

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}" + (f": {detail}" if detail else ""), flush=True)


class Sink:
    """One sensegate-sink process; always stopped by stop()."""

    def __init__(self, tmp, name, *extra):
        self.tmp = tmp
        self.name = name
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log_path = os.path.join(tmp, f"{name}.log")
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.log = open(self.log_path, "ab")
        args = [SINK, "--listen", "127.0.0.1:0", "--port-file", self.port_file, *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        self.port = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.port_file):
                self.port = int(open(self.port_file).read().strip())
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"sink {name} did not write its port file; log:\n{self.dump()}")

    def dump(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, timeout=10):
        """Returns (status, headers dict lower-case, body bytes); raises on network errors."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if body is None or isinstance(body, bytes) else body.encode()
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stats(self):
        status, _, body = self.request("GET", "/_stats")
        assert status == 200, status
        return json.loads(body)

    def control(self, **kw):
        status, _, body = self.request("POST", "/_control", json.dumps(kw),
                                       {"Content-Type": "application/json"})
        return status, body

    def terminate(self, timeout=10):
        """SIGTERM; returns the exit code or None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def rollup(sensor="aq-1", kind="PM2_5_UGM3", channel=0, start=1_700_000_000_000, window=10_000,
           **over):
    r = {"sensor_id": sensor, "kind": kind, "channel": channel, "window_start_ms": start,
         "window_ms": window, "count": 5, "min": 1.25, "max": 9.5, "sum": 21.75, "mean": 4.35,
         "stddev": 3.0184432, "rms": 5.2, "first_ts_ms": start + 10,
         "last_ts_ms": start + 9000, "last": 9.5, "p50": 3.0, "p95": 9.5, "p99": 9.5,
         "gaps": 0, "duplicates": 1, "faulty": 0, "late": 0, "partial": False}
    r.update(over)
    return r


def batch(seq, rollups, gw="gw-t", sent=1_700_000_100_000):
    return {"gateway_id": gw, "batch_id": f"{gw}:{seq:020d}", "sent_at_ms": sent,
            "rollups": rollups}


def post(sink, b, token="tok-123", key=None, ctype="application/json", timeout=10, raw=None):
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    k = key if key is not None else (b or {}).get("batch_id")
    if k is not None:
        headers["Idempotency-Key"] = k
    body = raw if raw is not None else json.dumps(b)
    return sink.request("POST", "/v1/rollups", body, headers, timeout=timeout)


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def wait_for(cond, timeout=10, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def test_backend(tmp):
    out = os.path.join(tmp, "rollups.jsonl")
    bout = os.path.join(tmp, "batches.jsonl")
    tokf = os.path.join(tmp, "token")
    with open(tokf, "w") as f:
        f.write("tok-123\n")
    sink = Sink(tmp, "main", "--out", out, "--batches-out", bout, "--token-file", tokf)
    try:
        status, _, body = sink.request("GET", "/healthz")
        check("healthz 200", status == 200, status)

        b1 = batch(1, [rollup(), rollup(sensor="acc-7", kind="ACCEL_G", channel=2)])
        # Authorization.
        status, hdrs, _ = post(sink, b1, token=None)
        check("no token -> 401", status == 401, status)
        check("401 has WWW-Authenticate", hdrs.get("www-authenticate") == "Bearer", hdrs)
        status, _, _ = post(sink, b1, token="tok-1234")
        check("wrong token -> 401", status == 401, status)
        status, _, _ = post(sink, b1, token="tok-12")
        check("token prefix -> 401", status == 401, status)
        check("nothing recorded while unauthorized", read_lines(out) == [])

        # Accepted batch.
        status, _, body = post(sink, b1)
        check("good batch -> 200", status == 200, (status, body))
        check("good batch body ok:true", json.loads(body).get("ok") is True, body)
        lines = read_lines(out)
        check("2 rollup lines appended", len(lines) == 2, lines)
        expect0 = dict(b1["rollups"][0], batch_id=b1["batch_id"])
        check("rollup line = sent rollup + batch_id", lines and lines[0] == expect0,
              (lines[:1], expect0))
        blines = read_lines(bout)
        check("one batch line", len(blines) == 1, blines)
        if blines:
            check("batch line fields", blines[0]["batch_id"] == b1["batch_id"]
                  and blines[0]["rollups"] == 2 and isinstance(blines[0]["received_ms"], int),
                  blines[0])

        # Duplicate: same batch_id and body, also with another sent_at_ms.
        status, _, body = post(sink, b1)
        check("repeat -> 200", status == 200, (status, body))
        b1_resent = dict(b1, sent_at_ms=b1["sent_at_ms"] + 5000)
        status, _, body = post(sink, b1_resent)
        check("repeat with new sent_at_ms -> 200", status == 200, (status, body))
        check("repeat not appended", len(read_lines(out)) == 2 and len(read_lines(bout)) == 1)

        # Conflict: same batch_id, different rollups.
        b1_changed = copy.deepcopy(b1)
        b1_changed["rollups"][0]["count"] = 6
        status, _, body = post(sink, b1_changed)
        check("same batch_id, other body -> 422", status == 422, (status, body))
        check("conflict not appended", len(read_lines(out)) == 2)

        # Validation.
        b2 = batch(2, [rollup(start=1_700_000_010_000)])
        status, _, _ = post(sink, b2, key="gw-t:00000000000000000099")
        check("Idempotency-Key != batch_id -> 400", status == 400, status)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer tok-123"}
        status, _, _ = sink.request("POST", "/v1/rollups", json.dumps(b2), headers)
        check("no Idempotency-Key -> 400", status == 400, status)
        status, _, _ = post(sink, b2, raw='{"gateway_id": "gw-t", "batch_id": ')
        check("malformed JSON -> 400", status == 400, status)
        status, _, _ = post(sink, {k: v for k, v in b2.items() if k != "rollups"})
        check("no rollups -> 400", status == 400, status)
        status, _, _ = post(sink, dict(b2, rollups=[{"sensor_id": "x"}]))
        check("rollup without key fields -> 400", status == 400, status)
        status, _, _ = post(sink, b2, ctype="application/x-protobuf")
        check("protobuf -> 415", status == 415, status)
        status, _, _ = post(sink, b2, ctype="text/plain")
        check("text/plain -> 415", status == 415, status)
        status, _, _ = post(sink, b2, ctype="application/json; charset=utf-8")
        check("json with charset -> 200", status == 200, status)
        status, _, _ = sink.request("GET", "/v1/rollups")
        check("GET /v1/rollups -> 405", status == 405, status)
        status, _, _ = sink.request("GET", "/nope")
        check("unknown path -> 404", status == 404, status)
        check("3 rollups recorded so far", len(read_lines(out)) == 3)

        # Failure modes: 503 twice with Retry-After, then ok. Not recorded meanwhile.
        b3 = batch(3, [rollup(start=1_700_000_020_000)])
        status, _ = sink.control(mode="503", count=2, retry_after="2")
        check("control 503 -> 200", status == 200, status)
        for i in range(2):
            status, hdrs, _ = post(sink, b3)
            check(f"503 mode request {i}", status == 503, status)
            check(f"503 Retry-After {i}", hdrs.get("retry-after") == "2", hdrs)
        check("503 not recorded", len(read_lines(out)) == 3)
        status, _, _ = post(sink, b3)
        check("after count, back to ok", status == 200, status)
        check("b3 recorded once", len(read_lines(out)) == 4)

        b4 = batch(4, [rollup(start=1_700_000_030_000)])
        for mode, code in (("429", 429), ("500", 500), ("400", 400)):
            sink.control(mode=mode, count=1, retry_after="7")
            status, hdrs, _ = post(sink, b4)
            check(f"mode {mode} -> {code}", status == code, status)
            if mode == "429":
                check("429 Retry-After", hdrs.get("retry-after") == "7", hdrs)

        sink.control(mode="close", count=1)
        try:
            post(sink, b4)
            closed = False
        except (ConnectionError, http.client.HTTPException, OSError):
            closed = True
        check("mode close drops the connection", closed)

        sink.control(mode="hang", count=1)
        t0 = time.monotonic()
        try:
            post(sink, b4, timeout=1.0)
            hung = False
        except (socket.timeout, TimeoutError):
            hung = True
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            hung = isinstance(e, TimeoutError)
        check("mode hang never answers", hung and time.monotonic() - t0 >= 0.9)
        check("nothing recorded by failure modes", len(read_lines(out)) == 4)

        sink.control(mode="slow", count=1, slow_ms=300)
        t0 = time.monotonic()
        status, _, _ = post(sink, b4)
        took = time.monotonic() - t0
        check("slow -> 200", status == 200, status)
        check("slow waited >= 300 ms", took >= 0.29, took)
        check("slow batch recorded", len(read_lines(out)) == 5)

        # for_ms: a duration instead of a count.
        b5 = batch(5, [rollup(start=1_700_000_040_000)])
        sink.control(mode="503", for_ms=300)
        status, _, _ = post(sink, b5)
        check("for_ms 503 first request", status == 503, status)
        check("for_ms returns to ok", wait_for(lambda: post(sink, b5)[0] == 200, timeout=5))
        status, _ = sink.control(mode="bogus")
        check("control bad mode -> 400", status == 400, status)
        status, _ = sink.control(mode="503", count=-1)
        check("control negative count -> 400", status == 400, status)

        st = sink.stats()
        expect = {"batches": 5, "rollups": 6, "conflicts": 1, "unauthorized": 3,
                  "bad_requests": 7, "duplicate_batches": 2}
        for k, v in expect.items():
            check(f"stats {k} == {v}", st.get(k) == v, st)
        fbm = st.get("failed_by_mode", {})
        check("stats failed_by_mode", fbm.get("503", 0) >= 3 and fbm.get("429") == 1
              and fbm.get("500") == 1 and fbm.get("400") == 1 and fbm.get("close") == 1
              and fbm.get("hang") == 1, fbm)
        check("stats requests counts every POST", st.get("requests", 0) >= 27, st)
        check("stats mode back to ok", st.get("mode") == "ok", st)

        # A hanging request must not stop SIGTERM.
        sink.control(mode="hang")
        hung_conn = socket.create_connection(("127.0.0.1", sink.port))
        req = json.dumps(b5).encode()
        hung_conn.sendall(b"POST /v1/rollups HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/json\r\nContent-Length: " + str(len(req)).encode()
                          + b"\r\n\r\n" + req)
        check("hang in flight", wait_for(
            lambda: sink.stats()["failed_by_mode"]["hang"] == 2, timeout=5))
        t0 = time.monotonic()
        rc = sink.terminate(timeout=10)
        hung_conn.close()
        check("SIGTERM exits 0", rc == 0, rc)
        check("SIGTERM exits promptly with a hung request", time.monotonic() - t0 < 5)
    finally:
        sink.stop()
        if failed:
            print(sink.dump())

    # A restarted sink keeps dropping repeats of batches it recorded before.
    sink = Sink(tmp, "restart", "--out", out, "--batches-out", bout, "--token", "tok-123")
    try:
        status, _, _ = post(sink, b1)
        check("restart: old batch -> 200", status == 200, status)
        check("restart: old batch counted duplicate", sink.stats()["duplicate_batches"] == 1)
        status, _, _ = post(sink, b1_changed)
        check("restart: old batch_id with other body -> 422", status == 422, status)
        check("restart: nothing appended", len(read_lines(out)) == 6)
    finally:
        sink.stop()


def test_start_flags(tmp):
    # --fail-503-ms: 503 at first, then ok.
    sink = Sink(tmp, "f503", "--fail-503-ms", "400", "--retry-after", "1")
    try:
        b = batch(1, [rollup()])
        status, hdrs, _ = post(sink, b, token=None)
        check("--fail-503-ms first request 503", status == 503, status)
        check("--retry-after sent", hdrs.get("retry-after") == "1", hdrs)
        check("--fail-503-ms ends", wait_for(lambda: post(sink, b, token=None)[0] == 200, 5))
    finally:
        sink.stop()

    # --fail-rate: about that share of 503s, reproducible with --seed; only 200s recorded.
    results = []
    for run in range(2):
        out = os.path.join(tmp, f"rate{run}.jsonl")
        sink = Sink(tmp, f"rate{run}", "--fail-rate", "0.5", "--seed", "7", "--out", out)
        try:
            codes = [post(sink, batch(i, [rollup(start=i * 10_000)]), token=None)[0]
                     for i in range(60)]
            results.append(codes)
            ok = codes.count(200)
            check("--fail-rate only 200 and 503", set(codes) <= {200, 503}, set(codes))
            check("--fail-rate roughly half fail", 10 <= ok <= 50, ok)
            check("--fail-rate: recorded == 200s", len(read_lines(out)) == ok)
            st = sink.stats()
            check("--fail-rate 503s counted", st["failed_by_mode"]["503"] == 60 - ok, st)
        finally:
            sink.stop()
    check("--seed reproducible", results[0] == results[1])

    # --slow-ms
    sink = Sink(tmp, "slow", "--slow-ms", "200")
    try:
        t0 = time.monotonic()
        status, _, _ = post(sink, batch(1, [rollup()]), token=None)
        check("--slow-ms 200 and delayed", status == 200 and time.monotonic() - t0 >= 0.19)
    finally:
        sink.stop()

    r = subprocess.run([SINK, "--fail-rate", "2"], capture_output=True, timeout=10)
    check("bad --fail-rate exits 2", r.returncode == 2, r)
    r = subprocess.run([SINK, "--listen", "nohost"], capture_output=True, timeout=10)
    check("bad --listen exits 2", r.returncode == 2, r)


# ---- verifier ----------------------------------------------------------

def truth_rows():
    rows = []
    for i in range(3):
        rows.append(rollup(sensor=f"aq-{i}", start=1_700_000_000_000 + i * 10_000))
    for ch in range(3):
        rows.append(rollup(sensor="acc-1", kind="ACCEL_G", channel=ch, p50=0.0, min=-1.0,
                           sum=1000.0, mean=200.0, stddev=2.0, p95=100.0))
    return rows


def write_truth(path, rows):
    with open(path, "w") as f:
        f.write(json.dumps({"type": "summary", "readings": 123, "seed": 1}) + "\n")
        for r in rows:
            t = {k: v for k, v in r.items() if k != "partial"}
            f.write(json.dumps(dict(t, type="rollup")) + "\n")


def write_received(path, rows, batch_id="gw-t:00000000000000000001", extra_lines=()):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(dict(r, batch_id=batch_id)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def verify(tmp, truth, received, *extra):
    r = subprocess.run([SINK, "verify", "--truth", truth, "--received", received, *extra],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_verify(tmp):
    rows = truth_rows()
    truth = os.path.join(tmp, "truth.jsonl")
    recv = os.path.join(tmp, "recv.jsonl")
    write_truth(truth, rows)

    got = copy.deepcopy(rows)
    got[0]["partial"] = True
    write_received(recv, got)
    rc, out, err = verify(tmp, truth, recv)
    check("verify match exit 0", rc == 0, (rc, out, err))
    check("verify match message", "verify: all 6 rollups match (1 partial)" in out, out)

    # Values within tolerance still match.
    got = copy.deepcopy(rows)
    got[3]["sum"] = 1000.0 * (1 + 5e-10)
    got[3]["stddev"] = 2.0 * (1 + 5e-7)
    got[3]["p95"] = 100.9
    got[4]["mean"] = 200.0 * (1 - 5e-10)
    write_received(recv, got)
    rc, out, _ = verify(tmp, truth, recv)
    check("verify within tolerance exit 0", rc == 0, out)

    def expect_diff(name, mutate, needle, count=1, extra_lines=()):
        g = copy.deepcopy(rows)
        mutate(g)
        write_received(recv, g, extra_lines=extra_lines)
        rc, out, err = verify(tmp, truth, recv)
        check(f"verify {name}: exit 1", rc == 1, (rc, out, err))
        check(f"verify {name}: reported", needle in out, out)
        check(f"verify {name}: summary",
              f"verify: {count} differences in 6 expected rollups" in out, out)

    expect_diff("missing", lambda g: g.pop(1), "missing: sensor=aq-1 kind=PM2_5_UGM3 channel=0")
    expect_diff("unexpected", lambda g: g.append(rollup(sensor="zz-9")), "unexpected: sensor=zz-9")
    expect_diff("duplicate", lambda g: g.append(copy.deepcopy(g[2])),
                "duplicate delivery: sensor=aq-2")
    expect_diff("count", lambda g: g[0].update(count=6), "count: expected 5, got 6")
    expect_diff("min exact", lambda g: g[3].update(min=-1.0000000001), "min: expected -1")
    expect_diff("last_ts_ms", lambda g: g[0].update(last_ts_ms=1), "last_ts_ms: expected")
    expect_diff("gaps", lambda g: g[0].update(gaps=2), "gaps: expected 0, got 2")
    expect_diff("late", lambda g: g[5].update(late=1), "late: expected 0, got 1")
    expect_diff("sum rel 1e-9", lambda g: g[3].update(sum=1000.0 * (1 + 1e-8)), " sum: expected")
    expect_diff("stddev rel 1e-6", lambda g: g[3].update(stddev=2.0 * (1 + 5e-6)), "stddev:")
    expect_diff("p95 over 1 %", lambda g: g[3].update(p95=101.5), "p95: expected 100")
    expect_diff("p50 exact 0", lambda g: g[3].update(p50=1e-9), "p50: expected 0")
    expect_diff("field missing", lambda g: g[1].pop("rms"), "rms: expected a number, missing")
    expect_diff("channel key", lambda g: g[5].update(channel=3), "unexpected: sensor=acc-1", 2)
    expect_diff("torn line", lambda g: None, "malformed:",
                extra_lines=['{"sensor_id": "aq-0", "kind'])

    # Lines the fast parser hands to jansson (escapes, nesting, 5.0 for 5)
    # still compare the same way.
    g = copy.deepcopy(rows)
    g[0]["meta"] = {"nested": [1, 2]}
    g[1]["count"] = 5.0
    write_received(recv, g)
    with open(recv) as f:
        text = f.read().replace('"aq-2"', '"aq\\u002d2"')
    with open(recv, "w") as f:
        f.write(text)
    rc, out, _ = verify(tmp, truth, recv)
    check("verify parses escapes and nesting", rc == 0, out)
    g[1]["count"] = 5.5
    write_received(recv, g)
    rc, out, _ = verify(tmp, truth, recv)
    check("verify: non-integral count is a difference", rc == 1 and "count: expected an integer"
          in out, out)

    # --max-diffs: print 2, count the rest.
    g = copy.deepcopy(rows)
    for r in g:
        r["count"] = 99
    write_received(recv, g)
    rc, out, _ = verify(tmp, truth, recv, "--max-diffs", "2")
    check("max-diffs exit 1", rc == 1)
    check("max-diffs prints 2", out.count("mismatch:") == 2, out)
    check("max-diffs says 4 more", "4 more differences not shown" in out, out)
    check("max-diffs total 6", "verify: 6 differences in 6 expected rollups" in out, out)

    # Broken inputs exit 2.
    rc, _, err = verify(tmp, truth, os.path.join(tmp, "nonexistent"))
    check("missing received file exits 2", rc == 2, (rc, err))
    bad_truth = os.path.join(tmp, "bad_truth.jsonl")
    with open(bad_truth, "w") as f:
        f.write('{"type":"summary"}\n{"type":"rollup","sensor_id":"x"}\n')
    rc, _, err = verify(tmp, bad_truth, recv)
    check("bad truth exits 2 naming line 2", rc == 2 and "bad_truth.jsonl:2" in err, (rc, err))
    r = subprocess.run([SINK, "verify", "--truth", truth], capture_output=True, timeout=10)
    check("verify usage exits 2", r.returncode == 2, r)


def test_sink_to_verify(tmp):
    """Rollups posted through the sink verify against the same truth."""
    rows = truth_rows()
    truth = os.path.join(tmp, "e2e_truth.jsonl")
    out = os.path.join(tmp, "e2e_rollups.jsonl")
    write_truth(truth, rows)
    sink = Sink(tmp, "e2e", "--out", out)
    try:
        b1 = batch(1, rows[:4])
        b2 = batch(2, rows[4:])
        for b in (b1, b2, b1):
            post(sink, b, token=None)
    finally:
        sink.stop()
    rc, stdout, _ = verify(tmp, truth, out)
    check("sink output verifies", rc == 0 and "all 6 rollups match (0 partial)" in stdout, stdout)


def main():
    if not os.access(SINK, os.X_OK):
        print(f"FAIL: {SINK} not built")
        return 1
    with tempfile.TemporaryDirectory(prefix="sg-sink-") as tmp:
        for t in (test_backend, test_start_flags, test_verify, test_sink_to_verify):
            try:
                t(tmp)
            except Exception as e:  # a crash in one part is a failure, the rest still runs
                check(f"{t.__name__} raised", False, repr(e))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

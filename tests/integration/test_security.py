"""The operator surface and secrets (issue 5, items 5-6).

- The backend bearer token (from backend.token_file or SENSEGATE_BACKEND_TOKEN)
  never appears in the gateway's log (at log level debug, also while the
  backend answers 401), in /metrics or /healthz, or on its command line; a
  token file readable by group/others is warned about.
- The gateway refuses to start as root unless allow_root: true or
  --allow-root (checked when the test runs as root, as CI does).
- Malformed HTTP to the metrics port (garbage, a huge header, wrong methods,
  HTTP/0.9, a slowloris-style partial request) gets a 4xx or is closed, never
  crashes the gateway, and /metrics keeps answering.
- Binding /metrics to a non-loopback address is logged (run in a private
  network namespace, so nothing is exposed on a real interface).
"""
import os
import shutil
import socket
import subprocess
import time

from harness import Env, Proc, Runner, binary, http_get, wait_for, wait_log

TOKEN_RIGHT = "tok-RIGHT-9f3c1e7a5b2d4c6e8f0a1b3c5d7e9f11"
TOKEN_WRONG = "tok-WRONG-0a2b4c6d8e0f1a3b5c7d9e1f3a5b7c99"


def leaked(env, gw, *tokens):
    """Every place a token must never show up, joined: log, /metrics, /healthz,
    /proc/<pid>/cmdline."""
    parts = [gw.output(), http_get(gw.metrics_port, "/metrics")[1],
             http_get(gw.metrics_port, "/healthz")[1]]
    try:
        with open(f"/proc/{gw.pid}/cmdline", "rb") as f:
            parts.append(f.read().decode(errors="replace"))
    except OSError:
        pass
    text = "\n".join(parts)
    return [t for t in tokens if t in text]


def test_token_never_logged():
    env = Env("sec-token")
    ok = False
    try:
        broker = env.start_broker()
        tf = os.path.join(env.dir, "sink-token")
        with open(tf, "w") as f:
            f.write(TOKEN_RIGHT + "\n")
        sink = env.start_sink("--token-file", tf)

        # 1. Wrong token from a group/world-readable file, debug logging: 401s.
        bad = os.path.join(env.dir, "gw-token")
        with open(bad, "w") as f:
            f.write(TOKEN_WRONG + "\n")
        os.chmod(bad, 0o644)
        cfg = env.gateway_config(broker.port, sink.port, tag="gw-wrong", allow_root=True,
                                 backend__token_file=bad, log__level="debug")
        gw = env.start_gateway(cfg, tag="gw-wrong")
        wait_log(gw, "readable by group or others", 5)
        env.run_sim(broker.port, "--sensors", "10", "--duration-s", "20", "--speedup", "20")
        wait_for(lambda: env.metric(gw, 'sensegate_forward_batches_total{result="rejected"}')
                 >= 1, 30, "a batch rejected with 401")
        assert env.sink_stats(sink)["unauthorized"] >= 1
        assert "status=401" in gw.output(), gw.output()[-3000:]
        assert not leaked(env, gw, TOKEN_WRONG, TOKEN_RIGHT), "token leaked"
        assert gw.stop(timeout=30) == 0
        assert not [t for t in (TOKEN_WRONG, TOKEN_RIGHT) if t in gw.output()]

        # 2. Right token from the environment: delivered, still never shown.
        cfg = env.gateway_config(broker.port, sink.port, tag="gw-env", allow_root=True,
                                 log__level="debug")
        gw = env.start_gateway(cfg, tag="gw-env", env={"SENSEGATE_BACKEND_TOKEN": TOKEN_RIGHT})
        env.run_sim(broker.port, "--sensors", "10", "--duration-s", "20", "--speedup", "20",
                    "--seed", "4", tag="sim2")
        wait_for(lambda: env.metric(gw, 'sensegate_forward_batches_total{result="ok"}') >= 1,
                 30, "a batch delivered with the right token")
        assert not leaked(env, gw, TOKEN_WRONG, TOKEN_RIGHT), "token leaked"
        assert gw.stop(timeout=30) == 0
        assert TOKEN_RIGHT not in gw.output()
        ok = True
    finally:
        env.close(failed=not ok)


def test_root_refused_unless_allowed():
    if os.geteuid() != 0:
        print("(not root: the refusal itself is not exercised here)")
        return
    env = Env("sec-root")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, tag="gw-root", allow_root=False)
        r = subprocess.run([binary("sensegate"), "--config", cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = r.stdout.decode()
        assert r.returncode == 1, (r.returncode, out)
        assert "refusing to run as root" in out and "allow_root: true" in out, out
        assert not os.path.exists(os.path.join(env.dir, "gw-root-spool")), "spool touched"
        # --allow-root overrides the file.
        p = Proc("gw-root-flag", [binary("sensegate"), "--config", cfg, "--allow-root"],
                 os.path.join(env.dir, "gw-root-flag.log"))
        env.procs.append(p)
        wait_log(p, "running as root", 10)
        wait_log(p, "started gateway_id=", 15)
        port_file = os.path.join(env.dir, "gw-root.metrics-port")
        wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), 15,
                 "metrics port")
        p.metrics_port = int(open(port_file).read().strip())
        env.wait_healthy(p)
        assert p.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


def raw_request(port, data, read_timeout=5.0):
    """Sends data, returns the status code of the answer (0 if the server
    closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if buf.startswith(b"HTTP/1."):
        return int(buf.split(b" ", 2)[1])
    return 0


def test_malformed_http_to_metrics():
    env = Env("sec-http")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, allow_root=True)
        gw = env.start_gateway(cfg)
        port = gw.metrics_port
        cases = {
            "garbage": b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
            "no version": b"GET\r\n\r\n",
            "bad version": b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
            "huge header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"A" * 65536 +
                           b"\r\n\r\n",
            "many headers": b"GET /metrics HTTP/1.1\r\nHost: x\r\n" +
                            b"".join(b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\n",
            "huge url": b"GET /" + b"m" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "post": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "delete": b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "brew": b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            "traversal": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
            "bad content-length": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            "chunked garbage": b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                               b"\r\n\r\nZZZ\r\n",
            "nul in path": b"GET /met\x00rics HTTP/1.1\r\nHost: x\r\n\r\n",
        }
        for name, data in cases.items():
            status = raw_request(port, data)
            # 505 is the standard answer to an unknown HTTP version; 0 means
            # libmicrohttpd closed a request line it could not parse at all.
            assert status in (0, 505) or 400 <= status <= 499, f"{name}: status {status}"
            assert gw.alive(), f"gateway died on {name}:\n{gw.output()[-3000:]}"
            print(f"  {name}: {status or 'closed'}")
        # libmicrohttpd is lenient here (HTTP/1.1 without Host is answered);
        # harmless for a read-only endpoint, and it must not hurt either.
        assert raw_request(port, b"GET /metrics HTTP/1.1\r\n\r\n") in (200, 400)
        assert raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == 200

        # Slowloris: partial requests are held open, but the endpoint keeps
        # serving, and they are closed by the server's timeout (10 s).
        slow = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        t0 = time.monotonic()
        assert http_get(port, "/metrics")[0] == 200
        for s in slow:
            s.settimeout(max(1.0, 25 - (time.monotonic() - t0)))
            try:
                data = s.recv(4096)
            except (ConnectionResetError, socket.timeout) as e:
                data = str(e).encode()
            assert data == b"" or data.startswith(b"HTTP/1.1 4") or b"reset" in data, data
            s.close()
        assert time.monotonic() - t0 < 25, "partial requests were not timed out"
        assert gw.alive()
        assert http_get(port, "/metrics")[0] == 200
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


def test_non_loopback_metrics_bind_is_logged():
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        print("(needs root and unshare for a private network namespace; not exercised)")
        return
    env = Env("sec-bind")
    ok = False
    try:
        # Broker and sink are not needed: the gateway keeps retrying MQTT.
        cfg = env.gateway_config(1, 1, allow_root=True, metrics__listen="0.0.0.0:0")
        p = Proc("gw-bind", [unshare, "-n", "--", binary("sensegate"), "--config", cfg],
                 os.path.join(env.dir, "gw-bind.log"))
        env.procs.append(p)
        wait_log(p, "non-loopback address", 15)
        assert "listen=0.0.0.0:0" in p.output()
        # Signal handlers are installed at the end of start-up.
        wait_log(p, "started gateway_id=", 15)
        assert p.stop(timeout=30) == 0
        # And the default stays quiet about it.
        cfg = env.gateway_config(1, 1, tag="gw-lo", allow_root=True)
        p = Proc("gw-lo", [unshare, "-n", "--", binary("sensegate"), "--config", cfg],
                 os.path.join(env.dir, "gw-lo.log"))
        env.procs.append(p)
        wait_log(p, "listening addr=127.0.0.1", 15)
        wait_log(p, "started gateway_id=", 15)
        assert "non-loopback" not in p.output()
        assert p.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    r = Runner()
    for t in (test_token_never_logged, test_root_refused_unless_allowed,
              test_malformed_http_to_metrics, test_non_loopback_metrics_bind_is_logged):
        r.run(t)
    r.finish()

"""TLS and authentication on both sides of the gateway (issue 5, items 4-5).

A real mosquitto with several listeners on 127.0.0.1, and certificates made
here with the openssl CLI (a CA, a server certificate for 127.0.0.1 and
localhost by subjectAltName, a client certificate, a second "wrong" CA, and a
server certificate for another host name signed by the right CA):

  plain    anonymous, no TLS: only the simulator publishes here (it has no
           TLS options); the broker routes its messages to the TLS clients
  tls      TLS, password_file (mosquitto_passwd), no anonymous clients
  mtls     TLS with require_certificate (mutual TLS)
  badname  TLS with a certificate for wrong.example (right CA)

Pass criteria: readings flow end to end over TLS + password to the broker
and HTTPS (sensegate-sink --tls-cert) to the backend, and every rollup
matches ground truth; mutual TLS works with the client certificate and is
refused without it; a wrong CA, a host name mismatch and a wrong password
are refused with a log line that says so, /healthz stays 503, and nothing is
delivered; a wrong backend CA delivers nothing and says why.
"""
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request

from harness import (SKIP, Env, Runner, find_mosquitto, free_port, wait_for, wait_log, http_get,
                     tcp_open, Proc)


# ---------------------------------------------------------------------------
# PKI (openssl CLI)

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stdout.decode()}")


def _ca(d, name, cn):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d, name, ca, cn, ext):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def make_pki(d):
    """Writes ca, wrongca, server, badname and client (.pem/.key) into d;
    returns {name: path of the .pem} plus {name_key: path of the .key}."""
    os.makedirs(d, exist_ok=True)
    _ca(d, "ca", "sensegate test CA")
    _ca(d, "wrongca", "someone else's CA")
    server_ext = ("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _leaf(d, "server", "ca", "localhost", server_ext)
    _leaf(d, "badname", "ca", "wrong.example",
          server_ext.replace("IP:127.0.0.1,DNS:localhost", "DNS:wrong.example"))
    _leaf(d, "client", "ca", "sensegate-gw",
          "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    out = {}
    for n in ("ca", "wrongca", "server", "badname", "client"):
        out[n] = os.path.join(d, f"{n}.pem")
        out[n + "_key"] = os.path.join(d, f"{n}.key")
    return out


def need_tools():
    for tool in ("openssl", "mosquitto_passwd"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} not found")
            sys.exit(SKIP)
    if not find_mosquitto():
        print("SKIP: mosquitto not found")
        sys.exit(SKIP)


# ---------------------------------------------------------------------------
# Broker with several listeners

MQTT_USER = "sensegate"
MQTT_PASSWORD = "s3cret-mqtt-pass-4711"


def start_tls_broker(env, pki):
    """mosquitto with the plain, tls (password), mtls and badname listeners.
    Returns the Proc with .ports = {name: port}."""
    mosq = find_mosquitto()
    pwfile = os.path.join(env.dir, "mosquitto.passwd")
    subprocess.run(["mosquitto_passwd", "-c", "-b", pwfile, MQTT_USER, MQTT_PASSWORD],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _attempt in range(5):
        ports = {n: free_port() for n in ("plain", "tls", "mtls", "badname")}
        if len(set(ports.values())) < 4:
            continue
        lines = ["per_listener_settings true", "log_dest stdout", "log_type error",
                 "log_type warning", "log_type notice", "log_type information",
                 "max_queued_messages 1000000"]
        if os.geteuid() == 0:
            # mosquitto drops to user "mosquitto", which cannot read our 0700 dir.
            lines.append("user root")
        lines += [f"listener {ports['plain']} 127.0.0.1", "allow_anonymous true"]
        lines += [f"listener {ports['tls']} 127.0.0.1", f"cafile {pki['ca']}",
                  f"certfile {pki['server']}", f"keyfile {pki['server_key']}",
                  "allow_anonymous false", f"password_file {pwfile}"]
        lines += [f"listener {ports['mtls']} 127.0.0.1", f"cafile {pki['ca']}",
                  f"certfile {pki['server']}", f"keyfile {pki['server_key']}",
                  "require_certificate true", "allow_anonymous true"]
        lines += [f"listener {ports['badname']} 127.0.0.1", f"cafile {pki['ca']}",
                  f"certfile {pki['badname']}", f"keyfile {pki['badname_key']}",
                  "allow_anonymous true"]
        conf = os.path.join(env.dir, "mosquitto-tls.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = Proc("mosquitto-tls", [mosq, "-c", conf],
                    os.path.join(env.dir, f"mosquitto-tls-{_attempt}.log"))
        env.procs.append(proc)
        try:
            wait_for(lambda: (not proc.alive() and "exit") or
                     all(tcp_open(p) for p in ports.values()), 10, "mosquitto listeners")
        except TimeoutError:
            pass
        if proc.alive() and all(tcp_open(p) for p in ports.values()):
            proc.ports = ports
            proc.port = ports["plain"]
            return proc
        proc.stop()
    raise RuntimeError("mosquitto with TLS listeners did not start:\n" + proc.output())


def secret_file(env, name, content):
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write(content + "\n")
    os.chmod(path, 0o600)
    return path


def gw_config(env, broker, sink_port, tag, listener, host="127.0.0.1", backend_scheme="http",
              **over):
    uri = f"ssl://{host}:{broker.ports[listener]}"
    return env.gateway_config(broker.port, sink_port, tag=tag, allow_root=True,
                              mqtt__uri=uri,
                              backend__url=f"{backend_scheme}://127.0.0.1:{sink_port}", **over)


def start_tls_sink(env, pki, *args, tag="sink"):
    return env.start_sink("--tls-cert", pki["server"], "--tls-key", pki["server_key"], *args,
                          tag=tag)


def sink_stats_tls(sink, pki):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with urllib.request.urlopen(f"https://127.0.0.1:{sink.port}/_stats", context=ctx,
                                timeout=5) as r:
        import json
        return json.loads(r.read().decode())


def assert_refused(env, gw, text, seconds=4.0):
    """The gateway logs `text` and /healthz stays 503 (never connected)."""
    wait_log(gw, text, 20, f"'{text}' in the gateway log")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert gw.alive(), gw.output()
        status, body = http_get(gw.metrics_port, "/healthz")
        assert status == 503, (status, body)
        time.sleep(0.2)
    assert "subscribed topics" not in gw.output(), gw.output()


# ---------------------------------------------------------------------------
# Tests

SIM = ["--sensors", "40", "--duration-s", "40", "--speedup", "20", "--seed", "5",
       "--dup-frac", "0.02", "--invalid-frac", "0.01", "--malformed-frac", "0.01"]


def test_tls_password_and_https_end_to_end():
    """ssl:// + CA + username/password_file to the broker, https:// + CA to
    the backend: every rollup arrives and matches ground truth."""
    env = Env("tls-e2e")
    ok = False
    try:
        pki = make_pki(os.path.join(env.dir, "pki"))
        broker = start_tls_broker(env, pki)
        sink = start_tls_sink(env, pki)
        pw = secret_file(env, "mqtt-password", MQTT_PASSWORD)
        cfg = gw_config(env, broker, sink.port, "gateway", "tls", backend_scheme="https",
                        mqtt__ca_file=pki["ca"], mqtt__username=MQTT_USER,
                        mqtt__password_file=pw, backend__ca_file=pki["ca"])
        gw = env.start_gateway(cfg)
        summary = env.run_sim(broker.ports["plain"], *SIM)
        wait_for(lambda: env.metrics(gw).get("sensegate_mqtt_messages_total", 0)
                 >= summary["payloads_sent"], 60, "every payload over TLS")
        rc = gw.stop(timeout=30)
        assert rc == 0, f"gateway exit code {rc}"
        code, out = env.verify(summary["truth"], sink.out)
        assert code == 0, out
        st = sink_stats_tls(sink, pki)
        assert st["batches"] > 0, st
        assert MQTT_PASSWORD not in gw.output()
        print(out.strip())
        ok = True
    finally:
        env.close(failed=not ok)


def test_mutual_tls():
    """require_certificate: connects with mqtt.cert_file/key_file, refused
    without them."""
    env = Env("tls-mtls")
    ok = False
    try:
        pki = make_pki(os.path.join(env.dir, "pki"))
        broker = start_tls_broker(env, pki)
        sink = env.start_sink()
        cfg = gw_config(env, broker, sink.port, "gw-cert", "mtls", mqtt__ca_file=pki["ca"],
                        mqtt__cert_file=pki["client"], mqtt__key_file=pki["client_key"])
        gw = env.start_gateway(cfg, tag="gw-cert")
        summary = env.run_sim(broker.ports["plain"], "--sensors", "10", "--duration-s", "20",
                              "--speedup", "20", "--seed", "9")
        wait_for(lambda: env.metrics(gw).get("sensegate_mqtt_messages_total", 0)
                 >= summary["payloads_sent"], 60, "every payload over mutual TLS")
        assert gw.stop(timeout=30) == 0
        code, out = env.verify(summary["truth"], sink.out)
        assert code == 0, out

        cfg = gw_config(env, broker, sink.port, "gw-nocert", "mtls", mqtt__ca_file=pki["ca"])
        gw2 = env.start_gateway(cfg, tag="gw-nocert", wait_healthy=False)
        assert_refused(env, gw2, "cannot connect to ssl://")
        assert "TLS" in gw2.output(), gw2.output()
        ok = True
    finally:
        env.close(failed=not ok)


def test_wrong_ca_hostname_and_password_refused():
    env = Env("tls-refuse")
    ok = False
    try:
        pki = make_pki(os.path.join(env.dir, "pki"))
        broker = start_tls_broker(env, pki)
        sink = env.start_sink()
        pw = secret_file(env, "mqtt-password", MQTT_PASSWORD)
        bad_pw = secret_file(env, "mqtt-bad-password", "not-the-password")

        # A broker certificate from a CA we do not trust.
        cfg = gw_config(env, broker, sink.port, "gw-wrongca", "tls", mqtt__ca_file=pki["wrongca"],
                        mqtt__username=MQTT_USER, mqtt__password_file=pw)
        gw = env.start_gateway(cfg, tag="gw-wrongca", wait_healthy=False)
        assert_refused(env, gw, "certificate verify failed")
        assert "cannot connect to ssl://" in gw.output(), gw.output()

        # Right CA, but the certificate names another host (verify=1 checks it).
        cfg = gw_config(env, broker, sink.port, "gw-badname", "badname",
                        mqtt__ca_file=pki["ca"])
        gw = env.start_gateway(cfg, tag="gw-badname", wait_healthy=False)
        assert_refused(env, gw, "does not name this host")
        # The same listener is fine for a client that would skip the name
        # check: proves the refusal is the host name, not the listener.
        ctx = ssl.create_default_context(cafile=pki["ca"])
        ctx.check_hostname = False
        import socket
        with socket.create_connection(("127.0.0.1", broker.ports["badname"]), timeout=5) as s:
            with ctx.wrap_socket(s) as t:
                assert t.version() is not None

        # Wrong password over good TLS.
        cfg = gw_config(env, broker, sink.port, "gw-badpw", "tls", mqtt__ca_file=pki["ca"],
                        mqtt__username=MQTT_USER, mqtt__password_file=bad_pw)
        gw = env.start_gateway(cfg, tag="gw-badpw", wait_healthy=False)
        assert_refused(env, gw, "broker refused the connection: not authorized")
        assert "not-the-password" not in gw.output()

        # No password at all on the password listener.
        cfg = gw_config(env, broker, sink.port, "gw-anon", "tls", mqtt__ca_file=pki["ca"])
        gw = env.start_gateway(cfg, tag="gw-anon", wait_healthy=False)
        assert_refused(env, gw, "broker refused the connection: not authorized")
        ok = True
    finally:
        env.close(failed=not ok)


def test_backend_wrong_ca_delivers_nothing():
    """HTTPS to a backend whose certificate our backend.ca_file does not
    vouch for: retried (kept in the spool), never delivered, logged."""
    env = Env("tls-backend-ca")
    ok = False
    try:
        pki = make_pki(os.path.join(env.dir, "pki"))
        broker = env.start_broker()
        sink = start_tls_sink(env, pki)
        cfg = env.gateway_config(broker.port, sink.port, allow_root=True,
                                 backend__url=f"https://127.0.0.1:{sink.port}",
                                 backend__ca_file=pki["wrongca"])
        gw = env.start_gateway(cfg)
        env.run_sim(broker.port, "--sensors", "10", "--duration-s", "20", "--speedup", "20")
        wait_for(lambda: env.metrics(gw).get(
            'sensegate_forward_batches_total{result="retry"}', 0) >= 1, 30,
            "a failed HTTPS attempt")
        wait_log(gw, "SSL certificate problem", 10)
        st = sink_stats_tls(sink, pki)
        assert st["requests"] == 0, st
        assert env.metric(gw, 'sensegate_forward_batches_total{result="ok"}') == 0
        assert env.metric(gw, "sensegate_spool_batches") >= 1
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    need_tools()
    r = Runner()
    for t in (test_tls_password_and_https_end_to_end, test_mutual_tls,
              test_wrong_ca_hostname_and_password_refused, test_backend_wrong_ca_delivers_nothing):
        r.run(t)
    r.finish()

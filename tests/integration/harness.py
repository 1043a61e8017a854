"""Test harness for sensegate integration tests and the demo (stdlib only).

Starts real processes -- mosquitto, sensegate-sink, sensegate and
sensegate-sim -- on free 127.0.0.1 ports in a temporary directory, waits on
conditions with deadlines (never fixed sleeps), and always stops what it
started (SIGTERM, then SIGKILL after a deadline), printing each child's log
when a test fails.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

SKIP = 77

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SG_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILD_DIR = os.environ.get("SG_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))


def binary(name):
    sub = "gateway" if name == "sensegate" else "simulator"
    path = os.path.join(BUILD_DIR, sub, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: build first (make build)")
    return path


def gateway_argv():
    """How Env.start_gateway starts the gateway: SG_GATEWAY_BIN (default: this
    build's) after SG_GATEWAY_PREFIX, split on whitespace; e.g. an arm64
    gateway under qemu-user next to host-built sim and sink (scripts/ci-arm64):
    SG_GATEWAY_PREFIX="qemu-aarch64-static -L /" SG_GATEWAY_BIN=build-arm64/gateway/sensegate"""
    gw = os.environ.get("SG_GATEWAY_BIN") or binary("sensegate")
    if not os.path.exists(gw):
        raise RuntimeError(f"SG_GATEWAY_BIN={gw} is missing")
    return os.environ.get("SG_GATEWAY_PREFIX", "").split() + [gw]


def find_mosquitto():
    cand = os.environ.get("MOSQUITTO") or shutil.which("mosquitto")
    if not cand and os.path.exists("/usr/sbin/mosquitto"):
        cand = "/usr/sbin/mosquitto"
    return cand


def free_port():
    """A port that was free a moment ago on 127.0.0.1 (callers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stable_port():
    """A free 127.0.0.1 port below the kernel's ephemeral range, for a
    server a test stops and restarts on the same port: while it is down, a
    port-0 bind elsewhere (tests run in parallel) can never be handed it."""
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        p = rng.randrange(20000, max(20001, lo))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # a condition may fail until the server is up
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def http_get(port, path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_post_json(port, path, obj, timeout=5):
    data = json.dumps(obj).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """Prometheus text → {'name{labels}': value} and {'name': value} for bare names."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


class Proc:
    """A child process with its log in a file; stop() always reaps it."""

    def __init__(self, name, cmd, log_path, env=None, cwd=None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.log = open(log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=cwd, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def send(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """SIGTERM, then SIGKILL after timeout. Returns the exit code."""
        if self.alive():
            self.p.send_signal(sig)
            if self.wait(timeout) is None:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def kill9(self):
        if self.alive():
            self.p.kill()
        self.p.wait()
        self.log.close()
        return self.p.returncode

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Env:
    """A test environment: temp dir, children, and teardown that always runs."""

    def __init__(self, name, keep=False):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"sg-{name}-")
        self.procs = []
        self.cleanups = []  # callables run by close() after the processes are stopped
        self.keep = keep or os.environ.get("SG_KEEP_TMP") == "1"

    # -- broker ---------------------------------------------------------
    def start_broker(self, persistence=False, port=None, tag="mosquitto", log_tag=None):
        """Starts mosquitto on 127.0.0.1 (a free port, or `port`). The config
        and the persistence dir are named by `tag`, so a restart with the same
        tag and port finds the same persistent sessions; `log_tag` names the
        log (default: tag)."""
        mosq = find_mosquitto()
        if not mosq:
            print("SKIP: mosquitto not found (install it or set MOSQUITTO)")
            sys.exit(SKIP)
        for _attempt in range(5):
            p = port or free_port()
            conf = os.path.join(self.dir, f"{tag}.conf")
            lines = [f"listener {p} 127.0.0.1", "allow_anonymous true",
                     "max_queued_messages 1000000", "max_inflight_messages 100",
                     "log_dest stdout", "log_type error", "log_type warning", "log_type notice"]
            if persistence:
                pdir = os.path.join(self.dir, f"{tag}-data")
                os.makedirs(pdir, exist_ok=True)
                lines += ["persistence true", f"persistence_location {pdir}/",
                          "autosave_interval 1"]
                if os.geteuid() == 0:
                    # As root, mosquitto drops to user "mosquitto", which cannot
                    # write into our 0700 temp dir ("Error: Permission denied").
                    lines.append("user root")
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            lt = log_tag or tag
            proc = Proc(lt, [mosq, "-c", conf], os.path.join(self.dir, f"{lt}.log"))
            self.procs.append(proc)
            try:
                wait_for(lambda: (not proc.alive() and "exit") or tcp_open(p), 10,
                         f"mosquitto on port {p}")
            except TimeoutError:
                pass
            if proc.alive():
                proc.port = p
                proc.persistence = persistence
                proc.tag = tag
                return proc
            if port:  # a fixed port (restart) that is busy: give up
                raise RuntimeError(f"mosquitto could not start on {p}:\n{proc.output()}")
        raise RuntimeError("mosquitto did not start on any free port")

    # -- sink -----------------------------------------------------------
    def start_sink(self, *args, tag="sink", port=0, log_tag=None):
        """Starts sensegate-sink on 127.0.0.1 (port 0 = a free one). Its output
        files are named by `tag`, so a restart with the same tag appends to
        them and keeps dropping repeated batch ids; `log_tag` names the log."""
        lt = log_tag or tag
        port_file = os.path.join(self.dir, f"{lt}.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        out = os.path.join(self.dir, f"{tag}-rollups.jsonl")
        batches = os.path.join(self.dir, f"{tag}-batches.jsonl")
        cmd = [binary("sensegate-sink"), "--listen", f"127.0.0.1:{port}", "--port-file", port_file,
               "--out", out, "--batches-out", batches, *args]
        proc = Proc(lt, cmd, os.path.join(self.dir, f"{lt}.log"))
        self.procs.append(proc)
        wait_for(lambda: (not proc.alive() and self._died(proc)) or
                 (os.path.exists(port_file) and open(port_file).read().strip()), 10,
                 "sink port file")
        proc.port = int(open(port_file).read().strip())
        proc.out = out
        proc.batches = batches
        proc.tag = tag
        proc.args = args
        return proc

    def restart_sink(self, old, *args, log_tag=None):
        """Stops `old` if it still runs and starts a sink on the same port with
        the same output files (and `args`, default: old's). While it is down,
        connections to the port are refused."""
        old.stop()
        self._restarts = getattr(self, "_restarts", 0) + 1
        return self.start_sink(*(args or old.args), tag=old.tag, port=old.port,
                               log_tag=log_tag or f"{old.tag}-{self._restarts}")

    def restart_broker(self, old, log_tag=None):
        """Stops `old` (SIGTERM: mosquitto saves its persistence file) and
        starts mosquitto again on the same port, config and persistence dir."""
        rc = old.stop()
        assert rc == 0, f"mosquitto exit code {rc}"
        self._restarts = getattr(self, "_restarts", 0) + 1
        return self.start_broker(persistence=old.persistence, port=old.port, tag=old.tag,
                                 log_tag=log_tag or f"{old.tag}-{self._restarts}")

    @staticmethod
    def _died(proc):
        raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")

    def sink_stats(self, sink):
        status, body = http_get(sink.port, "/_stats")
        assert status == 200, body
        return json.loads(body)

    def sink_control(self, sink, **kw):
        status, body = http_post_json(sink.port, "/_control", kw)
        assert status == 200, (status, body)

    # -- gateway --------------------------------------------------------
    def gateway_config(self, broker_port, sink_port, tag="gateway", **over):
        """Writes a YAML config; keyword overrides use __ for nesting (backend__url=...)."""
        cfg = {
            "gateway_id": "gw-test-001",
            # CI and these tests run as root; the gateway refuses root otherwise.
            "allow_root": os.geteuid() == 0,
            "mqtt": {"uri": f"tcp://127.0.0.1:{broker_port}",
                     "client_id": f"sensegate-{tag}-{os.getpid()}",
                     "topics": ["sensors/#"], "qos": 1},
            "windows_ms": [10000],
            "allowed_lateness_ms": 2000,
            "backend": {"url": f"http://127.0.0.1:{sink_port}", "max_batch_rollups": 500,
                        "max_batch_delay_ms": 200, "backoff_min_ms": 100,
                        "backoff_max_ms": 2000},
            "spool": {"dir": os.path.join(self.dir, f"{tag}-spool")},
            "metrics": {"listen": "127.0.0.1:0",
                        "port_file": os.path.join(self.dir, f"{tag}.metrics-port")},
            "stats_interval_s": 2,
            "shutdown_timeout_ms": 15000,
        }
        for k, v in over.items():
            node = cfg
            parts = k.split("__")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
        path = os.path.join(self.dir, f"{tag}.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(cfg))
        return path

    def start_gateway(self, config, tag="gateway", wait_healthy=True, env=None):
        port_file = os.path.join(self.dir, f"{tag}.metrics-port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        proc = Proc(tag, [*gateway_argv(), "--config", config],
                    os.path.join(self.dir, f"{tag}.log"), env=env)
        self.procs.append(proc)
        wait_for(lambda: (not proc.alive() and self._died(proc)) or
                 (os.path.exists(port_file) and open(port_file).read().strip()), 15,
                 "gateway metrics port file")
        proc.metrics_port = int(open(port_file).read().strip())
        if wait_healthy:
            self.wait_healthy(proc)
        return proc

    def wait_healthy(self, gw, timeout=20):
        wait_for(lambda: (not gw.alive() and self._died(gw)) or
                 http_get(gw.metrics_port, "/healthz")[0] == 200, timeout,
                 "gateway /healthz 200 (connected and subscribed)")

    def metrics(self, gw):
        status, body = http_get(gw.metrics_port, "/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def metric(self, gw, name, default=0.0):
        """One value of /metrics, e.g. 'sensegate_forward_batches_total{result="retry"}'."""
        return self.metrics(gw).get(name, default)

    # -- simulator ------------------------------------------------------
    def run_sim(self, broker_port, *args, tag="sim", timeout=300):
        truth = os.path.join(self.dir, f"{tag}-truth.jsonl")
        cmd = [binary("sensegate-sim"), "--uri", f"tcp://127.0.0.1:{broker_port}",
               "--truth", truth, "--client-id", f"sensegate-{tag}-{os.getpid()}", *args]
        log = os.path.join(self.dir, f"{tag}.log")
        with open(log, "wb") as lf:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=lf, timeout=timeout)
        out = r.stdout.decode()
        with open(log, "ab") as lf:
            lf.write(r.stdout)
        if r.returncode != 0:
            raise RuntimeError(f"sensegate-sim failed ({r.returncode}):\n{out}\n"
                               f"{open(log).read()}")
        with open(truth) as f:
            summary = json.loads(f.readline())
        summary["truth"] = truth
        summary["stdout"] = out
        return summary

    def start_sim(self, broker_port, *args, tag="sim"):
        """Starts sensegate-sim in the background (stdout and stderr in its
        log); finish_sim() waits for it and returns the truth summary."""
        truth = os.path.join(self.dir, f"{tag}-truth.jsonl")
        cmd = [binary("sensegate-sim"), "--uri", f"tcp://127.0.0.1:{broker_port}",
               "--truth", truth, "--client-id", f"sensegate-{tag}-{os.getpid()}", *args]
        proc = Proc(tag, cmd, os.path.join(self.dir, f"{tag}.log"))
        self.procs.append(proc)
        proc.truth = truth
        return proc

    def finish_sim(self, proc, timeout=300):
        rc = proc.wait(timeout)
        if rc is None:
            raise TimeoutError(f"{proc.name} still running after {timeout}s")
        proc.log.close()
        out = proc.output()
        if rc != 0:
            raise RuntimeError(f"sensegate-sim failed ({rc}):\n{out}")
        with open(proc.truth) as f:
            summary = json.loads(f.readline())
        summary["truth"] = proc.truth
        summary["stdout"] = out
        return summary

    def verify(self, truth, received, max_diffs=None):
        extra = ["--max-diffs", str(max_diffs)] if max_diffs is not None else []
        r = subprocess.run([binary("sensegate-sink"), "verify", "--truth", truth,
                            "--received", received, *extra], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        return r.returncode, r.stdout.decode()

    # -- teardown -------------------------------------------------------
    def close(self, failed=False):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=10)
            except Exception:
                pass
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:
                print(f"cleanup failed: {e}")
        if failed:
            for p in self.procs:
                print(f"----- log of {p.name} ({p.log_path}) -----")
                print(p.output()[-8000:])
        if not self.keep and not failed:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif failed:
            print(f"(temp dir kept: {self.dir})")


def to_yaml(obj, indent=0):
    """A tiny YAML writer for our config dicts (strings quoted, lists flow-style)."""
    pad = "  " * indent
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.append(to_yaml(v, indent + 1))
        else:
            out.append(f"{pad}{k}: {yaml_scalar(v)}")
    return "\n".join(out) + ("\n" if indent == 0 else "")


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    return json.dumps(str(v))


def publish_sentinel(env, broker_port, size):
    """An oversized payload published after everything else: the broker
    delivers in order, so once the gateway counts it as too large, every
    earlier message has been taken."""
    path = os.path.join(env.dir, "sentinel.bin")
    with open(path, "wb") as f:
        f.write(b"\x00" * size)
    pub = shutil.which("mosquitto_pub")
    assert pub, "mosquitto_pub not found (package mosquitto-clients)"
    subprocess.run([pub, "-h", "127.0.0.1", "-p", str(broker_port), "-q", "1",
                    "-t", "sensors/test/sentinel/end", "-f", path], check=True, timeout=30)


def wait_log(proc, text, timeout, what=None, after=0):
    """Waits until `text` appears in proc's log after byte offset `after`;
    returns the offset just past the first match."""
    def cond():
        data = proc.output()
        i = data.find(text, after)
        return i + len(text) if i >= 0 else None
    return wait_for(cond, timeout, what or f"'{text}' in the log of {proc.name}")


def read_jsonl(path):
    """The complete JSON lines of a file (a torn last line is skipped)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
    return out


def rollup_key(r):
    return (r["sensor_id"], r["kind"], r["channel"], r["window_ms"], r["window_start_ms"])


def write_truth(path, summaries, exclude=()):
    """Writes one truth file from the rollup lines of several truth files,
    leaving out rollups whose rollup_key is in `exclude`. Returns the number
    of rollups written. (The verifier skips non-rollup lines.)"""
    exclude = set(exclude)
    n = 0
    with open(path, "w") as out:
        for s in summaries:
            with open(s["truth"]) as f:
                for line in f:
                    o = json.loads(line)
                    if o.get("type") != "rollup" or rollup_key(o) in exclude:
                        continue
                    out.write(line if line.endswith("\n") else line + "\n")
                    n += 1
    return n


def merge_summaries(summaries):
    """The summary of several simulator runs into one gateway, for check_identity."""
    m = {"readings_sent": 0, "payloads_sent": 0, "malformed_payloads": 0, "rollups": 0,
         "expected": {"accepted": 0, "duplicate": 0, "late": 0, "invalid": 0}}
    for s in summaries:
        for k in ("readings_sent", "payloads_sent", "malformed_payloads", "rollups"):
            m[k] += s[k]
        for k in m["expected"]:
            m["expected"][k] += s["expected"][k]
    return m


def verify_diffs(out):
    """Sorts the lines of `sensegate-sink verify` output by kind."""
    kinds = {"missing": [], "unexpected": [], "duplicate": [], "mismatch": [], "malformed": []}
    for line in out.splitlines():
        for k in kinds:
            if line.startswith(k + ":") or (k == "duplicate" and
                                            line.startswith("duplicate delivery:")):
                kinds[k].append(line)
                break
    return kinds


_KEY_RE = re.compile(r"sensor=(\S+) kind=(\S+) channel=(\d+) window_ms=(\d+) "
                     r"window_start_ms=(\d+)")


def verify_key(line):
    """The rollup_key named in one line of verify output (None if none)."""
    mt = _KEY_RE.search(line)
    if not mt:
        return None
    return (mt.group(1), mt.group(2), int(mt.group(3)), int(mt.group(4)), int(mt.group(5)))


def check_identity(summary, m):
    """The accounting identity: every reading the simulator sent in a
    well-formed payload got exactly one verdict, and matches ground truth."""
    got = {r: int(m.get(f'sensegate_readings_total{{result="{r}"}}', -1))
           for r in ("accepted", "duplicate", "late", "invalid")}
    exp = summary["expected"]
    problems = []
    if sum(got.values()) != summary["readings_sent"]:
        problems.append(f"verdicts {got} sum to {sum(got.values())}, "
                        f"simulator sent {summary['readings_sent']}")
    for r in got:
        if got[r] != exp[r]:
            problems.append(f"{r}: gateway {got[r]}, ground truth {exp[r]}")
    dec = int(m.get("sensegate_decode_errors_total", -1))
    if dec != summary["malformed_payloads"]:
        problems.append(f"decode errors {dec}, malformed payloads sent "
                        f"{summary['malformed_payloads']}")
    return got, problems


class Runner:
    """Runs test functions, prints 'N passed, N failed', exits non-zero on failure."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, fn):
        name = fn.__name__
        t0 = time.monotonic()
        try:
            fn()
            self.passed += 1
            print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except SystemExit:
            raise
        except BaseException:
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            traceback.print_exc()

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)

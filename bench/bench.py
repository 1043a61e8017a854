#!/usr/bin/env python3
"""sensegate benchmark driver (issue 4). Not a test: it asserts nothing about
time. Prints a table and writes every figure as JSON.

  python3 bench/bench.py --build build [--out build/bench.json] [--repeats 3]
                         [--skip-e2e] [--skip-callgrind]

Parts:
  inproc   sg-bench-inproc: fleet payloads -> decode -> rollup -> JSON encode,
           1k / 100k / 1M live series: readings/s per core (steady phase, CPU
           time of the thread), ns per reading by stage, engine bytes per
           series, allocations in the steady phase (counting malloc).
  instr    the same under callgrind (reduced run, steady phase only):
           instructions per reading.
  e2e      sensegate-sim (full speed) -> private mosquitto (127.0.0.1, free
           port, no persistence) -> sensegate (journal on) -> sensegate-sink,
           and the limit subscriber sg-bench-limitsub on the same stream,
           1k and 100k sensors, 1/20/50 readings per message. Every publish
           is measured twice: one consumer takes it live while the other's
           session queues it (gateway SIGSTOPped, or limitsub's persistent
           session disconnected), and that backlog is then the other's
           drain. Pairs alternate which consumer runs live first; medians
           over the pairs (--repeats for 1k-b20, --repeats // 3 for the
           others). Simulated time runs SIM_LEAD_MS ahead of the wall clock,
           so no reading is late and every one is aggregated. Delay: the
           gateway's sensegate_delivery_delay_seconds histogram and, exact,
           the sink's batch log (receive time - sent_at_ms, per rollup).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")
# Simulated start ahead of the wall clock: longer than the longest publish
# plus drain (100k-b1: ~70 s on a busy 2-core VM), well inside the gateway's
# max_future_ms (300 s). The simulator warns past 60 s; harmless here.
SIM_LEAD_MS = 90000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(cond, timeout, what, interval=0.02):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def proc_cpu_ns(pid):
    """CPU time of every thread of pid in ns (schedstat: finer than the
    10 ms ticks of /proc/<pid>/stat)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def metrics(port):
    out = {}
    for line in http_get(port, "/metrics").splitlines():
        if not line or line[0] == "#":
            continue
        name, _, val = line.rpartition(" ")
        try:
            out[name] = float(val)
        except ValueError:
            pass
    return out


def readings_total(m):
    return sum(v for k, v in m.items() if k.startswith("sensegate_readings_total"))


def hist(m, name):
    """{le: cumulative count} of a Prometheus histogram."""
    h = {}
    for k, v in m.items():
        mo = re.match(name + r'_bucket\{le="([^"]+)"\}', k)
        if mo:
            h[float("inf") if mo.group(1) == "+Inf" else float(mo.group(1))] = v
    return h


def hist_quantile(h0, h1, q):
    """Upper bucket bound holding quantile q of the observations between two
    snapshots (None when there are none)."""
    les = sorted(h1)
    d = [(le, h1[le] - h0.get(le, 0.0)) for le in les]
    total = d[-1][1] if d else 0
    if total <= 0:
        return None
    for le, c in d:
        if c >= q * total:
            return le
    return les[-1]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, build, tmp):
        self.build = build
        self.tmp = tmp
        self.procs = []
        self.next_start_ms = 0

    def exe(self, rel):
        return os.path.join(self.build, rel)

    def spawn(self, name, cmd, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", log), stderr=log, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                self.stop(p, timeout=20)

    # ---- in-process ----------------------------------------------------

    def inproc(self, series, readings, batch=20):
        out = subprocess.run([self.exe("bench/sg-bench-inproc"), "--series", str(series),
                              "--readings", str(readings), "--batch", str(batch)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def callgrind(self, series, readings):
        if not shutil.which("valgrind"):
            return None
        cg = os.path.join(self.tmp, f"cg-{series}.out")
        out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                              f"--callgrind-out-file={cg}", self.exe("bench/sg-bench-inproc"),
                              "--series", str(series), "--readings", str(readings)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        mo = re.search(r"refs:\s+([\d,]+)", out.stderr)
        ir = int(mo.group(1).replace(",", ""))
        top = []
        if shutil.which("callgrind_annotate"):
            ann = subprocess.run(["callgrind_annotate", cg], capture_output=True, text=True).stdout
            for line in ann.splitlines():
                mo = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S+)", line)
                if mo and "PROGRAM TOTALS" not in line:
                    fn = mo.group(3).split(":")[-1].split(" ")[0]
                    top.append({"fn": fn, "pct": float(mo.group(2)),
                                "ir_per_reading": int(mo.group(1).replace(",", ""))
                                / res["steady_readings"]})
                if len(top) >= 12:
                    break
        return {"series": series, "steady_readings": res["steady_readings"], "ir": ir,
                "instructions_per_reading": ir / res["steady_readings"], "top": top}

    # ---- end to end ----------------------------------------------------

    def start_broker(self):
        port = free_port()
        conf = os.path.join(self.tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 100\n"
                    "log_dest stdout\nlog_type error\n")
        mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        p = self.spawn("mosquitto", [mosq, "-c", conf])

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "mosquitto", interval=0.01)
        self.broker_port = port
        self.broker = p
        return port

    def start_sink(self):
        pf = os.path.join(self.tmp, "sink.port")
        self.batches_path = os.path.join(self.tmp, "sink-batches.jsonl")
        p = self.spawn("sink", [self.exe("simulator/sensegate-sink"), "--listen", "127.0.0.1:0",
                                "--port-file", pf, "--batches-out", self.batches_path,
                                "--log-level", "error"])
        wait_for(lambda: os.path.exists(pf), 10, "sink port")
        self.sink_port = int(open(pf).read().strip())
        self.sink = p

    def start_gateway(self, tag):
        d = os.path.join(self.tmp, tag)
        os.makedirs(d, exist_ok=True)
        pf = os.path.join(d, "metrics.port")
        cfg = os.path.join(d, "sensegate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""gateway_id: gw-bench-{tag}
mqtt:
  uri: tcp://127.0.0.1:{self.broker_port}
  client_id: sensegate-bench-{tag}
  topics: ["sensors/#"]
  qos: 1
  keepalive_s: 60
windows_ms: [10000]
allowed_lateness_ms: 2000
backend:
  url: http://127.0.0.1:{self.sink_port}
  max_batch_rollups: 500
  max_batch_delay_ms: 1000
spool:
  dir: {d}/spool
metrics:
  listen: 127.0.0.1:0
  port_file: {pf}
stats_interval_s: 60
""")
        p = self.spawn("gateway-" + tag, [self.exe("gateway/sensegate"), "--config", cfg, "--allow-root"])
        wait_for(lambda: os.path.exists(pf), 20, "gateway metrics port")
        p.metrics_port = int(open(pf).read().strip())

        def healthy():
            try:
                return http_get(p.metrics_port, "/healthz") is not None
            except Exception:
                return False
        wait_for(healthy, 20, "gateway healthy", interval=0.01)
        return p

    def start_limitsub(self, tag, clean, expect=0, idle_ms=1000, subscribe_only=False):
        """expect 0: ends once no message came for idle_ms after the first
        (the wait is not in its figures: they end at its last message)."""
        ready = os.path.join(self.tmp, f"limitsub-{tag}.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [self.exe("bench/sg-bench-limitsub"), "--uri", f"tcp://127.0.0.1:{self.broker_port}",
               "--client-id", f"sg-bench-limit-{tag}", "--clean", str(clean), "--expect",
               str(expect), "--idle-ms", str(idle_ms), "--timeout-s", "300", "--ready-file", ready]
        if subscribe_only:
            cmd.append("--subscribe-only")
        p = self.spawn("limitsub-" + tag, cmd, stdout=subprocess.PIPE, text=True)
        wait_for(lambda: os.path.exists(ready), 15, "limitsub subscribed", interval=0.005)
        return p

    def sim(self, sensors, batch, rate, duration_s, seed):
        """One publish at full speed. Simulated time starts SIM_LEAD_MS ahead
        of the wall clock and after the previous run's last reading, so no
        reading is late (a drained backlog is minutes old in wall time) and
        no window closes by the gateway clock during a configuration: every
        reading takes the aggregation path; windows close only by the
        sensor watermark."""
        start_ms = max(int(time.time() * 1000) + SIM_LEAD_MS, self.next_start_ms)
        # The next run starts a window plus the lateness later, so its first
        # readings close every window of this one (by the sensor watermark):
        # at 100 k sensors that is 100 k windows closing within one run.
        self.next_start_ms = start_ms + duration_s * 1000 + 10000 + 2000 + 1000
        cmd = [self.exe("simulator/sensegate-sim"), "--uri", f"tcp://127.0.0.1:{self.broker_port}",
               "--sensors", str(sensors), "--readings-per-batch", str(batch), "--rate-hz",
               str(rate), "--duration-s", str(duration_s), "--speedup", "1000000",
               "--start-ms", str(start_ms),
               "--seed", str(seed), "--client-id", f"sim-{seed}-{time.monotonic_ns()}"]
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        t1 = time.time()
        if out.returncode != 0:
            raise RuntimeError(f"sim failed: {out.stderr}")
        mo = re.search(r"payloads=(\d+).*readings=(\d+)", out.stdout)
        return {"t0": t0, "t1": t1, "payloads": int(mo.group(1)), "readings": int(mo.group(2))}

    def gw_wait(self, gw, base, n, timeout=300):
        """Polls until the gateway gave a verdict to n readings beyond base;
        returns the wall clock then."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if readings_total(metrics(gw.metrics_port)) - base >= n:
                return time.time()
            time.sleep(0.005)
        raise RuntimeError("gateway did not take every reading")

    def settle(self, gw, timeout=20):
        """Lets the gateway deliver what it holds: the batch timer
        (max_batch_delay_ms, 1 s here) fires, then spool and requests in
        flight empty (bounded)."""
        time.sleep(1.1)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            m = metrics(gw.metrics_port)
            if m.get("sensegate_spool_batches", 0) == 0 and \
                    m.get("sensegate_forward_inflight", 0) == 0:
                return
            time.sleep(0.01)

    def limit_result(self, p):
        out, _ = p.communicate(timeout=300)
        return json.loads(out.strip().splitlines()[-1])

    def e2e_config(self, name, sensors, batch, rate, duration_s, repeats):
        """One configuration: `repeats` pairs of live and drain runs. A fresh
        gateway per configuration (its own spool, journal, series, gateway_id).

        Each publish serves two measurements: while one consumer takes the
        stream live, the other one's session queues it at the broker, and
        that backlog is then its drain. Half A: gateway SIGSTOPped (still
        connected), limitsub live; then the gateway drains (SIGCONT). Half B:
        limitsub's persistent session created and left (--subscribe-only),
        gateway live; then limitsub drains (--clean 0). Pairs alternate
        which half goes first, so each consumer runs live first half the
        time; medians over the pairs."""
        gw = self.start_gateway(name)
        time.sleep(0.5)
        idle_rss = proc_status_kb(gw.pid, "VmRSS")
        # idle CPU: connected, nothing arriving (schedstat: ns resolution)
        c0, t0 = proc_cpu_ns(gw.pid), time.monotonic()
        time.sleep(1.0)
        idle_cpu_pct = (proc_cpu_ns(gw.pid) - c0) / 1e9 / (time.monotonic() - t0) * 100.0
        # Delay figures come from the live halves only: in the drain halves
        # the gateway is SIGSTOPped for a while, and a batch waiting then
        # would carry the stop in its delay. hz/hl: zero and live deltas.
        hz, hl = {}, {}
        m0 = metrics(gw.metrics_port)
        res = {"name": name, "sensors": sensors, "readings_per_batch": batch, "rate_hz": rate,
               "duration_s": duration_s, "gateway_idle_rss_kb": idle_rss,
               "gateway_idle_cpu_pct": idle_cpu_pct, "live": [], "drain": []}
        gw_cpu_total = 0.0
        gw_readings_total = 0
        seed = 1
        for rep in range(repeats):
            live, drain = {}, {}
            halves = ["A", "B"] if rep % 2 == 0 else ["B", "A"]
            for half in halves:
                seed += 1
                if half == "A":
                    # limit live; the stopped gateway's session queues the stream
                    base = readings_total(metrics(gw.metrics_port))
                    os.kill(gw.pid, signal.SIGSTOP)
                    ls = self.start_limitsub(f"{name}-A{rep}", 1, idle_ms=1000)
                    s = self.sim(sensors, batch, rate, duration_s, seed)
                    r = self.limit_result(ls)
                    live["limit"] = {"readings": r["readings"], "expected": s["readings"],
                                     "s": r["last_ms"] / 1000.0 - s["t0"], "cpu_s": r["cpu_s"]}
                    # gateway drain of that backlog
                    c0 = proc_cpu_s(gw.pid)
                    t0 = time.time()
                    os.kill(gw.pid, signal.SIGCONT)
                    t_done = self.gw_wait(gw, base, s["readings"])
                    c1 = proc_cpu_s(gw.pid)
                    gw_cpu_total += c1 - c0
                    gw_readings_total += s["readings"]
                    drain["gateway"] = {"readings": s["readings"], "s": t_done - t0,
                                        "cpu_s": c1 - c0, "publish_s": s["t1"] - s["t0"]}
                else:
                    # limitsub's persistent session queues the gateway's live stream
                    cid = f"{name}-B{rep}"
                    self.start_limitsub(cid, 0, subscribe_only=True).wait(30)
                    self.settle(gw)
                    m_b = metrics(gw.metrics_port)
                    base = readings_total(m_b)
                    hb0 = hist(m_b, "sensegate_delivery_delay_seconds")
                    c0 = proc_cpu_s(gw.pid)
                    s = self.sim(sensors, batch, rate, duration_s, seed)
                    t_done = self.gw_wait(gw, base, s["readings"])
                    c1 = proc_cpu_s(gw.pid)
                    self.settle(gw)
                    hb1 = hist(metrics(gw.metrics_port), "sensegate_delivery_delay_seconds")
                    for le, v in hb1.items():
                        hl[le] = hl.get(le, 0.0) + v - hb0.get(le, 0.0)
                    gw_cpu_total += c1 - c0
                    gw_readings_total += s["readings"]
                    live["gateway"] = {"readings": s["readings"], "s": t_done - s["t0"],
                                       "cpu_s": c1 - c0, "sim_s": s["t1"] - s["t0"]}
                    # limit drain, timed from its first message to its last
                    ls = self.start_limitsub(cid, 0, expect=s["readings"], idle_ms=3000)
                    r = self.limit_result(ls)
                    drain["limit"] = {"readings": r["readings"], "expected": s["readings"],
                                      "s": (r["last_ms"] - r["first_ms"]) / 1000.0,
                                      "cpu_s": r["cpu_s"]}
            for d in (live, drain):
                for k in ("limit", "gateway"):
                    d[k]["rate"] = d[k]["readings"] / max(d[k]["s"], 1e-3)
                d["ratio"] = d["gateway"]["rate"] / d["limit"]["rate"]
            res["live"].append(live)
            res["drain"].append(drain)
        self.settle(gw)
        m1 = metrics(gw.metrics_port)
        res["delivery_delay_p50_s"] = hist_quantile(hz, hl, 0.50)
        res["delivery_delay_p99_s"] = hist_quantile(hz, hl, 0.99)
        sink = self.sink_delays(f"gw-bench-{name}")
        res.update(sink)
        res["gateway_cpu_s_per_M_readings"] = gw_cpu_total / gw_readings_total * 1e6
        res["gateway_vmhwm_kb"] = proc_status_kb(gw.pid, "VmHWM")
        res["gateway_rss_kb_end"] = proc_status_kb(gw.pid, "VmRSS")
        res["active_series"] = m1.get("sensegate_active_series", 0)
        res["readings_by_result"] = {
            k.split('"')[1]: m1[k] - m0.get(k, 0.0) for k in m1
            if k.startswith("sensegate_readings_total{")}
        for part in ("live", "drain"):
            for who in ("limit", "gateway"):
                res[f"{part}_{who}_rate"] = median([x[who]["rate"] for x in res[part]])
            res[f"{part}_ratio"] = median([x["ratio"] for x in res[part]])
        self.stop(gw)
        return res

    def sink_delays(self, gateway_id):
        """From the sink's batch log: per batch, received_ms - sent_at_ms
        (sent_at_ms is when the gateway made the batch, right after its
        oldest rollup's window closed: at most max_batch_delay_ms later, or
        in the same loop turn when the batch filled up). Weighted by rollups,
        so the quantiles are those of rollups, not of batches."""
        xs = []
        try:
            with open(self.batches_path) as f:
                for line in f:
                    if not line.endswith("\n") or gateway_id not in line:
                        continue
                    b = json.loads(line)
                    if b.get("gateway_id") != gateway_id:
                        continue
                    xs.append((b["received_ms"] - b["sent_at_ms"], b["rollups"]))
        except OSError:
            pass
        if not xs:
            return {"sink_delay_p50_s": None, "sink_delay_p99_s": None, "sink_batches": 0}
        xs.sort()
        total = sum(n for _, n in xs)

        def q(p):
            acc = 0
            for d, n in xs:
                acc += n
                if acc >= p * total:
                    return d / 1000.0
            return xs[-1][0] / 1000.0
        return {"sink_delay_p50_s": q(0.50), "sink_delay_p99_s": q(0.99),
                "sink_delay_max_s": xs[-1][0] / 1000.0, "sink_batches": len(xs),
                "sink_rollups": total}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeats", type=int, default=3,
                    help="live/drain pairs for 1k-b20 (the others get repeats // 3)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-callgrind", action="store_true")
    ap.add_argument("--skip-inproc", action="store_true")
    ap.add_argument("--configs", default=None,
                    help="default 1k-b1,1k-b20,1k-b50,100k-b1,100k-b50")
    ap.add_argument("--full", action="store_true",
                    help="also callgrind at 100k series")
    a = ap.parse_args()
    out_path = a.out or os.path.join(a.build, "bench.json")
    tmp = tempfile.mkdtemp(prefix="sg-bench-")
    b = Bench(os.path.abspath(a.build), tmp)
    result = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "inproc": [], "callgrind": [], "e2e": []}
    t_start = time.monotonic()
    try:
        if not a.skip_inproc:
            # at 1M series generating the payloads (~5 us/reading, with a
            # fixed 1.5 s warm-up span) is most of the run: ask for fewer
            for series, readings in ((1000, 3000000), (100000, 3000000), (1000000, 1000000)):
                r = b.inproc(series, readings)
                result["inproc"].append(r)
                print(f"inproc {series:>8} series: {r['readings_per_s_per_core'] / 1e6:.2f} M "
                      f"readings/s/core ({time.monotonic() - t_start:.0f} s)", file=sys.stderr)
            dbl = subprocess.run([b.exe("bench/sg-bench-inproc"), "--check-doubles", "300000"],
                                 capture_output=True, text=True)
            result["doubles"] = json.loads(dbl.stdout.strip().splitlines()[-1])
        if not a.skip_callgrind:
            for series, readings in ((1000, 200000),) if not a.full else ((1000, 200000), (100000, 300000)):
                r = b.callgrind(series, readings)
                if r:
                    result["callgrind"].append(r)
                    print(f"callgrind {series} series: {r['instructions_per_reading']:.0f} "
                          f"instructions/reading", file=sys.stderr)
        if not a.skip_e2e:
            b.start_broker()
            b.start_sink()
            cfgs = {
                # name: sensors, batch, rate_hz, duration_s (simulated)
                "1k-b1": (1000, 1, 10, 2),
                "1k-b20": (1000, 20, 20, 8),
                "1k-b50": (1000, 50, 20, 10),
                # 0.4 Hz: about one reading per sensor (100 k messages):
                # the simulator publishes only ~5 k messages/s here
                "100k-b1": (100000, 1, 0.4, 1),
                "100k-b50": (100000, 50, 1, 2),
            }
            configs = a.configs or "1k-b1,1k-b20,1k-b50,100k-b1,100k-b50"
            for name in configs.split(","):
                sensors, batch, rate, dur = cfgs[name]
                reps = a.repeats if name == "1k-b20" else max(1, a.repeats // 3)
                r = b.e2e_config(name, sensors, batch, rate, dur, reps)
                result["e2e"].append(r)
                save(out_path, result)
                print(f"e2e {name}: live {r['live_ratio']:.2f} drain {r['drain_ratio']:.2f} "
                      f"of the limit ({time.monotonic() - t_start:.0f} s)", file=sys.stderr)
    finally:
        b.cleanup()
    result["elapsed_s"] = time.monotonic() - t_start
    save(out_path, result)
    print_table(result)
    print(f"\nJSON: {out_path}   (logs: {tmp})")


def save(path, result):
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1),
            "kernel": os.uname().release}


def print_table(r):
    m = r["machine"]
    print(f"\nsensegate benchmark  {r['started']}  {m['cpu']}, {m['cores']} cores, "
          f"{m['mem_gib']} GiB, Linux {m['kernel']}")
    if r["inproc"]:
        print("\nIn-process (decode -> validate -> rollup -> JSON encode, one core, steady phase)")
        print(f"{'series':>9} {'M rd/s/core':>11} {'ns/rd dec':>9} {'roll':>6} {'enc':>6} "
              f"{'B/series':>8} {'-ring':>6} {'mallocs':>7} {'frees':>6} {'msgs':>7}")
        for x in r["inproc"]:
            ns = x["ns_per_reading"]
            print(f"{x['live_series']:>9} {x['readings_per_s_per_core'] / 1e6:>11.2f} "
                  f"{ns['decode']:>9.0f} {ns['rollup']:>6.0f} {ns['encode']:>6.0f} "
                  f"{x['engine_bytes_per_series']:>8.0f} "
                  f"{x['engine_bytes_per_series'] - x['ring_bytes_per_series']:>6.0f} "
                  f"{x['steady_mallocs'] + x['steady_reallocs']:>7} {x['steady_frees']:>6} "
                  f"{x['steady_messages']:>7}")
    if r.get("doubles"):
        d = r["doubles"]
        print(f"\nsg_buf_put_double: {d['values']} values, {d['not_round_trip']} not bit-exact, "
              f"{d['longer_than_printf']} longer than printf's; {d['ns_per_double']:.0f} ns "
              f"vs {d['ns_per_double_printf_strtod']:.0f} ns (printf+strtod)")
    for c in r["callgrind"]:
        top = ", ".join(f"{t['fn']} {t['pct']:.0f}%" for t in c["top"][:6])
        print(f"\ncallgrind, {c['series']} series: {c['instructions_per_reading']:.0f} "
              f"instructions/reading; top: {top}")
    if r["e2e"]:
        print("\nEnd to end: sim -> mosquitto -> sensegate (journal on) -> sink; limit = "
              "sg-bench-limitsub (Paho, QoS 1, decode + count); medians")
        print(f"{'config':>9} {'live lim':>9} {'live gw':>9} {'ratio':>5} {'drain lim':>9} "
              f"{'drain gw':>9} {'ratio':>5} {'CPU-s/M':>7} {'idleRSS':>7} {'peakRSS':>7} "
              f"{'idle%':>5} {'dly p50':>7} {'p99':>5} {'sink p50':>8} {'p99':>5}")
        for x in r["e2e"]:
            print(f"{x['name']:>9} {x['live_limit_rate']:>9.0f} {x['live_gateway_rate']:>9.0f} "
                  f"{x['live_ratio']:>5.2f} {x['drain_limit_rate']:>9.0f} "
                  f"{x['drain_gateway_rate']:>9.0f} {x['drain_ratio']:>5.2f} "
                  f"{x['gateway_cpu_s_per_M_readings']:>7.2f} "
                  f"{x['gateway_idle_rss_kb'] / 1024:>6.1f}M {x['gateway_vmhwm_kb'] / 1024:>6.1f}M "
                  f"{x['gateway_idle_cpu_pct']:>5.2f} {fmt(x['delivery_delay_p50_s'], '>7.3f')} "
                  f"{fmt(x['delivery_delay_p99_s'], '>5.2f')} "
                  f"{fmt(x.get('sink_delay_p50_s'), '>8.3f')} "
                  f"{fmt(x.get('sink_delay_p99_s'), '>5.2f')}")
        print("rates in readings/s; CPU-s/M = gateway CPU seconds per million readings; "
              "dly = sensegate_delivery_delay_seconds\n(window close to 2xx, live runs only, upper bucket "
              "bound); sink = rollup-weighted (sink receive time - batch sent_at_ms)")
    print(f"\nelapsed {r['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()

"""systemd Type=notify and WatchdogSec=, without systemd: the test is the
service manager.

It binds the notify socket (AF_UNIX datagrams, SO_PASSCRED so each message
carries its sender's pid, as systemd checks for NotifyAccess=main), starts
the real gateway with NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID set the
way systemd sets them (WATCHDOG_PID=$$ in a shell that then execs the
gateway, so it is the gateway's own pid), and supervises it like systemd:
the watchdog is armed by READY=1 or the first WATCHDOG=1, a gap longer than
WATCHDOG_USEC gets SIGABRT (WatchdogSignal's default) plus SIGCONT, SIGKILL
if that does not end it, and a restart (Restart=on-failure).

Pass criteria (issue 10, part 5):
- READY=1 only once connected and subscribed: not while the broker is down
  (the gateway is started first and retries), and /healthz is 200 when it
  arrives; a broker restart later does not send READY=1 again but STATUS=
  says mqtt down, then up.
- WATCHDOG=1 about every WATCHDOG_USEC / 2, never a gap past WATCHDOG_USEC.
- SIGHUP: RELOADING=1 (with MONOTONIC_USEC) then READY=1.
- A stalled loop stops the pings: a SIGHUP whose configuration file is now
  a FIFO blocks the loop thread in open(2) while Paho's threads keep
  running (the process is not stopped, /healthz stops answering). The
  supervisor kills it, the restarted gateway sends READY=1 again, and every
  rollup reaches the sink (sink verify against the simulator's truth).
- SIGTERM: STOPPING=1, then exit 0; nothing from a pid that is not the
  gateway's.
A build without libsystemd generates a Type=simple unit: then this test
skips (77).
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from harness import (BUILD_DIR, SKIP, Env, Proc, Runner, binary, http_get, publish_sentinel,
                     stable_port, wait_for,
                     wait_log)

WATCHDOG_USEC = 2_000_000
WATCHDOG_S = WATCHDOG_USEC / 1e6
# sh -c SCRIPT sensegate BIN CONFIG: WATCHDOG_PID names the shell, which
# exec keeps as the gateway's pid. No core files from the SIGABRT.
WRAPPER = 'ulimit -c 0; WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$1" --config "$2"'


def unit_type():
    """Type= of the unit this build generated (CMake, SG_SYSTEMD)."""
    path = os.path.join(BUILD_DIR, "sensegate.service")
    with open(path) as f:
        for line in f:
            if line.startswith("Type="):
                return line.strip().split("=", 1)[1], path
    raise AssertionError(f"{path} has no Type= line")


class Supervisor:
    """The part of systemd this test needs: the notify socket, the watchdog,
    restart after a watchdog kill. One thread reads the socket and watches;
    the test thread reads `msgs` and `events` under `lock`."""

    def __init__(self, env, config):
        self.env = env
        self.config = config  # the restart uses whatever this is then
        self.path = os.path.join(env.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.lock = threading.Lock()
        self.msgs = []     # (mono_s, sender_pid, {key: value})
        self.events = []   # (mono_s, kind, pid, detail)
        self.pids = []     # every gateway pid started, in order
        self.gw = None
        self.deadline = None  # watchdog deadline of the current gateway
        self.runs = 0
        self.quit = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    # -- processes ------------------------------------------------------
    def start(self):
        """Starts a gateway under the notify socket and the watchdog."""
        self.runs += 1
        tag = f"gateway-{self.runs}"
        port_file = os.path.join(self.env.dir, "gateway.metrics-port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        gw = Proc(tag, ["sh", "-c", WRAPPER, "sensegate", binary("sensegate"), self.config],
                  os.path.join(self.env.dir, f"{tag}.log"), env=env)
        self.env.procs.append(gw)
        gw.exit_recorded = False
        with self.lock:
            self.gw = gw
            self.deadline = None
            self.pids.append(gw.pid)
            self.events.append((time.monotonic(), "start", gw.pid, tag))
        if not self.thread.is_alive():
            self.thread.start()
        return gw

    def current(self):
        with self.lock:
            return self.gw

    def close(self):
        self.quit = True
        if self.thread.is_alive():
            self.thread.join(timeout=15)
        self.sock.close()

    # -- the socket -----------------------------------------------------
    def _recv_all(self, timeout):
        """Reads every queued datagram, waiting up to `timeout` for the first."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            self.sock.settimeout(0)
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            fields = {}
            for line in data.decode(errors="replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            now = time.monotonic()
            with self.lock:
                self.msgs.append((now, pid, fields))
                if self.gw is not None and pid == self.gw.pid:
                    if "STOPPING" in fields:
                        self.deadline = None  # systemd stops the watchdog when stopping
                    elif "WATCHDOG" in fields or "READY" in fields:
                        self.deadline = now + WATCHDOG_S

    # -- the watchdog ---------------------------------------------------
    def _run(self):
        while not self.quit:
            self._recv_all(0.05)
            gw = self.current()
            if gw is None:
                continue
            if not gw.alive():
                if not gw.exit_recorded:
                    self._recv_all(0)  # whatever it sent before exiting comes first
                    gw.exit_recorded = True
                    with self.lock:
                        self.deadline = None
                        self.events.append((time.monotonic(), "exit", gw.pid, gw.p.returncode))
                continue
            with self.lock:
                missed = self.deadline is not None and time.monotonic() > self.deadline
                if missed:
                    self.events.append((time.monotonic(), "watchdog-kill", gw.pid,
                                        self._proc_state(gw.pid)))
                    self.deadline = None
            if missed:
                gw.send(signal.SIGABRT)
                gw.send(signal.SIGCONT)  # as systemd does after the kill signal
                if gw.wait(10) is None:
                    gw.p.kill()
                    gw.wait(10)
                self._recv_all(0)
                gw.exit_recorded = True
                with self.lock:
                    self.events.append((time.monotonic(), "exit", gw.pid, gw.p.returncode))
                self.start()

    @staticmethod
    def _proc_state(pid):
        """The state letter of /proc/PID/stat (R, S, D, T...)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "?"

    # -- queries for the test thread ------------------------------------
    def messages(self, pid=None, key=None):
        with self.lock:
            return [m for m in self.msgs
                    if (pid is None or m[1] == pid) and (key is None or key in m[2])]

    def events_of(self, kind):
        with self.lock:
            return [e for e in self.events if e[1] == kind]

    def wait_message(self, pid, key, timeout, after=0.0, value=None):
        def cond():
            for m in self.messages(pid, key):
                if m[0] > after and (value is None or value in m[2][key]):
                    return m
            return None
        return wait_for(cond, timeout, f"{key}{'~' + value if value else ''} from pid {pid}")

    def after(self, pid, msg):
        """The messages from pid received after msg, in arrival order."""
        ms = self.messages(pid)
        return ms[ms.index(msg) + 1:]


def metrics_port(env, gw):
    port_file = os.path.join(env.dir, "gateway.metrics-port")
    wait_for(lambda: (not gw.alive() and Env._died(gw)) or
             (os.path.exists(port_file) and open(port_file).read().strip()), 30,
             "gateway metrics port file")
    return int(open(port_file).read().strip())


def healthz(port):
    return http_get(port, "/healthz", timeout=2)[0]


def check_pings(sup, pid, until):
    """WATCHDOG=1 from pid before `until`: about every WATCHDOG_USEC / 2,
    never a gap a watchdog of WATCHDOG_USEC would have fired on."""
    ts = [m[0] for m in sup.messages(pid, "WATCHDOG") if m[0] < until]
    assert len(ts) >= 5, f"only {len(ts)} WATCHDOG=1 pings"
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
    median = gaps[len(gaps) // 2]
    print(f"watchdog: {len(ts)} pings, gaps min {gaps[0]:.3f} median {median:.3f} "
          f"max {gaps[-1]:.3f} s (limit {WATCHDOG_S:.1f} s)")
    assert 0.45 * WATCHDOG_S <= median <= 0.6 * WATCHDOG_S, f"median gap {median:.3f} s"
    assert gaps[0] >= 0.25 * WATCHDOG_S, f"pings too close: {gaps[0]:.3f} s"
    assert gaps[-1] < WATCHDOG_S, f"a {gaps[-1]:.3f} s gap: the watchdog would have fired"


def check_senders(sup):
    """NotifyAccess=main: every message came from a gateway's own pid."""
    bad = [m for m in sup.messages() if m[1] not in sup.pids]
    assert not bad, f"messages from pids that are not the gateway's: {bad[:3]}"


def test_ready_after_subscribe_watchdog_reload_stop():
    env = Env("systemd")
    sup = None
    ok = False
    try:
        kind, unit = unit_type()
        assert kind == "notify", f"{unit}: Type={kind}"
        text = open(unit).read()
        for want in ("NotifyAccess=main", "WatchdogSec=", "Restart=on-failure"):
            assert want in text, f"{unit} lacks {want}"

        sink = env.start_sink()
        bport = stable_port()  # the broker starts later, on this port
        cfg = env.gateway_config(bport, sink.port, mqtt__reconnect_min_ms=200,
                                 mqtt__reconnect_max_ms=1000)
        sup = Supervisor(env, cfg)
        gw = sup.start()
        mport = metrics_port(env, gw)

        # Broker down: the loop runs (pings, /healthz answers 503, retries)
        # but start-up is not finished.
        wait_log(gw, "reconnecting in", 15, "a refused connect and a retry")
        assert healthz(mport) == 503
        wait_for(lambda: len(sup.messages(gw.pid, "WATCHDOG")) >= 2, 10, "pings before READY")
        sup.wait_message(gw.pid, "STATUS", 10, value="mqtt down")
        assert not sup.messages(gw.pid, "READY"), "READY=1 with the broker down"
        assert "subscribed topics=" not in gw.output()

        broker = env.start_broker(port=bport)
        t_ready = sup.wait_message(gw.pid, "READY", 20)[0]
        assert healthz(mport) == 200, "READY=1 but /healthz is not 200"
        assert "subscribed topics=" in gw.output(), "READY=1 before the subscription"
        assert len(sup.messages(gw.pid, "READY")) == 1

        # SIGHUP: RELOADING=1 (with the monotonic clock), then READY=1.
        t_hup = time.monotonic()
        gw.send(signal.SIGHUP)
        rel = sup.wait_message(gw.pid, "RELOADING", 10, after=t_hup)
        usec = int(rel[2]["MONOTONIC_USEC"])
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now_usec - usec < 10_000_000, (usec, now_usec)
        wait_for(lambda: any("READY" in m[2] for m in sup.after(gw.pid, rel)), 10,
                 "READY=1 after RELOADING=1")
        wait_log(gw, "SIGHUP: reloaded", 10)

        # A broker restart: STATUS says so, READY=1 is not sent again.
        t_down = time.monotonic()
        broker = env.restart_broker(broker)
        down = sup.wait_message(gw.pid, "STATUS", 20, after=t_down, value="mqtt down")
        sup.wait_message(gw.pid, "STATUS", 20, after=down[0], value="mqtt up: subscribed")
        wait_for(lambda: healthz(mport) == 200, 20, "/healthz 200 after the broker restart")
        assert len(sup.messages(gw.pid, "READY")) == 2, "READY=1 again after a reconnect"

        wait_for(lambda: len(sup.messages(gw.pid, "WATCHDOG")) >= 7, 15, "seven pings")
        check_pings(sup, gw.pid, time.monotonic())

        # SIGTERM: STOPPING=1 first, then a clean exit.
        gw.send(signal.SIGTERM)
        wait_for(lambda: sup.events_of("exit"), 30, "the gateway to exit")
        _, _, pid, rc = sup.events_of("exit")[0]
        assert rc == 0, f"exit code {rc}"
        order = [k for _, p, f in sup.messages(pid) for k in ("READY", "STOPPING") if k in f]
        assert order[-1] == "STOPPING" and order.count("STOPPING") == 1, order
        assert not sup.events_of("watchdog-kill"), sup.events_of("watchdog-kill")
        check_senders(sup)
        ok = True
    finally:
        if sup:
            sup.close()
        env.close(failed=not ok)


SIM_ARGS = ["--sensors", "80", "--duration-s", "120", "--speedup", "10", "--seed", "5",
            "--readings-per-batch", "10", "--dup-frac", "0.01", "--ooo-frac", "0.01"]


def test_stalled_loop_restarted_by_watchdog_loses_nothing():
    env = Env("systemd-wd")
    sup = None
    ok = False
    try:
        if unit_type()[0] != "notify":
            raise AssertionError("not a notify build")
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, mqtt__reconnect_min_ms=200,
                                 mqtt__reconnect_max_ms=1000, limits__max_payload_bytes=65536)
        sup = Supervisor(env, cfg)
        gw = sup.start()
        sup.wait_message(gw.pid, "READY", 30)
        mport = metrics_port(env, gw)
        sim = env.start_sim(broker.port, *SIM_ARGS)
        wait_for(lambda: accepted(mport) > 300, 30, "readings to flow")
        wait_for(lambda: len(sup.messages(gw.pid, "WATCHDOG")) >= 2, 10, "pings before the stall")

        # Stall the loop: the next reload opens a FIFO nobody writes to.
        # The restart uses an identical regular file.
        restart_cfg = os.path.join(env.dir, "gateway-restart.yaml")
        shutil.copy(cfg, restart_cfg)
        sup.config = restart_cfg
        os.unlink(cfg)
        os.mkfifo(cfg)
        t_hup = time.monotonic()
        gw.send(signal.SIGHUP)
        rel = sup.wait_message(gw.pid, "RELOADING", 10, after=t_hup)
        # Only the loop is stuck: the process runs (not stopped), the
        # metrics listener (on the loop) stops answering.
        assert Supervisor._proc_state(gw.pid) != "T"
        try:
            code = http_get(mport, "/healthz", timeout=0.5)[0]
            stalled = False
        except OSError:  # socket.timeout / URLError
            stalled = True
        assert stalled, f"/healthz answered {code} during the stall"

        kill = wait_for(lambda: sup.events_of("watchdog-kill"), 3 * WATCHDOG_S,
                        "the watchdog to kill the stalled gateway")[0]
        t_kill, _, old_pid, state = kill
        assert old_pid == gw.pid and state in ("S", "D", "R"), (old_pid, state)
        late = [m for m in sup.after(old_pid, rel) if "WATCHDOG" in m[2] or "READY" in m[2]]
        assert not late, f"the stalled loop still sent {late}"
        last_ping = max(m[0] for m in sup.messages(old_pid, "WATCHDOG"))
        assert t_kill - last_ping >= WATCHDOG_S
        wait_for(lambda: any(e[2] == old_pid for e in sup.events_of("exit")), 20,
                 "the stalled gateway to die")
        rc = [e[3] for e in sup.events_of("exit") if e[2] == old_pid][0]
        assert rc in (-signal.SIGABRT, -signal.SIGKILL), f"stalled gateway ended with {rc}"

        # The restarted gateway: READY=1 again, then it takes the rest.
        wait_for(lambda: len(sup.pids) == 2, 20, "a restart")
        gw2 = sup.current()
        sup.wait_message(gw2.pid, "READY", 60)
        mport = metrics_port(env, gw2)
        summary = env.finish_sim(sim, timeout=120)
        publish_sentinel(env, broker.port, 70000)
        wait_for(lambda: metric(mport, "sensegate_payloads_too_large_total") >= 1, 60,
                 "the sentinel (every earlier message taken)")

        gw2.send(signal.SIGTERM)
        wait_for(lambda: any(e[2] == gw2.pid for e in sup.events_of("exit")), 30,
                 "the restarted gateway to exit")
        rc = [e[3] for e in sup.events_of("exit") if e[2] == gw2.pid][0]
        assert rc == 0, f"exit code {rc}"
        assert sup.messages(gw2.pid, "STOPPING"), "no STOPPING=1"
        assert len(sup.events_of("watchdog-kill")) == 1, sup.events_of("watchdog-kill")
        check_senders(sup)
        assert "recovered records=" in gw2.output(), "the restart replayed no journal"

        r = subprocess.run([binary("sensegate-sink"), "verify", "--truth", summary["truth"],
                            "--received", sink.out, "--ignore", "duplicates,late"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode()
        print(out.strip())
        assert r.returncode == 0, out
        assert env.sink_stats(sink)["conflicts"] == 0
        ok = True
    finally:
        if sup:
            sup.close()
        env.close(failed=not ok)


def metric(port, name):
    status, body = http_get(port, "/metrics", timeout=2)
    assert status == 200, body
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def accepted(port):
    return metric(port, 'sensegate_readings_total{result="accepted"}')


if __name__ == "__main__":
    try:
        kind, unit = unit_type()
    except OSError as e:
        print(f"cannot read the generated unit: {e}")
        sys.exit(1)
    if kind != "notify":
        print(f"SKIP: {unit} is Type={kind}: built without libsystemd (SG_SYSTEMD)")
        sys.exit(SKIP)
    r = Runner()
    r.run(test_ready_after_subscribe_watchdog_reload_stop)
    r.run(test_stalled_loop_restarted_by_watchdog_loses_nothing)
    r.finish()

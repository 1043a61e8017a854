"""sensegate-top, the operators' live view, against a real gateway.

--once is checked for scripts: while the simulator publishes it says FLOWING
with non-zero accepted readings per second; after the run its totals equal
/metrics and the worst drop reasons are listed in order; against a dead port
it says DOWN and exits 1. The interactive view is checked in a real terminal:
tmux runs it in a detached session and capture-pane reads the screen, then
'q' ends it. Without tmux the interactive part is a skip (exit 77), never a
pass.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from harness import BUILD_DIR, SKIP, Env, Runner, free_port, wait_for, wait_log

# The gateway refuses to run as root unless told (CI runs as root).
ROOT_OK = {"allow_root": True} if os.geteuid() == 0 else {}

FAULTS = ["--dup-frac", "0.03", "--late-frac", "0.01", "--invalid-frac", "0.01",
          "--malformed-frac", "0.01"]


def top_binary():
    path = os.environ.get("SG_TOP_BIN") or os.path.join(BUILD_DIR, "tools", "sensegate-top")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: the top-level CMakeLists.txt needs "
                           "add_subdirectory(tools)")
    return path


def top_once(port, interval="1"):
    r = subprocess.run([top_binary(), "--once", "--url", f"127.0.0.1:{port}",
                        "--interval", interval], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return r.returncode, r.stdout.decode()


def row(out, label):
    """(total, rate) of a READINGS/DROPS row like '  accepted   1234   56.0   97.0%'."""
    m = re.search(rf"^\s+{re.escape(label)}\s+(\d+)\s+(\S+)", out, re.M)
    assert m, f"no row '{label}' in:\n{out}"
    return int(m.group(1)), (None if m.group(2) == "-" else float(m.group(2)))


class Stack:
    """broker + sink + gateway, and a simulator publishing in the background."""

    def __init__(self, name):
        self.env = Env(name)
        self.ok = False

    def __enter__(self):
        env = self.env
        self.broker = env.start_broker()
        self.sink = env.start_sink()
        cfg = env.gateway_config(self.broker.port, self.sink.port, **ROOT_OK)
        self.gw = env.start_gateway(cfg)
        return self

    def __exit__(self, et, ev, tb):
        self.env.close(failed=et is not None)
        return False


def test_once_while_flowing_and_after():
    with Stack("top-once") as st:
        env, gw = st.env, st.gw
        # About 8 s of real time: 160 s simulated at 20x.
        sim = env.start_sim(st.broker.port, "--sensors", "100", "--duration-s", "160",
                            "--speedup", "20", "--seed", "21", *FAULTS)
        wait_for(lambda: env.metric(gw, 'sensegate_readings_total{result="accepted"}') > 0, 30,
                 "first accepted readings")
        code, out = top_once(gw.metrics_port)
        assert code == 0, out
        print(out)
        assert re.search(r"^STATE\s+FLOWING\s+mqtt up", out, re.M), out
        assert "gateway gw-test-001" in out, out
        total, per_s = row(out, "accepted")
        assert total > 0 and per_s is not None and per_s > 0, out
        for section in ("READINGS", "ROLLUPS", "BATCHES", "SPOOL", "DROPS", "PROCESS"):
            assert re.search(rf"^{section}", out, re.M), f"no {section} in:\n{out}"
        assert "\033[" not in out, "--once must not print escapes"

        summary = env.finish_sim(sim)
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total")
                 >= summary["payloads_sent"], 60, "every payload")
        m = env.metrics(gw)
        code, out = top_once(gw.metrics_port, interval="0")
        assert code == 0, out
        for verdict in ("accepted", "duplicate", "late", "invalid"):
            t, rate = row(out, verdict)
            want = int(m[f'sensegate_readings_total{{result="{verdict}"}}'])
            assert t == want == summary["expected"][verdict], (verdict, t, want, out)
            assert rate is None, "--interval 0 prints totals only"
        # Drops, worst first: the listed totals never increase down the list.
        drops = out.split("DROPS", 1)[1].split("PROCESS", 1)[0]
        totals = [int(x) for x in re.findall(r"^\s+\S.*?\s(\d+)\s+\S+\s*$", drops, re.M)]
        assert len(totals) >= 3 and totals == sorted(totals, reverse=True), drops
        dup_total, _ = row(drops, "duplicate")
        assert dup_total == summary["expected"]["duplicate"], drops
        dec_total, _ = row(drops, "decode error")
        assert dec_total == summary["malformed_payloads"], drops
        st.ok = True


def test_once_gateway_down():
    port = free_port()
    code, out = top_once(port, interval="0")
    assert code == 1, out
    assert re.search(r"^STATE\s+DOWN", out, re.M), out
    r = subprocess.run([top_binary(), "--interval", "x"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    assert r.returncode == 2 and b"--interval" in r.stdout, r.stdout


def test_live_view_in_tmux():
    tmux = shutil.which("tmux")
    if not tmux:
        print("SKIP: tmux not found (scripts/install-deps.sh installs it)")
        sys.exit(SKIP)
    with Stack("top-tmux") as st:
        env, gw = st.env, st.gw
        sock = f"sg-top-{os.getpid()}"
        tm = [tmux, "-L", sock, "-f", "/dev/null"]
        env.cleanups.append(lambda: subprocess.run(tm + ["kill-server"],
                                                   stderr=subprocess.DEVNULL))
        sim = env.start_sim(st.broker.port, "--sensors", "80", "--duration-s", "200",
                            "--speedup", "20", "--seed", "5", *FAULTS)
        subprocess.run(tm + ["new-session", "-d", "-s", "top", "-x", "132", "-y", "45",
                             f"TERM=xterm-256color {top_binary()} --url "
                             f"127.0.0.1:{gw.metrics_port} --interval 0.5"], check=True,
                       env=dict(os.environ, TERM="xterm-256color"))

        def screen():
            r = subprocess.run(tm + ["capture-pane", "-p", "-t", "top"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
            return r.stdout.decode()

        def flowing():
            s = screen()
            mt = re.search(r"^\s+accepted\s+(\d+)\s+([\d.]+)", s, re.M)
            return ("FLOWING" in s and mt and float(mt.group(2)) > 0) and s

        s = wait_for(flowing, 30, "live view showing FLOWING with a rate", interval=0.2)
        assert "q quits" in s and "SPOOL" in s and "DROPS" in s, s
        # The screen is redrawn: the accepted total grows between captures.
        first = row(s, "accepted")[0]
        wait_for(lambda: row(screen(), "accepted")[0] > first, 10, "the view to refresh")
        # Colour codes reach the terminal (capture-pane -e keeps them).
        esc = subprocess.run(tm + ["capture-pane", "-p", "-e", "-t", "top"],
                             stdout=subprocess.PIPE).stdout.decode()
        assert "\033[" in esc, esc
        subprocess.run(tm + ["send-keys", "-t", "top", "q"], check=True)
        wait_for(lambda: subprocess.run(tm + ["has-session", "-t", "top"],
                                        stderr=subprocess.DEVNULL).returncode != 0, 10,
                 "q to end the live view")
        env.finish_sim(sim)
        st.ok = True


def test_sighup_rediffs_topics():
    """SIGHUP with a new mqtt.topics unsubscribes the removed filters and
    subscribes the added ones on the live session, logs each change, and
    the message counter shows which filters are in force."""
    env = Env("reload-topics")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, mqtt__topics=["nothing/#"], **ROOT_OK)
        gw = env.start_gateway(cfg)
        sim_args = ("--sensors", "20", "--duration-s", "20", "--speedup", "40")
        env.run_sim(broker.port, *sim_args, "--seed", "1", tag="sim1")
        assert env.metric(gw, "sensegate_mqtt_messages_total") == 0

        env.gateway_config(broker.port, sink.port, mqtt__topics=["sensors/#", "other/+"],
                           **ROOT_OK)
        off = len(gw.output())
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: mqtt.topics: subscribing sensors/#", 10, after=off)
        wait_log(gw, "SIGHUP: mqtt.topics: subscribing other/+", 10, after=off)
        wait_log(gw, "SIGHUP: mqtt.topics: unsubscribing nothing/#", 10, after=off)
        wait_log(gw, "unsubscribe acknowledged by the broker", 10, after=off)
        wait_log(gw, "reloaded", 10, after=off)
        # One SUBSCRIBED answer per added filter.
        wait_for(lambda: gw.output().count("subscribed topics=2", off) >= 2, 10,
                 "both SUBACKs")
        s2 = env.run_sim(broker.port, *sim_args, "--seed", "2", tag="sim2")
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total") == s2["payloads_sent"],
                 30, "the messages of the second run")

        env.gateway_config(broker.port, sink.port, mqtt__topics=["nothing/#"], **ROOT_OK)
        off = len(gw.output())
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: mqtt.topics: unsubscribing sensors/#", 10, after=off)
        wait_log(gw, "unsubscribe acknowledged by the broker", 10, after=off)
        env.run_sim(broker.port, *sim_args, "--seed", "3", tag="sim3")
        # A marker publish on a subscribed filter proves the gateway has read
        # everything the broker routed to it before it.
        env.gateway_config(broker.port, sink.port, mqtt__topics=["nothing/#", "sensors/#"],
                           **ROOT_OK)
        off = len(gw.output())
        gw.send(signal.SIGHUP)
        wait_log(gw, "SIGHUP: mqtt.topics: subscribing sensors/#", 10, after=off)
        wait_for(lambda: gw.output().count("subscribed topics=2", off) >= 1, 10, "the SUBACK")
        s4 = env.run_sim(broker.port, "--sensors", "5", "--duration-s", "5", "--speedup", "40",
                         "--seed", "4", tag="sim4")
        want = s2["payloads_sent"] + s4["payloads_sent"]
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total") >= want, 30,
                 "the marker run")
        assert env.metric(gw, "sensegate_mqtt_messages_total") == want, \
            "messages published while sensors/# was unsubscribed reached the gateway"
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    r = Runner()
    for t in (test_once_gateway_down, test_once_while_flowing_and_after, test_sighup_rediffs_topics,
              test_live_view_in_tmux):
        r.run(t)
    r.finish()

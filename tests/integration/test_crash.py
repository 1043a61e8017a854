"""kill -9 the gateway at several points of a run and check nothing is lost.

Pass criteria (issue 3): after three kill -9 / restart cycles -- mid-window
while the fleet publishes, a second time mid-run, and once while batches are
in flight to a slow backend -- every rollup at the sink matches the
simulator's ground truth and no rollup arrives twice. The gateway keeps a
persistent MQTT session (the broker queues what is published while it is
down) and replays its ingest journal at start. Fields a crash may
legitimately change are not compared: `duplicates` and `late` (a message
that was journaled but whose PUBACK never left is redelivered and counted
once more as a duplicate -- see docs/DURABILITY.md).
"""
import os
import shutil
import signal
import subprocess
import time

from harness import Env, Runner, binary, publish_sentinel, wait_for

SIM_ARGS = ["--sensors", "150", "--duration-s", "180", "--speedup", "15", "--seed", "21",
            "--readings-per-batch", "10", "--dup-frac", "0.01", "--ooo-frac", "0.01",
            "--invalid-frac", "0.01", "--malformed-frac", "0.005"]


def start_sim(env, broker_port, tag="sim"):
    truth = os.path.join(env.dir, f"{tag}-truth.jsonl")
    log = open(os.path.join(env.dir, f"{tag}.log"), "wb")
    p = subprocess.Popen([binary("sensegate-sim"), "--uri", f"tcp://127.0.0.1:{broker_port}",
                          "--truth", truth, "--client-id", f"sim-{os.getpid()}", *SIM_ARGS],
                         stdout=log, stderr=subprocess.STDOUT)
    return p, truth, log


def restart(env, gw, cfg, n):
    """kill -9, keep the log, start again on the same spool and client id."""
    gw.kill9()
    shutil.copy(gw.log_path, os.path.join(env.dir, f"gateway-run{n}.log"))
    return env.start_gateway(cfg)


def test_kill9_three_times_nothing_lost():
    env = Env("crash")
    ok = False
    sim_log = None
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, mqtt__reconnect_min_ms=200,
                                 limits__max_payload_bytes=65536, backend__max_batch_delay_ms=300)
        gw = env.start_gateway(cfg)
        sim, truth, sim_log = start_sim(env, broker.port)

        # 1: mid-window, while the fleet publishes.
        wait_for(lambda: env.metrics(gw).get("sensegate_readings_total{result=\"accepted\"}", 0)
                 > 2000, 30, "readings to flow")
        gw = restart(env, gw, cfg, 1)
        # 2: later in the run, after some windows were spooled and delivered.
        wait_for(lambda: env.sink_stats(sink)["batches"] >= 3, 30, "batches at the sink")
        wait_for(lambda: env.metrics(gw).get("sensegate_readings_total{result=\"accepted\"}", 0)
                 > 2000, 30, "readings to flow again")
        gw = restart(env, gw, cfg, 2)

        # 3: while batches are in flight to a slow backend, fleet still publishing.
        env.sink_control(sink, mode="slow", slow_ms=1500)
        wait_for(lambda: env.metrics(gw).get("sensegate_forward_inflight", 0) >= 1, 30,
                 "a request in flight")
        assert sim.poll() is None, "the fleet finished before the third kill; lengthen the run"
        gw = restart(env, gw, cfg, 3)
        env.sink_control(sink, mode="ok")
        assert sim.wait(timeout=120) == 0, "simulator failed"

        publish_sentinel(env, broker.port, 70000)
        wait_for(lambda: env.metrics(gw).get("sensegate_payloads_too_large_total", 0) >= 1, 60,
                 "the sentinel (every earlier message taken)")
        m = env.metrics(gw)
        rc = gw.stop(timeout=30)
        assert rc == 0, f"gateway exit code {rc}"

        logs = "".join(open(os.path.join(env.dir, f"gateway-run{i}.log")).read()
                       for i in (1, 2, 3)) + gw.output()
        assert "recovered records=" in logs, "no journal replay was logged"
        r = subprocess.run([binary("sensegate-sink"), "verify", "--truth", truth,
                            "--received", sink.out, "--ignore", "duplicates,late"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode()
        print(out.strip())
        assert r.returncode == 0, out
        st = env.sink_stats(sink)
        print(f"sink: batches={st['batches']} duplicate_batches={st['duplicate_batches']} "
              f"conflicts={st['conflicts']}; last run replayed "
              f"{int(m.get('sensegate_journal_replayed_records_total', 0))} records")
        assert st["conflicts"] == 0, "a batch_id was reused for different content"
        ok = True
    finally:
        if sim_log:
            sim_log.close()
        env.close(failed=not ok)


if __name__ == "__main__":
    r = Runner()
    r.run(test_kill9_three_times_nothing_lost)
    r.finish()

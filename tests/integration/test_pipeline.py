"""End to end on real parts: mosquitto, sensegate-sim, sensegate, sensegate-sink.

Pass criteria (issue 2): readings the simulator sent in well-formed payloads
== accepted + duplicate + late + invalid (each equal to ground truth),
malformed payloads == decode errors, and every rollup at the sink matches the
simulator's brute-force ground truth.
"""
import signal
import sys

from harness import Env, Runner, check_identity, wait_for

FAULTS = ["--dup-frac", "0.02", "--ooo-frac", "0.02", "--late-frac", "0.01",
          "--invalid-frac", "0.01", "--malformed-frac", "0.01"]


def run_scenario(name, sim_args, gw_over=None, sink_args=(), during=None):
    env = Env(name)
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink(*sink_args)
        cfg = env.gateway_config(broker.port, sink.port, **(gw_over or {}))
        gw = env.start_gateway(cfg)
        summary = env.run_sim(broker.port, *sim_args)
        if during:
            during(env, gw, sink, summary)
        wait_for(lambda: env.metrics(gw).get("sensegate_mqtt_messages_total", 0)
                 >= summary["payloads_sent"], 60, "gateway to receive every payload")
        m = env.metrics(gw)
        got, problems = check_identity(summary, m)
        assert not problems, "\n".join(problems)
        rc = gw.stop(timeout=30)
        assert rc == 0, f"gateway exit code {rc}"
        code, out = env.verify(summary["truth"], sink.out)
        assert code == 0, out
        print(out.strip())
        ok = True
        return env, summary, m, sink
    finally:
        env.close(failed=not ok)


def test_all_faults_exact():
    run_scenario("faults", ["--sensors", "200", "--duration-s", "60", "--speedup", "20",
                            "--seed", "7", "--readings-per-batch", "10", *FAULTS])


def test_two_window_widths():
    run_scenario("widths", ["--sensors", "120", "--duration-s", "60", "--speedup", "20",
                            "--seed", "11", "--windows-ms", "5000,20000", *FAULTS],
                 gw_over={"windows_ms": [5000, 20000]})


def test_backend_503_then_ok_loses_nothing():
    def during(env, gw, sink, summary):
        # The sink answered 503 since start: batches were retried, none lost.
        wait_for(lambda: env.metrics(gw).get(
            'sensegate_forward_batches_total{result="retry"}', 0) >= 3, 30,
            "the gateway to retry on 503")
        env.sink_control(sink, mode="ok")

    run_scenario("backend503", ["--sensors", "100", "--duration-s", "40", "--speedup", "20",
                                "--seed", "3", *FAULTS],
                 sink_args=("--fail-503-ms", "600000"), during=during)


if __name__ == "__main__":
    r = Runner()
    for t in (test_all_faults_exact, test_two_window_widths, test_backend_503_then_ok_loses_nothing):
        r.run(t)
    r.finish()

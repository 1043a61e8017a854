#!/usr/bin/env python3
"""The first README command: run the whole pipeline once and show what it did.

A local mosquitto on a free loopback port, sensegate-sink (the simulated
city-brain backend), sensegate, and sensegate-sim playing a few minutes of a
city and MEMS sensor fleet faster than real time, with a sprinkle of every
fault (duplicates, out-of-order, late, invalid, malformed). Then: what the
simulator sent, what the gateway counted, what the sink received, and the
sink's verdict against the simulator's ground truth.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--sensors", type=int, default=400)
    ap.add_argument("--duration-s", type=int, default=240, help="simulated seconds")
    ap.add_argument("--speedup", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with all logs")
    a = ap.parse_args()
    harness.BUILD_DIR = os.path.abspath(a.build)

    env = harness.Env("demo", keep=a.keep)
    ok = False
    try:
        print(f"demo: working in {env.dir}")
        broker = env.start_broker()
        print(f"demo: mosquitto listening on 127.0.0.1:{broker.port}")
        sink = env.start_sink()
        print(f"demo: sensegate-sink listening on 127.0.0.1:{sink.port}")
        cfg = env.gateway_config(broker.port, sink.port, stats_interval_s=5)
        gw = env.start_gateway(cfg)
        print(f"demo: sensegate up, metrics on http://127.0.0.1:{gw.metrics_port}/metrics")
        print(f"demo: sensegate-sim: {a.sensors} sensors, {a.duration_s} s of city time "
              f"at {a.speedup}x ...", flush=True)
        t0 = time.monotonic()
        summary = env.run_sim(broker.port, "--sensors", str(a.sensors), "--duration-s",
                              str(a.duration_s), "--speedup", str(a.speedup), "--seed",
                              str(a.seed), "--dup-frac", "0.01", "--ooo-frac", "0.01",
                              "--late-frac", "0.005", "--invalid-frac", "0.005",
                              "--malformed-frac", "0.002", timeout=a.duration_s * 2 + 60)
        sim_s = time.monotonic() - t0
        harness.wait_for(lambda: env.metrics(gw).get("sensegate_mqtt_messages_total", 0)
                         >= summary["payloads_sent"], 60, "the gateway to take every payload")
        m = env.metrics(gw)
        got, problems = harness.check_identity(summary, m)
        rss = m.get("process_resident_memory_bytes", 0) / 1e6
        cpu = m.get("process_cpu_seconds_total", 0)
        rc = gw.stop(timeout=30)
        code, verdict = env.verify(summary["truth"], sink.out)
        st = env.sink_stats(sink)

        print()
        print("=== what happened ===")
        print(f"simulator   payloads sent        {summary['payloads_sent']:>10}"
              f"   (malformed {summary['malformed_payloads']})")
        print(f"            readings sent        {summary['readings_sent']:>10}"
              f"   in {sim_s:.1f} s = {summary['readings_sent'] / sim_s:,.0f} readings/s")
        print(f"gateway     accepted             {got['accepted']:>10}"
              f"   (ground truth {summary['expected']['accepted']})")
        print(f"            duplicate            {got['duplicate']:>10}"
              f"   (ground truth {summary['expected']['duplicate']})")
        print(f"            late                 {got['late']:>10}"
              f"   (ground truth {summary['expected']['late']})")
        print(f"            invalid              {got['invalid']:>10}"
              f"   (ground truth {summary['expected']['invalid']})")
        print(f"            decode errors        {int(m.get('sensegate_decode_errors_total', 0)):>10}")
        print(f"            rollups emitted      {int(m.get('sensegate_rollups_total', 0)):>10}")
        print(f"            RSS / CPU            {rss:>9.1f}M   {cpu:.2f} CPU-s; exit code {rc}")
        print(f"sink        batches received     {st.get('batches', 0):>10}")
        print(f"            rollups received     {st.get('rollups', 0):>10}")
        print(f"verdict     {verdict.strip()}")
        if problems:
            print("accounting problems:\n  " + "\n  ".join(problems))
        ok = code == 0 and not problems and rc == 0
        print("demo: OK — every reading accounted for, all rollups match" if ok else
              "demo: FAILED — see above")
    finally:
        env.close(failed=not ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Memory hygiene with valgrind (issue 5, item 7).

The ASan/UBSan build runs every test with LeakSanitizer; this one runs the
normal (uninstrumented) gateway under valgrind memcheck for one short end to
end scenario: a small fleet with every fault, a backend 503 burst, a
SIGTERM shutdown. memcheck also sees Debian's libraries (Paho, OpenSSL,
protobuf-c, curl, SQLite), which ASan cannot instrument.

Pass: exit status 0 with --error-exitcode=1 (no invalid read/write, no use of
uninitialised memory, no definitely lost block), and the rollups match
ground truth. Skips (77) without valgrind, and in a sanitizer build.
"""
import os
import shutil
import sys

from harness import SKIP, Env, Proc, Runner, binary, wait_for

FAULTS = ["--dup-frac", "0.02", "--ooo-frac", "0.02", "--late-frac", "0.01",
          "--invalid-frac", "0.01", "--malformed-frac", "0.01"]


def sanitized(path):
    with open(path, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data or b"libasan.so" in data


def test_gateway_under_valgrind():
    env = Env("valgrind")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink("--fail-503-ms", "1500")
        cfg = env.gateway_config(broker.port, sink.port, allow_root=True, spool__fsync=False)
        port_file = os.path.join(env.dir, "gateway.metrics-port")
        vlog = os.path.join(env.dir, "valgrind.log")
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full",
               "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
               "--error-exitcode=1", f"--log-file={vlog}", "--num-callers=30",
               binary("sensegate"), "--config", cfg]
        gw = Proc("gateway", cmd, os.path.join(env.dir, "gateway.log"))
        env.procs.append(gw)
        wait_for(lambda: (not gw.alive() and env._died(gw)) or
                 (os.path.exists(port_file) and open(port_file).read().strip()), 120,
                 "gateway (valgrind) metrics port")
        gw.metrics_port = int(open(port_file).read().strip())
        env.wait_healthy(gw, timeout=120)
        summary = env.run_sim(broker.port, "--sensors", "30", "--duration-s", "40",
                              "--speedup", "10", "--seed", "13", *FAULTS)
        wait_for(lambda: env.metrics(gw).get("sensegate_mqtt_messages_total", 0)
                 >= summary["payloads_sent"], 180, "every payload (valgrind is slow)")
        rc = gw.stop(timeout=180)
        report = open(vlog).read() if os.path.exists(vlog) else ""
        assert rc == 0, f"exit {rc} under valgrind:\n{report[-6000:]}"
        assert "definitely lost: 0 bytes" in report or "no leaks are possible" in report, \
            report[-4000:]
        code, out = env.verify(summary["truth"], sink.out)
        assert code == 0, out
        print("  " + [ln for ln in report.splitlines() if "ERROR SUMMARY" in ln][-1])
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    if not shutil.which("valgrind"):
        print("SKIP: valgrind not found")
        sys.exit(SKIP)
    if sanitized(binary("sensegate")):
        print("SKIP: sanitizer build (valgrind needs the uninstrumented binary)")
        sys.exit(SKIP)
    r = Runner()
    r.run(test_gateway_under_valgrind)
    r.finish()

"""Abuse test (issue 5, item 8): a hostile publisher beside the real fleet.

While sensegate-sim publishes a fleet (ids prefixed "fleet.", with
duplicates, out-of-order and late readings but no invalid or malformed ones
of its own), a hostile publisher (raw MQTT 3.1.1 over a socket, QoS 1, as
fast as the broker acks) sends on other topics a shuffled mix of

  newid     100 000 readings of 100 000 new sensor ids (max_series 20 000)
  nan       NaN / +Inf / -Inf values                 -> invalid{value}
  wildts    ts 0 and ts 10 days ahead                -> invalid{ts_past|ts_future}
  misc      kind 77, 3 values for a scalar, a space in the id
                                                     -> invalid{kind|channels|sensor_id}
  overbatch 1 500 readings in one batch (limit 1 000) -> invalid{value} + {batch_limit}
  garbage   bytes protobuf rejects (wire type 7)     -> decode_errors
  oversize  70 000 byte payloads (limit 65 536)      -> decode_errors + payloads_too_large

Pass:
- every hostile item is counted: decode errors, too-large payloads, each
  invalid reason and the accepted total equal what the publisher sent (the
  series cap lets exactly max_series - fleet series new ids in);
- the fleet's rollups (sensor ids "fleet.*") match its ground truth exactly;
- the gateway's peak RSS (VmHWM) stays under a bound derived from its caps.
"""
import math
import os
import random
import socket
import struct
import threading
import time

from harness import Env, Runner, read_jsonl, wait_for, http_get, parse_metrics

MAX_SERIES = 20000
MAX_PAYLOAD = 65536
MAX_READINGS = 1000
INBOX_BYTES = 4 << 20
FLEET_SENSORS = 60
NEW_IDS = 100000
PER_SERIES_BUDGET = 4096  # bytes per live series: record, dedup ring, one open window, sketch


# ---------------------------------------------------------------------------
# Minimal protobuf encoding of sensegate.v1.ReadingBatch

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field, data):
    return _varint((field << 3) | 2) + _varint(len(data)) + data


def _vi(field, n):
    return _varint(field << 3) + _varint(n)


def reading(sid, kind, ts, seq, values):
    body = _ld(1, sid.encode()) + _vi(2, kind) + _vi(3, ts) + _vi(4, seq)
    body += _ld(5, b"".join(struct.pack("<d", v) for v in values))
    return body


def batch(device, readings):
    return _ld(1, device.encode()) + b"".join(_ld(2, r) for r in readings)


# ---------------------------------------------------------------------------
# The hostile publisher: raw MQTT 3.1.1, QoS 1

def _mqtt_packet(ptype_flags, body):
    n = len(body)
    rl = bytearray()
    while True:
        b = n % 128
        n //= 128
        rl.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([ptype_flags]) + bytes(rl) + body


def _mqtt_str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


class HostilePublisher:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        cid = f"hostile-{os.getpid()}"
        body = _mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _mqtt_str(cid)
        self.sock.sendall(_mqtt_packet(0x10, body))
        connack = self._read_packet()
        assert connack[0] == 0x20 and connack[1][1] == 0, f"CONNACK {connack}"
        self.acked = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read_acks, daemon=True)
        self.reader.start()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def _read_packet(self):
        h = self._recv_exact(1)[0]
        mult, n = 1, 0
        while True:
            b = self._recv_exact(1)[0]
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return h, self._recv_exact(n) if n else b""

    def _read_acks(self):
        try:
            while True:
                h, _ = self._read_packet()
                if h & 0xF0 == 0x40:
                    with self.lock:
                        self.acked += 1
        except (OSError, ConnectionError):
            pass

    def publish_all(self, msgs):
        """msgs: [(topic, payload)]; QoS 1 with at most 200 unacknowledged."""
        pid = 0
        for i, (topic, payload) in enumerate(msgs):
            while True:
                with self.lock:
                    if i - self.acked < 200:
                        break
                time.sleep(0.0005)
            pid = pid % 65535 + 1
            body = _mqtt_str(topic) + struct.pack(">H", pid) + payload
            self.sock.sendall(_mqtt_packet(0x32, body))
        wait_for(lambda: self.acked >= len(msgs), 60, "PUBACKs for every hostile message")

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


def hostile_messages(now_ms, rng):
    """The hostile mix and what the gateway must count for it."""
    msgs = []
    exp = {"payloads": 0, "decode_errors": 0, "too_large": 0, "readings": 0, "newid": 0,
           "value": 0, "ts_past": 0, "ts_future": 0, "kind": 0, "channels": 0,
           "sensor_id": 0, "batch_limit": 0}

    def add(kind, topic, payload):
        msgs.append((topic, payload))
        exp["payloads"] += 1

    per = 200
    for b in range(NEW_IDS // per):
        rs = [reading(f"evil-{b * per + k:06d}", 1, now_ms, 1, [20.0]) for k in range(per)]
        add("newid", f"sensors/evil/flood/dev{b:04d}", batch(f"dev{b:04d}", rs))
        exp["readings"] += per
        exp["newid"] += per
    for b in range(50):
        vals = [float("nan"), float("inf"), float("-inf")]
        rs = [reading(f"evil-nan-{k}", 5, now_ms, k, [vals[k % 3]]) for k in range(20)]
        add("nan", "sensors/evil/nan/dev", batch("dev", rs))
        exp["readings"] += 20
        exp["value"] += 20
    for b in range(50):
        rs = []
        for k in range(20):
            if k % 2:
                rs.append(reading("evil-ts", 1, 0, k, [1.0]))
                exp["ts_past"] += 1
            else:
                rs.append(reading("evil-ts", 1, now_ms + 10 * 86400000, k, [1.0]))
                exp["ts_future"] += 1
        add("wildts", "sensors/evil/ts/dev", batch("dev", rs))
        exp["readings"] += 20
    for b in range(50):
        rs = [reading("evil-kind", 77, now_ms, 1, [1.0]),
              reading("evil-chan", 1, now_ms, 1, [1.0, 2.0, 3.0]),
              reading("evil id", 1, now_ms, 1, [1.0])]
        add("misc", "sensors/evil/misc/dev", batch("dev", rs))
        exp["readings"] += 3
        exp["kind"] += 1
        exp["channels"] += 1
        exp["sensor_id"] += 1
    for b in range(5):
        rs = [reading("evil-big", 1, now_ms, k, [float("nan")]) for k in range(1500)]
        p = batch("dev", rs)
        assert len(p) <= MAX_PAYLOAD, len(p)
        add("overbatch", "sensors/evil/big/dev", p)
        exp["readings"] += 1500
        exp["value"] += MAX_READINGS
        exp["batch_limit"] += 1500 - MAX_READINGS
    for b in range(200):
        add("garbage", "sensors/evil/junk/dev",
            b"\x0f" + bytes(rng.getrandbits(8) for _ in range(rng.randint(10, 2000))))
        exp["decode_errors"] += 1
    for b in range(50):
        add("oversize", "sensors/evil/huge/dev", b"\x0a" + b"\x00" * (MAX_PAYLOAD + 4464))
        exp["decode_errors"] += 1
        exp["too_large"] += 1
    rng.shuffle(msgs)
    return msgs, exp


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def uses_asan(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def test_hostile_publisher_beside_the_fleet():
    env = Env("abuse")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, allow_root=True,
                                 limits__max_series=MAX_SERIES,
                                 limits__max_payload_bytes=MAX_PAYLOAD,
                                 limits__max_readings_per_batch=MAX_READINGS,
                                 limits__inbox_bytes=INBOX_BYTES)
        gw = env.start_gateway(cfg)
        base_rss = vm_hwm(gw.pid)

        sim = env.start_sim(broker.port, "--sensors", str(FLEET_SENSORS), "--duration-s", "120",
                            "--speedup", "20", "--seed", "21", "--id-prefix", "fleet.",
                            "--dup-frac", "0.02", "--ooo-frac", "0.02", "--late-frac", "0.01")
        # Every fleet series exists before the flood can fill the table.
        wait_for(lambda: env.metric(gw, "sensegate_active_series") >= FLEET_SENSORS, 60,
                 "every fleet series in the gateway")
        fleet_series = int(env.metric(gw, "sensegate_active_series"))
        assert fleet_series == FLEET_SENSORS, fleet_series

        rng = random.Random(5)
        msgs, exp = hostile_messages(int(time.time() * 1000), rng)
        pub = HostilePublisher(broker.port)
        t0 = time.monotonic()
        pub.publish_all(msgs)
        pub.close()
        print(f"  hostile: {len(msgs)} payloads, {exp['readings']} readings in "
              f"{time.monotonic() - t0:.1f}s")
        assert sim.alive() or True  # the fleet may already be done; both are fine

        summary = env.finish_sim(sim)
        assert summary["expected"]["invalid"] == 0 and summary["malformed_payloads"] == 0
        total_payloads = summary["payloads_sent"] + exp["payloads"]
        wait_for(lambda: env.metric(gw, "sensegate_mqtt_messages_total") >= total_payloads, 120,
                 "gateway to receive every payload")
        m = env.metrics(gw)
        hwm = vm_hwm(gw.pid)

        def inv(reason):
            return int(m.get(f'sensegate_invalid_readings_total{{reason="{reason}"}}', 0))

        def res(r):
            return int(m.get(f'sensegate_readings_total{{result="{r}"}}', 0))

        slots = MAX_SERIES - fleet_series
        problems = []

        def want(name, got, expected):
            if got != expected:
                problems.append(f"{name}: gateway {got}, expected {expected}")

        want("messages", int(m["sensegate_mqtt_messages_total"]), total_payloads)
        want("decode_errors", int(m["sensegate_decode_errors_total"]), exp["decode_errors"])
        want("payloads_too_large", int(m["sensegate_payloads_too_large_total"]), exp["too_large"])
        for reason in ("value", "ts_past", "ts_future", "kind", "channels", "sensor_id",
                       "batch_limit"):
            want(f"invalid{{{reason}}}", inv(reason), exp[reason])
        want("invalid{series_limit}", inv("series_limit"), exp["newid"] - slots)
        want("accepted", res("accepted"), summary["expected"]["accepted"] + slots)
        want("duplicate", res("duplicate"), summary["expected"]["duplicate"])
        want("late", res("late"), summary["expected"]["late"])
        want("invalid total", res("invalid"),
             exp["readings"] - exp["newid"] + (exp["newid"] - slots))
        want("every reading has a verdict", sum(res(r) for r in
                                                ("accepted", "duplicate", "late", "invalid")),
             summary["readings_sent"] + exp["readings"])
        want("active series", int(m["sensegate_active_series"]), MAX_SERIES)

        # Memory: the caps bound it (a bound, not a measurement of need).
        caps = (MAX_SERIES * PER_SERIES_BUDGET + INBOX_BYTES + 16 * MAX_PAYLOAD +
                64 * MAX_READINGS * 2 + (32 << 20))
        asan = uses_asan(gw.pid)
        bound = base_rss + (3 * caps + (512 << 20) if asan else caps)
        print(f"  VmHWM {hwm >> 20} MiB (start {base_rss >> 20} MiB), bound {bound >> 20} MiB"
              f"{' (ASan build)' if asan else ''}")
        if hwm > bound:
            problems.append(f"VmHWM {hwm} over the bound {bound}")
        assert not problems, "\n".join(problems)

        assert gw.stop(timeout=60) == 0
        # The fleet's rollups, and only those, against its truth.
        fleet_out = os.path.join(env.dir, "fleet-rollups.jsonl")
        n = 0
        with open(fleet_out, "w") as f, open(sink.out) as src:
            for line in src:
                if line.endswith("\n") and '"sensor_id":"fleet.' in line:
                    f.write(line)
                    n += 1
        evil = sum(1 for r in read_jsonl(sink.out) if r["sensor_id"].startswith("evil-"))
        assert evil == slots, f"{evil} rollups of accepted hostile series, expected {slots}"
        code, out = env.verify(summary["truth"], fleet_out)
        assert code == 0, out
        print(f"  {out.strip()}")
        ok = True
    finally:
        env.close(failed=not ok)


def test_idle_series_evicted_and_cap_recovers():
    """A flood of one-shot sensor ids fills max_series; once they are idle
    for series_idle_ms they are evicted (counted), and new ids are accepted
    again: the cardinality cap bounds memory without locking out sensors."""
    env = Env("abuse-evict")
    ok = False
    try:
        broker = env.start_broker()
        sink = env.start_sink()
        cfg = env.gateway_config(broker.port, sink.port, allow_root=True, windows_ms=[1000],
                                 allowed_lateness_ms=0, validation__max_future_ms=1000,
                                 limits__max_series=100, limits__series_idle_ms=3000)
        gw = env.start_gateway(cfg)
        pub = HostilePublisher(broker.port)
        # Timestamps 800 ms ahead (max_future_ms is 1000): with 1 s windows
        # and no lateness, a reading stamped "now" is late whenever the
        # gateway's clock crosses a second boundary before it arrives.
        now = int(time.time() * 1000) + 800
        msgs = [(f"sensors/evil/once/d{b}", batch(f"d{b}", [
            reading(f"once-{b * 50 + k:04d}", 1, now, 1, [1.0]) for k in range(50)]))
            for b in range(6)]
        pub.publish_all(msgs)
        wait_for(lambda: env.metric(gw, 'sensegate_invalid_readings_total{reason="series_limit"}')
                 == 200, 30, "200 readings over max_series")
        assert env.metric(gw, 'sensegate_readings_total{result="accepted"}') == 100
        wait_for(lambda: env.metric(gw, "sensegate_series_evicted_total") == 100, 30,
                 "the 100 idle series to be evicted")
        assert env.metric(gw, "sensegate_active_series") == 0
        now = int(time.time() * 1000) + 800
        pub.publish_all([("sensors/evil/again/d", batch("d", [
            reading(f"again-{k:03d}", 1, now, 1, [1.0]) for k in range(100)]))])
        wait_for(lambda: env.metric(gw, 'sensegate_readings_total{result="accepted"}') == 200, 30,
                 "new ids accepted again after eviction")
        assert env.metric(gw, 'sensegate_invalid_readings_total{reason="series_limit"}') == 200
        pub.close()
        assert gw.stop(timeout=30) == 0
        ok = True
    finally:
        env.close(failed=not ok)


if __name__ == "__main__":
    r = Runner()
    r.run(test_hostile_publisher_beside_the_fleet)
    r.run(test_idle_series_evicted_and_cap_recovers)
    r.finish()

"""Telemetry: metrics from emitted objects, ``/healthz`` + Prometheus ``/metrics``, MQTT against a real mosquitto."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sdk.console import Output
from sdk.telemetry import Metrics, MetricsServer, MqttSink, flatten

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?([0-9.]+([eE][-+]?[0-9]+)?|NaN|\+Inf)$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect_objects(n: int = 100) -> list[dict]:
    """What the detect app emits: frames with latencies, some detections, a running dropped count."""
    objs = []
    for i in range(n):
        dets = [{"label": "car", "class_id": 2, "score": 0.9, "box": [1, 2, 3, 4]}] if i % 10 == 0 else []
        objs.append({"frame": i, "time": i / 30, "detections": dets, "dropped": i // 20,
                     "latency_ms": {"pre": 1.0, "infer": float(i + 1), "post": 0.5}})
    return objs


def test_metrics_from_emitted_objects():
    m = Metrics("detect")
    out = Output(json_mode=True, stream=open("/dev/null", "w"), sinks=[m])
    for obj in detect_objects():
        out.emit(obj)
    out.emit({"event": "trigger", "word": "x", "time": 1.0, "score": 0.9})
    snap = m.snapshot()
    assert snap["frames"] == 100 and snap["dropped_frames"] == 4 and snap["events"] == 11
    assert snap["latency_infer_p50_ms"] == pytest.approx(50.5) and snap["latency_infer_p90_ms"] == pytest.approx(90.1)
    assert snap["fps"] > 0


def test_prometheus_format():
    m = Metrics('we"ird')
    for obj in detect_objects():
        m(obj)
    text = m.prometheus()
    assert text.endswith("\n")
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter", "summary") and name not in typed
            typed.add(name)
        elif not line.startswith("# HELP"):
            assert SAMPLE.match(line), line
            assert re.match(r"[a-z_]+", line).group(0).removesuffix("_sum").removesuffix("_count") in typed, line
    assert 'edgesdk_events_total{app="we\\"ird",event="detection:car"} 10' in text
    assert 'edgesdk_latency_ms{app="we\\"ird",stage="infer",quantile="0.5"} 50.5' in text
    assert 'edgesdk_latency_ms_count{app="we\\"ird",stage="infer"} 100' in text
    assert 'edgesdk_dropped_frames_total{app="we\\"ird"} 4' in text


def test_metrics_server_http():
    m = Metrics("trigger-word")
    server = MetricsServer(m, 0, info={"bundle": "abc"})
    try:
        m({"event": "trigger", "word": "hi", "time": 1.0, "score": 0.9})
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/healthz") as r:
            health = json.loads(r.read())
            assert r.headers["Content-Type"] == "application/json"
        assert health["status"] == "ok" and health["bundle"] == "abc" and health["events"] == 1
        with urllib.request.urlopen(base + "/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'edgesdk_events_total{app="trigger-word",event="trigger"} 1' in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/nope")
        assert e.value.code == 404
        # a frame source that went quiet makes the service unhealthy (503)
        m({"frame": 0, "detections": []})
        server.stall_s = 0.05
        time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/healthz")
        assert e.value.code == 503 and json.loads(e.value.read())["status"] == "stalled"
    finally:
        server.close()


def test_flatten_is_home_assistant_friendly():
    flat = flatten({"frame": 1, "latency_ms": {"pre": 1.0, "infer": 2.0}, "detections": [{"label": "a"}]})
    assert flat == {"frame": 1, "latency_ms_pre": 1.0, "latency_ms_infer": 2.0, "detections": [{"label": "a"}]}


class Broker:
    """A mosquitto on 127.0.0.1 (restartable on the same port, to test reconnects)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture()
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """Collects messages under ``topic`` with paho (a second, independent client)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda c, *a: (c.subscribe(topic, qos=1), None)[1]
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = lambda c, u, msg: self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10)

    def wait_for(self, pred, timeout: float = 10.0) -> list:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(self.messages):
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"timed out; got {self.messages}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def events(msgs):
    return [json.loads(p) for t, p, _ in msgs if t.endswith("/events")]


def test_mqtt_events_stats_status(broker):
    sub = Subscriber(broker.port, "edgesdk/#")
    m = Metrics("detect")
    sink = MqttSink("detect", m, port=broker.port, device="pi 1", stats_interval_s=0.2)
    out = Output(json_mode=True, stream=open("/dev/null", "w"), sinks=[m, sink])
    for obj in detect_objects(30):
        out.emit(obj)
    sub.wait_for(lambda ms: len(events(ms)) == 3 and any(t.endswith("/stats") for t, _, _ in ms))
    sink.close()
    msgs = sub.wait_for(lambda ms: any(t.endswith("/status") and p == b"offline" for t, p, _ in ms))
    sub.close()
    topics = {t for t, _, _ in msgs}
    assert topics == {"edgesdk/pi_1/detect/events", "edgesdk/pi_1/detect/stats", "edgesdk/pi_1/detect/status"}
    ev = events(msgs)
    assert [e["frame"] for e in ev] == [0, 10, 20]  # frames without detections are stats, not events
    assert all(not isinstance(v, dict) for e in ev for v in e.values())  # flat for Home Assistant
    assert ev[0]["device"] == "pi_1" and ev[0]["app"] == "detect" and ev[0]["latency_ms_infer"] == 1.0
    stats = [json.loads(p) for t, p, _ in msgs if t.endswith("/stats")]
    assert stats[-1]["frames"] == 30 and stats[-1]["mqtt_dropped"] == 0
    assert [p for t, p, _ in msgs if t.endswith("/status")][0] == b"online"


def test_mqtt_reconnects_and_drops_when_full(broker):
    sub = Subscriber(broker.port, "edgesdk/+/trigger-word/events")
    sink = MqttSink("trigger-word", None, port=broker.port, device="d", queue_size=5, stats_interval_s=0)
    sink({"event": "trigger", "word": "a", "time": 0.0, "score": 1.0})
    sub.wait_for(lambda ms: len(ms) == 1)
    sub.close()
    broker.stop()
    sub_seen = sink.published
    time.sleep(0.5)  # the sink notices the broker is gone
    for i in range(100):  # never blocks: 5 wait in the queue, 95 are dropped and counted
        sink({"event": "trigger", "word": "b", "time": float(i), "score": 1.0})
    assert sink.dropped == 95 and sink.published == sub_seen
    broker.start()
    sub = Subscriber(broker.port, "edgesdk/+/trigger-word/events")
    msgs = sub.wait_for(lambda ms: len(ms) == 5, timeout=40)  # paho reconnects (1-30 s back-off)
    assert [json.loads(p)["time"] for _, p, _ in msgs] == [0.0, 1.0, 2.0, 3.0, 4.0]
    sink.close()
    sub.close()


# --- hardening: a broker away at start, said once, TLS and credentials -------------------------------------------------

def said(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_mqtt_broker_down_at_start_buffers_then_delivers(tmp_path, caplog):
    if not Path(MOSQUITTO).exists():
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    broker = Broker(tmp_path)  # not started yet
    caplog.set_level("WARNING", logger="edgesdk.telemetry")
    # a fixed 3 s back-off: the subscriber below is surely listening before the sink's next attempt
    sink = MqttSink("trigger-word", None, port=broker.port, device="d", stats_interval_s=0, reconnect_min_s=3, reconnect_max_s=3)
    sub = None
    try:
        assert wait(lambda: sink.stats()["connect_failures"] >= 1)
        for i in range(3):
            sink({"event": "trigger", "word": "w", "time": float(i), "score": 1.0})
        assert sink.stats() == {"published": 0, "queued": 3, "dropped": 0, "connected": False, "outages": 1, "connect_failures": 1}
        broker.start()
        sub = Subscriber(broker.port, "edgesdk/+/trigger-word/events")
        msgs = sub.wait_for(lambda ms: len(ms) == 3, timeout=20)
        assert [json.loads(p)["time"] for _, p, _ in msgs] == [0.0, 1.0, 2.0]
        assert sink.stats()["queued"] == 0 and sink.stats()["published"] == 3
        assert len(said(caplog, "cannot reach it")) == 1 and len(said(caplog, "connected after")) == 1
    finally:
        sink.close()
        if sub:
            sub.close()
        broker.stop()


def wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_mqtt_unreachable_is_said_once_and_losses_are_counted(caplog):
    caplog.set_level("WARNING", logger="edgesdk.telemetry")
    m = Metrics("detect")
    sink = MqttSink("detect", m, port=free_port(), device="d", queue_size=5, stats_interval_s=0, reconnect_min_s=1, reconnect_max_s=1)
    assert wait(lambda: sink.stats()["connect_failures"] >= 3)
    for i in range(8):  # never blocks: 5 queued, 3 dropped
        sink({"event": "trigger", "word": "w", "time": float(i), "score": 1.0})
    assert sink.stats()["queued"] == 5 and sink.dropped == 3
    sink.close()  # the final stats message finds the queue full too
    assert sink.dropped == 9
    assert len(said(caplog, "cannot reach it")) == 1 and len(said(caplog, "queue full")) == 1
    assert said(caplog, "9 message(s) not delivered (5 still queued at exit")


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA (EC keys: fast)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a test certificate")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=edgesdk test CA", "-days", "2")
    run("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-subj", "/CN=someone else", "-days", "2")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
        "-days", "2", "-extfile", "san.ext")
    return {name: d / f"{name}.pem" for name in ("ca", "other", "server")} | {"key": d / "server.key"}


@pytest.fixture()
def tls_broker(tmp_path):
    """mosquitto with a plain listener (for the test's subscriber) and a TLS one (for the sink)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    certs = make_certs(tmp_path)
    b = Broker(tmp_path)
    b.tls_port = free_port()
    # `user root`: mosquitto started as root would switch to its own user, who cannot read the 0600 key (ignored when not root)
    b.conf.write_text(f"user root\nallow_anonymous true\npersistence false\nlistener {b.port} 127.0.0.1\n"
                      f"listener {b.tls_port} 127.0.0.1\ncafile {certs['ca']}\ncertfile {certs['server']}\nkeyfile {certs['key']}\n")
    b.certs = certs
    b.start()
    yield b
    b.stop()


def test_mqtt_over_tls_checks_the_broker_certificate(tls_broker, caplog):
    caplog.set_level("WARNING", logger="edgesdk.telemetry")
    b = tls_broker
    sub = Subscriber(b.port, "edgesdk/+/detect/events")
    good = MqttSink("detect", None, port=b.tls_port, device="ok", stats_interval_s=0, tls=True, ca_file=str(b.certs["ca"]))
    bad = MqttSink("detect", None, port=b.tls_port, device="bad", stats_interval_s=0, tls=True, ca_file=str(b.certs["other"]))
    try:
        for sink in (good, bad):
            sink({"event": "trigger", "word": sink.device, "time": 0.0, "score": 1.0})
        msgs = sub.wait_for(lambda ms: len(ms) >= 1)
        assert wait(lambda: bad.stats()["connect_failures"] >= 1)
        time.sleep(0.5)
        assert [json.loads(p)["word"] for _, p, _ in msgs] == ["ok"]  # the sink that cannot verify the broker sends nothing
        assert good.where.startswith("mqtts://") and bad.stats()["queued"] == 1 and not bad.stats()["connected"]
        assert len(said(caplog, f"127.0.0.1:{b.tls_port}: cannot reach it")) == 1
    finally:
        good.close()
        bad.close()
        sub.close()


def test_mqtt_config_tls_and_credentials(tmp_path, monkeypatch):
    from sdk.errors import ConfigError
    from sdk.telemetry import PASSWORD_ENV, USERNAME_ENV, start_telemetry

    port = free_port()
    cfg_path = tmp_path / "c.yaml"

    def telemetry(extra: str):
        from apps.config import load_config

        cfg_path.write_text(f"app: trigger-word\nsource: mic\noutputs:\n  metrics_port: 0\n  mqtt: {{port: {port}{extra}}}\n")
        return start_telemetry(load_config(cfg_path), cfg_path)

    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match="ca_file: a CA file is only used with TLS"):
        telemetry(", ca_file: ca.pem")
    with pytest.raises(ConfigError, match=r"ca_file: .*ca\.pem not found"):
        telemetry(", tls: true, ca_file: ca.pem")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="outputs.mqtt.ca_file .*cannot load CA certificates"):
        telemetry(", tls: true, ca_file: ca.pem")  # relative to the config's folder
    with pytest.raises(ConfigError, match="MQTT_PW is not set"):
        telemetry(", username: u, password_env: MQTT_PW")
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    with pytest.raises(ConfigError, match="no user name"):
        telemetry("")
    monkeypatch.setenv(USERNAME_ENV, "edge")
    tel = telemetry(", stats_interval_s: 0")
    try:
        sink = tel.sinks[-1]
        assert sink.client._username == b"edge" and sink.client._password == b"secret"
    finally:
        tel.close()

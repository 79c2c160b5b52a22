"""Events and health out of a running app: MQTT, ``/healthz`` and Prometheus ``/metrics``.

Everything here is an :class:`~sdk.console.Output` sink, fed the same objects the app
prints (``event``, ``detections``, ``match``, ``frame``, ``latency_ms``, ``dropped``), so the
apps need no changes. Sinks never block the app: counters are updated under a lock and
MQTT messages go through a bounded queue (full: dropped and counted).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.telemetry")

LATENCY_WINDOW = 1000  # latency samples kept per stage for the percentiles
FPS_WINDOW_S = 10.0


def device_name(name: str = "") -> str:
    """``name`` or the host name, made safe for an MQTT topic level."""
    raw = name or socket.gethostname()
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw) or "device"


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``a_b`` keys (Home Assistant templates read flat JSON easily); lists stay."""
    flat: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, f"{key}_"))
        else:
            flat[key] = v
    return flat


def is_event(obj: dict[str, Any]) -> bool:
    """An object worth publishing: a trigger, a frame with detections, a face decision."""
    return "event" in obj or bool(obj.get("detections")) or "match" in obj or ("name" in obj and "distance" in obj)


class Metrics:
    """Counters and latency windows derived from emitted objects (an Output sink)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.started = time.time()
        self._lock = threading.Lock()
        self.emitted = 0
        self.frames = 0
        self.dropped = 0
        self.events: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, collections.deque[float]] = {}
        self.latency_count: collections.Counter[str] = collections.Counter()
        self.latency_sum: collections.Counter[str] = collections.Counter()
        self._frame_times: collections.deque[float] = collections.deque(maxlen=4096)
        self.last_emit: float | None = None

    def __call__(self, obj: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            self.emitted += 1
            self.last_emit = now
            if "frame" in obj:
                self.frames += 1
                self._frame_times.append(now)
            dropped = obj.get("dropped")
            if isinstance(dropped, bool):
                self.dropped += int(dropped)
            elif isinstance(dropped, (int, float)):
                self.dropped = max(self.dropped, int(dropped))  # sources report a running total
            if "event" in obj:
                self.events[str(obj["event"])] += 1
            for det in obj.get("detections") or ():
                self.events[f"detection:{det.get('label', det.get('class_id', '?'))}"] += 1
            if "match" in obj:
                self.events["match" if obj["match"] else "no_match"] += 1
            for stage, ms in (obj.get("latency_ms") or {}).items():
                if isinstance(ms, (int, float)):
                    self.latency.setdefault(stage, collections.deque(maxlen=LATENCY_WINDOW)).append(float(ms))
                    self.latency_count[stage] += 1
                    self.latency_sum[stage] += float(ms)

    def fps(self, now: float | None = None) -> float:
        """Frames per second over the last :data:`FPS_WINDOW_S` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            recent = [t for t in self._frame_times if now - t <= FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def snapshot(self) -> dict[str, Any]:
        """A flat summary: uptime, counts, FPS, latency p50/p90 per stage."""
        now = time.time()
        fps = self.fps(now)
        with self._lock:
            snap: dict[str, Any] = {
                "app": self.app,
                "uptime_s": round(now - self.started, 1),
                "emitted": self.emitted,
                "events": sum(self.events.values()),
                "frames": self.frames,
                "dropped_frames": self.dropped,
                "fps": round(fps, 2),
                "last_emit_age_s": None if self.last_emit is None else round(now - self.last_emit, 1),
            }
            for stage, window in self.latency.items():
                p50, p90 = np.percentile(np.fromiter(window, float), [50, 90])
                snap[f"latency_{stage}_p50_ms"] = round(float(p50), 3)
                snap[f"latency_{stage}_p90_ms"] = round(float(p90), 3)
        return snap

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        fps = self.fps()
        app = _label(self.app)
        lines = [
            "# HELP edgesdk_up 1 while the app runs.", "# TYPE edgesdk_up gauge", f'edgesdk_up{{app="{app}"}} 1',
            "# HELP edgesdk_uptime_seconds Seconds since the app started.", "# TYPE edgesdk_uptime_seconds gauge",
            f'edgesdk_uptime_seconds{{app="{app}"}} {time.time() - self.started:.3f}',
            "# HELP edgesdk_fps Frames per second over the last 10 s.", "# TYPE edgesdk_fps gauge", f'edgesdk_fps{{app="{app}"}} {fps:.3f}',
        ]
        with self._lock:
            lines += [
                "# HELP edgesdk_frames_total Frames processed.", "# TYPE edgesdk_frames_total counter",
                f'edgesdk_frames_total{{app="{app}"}} {self.frames}',
                "# HELP edgesdk_dropped_frames_total Stale frames dropped because inference was slower than the source.",
                "# TYPE edgesdk_dropped_frames_total counter", f'edgesdk_dropped_frames_total{{app="{app}"}} {self.dropped}',
                "# HELP edgesdk_events_total Events by kind (triggers, detections by label, face decisions).",
                "# TYPE edgesdk_events_total counter",
            ]
            lines += [f'edgesdk_events_total{{app="{app}",event="{_label(k)}"}} {v}' for k, v in sorted(self.events.items())]
            lines += ["# HELP edgesdk_latency_ms Latency per pipeline stage, milliseconds.", "# TYPE edgesdk_latency_ms summary"]
            for stage in sorted(self.latency):
                qs = np.percentile(np.fromiter(self.latency[stage], float), [50, 90, 99])
                lab = f'app="{app}",stage="{_label(stage)}"'
                lines += [f'edgesdk_latency_ms{{{lab},quantile="{q}"}} {v:.6g}' for q, v in zip(("0.5", "0.9", "0.99"), qs)]
                lines += [f"edgesdk_latency_ms_sum{{{lab}}} {self.latency_sum[stage]:.6g}", f"edgesdk_latency_ms_count{{{lab}}} {self.latency_count[stage]}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """Escape a Prometheus label value."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """``/healthz`` (JSON) and ``/metrics`` (Prometheus text) from a thread; 127.0.0.1 by default."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1", info: dict[str, Any] | None = None,
                 stall_s: float = 30.0) -> None:
        self.metrics = metrics
        self.info = dict(info or {})
        self.stall_s = stall_s
        handler = _handler(self)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise ConfigError(f"outputs.metrics_port: cannot listen on {host}:{port} ({e.strerror}); choose a free port") from e
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgesdk-metrics", daemon=True)
        self._thread.start()

    def health(self) -> dict[str, Any]:
        """``status`` is ``ok``, or ``stalled`` when a frame source has gone quiet (a hung camera)."""
        snap = self.metrics.snapshot()
        age = snap["last_emit_age_s"]
        stalled = snap["frames"] > 0 and age is not None and age > self.stall_s
        return {"status": "stalled" if stalled else "ok", "pid": os.getpid(), **self.info, **snap}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                health = server.health()
                self._send(200 if health["status"] == "ok" else 503, "application/json", json.dumps(health) + "\n")
            elif path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", server.metrics.prometheus())
            else:
                self._send(404, "text/plain", "not found: try /healthz or /metrics\n")

        def _send(self, code: int, ctype: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # scrapes every few seconds would flood stderr
            pass

    return Handler


class MqttSink:
    """Publishes events and periodic stats to MQTT without ever blocking the app.

    Topics: ``<prefix>/<device>/<app>/events`` (flat JSON per event), ``.../stats`` (every
    ``stats_interval_s``) and ``.../status`` (retained ``online``/``offline``, also the last
    will, for Home Assistant availability). paho reconnects by itself; while disconnected,
    events wait in a bounded queue, and when it is full new ones are dropped and counted.
    """

    def __init__(self, app: str, metrics: Metrics | None = None, host: str = "127.0.0.1", port: int = 1883, topic_prefix: str = "edgesdk",
                 device: str = "", username: str = "", password: str = "", qos: int = 0, stats_interval_s: float = 30.0,
                 queue_size: int = 1000) -> None:
        from sdk.lazy import require

        mqtt = require("paho.mqtt.client", "publishing to MQTT")
        self.app, self.device, self.metrics, self.qos = app, device_name(device), metrics, qos
        self.topic = f"{topic_prefix.rstrip('/')}/{self.device}/{app}"
        self.dropped = 0
        self.published = 0
        self._queue: queue.Queue[tuple[str, str, bool]] = queue.Queue(maxsize=queue_size)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgesdk-{self.device}-{app}-{os.getpid()}")
        if username:
            self.client.username_pw_set(username, password or None)
        self.client.will_set(f"{self.topic}/status", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a, **k: self._connected.clear()
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        self._threads = [threading.Thread(target=self._publisher, name="edgesdk-mqtt", daemon=True)]
        if metrics is not None and stats_interval_s > 0:
            self._threads.append(threading.Thread(target=self._stats, args=(stats_interval_s,), name="edgesdk-mqtt-stats", daemon=True))
        for t in self._threads:
            t.start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT: connection refused (%s)", reason)
            return
        client.publish(f"{self.topic}/status", "online", qos=1, retain=True)
        self._connected.set()

    def __call__(self, obj: dict[str, Any]) -> None:
        if is_event(obj):
            payload = {"device": self.device, "app": self.app, "ts": round(time.time(), 3), **flatten(obj)}
            self._put(f"{self.topic}/events", payload)

    def _put(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        try:
            self._queue.put_nowait((topic, json.dumps(payload, default=_json_default), retain))
        except queue.Full:
            self.dropped += 1

    def _publisher(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            if not self._connected.wait(0.2):
                if self._stop.is_set():
                    return  # closing while the broker is away: give up on the rest
                continue
            try:
                topic, payload, retain = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.client.publish(topic, payload, qos=self.qos, retain=retain)
            self.published += 1

    def _stats(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.publish_stats()

    def publish_stats(self) -> None:
        """Queue one stats message now (also sent every ``stats_interval_s``)."""
        if self.metrics is not None:
            self._put(f"{self.topic}/stats", {"device": self.device, "ts": round(time.time(), 3), **self.metrics.snapshot(),
                                               "mqtt_dropped": self.dropped}, retain=True)

    def close(self, timeout: float = 2.0) -> None:
        """Send the final stats and what is queued (up to ``timeout``), then disconnect."""
        self.publish_stats()
        self._stop.set()
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.time()))
        if self._connected.is_set():
            self.client.publish(f"{self.topic}/status", "offline", qos=1, retain=True).wait_for_publish(max(0.1, deadline - time.time()))
        self.client.disconnect()
        self.client.loop_stop()


def _json_default(o: Any) -> Any:
    from sdk.console import to_jsonable

    return to_jsonable(o)


class Telemetry:
    """The sinks an ``edgesdk run`` wires from a config, closed together."""

    def __init__(self) -> None:
        self.sinks: list[Any] = []
        self.closers: list[Any] = []
        self.server: MetricsServer | None = None

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception as e:  # shutting down: report, keep closing the rest
                log.warning("closing telemetry: %s", e)


def start_telemetry(cfg: Any, config_path: Path | None = None) -> Telemetry:
    """Start the outputs ``cfg.outputs`` asks for (``/metrics`` server, MQTT)."""
    tel = Telemetry()
    metrics = Metrics(cfg.app)
    tel.sinks.append(metrics)
    outs = cfg.outputs
    if outs.metrics_port:
        info = {"app": cfg.app, "bundle": os.environ.get("EDGESDK_BUNDLE", ""), "config": str(config_path or "")}
        tel.server = MetricsServer(metrics, outs.metrics_port, outs.metrics_host, info)
        tel.closers.append(tel.server.close)
        log.info("health and metrics on http://%s:%d/healthz and /metrics", outs.metrics_host, tel.server.port)
    if outs.mqtt is not None:
        m = outs.mqtt
        password = os.environ.get(m.password_env, "") if m.password_env else ""
        if m.password_env and not password:
            raise ConfigError(f"outputs.mqtt.password_env: environment variable {m.password_env} is not set")
        sink = MqttSink(cfg.app, metrics, m.host, m.port, m.topic_prefix, m.device, m.username, password, m.qos, m.stats_interval_s, m.queue_size)
        tel.sinks.append(sink)
        tel.closers.append(sink.close)
        log.info("publishing events to mqtt://%s:%d/%s/events", m.host, m.port, sink.topic)
    return tel

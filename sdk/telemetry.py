"""Events and health out of a running app: MQTT, ``/healthz`` and Prometheus ``/metrics``.

Everything here is an :class:`~sdk.console.Output` sink, fed the same objects the app
prints (``event``, ``detections``, ``match``, ``frame``, ``latency_ms``, ``dropped``), so the
apps need no changes. Sinks never block the app: counters are updated under a lock and
MQTT messages go through a bounded queue (full: dropped and counted).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.telemetry")

USERNAME_ENV = "EDGESDK_MQTT_USERNAME"  # used when outputs.mqtt.username is empty
PASSWORD_ENV = "EDGESDK_MQTT_PASSWORD"  # used when outputs.mqtt.password_env is empty
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
    will, for Home Assistant availability). A broker that cannot be reached or drops the
    connection is said once per outage (and once more when it is back); paho retries with
    back-off (``reconnect_min_s`` doubling up to ``reconnect_max_s``). Meanwhile events wait
    in a bounded queue; when it is full new ones are dropped and counted (``dropped``, in
    the stats and at :meth:`close`). An event leaves the queue only once paho accepted it.

    Args:
        tls: Connect with TLS, checking the broker's certificate and host name.
        ca_file: PEM file of the CA that signed the broker's certificate; the system's CAs when empty.

    Raises:
        ConfigError: ``ca_file`` cannot be loaded.
    """

    def __init__(self, app: str, metrics: Metrics | None = None, host: str = "127.0.0.1", port: int = 1883, topic_prefix: str = "edgesdk",
                 device: str = "", username: str = "", password: str = "", qos: int = 0, stats_interval_s: float = 30.0,
                 queue_size: int = 1000, tls: bool = False, ca_file: str = "", reconnect_min_s: float = 1.0,
                 reconnect_max_s: float = 30.0) -> None:
        from sdk.lazy import require

        mqtt = require("paho.mqtt.client", "publishing to MQTT")
        self.app, self.device, self.metrics, self.qos = app, device_name(device), metrics, qos
        self.topic = f"{topic_prefix.rstrip('/')}/{self.device}/{app}"
        self.where = f"mqtt{'s' if tls else ''}://{host}:{port}"
        self.dropped = self.published = self.connect_failures = self.outages = 0
        self.queue_size = max(1, int(queue_size))
        self._queue: collections.deque[tuple[str, str, bool]] = collections.deque()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._down_since: float | None = None
        self._full_said = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgesdk-{self.device}-{app}-{os.getpid()}")
        if tls:
            self.client.tls_set_context(_tls_context(ca_file))
        if username:
            self.client.username_pw_set(username, password or None)
        self.client.will_set(f"{self.topic}/status", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(max(1, round(reconnect_min_s)), max(1, round(reconnect_max_s)))
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = lambda *a: self._down("cannot reach it", failed=True)
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        self._threads = [threading.Thread(target=self._publisher, name="edgesdk-mqtt", daemon=True)]
        if metrics is not None and stats_interval_s > 0:
            self._threads.append(threading.Thread(target=self._stats, args=(stats_interval_s,), name="edgesdk-mqtt-stats", daemon=True))
        for t in self._threads:
            t.start()

    def _down(self, why: str, failed: bool = False) -> None:
        """Note a failed attempt or a lost connection; say it once per outage."""
        self._connected.clear()
        with self._cond:
            self.connect_failures += failed
            first = self._down_since is None
            if first:
                self._down_since, self._full_said = time.monotonic(), False
                self.outages += 1
            queued = len(self._queue)
        if first:
            log.warning("MQTT: %s: %s; retrying with back-off, events wait in a queue (%d now, at most %d, newer ones dropped beyond)",
                        self.where, why, queued, self.queue_size)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._down(f"connection refused ({reason})", failed=True)
            return
        client.publish(f"{self.topic}/status", "online", qos=1, retain=True)
        with self._cond:
            since, self._down_since = self._down_since, None
            queued = len(self._queue)
            self._cond.notify_all()
        self._connected.set()
        if since is not None:
            log.warning("MQTT: %s: connected after %.0f s; sending %d queued event(s), %d dropped so far",
                        self.where, time.monotonic() - since, queued, self.dropped)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self._stop.is_set() and not getattr(reason, "is_failure", True):
            self._connected.clear()  # our own disconnect at close
            return
        self._down(f"connection lost ({reason})")

    def __call__(self, obj: dict[str, Any]) -> None:
        if is_event(obj):
            payload = {"device": self.device, "app": self.app, "ts": round(time.time(), 3), **flatten(obj)}
            self._put(f"{self.topic}/events", payload)

    def _put(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        message = (topic, json.dumps(payload, default=_json_default), retain)
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self.dropped += 1
                say, self._full_said = not self._full_said, True
            else:
                self._queue.append(message)
                self._cond.notify_all()
                return
        if say:
            log.warning("MQTT: %s: queue full (%d); dropping new events until the broker takes them (counted in stats)", self.where, self.queue_size)

    def _publisher(self) -> None:
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if not self._queue or (self._stop.is_set() and not self._connected.is_set()):
                    return  # closing: what the broker cannot take now is counted at close()
                message = self._queue[0]
            if not self._connected.wait(0.2):
                continue
            topic, payload, retain = message
            if self.client.publish(topic, payload, qos=self.qos, retain=retain).rc == MQTT_ERR_SUCCESS:
                with self._cond:
                    self._queue.popleft()
                    self.published += 1
            else:  # the connection went between the check and the publish: keep it for the next one
                self._stop.wait(0.1)

    def _stats(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.publish_stats()

    def stats(self) -> dict[str, Any]:
        """Counters: ``published``, ``queued``, ``dropped``, ``connected``, ``outages``, ``connect_failures``."""
        with self._cond:
            return {"published": self.published, "queued": len(self._queue), "dropped": self.dropped,
                    "connected": self._connected.is_set(), "outages": self.outages, "connect_failures": self.connect_failures}

    def publish_stats(self) -> None:
        """Queue one stats message now (also sent every ``stats_interval_s``)."""
        if self.metrics is not None:
            self._put(f"{self.topic}/stats", {"device": self.device, "ts": round(time.time(), 3), **self.metrics.snapshot(),
                                               "mqtt_dropped": self.dropped, "mqtt_outages": self.outages}, retain=True)

    def close(self, timeout: float = 2.0) -> None:
        """Send the final stats and what is queued (up to ``timeout``), then disconnect; say what was lost."""
        self.publish_stats()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.time()))
        with self._cond:
            lost = len(self._queue)
            self._queue.clear()
            self.dropped += lost
        if self.dropped:
            log.warning("MQTT: %s: %d message(s) not delivered (%d still queued at exit, the rest dropped while the queue was full)",
                        self.where, self.dropped, lost)
        if self._connected.is_set():
            self.client.publish(f"{self.topic}/status", "offline", qos=1, retain=True).wait_for_publish(max(0.1, deadline - time.time()))
        self.client.disconnect()
        self.client.loop_stop()


def _tls_context(ca_file: str) -> Any:
    """A client TLS context that checks the broker's certificate and host name (against ``ca_file`` or the system CAs)."""
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"ca_file {ca_file}: cannot load CA certificates from it ({getattr(e, 'strerror', None) or e}); "
                          "give the PEM file of the CA that signed the broker's certificate", param="ca_file") from e


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
        try:
            sink = _mqtt_sink(cfg.app, metrics, outs.mqtt, config_path)
        except BaseException:
            tel.close()  # the /metrics server must not outlive a config error
            raise
        tel.sinks.append(sink)
        tel.closers.append(sink.close)
        log.info("publishing events to %s/%s/events", sink.where, sink.topic)
    return tel


def _mqtt_sink(app: str, metrics: Metrics, m: Any, config_path: Path | None) -> MqttSink:
    """The sink for an ``outputs.mqtt`` section: credentials from the environment, TLS options checked first.

    Raises:
        ConfigError: A CA file without ``tls``, a missing CA file, a password variable that is not set, a password without a user.
    """
    tls, ca_file = bool(getattr(m, "tls", False)), str(getattr(m, "ca_file", "") or "")
    if ca_file and not tls:
        raise ConfigError("outputs.mqtt.ca_file: a CA file is only used with TLS; set tls: true as well (or drop ca_file)")
    if ca_file:
        ca = Path(ca_file).expanduser()
        if not ca.is_absolute() and config_path is not None:
            ca = Path(config_path).resolve().parent / ca  # like the config's other paths
        if not ca.is_file():
            raise ConfigError(f"outputs.mqtt.ca_file: {ca} not found; give the PEM file of the CA that signed the broker's certificate")
        ca_file = str(ca)
    username = m.username or os.environ.get(USERNAME_ENV, "")
    if m.password_env:
        password = os.environ.get(m.password_env, "")
        if not password:
            raise ConfigError(f"outputs.mqtt.password_env: environment variable {m.password_env} is not set")
    else:
        password = os.environ.get(PASSWORD_ENV, "")
    if password and not username:
        raise ConfigError(f"outputs.mqtt.username: a password is set but no user name; set username (or ${USERNAME_ENV})")
    if password and not tls and not is_loopback(m.host):
        log.warning("MQTT: the password goes to %s in clear text; set tls: true in outputs.mqtt", m.host)
    if tls and m.port == 1883:
        log.warning("MQTT: tls: true on port 1883, MQTT's plain port; TLS brokers usually listen on 8883")
    try:
        return MqttSink(app, metrics, m.host, m.port, m.topic_prefix, m.device, username, password, m.qos, m.stats_interval_s,
                        m.queue_size, tls=tls, ca_file=ca_file)
    except ConfigError as e:
        raise ConfigError(f"outputs.mqtt.{e}" if e.param == "ca_file" else str(e)) from e


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and 127.0.0.0/8 or ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

# ruff: noqa: UP031, UP036, B904  (runs on unknown device Pythons: plain %-formatting, old-Python version check)
"""Device side of ``edgesdk deploy``: the Ansible role (``deploy/ansible/roles/edgesdk``) sends it
from the controller on the stdin of the device's ``python3 -`` for every call.

Standard library only, and syntax old Pythons can parse, so that a device with Python < 3.10
gets a clear message instead of a traceback. Commands (one JSON line on stdout each):

* ``install ARCHIVE DIR [--sha256 HEX]``: check the archive's SHA-256, verify every file
  against the manifest while extracting into ``DIR/bundles/<id>`` (any mismatch: nothing is
  left), run ``install.sh``, stop the running app, switch ``DIR/current`` atomically, start,
  wait for ``/healthz``; on failure switch back, restart the previous bundle and delete the
  failed one. One install at a time per DIR (``DIR/.lock``); the outcome is kept in
  ``DIR/last_install.json``. An install that has begun finishes even if the controller dies
  (SIGHUP ignored, a closed stdout tolerated): the device is left on the old or the new bundle.
* ``status DIR [--prepare]``: the running bundle, whether it is healthy, its pid, uptime, last
  stats and the last install's outcome (``--prepare``: also create ``DIR/incoming`` and the
  other folders an install needs).

The app runs under ``systemd --user`` where available, else as a background process with a pidfile.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request

EXIT_OK, EXIT_ROLLED_BACK, EXIT_BAD, EXIT_TAMPERED, EXIT_PYTHON, EXIT_INSTALL = 0, 1, 2, 3, 4, 5


class Failure(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def _result(**fields):
    try:
        print(json.dumps(fields, sort_keys=True))
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the controller went away; last_install.json keeps the outcome


def _log(msg):
    sys.stderr.write("agent: %s\n" % msg)
    sys.stderr.flush()


class Paths:
    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.bundles = os.path.join(self.root, "bundles")
        self.logs = os.path.join(self.root, "logs")
        self.current = os.path.join(self.root, "current")
        self.pidfile = os.path.join(self.root, "app.pid")

    def bundle(self, bid):
        return os.path.join(self.bundles, bid)

    def current_id(self):
        target = os.path.realpath(self.current) if os.path.islink(self.current) else None
        return os.path.basename(target) if target and os.path.isdir(target) else None


def extract_verified(archive, paths):
    """Extract ``archive`` into ``bundles/<id>`` checking every file; returns ``(id, manifest)``."""
    try:
        tar = tarfile.open(archive, "r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise Failure(EXIT_TAMPERED, "bundle %s is not a readable .tar.gz (%s); rebuild it and push again" % (os.path.basename(archive), e))
    with tar:
        by_name = dict((m.name, m) for m in members)
        if "manifest.json" not in by_name:
            raise Failure(EXIT_TAMPERED, "bundle has no manifest.json; build it with `edgesdk deploy bundle`")
        raw, manifest = read_manifest(tar, by_name["manifest.json"])
        bid = hashlib.sha256(raw).hexdigest()[:16]
        expected = manifest["files"]
        extra = sorted(set(by_name) - set(expected) - {"manifest.json"})
        missing = sorted(set(expected) - set(by_name))
        if extra or missing:
            raise Failure(EXIT_TAMPERED, "manifest mismatch: %s; bundle refused" % (
                ("unlisted file " + extra[0]) if extra else ("missing file " + missing[0])))
        dest = paths.bundle(bid)
        if os.path.exists(os.path.join(dest, ".installed")):
            return bid, manifest, False
        shutil.rmtree(dest, ignore_errors=True)
        try:
            for m in members:
                _extract_one(tar, m, dest, expected)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # nothing half-installed
            raise
        with open(os.path.join(dest, "manifest.json"), "wb") as fh:
            fh.write(raw)
    return bid, manifest, True


def _extract_one(tar, m, dest, expected):
    parts = m.name.split("/")
    if m.name.startswith("/") or ".." in parts or not m.isfile():
        raise Failure(EXIT_TAMPERED, "unsafe entry %r in bundle; refused" % m.name)
    if m.name == "manifest.json":
        return
    data = tar.extractfile(m).read()
    want = expected[m.name]
    if len(data) != want["size"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
        raise Failure(EXIT_TAMPERED, "manifest mismatch: %s has SHA-256 %s, manifest says %s; bundle refused" % (
            m.name, hashlib.sha256(data).hexdigest()[:12], want["sha256"][:12]))
    path = os.path.join(dest, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o755 if m.name.endswith(".sh") else 0o644)


def read_manifest(tar, member):
    """The bytes and the parsed ``manifest.json`` of a bundle: a regular file holding a JSON object with ``files``."""
    bad = "bundle's manifest.json is %s; rebuild the bundle with `edgesdk deploy bundle`"
    if not member.isfile():
        raise Failure(EXIT_TAMPERED, bad % "not a regular file (a link or a folder)")
    if member.size > 16 << 20:
        raise Failure(EXIT_TAMPERED, bad % ("%d bytes, too large" % member.size))
    raw = tar.extractfile(member).read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise Failure(EXIT_TAMPERED, bad % "not JSON")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise Failure(EXIT_TAMPERED, bad % "not an object with a 'files' mapping")
    if not all(isinstance(f, dict) and isinstance(f.get("sha256"), str) and isinstance(f.get("size"), int) for f in manifest["files"].values()):
        raise Failure(EXIT_TAMPERED, bad % "listing a file without its sha256 and size")
    return raw, manifest


def venv_key(manifest, python, site_packages):
    """Bundles with the same runtime (wheels, Python, reused folder) share one venv: a config or
    model change then deploys in seconds, and a rollback needs no reinstall."""
    runtime = sorted((n, f["sha256"]) for n, f in manifest["files"].items() if n.endswith(".whl"))
    return hashlib.sha256(json.dumps([runtime, python, site_packages or ""]).encode()).hexdigest()[:16]


def run_install(paths, bid, manifest, python, site_packages):
    dest = paths.bundle(bid)
    venv = os.path.join(paths.root, "venvs", venv_key(manifest, python, site_packages))
    if not os.path.exists(os.path.join(venv, ".complete")):
        env = dict(os.environ, EDGESDK_PYTHON=python, EDGESDK_VENV=venv)
        if site_packages:
            env["EDGESDK_SITE_PACKAGES"] = site_packages
        log_path = os.path.join(paths.logs, "%s-install.log" % bid)
        _log("installing the runtime into %s" % venv)
        with open(log_path, "wb") as log:
            rc = subprocess.call([os.path.join(dest, "install.sh")], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if rc != 0:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(venv, ignore_errors=True)
            with open(log_path, "rb") as fh:
                lines = [x for x in fh.read().decode(errors="replace").splitlines() if x.strip()]
            raise Failure(EXIT_PYTHON if rc == 3 else EXIT_INSTALL,
                          "install.sh failed (exit %d): %s (log: %s)" % (rc, lines[-1] if lines else "no output", log_path))
        open(os.path.join(venv, ".complete"), "w").close()
    os.symlink(venv, os.path.join(dest, "venv"))
    open(os.path.join(dest, ".installed"), "w").close()


def _systemd_user():
    if not shutil.which("systemctl"):
        return False
    return subprocess.call(["systemctl", "--user", "show-environment"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def _unit_name(app):
    return "edgesdk-%s.service" % app


def _pid(paths):
    try:
        pid = int(open(paths.pidfile).read().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:  # a recycled pid belongs to someone else; a zombie has an empty command line
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            cmdline = fh.read()
        if b"edgesdk" not in cmdline and b"run.sh" not in cmdline:
            return None
    except OSError:
        pass
    return pid


def _running(paths, app, systemd):
    if systemd:
        return subprocess.call(["systemctl", "--user", "is-active", "--quiet", _unit_name(app)]) == 0
    return _pid(paths) is not None


def stop(paths, app):
    if _systemd_user():
        subprocess.call(["systemctl", "--user", "stop", _unit_name(app)], stderr=subprocess.DEVNULL)
    pid = _pid(paths)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            if _pid(paths) is None:  # gone (or a zombie nobody reaps yet)
                break
        else:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # gone
    if os.path.exists(paths.pidfile):
        os.unlink(paths.pidfile)


def start(paths, app, bid):
    run_sh = os.path.join(paths.current, "run.sh")
    if _systemd_user():
        unit_dir = os.path.expanduser("~/.config/systemd/user")
        os.makedirs(unit_dir, exist_ok=True)
        with open(os.path.join(unit_dir, _unit_name(app)), "w") as fh:
            fh.write("[Unit]\nDescription=edgesdk %s\n\n[Service]\nExecStart=%s\nRestart=on-failure\nRestartSec=5\n"
                     "NoNewPrivileges=yes\n\n[Install]\nWantedBy=default.target\n" % (app, run_sh))
        subprocess.check_call(["systemctl", "--user", "daemon-reload"])
        subprocess.check_call(["systemctl", "--user", "enable", "--now", _unit_name(app)], stderr=subprocess.DEVNULL)
        subprocess.check_call(["systemctl", "--user", "restart", _unit_name(app)])
        return
    log = open(os.path.join(paths.logs, "%s.log" % bid), "ab")
    proc = subprocess.Popen([run_sh], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=paths.current, start_new_session=True)
    with open(paths.pidfile, "w") as fh:
        fh.write("%d\n" % proc.pid)
    # until the child has exec'd run.sh its command line is still this agent's, and _pid() would call it
    # someone else's process: the health check then gave up at once on a slow machine ("no output")
    for _ in range(250):
        try:
            with open("/proc/%d/cmdline" % proc.pid, "rb") as fh:
                if b"run.sh" in fh.read():
                    break
        except OSError:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)


def health(manifest):
    port = manifest.get("metrics_port") or 0
    if not port:
        return None
    url = "http://%s:%d/healthz" % (manifest.get("metrics_host") or "127.0.0.1", port)
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read().decode())
    except (OSError, ValueError):
        return None


def wait_healthy(paths, manifest, bid, timeout, settle=3.0):
    """True once the app answers ``/healthz`` for this bundle and keeps running for ``settle`` s."""
    deadline = time.time() + timeout
    healthy_since = None
    systemd = _systemd_user()
    while time.time() < deadline:
        alive = _running(paths, manifest["app"], systemd)
        h = health(manifest) if manifest.get("metrics_port") else ({"status": "ok", "bundle": bid} if alive else None)
        ok = alive and h is not None and h.get("status") == "ok" and h.get("bundle") == bid
        if not alive and not systemd:  # systemd may be between restarts: wait for it
            return False
        healthy_since = (healthy_since or time.time()) if ok else None
        if healthy_since and time.time() - healthy_since >= settle:
            return True
        time.sleep(0.3)
    return False


def switch(paths, bid):
    tmp = paths.current + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("bundles", bid), tmp)
    os.replace(tmp, paths.current)  # atomic: `current` always points at a complete bundle


def install(args, paths):
    for d in (paths.root, paths.bundles, paths.logs):
        os.makedirs(d, exist_ok=True)
    # a controller killed mid-rollout must not kill the transaction half-way (between stop and start)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lock = open(os.path.join(paths.root, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # a second rollout to this device waits for the first
    try:
        try:
            if args.sha256:
                _check_archive(args.archive, args.sha256)
            bid, manifest, fresh = extract_verified(args.archive, paths)
        finally:
            if os.path.exists(args.archive):
                os.unlink(args.archive)
        return _install_verified(args, paths, bid, manifest, fresh)
    except Failure as e:
        _record(paths, ok=False, action="refused" if e.code == EXIT_TAMPERED else "failed", bundle=None, message=str(e))
        raise
    finally:
        lock.close()


def _check_archive(archive, want):
    h = hashlib.sha256()
    try:
        with open(archive, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise Failure(EXIT_TAMPERED, "cannot read the copied bundle %s (%s); push again" % (archive, e))
    if h.hexdigest() != want.lower():
        raise Failure(EXIT_TAMPERED, "bundle archive has SHA-256 %s, the controller sent %s (changed in transfer); refused" % (
            h.hexdigest()[:12], want[:12]))


def _record(paths, **fields):
    """Keep the outcome of the last install for `status` (atomically: a reader never sees half a file)."""
    fields["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = os.path.join(paths.root, "last_install.json.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(fields, fh, sort_keys=True)
        os.replace(tmp, os.path.join(paths.root, "last_install.json"))
    except OSError:
        pass


def _install_verified(args, paths, bid, manifest, fresh):
    app = manifest["app"]
    if fresh:
        _log("bundle %s verified (%d files); installing" % (bid, len(manifest["files"])))
        run_install(paths, bid, manifest, args.python, args.site_packages)
    previous = paths.current_id()
    stop(paths, app)
    switch(paths, bid)
    start(paths, app, bid)
    if wait_healthy(paths, manifest, bid, args.health_timeout):
        _prune(paths, keep=(bid, previous))
        action = "installed" if previous != bid else "restarted"
        _record(paths, ok=True, action=action, bundle=bid, previous=previous, message="")
        _result(ok=True, action=action, bundle=bid, previous=previous, app=app)
        return EXIT_OK
    stop(paths, app)
    log_tail = _tail(os.path.join(paths.logs, "%s.log" % bid))
    message = "health check failed within %.0f s (%s)" % (args.health_timeout, log_tail or "no output")
    if previous and previous != bid:
        switch(paths, previous)
        start(paths, app, previous)
        back = wait_healthy(paths, _read_manifest(paths, previous), previous, args.health_timeout)
        message += "; rolled back to %s%s" % (previous, "" if back else " (which is not healthy either)")
    if previous != bid:
        shutil.rmtree(paths.bundle(bid), ignore_errors=True)
    action = "rolled back" if previous else "failed"
    _record(paths, ok=False, action=action, bundle=bid, previous=previous, message=message)
    _result(ok=False, action=action, bundle=bid, previous=previous, app=app, message=message)
    return EXIT_ROLLED_BACK


def _read_manifest(paths, bid):
    with open(os.path.join(paths.bundle(bid), "manifest.json")) as fh:
        return json.load(fh)


def _tail(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = [x.strip() for x in fh.read().splitlines() if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if "error" in x.lower()]
    return (errors or lines or [""])[-1][:300]


def _prune(paths, keep):
    """Delete bundles other than ``keep``, then venvs no kept bundle uses."""
    for name in os.listdir(paths.bundles):
        if name not in keep:
            shutil.rmtree(paths.bundle(name), ignore_errors=True)
    used = set(os.path.realpath(os.path.join(paths.bundle(b), "venv")) for b in os.listdir(paths.bundles))
    venvs = os.path.join(paths.root, "venvs")
    for name in os.listdir(venvs) if os.path.isdir(venvs) else []:
        if os.path.realpath(os.path.join(venvs, name)) not in used:
            shutil.rmtree(os.path.join(venvs, name), ignore_errors=True)


def status(paths, prepare=False):
    if prepare:
        for d in (paths.root, os.path.join(paths.root, "incoming"), paths.bundles, paths.logs):
            os.makedirs(d, exist_ok=True)
    bid = paths.current_id()
    last = _last_install(paths)
    python = "%d.%d.%d" % sys.version_info[:3]
    if bid is None:
        _result(ok=True, bundle=None, running=False, healthy=False, python=python, last_install=last, dir=paths.root,
                message="no bundle installed")
        return EXIT_OK
    manifest = _read_manifest(paths, bid)
    h = health(manifest) or {}
    running = _running(paths, manifest["app"], _systemd_user()) or bool(h)
    # healthy: what `install` waits for (this bundle answers /healthz, or runs when it serves none)
    healthy = running and (h.get("status") == "ok" and h.get("bundle") == bid if manifest.get("metrics_port") else True)
    _result(ok=running, bundle=bid, app=manifest["app"], version=manifest.get("edgesdk_version"), running=running, healthy=healthy,
            pid=h.get("pid") or _pid(paths), uptime_s=h.get("uptime_s"), events=h.get("events"), fps=h.get("fps"), stats=h,
            python=python, last_install=last, dir=paths.root,
            message="" if running else "not running; log: %s" % os.path.join(paths.logs, "%s.log" % bid))
    return EXIT_OK


def _last_install(paths):
    try:
        with open(os.path.join(paths.root, "last_install.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def main(argv=None):
    if sys.version_info < (3, 10):
        _result(ok=False, message="the device has Python %d.%d; edgesdk needs 3.10+ (Raspberry Pi OS Bookworm has 3.11)" % sys.version_info[:2])
        return EXIT_PYTHON
    p = argparse.ArgumentParser(prog="edgesdk-agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("install")
    s.add_argument("archive")
    s.add_argument("dir")
    s.add_argument("--health-timeout", type=float, default=60.0)
    s.add_argument("--python", default="python3")
    s.add_argument("--site-packages", default=None)
    s.add_argument("--sha256", default=None, help="the archive's SHA-256 as the controller computed it")
    s = sub.add_parser("status")
    s.add_argument("dir")
    s.add_argument("--prepare", action="store_true", help="create the folders an install needs")
    args = p.parse_args(argv)
    paths = Paths(args.dir)
    try:
        if args.cmd == "install":
            return install(args, paths)
        return status(paths, args.prepare)
    except Failure as e:
        _result(ok=False, action="refused" if e.code == EXIT_TAMPERED else "failed", message=str(e))
        return e.code


if __name__ == "__main__":
    sys.exit(main())

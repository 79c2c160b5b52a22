"""The web view in a real headless Chromium, against the real apps running as processes.

Skipped only when the ``chromium``/``chromedriver`` binaries (Debian ``chromium``,
``chromium-driver``) or the ``selenium`` package are missing. Screenshots land in pytest's
tmp dir; set ``EDGESDK_SCREENSHOTS=DIR`` to also write them there (how docs/screenshots/ was made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian chromium and chromium-driver")
TOKEN = "browser-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1100,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class App:
    """``edgesdk ARGS --serve 127.0.0.1:PORT --token ...`` as a child process."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/?token={TOKEN}"
        self.log = tmp / f"app-{self.port}.log"
        cmd = [sys.executable, "-m", "cli", *args, "--serve", f"127.0.0.1:{self.port}", "--token", TOKEN, "--serve-linger", "60", "-q"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz?token={TOKEN}", timeout=2)
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.2)
        raise AssertionError(f"the app did not start serving: {self.log.read_text()}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wait_for(what: Callable[[], object], timeout: float = 20.0, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {message}")


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("EDGESDK_SCREENSHOTS"):
        out = Path(os.environ["EDGESDK_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / f"{name}.png")
    assert path.stat().st_size > 10_000
    return path


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def stat(driver, key: str) -> str:
    """The value shown for ``key`` in the stats grid."""
    return driver.execute_script(
        "const dt=[...document.querySelectorAll('#stats dt')].find(e=>e.textContent===arguments[0]);"
        "return dt ? dt.nextElementSibling.textContent : '';", key)


def long_demo(tmp_path: Path, loops: int = 4) -> Path:
    """The bundled demo video played ``loops`` times (long enough to watch it live)."""
    cap = cv2.VideoCapture(str(ROOT / "apps/detect/samples/demo.mp4"))
    frames = []
    while (ok_img := cap.read())[0]:
        frames.append(ok_img[1])
    fps = cap.get(cv2.CAP_PROP_FPS) or 15
    out = tmp_path / "demo_long.avi"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(loops):
        for f in frames:
            writer.write(f)
    writer.release()
    return out


def test_detect_page_shows_the_live_stream(browser, tmp_path):
    app = App(["detect", "--source", str(long_demo(tmp_path)), "--realtime", "--threads", "1"], tmp_path)
    try:
        browser.get(app.url)
        wait_for(lambda: browser.execute_script("return document.getElementById('stream').naturalWidth") > 0, message="the stream image")
        first = int(wait_for(lambda: text(browser, "frame") not in ("", "0") and text(browser, "frame"), message="a frame count"))
        fps = float(wait_for(lambda: stat(browser, "FPS") not in ("", "0.0") and stat(browser, "FPS"), message="FPS"))
        wait_for(lambda: int(text(browser, "frame")) > first + 5, message="the frame counter to move")
        assert fps > 0 and text(browser, "app") == "detect"
        assert int(text(browser, "sent")) > 0 and browser.find_elements("css selector", "#latency tr")
        assert "int8" in text(browser, "card")
        screenshot(browser, tmp_path, "detect")
    finally:
        app.close()


def test_trigger_word_page_shows_scores_and_events(browser, tmp_path):
    from sdk.sources.audio import read_wav, write_wav
    from tests.test_audio_tone_model import tone_model

    model = tone_model(tmp_path / "tone.tflite", word="tone")
    speech, sr = read_wav(ROOT / "apps/trigger_word/samples/activate.wav", 16000)
    t = np.arange(int(0.4 * sr)) / sr
    burst = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    gap = np.zeros(sr // 2, np.float32)
    wav = tmp_path / "activate_and_tones.wav"
    write_wav(wav, np.concatenate([speech, gap, burst, gap, burst, gap]), sr)
    app = App(["trigger-word", "--model", str(model), "--input", str(wav)], tmp_path)
    try:
        browser.get(app.url)
        wait_for(lambda: int(text(browser, "points") or 0) > 50, message="score points")
        wait_for(lambda: int(text(browser, "triggers") or 0) >= 2, message="two detections")
        assert "tone" in text(browser, "events")
        assert browser.execute_script("const c=document.getElementById('timeline');"
                                      "return c.getContext('2d').getImageData(0,0,c.width,c.height).data.some(v=>v>0)")
        screenshot(browser, tmp_path, "trigger_word")
    finally:
        app.close()


def test_face_page_shows_decisions_and_identities(browser, tmp_path):
    from apps.face.app import SAMPLE_PHOTO
    from sdk.face.samples import load_sample, variants

    db = tmp_path / "faces.db"
    photo = SAMPLE_PHOTO
    subprocess.run([sys.executable, "-m", "cli", "face", "enroll", "astro", str(photo), "--db", str(db), "--threads", "1", "-q"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    imgs = variants(load_sample(photo), 6, seed=3)
    video = tmp_path / "faces.avi"
    h, w = imgs[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for img in imgs * 4:
        writer.write(img)
    writer.release()
    app = App(["face", "identify", "--source", str(video), "--db", str(db), "--threads", "1", "--consistent", "2"], tmp_path)
    try:
        browser.get(app.url)
        wait_for(lambda: "astro" in text(browser, "faces"), message="a decision for astro")
        assert "astro (1 embeddings)" in text(browser, "identities")
        wait_for(lambda: stat(browser, "frames") not in ("", "0"), message="frame stats")
        screenshot(browser, tmp_path, "face")
    finally:
        app.close()

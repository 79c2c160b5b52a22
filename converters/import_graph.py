"""Graph importers in front of :func:`converters.convert.convert`: TF.js ``model.json`` and frozen ``.pb``.

The import runs in a child process like the converter (the parent never imports TensorFlow):
read the graph (:mod:`converters.tfjs`, :mod:`converters.frozen_graph`), rewrite NCHW to NHWC
(:mod:`converters.nhwc`), make max-pool padding int8-safe (:mod:`converters.graph_fixes`),
check that the rewritten graph computes what the original does, and write it as a SavedModel
into the conversion's work folder, which the normal path then converts, calibrates, reports on
and cards. The card's ``source`` records the format, every file's SHA-256 and what the import
changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdk.card import ModelCard
from sdk.errors import ConversionError, ModelFormatError

EXACT_TOLERANCE = 1e-3  # relative to each output's range: float reassociation only


@dataclass(frozen=True)
class GraphModel:
    """A graph file to import, and how.

    Attributes:
        path: ``model.json`` (TF.js graph model) or a frozen ``.pb``.
        inputs: Tensor names that become the inputs (frozen graphs; default: placeholders).
        outputs: Tensor names the model returns (default: the TF.js signature, else the sinks).
        layout: ``auto`` (NCHW image inputs become NHWC) or ``keep``.
        input_shapes: Per input, its shape, where the graph leaves it open (frozen graphs).
    """

    path: Path
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    layout: str = "auto"
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def kind(self) -> str:
        return "tfjs" if self.path.suffix.lower() == ".json" else "frozen"


def graph_model(model: Any) -> GraphModel | None:
    """``model`` as a :class:`GraphModel` when it is one or a path to ``model.json``/``.pb``, else None."""
    from converters.frozen_graph import is_frozen_graph
    from converters.tfjs import is_tfjs

    if isinstance(model, GraphModel):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        if is_tfjs(p) or is_frozen_graph(p):
            return GraphModel(p)
    return None


def import_graph(gm: GraphModel, work: Path, card: ModelCard | None, progress: bool = True) -> tuple[Path, ModelCard]:
    """Import ``gm`` into ``work/imported`` (a SavedModel) in a child process.

    Returns:
        The SavedModel folder and ``card`` with ``source`` filled in (format, files, SHA-256s,
        what the import changed and how exactly the rewrite matches the original graph).

    Raises:
        ModelFormatError: Bad files (one line naming the file and the fix).
        ConversionError: The import process died.
    """
    from converters.child_proc import child_env, describe_exit

    if gm.layout not in ("auto", "keep"):
        raise ModelFormatError(f"layout must be auto or keep, got {gm.layout!r}", param="layout")
    job = work / "import.json"
    job.write_text(json.dumps({**asdict(gm), "path": str(gm.path), "out": str(work / "imported"), "info": str(work / "import_info.json")}))
    proc = subprocess.run([sys.executable, "-m", "converters.import_graph", str(job)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=child_env(), text=True, errors="replace", check=False)
    lines = proc.stderr.splitlines()
    if progress:
        for line in lines:
            if line.startswith("edgesdk:"):
                print(line, file=sys.stderr, flush=True)
    info = json.loads((work / "import_info.json").read_text()) if (work / "import_info.json").exists() else {}
    if "error" in info:
        kind = ConversionError if info.get("type") == "ConversionError" else ModelFormatError
        raise kind(info["error"], param=info.get("param"))
    if proc.returncode != 0 or "source" not in info:
        tail = [ln for ln in lines if ln.strip() and not ln.startswith("edgesdk:")][-1:] or ["no output"]
        raise ConversionError(f"{gm.path}: the import process failed ({describe_exit(proc.returncode)}): {tail[0][:300]}")
    base = card or ModelCard()
    return work / "imported", base.replace(source={**info["source"], **base.source})


def file_digests(files: Sequence[Path]) -> dict[str, str]:
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[f.name] = h.hexdigest()
    return out


def run_import(job: dict[str, Any]) -> dict[str, Any]:
    """The child's work: read, rewrite, verify, write. Returns the card's ``source`` section."""
    import numpy as np

    from converters import graph_fixes, graphdef, nhwc

    path = Path(job["path"])
    say(f"import: reading {path.name}")
    if path.suffix.lower() == ".json":
        from converters.tfjs import read_tfjs

        g = read_tfjs(path)
        if job.get("inputs") or job.get("outputs"):
            g.inputs = [graphdef.tensor_name(n) for n in job["inputs"]] or g.inputs
            g.outputs = [graphdef.tensor_name(n) for n in job["outputs"]] or g.outputs
            graphdef.check_io(g.graph_def, g.inputs, g.outputs, str(path))
    else:
        from converters.frozen_graph import read_frozen

        g = read_frozen(path, job.get("inputs") or (), job.get("outputs") or (), job.get("input_shapes") or ())
    shapes = graphdef.static_shapes(g.graph_def)
    convert = nhwc.nchw_inputs(g.graph_def, g.inputs, shapes) if job.get("layout", "auto") == "auto" else []
    rw = nhwc.to_nhwc(g.graph_def, g.inputs, g.outputs, convert)
    changes = [*g.info.pop("changes", []), *rw.notes]
    if rw.transposes != (0, 0):
        changes.append(f"Transpose ops {rw.transposes[0]} -> {rw.transposes[1]}")
    pads = graph_fixes.edge_pad_maxpools(rw.graph_def)
    if pads:
        changes.append(f"{len(pads)} max-pool -FLT_MAX pad(s) as edge padding (same result; keeps int8 scales finite)")
    for c in changes:
        say(f"import: {c}")
    feeds = graphdef.feeds_for(shapes, g.inputs)
    ref = graphdef.run_graph(g.graph_def, g.inputs, g.outputs, feeds)
    moved = [x.transpose(0, 2, 3, 1) if n in convert else x for n, x in zip(g.inputs, feeds)]
    got = graphdef.run_graph(rw.graph_def, g.inputs, rw.outputs, moved)
    diffs = graphdef.compare(ref, got)
    worst = max((d["max_abs_diff"] / max(d["range"], 1e-12) for d in diffs), default=0.0)
    if worst > EXACT_TOLERANCE:
        raise ConversionError(f"{path.name}: the rewritten graph differs from the original by {worst:.2g} of an output's range; "
                              "import with layout keep (--keep-layout) and report the graph")
    say(f"import: rewritten graph matches the original (max difference {worst:.2g} of each output's range)")
    keys = graphdef.write_saved_model(rw.graph_def, g.inputs, rw.outputs, Path(job["out"]))
    return {**g.info, "sha256_files": file_digests(g.files), "inputs": list(g.inputs), "outputs": list(g.outputs),
            "input_keys": keys, "import": {"changes": changes, "max_rel_diff_vs_original": float(np.float32(worst))}}


def say(msg: str) -> None:
    print(f"edgesdk: {msg}", file=sys.stderr, flush=True)


def main(job_path: str) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    job = json.loads(Path(job_path).read_text())
    try:
        info: dict[str, Any] = {"source": run_import(job)}
    except (ModelFormatError, ConversionError) as e:
        info = {"error": str(e), "type": type(e).__name__, "param": getattr(e, "param", None)}
    Path(job["info"]).write_text(json.dumps(info))
    return 0 if "source" in info else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

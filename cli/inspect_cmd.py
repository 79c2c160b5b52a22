"""``edgesdk inspect MODEL.tflite``: tensors, quantization, ops, card (and Edge TPU readiness)."""

from __future__ import annotations

import argparse
from typing import Any

from sdk.console import Output, add_command, table


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "inspect", common, help="inputs, outputs, quantization, op histogram, card, Edge TPU readiness")
    p.add_argument("model", help="a .tflite file")
    p.add_argument("--edgetpu", action="store_true", help="also check Edge TPU readiness op by op")
    p.set_defaults(func=run)


def tensor_json(t: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "shape": list(t.shape_signature), "dtype": t.dtype}
    if t.is_quantized:
        if len(t.scales) == 1:
            d["quantization"] = {"scale": t.scales[0], "zero_point": t.zero_points[0]}
        else:
            d["quantization"] = {"per_channel": len(t.scales), "axis": t.quantized_dimension}
    return d


def inspect_model(path: str) -> dict[str, Any]:
    """Everything ``inspect`` reports, as one JSON-able mapping."""
    from dataclasses import asdict

    from sdk.card import read_card, ultralytics_metadata
    from sdk.tflite_file import TFLiteFile

    f = TFLiteFile.from_path(path)
    card = read_card(f)
    info: dict[str, Any] = {
        "model": path,
        "size_bytes": f.size_bytes(),
        "subgraphs": len(f.subgraphs),
        "signatures": list(f.signatures),
        "inputs": [tensor_json(t) for t in f.inputs],
        "outputs": [tensor_json(t) for t in f.outputs],
        "ops": f.op_histogram(),
        "weights": f.weight_dtypes(),
        "metadata": sorted(f.metadata),
        "card": asdict(card) if card else None,
    }
    if card is None:
        meta = ultralytics_metadata(f.data)
        if meta:
            info["ultralytics"] = {k: meta[k] for k in ("task", "imgsz", "stride", "names", "version") if k in meta}
    return info


def run(args: argparse.Namespace, out: Output) -> int:
    info = inspect_model(args.model)
    if args.edgetpu:
        from sdk.edgetpu_readiness import readiness

        info["edgetpu"] = readiness(args.model).to_json()
    out.emit(info, format_info(info))
    return 0


def format_info(info: dict[str, Any]) -> str:
    def rows(ts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": t["name"],
                "shape": str(t["shape"]),
                "dtype": t["dtype"],
                "quantization": ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in t.get("quantization", {}).items()),
            }
            for t in ts
        ]

    lines = [
        f"{info['model']}: {info['size_bytes'] / 1024:.1f} KiB, {info['subgraphs']} subgraph(s), signatures {info['signatures'] or '-'}",
        "",
        "inputs:",
        table(rows(info["inputs"])),
        "",
        "outputs:",
        table(rows(info["outputs"])),
        "",
        "ops: " + ", ".join(f"{k} ×{v}" for k, v in info["ops"].items()),
        "weights: " + (", ".join(f"{k} ×{v}" for k, v in info["weights"].items()) or "-"),
    ]
    card = info.get("card")
    if card:
        import yaml

        lines += ["", "model card:", yaml.safe_dump(card, sort_keys=False).rstrip()]
    elif info.get("ultralytics"):
        u = info["ultralytics"]
        lines += ["", f"no edgesdk card; Ultralytics metadata: task {u.get('task')}, imgsz {u.get('imgsz')}, {len(u.get('names', []))} classes"]
    else:
        lines += ["", "no model card (run `edgesdk convert` to embed one, or pass the facts as flags)"]
    if "edgetpu" in info:
        from sdk.edgetpu_readiness import format_readiness

        lines += ["", format_readiness(info["edgetpu"])]
    return "\n".join(lines)

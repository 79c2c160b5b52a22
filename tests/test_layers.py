"""The layering rule of ARCHITECTURE.md, read from every module's imports (AST, no import runs).

Floors, lowest first: ``sdk``; ``devices`` and ``converters`` (which never import each other);
``apps``; ``deploy``; ``cli``. A module imports its own package and floors below it only.
Imports inside functions count, and so do ``importlib.import_module``/``__import__`` calls with
a literal name. ``apps`` may import ``converters`` only from its host-side recipe modules.
There is no import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("sdk", "devices", "converters", "apps", "deploy", "cli")
ALLOWED: dict[str, set[str]] = {
    "sdk": set(),
    "devices": {"sdk"},
    "converters": {"sdk"},
    "apps": {"sdk", "devices", "converters"},
    "deploy": {"sdk", "devices", "apps"},
    "cli": set(PACKAGES),
}
# apps/<app>/ modules that run on the host only (TensorFlow recipes): the only ones that may use converters
HOST_SIDE = {"model", "train", "eval", "data", "dataset", "augment", "texts", "int8", "calibrate", "fit", "jobs", "operating_point"}


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # submodules; filtered against real modules below
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in ("import_module", "__import__", "find_spec") and node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
    return names


def graph() -> dict[str, set[str]]:
    mods = module_files()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for imp in imported_names(path, name):
            while imp and imp not in mods and "." in imp:  # `from a.b import func` -> a.b
                imp = imp.rpartition(".")[0]
            if imp in mods and imp != name:
                targets.add(imp)
            elif imp.split(".")[0] in PACKAGES and imp not in mods:
                targets.add(imp)  # a missing module: reported by the floor check if upward
        edges[name] = targets
    return edges


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in edges.items():
        floor = mod.split(".")[0]
        for t in targets:
            tfloor = t.split(".")[0]
            if tfloor == floor:
                continue
            if tfloor not in ALLOWED[floor]:
                bad.append(f"{mod} -> {t}")
            elif floor == "apps" and tfloor == "converters" and mod.rsplit(".", 1)[-1] not in HOST_SIDE:
                bad.append(f"{mod} -> {t} (device-side app module)")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_upward_imports():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is the package's API, not a cycle
    edges = {m: {t for t in ts if not (m and t.startswith(m + "."))} for m, ts in graph().items()}
    assert cycles(edges) == []


def test_the_checker_sees_function_level_and_importlib_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from apps.detect import app\n    import importlib\n    importlib.import_module('converters.convert')\n")
    names = imported_names(src, "sdk.m")
    assert {"apps.detect", "apps.detect.app", "converters.convert"} <= names
    edges = {"sdk.m": {"apps.detect.app", "converters.convert"}, "apps.detect.app": {"sdk.m"}}
    assert upward_imports(edges) == ["sdk.m -> apps.detect.app", "sdk.m -> converters.convert"]
    assert cycles(edges) == [["apps.detect.app", "sdk.m"]]

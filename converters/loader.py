"""Loading a model file without running code from it.

A Keras file can carry Python: a ``Lambda`` layer stores its function as marshalled
bytecode, and loading it with ``safe_mode=False`` runs whatever the file's author wrote.
This loader reads the model's config first (``config.json`` of a ``.keras`` zip, the
``model_config`` attribute of an ``.h5``) and decides before Keras sees it:

* a ``Lambda`` whose function the caller registered (a custom object named like the layer
  or like the function) is pointed at that function, so no bytecode is ever read;
* otherwise a ``Lambda`` is refused unless ``trust`` is set (``--trust-model-code``);
* a layer class that is neither a Keras built-in nor a custom object is named, with the fix.

tf.keras 2 ``.h5`` files are translated first (:mod:`converters.tfkeras2`). A file that
needs a change is loaded from a rewritten copy in the conversion's work folder.
Runs in the converter child process.
"""

from __future__ import annotations

import binascii
import codecs
import importlib
import importlib.util
import json
import marshal
import sys
import zipfile
from pathlib import Path
from typing import Any

from converters import tfkeras2
from sdk.errors import ModelFormatError

WRAPPER_KEYS = ("layer", "backward_layer", "cell", "cells", "layers")
MODEL_CLASSES = ("Functional", "Model", "Sequential")


def import_custom_objects(specs: list[str], optional: list[str] = ()) -> dict[str, Any]:
    """Custom objects from ``FILE.py`` paths and ``module:Name`` specs.

    A Python file contributes its ``CUSTOM_OBJECTS`` dict if it defines one, else every
    public class and function defined in it. ``optional`` specs (guessed from an in-memory
    model's layers) are skipped when they cannot be imported.

    Raises:
        ModelFormatError: A spec that cannot be imported, naming it and the expected form.
    """
    out: dict[str, Any] = {}
    for spec in [*specs, *optional]:
        try:
            out.update(_from_file(Path(spec)) if spec.endswith(".py") else _from_module(spec))
        except (ImportError, AttributeError, OSError, SyntaxError) as e:
            if spec not in specs:
                continue
            raise ModelFormatError(f"custom_objects {spec!r}: cannot import it ({e}); give a Python file (FILE.py) or module:Name "
                                   "from an importable module") from e
    return out


def _from_module(spec: str) -> dict[str, Any]:
    mod, _, name = spec.partition(":")
    return {name: getattr(importlib.import_module(mod), name)}


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise OSError(f"{path}: no such file")
    name = f"edgesdk_custom_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # registration decorators and pickling look modules up by name
    spec.loader.exec_module(mod)
    table = getattr(mod, "CUSTOM_OBJECTS", None)
    if isinstance(table, dict):
        return dict(table)
    return {k: v for k, v in vars(mod).items() if not k.startswith("_") and callable(v) and getattr(v, "__module__", None) == name}


def read_config(path: Path) -> dict[str, Any] | None:
    """The model config stored in a ``.keras`` or ``.h5`` file (``None`` if it has none).

    Raises:
        ModelFormatError: The stored config is not JSON (a damaged or hand-edited file).
    """
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        return tfkeras2.h5_info(path)["config"]
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        where = "config.json" if path.suffix == ".keras" else "the model_config attribute"
        raise ModelFormatError(f"{path}: {where} is not valid JSON ({str(e)[:120]}); the file is damaged: save the model again "
                               "with model.save()") from e


def scan(config: Any, where: str, custom: dict[str, Any], trust: bool) -> tuple[Any, list[str]]:
    """Check every layer of ``config`` and point registered Lambdas at their functions.

    Returns:
        ``(config, notes)``; ``config`` is a changed copy, or the same object if nothing changed.

    Raises:
        ModelFormatError: A Lambda without ``trust`` or a registered function; an unknown class.
    """
    import keras

    notes: list[str] = []
    builtins = set(dir(keras.layers)) | set(MODEL_CLASSES) | {"InputLayer"}
    out = json.loads(json.dumps(config))
    _scan_layer(out, where, custom, trust, builtins, notes)
    return (out if notes else config), notes


def _scan_layer(node: Any, where: str, custom: dict[str, Any], trust: bool, builtins: set[str], notes: list[str]) -> None:
    if isinstance(node, list):
        for v in node:
            _scan_layer(v, where, custom, trust, builtins, notes)
        return
    if not isinstance(node, dict) or not isinstance(node.get("config"), dict):
        return
    cls, cfg = str(node.get("class_name", "")), node["config"]
    name = str(cfg.get("name", cls))
    if cls == "Lambda":
        _lambda(cfg, name, where, custom, trust, notes)
    elif cls not in builtins and not _registered(node, custom):
        if not trust or not str(node.get("module") or "").startswith("keras"):
            raise ModelFormatError(
                f"{where}: layer {name!r} has class {cls!r}, which is not a Keras layer; define it in a Python file "
                f"(or list it in CUSTOM_OBJECTS there) and pass it with custom_objects=FILE.py"
            )
    for key in WRAPPER_KEYS:
        if key in cfg:
            _scan_layer(cfg[key], where, custom, trust, builtins, notes)


def _registered(node: dict[str, Any], custom: dict[str, Any]) -> bool:
    names = {str(node.get("class_name")), str(node.get("registered_name") or "")}
    return any(n in custom or n.split(">")[-1] in custom for n in names)


def _lambda(cfg: dict[str, Any], name: str, where: str, custom: dict[str, Any], trust: bool, notes: list[str]) -> None:
    """Replace a Lambda's code by a registered function, or allow it only with ``trust``."""
    fn = cfg.get("function")
    fn_name = fn.get("config") if isinstance(fn, dict) and fn.get("class_name") == "function" else None
    for key in (name, fn_name):
        if key and key in custom:
            cfg["function"] = {"module": None, "class_name": "function", "config": key, "registered_name": key}
            cfg.pop("function_type", None)
            notes.append(f"Lambda layer {name!r} runs the registered function {key!r}, not the code stored in the file")
            return
    if fn_name is not None:
        raise ModelFormatError(f"{where}: Lambda layer {name!r} calls the function {fn_name!r}, which is not registered; "
                               f"define it in a Python file and pass custom_objects=FILE.py")
    if not trust:
        raise ModelFormatError(
            f"{where}: Lambda layer {name!r} holds Python code, and loading it would run code from the file; either register "
            f"a function for it (CUSTOM_OBJECTS = {{{name!r}: fn}} in a Python file passed with custom_objects=FILE.py) "
            "or, if you trust the file, allow it with trust_model_code=True"
        )
    _check_bytecode(cfg, name, where)
    notes.append(f"Lambda layer {name!r}: its stored Python code was loaded (trusted)")


def _check_bytecode(cfg: dict[str, Any], name: str, where: str) -> None:
    """Fail with the layer's name when its bytecode came from another Python version."""
    fn = cfg.get("function")
    code = fn["config"].get("code") if isinstance(fn, dict) and isinstance(fn.get("config"), dict) else None
    if not isinstance(code, str):
        return
    try:
        raw = codecs.decode(code.encode("ascii"), "base64")  # Keras writes MIME base64, with newlines
    except (UnicodeEncodeError, binascii.Error):  # Keras's own fallback for old files
        raw = code.encode("raw_unicode_escape")
    try:
        marshal.loads(raw)
    except (EOFError, ValueError, TypeError) as e:
        raise ModelFormatError(
            f"{where}: Lambda layer {name!r}: its Python code was saved by another Python version and cannot be read by Python "
            f"{sys.version_info.major}.{sys.version_info.minor} ({e}); register a replacement function (CUSTOM_OBJECTS = {{{name!r}: fn}} "
            "in a file passed with custom_objects=FILE.py), or re-save the model with this Python version"
        ) from e


def rewritten_copy(path: Path, config: Any, work: Path) -> Path:
    """A copy of ``path`` in ``work`` with ``config`` as its model config."""
    import shutil

    copy = work / f"loaded_{path.name}"
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as dst:
            for item in src.infolist():
                data = json.dumps(config).encode() if item.filename == "config.json" else src.read(item.filename)
                dst.writestr(item, data)
        return copy
    import h5py

    if copy != path:
        shutil.copyfile(path, copy)
    with h5py.File(copy, "r+") as f:
        f.attrs["model_config"] = json.dumps(config)
    return copy


def load_model(path: str | Path, custom_objects: dict[str, Any], *, trust: bool = False, work: Path | None = None) -> tuple[Any, list[str]]:
    """Load a ``.keras``/``.h5`` file (Keras 3 or tf.keras 2) or a SavedModel folder, safely.

    Args:
        path: The model.
        custom_objects: Registered classes and functions (see :func:`import_custom_objects`).
        trust: Allow code stored in the file (``Lambda`` bytecode) to load and run.
        work: Folder for rewritten copies (default: beside nothing; the file is read in place).

    Returns:
        ``(model, notes)``: a ``keras.Model`` (or a :class:`~converters.keras_model.SavedModelFn`
        for a SavedModel folder) and what was translated or replaced.

    Raises:
        ModelFormatError: One line naming the file, the layer and the fix.
    """
    from converters import keras_model

    p = Path(path)
    if p.is_dir():
        return keras_model.SavedModelFn(p), []
    custom = {**tfkeras2.custom_objects(), **custom_objects}
    notes: list[str] = []
    src = p
    config = read_config(p)
    if p.suffix != ".keras":
        info = tfkeras2.h5_info(p)
        if tfkeras2.is_tfkeras2(info) and config is not None:
            config, notes = tfkeras2.translate(config, p.name, info.get("gru_bias_shapes"))
            notes.insert(0, f"tf.keras {info['keras_version']} file: layer arguments translated for Keras 3")
    if config is not None:
        config, scan_notes = scan(config, p.name, custom, trust)
        if notes or scan_notes:
            src = rewritten_copy(p, config, work or p.parent)
        notes += scan_notes
    return _keras_load(src, p, custom, trust), notes


def _keras_load(src: Path, original: Path, custom: dict[str, Any], trust: bool) -> Any:
    import keras

    try:
        return keras.saving.load_model(src, custom_objects=custom, compile=False, safe_mode=not trust)
    except (TypeError, ValueError, KeyError, AttributeError, EOFError) as e:
        text = str(e).strip().splitlines()[0][:240] if str(e).strip() else repr(e)
        if "mismatch" in text:
            raise ModelFormatError(f"{original.name}: the stored weights do not fit the model's layers ({text}); "
                                   "the file may be damaged or its layers were changed after the weights were saved") from e
        raise ModelFormatError(f"{original.name}: cannot load the Keras model: {text}") from e
    except OSError as e:
        raise ModelFormatError(f"{original.name}: cannot read the Keras model ({e}); the file may be truncated: copy it again") from e

"""The one list of apps: name, default model, command module, config entries, demo, eval, train.

Every place that needs "the apps" reads this table: the ``edgesdk`` command table, ``edgesdk
demo``, ``eval``/``train``, app configs (``edgesdk run``) and deployment bundles. Modules are
named, not imported, so listing the apps costs nothing and an app whose module is missing
from an install (a device wheel without the host-side recipes) simply drops out.

Each ``apps/<package>/`` has the same skeleton: ``app.py`` (device pipeline), ``cli.py``
(its commands: ``register``, ``register_eval``, ``register_train``), ``demo.py`` (``demo(out)``),
``model.py`` + ``train.py`` + ``eval.py`` (host-side recipe), ``models/`` and ``samples/``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sdk.errors import ModelFormatError

APPS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ConfigApp:
    """One ``app:`` value of an app config and the command it runs.

    Attributes:
        command: The ``edgesdk`` command words (``("face", "verify")``).
        devices: Device classes the service needs (``"audio"``, ``"video"``).
        path_options: Option values that are files, resolved against the config's folder.
        default_source: What ``edgesdk config init`` writes as ``source``.
        source_help: What a ``source`` may be.
    """

    command: tuple[str, ...]
    devices: tuple[str, ...]
    default_source: str
    source_help: str
    path_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    """One app.

    Attributes:
        name: The command name (``trigger-word``).
        task: The model card's ``task`` of its models.
        package: The folder under ``apps/`` (``trigger_word``).
        default_model: The shipped default model, relative to the package folder.
        configs: The ``app:`` values of app configs that run this app.
        rebuild: What rebuilds the default model when it is missing.
    """

    name: str
    task: str
    package: str
    default_model: str
    configs: dict[str, ConfigApp]
    rebuild: str

    @property
    def folder(self) -> Path:
        return APPS_DIR / self.package

    @property
    def default_model_path(self) -> Path:
        return self.folder / self.default_model

    def module(self, role: str) -> ModuleType | None:
        """``apps.<package>.<role>`` (``cli``, ``demo``, ``train``...), or None when not installed.

        Raises:
            ModuleNotFoundError: The module exists but a module it needs is missing.
        """
        name = f"apps.{self.package}.{role}"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                return None
            raise


APPS: dict[str, App] = {
    a.name: a
    for a in (
        App("trigger-word", "trigger-word", "trigger_word", "models/activate_int8.tflite",
            {"trigger-word": ConfigApp(("trigger-word",), ("audio",), "mic",
                                       "a .wav file, 'mic' (default input) or 'mic:DEVICE' (index or part of a name)")},
            "edgesdk train trigger-word"),
        App("detect", "detect", "detect", "models/detect_int8.tflite",
            {"detect": ConfigApp(("detect",), ("video",), "0", "camera index, /dev/videoN, video or image file, folder, http:// or rtsp:// URL",
                                 ("labels",))},
            ".venv/bin/python scripts/build_detect_default.py"),
        App("face", "face-embed", "face", "models/face_embed_int8.tflite",
            {name: ConfigApp(("face", name[5:]), ("video",), "0", "an image file, or a camera index, /dev/videoN, video file or URL", ("db",))
             for name in ("face-verify", "face-identify")},
            "scripts/build_face_models.py"),
    )
}

CONFIG_APPS: dict[str, tuple[App, ConfigApp]] = {name: (app, spec) for app in APPS.values() for name, spec in app.configs.items()}


def default_model(name: str) -> Path:
    """App ``name``'s shipped default model.

    Raises:
        ModelFormatError: It is missing from this installation (says how to rebuild it).
    """
    app = APPS[name]
    path = app.default_model_path
    if not path.is_file():
        raise ModelFormatError(f"the default {name} model {path} is missing from this installation; "
                               f"give a model explicitly or rebuild it with `{app.rebuild}`")
    return path

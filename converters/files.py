"""What a model path holds, checked before any TensorFlow work: one line naming the file and the fix.

Recognises Git LFS pointers (what a clone without ``git lfs`` holds instead of each large
file), truncated ``.keras`` zips and ``.h5`` files, and files with the wrong extension.
No TensorFlow here (h5py is imported only for ``.h5`` files).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sdk.errors import ModelFormatError
from sdk.paths import not_special

LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KINDS = "a .keras file (model.save('m.keras')), an .h5 file, a SavedModel folder or a dlib .dat network"


def check_model_path(p: Path) -> None:
    """Raise :class:`ModelFormatError` unless ``p`` is a readable model file or SavedModel folder."""
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or folder; expected {KINDS}")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise ModelFormatError(f"{p}: folder without saved_model.pb; expected a SavedModel folder (model.export(path)) or a .keras file")
        if is_lfs_pointer(p / "saved_model.pb"):
            raise ModelFormatError(f"{p / 'saved_model.pb'}: a Git LFS pointer, not the file itself; run `git lfs pull` in its repository")
        return
    not_special(p, f"expected {KINDS}", ModelFormatError)
    with open(p, "rb") as fh:
        head = fh.read(len(LFS_HEADER))
    if head.startswith(LFS_HEADER):
        raise ModelFormatError(f"{p}: a Git LFS pointer ({p.stat().st_size} bytes), not the model itself; run `git lfs pull` "
                               "in the repository it came from (install git-lfs first if needed)")
    if p.suffix == ".dat":  # a dlib DNN (converters.dlib reads it, and says which layers it cannot)
        return
    if p.suffix == ".keras":
        _check_zip(p, head)
        return
    if p.suffix in (".h5", ".hdf5"):
        _check_h5(p, head)
        return
    kind = "an HDF5 file" if head.startswith(HDF5_SIGNATURE) else "a zip archive" if head[:2] == b"PK" else None
    hint = f"; it looks like {kind}: rename it to .{'h5' if 'HDF5' in kind else 'keras'}" if kind else ""
    raise ModelFormatError(f"{p}: not a Keras model (extension {p.suffix or 'none'}); expected {KINDS}{hint}")


def is_lfs_pointer(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(len(LFS_HEADER)) == LFS_HEADER


def _check_zip(p: Path, head: bytes) -> None:
    if head[:2] != b"PK":
        raise ModelFormatError(f"{p}: not a Keras model (a .keras file is a zip archive; this one starts with {head[:8]!r}); expected {KINDS}")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelFormatError(f"{p}: truncated or damaged .keras archive ({e}); download or copy it again") from e
    if bad is not None:
        raise ModelFormatError(f"{p}: damaged .keras archive (entry {bad} fails its checksum); download or copy it again")
    if "config.json" not in names:
        raise ModelFormatError(f"{p}: a zip archive without config.json, so not a .keras model; save it with model.save('m.keras')")


def _check_h5(p: Path, head: bytes) -> None:
    if not head.startswith(HDF5_SIGNATURE):
        raise ModelFormatError(f"{p}: not an HDF5 file (it starts with {head[:8]!r}); expected an .h5 saved by model.save('m.h5')")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            has_config = "model_config" in f.attrs
            has_weights = "model_weights" in f or "layer_names" in f.attrs
    except OSError as e:
        raise ModelFormatError(f"{p}: truncated or damaged .h5 file ({str(e).splitlines()[0][:160]}); download or copy it again") from e
    if not has_config:
        what = "weights only (save_weights)" if has_weights else "no Keras model"
        raise ModelFormatError(f"{p}: an .h5 file with {what}: it has no model config; save the whole model with model.save('m.h5'), "
                               "or rebuild the model in code, load these weights and save it")

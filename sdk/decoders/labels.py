"""Class labels for decoded ids: label files in their common forms and labels stored in a model.

Forms of a label file (one class a line, blank lines ignored):

* plain names, class 0 first (``coco.names``, Ultralytics);
* ``id name`` pairs (Coral's ``coco_labels.txt``: ``0  person``), gaps allowed: the ids are the
  class ids, missing ones become placeholders;
* names with placeholders (``???``, ``background``, ``n/a``) for unused ids, as in the 91-line
  TFLite ``labelmap.txt`` of the 90-id COCO map whose first line is the background.

A placeholder is shown as the class number. A model may carry its labels as an associated file
(TFLite metadata packs them into a zip appended to the ``.tflite``), read by
:func:`associated_labels`.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

from sdk.decoders.base import Guess
from sdk.errors import ConfigError
from sdk.paths import not_special

log = logging.getLogger("edgesdk")

PLACEHOLDERS = {"???", "background", "__background__", "n/a", "none", "unlabeled", "-"}
_PAIR = re.compile(r"^(\d+)[\s:,]+(\S.*)$")


def parse_labels(text: str) -> tuple[list[str | None], bool]:
    """Labels of a label file's text, placeholders as ``None``.

    Returns:
        The labels by class id, and whether the file gave ids (``id name`` pairs).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    pairs = [_PAIR.match(ln) for ln in lines]
    if lines and all(pairs):
        by_id = {int(m.group(1)): m.group(2).strip() for m in pairs if m}
        return [_name(by_id.get(i)) for i in range(max(by_id) + 1)], True
    return [_name(ln) for ln in lines], False


def _name(label: str | None) -> str | None:
    return None if label is None or label.strip().lower() in PLACEHOLDERS else label.strip()


def read_labels(path: str | Path) -> tuple[list[str | None], bool]:
    """:func:`parse_labels` of a file.

    Raises:
        ConfigError: (``param="labels_file"``) the file cannot be read or holds no labels.
    """
    not_special(path, "give a text file of class names", param="labels_file")
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConfigError(f"labels_file {path}: cannot read it ({e.strerror or e})", param="labels_file") from e
    labels, keyed = parse_labels(text)
    if not labels:
        raise ConfigError(f"labels_file {path}: no labels in it; give one class name per line", param="labels_file")
    return labels, keyed


def associated_labels(data: bytes) -> tuple[str, str] | None:
    """The text and name of the label file packed into a model (TFLite metadata's associated
    files, a zip appended to the flatbuffer), or ``None``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            texts = [n for n in z.namelist() if n.lower().endswith(".txt") and "meta" not in n.lower()]
            named = [n for n in texts if "label" in n.lower()]
            pick = named[:1] or (texts if len(texts) == 1 else [])
            if not pick:
                return None
            return z.read(pick[0]).decode("utf-8", errors="replace"), pick[0]
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


def fit_labels(labels: Sequence[str | None], keyed: bool, n: int, source: str) -> tuple[list[str], str | None]:
    """Labels for ``n`` classes (``0``: unknown) from a file's labels, placeholders named by number.

    A first placeholder line beyond the classes (the background of a 91-line COCO map) is
    dropped, and said.

    Returns:
        The labels and, when the background line was dropped, a sentence saying so.

    Raises:
        ConfigError: (``param="labels_file"``) more labels than classes, or fewer without ids.
    """
    note = None
    labels = list(labels)
    if not keyed and labels and labels[0] is None and (len(labels) == n + 1 or n == 0):
        labels, note = labels[1:], f"labels: the first line of {source} is a placeholder taken as the background class and dropped"
    if n and (len(labels) > n or (len(labels) < n and not keyed)):
        raise ConfigError(f"labels_file {source}: {len(labels)} labels, but the model has {n} classes; give one label per line", param="labels_file")
    return [str(i) if lab is None else lab for i, lab in enumerate(labels)], note


def resolve_labels(
    n: int, labels_file: str | None, card_labels: Sequence[str] | None, ultra_names: Sequence[str] | None, model_data: bytes
) -> tuple[list[str], str, list[Guess]]:
    """Labels for ``n`` classes (0: unknown): a labels file, else the card, Ultralytics metadata,
    a label file packed in the model (``model_data``: the ``.tflite`` bytes), else class numbers.

    Returns:
        The labels, where they came from, and what was assumed on the way (said by the caller).

    Raises:
        ConfigError: (``param="labels_file"``) a labels file that cannot be read or does not fit.
    """
    if labels_file:
        labels, note = fit_labels(*read_labels(labels_file), n, labels_file)
        return labels, f"the labels file {labels_file}", [Guess(note, "labels_file", "output.labels")] if note else []
    for source, given in (("model card", card_labels), ("Ultralytics metadata", ultra_names)):
        if given:
            if n and len(given) != n:
                log.warning("edgesdk: warning: %s lists %d labels for %d classes; using class numbers", source, len(given), n)
                break
            return [str(x) for x in given], source, []
    packed = associated_labels(model_data)
    if packed is not None:
        text, name = packed
        try:
            labels, note = fit_labels(*parse_labels(text), n, name)
        except ConfigError as e:
            log.warning("edgesdk: warning: the model's label file %s does not fit (%s); using class numbers", name, e)
        else:
            return labels, f"the model's associated file {name}", [Guess(note, "labels_file", "output.labels")] if note else []
    return [str(i) for i in range(n)], "class numbers", [Guess("labels: the model has none, classes are shown as numbers", "labels_file", "output.labels")]

"""Import dlib DNN models (``.dat``) as Keras models.

dlib serializes a network as nested wrappers (see ``dlib/dnn/core.h`` and ``serialize.h``):
the loss layer first (an int version, the loss details), then, from the top of the network
down, one int version per wrapper (``add_layer`` 2, ``add_tag_layer``/``add_skip_layer`` 1,
the ``add_layer`` directly over the input 2 or 3), then the input layer, then — unwinding
from the bottom up — each ``add_layer``'s layer details and training state. Integers are
a control byte (sign bit 0x80, byte count in the low nibble) then little-endian bytes;
floats are an integer mantissa and exponent (``mantissa * 2**exponent``); tensors are an
int version 2, four longs (n, k, nr, nc) and raw little-endian float32 in NCHW order.

Tags and skips serialize identically and carry no id, so the graph is recovered from the
layer sequence with the residual patterns dlib's ResNet examples use: ``tag1 … add_prev1``
(identity shortcut) and ``tag1 … tag2 skip1 avg_pool add_prev2`` (downsampling shortcut).

Supported layer details: ``input_rgb_image_sized``/``input_rgb_image``, ``con_4..6``,
``affine_``, ``relu_``, ``add_prev_``, ``max_pool_2``, ``avg_pool_2`` (including
``avg_pool_everything``), ``fc_2``/``fc_3`` and the ``loss_metric_2`` loss. Anything else
raises :class:`~sdk.errors.ModelFormatError` naming every unsupported layer in the file.

Usage::

    net = read_dat("dlib_face_recognition_resnet_model_v1.dat")   # no TensorFlow needed
    model = load_dlib_as_keras("dlib_face_recognition_resnet_model_v1.dat")
    # model input: float32 [N, NR, NC, 3] RGB pixels 0..255; output: [N, 128] descriptors
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

# the parsed-network types live with the builder, below this reader, so imports go one way
from converters.dlib_keras import DlibLayer, DlibNet, build_keras
from sdk.errors import ModelFormatError

SUPPORTED = (
    "input_rgb_image_sized", "input_rgb_image", "con_4", "con_5", "con_6", "affine_", "relu_",
    "add_prev_", "max_pool_2", "avg_pool_2", "fc_2", "fc_3", "loss_metric_2",
)
_NAME = re.compile(rb"[a-z][a-z0-9_]{2,40}")


class _Stream:
    """Reads dlib's primitive encodings from bytes."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: not a dlib DNN file this reader understands: {what} at byte {self.pos}")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int(self) -> int:
        ctrl = self.byte()
        size = ctrl & 0x0F
        if size > 8:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        raw = self.take(size)
        value = int.from_bytes(raw, "little")
        return -value if ctrl & 0x80 else value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"unexpected end of file (wanted {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        # float_details reserves these exponents for inf, -inf and NaN
        special = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
        if exponent in special:
            return float(special[exponent])
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        n = self.int()
        return self.take(n).decode("latin-1")

    def bool(self) -> bool:
        ch = self.byte()
        if ch not in (0x30, 0x31):
            self.pos -= 1
            raise self.fail(f"expected a bool ('0'/'1'), got 0x{ch:02x}")
        return ch == 0x31

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version} (expected 2)")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        arr = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        return arr.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version} (expected 1)")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def peek_string(self) -> str | None:
        """The string at the current position if it looks like a layer name, else None."""
        start = self.pos
        try:
            n = self.int()
            if not 3 < n <= 40:
                return None
            raw = self.take(n)
            return raw.decode("ascii") if _NAME.fullmatch(raw) else None
        except ModelFormatError:
            return None
        finally:
            self.pos = start


def _unsupported(data: bytes, name: str) -> list[str]:
    """Every layer-name-looking string in ``data`` that this reader does not support."""
    found = {name}
    for m in re.finditer(rb"\x01([\x04-\x28])([a-z][a-z0-9_]+_[0-9a-z]*)", data):
        if len(m.group(2)) == m.group(1)[0]:
            found.add(m.group(2).decode())
    return sorted(n for n in found if n not in SUPPORTED)


def _read_details(s: _Stream) -> DlibLayer:
    name = s.string()
    reader = _READERS.get(name)
    if reader is None:
        bad = _unsupported(s.data, name)
        raise ModelFormatError(
            f"{s.where}: dlib layer type(s) {', '.join(bad)} not supported by the importer "
            f"(supported: {', '.join(SUPPORTED)}); only dlib ResNet-style networks built from these can be converted"
        )
    return reader(s, name)


def _con(s: _Stream, name: str) -> DlibLayer:
    params = s.tensor().reshape(-1)
    num_filters, nr, nc, sy, sx, py, px = (s.int() for _ in range(7))
    filt = s.alias()
    s.alias()  # biases alias
    for _ in range(4):
        s.float()  # learning-rate and weight-decay multipliers
    use_bias = s.bool() if name in ("con_5", "con_6") else True
    use_relu = s.bool() if name == "con_6" else False
    n_filt = int(np.prod(filt))
    kernel = params[:n_filt].reshape(filt)  # dlib: (num_filters, k_in, nr, nc)
    weights = {"kernel": kernel}
    if use_bias:
        weights["bias"] = params[n_filt : n_filt + num_filters].copy()
    p = {"filters": num_filters, "size": (nr, nc), "stride": (sy, sx), "padding": (py, px), "relu": use_relu}
    return DlibLayer("con", p, weights)


def _affine(s: _Stream, name: str) -> DlibLayer:
    params = s.tensor().reshape(-1)
    gamma = s.alias()
    s.alias()
    mode = s.int()
    n = int(np.prod(gamma))
    return DlibLayer("affine", {"mode": "conv" if mode == 0 else "fc"}, {"gamma": params[:n].copy(), "beta": params[n : 2 * n].copy()})


def _pool(s: _Stream, name: str) -> DlibLayer:
    nr, nc, sy, sx, py, px = (s.int() for _ in range(6))
    kind = "max_pool" if name.startswith("max") else "avg_pool"
    return DlibLayer(kind, {"size": (nr, nc), "stride": (sy, sx), "padding": (py, px)})


def _fc(s: _Stream, name: str) -> DlibLayer:
    num_outputs, num_inputs = s.int(), s.int()
    params = s.tensor().reshape(-1)
    s.alias()
    s.alias()
    bias_mode = s.int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        s.float()
    use_bias = s.bool() if name == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    w = params[: num_inputs * num_outputs].reshape(num_inputs, num_outputs)
    weights = {"kernel": w}
    if has_bias:
        weights["bias"] = params[num_inputs * num_outputs : (num_inputs + 1) * num_outputs].copy()
    return DlibLayer("fc", {"units": num_outputs, "inputs": num_inputs}, weights)


def _input(s: _Stream, name: str) -> DlibLayer:
    mean = [s.float() for _ in range(3)]
    size = (s.int(), s.int()) if name == "input_rgb_image_sized" else (None, None)
    return DlibLayer("input", {"mean_rgb": mean, "size": size, "scale": 1.0 / 256.0})


def _loss_metric(s: _Stream, name: str) -> DlibLayer:
    return DlibLayer("loss_metric", {"margin": s.float(), "distance_threshold": s.float()})


_READERS = {
    "con_4": _con, "con_5": _con, "con_6": _con, "affine_": _affine,
    "relu_": lambda s, n: DlibLayer("relu"), "add_prev_": lambda s, n: DlibLayer("add_prev"),
    "max_pool_2": _pool, "avg_pool_2": _pool, "fc_2": _fc, "fc_3": _fc,
    "input_rgb_image_sized": _input, "input_rgb_image": _input, "loss_metric_2": _loss_metric,
}


def _skip_state(s: _Stream, version: int, over_input: bool) -> None:
    """Skip an add_layer's training state (flags and gradient buffers) after its details."""
    for _ in range(3):
        s.bool()
    s.tensor()  # x_grad
    s.tensor()  # cached_output
    if over_input:
        s.tensor()  # grad_final
        if version >= 3:
            s.int()  # sample expansion factor
    elif version >= 2:
        s.tensor()  # params_grad


def read_dat(path: str | Path) -> DlibNet:
    """Parse a dlib DNN ``.dat`` file (no TensorFlow needed).

    Raises:
        ModelFormatError: If the file is not a dlib DNN, or uses unsupported layers.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{p}: cannot read dlib model ({e.strerror})") from e
    s = _Stream(data, str(p))
    loss_version = s.int()
    if loss_version != 1 or s.peek_string() is None:
        raise s.fail("no dlib loss layer header")
    loss = _read_details(s)
    wrappers: list[int] = []
    while s.peek_string() is None:
        v = s.int()
        if v not in (1, 2, 3):
            raise s.fail(f"unexpected wrapper version {v}")
        wrappers.append(v)
    layers = [_read_details(s)]
    if layers[0].kind != "input":
        raise s.fail(f"expected an input layer, got {layers[0].kind}")
    for i, version in enumerate(reversed(wrappers)):
        if version == 1 and i > 0:
            layers.append(DlibLayer("marker"))
            continue
        layers.append(_read_details(s))
        _skip_state(s, version, over_input=(i == 0))
    if s.pos != len(data):
        raise s.fail(f"{len(data) - s.pos} trailing bytes")
    return DlibNet({"kind": loss.kind, **loss.params}, layers, str(p))


def load_dlib_as_keras(path: str | Path | DlibNet, input_size: tuple[int, int] | None = None) -> Any:
    """The Keras model equivalent to a dlib ``.dat`` network (see :mod:`converters.dlib_keras`).

    Raises:
        ModelFormatError: On unsupported layers or layer arrangements.
    """
    net = path if isinstance(path, DlibNet) else read_dat(path)
    return build_keras(net, input_size)


def dlib_card(net: DlibNet) -> Any:
    """The model card fields a converted dlib network starts with.

    A ``loss_metric`` network (dlib's face ResNet) becomes a ``face-embed`` card with dlib's
    semantics: RGB 0..255 input (normalisation is inside the model), Euclidean distance and
    the loss layer's distance threshold; the chip alignment dlib trained with is recorded.
    Other networks get a ``generic`` card.
    """
    from sdk.card import ModelCard

    h, w = net.input.params["size"]
    inp: dict[str, Any] = {"size": [w, h] if w else None, "letterbox": False, "mean": 0.0, "std": 1.0, "channel_order": "rgb"}
    src = {"dlib_file": Path(net.path).name if net.path else None}
    if net.loss.get("kind") != "loss_metric":
        return ModelCard(task="generic", input=inp, source=src)
    units = next(layer.params["units"] for layer in reversed(net.layers) if layer.kind == "fc")
    inp["align"] = {"method": "similarity", "template": "dlib mean face", "padding": 0.25, "keypoints": "blazeface"}
    out = {"embedding_size": int(units), "metric": "euclidean", "normalised": False,
           "threshold": round(float(net.loss.get("distance_threshold", 0.6)), 6)}
    return ModelCard(task="face-embed", input=inp, output=out, source=src)

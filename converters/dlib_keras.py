"""Parsed dlib networks (:class:`DlibNet`, :class:`DlibLayer`) and their Keras builder.

:func:`converters.dlib.read_dat` fills these types from a ``.dat`` file. They live here, below
the reader, so imports go one way (``converters.dlib`` -> ``converters.dlib_keras``); Keras
itself is imported only when a model is built, so reading a ``.dat`` needs no TensorFlow.

Layout notes: dlib tensors are NCHW and convolution filters ``(filters, k_in, nr, nc)``;
Keras is NHWC with kernels ``(nr, nc, k_in, filters)``. dlib's convolution and pooling pad
symmetrically (by default ``size // 2`` at stride 1, none at larger strides); ``add_prev``
adds tensors of different shapes by zero-extending the smaller one at the bottom, right and
last channels; ``fc`` flattens NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError


@dataclass
class DlibLayer:
    """One node of a dlib network in forward order.

    ``kind`` is ``input``, ``con``, ``affine``, ``relu``, ``add_prev``, ``max_pool``,
    ``avg_pool``, ``fc`` or ``marker`` (a tag or skip wrapper; which one is resolved by the
    Keras builder). ``params`` holds scalars, ``weights`` NumPy arrays.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: the loss details and the layers from the input up."""

    loss: dict[str, Any]
    layers: list[DlibLayer]
    path: str = ""

    @property
    def input(self) -> DlibLayer:
        return self.layers[0]

    def summary(self) -> str:
        """One line per layer, like dlib's ``operator<<`` but bottom-up."""
        lines = []
        for i, layer in enumerate(self.layers):
            shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in layer.weights.items())
            lines.append(f"{i:3d} {layer.kind:9s} {layer.params} {shapes}".rstrip())
        return "\n".join(lines)


def build_keras(net: DlibNet, input_size: tuple[int, int] | None = None) -> Any:
    """Build the Keras functional model equivalent to a dlib ``.dat`` network.

    The model takes float32 ``[N, H, W, 3]`` RGB pixels in 0..255 (dlib's ``matrix<rgb_pixel>``)
    and returns the top layer's output (``[N, 128]`` descriptors for the face ResNet). dlib's
    input normalisation ``(pixel - mean_rgb) / 256`` is folded into the first convolution
    when that convolution is unpadded (exactly equivalent, and it keeps the int8 input scale
    at whole pixels); affine (frozen batch-norm) layers are folded into the convolution before
    them.

    Args:
        net: A network parsed by :func:`converters.dlib.read_dat`.
        input_size: ``(H, W)`` for ``input_rgb_image`` (unsized) inputs.

    Raises:
        ModelFormatError: On unsupported layers or layer arrangements.
    """
    return _Builder(net, input_size).build()


class _Builder:
    """Walks a :class:`DlibNet` bottom-up, emitting Keras layers."""

    def __init__(self, net: DlibNet, input_size: tuple[int, int] | None) -> None:
        import keras

        self.k = keras
        self.net = net
        self.where = net.path or "dlib model"
        size = net.input.params["size"]
        if size[0] is None:
            if input_size is None:
                raise ModelFormatError(f"{self.where}: input_rgb_image has no fixed size; pass input_size=(H, W)")
            size = input_size
        self.size = (int(size[0]), int(size[1]))
        self.layers = net.layers
        self.n_conv = 0

    def fail(self, i: int, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: layer {i} ({self.layers[i].kind}): {what}; not supported by the dlib importer")

    def build(self) -> Any:
        k = self.k
        inp = k.Input((*self.size, 3), name="image_rgb", dtype="float32")
        x = inp
        pending_input_norm = True
        tags: list[Any] = []
        i = 1
        while i < len(self.layers):
            layer = self.layers[i]
            kinds = [lay.kind for lay in self.layers[i : i + 4]]
            if layer.kind == "con":
                fold = pending_input_norm and layer.params["padding"] == (0, 0)
                if pending_input_norm and not fold:
                    x = self._normalise(x)
                affine = self.layers[i + 1] if i + 1 < len(self.layers) and self.layers[i + 1].kind == "affine" else None
                x = self._conv(x, layer, affine, fold)
                pending_input_norm = False
                i += 2 if affine is not None else 1
                continue
            if pending_input_norm:
                x = self._normalise(x)
                pending_input_norm = False
            if kinds == ["marker", "marker", "avg_pool", "add_prev"]:
                if not tags:
                    raise self.fail(i, "downsampling shortcut without an opening tag")
                shortcut = self._pool(tags.pop(), self.layers[i + 2], i + 2)
                x = self._add(x, shortcut)
                i += 4
                continue
            if layer.kind == "marker":
                tags.append(x)
            elif layer.kind == "add_prev":
                if not tags:
                    raise self.fail(i, "add_prev without a matching tag")
                x = self._add(x, tags.pop())
            else:
                x = self._simple(x, layer, i)
            i += 1
        return k.Model(inp, x, name=Path(self.where).stem.replace(".", "_") or "dlib_model")

    def _simple(self, x: Any, layer: DlibLayer, i: int) -> Any:
        k = self.k
        if layer.kind == "relu":
            return k.layers.ReLU()(x)
        if layer.kind in ("max_pool", "avg_pool"):
            return self._pool(x, layer, i)
        if layer.kind == "fc":
            return self._dense(x, layer, i)
        if layer.kind == "affine":
            return self._affine(x, layer)
        raise self.fail(i, "unexpected layer here")

    def _normalise(self, x: Any) -> Any:
        mean = np.asarray(self.net.input.params["mean_rgb"], np.float32)
        scale = np.float32(self.net.input.params["scale"])
        return self.k.layers.Rescaling(scale=float(scale), offset=(-mean * scale).tolist(), name="dlib_input_norm")(x)

    def _conv(self, x: Any, layer: DlibLayer, affine: DlibLayer | None, fold_input: bool) -> Any:
        k = self.k
        p = layer.params
        kernel = layer.weights["kernel"].transpose(2, 3, 1, 0).astype(np.float64)  # -> (nr, nc, k_in, filters)
        bias = layer.weights.get("bias", np.zeros(p["filters"], np.float32)).astype(np.float64)
        if fold_input:
            # conv((x - m) / 256) == conv'(x) with kernel/256 and bias - sum(kernel * m / 256)
            mean = np.asarray(self.net.input.params["mean_rgb"], np.float64)
            scale = float(self.net.input.params["scale"])
            bias = bias - np.einsum("hwcf,c->f", kernel, mean * scale)
            kernel = kernel * scale
        if affine is not None:
            gamma, beta = affine.weights["gamma"].astype(np.float64), affine.weights["beta"].astype(np.float64)
            kernel = kernel * gamma
            bias = bias * gamma + beta
        (nr, nc), (sy, sx), (py, px) = p["size"], p["stride"], p["padding"]
        padding = "valid"
        if (sy, sx) == (1, 1) and (py, px) == (nr // 2, nc // 2) and nr % 2 and nc % 2:
            padding = "same"  # identical to dlib's symmetric padding for odd kernels at stride 1
        elif (py, px) != (0, 0):
            x = k.layers.ZeroPadding2D(((py, py), (px, px)))(x)
        self.n_conv += 1
        conv = k.layers.Conv2D(p["filters"], (nr, nc), strides=(sy, sx), padding=padding, name=f"con{self.n_conv}")
        x = conv(x)
        conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        if p["relu"]:
            x = k.layers.ReLU()(x)
        return x

    def _affine(self, x: Any, layer: DlibLayer) -> Any:
        # A frozen batch-norm with unit variance and zero mean is exactly x * gamma + beta.
        eps = 1e-6
        bn = self.k.layers.BatchNormalization(epsilon=eps)
        y = bn(x)
        n = layer.weights["gamma"].shape[0]
        bn.set_weights([layer.weights["gamma"], layer.weights["beta"], np.zeros(n, np.float32), np.full(n, 1.0 - eps, np.float32)])
        return y

    def _pool(self, x: Any, layer: DlibLayer, i: int) -> Any:
        k = self.k
        (nr, nc), (sy, sx), (py, px) = layer.params["size"], layer.params["stride"], layer.params["padding"]
        if (nr, nc) == (0, 0):
            if layer.kind == "avg_pool":
                return k.layers.GlobalAveragePooling2D(keepdims=True)(x)
            return k.layers.GlobalMaxPooling2D(keepdims=True)(x)
        cls = k.layers.MaxPooling2D if layer.kind == "max_pool" else k.layers.AveragePooling2D
        if (py, px) == (0, 0):
            return cls((nr, nc), strides=(sy, sx), padding="valid")(x)
        if layer.kind == "max_pool" and (sy, sx) == (1, 1) and (py, px) == (nr // 2, nc // 2) and nr % 2 and nc % 2:
            return cls((nr, nc), strides=1, padding="same")(x)
        raise self.fail(i, f"padded pooling (padding {py},{px} at stride {sy},{sx})")

    def _dense(self, x: Any, layer: DlibLayer, i: int) -> Any:
        k = self.k
        kernel = layer.weights["kernel"]
        shape = tuple(x.shape[1:])
        if len(shape) == 3:
            h, w, c = shape
            if h * w * c != kernel.shape[0]:
                raise self.fail(i, f"fc expects {kernel.shape[0]} inputs, the layer below gives {h}x{w}x{c}")
            # dlib flattens NCHW; reorder the kernel rows to Keras' NHWC flattening
            kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
            x = k.layers.Flatten()(x)
        dense = k.layers.Dense(layer.params["units"], use_bias="bias" in layer.weights, name="fc")
        y = dense(x)
        dense.set_weights([kernel] + ([layer.weights["bias"]] if "bias" in layer.weights else []))
        return y

    def _add(self, a: Any, b: Any) -> Any:
        """dlib's add_prev: shapes may differ; the output has the larger size of each axis and
        the smaller tensor is zero-padded at the bottom, right and last channels."""
        k = self.k
        target = tuple(max(int(p), int(q)) for p, q in zip(a.shape[1:], b.shape[1:]))
        return k.layers.Add()([self._pad_to(a, target), self._pad_to(b, target)])

    def _pad_to(self, x: Any, target: tuple[int, ...]) -> Any:
        k = self.k
        h, w, c = (int(v) for v in x.shape[1:])
        th, tw, tc = target
        if (h, w, c) == target:
            return x
        if c == tc:
            return k.layers.ZeroPadding2D(((0, th - h), (0, tw - w)))(x)
        # ZeroPadding3D over (H, W, C, 1) pads channels too, as one PAD op after conversion.
        y = k.layers.Reshape((h, w, c, 1))(x)
        y = k.layers.ZeroPadding3D(((0, th - h), (0, tw - w), (0, tc - c)))(y)
        return k.layers.Reshape(target)(y)

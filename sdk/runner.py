"""``Runner``: one TFLite model, one interpreter, float in and float out.

The runner picks the backend (``ai_edge_litert`` → ``tflite_runtime`` → ``tensorflow.lite``)
and the delegate; a delegate that fails falls back to the CPU with one warning naming the
cause and the fix, unless ``require_delegate`` is set. Callers pass and receive float
arrays: int8/uint8/int16 tensors are (de)quantized with each tensor's scale and zero point.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk import quant
from sdk.backends import find_backend
from sdk.card import ModelCard, read_card
from sdk.delegates import DelegateLoadError, DelegateSpec, parse_delegate
from sdk.delegates import load as load_delegate
from sdk.delegates.gpu import LITERT_GPU
from sdk.engine import InterpreterEngine, LiteRTGpuEngine
from sdk.errors import BackendUnavailableError, EdgeSDKError
from sdk.stats import StageStats
from sdk.tflite_file import TFLiteFile

log = logging.getLogger("edgesdk")


class InputError(EdgeSDKError, ValueError):
    """Arrays passed to :meth:`Runner.run` do not match the model's inputs."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as seen by callers."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values to this tensor's integer type (round to nearest, saturate)."""
        return quant.quantize(x, self.scale, self.zero_point, self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Integer values of this tensor to float32."""
        return quant.dequantize(q, self.scale, self.zero_point)

    def describe(self) -> str:
        q = f" (scale {self.scale:.6g}, zero point {self.zero_point})" if self.quantized else ""
        return f"{self.name} {list(self.shape)} {self.dtype}{q}"


class Runner:
    """Runs one ``.tflite`` model.

    Args:
        model: Path to a ``.tflite`` file, its bytes, or a parsed :class:`TFLiteFile` (shared, so
            more interpreters of one model skip parsing it again).
        backend: Backend name to force (``ai_edge_litert``, ``tflite_runtime``, ``tensorflow``).
        delegate: Delegate string (``cpu``, ``edgetpu:usb:0``, ``gpu``, a ``.so`` path).
        threads: CPU threads (default: all cores).
        delegate_options: Options passed to an external delegate.
        require_delegate: Raise instead of falling back to the CPU.

    Attributes:
        file: The parsed flatbuffer; ``card``: its model card or ``None``.
        delegate: The delegate actually in use (``"cpu"`` after a fallback).
        fallback_reason: Why the requested delegate was not used, or ``None``.
        stats: Latency samples (stage ``"infer"``; apps add their own stages).
    """

    def __init__(
        self,
        model: str | Path | bytes | TFLiteFile,
        *,
        backend: str | None = None,
        delegate: str | DelegateSpec | None = None,
        threads: int | None = None,
        delegate_options: Mapping[str, str] | None = None,
        require_delegate: bool = False,
    ) -> None:
        if isinstance(model, TFLiteFile):
            self.file = model
        else:
            self.file = TFLiteFile(model) if isinstance(model, (bytes, bytearray)) else TFLiteFile.from_path(model)
        self.name = self.file.name
        self.card: ModelCard | None = read_card(self.file)
        self.backend = find_backend(backend)
        spec = delegate if isinstance(delegate, DelegateSpec) else parse_delegate(delegate, dict(delegate_options or {}))
        self.requested_delegate = str(spec)
        self.threads = threads or os.cpu_count() or 1
        self.fallback_reason: str | None = None
        self.stats = StageStats()
        self._engine = self._make_engine(spec, require_delegate)
        self.inputs = self._specs(self._engine.input_details)
        self.outputs = self._specs(self._engine.output_details)
        self._by_name = {s.name: i for i, s in enumerate(self.inputs)}

    def _make_engine(self, spec: DelegateSpec, require: bool) -> InterpreterEngine | LiteRTGpuEngine:
        data = self.file.data
        try:
            handle = load_delegate(spec, self.backend)
            if handle == LITERT_GPU:
                cpu = InterpreterEngine(self.backend, data, self.name, None, self.threads)
                try:
                    engine: Any = LiteRTGpuEngine(self.backend, data, self.name, cpu)
                except (RuntimeError, ValueError) as e:
                    raise DelegateLoadError(f"LiteRT GPU accelerator unavailable ({str(e).splitlines()[0][:160]})") from e
                self.delegate = "gpu"
                return engine
            engine = InterpreterEngine(self.backend, data, self.name, handle, self.threads)
            self.delegate = spec.kind
            return engine
        except DelegateLoadError as e:
            if require:
                raise BackendUnavailableError(f"delegate {spec} required but unavailable: {e}") from e
            self.fallback_reason = str(e)
            log.warning("delegate %s unavailable, running on CPU: %s", spec, e)
        self.delegate = "cpu"
        return InterpreterEngine(self.backend, data, self.name, None, self.threads)

    def _specs(self, details: list[dict[str, Any]]) -> list[TensorSpec]:
        out = []
        for d in details:
            scale, zp = d.get("quantization", (0.0, 0))
            name = self._engine.signature_names.get(d["index"], d["name"])
            out.append(TensorSpec(name, d["index"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zp)))
        return out

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def _prepare(self, position: int, x: Any) -> np.ndarray:
        spec = self.inputs[position]
        arr = np.asarray(x)
        if arr.shape != spec.shape:
            if spec.shape and spec.shape[0] == 1 and arr.shape == spec.shape[1:]:
                arr = arr.reshape(spec.shape)  # a single sample without its batch axis
            elif self._resizable(position, arr.shape):
                self._engine.resize(position, arr.shape)
                self.inputs = self._specs(self._engine.input_details)
                self.outputs = self._specs(self._engine.output_details)
                spec = self.inputs[position]
            else:
                raise InputError(f"{self.name}: input {spec.name!r} expects shape {list(spec.shape)}, got {list(arr.shape)}")
        if spec.quantized and arr.dtype.kind == "f":
            return spec.quantize(arr)
        if arr.dtype == spec.dtype:
            return arr
        if arr.dtype.kind == "f" and spec.dtype.kind == "f":
            return arr.astype(spec.dtype)
        raise InputError(f"{self.name}: input {spec.name!r} expects {spec.dtype} (or float to be quantized), got {arr.dtype}")

    def _resizable(self, position: int, shape: tuple[int, ...]) -> bool:
        info = self.file.inputs[position] if position < len(self.file.inputs) else None
        if info is None or len(info.shape_signature) != len(shape):
            return False
        return all(s < 0 or s == d for s, d in zip(info.shape_signature, shape))

    def run(self, inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray], *, raw: bool = False) -> list[np.ndarray]:
        """Run the model once.

        Args:
            inputs: One array (single-input models), a sequence in input order, or a
                mapping from input name to array. Floats are quantized for integer inputs.
            raw: Return outputs in their stored integer type instead of dequantized floats.

        Returns:
            The outputs in model order, float32 unless ``raw``.

        Raises:
            InputError: On a missing input, a wrong shape or dtype.
        """
        arrays = self._order(inputs)
        prepared = [self._prepare(i, x) for i, x in enumerate(arrays)]
        with self.stats.time("infer"):
            outs = self._engine.invoke(prepared)
        if raw:
            return outs
        return [s.dequantize(o) if s.quantized else o for s, o in zip(self.outputs, outs)]

    def run_named(self, inputs: Any) -> dict[str, np.ndarray]:
        """Like :meth:`run`, returning a mapping from output name to float array."""
        return dict(zip(self.output_names, self.run(inputs)))

    def _order(self, inputs: Any) -> list[Any]:
        n = len(self.inputs)
        if isinstance(inputs, Mapping):
            missing = [k for k in self._by_name if k not in inputs]
            extra = [k for k in inputs if k not in self._by_name]
            if missing or extra:
                raise InputError(f"{self.name}: inputs are {self.input_names}; missing {missing}, unexpected {extra}")
            return [inputs[s.name] for s in self.inputs]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != n:
                raise InputError(f"{self.name}: the model has {n} inputs {self.input_names}, got {len(inputs)} arrays")
            return list(inputs)
        if n != 1:
            raise InputError(f"{self.name}: the model has {n} inputs {self.input_names}; pass a list or a dict")
        return [inputs]

    def describe(self) -> dict[str, Any]:
        """Backend, delegate and fallback, for logs and ``--json`` output."""
        return {
            "model": self.name,
            "backend": f"{self.backend.name} {self.backend.version}",
            "delegate": self.delegate,
            "requested_delegate": self.requested_delegate,
            "fallback": self.fallback_reason,
            "threads": self.threads,
        }


class StreamState:
    """Carries a streaming step model's recurrent state from one invoke to the next.

    A step model (written by the converter's ``stream`` route) takes a window of frames plus
    the recurrent state and returns the per-step outputs plus the new state. The card's
    ``input.stream`` names the tensors: ``input`` (the frames), ``outputs`` (the per-step
    outputs), ``state`` (pairs of ``input``/``output`` tensor names and their ``shape``),
    ``frames`` per invoke, ``hop_frames`` between invokes and output ``steps`` per invoke.

    Args:
        runner: The step model's runner.
        spec: The ``input.stream`` mapping (default: the runner's card).

    Raises:
        ModelFormatError: When the card has no stream section or names unknown tensors.
    """

    def __init__(self, runner: Runner, spec: Mapping[str, Any] | None = None) -> None:
        from sdk.errors import ModelFormatError

        spec = spec if spec is not None else (runner.card.input.get("stream") if runner.card else None)
        try:
            self.frames, self.hop_frames, self.steps = int(spec["frames"]), int(spec["hop_frames"]), int(spec["steps"])
            self.input = str(spec.get("input", "frames"))
            self.outputs = [str(n) for n in spec["outputs"]]
            self.pairs = [(str(s["input"]), str(s["output"]), tuple(int(d) for d in s["shape"])) for s in spec["state"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"{runner.name}: card input.stream needs frames, hop_frames, steps, outputs and state ({e})") from e
        unknown = [n for n in [self.input, *(i for i, _, _ in self.pairs)] if n not in runner.input_names]
        unknown += [n for n in [*self.outputs, *(o for _, o, _ in self.pairs)] if n not in runner.output_names]
        if unknown:
            raise ModelFormatError(f"{runner.name}: card input.stream names tensors the model lacks: {unknown}; "
                                   f"inputs {runner.input_names}, outputs {runner.output_names}")
        self.runner = runner
        self.stride = self.hop_frames // self.steps
        self.receptive = self.frames - self.stride * (self.steps - 1)
        self.reset()

    def reset(self) -> None:
        """Zero state: the next invoke starts a new sequence."""
        self.state = {i: np.zeros(shape, np.float32) for i, _, shape in self.pairs}

    def step(self, frames: np.ndarray) -> list[np.ndarray]:
        """One invoke on ``frames`` ([frames, features]); returns the per-step outputs, keeps the new state."""
        out = self.runner.run_named({self.input: np.asarray(frames, np.float32).reshape(1, self.frames, -1), **self.state})
        self.state = {i: out[o] for i, o, _ in self.pairs}
        return [out[n] for n in self.outputs]

    def run_sequence(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of a whole sequence ``x`` ([T, features]) from a zero state, as the full model gives them."""
        n_steps = max(0, (x.shape[0] - self.receptive) // self.stride + 1)
        n_inv = -(-n_steps // self.steps)
        need = (n_inv - 1) * self.hop_frames + self.frames
        if x.shape[0] < need:  # frames past the end only reach steps past the end, which are cut
            x = np.concatenate([x, np.zeros((need - x.shape[0], *x.shape[1:]), x.dtype)])
        self.reset()
        parts = [self.step(x[j * self.hop_frames : j * self.hop_frames + self.frames]) for j in range(n_inv)]
        return [np.concatenate([p[k] for p in parts], axis=1)[:, :n_steps] for k in range(len(self.outputs))]

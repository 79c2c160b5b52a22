"""Execution engines under the :class:`~sdk.runner.Runner`.

``InterpreterEngine`` drives a classic TFLite ``Interpreter`` (any backend, any delegate).
``LiteRTGpuEngine`` drives LiteRT's ``CompiledModel`` with the GPU accelerator.
Both take and return raw tensors (already quantized); the runner does the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdk._native import captured_native_stderr
from sdk.errors import ModelFormatError


class InterpreterEngine:
    """A TFLite interpreter with its tensors allocated."""

    def __init__(self, backend: Any, model: bytes, name: str, delegate: Any = None, threads: int | None = None) -> None:
        kwargs: dict[str, Any] = {"model_content": model}
        if delegate is not None:
            kwargs["experimental_delegates"] = [delegate]
        if threads:
            kwargs["num_threads"] = int(threads)
        with captured_native_stderr() as native:
            try:
                self.interpreter = backend.interpreter_cls(**kwargs)
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if native:
                    detail += f" [{native[0].strip().splitlines()[-1]}]" if native[0].strip() else ""
                raise ModelFormatError(f"{name}: the interpreter cannot load this model: {detail}") from e
        it = self.interpreter
        self.input_details = it.get_input_details()
        self.output_details = it.get_output_details()
        self.signature_names = self._signature_names()

    def _signature_names(self) -> dict[int, str]:
        """Tensor index to signature-level name (``keras_tensor``, ``output_0``...), if any."""
        names: dict[int, str] = {}
        try:
            sigs = self.interpreter.get_signature_list()
        except (AttributeError, ValueError):
            return names
        if len(sigs) != 1:
            return names
        key = next(iter(sigs))
        runner = self.interpreter.get_signature_runner(key)
        for getter in (runner.get_input_details, runner.get_output_details):
            for name, det in getter().items():
                names[det["index"]] = name
        return names

    def resize(self, position: int, shape: tuple[int, ...]) -> None:
        self.interpreter.resize_tensor_input(self.input_details[position]["index"], list(shape), strict=True)
        self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()

    def invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        it = self.interpreter
        for det, x in zip(self.input_details, inputs):
            it.set_tensor(det["index"], x)
        it.invoke()
        return [it.get_tensor(det["index"]) for det in self.output_details]


class LiteRTGpuEngine:
    """LiteRT ``CompiledModel`` on the GPU accelerator (with CPU for unsupported ops).

    Raises ``RuntimeError`` at construction when no GPU adapter exists; the runner falls back.
    """

    def __init__(self, backend: Any, model: bytes, name: str, reference: InterpreterEngine) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        with captured_native_stderr():
            self.model = CompiledModel.from_buffer(model, hardware_accel=HardwareAccelerator.GPU | HardwareAccelerator.CPU)
            self.inputs = self.model.create_input_buffers(0)
            self.outputs = self.model.create_output_buffers(0)
        self.input_details = reference.input_details
        self.output_details = reference.output_details
        self.signature_names = reference.signature_names

    def resize(self, position: int, shape: tuple[int, ...]) -> None:
        raise ModelFormatError("resizing inputs is not supported on the LiteRT GPU engine; use the cpu delegate", param="delegate")

    def invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for buf, x in zip(self.inputs, inputs):
            buf.write(np.ascontiguousarray(x))
        self.model.run_by_index(0, self.inputs, self.outputs)
        return [
            buf.read(int(np.prod(det["shape"])), det["dtype"]).reshape(det["shape"])
            for buf, det in zip(self.outputs, self.output_details)
        ]

"""TensorRT backend: runs ``NAME.engine`` only when this package built it for this GPU and
TensorRT version; otherwise rebuilds it from ``NAME.onnx`` first. CUDA memory via cuda-python."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vcl_infer._optional import require
from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode.backends.base import EncoderBackend
from vcl_infer.encode.backends.registry import register_backend
from vcl_infer.encode.backends.tensorrt_build import (
    TrtOptions,
    _check,
    _cudart,
    _logger,
    build_engine,
    engine_mismatch,
    engine_record,
)

log = logging.getLogger(__name__)


@register_backend("tensorrt")
class TensorRTBackend(EncoderBackend):
    """Runs the bundle's TensorRT engine (built or rebuilt as needed).

    Args:
        onnx_path: the bundle's ONNX file; the engine is ``NAME.engine`` beside it.
        spec: the bundle's spec.
        options: build options used when (re)building.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, spec: EncoderSpec, *, options: TrtOptions | None = None,
                 max_batch: int | None = None):
        options = options or TrtOptions()
        super().__init__(spec, max_batch or options.max_batch)
        trt = require("tensorrt")
        onnx_path = Path(onnx_path)
        engine_path = onnx_path.with_suffix(".engine")
        record_path = Path(f"{onnx_path.with_suffix('')}.engine.json")
        reason = engine_mismatch(engine_path, record_path, onnx_path)
        if reason:
            log.warning("building the TensorRT engine for %s (%s)", onnx_path, reason)
            engine = build_engine(onnx_path, spec, options)
            engine_path.write_bytes(engine)
            record_path.write_text(json.dumps(engine_record(engine, onnx_path, spec, options), indent=2) + "\n")
        record = json.loads(record_path.read_text())
        self.max_batch = min(self.max_batch, int(record["batch_profile"][2]))
        self._cudart = _cudart()
        self._runtime = trt.Runtime(_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not load {engine_path}; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        err, self._stream = self._cudart.cudaStreamCreate()
        _check(self._cudart, err, "cudaStreamCreate")
        self.device = f"cuda:0 ({record['gpu_name']}, TensorRT {record['tensorrt_version']})"

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        out = np.empty((len(clips), self.spec.embed_dim), dtype=np.float32)
        buffers = []
        try:
            for array in (clips, out):
                err, pointer = cudart.cudaMalloc(array.nbytes)
                _check(cudart, err, "cudaMalloc")
                buffers.append(pointer)
            kind = cudart.cudaMemcpyKind
            (err,) = cudart.cudaMemcpy(buffers[0], clips.ctypes.data, clips.nbytes, kind.cudaMemcpyHostToDevice)
            _check(cudart, err, "cudaMemcpy to device")
            self._context.set_input_shape(self.spec.input_name, clips.shape)
            self._context.set_tensor_address(self.spec.input_name, int(buffers[0]))
            self._context.set_tensor_address(self.spec.output_name, int(buffers[1]))
            if not self._context.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execution failed")
            (err,) = cudart.cudaStreamSynchronize(self._stream)
            _check(cudart, err, "cudaStreamSynchronize")
            (err,) = cudart.cudaMemcpy(out.ctypes.data, buffers[1], out.nbytes, kind.cudaMemcpyDeviceToHost)
            _check(cudart, err, "cudaMemcpy to host")
        finally:
            for pointer in buffers:
                cudart.cudaFree(pointer)
        return out

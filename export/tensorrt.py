"""ONNX -> TensorRT engine (builder API), and a small runner used to verify it.

An engine is native code for one GPU and one TensorRT version. The sidecar records both
(plus the engine's sha256) so the runtime runs only engines this package built, on the GPU
they were built for, and rebuilds from the ONNX otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vcl_infer._optional import require
from vcl_infer.spec import EncoderSpec


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and what to do."""


@dataclass(frozen=True)
class TrtOptions:
    """Build options.

    Attributes:
        fp16: allow fp16 kernels.
        int8: allow int8 kernels, calibrated on the verification clips (entropy calibration).
        min_batch / opt_batch / max_batch: the optimisation profile over the batch axis only;
            clip length and crop are fixed by the spec (3D convolutions with a dynamic time
            axis are a known TensorRT failure, NVIDIA/TensorRT#331).
        workspace_gib: builder workspace limit.
        timing_cache: file to read tactic timings from and save them to (faster rebuilds).
    """

    fp16: bool = False
    int8: bool = False
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need 1 <= min_batch <= opt_batch <= max_batch")


def tensorrt_unavailable_reason() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "TensorRT is not installed; on a machine with an NVIDIA GPU run "
            "`pip install tensorrt` (see the README's GPU section), or export with --engine onnx"
        )
    try:
        import torch
    except ImportError:
        return "torch is needed to verify the engine: pip install 'vcl[export]'"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False); build engines on the GPU that will run them"
    return None


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, spec: EncoderSpec, options: TrtOptions, calibration: np.ndarray | None = None) -> bytes:
    """Build a serialized engine from the ONNX file (raises with the parser's errors)."""
    trt = require("tensorrt")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    shape = spec.clip.input_shape
    profile = builder.create_optimization_profile()
    profile.set_shape(
        spec.input_name, (options.min_batch, *shape), (options.opt_batch, *shape), (options.max_batch, *shape)
    )
    config.add_optimization_profile(profile)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.int8:
        if calibration is None or not len(calibration):
            raise ValueError("int8 needs calibration clips")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, calibration, spec, options.max_batch)
        config.set_calibration_profile(profile)
    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see the messages above)")
    if options.timing_cache:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(engine)


def _make_calibrator(trt, clips: np.ndarray, spec: EncoderSpec, batch: int):
    import torch

    class ClipCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the verification clips to the int8 calibrator, ``batch`` at a time."""

        def __init__(self) -> None:
            super().__init__()
            self.batches = [clips[i : i + batch] for i in range(0, len(clips), batch)]
            self.device_batch: Any = None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if not self.batches:
                return None
            self.device_batch = torch.from_numpy(np.ascontiguousarray(self.batches.pop(0))).cuda()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache) -> None:
            return None

    return ClipCalibrator()


class EngineRunner:
    """Runs a serialized engine on numpy input (``N x 3 x T x H x W`` -> ``N x D``), via torch CUDA buffers."""

    def __init__(self, engine_bytes: bytes, spec: EncoderSpec, max_batch: int):
        trt = require("tensorrt")
        import torch

        self._torch = torch
        self.spec = spec
        self.max_batch = max_batch
        self._runtime = trt.Runtime(_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built for another GPU or version?)")
        self._context = self._engine.create_execution_context()

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        torch = self._torch
        outputs = []
        stream = torch.cuda.current_stream()
        for start in range(0, len(clips), self.max_batch):
            chunk = torch.from_numpy(np.ascontiguousarray(clips[start : start + self.max_batch])).cuda()
            out = torch.empty((len(chunk), self.spec.embed_dim), device="cuda", dtype=torch.float32)
            self._context.set_input_shape(self.spec.input_name, tuple(chunk.shape))
            self._context.set_tensor_address(self.spec.input_name, chunk.data_ptr())
            self._context.set_tensor_address(self.spec.output_name, out.data_ptr())
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
            outputs.append(out.cpu().numpy())
        return np.concatenate(outputs)


def engine_record(engine: bytes, onnx_path: Path, spec: EncoderSpec, options: TrtOptions) -> dict:
    """What the engine sidecar holds: enough to refuse an engine from another GPU or TensorRT."""
    trt = require("tensorrt")
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "fp16": options.fp16,
        "int8": options.int8,
        "batch_profile": [options.min_batch, options.opt_batch, options.max_batch],
        "spec": spec.to_dict(),
    }

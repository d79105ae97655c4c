"""Build TensorRT engines from ONNX (builder API) and decide whether an engine may be run.

An engine is native code for one GPU and one TensorRT version. Its sidecar
``NAME.engine.json`` records the TensorRT version, GPU name and compute capability, and the
sha256 of the engine and of the ONNX it came from; an engine whose record does not match
the machine (or whose bytes changed) is never run: it is rebuilt from the ONNX. No torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from vcl_infer._optional import require
from vcl_infer.clips.spec import EncoderSpec


@dataclass(frozen=True)
class TrtOptions:
    """Build options.

    Attributes:
        fp16: allow fp16 kernels.
        int8: allow int8 kernels (needs a calibrator).
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


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, spec: EncoderSpec, options: TrtOptions, calibrator=None) -> bytes:
    """A serialized engine for ``onnx_path`` (raises with the parser's errors)."""
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
    profile.set_shape(spec.input_name, (options.min_batch, *shape), (options.opt_batch, *shape),
                      (options.max_batch, *shape))
    config.add_optimization_profile(profile)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.int8:
        if calibrator is None:
            raise ValueError("int8 needs a calibrator")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    cache = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache), False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see the messages above)")
    if options.timing_cache:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(engine)


def current_gpu() -> tuple[str, str]:
    """(name, compute capability) of CUDA device 0, via cuda-python (no torch)."""
    cudart = _cudart()
    err, props = cudart.cudaGetDeviceProperties(0)
    _check(cudart, err, "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00"), f"{props.major}.{props.minor}"


def engine_record(engine: bytes, onnx_path: Path, spec: EncoderSpec, options: TrtOptions) -> dict:
    """What the engine sidecar holds."""
    trt = require("tensorrt")
    gpu, capability = current_gpu()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": gpu,
        "compute_capability": capability,
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
        "fp16": options.fp16,
        "int8": options.int8,
        "batch_profile": [options.min_batch, options.opt_batch, options.max_batch],
        "spec": spec.to_dict(),
    }


def engine_mismatch(engine_path: Path, record_path: Path, onnx_path: Path) -> str | None:
    """Why the engine at ``engine_path`` must not be run here, or None when it may."""
    if not engine_path.is_file() or not record_path.is_file():
        return "no engine built yet"
    record = json.loads(record_path.read_text())
    trt = require("tensorrt")
    gpu, capability = current_gpu()
    if record.get("tensorrt_version") != trt.__version__:
        return f"built with TensorRT {record.get('tensorrt_version')}, this is {trt.__version__}"
    if record.get("gpu_name") != gpu or record.get("compute_capability") != capability:
        return f"built for {record.get('gpu_name')} ({record.get('compute_capability')}), this is {gpu} ({capability})"
    if hashlib.sha256(engine_path.read_bytes()).hexdigest() != record.get("engine_sha256"):
        return "the engine file changed since it was built (sha256 differs): not running it"
    if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != record.get("onnx_sha256"):
        return "the ONNX model changed since the engine was built"
    return None


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        cudart = require("cuda").cudart
    return cudart


def _check(cudart, err, what: str) -> None:
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {err}")

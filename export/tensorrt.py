"""TensorRT at export time: availability check and int8 calibration.

Building, the engine record and running live in the runtime
(``vcl_infer.encode.backends.tensorrt_build`` / ``tensorrt_backend``), so an index build can rebuild
a mismatching engine without torch; this module adds what only export needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode.backends.tensorrt_build import TrtOptions, build_engine, engine_record  # noqa: F401  (re-exported)


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and what to do."""


def tensorrt_unavailable_reason() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "TensorRT is not installed; on a machine with an NVIDIA GPU run "
            "`pip install tensorrt cuda-python` (see the README's GPU section), or export with --engine onnx"
        )
    try:
        from vcl_infer.encode.backends.tensorrt_build import current_gpu

        current_gpu()
    except Exception as exc:  # no driver, no device, no cuda-python
        return f"no usable CUDA GPU ({exc}); build engines on the GPU that will run them"
    return None


def make_calibrator(clips: np.ndarray, spec: EncoderSpec, batch: int):
    """An entropy calibrator feeding ``clips`` (``N x 3 x T x H x W``) ``batch`` at a time."""
    import tensorrt as trt
    import torch

    class ClipCalibrator(trt.IInt8EntropyCalibrator2):
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

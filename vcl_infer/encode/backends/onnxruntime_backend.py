"""ONNX Runtime backend: execution providers chosen at run time from what is available."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcl_infer._optional import require
from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode._onnx_external import check_external_data
from vcl_infer.encode.backends.base import EncoderBackend
from vcl_infer.encode.backends.registry import register_backend

# preferred order; only those the installed onnxruntime offers are used
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str]) -> list[str]:
    """TensorRT EP, then CUDA, then CPU, among ``available`` (CPU always last as a fallback)."""
    chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    return chosen or ["CPUExecutionProvider"]


@register_backend("onnxruntime")
class OnnxRuntimeBackend(EncoderBackend):
    """Runs ``NAME.onnx`` with ONNX Runtime.

    Args:
        onnx_path: the model (its external data, if any, is vetted before loading).
        spec: the bundle's spec.
        threads: CPU intra-op threads (None: ONNX Runtime's default, all cores); set it
            to leave cores for decode workers.
        providers: explicit provider list; default from :func:`choose_providers`.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, spec: EncoderSpec, *, threads: int | None = None,
                 providers: list[str] | None = None, max_batch: int = 16):
        super().__init__(spec, max_batch)
        ort = require("onnxruntime")
        check_external_data(onnx_path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # idle intra-op threads sleep instead of spinning, so the cores they would burn go to
        # the decode workers of a build (and to the caller's other work)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers or choose_providers(ort.get_available_providers())
        self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.device = ",".join(self._session.get_providers())

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self.spec.input_name: clips})[0]

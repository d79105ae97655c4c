"""vcl runtime: read videos, turn them into clips, embed them, search and classify.

``import vcl_infer`` is cheap: it loads numpy and nothing heavy. Decoders (decord, PyAV),
ONNX Runtime, TensorRT and FAISS are imported where they are used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first use so importing stays light
_LAZY = {
    "ClipSpec": "vcl_infer.clips.spec",
    "EncoderSpec": "vcl_infer.clips.spec",
    "ClipWindow": "vcl_infer.clips.sampling",
    "uniform_clips": "vcl_infer.clips.sampling",
    "fit_frames": "vcl_infer.clips.preprocess",
    "to_model_input": "vcl_infer.clips.preprocess",
    "preprocess_clip": "vcl_infer.clips.preprocess",
    "open_video": "vcl_infer.video.open",
    "decode_clips": "vcl_infer.video.isolated",
    "DecodePool": "vcl_infer.video.isolated",
    "DecodedVideo": "vcl_infer.video.isolated",
    "VideoInfo": "vcl_infer.video.reader",
    "load_bundle_spec": "vcl_infer.encode.bundle",
    "Embedder": "vcl_infer.encode.embedder",
    "VideoIndex": "vcl_infer.index",
    "build_index": "vcl_infer.index.build",
    "search_index": "vcl_infer.search.query",
    "LinearProbe": "vcl_infer.probe.linear",
    "recall_at_k": "vcl_infer.probe.retrieval_metrics",
    "VclError": "vcl_infer.errors",
    "VideoError": "vcl_infer.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vcl_infer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

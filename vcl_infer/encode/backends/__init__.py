"""Encoder backends behind one interface: ONNX Runtime, TensorRT, torch.

Heavy packages are imported when a backend is created, never on ``import vcl_infer``.
"""

from vcl_infer.encode.backends.base import EncoderBackend
from vcl_infer.encode.backends.registry import backend_class, list_backends, register_backend

__all__ = ["EncoderBackend", "backend_class", "list_backends", "register_backend"]

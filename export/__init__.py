"""Export side of vcl: checkpoint import, torch -> ONNX -> TensorRT, verification.

Imports torch and :mod:`training`; the runtime package :mod:`vcl_infer` never imports this one.
"""

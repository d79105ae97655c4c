"""Encode: clips to vectors with an exported encoder bundle.

``bundle`` (reading a bundle and its spec), ``backends/`` (ONNX Runtime, TensorRT, torch
behind one interface), ``embedder`` (the facade: clips and videos to vectors), ``pooling``
(clip vectors to one video vector), ``pretrained/`` (published encoders by name: download,
pin, convert), ``_onnx_external`` (vetting a model's external-data files).
"""

"""One encoder interface for ONNX Runtime, TensorRT and torch.

A backend validates its input against the bundle's spec, then calls its private
``_encode``; everything above (Embedder, index builds, evaluation) is backend-agnostic.
"""

from __future__ import annotations

import numpy as np

from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.errors import SpecMismatch


class EncoderBackend:
    """Encodes preprocessed clips.

    Attributes:
        spec: the encoder's spec (input shape, embedding dim, ...).
        name: registry name of the backend.
        device: where it runs, in words (``cpu``, ``cuda:0``, the execution providers...).
    """

    name = "base"

    def __init__(self, spec: EncoderSpec, max_batch: int = 16):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.spec = spec
        self.max_batch = max_batch
        self.device = "cpu"

    def encode(self, clips: np.ndarray) -> np.ndarray:
        """``N x 3 x T x H x W`` float32 -> ``N x D`` float32, in chunks of ``max_batch``."""
        clips = np.asarray(clips, dtype=np.float32)
        expected = self.spec.clip.input_shape
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise SpecMismatch(
                f"clips must be N x {' x '.join(map(str, expected))} for this encoder, got {clips.shape}"
            )
        if not len(clips):
            return np.zeros((0, self.spec.embed_dim), np.float32)
        chunks = [self._encode(np.ascontiguousarray(clips[i : i + self.max_batch]))
                  for i in range(0, len(clips), self.max_batch)]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _encode(self, clips: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

"""The embedding facade: an encoder bundle turned into clip and video vectors.

Video vectors are the mean of the L2-normalised clip vectors of ``num_clips`` uniformly
spaced clips, renormalised (the multi-clip protocol of TCLR's retrieval; FAME adds a
per-set mean-centering that belongs to evaluation, not here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vcl_infer.clips.preprocess import to_model_input
from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode.backends import EncoderBackend, backend_class
from vcl_infer.encode.bundle import BundlePaths, load_bundle_spec, resolve_bundle
from vcl_infer.encode.pooling import pool_clips
from vcl_infer.errors import VclError, VideoError

DEFAULT_BUNDLE = Path(__file__).parents[1] / "models" / "default.onnx"  # vcl_infer/models/, package data


def default_bundle() -> Path:
    """The encoder shipped inside the package (see README: what it was trained on)."""
    if not DEFAULT_BUNDLE.is_file():
        raise VclError(f"no default encoder is installed at {DEFAULT_BUNDLE}; pass a bundle exported with vcl-export")
    return DEFAULT_BUNDLE


class Embedder:
    """Embeds clips and videos with an encoder backend; the bundle's spec drives preprocessing.

    Use :meth:`load` for a bundle, :meth:`from_torch` for an in-memory torch model.
    """

    def __init__(self, backend: EncoderBackend, path: Path | None = None):
        self.backend = backend
        self.spec = backend.spec
        self.path = path

    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, *, backend: str = "onnxruntime",
             threads: int | None = None, providers: list[str] | None = None, batch_size: int = 16) -> "Embedder":
        """Open ``bundle`` (``.onnx`` file or folder, or a published encoder's registry name such
        as ``r2plus1d_18-k400``; the packaged default encoder when None).

        Args:
            backend: ``onnxruntime`` (providers chosen at run time: TensorRT EP, CUDA, CPU)
                or ``tensorrt`` (the bundle's engine; rebuilt from the ONNX when it was built
                for another GPU or TensorRT version).
            threads: CPU threads for ONNX Runtime (leave cores for decode workers).
        """
        path = BundlePaths.for_model(resolve_bundle(bundle) if bundle is not None else default_bundle()).onnx
        spec = load_bundle_spec(path)
        kind = backend_class(backend)
        if backend == "onnxruntime":
            runner = kind(path, spec, threads=threads, providers=providers, max_batch=batch_size)
        else:
            runner = kind(path, spec, max_batch=batch_size)
        return cls(runner, path)

    @classmethod
    def from_torch(cls, module, spec: EncoderSpec, *, device: str | None = None, batch_size: int = 16) -> "Embedder":
        """Wrap an in-memory torch backbone (training evaluation; needs torch)."""
        return cls(backend_class("torch")(module, spec, device=device, max_batch=batch_size))

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """``N x 3 x T x H x W`` float32 model input -> ``N x D`` float32 embeddings."""
        return self.backend.encode(clips)

    def embed_decoded(self, uint8_clips: np.ndarray) -> np.ndarray:
        """Decoded ``N x T x S x S x 3`` uint8 clips -> the video vector ``(D,)``."""
        return pool_clips(self.embed_clips(to_model_input(uint8_clips, self.spec.clip)))

    def embed_video(self, path: str | os.PathLike, num_clips: int = 8, *, timeout_s: float = 60.0) -> np.ndarray:
        """One video -> ``(D,)``; decoded in a child process; raises the file's VideoError."""
        from vcl_infer.video.isolated import decode_clips

        return self.embed_decoded(decode_clips(path, self.spec.clip, num_clips, timeout_s=timeout_s).clips)

    def embed_videos(self, paths: Iterable[str | os.PathLike], num_clips: int = 8, *, workers: int = 2,
                     timeout_s: float = 60.0) -> Iterator[tuple[str, np.ndarray | VideoError]]:
        """``(path, vector or VideoError)`` per file, in order; decoding overlaps encoding."""
        from vcl_infer.video.isolated import DecodePool

        names = [os.fspath(p) for p in paths]
        with DecodePool(workers=workers, timeout_s=timeout_s) as pool:
            for path, result in zip(names, pool.imap([(p, self.spec.clip, num_clips) for p in names])):
                yield path, result if isinstance(result, VideoError) else self.embed_decoded(result.clips)

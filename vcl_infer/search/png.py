"""PNG images with nothing but zlib and struct (no PIL, no matplotlib in the runtime).

:func:`write_png` writes an ``H x W x 3`` uint8 RGB array (8-bit truecolour, filter 0 on
every row), for the HTML report's thumbnails. The labelled confusion matrix is drawn with
matplotlib in :mod:`vcl_infer.probe.confusion_plot`.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """``H x W x 3`` uint8 RGB -> PNG file bytes."""
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"need an H x W x 3 uint8 array, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, truecolour, no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write ``rgb`` (``H x W x 3`` uint8) to ``path`` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(rgb))
    return path

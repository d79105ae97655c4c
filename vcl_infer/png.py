"""PNG images with nothing but zlib and struct (no PIL, no matplotlib in the runtime).

:func:`write_png` writes an ``H x W x 3`` uint8 RGB array (8-bit truecolour, filter 0 on
every row); :func:`confusion_png` renders a confusion matrix as a heat map.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

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


def _heat(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, white (0) through blue to dark navy (1)."""
    stops = np.array([[255, 255, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)
    v = np.clip(values, 0.0, 1.0) * (len(stops) - 1)
    low = np.minimum(np.floor(v).astype(int), len(stops) - 2)
    frac = (v - low)[..., None]
    return np.round(stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def confusion_image(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """``K x K`` counts -> heat-map RGB: rows (true class) normalised to sum 1, one
    ``cell x cell`` square per entry, 1-pixel grey grid lines, diagonal framed in red."""
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 1:
        raise ValueError(f"need a K x K matrix, got {counts.shape}")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = counts.shape[0]
    step = cell + 1
    image = np.full((k * step + 1, k * step + 1, 3), 160, dtype=np.uint8)
    colours = _heat(rates)
    for i in range(k):
        for j in range(k):
            image[1 + i * step:1 + i * step + cell, 1 + j * step:1 + j * step + cell] = colours[i, j]
    for i in range(k):  # mark the diagonal (correct predictions)
        top, left = i * step, i * step
        image[top, left:left + step + 1] = image[top + step, left:left + step + 1] = (200, 30, 30)
        image[top:top + step + 1, left] = image[top:top + step + 1, left + step] = (200, 30, 30)
    return image


def confusion_png(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, cell: int = 16) -> Path:
    """Save a confusion matrix (rows true, columns predicted, in ``class_names`` order) as a
    heat-map PNG; the class order is written next to it in ``<path>.txt`` (the image has no text)."""
    counts = np.asarray(matrix)
    if len(class_names) != counts.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {counts.shape} matrix")
    out = write_png(path, confusion_image(counts, cell))
    Path(f"{out}.txt").write_text("rows: true class, columns: predicted class, order:\n"
                                  + "".join(f"{i}\t{name}\n" for i, name in enumerate(class_names)))
    return out

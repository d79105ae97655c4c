"""Spatial transforms of uint8 clips: random resized crop, resize, horizontal flip.

All work on ``T x H x W x 3`` uint8 numpy frames (in DataLoader workers, before anything
becomes a tensor) and apply ONE box and ONE flip to every frame of a clip, so the motion
inside a clip is not distorted. The resize is the antialiased triangle filter of
:mod:`vcl_infer.clips.preprocess`, the same one evaluation and the runtime use.
"""

from __future__ import annotations

import math

import numpy as np

from vcl_infer.clips.preprocess import check_frames, resize_frames

Box = tuple[int, int, int, int]
"""``(top, left, height, width)`` in pixels."""


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Box:
    """A box covering ``scale`` of the frame's area with aspect ratio (w / h) in ``ratio``.

    The sampling of torchvision's ``RandomResizedCrop`` (Szegedy et al. 2015, "Going deeper
    with convolutions"): area uniform in ``scale``, log-aspect uniform in ``ratio``; after
    ``attempts`` misses, the largest centred box whose ratio is clamped into ``ratio``.
    """
    if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def crop_and_resize(frames: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut ``box`` out of every frame and resize it to ``size x size`` (antialiased).

    Args:
        frames: ``T x H x W x 3`` uint8.
        box: ``(top, left, height, width)``, inside the frame.
        size: output side S.

    Returns:
        ``T x S x S x 3`` uint8.
    """
    frames = check_frames(frames)
    top, left, h, w = (int(v) for v in box)
    _, height, width, _ = frames.shape
    if h < 1 or w < 1 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"box {box} does not fit in a {height} x {width} frame")
    return resize_frames(frames[:, top : top + h, left : left + w], size, size)


def hflip(frames: np.ndarray) -> np.ndarray:
    """Mirror ``T x H x W x 3`` frames left-right (a contiguous copy)."""
    return np.ascontiguousarray(frames[:, :, ::-1])

"""Decoded frames to model input: the one definition training, export and runtime share.

Two steps, split so decode workers can ship small uint8 clips to the encoder process:

1. :func:`fit_frames`: ``T x H x W x 3`` uint8 frames of any size -> resized (antialiased
   triangle filter, as PIL's bilinear; not at all for ``resize_mode="none"``) and
   centre-cropped ``T x S x S x 3`` uint8.
2. :func:`to_model_input`: ``N x T x S x S x 3`` uint8 -> ``N x C x T x S x S`` float32,
   scaled to [0, 1] and normalised with the spec's mean and std.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vcl_infer.clips.spec import ClipSpec


@lru_cache(maxsize=64)
def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``out_size x in_size`` weights of a triangle filter, widened when shrinking.

    Widening the filter by the shrink factor averages every input pixel that falls under an
    output pixel (antialiasing); plain bilinear would skip pixels and alias.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    pixels = np.arange(in_size) + 0.5
    weights = np.clip(1.0 - np.abs(pixels[None, :] - centres[:, None]) / support, 0.0, None)
    totals = weights.sum(axis=1, keepdims=True)
    # a row can only be empty when the output is far larger than the input; use the nearest pixel
    empty = totals[:, 0] == 0
    if empty.any():
        nearest = np.clip(centres[empty].astype(np.int64), 0, in_size - 1)
        weights[np.where(empty)[0], nearest] = 1.0
        totals = weights.sum(axis=1, keepdims=True)
    return (weights / totals).astype(np.float32)


@lru_cache(maxsize=64)
def _resample_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same filter as ``(indices, weights)``, each ``out_size x K``: the K input pixels
    under each output pixel. The filter spans only ~2 x the shrink factor pixels, so summing
    K gathered rows costs a small fraction of a dense matrix product over the whole frame."""
    matrix = _resample_matrix(in_size, out_size)
    taps = int((matrix > 0).sum(axis=1).max())
    indices = np.zeros((out_size, taps), dtype=np.int64)
    weights = np.zeros((out_size, taps), dtype=np.float32)
    for row in range(out_size):
        (used,) = np.nonzero(matrix[row])
        indices[row, : used.size], indices[row, used.size :] = used, used[-1]
        weights[row, : used.size] = matrix[row, used]
    return indices, weights


def resized_size(height: int, width: int, spec: ClipSpec) -> tuple[int, int]:
    """Frame size after the spec's resize rule, before cropping."""
    if spec.resize_mode == "square":
        return spec.resize_size, spec.resize_size
    target = spec.resize_size
    if spec.resize_mode == "none":
        if min(height, width) >= spec.crop_size:
            return height, width  # native scale
        target = spec.crop_size  # too small to crop: the smallest upscale that fits the crop
    short = min(height, width)
    scale = target / short
    return max(target, round(height * scale)), max(target, round(width * scale))


def crop_origin(height: int, width: int, spec: ClipSpec) -> tuple[int, int]:
    """Top-left corner of the centred ``crop_size`` square in a ``height x width`` frame.

    ``resize_mode="none"`` places it as torchvision's ``CenterCropVideo`` (FAME's retrieval)
    does, ``round((size - crop) / 2)`` with Python's round-half-to-even, so the crop is the
    official one for every frame size; the resizing modes keep ``(size - crop) // 2`` (the
    same for even differences, and what existing bundles were verified with)."""
    crop = spec.crop_size
    if spec.resize_mode == "none":
        return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return (height - crop) // 2, (width - crop) // 2


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` as an array, if they are ``T x H x W x 3`` uint8.

    Raises:
        ValueError: another shape or dtype, saying which.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected T x H x W x 3 uint8 frames, got {frames.shape} {frames.dtype}")
    return frames


def resize_frames(frames: np.ndarray, height: int, width: int,
                  crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize frames with the antialiased triangle filter (as PIL's bilinear).

    The one resampling of the project: runtime, training augmentation and the HTML report
    use it. Rows are filtered first (H), then columns (W), each output pixel gathering only
    the few input pixels under it.

    Args:
        frames: ``T x H x W x 3`` uint8 RGB.
        height: the resized frame's height.
        width: the resized frame's width.
        crop: ``(top, left, h, w)``: return only this part of the resized frames; only its
            rows and columns are computed, so resizing then cropping costs the crop's size.

    Returns:
        ``T x height x width x 3`` uint8, or ``T x h x w x 3`` with ``crop``.
    """
    frames = check_frames(frames)
    top, left, out_h, out_w = crop if crop is not None else (0, 0, height, width)
    if min(out_h, out_w, top, left) < 0 or top + out_h > height or left + out_w > width:
        raise ValueError(f"crop {crop} does not fit in a {height} x {width} frame")
    row_idx, row_w = (a[top : top + out_h] for a in _resample_taps(frames.shape[1], height))
    col_idx, col_w = (a[left : left + out_w] for a in _resample_taps(frames.shape[2], width))
    tall = np.zeros((frames.shape[0], out_h, frames.shape[2], 3), dtype=np.float32)
    for k in range(row_idx.shape[1]):
        tall += row_w[None, :, k, None, None] * frames[:, row_idx[:, k]]
    out = np.zeros((frames.shape[0], out_h, out_w, 3), dtype=np.float32)
    for k in range(col_idx.shape[1]):
        out += col_w[None, None, :, k, None] * tall[:, :, col_idx[:, k]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fit_frames(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Resize by the spec's rule and take the centred ``crop_size`` square.

    Args:
        frames: ``T x H x W x 3`` uint8 RGB.
        spec: the clip spec.

    Returns:
        ``T x S x S x 3`` uint8 RGB with ``S = spec.crop_size``.
    """
    frames = check_frames(frames)
    out_h, out_w = resized_size(frames.shape[1], frames.shape[2], spec)
    crop = spec.crop_size
    top, left = crop_origin(out_h, out_w, spec)
    if (out_h, out_w) == frames.shape[1:3]:  # no resize (the filter would be the identity)
        return np.ascontiguousarray(frames[:, top : top + crop, left : left + crop])
    return resize_frames(frames, out_h, out_w, crop=(top, left, crop, crop))


def to_model_input(clips: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Normalise uint8 clips into the model's layout.

    Args:
        clips: ``N x T x S x S x 3`` uint8 RGB (output of :func:`fit_frames`, stacked).
        spec: the clip spec.

    Returns:
        ``N x 3 x T x S x S`` float32 (``NCTHW``), ``(x / 255 - mean) / std``, channels in
        ``spec.channel_order``.
    """
    clips = np.asarray(clips)
    expected = (spec.frames_per_clip, spec.crop_size, spec.crop_size, 3)
    if clips.ndim != 5 or clips.shape[1:] != expected or clips.dtype != np.uint8:
        raise ValueError(f"expected N x {' x '.join(map(str, expected))} uint8 clips, got {clips.shape} {clips.dtype}")
    scale = (1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32))).reshape(1, 1, 1, 1, 3)
    shift = (np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)).reshape(1, 1, 1, 1, 3)
    if spec.channel_order == "BGR":
        clips = clips[..., ::-1]
    out = clips.astype(np.float32) * scale - shift
    return np.ascontiguousarray(out.transpose(0, 4, 1, 2, 3))


def preprocess_clip(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """``T x H x W x 3`` uint8 frames -> ``3 x T x S x S`` float32 model input."""
    return to_model_input(fit_frames(frames, spec)[None], spec)[0]

"""One frame of an indexed video as a small RGB image (run in a child process, untrusted file)."""

from __future__ import annotations

import numpy as np

MAX_SIDE = 320


def frame_at(path: str, seconds: float, max_side: int = MAX_SIDE) -> np.ndarray:
    """The frame shown at ``seconds`` (the nearest decoded one), ``H x W x 3`` uint8, its
    longer side at most ``max_side`` (nearest-neighbour downscale: a preview, not a model input)."""
    from vcl_infer.video.open import open_video

    reader = open_video(path)
    try:
        ts = np.asarray(reader.timestamps, dtype=np.float64)
        index = int(np.clip(np.searchsorted(ts, seconds, side="right") - 1, 0, len(ts) - 1))
        frame = reader.get_frames([index])[0]
    finally:
        reader.close()
    height, width = frame.shape[:2]
    scale = max(height, width) / max_side
    if scale > 1:
        rows = np.minimum((np.arange(int(height / scale)) * scale).astype(int), height - 1)
        cols = np.minimum((np.arange(int(width / scale)) * scale).astype(int), width - 1)
        frame = frame[rows][:, cols]
    return np.ascontiguousarray(frame, dtype=np.uint8)

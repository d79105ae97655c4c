"""Timelines that lie: timestamps collapsed into a few milliseconds, and the end of the last frame.

A careless re-encode can stamp every frame of a 10 s clip within 40 ms (251 frames, 0.16 ms
apart). Sampling on such timestamps puts every clip at "0.00-0.04 s", and decord's frame
skipping, which discards frames by their pts, can spin on it ("Failed to skip frames
effectively ... after 10000 attempts") until the decode timeout. Such a file is read with
PyAV, and its frames are timed by their index over the stream's nominal frame rate.
"""

from __future__ import annotations

import numpy as np

MIN_FRAME_STEP_S = 1e-3
"""Frames closer than this on average (over 1000 fps) are taken as collapsed timestamps."""
FALLBACK_RATE = 25.0
_MIN_FRAMES = 8  # fewer frames than this say too little to call the timeline collapsed


def collapsed(timestamps: np.ndarray) -> bool:
    """Whether ``timestamps`` (presentation order, seconds) are squeezed into far too little time.

    True when the frames span less than :data:`MIN_FRAME_STEP_S` per frame, or when most
    consecutive frames share a timestamp.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.size < _MIN_FRAMES:
        return False
    span = float(ts[-1] - ts[0])
    repeated = float(np.mean(np.diff(ts) <= 0))
    return span < (ts.size - 1) * MIN_FRAME_STEP_S or repeated > 0.5


def nominal_rate(*candidates: float | None) -> float:
    """The first plausible frame rate (0 < rate <= 1000 fps) among ``candidates``, else 25."""
    for rate in candidates:
        if rate and 0 < float(rate) <= 1.0 / MIN_FRAME_STEP_S:
            return float(rate)
    return FALLBACK_RATE


def by_index(num_frames: int, rate: float) -> tuple[np.ndarray, float]:
    """Timestamps ``i / rate`` and the duration ``num_frames / rate``."""
    return np.arange(num_frames, dtype=np.float64) / rate, num_frames / rate


def last_frame_duration(timestamps: np.ndarray, declared: float | None, rate: float) -> float:
    """How long the last frame is shown: its declared duration when it has one, else the
    shorter of the median frame step and ``1 / rate``.

    The median step alone is wrong for variable frame rate: frames at 0 s, 1 h and 10 h have a
    median step of 5 h, which would end the video 5 h after its last frame.
    """
    if declared is not None and declared > 0:
        return float(declared)
    steps = np.diff(np.asarray(timestamps, dtype=np.float64))
    steps = steps[steps > 0]
    median = float(np.median(steps)) if steps.size else 0.0
    nominal = 1.0 / rate if rate > 0 else 0.0
    return min(median, nominal) if median and nominal else (median or nominal)

"""Which clip windows of a video a method trains on (picklable, for DataLoader workers).

Each sampler is a small frozen dataclass called as ``views(timestamps, rng)`` by
:class:`training.data.ClipDataset`; the dataset crops and flips every returned window
independently, so a window listed twice yields two spatial augmentations of the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vcl_infer.clips.sampling import ClipWindow, distinct_clips
from vcl_infer.clips.spec import ClipSpec


class ViewSampler(Protocol):
    """What ``Method.views`` returns: the windows of one video a training item is made of."""

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]: ...


@dataclass(frozen=True)
class DistinctClips:
    """``num_clips`` temporally distinct random clips of the spec (SimCLR / MoCo / FAME views)."""

    spec: ClipSpec
    num_clips: int = 2

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        return distinct_clips(timestamps, self.spec, self.num_clips, rng)


def window_at(ts: np.ndarray, indices: np.ndarray) -> ClipWindow:
    end_index = int(indices.max()) + 1
    if end_index < ts.size:
        end = float(ts[end_index])
    else:
        steps = np.diff(ts)
        end = float(ts[-1] + (np.median(steps[steps > 0]) if np.any(steps > 0) else 0.0))
    return ClipWindow(indices=indices.astype(np.int64), start_sec=float(ts[indices[0]]), end_sec=end)


@dataclass(frozen=True)
class GlobalLocalClips:
    """TCLR's views: one global sparse clip and ``num_local`` dense clips tiling its span.

    With ``T = spec.frames_per_clip`` (16 in the paper): the global clip takes ``T`` frames at
    step ``global_step`` (4), spanning ``global_step * T`` frames from a uniformly random start;
    local clip ``j`` takes ``T`` consecutive frames starting at ``start + j * T * global_step /
    num_local``, so the ``num_local`` (4) local clips tile the global span (Dave et al. 2022,
    Sec. 3; official ``build_clip``). Every window is returned ``copies`` (2) times, so the
    dataset crops each twice: ``[g, g, l0, l0, l1, l1, ...]``. Frame indices past the end follow
    ``spec.short_video`` (clamp or loop). Index based: a ``target_fps`` spec is not used here.
    """

    spec: ClipSpec
    global_step: int = 4
    num_local: int = 4
    copies: int = 2

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        ts = np.maximum.accumulate(np.asarray(timestamps, dtype=np.float64).reshape(-1))
        n, t = ts.size, self.spec.frames_per_clip
        span = self.global_step * t
        start = int(rng.integers(0, max(n - span, 0) + 1))
        offsets = [start + np.arange(t) * self.global_step]
        stride = span // self.num_local
        offsets += [start + j * stride + np.arange(t) for j in range(self.num_local)]
        if self.spec.short_video == "loop":
            indices = [o % n for o in offsets]
        else:
            indices = [np.minimum(o, n - 1) for o in offsets]
        windows = [window_at(ts, i) for i in indices]
        return [w for w in windows for _ in range(self.copies)]

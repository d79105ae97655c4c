"""Calibration clips for int8: real videos decoded with the bundle's own spec and preprocessing.

ONNX Runtime's static quantization and TensorRT's int8 calibrator both read these clips, so the
two int8 paths see the same activation ranges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcl_infer.clips.preprocess import to_model_input
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VclError, VideoError
from vcl_infer.probe.labels import scan_videos


@dataclass
class CalibrationSet:
    """Model-input clips (``N x 3 x T x S x S`` float32) and where each came from."""

    inputs: np.ndarray
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    videos: int = 0

    def summary(self) -> dict:
        return {"clips": int(len(self.inputs)), "videos": self.videos, "skipped_files": len(self.skipped)}


def calibration_clips(clip: ClipSpec, folder: str | os.PathLike, *, clips_per_video: int = 4,
                      max_clips: int = 256, timeout_s: float = 60.0) -> CalibrationSet:
    """Decode ``clips_per_video`` uniformly spaced clips from every video under ``folder``.

    Each file is decoded in a child process (untrusted input); a file that cannot be read is
    skipped and listed, never guessed.

    Raises:
        VclError: the folder is missing or no clip could be decoded from it.
    """
    from vcl_infer.video.isolated import decode_clips

    folder = Path(folder)
    try:
        items = scan_videos(folder)
    except FileNotFoundError:
        raise VclError(f"--calibration {folder} is not a folder; give a folder of real videos like the ones you will index") from None
    clips: list[np.ndarray] = []
    sources: list[str] = []
    skipped: list[tuple[str, str]] = []
    videos = 0
    for item in items:
        if sum(len(c) for c in clips) >= max_clips:
            break
        try:
            decoded = decode_clips(item.path, clip, clips_per_video, timeout_s=timeout_s)
        except VideoError as exc:
            skipped.append((item.path, f"{type(exc).__name__}: {exc}"))
            continue
        clips.append(decoded.clips)
        sources += [f"{item.path}@{w.start_sec:.2f}-{w.end_sec:.2f}" for w in decoded.windows]
        videos += 1
    if not clips:
        raise VclError(
            f"no clip could be decoded from the {len(items)} video file(s) under {folder}; int8 calibration needs "
            "real videos (a few dozen clips of the kind you will index)"
        )
    inputs = to_model_input(np.concatenate(clips)[:max_clips], clip)
    return CalibrationSet(inputs, sources[:max_clips], skipped, videos)

"""Video test helpers: the shared real files and tiny videos made on the fly with PyAV.

Imported by ``tests/test_video_*.py`` (``from video_fixtures import ...``); kept out of
``conftest.py`` so other test modules are not affected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv"}


def shared_video(rel: str) -> str:
    """Path of ``../shared/videos/<rel>``, or skip the test when the folder is absent."""
    path = VIDEOS / rel
    if not path.is_file():
        pytest.skip(f"shared test video {rel} not found under {VIDEOS}")
    return str(path)


def shared_videos() -> list[str]:
    """Every video file under ``../shared/videos`` (relative names), sorted; [] if absent."""
    if not VIDEOS.is_dir():
        return []
    return sorted(str(p.relative_to(VIDEOS)) for p in VIDEOS.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def frame_colour(i: int) -> np.ndarray:
    """The flat RGB colour of generated frame ``i`` (distinct per frame, far from grey)."""
    return np.array([(40 * i + 30) % 256, (255 - 30 * i) % 256, (90 + 70 * i) % 256], np.uint8)


def synthetic_frames(num_frames: int, width: int, height: int) -> np.ndarray:
    """``N x H x W x 3`` uint8: frame i is :func:`frame_colour` (i) with a white square
    that moves right by 4 pixels per frame."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    side = max(2, min(width, height) // 4)
    for i in range(num_frames):
        frames[i] = frame_colour(i)
        left = (4 * i) % max(1, width - side)
        frames[i, :side, left : left + side] = 255
    return frames


def make_video(
    path: str | Path,
    num_frames: int = 8,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    codec: str = "libx264",
) -> np.ndarray:
    """Encode :func:`synthetic_frames` to ``path`` (container from the suffix).

    Returns:
        The ``N x H x W x 3`` uint8 frames that were encoded (before compression).
    """
    import av

    frames = synthetic_frames(num_frames, width, height)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}  # near-lossless, fast
        else:
            stream.bit_rate = 4_000_000
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames

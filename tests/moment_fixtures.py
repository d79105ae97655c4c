"""Videos for moment search: a 10-minute generated video whose content changes every second,
and a 30-second real video made by joining the real clips of ``../shared/videos``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_build_corpus import moving_frames, read_frames, resize, write_video
from video_fixtures import VIDEOS

LONG_FPS = 30
LONG_SECONDS = 600
SIDE = 64
REAL_SOURCES = ("decord/flipping_a_pancake.mkv", "mmaction2/demo.mp4", "mmaction2/test.avi")
REAL_FPS = 25  # the 764 joined frames at 25 fps: 30.6 s


SCENE_SECONDS = 5


def ten_minute_frames(seconds: int = LONG_SECONDS, seed: int = 7):
    """Frames, a scene at a time: every ``SCENE_SECONDS`` a new texture panning at its own
    speed with a square moving across it (shots of a real video: motion inside, cuts between)."""
    rng = np.random.default_rng(seed)
    for _ in range(0, seconds, SCENE_SECONDS):
        yield from moving_frames(rng, LONG_FPS * SCENE_SECONDS, SIDE)


def write_ten_minute_video(path: Path, seconds: int = LONG_SECONDS) -> Path:
    """Write :func:`ten_minute_frames` (H.264, 64 x 64, 30 fps) without holding them all."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=LONG_FPS)
        stream.height = stream.width = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20", "threads": "1"}
        for rgb in ten_minute_frames(seconds):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cut_of(path: Path, start: float, end: float, out: Path, fps: int, scale: float = 1.25) -> Path:
    """A re-encoded cut ``[start, end)`` of ``path`` (MPEG-4 Part 2, ``scale`` times the size,
    same aspect), as a user's ``ffmpeg -ss START -to END`` copy would be: a new file, not a
    range of the indexed one."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base)
            if start - 1e-6 <= t < end:
                frames.append(frame.to_ndarray(format="rgb24"))
            elif t >= end:
                break
    clip = np.stack(frames)
    height, width = (int(round(d * scale / 2)) * 2 for d in clip.shape[1:3])
    write_video(out, resize(clip, height, width), fps=fps, codec="mpeg4", bit_rate=400_000)
    return out


def write_real_thirty_seconds(path: Path) -> Path | None:
    """The real clips of ``../shared/videos`` joined (pancake, arm wrestling, test.avi),
    resized to 160 x 120, at 25 fps: about 30 s. None when the shared folder is absent."""
    sources = [VIDEOS / rel for rel in REAL_SOURCES]
    if not all(p.is_file() for p in sources):
        return None
    frames = np.concatenate([resize(read_frames(str(p)), 120, 160) for p in sources])
    write_video(path, frames, fps=REAL_FPS)
    return path

"""The corpus the build and search tests share: a tiny encoder bundle, generated videos, one
index built over them plus ``../shared/videos/``.

Everything is made once per test session (module-level cache, so every test module that
imports these helpers gets the same files) in one temporary folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from video_fixtures import VIDEO_SUFFIXES, VIDEOS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLIPS = 3
NUM_SHORT = 30
LONG_SECONDS = 12
FPS = 10
SIDE = 64


@lru_cache(maxsize=None)
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vcl-build-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=None)
def bundle() -> str:
    """A small untrained r3d_small encoder (4 frames, 32 x 32), exported with torch."""
    torch = pytest.importorskip("torch")
    from export.pipeline import export_bundle
    from training.models.registry import create_backbone
    from vcl_infer.clips.spec import ClipSpec, EncoderSpec

    torch.manual_seed(0)
    spec = EncoderSpec(arch="r3d_small", embed_dim=128,
                       clip=ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32))
    out = workdir() / "model" / "enc.onnx"
    export_bundle(create_backbone("r3d_small"), spec, out)
    return str(out)


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour texture, ``size x size x 3`` float32 in [0, 255]."""
    coarse = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.float32)
    x = np.linspace(0, 5, size)
    i0 = np.floor(x).astype(int).clip(0, 4)
    f = (x - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]  # size x 6 x 3
    img = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    detail = rng.uniform(-40, 40, size=(size, size, 1)).astype(np.float32)
    return np.clip(img + detail, 0, 255)


def moving_frames(rng: np.random.Generator, num_frames: int, side: int = SIDE) -> np.ndarray:
    """A random texture panned by a random velocity with a bright square moving across it."""
    big = texture(rng, side * 2)
    vy, vx = rng.uniform(-2.5, 2.5, size=2)
    oy, ox = rng.uniform(0, side * 0.5, size=2)
    sq = int(rng.integers(8, 20))
    colour = rng.uniform(0, 255, size=3)
    sy, sx, svy, svx = *rng.uniform(0, side - sq, size=2), *rng.uniform(-3, 3, size=2)
    out = np.empty((num_frames, side, side, 3), np.uint8)
    for t in range(num_frames):
        y = int(oy + vy * t) % side
        x = int(ox + vx * t) % side
        frame = big[y : y + side, x : x + side].copy()
        py, px = int(sy + svy * t) % (side - sq), int(sx + svx * t) % (side - sq)
        frame[py : py + sq, px : px + sq] = colour
        out[t] = frame.astype(np.uint8)
    return out


def write_video(path: Path, frames: np.ndarray, fps: int = FPS, *, codec: str = "libx264",
                bit_rate: int | None = None) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if bit_rate:
            stream.bit_rate = bit_rate
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "threads": "1", **({} if bit_rate else {"crf": "18"})}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_frames(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``T x H x W x 3`` frames (a different resolution)."""
    ys = (np.arange(height) * frames.shape[1] / height).astype(int)
    xs = (np.arange(width) * frames.shape[2] / width).astype(int)
    return frames[:, ys][:, :, xs]


def long_frames(rng: np.random.Generator) -> np.ndarray:
    """``LONG_SECONDS`` of video in 3 scenes of 4 s (like a real video's shots)."""
    per = LONG_SECONDS * FPS // 3
    return np.concatenate([moving_frames(rng, per) for _ in range(3)])


@lru_cache(maxsize=None)
def corpus() -> Path:
    """``videos/``: ``gen/`` (30 short + 2 long generated videos) and ``shared/`` (links to
    the files of ``../shared/videos`` when present)."""
    root = workdir() / "videos"
    rng = np.random.default_rng(1234)
    for i in range(NUM_SHORT):
        write_video(root / "gen" / f"short_{i:02d}.mp4", moving_frames(rng, int(rng.integers(15, 31))))
    for i in range(2):
        write_video(root / "gen" / f"long_{i}.mp4", long_frames(rng))
    if VIDEOS.is_dir():
        for src in VIDEOS.rglob("*"):
            if src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
                dst = root / "shared" / src.relative_to(VIDEOS)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, dst)
    return root


def indexed_shared() -> list[Path]:
    """The links to ``../shared/videos`` files inside the corpus (one link per file:
    ``find_videos`` does not follow directory links)."""
    return sorted(p for p in (corpus() / "shared").rglob("*") if p.is_symlink())


@lru_cache(maxsize=None)
def queries() -> dict[str, Path]:
    """Query files made from corpus videos (never indexed)."""
    out = workdir() / "queries"
    src = corpus() / "gen"
    made = {}
    frames = read_frames(str(src / "short_03.mp4"))
    made["reencoded"] = out / "short_03_small.mp4"
    write_video(made["reencoded"], resize(frames, 48, 48), codec="mpeg4", bit_rate=150_000)
    frames = read_frames(str(src / "long_1.mp4"))
    made["cut"] = out / "long_1_cut.mp4"
    write_video(made["cut"], resize(frames[5 * FPS : 7 * FPS], 80, 80), codec="mpeg4", bit_rate=300_000)
    return made


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``vcl-index`` / ``vcl-search`` from this venv."""
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(workdir()))
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@lru_cache(maxsize=None)
def built_index() -> tuple[Path, dict]:
    """The index over the corpus, built once with the CLI; returns (index dir, build report)."""
    import json

    index = workdir() / "index"
    run_cli("vcl-index", "build", str(corpus()), "--index", str(index), "--model", bundle(),
            "--clips", str(CLIPS), "--workers", "2")
    return index, json.loads((index / "build_report.json").read_text())


# ---------------------------------------------------------------- tests of the corpus itself


def test_generated_videos_are_distinct_and_decodable():
    gen = sorted((corpus() / "gen").glob("*.mp4"))
    assert len(gen) == NUM_SHORT + 2
    firsts = [read_frames(str(p))[0].astype(np.float32) for p in gen[:5]]
    for a in range(len(firsts)):
        for b in range(a + 1, len(firsts)):
            assert np.abs(firsts[a] - firsts[b]).mean() > 10

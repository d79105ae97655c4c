"""Feature-extraction throughput: the index build pipeline against its two bounds.

On the same videos and the same encoder, in one run, it measures clips/s of:

(a) the encoder alone on pre-decoded clips (all cores for ONNX Runtime): the ceiling;
(b) ``build_index`` end to end (decode workers overlapping batched encoding, model load and
    worker start-up included), into a fresh index;
(c) a naive loop: decode one video in this process, encode it, next video, as common
    feature-extraction scripts do. They decode every frame of the video (``torchvision.io.
    read_video``, video_features' frame loop, ``decord`` ``get_batch(range(len(vr)))``) and then
    cut the clips; that is (c) here. (c') is the same loop with our sparse clip reader
    (``read_clips``: only the frames the clips need, seeking between them), reported beside it
    so the share of the gain that comes from sparse decoding is visible.

and prints the ratios b/a (target >= 0.8) and b/c (target >= 1.5 on 2 cores)::

    python benchmarks/extract.py          # 12 generated 2-minute 240p videos, r3d_18 8 x 112 x 112
    python benchmarks/extract.py --videos DIR --model BUNDLE.onnx --json

The generated videos are H.264 at 25 fps with a keyframe every second (phone cameras and
most web video use 1-2 s GOPs). The default encoder is an untrained ``r3d_18`` at 8 frames x
112 x 112, exported with torch (only this script needs torch); ``--arch``/``--frames``/
``--crop`` choose another, ``--model`` any bundle (``vcl_infer/models/default.onnx`` is
``r3d_small`` 8 x 64 x 64, a much cheaper encoder, for which decoding is the bottleneck).

Bounds on a CPU-only machine with ``n`` cores: with ``d`` the decode CPU-seconds and ``e`` the
encode CPU-seconds per clip, a ~ n/e, b <= n/(d+e), so b/a <= e/(d+e): the build reaches 80%
of the encoder only when decoding costs at most a quarter of encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_videos(folder: Path, count: int, seconds: float, height: int, fps: int = 25) -> list[Path]:
    """``count`` distinct moving-texture videos (H.264, ``height``p, 16:9, 1 s GOP), made once."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    width = (height * 16 // 9) // 2 * 2
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"bench_{i:03d}_{height}p_{seconds:g}s.mp4"
        paths.append(path)
        if path.is_file():
            continue
        coarse = rng.uniform(0, 255, size=(9, 16, 3)).astype(np.float32)
        ys = np.linspace(0, 8, 2 * height)[:, None]
        xs = np.linspace(0, 15, 2 * width)[None, :]
        canvas = coarse[np.round(ys).astype(int), np.round(xs).astype(int)]
        canvas = np.clip(canvas + rng.uniform(-30, 30, size=canvas.shape[:2] + (1,)), 0, 255).astype(np.uint8)
        vy, vx = rng.uniform(-2, 2, size=2)
        tmp = path.with_suffix(".tmp.mp4")
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23", "g": str(fps)}
            for t in range(int(seconds * fps)):
                y, x = int(height / 2 + vy * t) % height, int(width / 2 + vx * t) % width
                frame = np.ascontiguousarray(canvas[y : y + height, x : x + width])
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    return paths


def default_model(workdir: Path, arch: str, frames: int | None, crop: int | None) -> Path:
    """An untrained ``arch`` with its default spec (``frames``/``crop`` replaced), exported."""
    import dataclasses

    import torch

    from export.pipeline import export_bundle
    from training.models.defaults import default_clip_spec
    from training.models.registry import create_backbone
    from vcl_infer.clips.spec import EncoderSpec

    torch.manual_seed(0)
    backbone = create_backbone(arch)
    clip = default_clip_spec(arch)
    if frames:
        clip = dataclasses.replace(clip, frames_per_clip=frames)
    if crop:
        clip = dataclasses.replace(clip, crop_size=crop, resize_size=max(crop, clip.resize_size))
    out = workdir / f"{arch}.onnx"
    export_bundle(backbone, EncoderSpec(arch=arch, embed_dim=int(backbone.embed_dim), clip=clip), out)
    return out


def encoder_only(model: Path, decoded: list[np.ndarray], threads: int | None) -> float:
    """(a): clips/s of to_model_input + ONNX Runtime on clips already in memory."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.embedder import Embedder

    embedder = Embedder.load(model, threads=threads)
    embedder.embed_clips(to_model_input(decoded[0], embedder.spec.clip))  # warm-up
    t0 = time.perf_counter()
    clips = 0
    for batch in decoded:
        embedder.embed_clips(to_model_input(batch, embedder.spec.clip))
        clips += len(batch)
    return clips / (time.perf_counter() - t0)


def decode_every_frame(path: Path, spec, num_clips: int) -> np.ndarray:
    """What common extraction scripts do: decode the whole video, then cut the clips from it."""
    from vcl_infer.clips.preprocess import fit_frames
    from vcl_infer.clips.sampling import uniform_clips
    from vcl_infer.video.open import open_video

    reader = open_video(path)
    try:
        windows = uniform_clips(reader.timestamps, spec, num_clips)
        frames = reader.get_frames(list(range(len(reader.timestamps))))
    finally:
        reader.close()
    return np.stack([fit_frames(frames[w.indices], spec) for w in windows])


def decode_needed_frames(path: Path, spec, num_clips: int) -> np.ndarray:
    """Our sparse clip reader: only the frames the clips use."""
    from vcl_infer.video.clips import read_clips

    return read_clips(path, spec, num_clips).clips


def naive_loop(model: Path, paths: list[Path], num_clips: int, decode) -> float:
    """(c): decode a video in this process, then encode it, one after another."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.embedder import Embedder

    t0 = time.perf_counter()
    embedder = Embedder.load(model)
    clips = 0
    for path in paths:
        decoded = decode(path, embedder.spec.clip, num_clips)
        embedder.embed_clips(to_model_input(decoded, embedder.spec.clip))
        clips += len(decoded)
    return clips / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=None, help="folder of videos (default: generated)")
    parser.add_argument("--num-videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--model", type=Path, default=None, help="encoder bundle (default: --arch exported untrained)")
    parser.add_argument("--arch", default="r3d_18", help="backbone exported untrained when no --model")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip of the exported --arch")
    parser.add_argument("--crop", type=int, default=112, help="crop side of the exported --arch")
    parser.add_argument("--clips", type=int, default=8, help="clips per video")
    parser.add_argument("--workers", type=int, default=None, help="build decode workers (default: one per core, at most 8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from vcl_infer.clips.spec import ClipSpec  # noqa: F401 - fail early without the runtime
    from vcl_infer.index.build import available_cores, build_index, default_workers, find_videos
    from vcl_infer.video.isolated import DecodePool

    work = Path(tempfile.mkdtemp(prefix="vcl-bench-"))
    generated = f"vcl-bench-{args.num_videos}x{args.seconds:g}s-{args.height}p"
    folder = args.videos or Path(tempfile.gettempdir()) / generated
    if args.videos is None:
        make_videos(folder, args.num_videos, args.seconds, args.height)
    paths = [Path(p) for p in find_videos(folder)]
    model = args.model or default_model(work, args.arch, args.frames, args.crop)
    from vcl_infer.encode.bundle import load_bundle_spec

    spec = load_bundle_spec(model)
    workers = args.workers or default_workers()
    cores = available_cores()

    with DecodePool(workers=max(1, cores)) as pool:
        decoded = [d.clips for d in pool.imap([(p, spec.clip, args.clips) for p in paths]) if hasattr(d, "clips")]
    a = encoder_only(model, decoded, None)
    report = build_index(folder, work / "index", model=model, clips=args.clips, workers=workers, progress=False)
    b = report.clips_per_s
    c = naive_loop(model, paths, args.clips, decode_every_frame)
    c_sparse = naive_loop(model, paths, args.clips, decode_needed_frames)
    results = {
        "videos": len(paths), "clips_per_video": args.clips, "cores": cores, "build_workers": workers,
        "encoder": f"{spec.arch} {spec.clip.frames_per_clip}x{spec.clip.crop_size}x{spec.clip.crop_size}",
        "a_encoder_only_clips_per_s": round(a, 2),
        "b_build_index_clips_per_s": round(b, 2),
        "c_naive_loop_clips_per_s": round(c, 2),
        "c_sparse_naive_loop_clips_per_s": round(c_sparse, 2),
        "b_over_a": round(b / a, 3), "b_over_c": round(b / c, 3), "b_over_c_sparse": round(b / c_sparse, 3),
        "build_seconds": round(report.seconds, 2), "build_failed": len(report.failed),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{len(paths)} videos x {args.clips} clips, encoder {results['encoder']}, {cores} cores, "
          f"{workers} decode worker(s)")
    print(f"(a) encoder only, pre-decoded clips : {a:8.1f} clips/s")
    print(f"(b) build_index end to end          : {b:8.1f} clips/s  ({report.seconds:.1f} s)")
    print(f"(c) naive loop, every frame decoded : {c:8.1f} clips/s")
    print(f"(c') naive loop, sparse clip reader : {c_sparse:8.1f} clips/s")
    print(f"b/a = {b / a:.2f} (target >= 0.8)   b/c = {b / c:.2f} (target >= 1.5)   b/c' = {b / c_sparse:.2f}")


if __name__ == "__main__":
    main()

"""Decode + preprocess CPU time per video: frames shrunk inside the decoder vs numpy resize.

Runs ``read_clips`` on each file twice per round (``decoder_resize`` False, then True), in
one process, ``--rounds`` rounds, and prints the median CPU seconds (``time.process_time``,
so other load on the machine matters less than for wall time), the ratio, and the pixel
difference between the two. The spec is the packaged default encoder's (or ``--resize`` /
``--crop``). Uses the files of ``../shared/videos`` that exist, plus a generated 1080p clip.

    python benchmarks/decode_resize.py [--rounds 3] [--backend auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
FILES = ("moviepy/big_buck_bunny_432_433.webm", "moviepy/no_duration.webm", "torchcodec/av1_video.mkv",
         "decord/flipping_a_pancake.mkv", "mmaction2/demo.mp4", "decord/video_90.mov")


def _generated_1080p(folder: Path) -> Path:
    import av

    path = folder / "gen_1080p.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1080 // 8, 1920 // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(100):
            frame = np.roll(base, 4 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE
    from vcl_infer.video.clips import read_clips

    spec = load_bundle_spec(DEFAULT_BUNDLE).clip
    with tempfile.TemporaryDirectory() as tmp:
        paths = [VIDEOS / f for f in FILES if (VIDEOS / f).is_file()] + [_generated_1080p(Path(tmp))]
        print(f"spec: short side {spec.resize_size}, crop {spec.crop_size}, {spec.frames_per_clip} frames; "
              f"{args.clips} clips/video; backend {args.backend}; load average {os.getloadavg()[0]:.1f}")
        print("| file | size | backend | numpy resize CPU s | in-decoder CPU s | ratio | mean / p99 diff |")
        print("|---|---|---|---|---|---|---|")
        for path in paths:
            times: dict[bool, list[float]] = {False: [], True: []}
            clips = {}
            for _ in range(args.rounds):
                for flag in (False, True):
                    t0 = time.process_time()
                    video = read_clips(path, spec, args.clips, backend=args.backend, decoder_resize=flag)
                    times[flag].append(time.process_time() - t0)
                    clips[flag] = video.clips
            a, b = (statistics.median(times[f]) for f in (False, True))
            diff = np.abs(clips[False].astype(np.int16) - clips[True].astype(np.int16))
            print(f"| {path.name} | {video.info.width}x{video.info.height} | {video.info.backend} | {a:.3f} | "
                  f"{b:.3f} | {a / b:.2f}x | {diff.mean():.2f} / {np.percentile(diff, 99):.0f} |")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

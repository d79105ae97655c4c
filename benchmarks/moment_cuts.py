"""Moment localisation of random 2-second cuts: found at rank 1, and placed within one stride.

Builds, for each encoder bundle given, an index (default sampling: a clip a second) of the
moment-search test's generated 10-minute video (a new panning texture with a moving square
every 5 s, ``tests/moment_fixtures.py``), then searches ``--cuts`` random ``VIDEO@S-(S+2)``
ranges (uniform starts, seeded) and prints, per encoder, how many find the video at rank 1
and how many of those are placed within one stride of the cut, with the misses. Run::

    PYTHONPATH=. python benchmarks/moment_cuts.py                       # the packaged default
    PYTHONPATH=. python benchmarks/moment_cuts.py --models A.onnx,B.onnx --cuts 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def localise(model: Path, video: Path, work: Path, starts: np.ndarray, stride: float = 1.0) -> tuple[int, int, list]:
    """(found at rank 1, of those within one stride, misses as (start, found start))."""
    from vcl_infer.index.build import build_index
    from vcl_infer.search.query import search_index

    index = work / f"index-{model.stem}"
    build_index(video.parent, index, model=model, workers=2, progress=False)
    found = placed = 0
    misses = []
    for s in starts:
        top = search_index(index, f"{video}@{s:.2f}-{s + 2:.2f}", k=3).results[0]
        if top.video != str(video):
            misses.append((round(float(s), 2), Path(top.video).name))
            continue
        found += 1
        if abs(top.start - s) <= stride:
            placed += 1
        else:
            misses.append((round(float(s), 2), round(top.start, 2)))
    return found, placed, misses


def main() -> None:
    from moment_fixtures import write_ten_minute_video

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(ROOT / "vcl_infer" / "models" / "default.onnx"),
                    help="comma-separated encoder bundles, measured on the same cuts")
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = write_ten_minute_video(work / "videos" / "ten_minutes.mp4")
        starts = np.random.default_rng(args.seed).uniform(0, 597, args.cuts)
        for model in (Path(m) for m in args.models.split(",")):
            found, placed, misses = localise(model, video, work, starts)
            print(f"{model}: {found} of {args.cuts} cuts at rank 1, {placed} placed within one stride; "
                  f"misses (cut start, found): {misses}")


if __name__ == "__main__":
    main()

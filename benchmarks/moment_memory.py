"""Peak memory of indexing a 1-minute and a 1-hour video, side by side, with the default
sampling (a clip every second, at most 3600 a video) and the packaged default encoder.

The decode workers stream each video's clips to the encoder in parts of 16 clips, decoding
at most 512 frames or 48 MiB of frames at a time (``vcl_infer.video.clips``), and a video of
more than ``LONG_VIDEO_FRAMES`` frames is read by PyAV in one sequential pass (decord's
resident memory grows with the file it seeks in), so memory should not grow with the
video's length. Each build runs in its own process; for each it reports

- ``tree peak``: the largest sum of RSS over the build process and all its descendants
  (decode workers), sampled from ``/proc`` every 100 ms;
- ``max process``: the largest single-process peak (``getrusage`` ``ru_maxrss`` of the build
  process, ``RUSAGE_SELF`` and ``RUSAGE_CHILDREN``, the latter covering the joined workers);
- build seconds, clips, index size on disk, and size per hour of video;
- ``--decoders``: also the decode work alone (``stream_clips`` in a fresh process, no
  encoder) with decord and with PyAV forced, its peak RSS (``VmHWM``) and seconds: the
  evidence for which decoder bounds a long video's worker.

The videos are generated with PyAV: 64 x 64 H.264 at 30 fps, a new moving texture every
5 s. The ratio ``1 h / 1 min`` of the tree peak is the figure to read (the README states the
margin); the machine's load is printed before and after.

Usage::

    PYTHONPATH=$PWD python benchmarks/moment_memory.py            # 1 min and 60 min
    PYTHONPATH=$PWD python benchmarks/moment_memory.py --minutes 1 5   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 30
SIDE = 64
SCENE_SECONDS = 5


def write_video(path: Path, seconds: int, seed: int = 0) -> None:
    """A ``seconds`` long video, written scene by scene (never held in memory)."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height = stream.width = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "threads": "1"}
        for _ in range(0, seconds, SCENE_SECONDS):
            big = rng.integers(0, 256, size=(SIDE * 2 // 8, SIDE * 2 // 8, 3), dtype=np.uint8)
            big = np.kron(big, np.ones((8, 8, 1), np.uint8))
            vy, vx = rng.uniform(-2, 2, size=2)
            for t in range(FPS * SCENE_SECONDS):
                y, x = int(SIDE / 2 + vy * t) % SIDE, int(SIDE / 2 + vx * t) % SIDE
                frame = np.ascontiguousarray(big[y : y + SIDE, x : x + SIDE])
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _tree_rss(pid: int) -> int:
    """RSS bytes of ``pid`` and every descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def child(videos: str, index: str, workers: int) -> None:
    """Run in the measured process: build, then print the report and our own rusage."""
    from vcl_infer.index.build import build_index

    # a generous time limit: on a shared, overloaded machine a niced worker may wait long for a core
    report = build_index(videos, index, workers=workers, progress=False, timeout_s=1800)
    print(json.dumps({"seconds": report.seconds, "clips": report.clips,
                      "failed": [f"{f.kind}: {f.reason}" for f in report.failed],
                      "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "children_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))


def decode_alone(video: str, backend: str) -> None:
    """Run in a fresh process: the worker's decode work on ``video`` with ``backend``, then print
    its peak RSS (the clips are dropped as they come, as the worker sends them on)."""
    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import default_bundle
    from vcl_infer.video.clips import stream_clips

    spec = load_bundle_spec(default_bundle()).clip
    t0 = time.perf_counter()
    clips = sum(len(p.windows) for p in stream_clips(video, spec, ClipSampling(), backend=backend, num_threads=1))
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))
    print(json.dumps({"backend": backend, "clips": clips, "seconds": time.perf_counter() - t0, "hwm": hwm}))


def measure_decoders(video: Path) -> list[dict]:
    rows = []
    for backend in ("decord", "pyav"):
        out = subprocess.run([sys.executable, __file__, "--decode-alone", str(video), backend],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def measure(minutes: float, workers: int, root: Path, decoders: bool = False) -> dict:
    folder = root / f"v{minutes:g}"
    folder.mkdir()
    t0 = time.perf_counter()
    write_video(folder / "video.mp4", int(minutes * 60))
    written = time.perf_counter() - t0
    index = root / f"i{minutes:g}"
    cmd = [sys.executable, __file__, "--child", str(folder), str(index), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])
    if out["failed"] or not out["clips"]:
        raise SystemExit(f"the {minutes:g}-minute build failed, nothing measured: {out['failed']}")
    size = sum(p.stat().st_size for p in index.iterdir() if p.is_file())
    alone = measure_decoders(folder / "video.mp4") if decoders else []
    return dict(minutes=minutes, write_s=written, tree_peak=peak, index_bytes=size, decoders=alone, **out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--decoders", action="store_true",
                        help="also measure the decode work alone with decord and with PyAV")
    parser.add_argument("--child", nargs=2, metavar=("VIDEOS", "INDEX"), help=argparse.SUPPRESS)
    parser.add_argument("--decode-alone", nargs=2, metavar=("VIDEO", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.workers)
        return
    if args.decode_alone:
        decode_alone(*args.decode_alone)
        return
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    root = Path(tempfile.mkdtemp(prefix="vcl-moment-memory-"))
    rows = []
    try:
        for minutes in args.minutes:
            rows.append(measure(minutes, args.workers, root, args.decoders))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mb = 1 / 2**20
    print("| video | clips | build s | tree peak MiB | max process MiB (self / workers) | index MiB | MiB per hour |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['clips']} | {r['seconds']:.1f} | {r['tree_peak'] * mb:.0f} | "
              f"{r['self_maxrss'] * mb:.0f} / {r['children_maxrss'] * mb:.0f} | {r['index_bytes'] * mb:.2f} | "
              f"{r['index_bytes'] * mb * 60 / r['minutes']:.2f} |")
    if args.decoders:
        print("\n| video | decode alone: decord peak MiB (s) | PyAV peak MiB (s) |")
        print("|---|---|---|")
        for r in rows:
            d = {x["backend"]: x for x in r["decoders"]}
            print(f"| {r['minutes']:g} min | {d['decord']['hwm'] * mb:.0f} ({d['decord']['seconds']:.1f}) | "
                  f"{d['pyav']['hwm'] * mb:.0f} ({d['pyav']['seconds']:.1f}) |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"\ntree peak ratio {b['minutes']:g} min / {a['minutes']:g} min: {b['tree_peak'] / a['tree_peak']:.3f}; "
              f"build process {b['self_maxrss'] / a['self_maxrss']:.3f}; "
              f"worker {b['children_maxrss'] / a['children_maxrss']:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

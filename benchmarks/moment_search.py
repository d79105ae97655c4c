"""Clip-level (moment) search at 10k and 1M clips: latency, recall@10 vs exact, index size.

A stride of one clip a second makes the clip index about 100x larger than 8 clips per
video did. This measures what that costs, through the index's public API only
(``VideoIndex.create`` / ``add_video`` / ``commit`` / ``search``) and the search layer
(``vcl_infer.search.query.search_vectors``), on synthetic vectors: videos of ``--clips-per-video``
clips whose embeddings drift slowly in time around a per-video centre (like a real encoder's
clips of one video), 128-d, unit length.

For each size it prints:

- build: seconds to add the videos and to commit (the one commit trains the FAISS index the
  size calls for, on its bounded sample, and tunes nprobe to the target recall), the FAISS
  factory the index chose, bytes on disk (catalog + FAISS files) and bytes per clip;
- ``clip search``: ``index.search(level="clip")`` latency per query of 8 clip vectors (a 2 s
  cut's query clips), p50 and p99 over ``--queries`` queries, and recall@10 against exact
  inner-product search (numpy, brute force over every clip vector) on the same vectors,
  whose latency is printed beside it;
- ``video search``: ``search_vectors`` end to end (candidates from both levels, Chamfer score
  and time alignment over each candidate's clips), p50 and p99.

The vectors are generated, not encoded (the encoder's cost is measured elsewhere), and the
index is committed once, so a 1M-clip run takes minutes, not the half hour that committing
(and retraining) every 1000 videos took.

Wall time and CPU time (``process_time``) are both printed: on a shared, overloaded machine
the wall time mostly measures the queue for a core; with ``OMP_NUM_THREADS=1`` the CPU time
is the work one query costs.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/moment_search.py   # 10k and 1M clips
    PYTHONPATH=$PWD python benchmarks/moment_search.py --sizes 10000   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128


def _video_clips(rng: np.random.Generator, n: int) -> np.ndarray:
    centre = rng.normal(size=DIM) * 2.0
    walk = np.cumsum(rng.normal(size=(n, DIM)) * 0.15, axis=0)
    v = (centre + walk).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _build(folder: Path, total: int, per_video: int, rng: np.random.Generator):
    from vcl_infer.index import VideoIndex

    index = VideoIndex.create(folder, fingerprint="sha256:" + "0" * 64, spec_json="{}", dim=DIM)
    kept = []
    t0 = time.perf_counter()
    for v in range(total // per_video):
        clips = _video_clips(rng, per_video)
        mean = clips.mean(axis=0)
        index.add_video(f"/bench/video_{v:06d}.mp4", size=1, mtime_ns=1, content_hash="", info={"duration": per_video},
                        video_vector=mean / np.linalg.norm(mean), clip_vectors=clips,
                        windows=[(float(s), s + 1.07) for s in range(per_video)])
        kept.append(clips)
    added = time.perf_counter() - t0
    index.commit()  # one commit: one training of the structure the final size calls for
    committed = time.perf_counter() - t0 - added
    index.close()
    return np.concatenate(kept), added, committed


def _pctl(wall: list[float], cpu: list[float]) -> str:
    a, c = np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3
    return (f"wall p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms; "
            f"CPU p50 {np.percentile(c, 50):.2f} ms, p99 {np.percentile(c, 99):.2f} ms")


def _load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _sweep(index, vectors: np.ndarray, queries: list[np.ndarray], nprobes: list[int]) -> None:
    """Clip search recall@10 vs exact and CPU latency at each nprobe (the IVF speed/recall curve)."""
    exact = [np.argpartition(-(q @ vectors.T), 10, axis=1)[:, :10] + 1 for q in queries]
    for nprobe in nprobes:
        cpu, hits = [], 0
        for q, truth in zip(queries, exact):
            c0 = time.process_time()
            _, ids = index.search(q, 10, level="clip", nprobe=nprobe)
            cpu.append(time.process_time() - c0)
            hits += sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, truth))
        c = np.asarray(cpu) * 1e3
        print(f"  nprobe {nprobe:>4}: recall@10 {hits / sum(t.size for t in exact):.4f}, "
              f"CPU p50 {np.percentile(c, 50):.2f} ms, p99 {np.percentile(c, 99):.2f} ms")


def run(total: int, per_video: int, queries: int, seed: int, noise: float = 0.02,
        nprobes: list[int] | None = None) -> None:
    from vcl_infer.index import VideoIndex
    from vcl_infer.search.query import search_vectors

    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp(prefix=f"vcl-moment-bench-{total}-"))
    try:
        print(f"\n## {total:,} clips ({total // per_video:,} videos x {per_video} clips); {_load()}", flush=True)
        vectors, add_s, commit_s = _build(folder / "index", total, per_video, rng)
        size = _folder_bytes(folder / "index")
        index = VideoIndex.open(folder / "index")
        info = index.info()
        print(f"build: add {add_s:.1f} s, commit {commit_s:.1f} s; factory {info['index_types']['clip']} "
              f"(nprobe {info['nprobe']['clip']}); "
              f"{size / 1e6:.1f} MB on disk, {size / total:.0f} B per clip "
              f"({size / total * 3600 / 1e6:.2f} MB per hour of video at one clip a second)")
        picks = rng.choice(len(vectors) - 8, queries, replace=False)
        clip_times, video_times, clip_cpu, video_cpu, exact_times, hits, wanted = [], [], [], [], [], 0, 0
        asked: list[np.ndarray] = []
        for p in picks:
            q = vectors[p : p + 8] + rng.normal(scale=noise, size=(8, DIM)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            t0, c0 = time.perf_counter(), time.process_time()
            _, ids = index.search(q, 10, level="clip")
            clip_times.append(time.perf_counter() - t0)
            clip_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            scores = q @ vectors.T
            top = np.argpartition(-scores, 10, axis=1)[:, :10]
            exact_times.append(time.perf_counter() - t0)
            exact = top + 1  # catalog clip ids start at 1
            hits += sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exact))
            wanted += exact.size
            pooled = q.mean(axis=0)
            t0, c0 = time.perf_counter(), time.process_time()
            search_vectors(index, pooled / np.linalg.norm(pooled), q, k=10,
                           query_windows=[(i * 0.13, i * 0.13 + 1.07) for i in range(8)])
            video_times.append(time.perf_counter() - t0)
            video_cpu.append(time.process_time() - c0)
            asked.append(q)
        print(f"clip search (8 query clips, k=10): {_pctl(clip_times, clip_cpu)}; "
              f"recall@10 vs exact {hits / wanted:.4f} ({wanted // 10} query clips)")
        ex = np.asarray(exact_times) * 1e3
        print(f"exact search (numpy brute force, same queries): wall p50 {np.percentile(ex, 50):.1f} ms, "
              f"p99 {np.percentile(ex, 99):.1f} ms")
        print(f"video search with alignment (k=10): {_pctl(video_times, video_cpu)}")
        if nprobes and info["nprobe"]["clip"]:
            print(f"clip search at other nprobe (of {info['index_types']['clip']}), same queries:")
            _sweep(index, vectors, asked, nprobes)
        print(_load(), flush=True)
        index.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--clips-per-video", type=int, default=600, help="600: 10-minute videos at 1 clip/s")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.02,
                        help="per-dimension noise added to the stored clips a query is cut from (0.1: harder)")
    parser.add_argument("--nprobe-sweep", type=int, nargs="*", default=[],
                        help="also measure clip search at these nprobe values (IVF indexes)")
    args = parser.parse_args()
    print(f"before: {_load()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"query noise {args.noise}")
    for total in args.sizes:
        run(total, args.clips_per_video, args.queries, args.seed, args.noise, args.nprobe_sweep)
    print(f"\nafter: {_load()}")


if __name__ == "__main__":
    main()

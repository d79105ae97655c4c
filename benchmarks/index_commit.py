"""Commit cost and open time of the index at N clips: the segment layout vs the one-file layout.

For each N it fills a real index (``VideoIndex``, dim 512, 8 clips a video, clustered unit vectors)
up to N clips, commits it once (the base: factory by size, IVF trained on a bounded sample),
then measures, with the spread of repeats:

- **commit**: one commit of a fixed batch (``--batch`` videos, 8 clips each) on the open writer:
  the catalog transaction, a delta segment per level, the meta transaction;
- **open**: ``VideoIndex.open`` by a reader (catalog snapshot, every segment opened: small ones
  read and CRC-checked, the base memory-mapped), and the first search after it (which checks the
  mapped base's CRC-32 before answering), and a later search;
- **one-file layout**, side by side in the same run: what the code before segments did per commit
  (serialize each level whole, write, fsync, sha256) and per open (read each file whole, sha256,
  deserialize), timed on the same index objects with the same calls.

Run (large N needs ~2 GB of disk and ~6 GB of memory per million clips):

    PYTHONPATH=. nice -n 10 python benchmarks/index_commit.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vcl_infer.index import VideoIndex
from vcl_infer.index import faiss_ops as F

DIM = 512
CLIPS = 8


def vectors(rng, centres, n):
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("<f4")


def fill(ix, rng, centres, n_videos, prefix):
    """Add ``n_videos`` videos of 8 clips straight from vector bytes (what a merge does)."""
    for v in range(n_videos):
        cv = vectors(rng, centres, CLIPS)
        vv = cv.mean(0)
        vv = (vv / np.linalg.norm(vv)).astype("<f4")
        ix.add_stored_video(f"/{prefix}/{v}.mp4", 1, 1, None, {}, vv.tobytes(),
                            [(2.0 * j, 2.0 * j + 1.6, cv[j].tobytes()) for j in range(CLIPS)])


def spread(xs):
    return f"{statistics.median(xs) * 1e3:8.1f} ms [{min(xs) * 1e3:.1f}-{max(xs) * 1e3:.1f}]"


def in_memory(path: Path) -> dict:
    """Each level's base read whole into memory, as the old layout held it (a mapped index would
    serialize as a reference to its file, not its data)."""
    return {level: F.deserialize((path / name).read_bytes())
            for level, name in (("clip", "clips.faiss"), ("video", "videos.faiss"))}


def one_file_commit(ix, loaded: dict) -> float:
    """The old per-commit cost: each level serialized whole, written, fsync'ed and sha256-hashed."""
    t0 = time.perf_counter()
    for level in ("clip", "video"):
        data = F.serialize(loaded[level])
        tmp = ix.path / f".onefile-{level}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        hashlib.sha256(data).hexdigest()
        tmp.unlink()
    return time.perf_counter() - t0


def one_file_open(path: Path) -> float:
    """The old per-open cost: each level's file read whole, sha256-hashed and deserialized."""
    t0 = time.perf_counter()
    for name in ("clips.faiss", "videos.faiss"):
        data = (path / name).read_bytes()
        hashlib.sha256(data).hexdigest()
        F.deserialize(data)
    return time.perf_counter() - t0


def run(n_clips: int, batch: int, repeats: int, root: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(100, n_clips // 100), DIM), dtype=np.float32)
    path = root / f"ix-{n_clips}"
    t0 = time.perf_counter()
    ix = VideoIndex.create(path, fingerprint="b" * 64, spec_json="{}", dim=DIM)
    step = 2000
    for s in range(0, n_clips // CLIPS, step):
        fill(ix, rng, centres, min(step, n_clips // CLIPS - s), f"base{s}")
        ix.catalog.commit() if ix.catalog.in_transaction else None  # rows only; one FAISS build below
        ix._pending_add = {"clip": [], "video": []}
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix.files.rebuild(("clip", "video"))  # the base, as a compaction or a first build makes it
    t_base = time.perf_counter() - t0
    commits = []
    for r in range(repeats):
        fill(ix, rng, centres, batch, f"batch{r}")
        t0 = time.perf_counter()
        ix.commit()
        commits.append(time.perf_counter() - t0)
    loaded = in_memory(path)
    old_commit = [one_file_commit(ix, loaded) for _ in range(repeats)]
    del loaded
    factory = ix.catalog.meta["clip.factory"]
    ix._committed = False  # measure with the deltas in place (no compaction at close)
    ix.close()
    q = vectors(rng, centres, 1)
    opens, first, later = [], [], []
    for _ in range(repeats):
        os.sync()
        t0 = time.perf_counter()
        reader = VideoIndex.open(path)
        t1 = time.perf_counter()
        reader.search(q, 10, level="clip")
        t2 = time.perf_counter()
        reader.search(q, 10, level="clip")
        t3 = time.perf_counter()
        reader.close()
        opens.append(t1 - t0)
        first.append(t2 - t1)
        later.append(t3 - t2)
    old_open = [one_file_open(path) for _ in range(repeats)]
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return dict(n=n_clips, factory=factory, t_rows=t_rows, t_base=t_base, commit=commits, old_commit=old_commit,
                open=opens, first=first, later=later, old_open=old_open, mb=size / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated clip counts")
    ap.add_argument("--batch", type=int, default=32, help="videos per measured commit (8 clips each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the indexes (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="vcl-commit-"))
    print(f"load average {os.getloadavg()[0]:.1f} at start; {args.batch}-video commits ({args.batch * CLIPS} clips); "
          f"median [min-max] of {args.repeats}")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            r = run(n, args.batch, args.repeats, root, args.seed)
            print(f"\n== {r['n']:,} clips ({r['factory']}, {r['mb']:.0f} MiB on disk; rows {r['t_rows']:.1f} s, "
                  f"base {r['t_base']:.1f} s)  load {os.getloadavg()[0]:.1f}")
            print(f"   commit   segments {spread(r['commit'])}   one-file {spread(r['old_commit'])}   "
                  f"-> {statistics.median(r['old_commit']) / statistics.median(r['commit']):.1f}x")
            print(f"   open     segments {spread(r['open'])}   one-file {spread(r['old_open'])}   "
                  f"-> {statistics.median(r['old_open']) / statistics.median(r['open']):.1f}x")
            print(f"   search after open: first {spread(r['first'])} (checks the mapped base), then {spread(r['later'])}")
            shutil.rmtree(root / f"ix-{n}", ignore_errors=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()

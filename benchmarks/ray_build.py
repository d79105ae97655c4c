"""``--engine ray`` against the local build on this machine, and the ingest writer's rate.

In one run, on the same generated videos and encoder:

(l) ``build_index`` (decode worker processes + the encoder in this process) into a fresh index;
(r) ``build_with_ray`` on a local Ray instance (``num_cpus`` = the cores) into a fresh index:
    Ray start-up (``ray.init``) is timed apart from the build (r_build), since a cluster is
    started once for many builds;

alternated ``--repeats`` times (the machine is shared: the spread is printed). Then the
single ingest writer alone, on synthetic shards (``--ingest-videos`` x ``--ingest-clips``
vectors of ``--dim``, a ``Flat`` index unless ``--index-type``), its rate in vectors/s in the first and the second half of the ingest (a
commit's cost may grow with the index), which is the number the scaling projection in the
README uses::

    python benchmarks/ray_build.py                      # 24 videos of 20 s at 240p, default encoder
    python benchmarks/ray_build.py --videos 8 --seconds 5 --repeats 1 --ingest-videos 200   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _timed_local(folder: Path, out: Path) -> dict:
    from vcl_infer.index.build import build_index

    t0 = time.monotonic()
    report = build_index(folder, out, progress=False)
    return {"seconds": time.monotonic() - t0, "clips": report.clips, "videos": report.embedded}


def _timed_ray(folder: Path, out: Path, batch: int) -> dict:
    from vcl_infer.distributed import build_with_ray

    t0 = time.monotonic()
    report = build_with_ray(folder, out, batch_size=batch, progress=False)
    return {"seconds": time.monotonic() - t0, "clips": report.clips, "videos": report.embedded_now,
            "ingest_s": report.ingest_seconds, "ingest_vectors_per_s": report.ingest_vectors_per_s}


def _synthetic_shards(folder: Path, videos: int, clips: int, dim: int, per_shard: int) -> int:
    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.distributed.shards import ShardMeta, ShardRow, write_shard

    meta = ShardMeta("sha256:" + "0" * 64, json.dumps({"arch": "bench", "embed_dim": dim}), dim,
                     ClipSampling.fixed(clips))
    rng = np.random.default_rng(0)
    for start in range(0, videos, per_shard):
        rows = []
        for i in range(start, min(videos, start + per_shard)):
            vecs = rng.standard_normal((clips, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            pooled = vecs.mean(0)
            rows.append(ShardRow(f"/bench/v{i:07d}.mp4", 1000 + i, i, "ok", content_hash=f"sha256:{i}",
                                 info={"duration": 60.0}, windows=[(2.0 * c, 2.0 * c + 1) for c in range(clips)],
                                 video_vector=pooled / np.linalg.norm(pooled), clip_vectors=vecs))
        write_shard(folder, rows, meta)
    return videos * (clips + 1)


def _rate(vectors_per_shard: int, seconds: list[float]) -> float | None:
    return round(vectors_per_shard * len(seconds) / sum(seconds), 1) if seconds and sum(seconds) > 0 else None


def _ingest_rate(work: Path, videos: int, clips: int, dim: int, per_shard: int, index_type: str = "Flat") -> dict:
    from vcl_infer.distributed.ingest import IngestReport, ShardIngester, open_index_for_shards
    from vcl_infer.distributed.shards import list_shards, read_meta, read_rows

    shards_dir = work / "shards"
    total = _synthetic_shards(shards_dir, videos, clips, dim, per_shard)
    shards = list_shards(shards_dir)
    t0 = time.monotonic()
    for s in shards:
        read_rows(s)
    read_s = time.monotonic() - t0
    report = IngestReport(index=str(work / "ingested"))
    index = open_index_for_shards(work / "ingested", read_meta(shards[0]), index_type)
    per_shard_s = []
    t0 = time.monotonic()
    try:
        writer = ShardIngester(index, report)
        for s in shards:
            t = time.monotonic()
            writer.ingest(s)
            per_shard_s.append(time.monotonic() - t)
        writer.flush()
    finally:
        index.close()
    seconds = time.monotonic() - t0
    half = max(1, len(per_shard_s) // 2)
    vectors_per_shard = per_shard * (clips + 1)
    return {"vectors": total, "shards": len(shards), "dim": dim, "index_type": index_type, "seconds": round(seconds, 2),
            "vectors_per_s": round(total / seconds, 1), "read_only_vectors_per_s": round(total / read_s, 1),
            "first_half_vectors_per_s": _rate(vectors_per_shard, per_shard_s[:half]),
            "second_half_vectors_per_s": _rate(vectors_per_shard, per_shard_s[half:]),
            "commits": -(-videos // 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="files per Ray batch / shard")
    parser.add_argument("--ingest-videos", type=int, default=2000)
    parser.add_argument("--ingest-clips", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--index-type", default="Flat",
                        help="of the ingest index; 'auto' adds the IVF training when the size crosses 50k")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from extract import make_videos

    from vcl_infer.distributed.pipeline import ray_session

    work = Path(tempfile.mkdtemp(prefix="vcl-ray-bench-"))
    folder = Path(tempfile.gettempdir()) / f"vcl-bench-ray-{args.videos}x{args.seconds:g}s-{args.height}p"
    make_videos(folder, args.videos, args.seconds, args.height)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    with ray_session(None, os.cpu_count()):
        ray_init_s = time.monotonic() - t0
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        for r in range(args.repeats):
            runs["local"].append(_timed_local(folder, work / f"local{r}"))
            runs["ray"].append(_timed_ray(folder, work / f"ray{r}", args.batch))
    ingest = _ingest_rate(work, args.ingest_videos, args.ingest_clips, args.dim, per_shard=64,
                          index_type=args.index_type)
    local_s = [x["seconds"] for x in runs["local"]]
    ray_s = [x["seconds"] for x in runs["ray"]]
    result = {
        "videos": args.videos, "seconds_each": args.seconds, "height": args.height, "cores": os.cpu_count(),
        "clips": runs["local"][0]["clips"], "batch": args.batch, "ray_init_s": round(ray_init_s, 2),
        "local_s": [round(x, 2) for x in local_s], "ray_build_s": [round(x, 2) for x in ray_s],
        "ray_over_local": round(statistics.median(ray_s) / statistics.median(local_s), 3),
        "ray_with_init_over_local": round((statistics.median(ray_s) + ray_init_s) / statistics.median(local_s), 3),
        "local_clips_per_s": round(runs["local"][0]["clips"] / statistics.median(local_s), 2),
        "ray_clips_per_s": round(runs["ray"][0]["clips"] / statistics.median(ray_s), 2),
        "ingest_in_build_vectors_per_s": [x["ingest_vectors_per_s"] for x in runs["ray"]],
        "ingest": ingest, "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.videos} videos x {args.seconds:g} s at {args.height}p, {result['clips']} clips, {os.cpu_count()} cores, "
          f"load {result['loadavg_before']} -> {result['loadavg_after']}")
    print(f"local build     : {result['local_s']} s ({result['local_clips_per_s']} clips/s)")
    print(f"ray build       : {result['ray_build_s']} s ({result['ray_clips_per_s']} clips/s), ray.init {ray_init_s:.1f} s")
    print(f"ray / local     : {result['ray_over_local']} (with ray.init: {result['ray_with_init_over_local']})")
    print(f"ingest writer   : {ingest['vectors_per_s']} vectors/s over {ingest['vectors']} vectors of {ingest['dim']}-d "
          f"(first half {ingest['first_half_vectors_per_s']}, second half {ingest['second_half_vectors_per_s']}; "
          f"reading shards alone {ingest['read_only_vectors_per_s']})")


if __name__ == "__main__":
    main()

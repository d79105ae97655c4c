"""Feature-extraction throughput: the index build pipeline against its two bounds.

On the same videos and the same encoder, in one run, it measures clips/s of:

(a) the encoder alone on pre-decoded clips (all cores for ONNX Runtime): the ceiling;
(b) ``build_index`` end to end (decode workers overlapping batched encoding, worker start-up,
    commits and shutdown included), into a fresh index;
(c) a naive loop: decode one video in this process, encode it, next video, as common
    feature-extraction scripts do. They decode every frame of the video (``torchvision.io.
    read_video``, video_features' frame loop, ``decord`` ``get_batch(range(len(vr)))``) and then
    cut the clips; that is (c) here. (c') is the same loop with our sparse clip reader
    (``read_clips``: only the frames the clips need, seeking between them), reported beside it
    so the share of the gain that comes from sparse decoding is visible.

and prints the ratios b/a (target >= 0.9) and b/c (target >= 2 on 2 cores, issue 15).

In the same run it measures the build's physical bound: ``d``, the decode CPU-seconds per clip
(the decode workers' own CPU time, read with ``getrusage(RUSAGE_CHILDREN)`` once they exit, less
the CPU of a pool of the same size that starts and stops without work), and ``e``, the encode
CPU-seconds per clip (this process's CPU time over (a): ``to_model_input`` + ONNX Runtime with
the build's thread count). On ``n`` cores no build can beat ``n / (d + e)`` clips/s; it prints
that bound, the build, and the build as a share of it (target >= 75 % for the default encoder),
the build's own CPU use, and where its wall time went (model load, worker start, waiting for
decoded clips, encoding, catalog writes, commits; see :class:`BuildPhases`).

(b) is ``BuildReport.clips_per_s`` (its clock starts once the encoder is loaded, as before);
``b_wall`` counts from the call, model load included::

    python benchmarks/extract.py          # 12 generated 2-minute 240p videos, r3d_18 8 x 112 x 112
    python benchmarks/extract.py --model vcl_infer/models/default.onnx     # the default encoder
    python benchmarks/extract.py --videos DIR --model BUNDLE.onnx --json --rounds 2

The generated videos are H.264 at 25 fps with a keyframe every second (phone cameras and
most web video use 1-2 s GOPs). The default encoder is an untrained ``r3d_18`` at 8 frames x
112 x 112, exported with torch (only this script needs torch); ``--arch``/``--frames``/
``--crop`` choose another, ``--model`` any bundle (``vcl_infer/models/default.onnx`` is
``r3d_small`` 8 x 48 x 48, a much cheaper encoder, for which decoding is the bottleneck).

Bounds on a CPU-only machine with ``n`` cores: with ``d`` the decode CPU-seconds and ``e`` the
encode CPU-seconds per clip, a <= n/e, b <= n/(d+e), so b/a <= e/(d+e) when (a) keeps every core
busy; where it does not (ONNX Runtime's serial parts), the decoders can use the idle share.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
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


def encoder_only(model: Path, decoded: list[np.ndarray], threads: int | None) -> tuple[float, float]:
    """(a): clips/s of to_model_input + ONNX Runtime on clips already in memory, and the
    CPU-seconds per clip it took (this process, every thread: ``e`` of the bound)."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.embedder import Embedder

    embedder = Embedder.load(model, threads=threads)
    embedder.embed_clips(to_model_input(decoded[0], embedder.spec.clip))  # warm-up
    t0, cpu0 = time.perf_counter(), time.process_time()
    clips = 0
    for batch in decoded:
        embedder.embed_clips(to_model_input(batch, embedder.spec.clip))
        clips += len(batch)
    return clips / (time.perf_counter() - t0), (time.process_time() - cpu0) / clips


def _children_cpu() -> float:
    """CPU-seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_start_cpu(workers: int) -> float:
    """CPU-seconds of a decode pool of ``workers`` that starts (imports) and stops without work."""
    from vcl_infer.index.build import DECODE_PRIORITY
    from vcl_infer.video.isolated import DecodePool

    before = _children_cpu()
    pool = DecodePool(workers=workers, **DECODE_PRIORITY)
    try:
        while not all(w.ready for w in pool._workers):  # benchmark only: wait for every "ready"
            list(pool._collect())
    finally:
        pool.close()
    return _children_cpu() - before


def decode_cost(paths: list[Path], spec, clips: int, workers: int) -> tuple[list[np.ndarray], float, float]:
    """Decode every video in a pool like the build's; returns the clips, ``d`` (decode
    CPU-seconds per clip, the workers' CPU less their start-up) and the start-up CPU-s."""
    from vcl_infer.index.build import DECODE_PRIORITY
    from vcl_infer.video.isolated import DecodePool

    start = worker_start_cpu(workers)
    before = _children_cpu()
    with DecodePool(workers=workers, **DECODE_PRIORITY) as pool:
        decoded = [d.clips for d in pool.imap([(p, spec.clip, clips) for p in paths]) if hasattr(d, "clips")]
    total = _children_cpu() - before
    return decoded, max(0.0, total - start) / max(1, sum(len(d) for d in decoded)), start


class BuildPhases:
    """Wall time of a build's phases, by wrapping the functions it calls (benchmark only).

    Phases: ``load_model`` and ``open_index`` (before any decoding), ``wait_decoded`` (the
    encoding thread blocked on the decode queue: decoding is behind), ``encode``
    (to_model_input + ONNX Runtime + normalising), ``hash_files``, ``catalog_writes``
    (add_video / add_failure), ``commit`` (every commit, the last one included), ``close``
    (index close and worker shutdown); ``first_result_s`` is the time from the pool's start to
    the first decoded clips (worker start-up plus one file's decoding); ``worker_share_*``: of
    the decode workers' time from the pool's start to its close, the share spent starting,
    holding a file (busy), and waiting for work (sampled every 20 ms).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.marks: dict[str, float] = {}
        self._saved: list[tuple[object, str, object]] = []

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    def _wrap(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        self._saved.append((owner, attr, original))

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - t0)

        setattr(owner, attr, timed)

    def __enter__(self) -> "BuildPhases":
        import vcl_infer.index.build as build
        from vcl_infer.index.store import VideoIndex
        from vcl_infer.video.isolated import DecodePool

        for owner, attr, name in ((build, "load_embedder", "load_model"), (build, "open_index_for", "open_index"),
                                  (build, "clip_vectors", "encode"), (build, "file_hash", "hash_files"),
                                  (VideoIndex, "add_video", "catalog_writes"),
                                  (VideoIndex, "add_failure", "catalog_writes"), (VideoIndex, "commit", "commit"),
                                  (build, "_close", "close"), (DecodePool, "close", "close")):
            self._wrap(owner, attr, name)
        original_init, original_feed = DecodePool.__init__, build._decoded_in_background
        self._saved += [(DecodePool, "__init__", original_init), (build, "_decoded_in_background", original_feed)]
        phases = self

        def init(pool, *args, **kwargs):
            phases.marks.setdefault("pool_start", time.perf_counter())
            original_init(pool, *args, **kwargs)
            threading.Thread(target=phases._sample, args=(pool,), daemon=True).start()

        def feed(*args, **kwargs):
            source = original_feed(*args, **kwargs)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    phases._add("wait_decoded", time.perf_counter() - t0)
                    return
                phases._add("wait_decoded", time.perf_counter() - t0)
                phases.marks.setdefault("first_result", time.perf_counter())
                yield item

        DecodePool.__init__, build._decoded_in_background = init, feed
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)

    def _sample(self, pool, every: float = 0.02) -> None:
        """Every ``every`` s until the pool closes: how many workers are starting, and how many
        hold a file (busy). A worker that is ready but holds no file waits for work: a stall
        of the decode side whatever the machine's load (a slow, loaded worker still holds its file)."""
        samples = self.samples = []
        while pool._workers:
            workers = list(pool._workers)
            samples.append((sum(not w.ready for w in workers), sum(w.task is not None for w in workers), len(workers)))
            time.sleep(every)

    def summary(self, wall: float) -> dict:
        out = {name: round(s, 3) for name, s in sorted(self.seconds.items())}
        out["other"] = round(wall - sum(self.seconds.values()), 3)
        if "pool_start" in self.marks and "first_result" in self.marks:
            out["first_result_s"] = round(self.marks["first_result"] - self.marks["pool_start"], 3)
        out["commits"] = self.counts.get("commit", 0)
        samples = getattr(self, "samples", [])
        if samples:
            slots = sum(n for _, _, n in samples)
            out["worker_share_starting"] = round(sum(s for s, _, _ in samples) / slots, 3)
            out["worker_share_busy"] = round(sum(b for _, b, _ in samples) / slots, 3)
            out["worker_share_waiting"] = round(1 - out["worker_share_starting"] - out["worker_share_busy"], 3)
        return out


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


def naive_loop(model: Path, paths: list[Path], num_clips: int, decode) -> tuple[float, float]:
    """(c): decode a video in this process, then encode it, one after another; its clips/s and
    the CPU-seconds it spent per clip (its decoder and ONNX Runtime threads included)."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.embedder import Embedder

    t0, cpu0 = time.perf_counter(), _self_cpu()
    embedder = Embedder.load(model)
    clips = 0
    for path in paths:
        decoded = decode(path, embedder.spec.clip, num_clips)
        embedder.embed_clips(to_model_input(decoded, embedder.spec.clip))
        clips += len(decoded)
    return clips / (time.perf_counter() - t0), (_self_cpu() - cpu0) / max(1, clips)


def one_round(args, folder: Path, paths: list[Path], model: Path, spec, workers: int, cores: int, work: Path,
              number: int) -> dict:
    """(a), (b), (c), (c') and the bound, side by side, on the same videos."""
    from vcl_infer.index.build import build_index

    load_before = os.getloadavg()
    decoded, d, start_cpu = decode_cost(paths, spec, args.clips, workers)
    a, e = encoder_only(model, decoded, cores)
    cpu0 = _self_cpu() + _children_cpu()
    with BuildPhases() as phases:
        t0 = time.perf_counter()
        report = build_index(folder, work / f"index{number}", model=model, clips=args.clips, workers=workers,
                             progress=False)
        wall = time.perf_counter() - t0
    build_cpu = _self_cpu() + _children_cpu() - cpu0
    b = report.clips_per_s
    bound = cores / (d + e)
    c, c_cpu = naive_loop(model, paths, args.clips, decode_every_frame) if not args.skip_naive else (float("nan"),) * 2
    c_sparse, _ = naive_loop(model, paths, args.clips, decode_needed_frames) if not args.skip_naive else (float("nan"),) * 2
    return {
        "a_encoder_only_clips_per_s": round(a, 2),
        "b_build_index_clips_per_s": round(b, 2),
        "b_wall_clips_per_s": round(report.clips / wall, 2), "b_wall_over_a": round(report.clips / wall / a, 3),
        "c_naive_loop_clips_per_s": round(c, 2),
        "c_sparse_naive_loop_clips_per_s": round(c_sparse, 2),
        # b/c cannot exceed bound/c (b at its bound); when (c) keeps every core busy that is
        # c's CPU per clip over the build's, (decode-all + encode) / (d + e)
        "c_cpu_s_per_clip": round(c_cpu, 4), "c_cpu_use": round(c_cpu * c / cores, 3),
        "b_over_c_at_bound": round(bound / c, 3),
        "b_over_a": round(b / a, 3), "b_over_c": round(b / c, 3), "b_over_c_sparse": round(b / c_sparse, 3),
        "decode_cpu_s_per_clip": round(d, 4), "encode_cpu_s_per_clip": round(e, 4),
        "worker_start_cpu_s": round(start_cpu / workers, 3),
        "bound_clips_per_s": round(bound, 2), "build_over_bound": round(b / bound, 3),
        "build_cpu_s_per_clip": round(build_cpu / max(1, report.clips), 4),
        "build_cpu_use": round(build_cpu / (wall * cores), 3),
        "build_seconds": round(report.seconds, 2), "build_clips": report.clips, "build_failed": len(report.failed),
        "build_phases_s": phases.summary(wall),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


SUMMARISED = ("a_encoder_only_clips_per_s", "b_build_index_clips_per_s", "b_wall_clips_per_s", "b_wall_over_a", "c_naive_loop_clips_per_s",
              "c_sparse_naive_loop_clips_per_s", "c_cpu_s_per_clip", "c_cpu_use", "b_over_c_at_bound", "b_over_a", "b_over_c", "b_over_c_sparse", "decode_cpu_s_per_clip",
              "encode_cpu_s_per_clip", "bound_clips_per_s", "build_over_bound", "build_cpu_s_per_clip",
              "build_cpu_use", "build_seconds")


def spread(rounds: list[dict]) -> dict:
    """Median, min and max over the rounds of every summarised number."""
    return {key: {"median": statistics.median(r[key] for r in rounds), "min": min(r[key] for r in rounds),
                  "max": max(r[key] for r in rounds)} for key in SUMMARISED}


def _print(results: dict) -> None:
    m = results["spread"]

    def show(key: str, fmt: str = "8.2f") -> str:
        v = m[key]
        return f"{v['median']:{fmt}} (min {v['min']:.3g}, max {v['max']:.3g})"

    print(f"{results['videos']} videos x {results['clips_per_video']} clips, encoder {results['encoder']}, "
          f"{results['cores']} cores, {results['build_workers']} decode worker(s), "
          f"{len(results['rounds'])} round(s): median (min, max)")
    print(f"(a) encoder only, pre-decoded clips : {show('a_encoder_only_clips_per_s')} clips/s")
    print(f"(b) build_index end to end          : {show('b_build_index_clips_per_s')} clips/s, "
          f"{show('build_seconds', '.1f')} s")
    print(f"(b) counted from the call (model load too): {show('b_wall_clips_per_s')} clips/s, "
          f"b_wall/a = {show('b_wall_over_a', '.3f')}")
    print(f"(c) naive loop, every frame decoded : {show('c_naive_loop_clips_per_s')} clips/s")
    print(f"    it used {show('c_cpu_s_per_clip', '.4f')} CPU-s per clip, {show('c_cpu_use', '.3f')} of the cores: "
          f"b/c could be at most bound/c = {show('b_over_c_at_bound', '.3f')}")
    print(f"(c') naive loop, sparse clip reader : {show('c_sparse_naive_loop_clips_per_s')} clips/s")
    print(f"b/a = {show('b_over_a', '.3f')} (target >= 0.9)   b/c = {show('b_over_c', '.3f')} (target >= 2)   "
          f"b/c' = {show('b_over_c_sparse', '.3f')}")
    print(f"decode {show('decode_cpu_s_per_clip', '.4f')} + encode {show('encode_cpu_s_per_clip', '.4f')} CPU-s "
          f"per clip -> bound {results['cores']}/(d+e) = {show('bound_clips_per_s')} clips/s")
    print(f"build / bound = {show('build_over_bound', '.3f')} (target >= 0.75); the build used "
          f"{show('build_cpu_s_per_clip', '.4f')} CPU-s per clip, {show('build_cpu_use', '.3f')} of the cores")
    for i, r in enumerate(results["rounds"], 1):
        print(f"round {i}: load {r['loadavg_before']} -> {r['loadavg_after']}; build phases (s): {r['build_phases_s']}")


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
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; medians with min-max are printed")
    parser.add_argument("--skip-naive", action="store_true", help="leave out (c) and (c') (bound only)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.index.build import available_cores, default_workers, find_videos

    work = Path(tempfile.mkdtemp(prefix="vcl-bench-"))
    generated = f"vcl-bench-{args.num_videos}x{args.seconds:g}s-{args.height}p"
    folder = args.videos or Path(tempfile.gettempdir()) / generated
    if args.videos is None:
        make_videos(folder, args.num_videos, args.seconds, args.height)
    paths = [Path(p) for p in find_videos(folder)]
    model = args.model or default_model(work, args.arch, args.frames, args.crop)
    spec = load_bundle_spec(model)
    workers = args.workers or default_workers()
    cores = available_cores()
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(args, folder, paths, model, spec, workers, cores, work, i))
        print(f"round {i + 1}: {json.dumps(rounds[-1])}", file=sys.stderr, flush=True)  # kept if a later round is cut
    results = {
        "videos": len(paths), "clips_per_video": args.clips, "cores": cores, "build_workers": workers,
        "encoder": f"{spec.arch} {spec.clip.frames_per_clip}x{spec.clip.crop_size}x{spec.clip.crop_size}",
        "model": str(model), "spread": spread(rounds), "rounds": rounds,
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


if __name__ == "__main__":
    main()

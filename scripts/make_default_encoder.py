"""Reproduce the default encoder shipped in vcl_infer/models/ (run: python scripts/make_default_encoder.py).

1. Generate a synthetic motion set (vcl-synth, its own seed) and pretrain the backbone on its
   train split, self-supervised (no labels), with the method and settings the learnability
   ladder shows best (docs/ladder.md). The default, r3d_small_moving_two_stream, is two
   streams trained one after the other and joined: r3d_small over the moving pixels of the
   frames, and r3d_small over their differences (--arch r3d_small, r3d_small_diff, ... train
   one).
2. Export it (vcl-export's pipeline, ONNX Runtime checked against torch) and an untrained
   backbone of the same spec, for comparison.
3. Measure both on sets it never saw (vcl-synth with other seeds, hence other textures and
   actors; background bias 0 and 0.8): linear probe top-1 (vcl_infer.LinearProbe fitted on
   the train split, scored on the test split) and retrieval R@1 / R@5 (test queries train);
   on the real videos of ../shared/videos: a re-encoded copy (half size, crf 35) and a
   2-second cut of each must find their source at rank 1 among all originals; and the CPU
   cost per clip against the encoder installed before (side by side, same process).
4. Write out/default_encoder/results.json; with --install copy the bundle into vcl_infer/models/.

Labels are used only for the evaluation. Everything is seeded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PACKAGED = ROOT / "vcl_infer" / "models" / "default.onnx"
REAL_VIDEOS = ("mmaction2/demo.mp4", "mmaction2/test.avi", "decord/flipping_a_pancake.mkv",
               "torchcodec/var_fps_video.mp4", "torchcodec/h265_10bits.mp4", "moviepy/big_buck_bunny_432_433.webm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "default_encoder")
    p.add_argument("--method", default="simclr")
    # SimCLR's background_merge (FAME's merge, one or both views, beta 0.5 / 0.3) was tried for the
    # bias-0.8 probe and made it worse at this budget (0.375 -> 0.104-0.271; README, "The default encoder").
    p.add_argument("--set", dest="overrides", action="append", default=["reverse_negatives=true", "temperature=0.2", "hue=0.5", "grayscale_p=0.5"],
                   help="KEY=VALUE method hyperparameters (default: the ladder's best settings)")
    # The default is two streams, each SimCLR-trained alone and joined: r3d_small_moving (the frames
    # weighted by how much each pixel changes: what moves, in colour) beside r3d_small_diff (frame
    # differences). Frame differences alone lift the bias-0.8 probe from 0.375 to 0.812 but see no
    # appearance, so a 2-second cut matched other scenes within 0.001-0.013; the full RGB frames as
    # the second stream give the probe the background again (0.521). README, "The default encoder".
    p.add_argument("--arch", default="r3d_small_moving_two_stream",
                   help="Backbone (training.models registry name); a two-stream one trains its streams one after the other.")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--videos-per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=48, help="Training frame side = the bundle's resize and crop.")
    p.add_argument("--seed", type=int, default=1000, help="Seeds the training data and the run.")
    p.add_argument("--eval-seeds", default="2001,2002", help="vcl-synth seeds of the evaluation sets (unseen).")
    p.add_argument("--eval-videos-per-class", type=int, default=20)
    p.add_argument("--eval-clips", type=int, default=4)
    p.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "videos")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--install", action="store_true", help="copy the bundle into vcl_infer/models/")
    p.add_argument("--skip-train", action="store_true", help="reuse the checkpoints already under --out (run/, or run_appearance/ and run_motion/ for two streams)")
    return p.parse_args(argv)


# A two-stream backbone's streams are trained apart, each by the same method and settings as a
# one-stream run, then joined: each stream keeps what it learns alone (the motion stream's
# bias-0.8 probe, the appearance stream's scenes), and the two runs can go side by side.
STREAMS = {"r3d_small_two_stream": {"appearance": "r3d_small", "motion": "r3d_small_diff"},
           "r3d_small_moving_two_stream": {"appearance": "r3d_small_moving", "motion": "r3d_small_diff"}}


def make_training_data(args: argparse.Namespace) -> Path:
    from training.data.synthetic import SynthConfig, generate

    data = args.out / "data"
    if not (data / "synth.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        generate(data, SynthConfig(classes=6, videos_per_class=args.videos_per_class, frames=16, size=args.size,
                                   seed=args.seed), workers=1)
    return data


def train_backbone(args: argparse.Namespace, arch: str, run: Path) -> tuple[Path, float]:
    """Pretrain ``arch`` into ``run``; its checkpoint and the seconds it took (0 when reused)."""
    from training.config import TrainConfig, parse_set
    from training.loop import train

    data = make_training_data(args)
    if args.skip_train and (run / "checkpoint.pt").is_file():
        return run / "checkpoint.pt", 0.0
    shutil.rmtree(run, ignore_errors=True)
    n_train = len((data / "splits" / "trainlist01.txt").read_text().split())  # two fields per line
    steps_per_epoch = max(1, n_train // 2 // args.batch_size)
    config = TrainConfig(method=args.method, data=str(data), arch=arch, out=str(run),
                         epochs=-(-args.steps // steps_per_epoch), batch_size=args.batch_size, workers=0,
                         seed=args.seed, device="cpu", frames=8, frame_step=2, crop=args.size, resize=args.size,
                         max_steps=args.steps, keep_epochs=False, log_every=20, warmup_epochs=1.0,
                         cache_frames=True, optimizer=args.optimizer, lr=args.lr,
                         method_args={"queue_size": 128, "momentum": 0.99} | parse_set(args.overrides)
                         if args.method in ("moco", "fame") else parse_set(args.overrides))
    started = time.perf_counter()
    result = train(config, progress=True)
    return Path(result.checkpoint), time.perf_counter() - started


def stream_runs(args: argparse.Namespace) -> dict[str, tuple[str, Path]]:
    """``{stream: (arch, run folder)}``; a one-stream backbone is the single stream ``""``."""
    streams = STREAMS.get(args.arch, {"": args.arch})
    return {name: (arch, args.out / (f"run_{name}" if name else "run")) for name, arch in streams.items()}


def train_encoder(args: argparse.Namespace) -> tuple[dict[str, Path], float]:
    """Each stream's checkpoint, and the training seconds of all of them."""
    checkpoints, seconds = {}, 0.0
    for name, (arch, run) in stream_runs(args).items():
        checkpoints[name], took = train_backbone(args, arch, run)
        seconds += took
    return checkpoints, seconds


def trained_backbone(args: argparse.Namespace, checkpoints: dict[str, Path]):
    """``args.arch`` with each stream's trained weights, and the clip spec they were trained on."""
    from training.checkpoint import load_checkpoint
    from training.models import create_backbone
    from vcl_infer.clips.spec import ClipSpec

    model = create_backbone(args.arch)
    clips = set()
    for name, path in checkpoints.items():
        ckpt = load_checkpoint(path)
        (getattr(model, name) if name else model).load_state_dict(ckpt["model"])
        clips.add(json.dumps(ckpt["clip_spec"], sort_keys=True))
    if len(clips) != 1:
        raise SystemExit(f"the streams were trained on different clips: {sorted(clips)}")
    return model, ClipSpec.from_dict(json.loads(clips.pop()))


def export(checkpoints: dict[str, Path], args: argparse.Namespace) -> tuple[Path, Path]:
    import torch

    from export.pipeline import export_bundle
    from training.models import create_backbone
    from vcl_infer.clips.spec import EncoderSpec

    trained, clip = trained_backbone(args, checkpoints)
    verify = sorted((args.out / "data" / "videos").rglob("*.mp4"))[:2]
    bundle = args.out / "default.onnx"
    export_bundle(trained, EncoderSpec(arch=args.arch, embed_dim=trained.embed_dim, clip=clip, method=args.method,
                                       trained=True), bundle, verify_videos=verify)
    torch.manual_seed(args.seed)
    untrained = create_backbone(args.arch)
    baseline = args.out / "untrained.onnx"
    export_bundle(untrained, EncoderSpec(arch=args.arch, embed_dim=untrained.embed_dim, clip=clip), baseline)
    return bundle, baseline


def embed(bundle: Path, paths: list[str], clips: int, threads: int) -> tuple[np.ndarray, list[int]]:
    from vcl_infer import Embedder

    embedder = Embedder.load(bundle, threads=threads)
    vectors, kept = [], []
    for i, (_, vector) in enumerate(embedder.embed_videos(paths, num_clips=clips, workers=1)):
        if isinstance(vector, np.ndarray):
            vectors.append(vector)
            kept.append(i)
    return np.stack(vectors), kept


def synthetic_scores(bundles: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    from training.data.layouts import load_layout
    from training.data.synthetic import SynthConfig, generate
    from vcl_infer import LinearProbe, recall_at_k

    out: dict = {}
    for seed, bias in zip([int(s) for s in args.eval_seeds.split(",")], (0.0, 0.8)):
        data = work / f"eval_seed{seed}_bias{bias}"
        generate(data, SynthConfig(classes=6, videos_per_class=args.eval_videos_per_class, frames=16, size=64,
                                   background_bias=bias, seed=seed), workers=1)
        train_items, _ = load_layout(data, subset="train")
        test_items, _ = load_layout(data, subset="test")
        for name, bundle in bundles.items():
            xtr, ktr = embed(bundle, [i.path for i in train_items], args.eval_clips, args.threads)
            xte, kte = embed(bundle, [i.path for i in test_items], args.eval_clips, args.threads)
            ytr = np.array([train_items[i].label for i in ktr])
            yte = np.array([test_items[i].label for i in kte])
            recall = recall_at_k(xte, yte, xtr, ytr, ks=(1, 5))
            probe = LinearProbe().fit(xtr, ytr)
            out.setdefault(name, {})[f"seed{seed}_bias{bias}"] = {
                "linear_probe_top1": float(probe.score(xte, yte)), "R@1": recall[1], "R@5": recall[5],
                "chance": 1 / 6, "train_videos": len(ytr), "test_videos": len(yte)}
    return out


def make_queries(videos: Path, work: Path) -> tuple[list[str], list[tuple[str, int, str]]]:
    """The readable real videos, and per video a re-encode (half size, crf 35) and a 2-s cut."""
    import av

    sources, queries = [], []
    for rel in REAL_VIDEOS:
        src = videos / rel
        if not src.is_file():
            continue
        try:
            frames, rate = _decode_all(src)
        except Exception as exc:  # noqa: BLE001 - an unreadable sample video is skipped, named
            print(f"skipping {rel}: {exc}")
            continue
        index = len(sources)
        sources.append(str(src))
        half = [f.reformat(width=max(2, f.width // 2 // 2 * 2), height=max(2, f.height // 2 // 2 * 2)) for f in frames]
        recoded = work / f"recoded_{index}.mp4"
        _encode(half, recoded, rate, crf=35)
        queries.append((str(recoded), index, "re-encoded half size crf 35"))
        n = len(frames)
        cut_len = min(n, int(round(2 * rate)))
        start = max(0, (n - cut_len) // 2)
        cut = work / f"cut_{index}.mp4"
        _encode(frames[start : start + cut_len], cut, rate, crf=23)
        queries.append((str(cut), index, f"2 s cut (frames {start}-{start + cut_len - 1})"))
    del av
    return sources, queries


def _decode_all(path: Path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        frames = [f.reformat(format="yuv420p", width=f.width // 2 * 2, height=f.height // 2 * 2)
                  for f in container.decode(stream)]
    if len(frames) < 2:
        raise ValueError(f"{len(frames)} frame(s)")
    return frames, rate


def _encode(frames, path: Path, rate: float, crf: int) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1000))
        stream.width, stream.height = frames[0].width, frames[0].height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def real_video_scores(bundles: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    sources, queries = make_queries(args.videos, work)
    if not sources:
        return {"skipped": f"no real videos under {args.videos}"}
    out: dict = {}
    for name, bundle in bundles.items():
        gallery, kept = embed(bundle, sources, 8, args.threads)
        qv, qkept = embed(bundle, [q[0] for q in queries], 8, args.threads)
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        qv = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        rows = []
        for row, qi in zip(qv, qkept):
            path, source, kind = queries[qi]
            order = [kept[j] for j in np.argsort(-(gallery @ row))]
            rows.append({"query": kind, "source": Path(sources[source]).name, "rank": order.index(source) + 1})
        out[name] = {"queries": rows, "rank1": sum(r["rank"] == 1 for r in rows), "total": len(rows),
                     "gallery": len(kept)}
    return out


def cpu_cost(bundles: dict[str, Path], args: argparse.Namespace, rounds: int = 5) -> dict:
    """Seconds per clip of each bundle, measured interleaved in one process (load is shared)."""
    from vcl_infer import Embedder

    embedders = {name: Embedder.load(path, threads=args.threads) for name, path in bundles.items()}
    times: dict[str, list[float]] = {name: [] for name in bundles}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for name, e in embedders.items():
            x = rng.standard_normal((16, *e.spec.clip.input_shape)).astype(np.float32)
            e.embed_clips(x[:2])
            t = time.perf_counter()
            e.embed_clips(x)
            times[name].append((time.perf_counter() - t) / 16)
    return {name: {"median_s_per_clip": float(np.median(v)), "min_s_per_clip": float(np.min(v)),
                   "input_shape": list(embedders[name].spec.clip.input_shape)} for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "previous_default.onnx"
    if PACKAGED.is_file() and not previous.is_file():
        for suffix in (".onnx", ".json", ".verify.json"):
            shutil.copy(str(PACKAGED.with_suffix(suffix)), str(previous.with_suffix(suffix)))
    checkpoints, train_seconds = train_encoder(args)
    bundle, baseline = export(checkpoints, args)
    bundles = {"trained": bundle, "untrained": baseline}
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = synthetic_scores(bundles, args, Path(tmp))
        real = real_video_scores(bundles, args, Path(tmp))
    cost = cpu_cost({"new default": bundle, "previous default": previous} if previous.is_file() else {"new default": bundle},
                    args)
    if "previous default" in cost:
        cost["ratio_new_over_previous"] = cost["new default"]["median_s_per_clip"] / cost["previous default"]["median_s_per_clip"]
    first = next(iter(synthetic["trained"]))
    results = {
        "method": args.method, "overrides": args.overrides, "optimizer": args.optimizer, "lr": args.lr,
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "train_seconds": round(train_seconds, 1),
        "data": {"classes": 6, "videos_per_class": args.videos_per_class, "frames": 16, "size": args.size},
        "command": "python scripts/make_default_encoder.py " + " ".join(sys.argv[1:] if argv is None else argv),
        # the summary rows README and tests read: the first unseen set
        "trained": synthetic["trained"][first], "untrained": synthetic["untrained"][first],
        "unseen_sets": synthetic, "real_videos": real, "cpu_cost": cost,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if args.install:
        for suffix in (".onnx", ".json", ".verify.json"):
            shutil.copy(str(bundle.with_suffix(suffix)), str(PACKAGED.with_suffix(suffix)))
        PACKAGED.with_name("default.results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"installed {PACKAGED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

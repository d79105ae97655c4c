"""int8 vs fp32 encoder bundles: speed, size and fidelity, measured side by side in one run.

For each model (see ``--models`` below):

1. the fp32 bundle is exported (or taken as shipped) and quantized with ``vcl-export --int8``'s
   code path (``export.quantize.quantize_bundle``), calibrated on clips of the real videos in
   ``../shared/videos/{mmaction2,decord}``;
2. speed: ONNX Runtime CPU sessions of both models encode the same batch, alternating
   fp32/int8 for ``--rounds`` rounds (so load drifts hit both); the ratio is taken per round
   and reported as median with min-max, with the load average before and after;
3. fidelity: min / mean cosine and max abs error of int8 vs fp32 on held-out clips (the export's
   own check), and R@1 of both on a generated labelled motion set (``vcl-synth``).

Trained encoders (``--models default,supervised``, the default): the packaged default encoder
(``r3d_small``, self-supervised) and an ``r3d_18`` trained here with labels for a few minutes on a
vcl-synth set (seed 1000, 48 px); both are quantized from their fp32 ONNX bundle, and R@1 is
measured with the test split of an unseen vcl-synth set (seed 2001: other textures and actors)
as queries against its train split as the gallery, fp32 and int8 on the same decoded clips.
``r2plus1d_18`` (untrained) is the speed target of issue 15, with leave-one-out R@1 only.

Goal (issue 15): >= 1.5x faster, <= 1 point R@1 loss. Usage::

    PYTHONPATH=$PWD python benchmarks/int8.py [--models default,supervised,r2plus1d_18] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
HELD_OUT = VIDEOS / "decord" / "flipping_a_pancake.mkv"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _calibration_dir(tmp: Path) -> Path:
    """The real action clips, linked into one folder (the broken test files are left out)."""
    folder = tmp / "calibration"
    folder.mkdir()
    for rel in ("mmaction2/demo.mp4", "mmaction2/test.avi", "moviepy/big_buck_bunny_432_433.webm"):
        (folder / Path(rel).name).write_bytes((VIDEOS / rel).read_bytes())
    return folder


def _labelled_set(tmp: Path, size: int, frames: int, classes: int, per_class: int) -> Path:
    out = tmp / f"synth{size}"
    subprocess.run([sys.executable, "-m", "training.synth_cli", str(out), "--classes", str(classes),
                    "--videos-per-class", str(per_class), "--frames", str(frames), "--size", str(size)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out / "videos"


def _time(encoders: dict, batch: np.ndarray, rounds: int) -> dict:
    for encode in encoders.values():  # warm up: first runs allocate and pick kernels
        encode(batch)
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode(batch)
            seconds[name].append(time.perf_counter() - start)
    ratios = [f / i for f, i in zip(seconds["fp32"], seconds["int8"])]
    return {
        "clips_per_s": {n: len(batch) / statistics.median(s) for n, s in seconds.items()},
        "median_s": {n: statistics.median(s) for n, s in seconds.items()},
        "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
    }


def measure(name: str, fp32: Path, tmp: Path, calibration: Path, labelled: Path, args) -> dict:
    from export.quantize import labelled_recall, quantize_bundle
    from vcl_infer.encode.bundle import load_bundle_spec

    int8 = tmp / f"{name}.int8.onnx"
    started = time.perf_counter()
    result = quantize_bundle(fp32, int8, calibration, verify_videos=[HELD_OUT], clips_per_video=4,
                             calibration_clips_per_video=args.calibration_clips)
    quantize_s = time.perf_counter() - started
    spec = load_bundle_spec(fp32)
    batch = np.random.default_rng(0).standard_normal((args.batch, *spec.clip.input_shape)).astype(np.float32)
    load_before = os.getloadavg()
    speed = _time({"fp32": _session(fp32, args.threads), "int8": _session(int8, args.threads)}, batch, args.rounds)
    load_after = os.getloadavg()
    recall = labelled_recall(fp32, int8, labelled, spec, clips_per_video=args.recall_clips)
    return {
        "model": name, "arch": spec.arch, "trained": spec.trained, "input": list(spec.clip.input_shape),
        "batch": args.batch, "threads": args.threads, "rounds": args.rounds, **speed,
        "size_mb": {"fp32": fp32.stat().st_size / 1e6, "int8": int8.stat().st_size / 1e6},
        "calibration": result.spec.quantization["calibration"], "quantize_s": quantize_s,
        "fidelity": result.spec.quantization["fidelity_vs_fp32"], "retrieval": recall,
        "loadavg_1m": {"before": load_before[0], "after": load_after[0]}, "cpus": os.cpu_count(),
    }


def _export_r2plus1d(tmp: Path) -> Path:
    import torch

    from export.pipeline import export_bundle
    from training.models import create_backbone
    from training.models.defaults import default_clip_spec
    from vcl_infer.clips.spec import EncoderSpec

    torch.manual_seed(0)
    backbone = create_backbone("r2plus1d_18")
    spec = EncoderSpec(arch="r2plus1d_18", embed_dim=int(backbone.embed_dim), clip=default_clip_spec("r2plus1d_18"))
    return export_bundle(backbone, spec, tmp / "r2plus1d_18.onnx").paths.onnx


def train_supervised(tmp: Path, args) -> tuple[Path, float]:
    """A small ``--train-arch`` trained with labels for ``--train-steps`` steps on a vcl-synth set
    (seed 1000, 48 px), exported as a verified fp32 bundle; returns it and the training seconds."""
    from export.pipeline import export_bundle
    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig
    from training.data.synthetic import SynthConfig, generate
    from training.loop import train
    from training.models import create_backbone
    from vcl_infer.clips.spec import ClipSpec, EncoderSpec

    data = tmp / "train_set"
    generate(data, SynthConfig(classes=6, videos_per_class=args.train_videos_per_class, frames=16, size=48,
                               seed=1000), workers=1)
    config = TrainConfig(method="supervised", data=str(data), arch=args.train_arch, out=str(tmp / "run"),
                         epochs=1000, batch_size=8, workers=0, seed=1000, device="cpu", amp=False, frames=8,
                         frame_step=2, crop=48, resize=48, max_steps=args.train_steps, keep_epochs=False,
                         log_every=20, cache_frames=True, optimizer="adam", lr=1e-3)
    started = time.perf_counter()
    result = train(config, progress=False)
    train_s = time.perf_counter() - started
    ckpt = load_checkpoint(result.checkpoint)
    backbone = create_backbone(args.train_arch)
    backbone.load_state_dict(ckpt["model"])
    spec = EncoderSpec(arch=args.train_arch, embed_dim=int(backbone.embed_dim),
                       clip=ClipSpec.from_dict(ckpt["clip_spec"]), method="supervised", trained=True)
    verify = sorted((data / "videos").rglob("*.mp4"))[:2]
    return export_bundle(backbone, spec, tmp / f"{args.train_arch}_supervised.onnx", verify_videos=verify).paths.onnx, train_s


def split_recall(fp32: Path, int8: Path, data: Path, clips: int) -> dict:
    """R@1 / R@5 of fp32 and int8 with the test split's videos as queries and the train split's
    as the gallery (a vcl-synth set the encoder never saw), on the same decoded clips."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.pooling import pool_clips
    from vcl_infer.probe.labels import load_layout
    from vcl_infer.probe.retrieval_metrics import recall_at_k
    from vcl_infer.video.isolated import DecodePool

    spec = load_bundle_spec(fp32)
    encoders = {"fp32": _session(fp32, 2), "int8": _session(int8, 2)}
    out: dict = {}
    vectors: dict = {}
    for subset in ("train", "test"):
        items, _ = load_layout(data, subset=subset)
        rows: dict[str, list] = {"fp32": [], "int8": []}
        labels = []
        with DecodePool(workers=1) as pool:
            for item, decoded in zip(items, pool.imap([(i.path, spec.clip, clips) for i in items])):
                if not hasattr(decoded, "clips"):
                    continue
                batch = to_model_input(decoded.clips, spec.clip)
                for kind, encode in encoders.items():
                    rows[kind].append(pool_clips(encode(batch)))
                labels.append(item.label)
        vectors[subset] = ({k: np.stack(v) for k, v in rows.items()}, np.asarray(labels))
    (train_x, train_y), (test_x, test_y) = vectors["train"], vectors["test"]
    for kind in ("fp32", "int8"):
        recall = recall_at_k(test_x[kind], test_y, train_x[kind], train_y, ks=(1, 5))
        out[f"{kind}_R@1"], out[f"{kind}_R@5"] = recall[1], recall[5]
    out["R@1_drop_points"] = 100.0 * (out["fp32_R@1"] - out["int8_R@1"])
    out.update(queries=len(test_y), gallery=len(train_y), classes=int(len(set(train_y.tolist()))),
               clips_per_video=clips, chance=1.0 / max(1, len(set(train_y.tolist()))))
    return out


def _eval_set(tmp: Path, seed: int, per_class: int) -> Path:
    """An unseen vcl-synth set (other seed: other textures and actors), 64 px like the default encoder's evaluation."""
    from training.data.synthetic import SynthConfig, generate

    out = tmp / f"eval_seed{seed}"
    generate(out, SynthConfig(classes=6, videos_per_class=per_class, frames=16, size=64, seed=seed), workers=1)
    return out


def measure_trained(name: str, fp32: Path, tmp: Path, calibration: Path, eval_set: Path, args,
                    train_s: float | None) -> dict:
    """Quantize a trained bundle and measure speed, fidelity and test-vs-train R@1 of both."""
    from export.quantize import quantize_bundle
    from vcl_infer.encode.bundle import load_bundle_spec

    int8 = tmp / f"{name}.int8.onnx"
    result = quantize_bundle(fp32, int8, calibration, verify_videos=[HELD_OUT], clips_per_video=4,
                             calibration_clips_per_video=args.calibration_clips)
    spec = load_bundle_spec(fp32)
    batch = np.random.default_rng(0).standard_normal((args.batch, *spec.clip.input_shape)).astype(np.float32)
    load_before = os.getloadavg()
    speed = _time({"fp32": _session(fp32, args.threads), "int8": _session(int8, args.threads)}, batch, args.rounds)
    load_after = os.getloadavg()
    recall = split_recall(fp32, int8, eval_set, args.recall_clips)
    return {
        "model": name, "arch": spec.arch, "trained": spec.trained, "method": spec.method,
        "input": list(spec.clip.input_shape), "train_seconds": train_s,
        "batch": args.batch, "threads": args.threads, "rounds": args.rounds, **speed,
        "size_mb": {"fp32": fp32.stat().st_size / 1e6, "int8": int8.stat().st_size / 1e6},
        "calibration": result.spec.quantization["calibration"],
        "fidelity": result.spec.quantization["fidelity_vs_fp32"], "retrieval_test_vs_train": recall,
        "eval_set": {"seed": args.eval_seed, "videos_per_class": args.eval_per_class},
        "loadavg_1m": {"before": load_before[0], "after": load_after[0]}, "cpus": os.cpu_count(),
    }


def _print(record: dict) -> None:
    f, i = record["clips_per_s"]["fp32"], record["clips_per_s"]["int8"]
    held = record["fidelity"]["held_out"]
    r = record.get("retrieval") or record["retrieval_test_vs_train"]
    print(f"## {record['model']} ({record['arch']}, input {record['input']}, trained={record['trained']})")
    print(f"- speed, batch {record['batch']}, {record['threads']} threads, {record['rounds']} alternating rounds: "
          f"fp32 {f:.2f} clips/s, int8 {i:.2f} clips/s -> {record['speedup_median']:.2f}x "
          f"(min {record['speedup_min']:.2f}, max {record['speedup_max']:.2f})")
    print(f"- size: fp32 {record['size_mb']['fp32']:.1f} MB, int8 {record['size_mb']['int8']:.1f} MB "
          f"({record['size_mb']['fp32'] / record['size_mb']['int8']:.2f}x smaller)")
    print(f"- fidelity on {held['clips']} held-out clips: min cosine {held['min_cosine']:.5f}, mean "
          f"{held['mean_cosine']:.5f}, max abs error {held['max_abs_error']:.4f}; calibration "
          f"{record['calibration']['clips']} clips from {record['calibration']['videos']} videos")
    if "queries" in r:
        print(f"- R@1 (unseen vcl-synth seed {record['eval_set']['seed']}: {r['queries']} test queries, "
              f"{r['gallery']} train gallery, {r['classes']} classes, chance {r['chance']:.3f}): "
              f"fp32 {r['fp32_R@1']:.3f}, int8 {r['int8_R@1']:.3f}, drop {r['R@1_drop_points']:.1f} points "
              f"(R@5 {r['fp32_R@5']:.3f} / {r['int8_R@5']:.3f})")
    else:
        print(f"- R@1 (leave-one-out, {r['videos']} videos, {r['classes']} classes): fp32 {r['fp32_R@1']:.3f}, "
              f"int8 {r['int8_R@1']:.3f}, drop {r['R@1_drop_points']:.1f} points")
    if record.get("train_seconds"):
        print(f"- trained here: supervised, {record['train_seconds']:.0f} s")
    print(f"- load average (1 min) {record['loadavg_1m']['before']:.2f} -> {record['loadavg_1m']['after']:.2f} "
          f"on {record['cpus']} CPUs")


MODELS = ("default", "supervised", "r2plus1d_18")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-clips", type=int, default=4, help="clips per calibration video")
    parser.add_argument("--recall-clips", type=int, default=2, help="clips per labelled video for R@1")
    parser.add_argument("--per-class", type=int, default=6, help="r2plus1d_18: labelled videos per class (6 classes)")
    parser.add_argument("--eval-seed", type=int, default=2001, help="vcl-synth seed of the unseen evaluation set")
    parser.add_argument("--eval-per-class", type=int, default=20, help="evaluation videos per class (train + test)")
    parser.add_argument("--train-arch", default="r3d_18", help="backbone trained with labels for 'supervised'")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--train-videos-per-class", type=int, default=30)
    parser.add_argument("--models", default="default,supervised",
                        help=f"comma-separated, of {', '.join(MODELS)} (r2plus1d_18: untrained, speed target)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE

    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {MODELS}")
    records = []
    with tempfile.TemporaryDirectory(prefix="vcl-int8-bench-") as name:
        tmp = Path(name)
        calibration = _calibration_dir(tmp)
        eval_set = _eval_set(tmp, args.eval_seed, args.eval_per_class) if set(wanted) & {"default", "supervised"} else None
        for model in wanted:
            if model == "default":
                records.append(measure_trained("default", DEFAULT_BUNDLE, tmp, calibration, eval_set, args, None))
            elif model == "supervised":
                bundle, train_s = train_supervised(tmp, args)
                records.append(measure_trained(f"{args.train_arch}_supervised", bundle, tmp, calibration, eval_set,
                                               args, train_s))
            else:
                labelled = _labelled_set(tmp, 128, 32, 6, args.per_class)
                records.append(measure("r2plus1d_18", _export_r2plus1d(tmp), tmp, calibration, labelled, args))
    if args.json:
        print(json.dumps(records, indent=2))
        return
    for record in records:
        _print(record)


if __name__ == "__main__":
    main()

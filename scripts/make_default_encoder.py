"""Reproduce the default encoder shipped in vcl_infer/models/ (run: python scripts/make_default_encoder.py).

1. Generate a synthetic motion data set with vcl-synth (fixed seed).
2. Pretrain r3d_small with a contrastive method with vcl-train on its train split (no labels).
3. Export it with vcl-export's pipeline to vcl_infer/models/default.onnx (+ sidecar).
4. Measure it against the same backbone untrained: retrieval R@1/R@5 (test split queries
   the train split, hit when a top-k video shares the class) and linear-probe accuracy
   (fit on train embeddings, scored on test), written to out/default_encoder/results.json.

Everything is seeded; the training budget is bounded by --epochs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "vcl_infer" / "models" / "default.onnx"


def tool(name: str) -> str:
    """A console script of this environment (make runs us without the venv on PATH)."""
    return str(Path(sys.executable).parent / name)


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def embed_split(bundle: Path, items, num_clips: int):
    from vcl_infer import Embedder

    embedder = Embedder.load(bundle)
    vectors, labels = [], []
    for item, (_, vector) in zip(items, embedder.embed_videos([i.path for i in items], num_clips=num_clips)):
        if isinstance(vector, np.ndarray):
            vectors.append(vector)
            labels.append(item.label)
    return np.stack(vectors), np.asarray(labels)


def evaluate(bundle: Path, data: Path, num_clips: int) -> dict:
    from training.data.layouts import load_layout
    from vcl_infer import LinearProbe, recall_at_k

    train_items, _ = load_layout(data, subset="train")
    test_items, _ = load_layout(data, subset="test")
    train_x, train_y = embed_split(bundle, train_items, num_clips)
    test_x, test_y = embed_split(bundle, test_items, num_clips)
    recall = recall_at_k(test_x, test_y, train_x, train_y, ks=(1, 5))
    probe = LinearProbe().fit(train_x, train_y)
    return {"R@1": recall[1], "R@5": recall[5], "linear_probe_top1": probe.score(test_x, test_y),
            "train_videos": len(train_y), "test_videos": len(test_y)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "default_encoder")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--videos-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-clips", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="KEY=VALUE passed to vcl-train --set (method hyperparameters)")
    parser.add_argument("--install", action="store_true", help="copy the bundle into vcl_infer/models/")
    args = parser.parse_args()

    import torch

    from export.pipeline import export_bundle
    from training.checkpoint import load_checkpoint
    from training.models import create_backbone
    from vcl_infer.spec import ClipSpec, EncoderSpec

    data, run_dir = args.out / "data", args.out / "run"
    if not (data / "synth.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        run(tool("vcl-synth"), str(data), "--classes", str(args.classes), "--videos-per-class", str(args.videos_per_class),
            "--frames", "32", "--size", "64", "--seed", str(args.seed))
    started = time.perf_counter()
    train = [tool("vcl-train"), "--method", args.method, "--data", str(data), "--arch", "r3d_small", "--out", str(run_dir),
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--workers", "1"]
    if args.lr is not None:
        train += ["--lr", str(args.lr)]
    for override in args.overrides:
        train += ["--set", override]
    shutil.rmtree(run_dir, ignore_errors=True)
    run(*train)
    train_seconds = time.perf_counter() - started

    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    clip = ClipSpec.from_dict(checkpoint["clip_spec"])
    verify = sorted((data / "videos").rglob("*.mp4"))[:2]
    trained = create_backbone("r3d_small")
    trained.load_state_dict(checkpoint["model"])
    bundle = args.out / "default.onnx"
    export_bundle(trained, EncoderSpec(arch="r3d_small", embed_dim=trained.embed_dim, clip=clip,
                                       method=args.method, trained=True), bundle, verify_videos=verify)
    torch.manual_seed(args.seed)
    untrained = create_backbone("r3d_small")
    baseline = args.out / "untrained.onnx"
    export_bundle(untrained, EncoderSpec(arch="r3d_small", embed_dim=untrained.embed_dim, clip=clip), baseline)

    results = {
        "method": args.method, "overrides": args.overrides, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "train_seconds": round(train_seconds, 1), "clip_spec": clip.to_dict(),
        "data": {"classes": args.classes, "videos_per_class": args.videos_per_class, "frames": 32, "size": 64},
        "trained": evaluate(bundle, data, args.eval_clips),
        "untrained": evaluate(baseline, data, args.eval_clips),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print("\n| encoder | R@1 | R@5 | linear probe top-1 |\n|---|---|---|---|")
    for name in ("untrained", "trained"):
        r = results[name]
        print(f"| r3d_small {name} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['linear_probe_top1']:.3f} |")
    if args.install:
        PACKAGED.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".onnx", ".json", ".verify.json"):
            shutil.copy(bundle.with_suffix("").as_posix() + suffix, PACKAGED.with_suffix("").as_posix() + suffix)
        (PACKAGED.parent / "default.results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"installed {PACKAGED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

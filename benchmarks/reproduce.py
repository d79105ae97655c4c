"""Reproduce the papers' claims on a small synthetic set with a background shortcut.

Generates a synthetic action set (:mod:`training.data.synthetic`) whose train-split
backgrounds predict the class with probability ``--background-bias`` while test
backgrounds are random, pretrains the same small backbone with ``simclr``, ``tclr`` and
``fame`` under one fixed budget (the same number of optimiser steps and batch size for
each), keeps an untrained backbone as the baseline, and reports for each: linear-probe
top-1 (frozen backbone, :mod:`training.linear_eval`) and retrieval R@1 / R@5 (test queries
the train split, TCLR/FAME protocol) with 1 clip and with ``--clips`` clips per video.

Claims checked (TCLR, Dave et al. 2022; FAME, Ding et al. 2022):
  1. any pretraining beats none (linear top-1 and R@1);
  2. TCLR beats instance contrast (SimCLR) in retrieval (R@1, ``--clips`` clips);
  3. TCLR gains more from more clips than SimCLR (R@1 gain from 1 to ``--clips`` clips);
  4. FAME beats instance contrast when backgrounds mislead (linear top-1 and R@1).

Usage::

    python benchmarks/reproduce.py --out runs/reproduce            # ~15-25 min on 2 shared cores
    python benchmarks/reproduce.py --out /tmp/r --smoke            # seconds: plumbing only

CPU only by default; numbers at this budget are small-sample evidence, not the papers'.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("untrained", "simclr", "tclr", "fame")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="Work folder (data, runs, results).")
    p.add_argument("--steps", type=int, default=40, help="Optimiser steps per method (the budget).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=24)
    p.add_argument("--video-frames", type=int, default=48, help="Frames per generated video.")
    p.add_argument("--size", type=int, default=48, help="Frame side of the generated videos.")
    p.add_argument("--background-bias", type=float, default=0.8)
    p.add_argument("--frames", type=int, default=8, help="Frames per clip.")
    p.add_argument("--frame-step", type=int, default=2)
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--clips", type=int, default=5, help="Clips per video for the multi-clip evaluation.")
    p.add_argument("--seed", type=int, default=0, help="Seeds the data, every pretraining and the probes.")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--smoke", action="store_true", help="2 steps, tiny data: checks the plumbing only.")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.classes, args.videos_per_class = 2, 4, 2, 8
        args.video_frames, args.size, args.frames, args.crop, args.clips = 20, 32, 4, 32, 2
    return args


def pretrain(method: str, data: Path, out: Path, args: argparse.Namespace) -> tuple[Path, float]:
    from training.config import TrainConfig
    from training.loop import train

    n_train = sum(1 for _ in (data / "splits" / "trainlist01.txt").read_text().splitlines() if _.strip())
    steps_per_epoch = max(1, n_train // args.batch_size)
    epochs = -(-args.steps // steps_per_epoch)
    method_args = {"queue_size": 4 * args.batch_size} if method == "fame" else {}
    config = TrainConfig(method=method, data=str(data), arch="r3d_small", out=str(out / method), epochs=epochs,
                         batch_size=args.batch_size, workers=args.workers, seed=args.seed, device="cpu",
                         frames=args.frames, frame_step=args.frame_step, crop=args.crop, max_steps=args.steps,
                         keep_epochs=False, log_every=max(1, args.steps // 20), method_args=method_args,
                         warmup_epochs=0.0)
    t0 = time.perf_counter()
    result = train(config, progress=False)
    if result.global_step != args.steps:
        raise RuntimeError(f"{method}: ran {result.global_step} steps, budget {args.steps}")
    return Path(result.checkpoint), time.perf_counter() - t0


def evaluate(backbone: torch.nn.Module, spec, data: Path, args: argparse.Namespace) -> dict:
    from training.data.layouts import load_layout
    from training.linear_eval import LinearEvalConfig, evaluate_backbone
    from vcl_infer.retrieval_metrics import recall_at_k

    train_items, classes = load_layout(data, subset="train")
    test_items, _ = load_layout(data, subset="test")
    cfg = LinearEvalConfig(train_clips=args.clips, test_clips=args.clips, epochs=100, seed=args.seed)
    res = evaluate_backbone(backbone, spec, train_items, test_items, len(classes), cfg)
    f = res.pop("features")
    row = {"linear top1": res["top1"], "linear top1 (1 clip)": res["top1_1clip"]}
    centre = args.clips // 2
    for name, (q, g) in {
        "1 clip": (f["test"][:, centre], f["train"][:, centre]),
        f"{args.clips} clips": (f["test"].mean(1), f["train"].mean(1)),  # TCLR: mean of clip features, then L2
    }.items():
        r = recall_at_k(q, f["test_labels"], g, f["train_labels"], ks=(1, 5))
        row[f"R@1 ({name})"], row[f"R@5 ({name})"] = r[1], r[5]
    return row


def claims(rows: dict[str, dict], args: argparse.Namespace) -> list[tuple[str, bool | None, str]]:
    many = f"{args.clips} clips"

    def get(m: str, k: str) -> float | None:
        return rows.get(m, {}).get(k)

    out: list[tuple[str, bool | None, str]] = []
    base_lin, base_r1 = get("untrained", "linear top1"), get("untrained", f"R@1 ({many})")
    for m in ("simclr", "tclr", "fame"):
        if m in rows and base_lin is not None:
            ok = rows[m]["linear top1"] > base_lin and rows[m][f"R@1 ({many})"] > base_r1
            out.append((f"{m} pretraining beats none (linear top-1 and R@1)", ok,
                        f"top-1 {100 * rows[m]['linear top1']:.1f} vs {100 * base_lin:.1f}, "
                        f"R@1 {100 * rows[m][f'R@1 ({many})']:.1f} vs {100 * base_r1:.1f}"))
    if "tclr" in rows and "simclr" in rows:
        t, s = rows["tclr"], rows["simclr"]
        out.append(("TCLR beats SimCLR in retrieval (R@1)", t[f"R@1 ({many})"] > s[f"R@1 ({many})"],
                    f"{100 * t[f'R@1 ({many})']:.1f} vs {100 * s[f'R@1 ({many})']:.1f}"))
        gt = t[f"R@1 ({many})"] - t["R@1 (1 clip)"]
        gs = s[f"R@1 ({many})"] - s["R@1 (1 clip)"]
        out.append((f"TCLR gains more R@1 from 1 to {args.clips} clips than SimCLR", gt > gs,
                    f"{100 * gt:+.1f} vs {100 * gs:+.1f} points"))
    if "fame" in rows and "simclr" in rows:
        f, s = rows["fame"], rows["simclr"]
        ok = f["linear top1"] > s["linear top1"] and f[f"R@1 ({many})"] > s[f"R@1 ({many})"]
        out.append((f"FAME beats SimCLR with misleading backgrounds (bias {args.background_bias})", ok,
                    f"top-1 {100 * f['linear top1']:.1f} vs {100 * s['linear top1']:.1f}, "
                    f"R@1 {100 * f[f'R@1 ({many})']:.1f} vs {100 * s[f'R@1 ({many})']:.1f}"))
    return out


def main(argv: list[str] | None = None) -> dict:
    from training.data.synthetic import SynthConfig, generate
    from training.linear_eval import decoder_versions, load_backbone, resolve_spec, results_markdown

    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    synth = SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class, frames=args.video_frames,
                        size=args.size, background_bias=args.background_bias, seed=args.seed)
    if not (data / "synth.json").is_file() or json.loads((data / "synth.json").read_text())["config"] != synth.__dict__:
        generate(data, synth, workers=1)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows: dict[str, dict] = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "untrained":
            backbone, spec, _ = load_backbone(None, arch="r3d_small", seed=args.seed)
            seconds = 0.0
        else:
            ckpt, seconds = pretrain(m, data, out / "runs", args)
            backbone, spec, _ = load_backbone(ckpt)
        spec = resolve_spec(spec, frames=args.frames, frame_step=args.frame_step, crop=args.crop, resize=args.crop)
        rows[m] = {"method": m, **evaluate(backbone, spec, data, args), "pretrain s": round(seconds, 1)}
        print(f"{m}: {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[m].items()})} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)

    columns = ["method", "linear top1", "linear top1 (1 clip)", "R@1 (1 clip)", "R@5 (1 clip)",
               f"R@1 ({args.clips} clips)", f"R@5 ({args.clips} clips)", "pretrain s"]
    verdicts = claims(rows, args)
    header = (f"Synthetic set: {args.classes} classes x {args.videos_per_class} videos, {args.video_frames} frames at "
              f"{args.size}px, background bias {args.background_bias} (train only); backbone r3d_small; clips "
              f"{args.frames} frames, step {args.frame_step}, crop {args.crop}.\n"
              f"Budget: {args.steps} optimiser steps x batch {args.batch_size} per method, CPU "
              f"({torch.get_num_threads()} threads). Seed {args.seed} (data, pretraining, probes). "
              f"Linear probe: frozen backbone, Adam lr 1e-2, 100 epochs on {args.clips} clips/video features. "
              f"Retrieval: test queries train, mean of clip features then L2.\n\n")
    table = results_markdown(list(rows.values()), columns)
    lines = [f"- {'HOLDS' if ok else 'does NOT hold'}: {name} ({detail})" for name, ok, detail in verdicts]
    report = header + table + "\nClaims:\n" + "\n".join(lines) + "\n"
    (out / "reproduce.md").write_text(report)
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows,
              "claims": [{"claim": n, "holds": ok, "detail": d} for n, ok, d in verdicts],
              "decoders": decoder_versions(), "torch": torch.__version__, "numpy": np.__version__}
    (out / "reproduce.json").write_text(json.dumps(result, indent=1))
    print("\n" + report)
    return result


if __name__ == "__main__":
    main()

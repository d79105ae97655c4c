"""The learnability ladder: does each method learn the motion of a generated set, against seeds?

On a ``vcl-synth`` set whose class is the motion (6 classes, backgrounds random in train and
test), the same small backbone is

- trained **supervised** on the train split: the ceiling (the task is learnable at this
  budget if it reaches >= 0.90 test top-1);
- left **untrained**: the floor (same seeds);
- pretrained by each of the 13 self-supervised methods under one budget (steps x batch);

and each frozen backbone is scored by a linear probe (the runtime's ``vcl_infer.LinearProbe``
through ``training.linear_eval.score_features``, the protocol of ``vcl-eval linear``: test
top-1, the clips' probabilities averaged) and retrieval (test videos query the train split: R@1 / R@5 with the centre clip
and with the mean of ``--clips`` clip features, TCLR's protocol). A second set, whose train
backgrounds predict the class with probability ``--bias``, tests FAME against SimCLR.

Claims (HOLDS when the mean gap exceeds both seed stds, DOES NOT HOLD when it is <= 0,
INCONCLUSIVE between):
  1. pretraining beats none, per method (linear top-1 vs the floor);
  2. FAME beats SimCLR when train backgrounds predict the class (linear top-1, bias set);
  3. TCLR gains more R@1 than SimCLR from 1 to ``--clips`` clips per video.

Runs execute as ``--parallel`` subprocesses (``--threads`` torch threads each); every finished
run writes ``OUT/runs/NAME/result.json`` and ``features.npz`` (the frozen clip features, plain
arrays: a later probe change re-scores them without retraining) and the report is rewritten, so a stopped ladder
resumes where it stopped and a partial one still gives a table. Report: ``REPORT/ladder.md``,
``ladder.json``, ``ladder_bars.png``, ``ladder_curves.png`` (with ``--report``).

Usage::

    python benchmarks/reproduce.py --out runs/ladder --report docs/ladder     # the ladder
    python benchmarks/reproduce.py --out /tmp/l --smoke                       # plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAIN = ("simclr", "moco", "tclr", "fame")
OTHERS = ("videomoco", "cyclecontrast", "vclr", "hcl", "mochi", "kcl", "tsc", "crossclr", "longshort")
LABELLED = ("supervised", "kcl", "tsc")  # these see the labels while training

# Per-method settings at this budget (a hundred-odd steps on ~170 videos), each with its reason.
# The papers' values assume 10^5-10^6 steps on 10^4-10^5 videos; kept unless they break here.
QUEUE = 128  # < the ~160 keys one epoch enqueues: the queue never holds a video's own older key
# The four main methods get the time-reversed negative (training/methods/reversal.py): without it
# their linear probe stays at the untrained floor on this set (docs/ladder.md, "what was wrong").
REVERSE = {"reverse_negatives": True}
# Colour strong enough that colour cannot tell two videos apart: hue over the whole wheel and
# grey half the time (MoCo v2's hue 0.1 / grey 0.2 leave each video's colours recognisable,
# and instance discrimination then needs nothing else). For every self-supervised method.
COLOUR = {"hue": 0.5, "grayscale_p": 0.5}
MOMENTUM = 0.99  # 0.999 leaves the key encoder ~90% random init after 100 steps: keys near random
# MoCo and FAME at this budget (docs/ladder/what_was_wrong.md, sections 9 and 10), four changes:
# - BN after the MLP head's hidden layer (their papers' heads have none): without it the embeddings
#   stay in the narrow cone a random init puts every clip in (cosine ~0.8 between any two videos);
# - a key encoder that keeps up: at 100 steps m = 0.99 averages over the whole run (keys from a
#   near-random encoder); 0.9 is a 10-step horizon;
# - this step's other keys as negatives too (MoCo v3's in-batch negatives): with only earlier
#   steps' keys as negatives their loss stayed at log(K + 1) and the online kNN at chance, with
#   or without the first two changes;
# - the reversed clips through the query encoder (with gradient), both views as queries (section 10):
#   through the key encoder a clip's reversed key is nearly its own key, so the positive and that
#   negative cancel, and nothing moves the encoder towards telling the directions apart.
MOCO_FIX = {"head_bn": True, "momentum": 0.9, "batch_negatives": True, "reverse_encoder": "query", "symmetric": True}
# the ceiling's budget: at 100 x 32 it was still fitting (test 0.875 +- 0.028 over 3 seeds, train
# accuracy ~0.85); 200 x 16 reached 0.917 in exploration
CEILING_STEPS = 150
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "simclr": {"temperature": 0.2, **REVERSE},
    "hcl": {},
    "longshort": {},
    "moco": {"queue_size": QUEUE, **REVERSE, **MOCO_FIX},
    # FAME's query view is merged onto another clip's background, so its own clip reversed shares
    # the query's background and its positive does not: only each pair's key clip is reversed
    # (section 11; fame 41.7 +- 3.7 with every view reversed, 44.4 +- 1.4 with the key view's)
    "fame": {"queue_size": QUEUE, **REVERSE, **MOCO_FIX, "reversed_views": "key"},
    # 16-frame videos: the global clip at step 2 spans the video, 2 local clips of 8 frames tile
    # it (the paper's step 4 and 4 locals would clamp to the last frame of a 16-frame video)
    "tclr": {"num_local": 2, "global_step": 2, **REVERSE},
    "mochi": {"queue_size": QUEUE, "momentum": MOMENTUM, "num_hard": 64, "num_mix": 64, "num_query_mix": 16},
    "videomoco": {"queue_size": QUEUE, "momentum": MOMENTUM},
    "cyclecontrast": {"queue_size": QUEUE, "cycle_queue_size": QUEUE, "support_size": 64, "momentum": MOMENTUM},
    "vclr": {"queue_size": QUEUE, "momentum": MOMENTUM},
    "kcl": {"queue_size": QUEUE, "momentum": MOMENTUM},
    "tsc": {"queue_size": QUEUE, "momentum": MOMENTUM},
    "crossclr": {"queue_size": QUEUE},
}
# Adam 1e-3 for every method at this budget (the papers' SGD rates are tuned for long schedules:
# SimCLR at SGD 0.1 / 0.03 stayed at the floor in 150 steps where Adam 1e-3 moved).
OPTIM: dict[str, dict[str, Any]] = {m: {"optimizer": "adam", "lr": 1e-3} for m in (*MAIN, *OTHERS)}
# the ceiling: at 1e-3 the supervised run is still underfit after 100 steps (test 0.74, train 0.81)
OPTIM["supervised"] = {"optimizer": "adam", "lr": 3e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="Work folder (data, runs).")
    p.add_argument("--report", type=Path, default=None, help="Also write the report here (e.g. docs/ladder).")
    p.add_argument("--steps", type=int, default=100, help="Optimiser steps per run (the budget).")
    p.add_argument("--ceiling-steps", type=int, default=CEILING_STEPS, help="Steps of the supervised ceiling.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2", help="Seeds of the ceiling, floor and main methods.")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=40)
    p.add_argument("--video-frames", type=int, default=16, help="Frames per generated video.")
    p.add_argument("--size", type=int, default=48, help="Frame side of the generated videos (= the crop).")
    p.add_argument("--bias", type=float, default=0.8, help="Background bias of the FAME-vs-SimCLR set.")
    p.add_argument("--frames", type=int, default=8, help="Frames per clip.")
    p.add_argument("--frame-step", type=int, default=2)
    p.add_argument("--clips", type=int, default=5, help="Clips per video for the probe and multi-clip retrieval.")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--parallel", type=int, default=2, help="Runs at once.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    p.add_argument("--only", default="", help="Comma-separated run names or methods to run (default: all).")
    p.add_argument("--smoke", action="store_true", help="Tiny data, 2 steps, 3 methods: checks the plumbing only.")
    p.add_argument("--report-only", action="store_true", help="Rewrite the report from the finished runs; run nothing.")
    p.add_argument("--override", default="", type=_json_dict,
                   help='JSON {method: {hparam: value}} merged over the ladder\'s method settings (tries; '
                        'the rows record what they ran with), e.g. \'{"moco": {"symmetric": true}}\'.')
    p.add_argument("--override-optim", default="", type=_json_dict,
                   help='JSON {method: {option: value}} merged over the ladder\'s optimiser settings.')
    p.add_argument("--keep-rows", type=Path, default=None,
                   help="An earlier ladder.json: its rows count as done (not rerun, reported with their recorded "
                        "numbers, marked kept) unless this work folder has the run or the row's recorded method "
                        "settings differ from this ladder's (then it reruns).")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)  # internal: one run, in a subprocess
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.ceiling_steps, args.batch_size, args.classes, args.videos_per_class = 2, 2, 4, 2, 8
        args.video_frames, args.size, args.frames, args.clips, args.seeds = 8, 32, 4, 2, "0"
        args.only = args.only or "supervised,untrained,simclr"
        args.parallel = 1
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    return args


def _json_dict(text: str) -> dict[str, dict[str, Any]]:
    """``--override`` values: a JSON object of objects (empty text: none)."""
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of objects, got {text!r}")
    return value


def method_args(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method's hparam overrides in this ladder: ``METHOD_ARGS`` with ``--override`` over it."""
    return {**METHOD_ARGS.get(method, {}), **(args.override or {}).get(method, {})}


def optim_args(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method's optimiser settings in this ladder: ``OPTIM`` with ``--override-optim`` over it."""
    return {**OPTIM.get(method, {}), **(args.override_optim or {}).get(method, {})}


def kept_rows(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``--keep-rows`` ladder's rows still valid here, by run name, each marked ``kept_from``.

    A row is dropped (its run reruns) when it recorded method settings (``method_args``, and
    ``optim`` when recorded) that differ from this ladder's; rows from before rows recorded them
    are kept as they are (that ladder's report lists its settings). Same data and probe are the
    caller's promise: same ``--data-seed`` and set parameters (checked against the file's args).
    """
    if args.keep_rows is None:
        return {}
    earlier = json.loads(Path(args.keep_rows).read_text())
    for key in ("classes", "videos_per_class", "video_frames", "size", "bias", "frames", "frame_step", "clips",
                "data_seed", "steps", "batch_size"):
        if earlier["args"].get(key) != getattr(args, key):
            raise SystemExit(f"--keep-rows {args.keep_rows}: its {key} is {earlier['args'].get(key)!r}, "
                             f"this ladder's {getattr(args, key)!r}: its rows are not comparable")
    out = {}
    for row in earlier["rows"]:
        stale = ("method_args" in row and row["method_args"] != method_args(args, row["method"])) or \
                ("optim" in row and row["optim"] != optim_args(args, row["method"]))
        if not stale:
            out[row["name"]] = {**row, "kept_from": row.get("kept_from") or f"{args.keep_rows} ({earlier['written']})"}
    return out


# ------------------------------------------------------------------------------- the plan
def plan(args: argparse.Namespace, *, full: bool = False) -> list[dict[str, Any]]:
    """The runs of the ladder (``--only`` applied unless ``full``): name, method, seed, data set."""
    def motion(m: str, s: int) -> dict[str, Any]:
        return {"name": f"{m}-s{s}", "method": m, "seed": s, "data": "motion"}

    def biased(m: str, s: int) -> dict[str, Any]:
        return {"name": f"{m}-bias-s{s}", "method": m, "seed": s, "data": "biased"}

    # the order a stopped ladder is most useful in: every main method and claim at the first
    # seed; the cheap ceiling and floor at every seed; then the other seeds, cheapest first
    first, rest = args.seed_list[0], args.seed_list[1:]
    runs = [motion(m, first) for m in ("supervised", "untrained", *MAIN)]
    runs += [biased(m, first) for m in ("simclr", "fame")]
    runs += [motion(m, s) for s in rest for m in ("untrained", "supervised")]
    for s in rest:
        runs += [motion("simclr", s), biased("simclr", s), biased("fame", s), motion("fame", s), motion("moco", s),
                 motion("tclr", s)]
    runs += [motion(m, first) for m in OTHERS]
    if args.only and not full:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        runs = [r for r in runs if r["name"] in wanted or r["method"] in wanted]
    return runs


def synth_config(args: argparse.Namespace, which: str) -> Any:
    from training.data.synthetic import SynthConfig

    return SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class, frames=args.video_frames,
                       size=args.size, background_bias=args.bias if which == "biased" else 0.0, seed=args.data_seed)


def ensure_data(args: argparse.Namespace, which: str) -> Path:
    """The generated set (regenerated when its parameters changed)."""
    from dataclasses import asdict

    from training.data.synthetic import generate

    cfg = synth_config(args, which)
    data = args.out / "data" / which
    meta = data / "synth.json"
    if not meta.is_file() or json.loads(meta.read_text())["config"] != asdict(cfg):
        generate(data, cfg, workers=1)
    if any(r["method"] == "crossclr" for r in plan(args)) and not (data / "pairs.npz").is_file():
        write_motion_pairs(data)
    return data


def write_motion_pairs(data: Path) -> Path:
    """CrossCLR's second modality for a synthetic set: a motion-energy descriptor per video.

    Mean absolute frame difference (grey), in 4 time segments, pooled to 6 x 6 cells:
    144-d, a crude stand-in for the optical-flow features CrossCLR pairs with RGB.
    """
    from training.data.layouts import load_layout
    from vcl_infer.video.open import open_video

    out: dict[str, np.ndarray] = {}
    for subset in ("train", "test"):
        items, _ = load_layout(data, subset=subset)
        for item in items:
            reader = open_video(item.path)
            try:
                frames = reader.get_frames(list(range(len(reader.timestamps)))).astype(np.float32).mean(-1)
            finally:
                reader.close()
            diff = np.abs(np.diff(frames, axis=0))
            t, h, w = diff.shape
            segs = [seg.mean(0) for seg in np.array_split(diff, 4)]
            cells = [s[: h // 6 * 6, : w // 6 * 6].reshape(6, h // 6, 6, w // 6).mean((1, 3)) for s in segs]
            out[Path(item.path).relative_to(data).as_posix()] = np.concatenate([c.ravel() for c in cells]) / 255.0
    path = data / "pairs.npz"
    np.savez(path, **out)
    return path


# ------------------------------------------------------------------------------ one run
def run_one(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    """Train (unless untrained) and evaluate one run; writes ``OUT/runs/NAME/result.json``."""
    import torch

    from training.config import TrainConfig
    from training.data.layouts import load_layout
    from training.linear_eval import LinearEvalConfig, evaluate_backbone, load_backbone, resolve_spec
    from training.loop import train
    from vcl_infer.probe.retrieval_metrics import recall_at_k

    torch.set_num_threads(args.threads)
    data = args.out / "data" / run["data"]
    folder = args.out / "runs" / run["name"]
    t0 = time.perf_counter()
    train_items, classes = load_layout(data, subset="train")
    test_items, _ = load_layout(data, subset="test")
    steps_per_epoch = max(1, len(train_items) // args.batch_size)
    steps = args.ceiling_steps if run["method"] == "supervised" else args.steps
    loss = None
    if run["method"] == "untrained":
        backbone, spec, _ = load_backbone(None, arch="r3d_small", seed=run["seed"])
    else:
        margs = method_args(args, run["method"])
        if run["method"] != "supervised":
            margs = {**COLOUR, **margs}
        if run["method"] == "crossclr":
            margs["pair_features"] = str(data / "pairs.npz")
        config = TrainConfig(
            method=run["method"], data=str(data), arch="r3d_small", out=str(folder), epochs=-(-steps // steps_per_epoch),
            batch_size=args.batch_size, workers=0, seed=run["seed"], device="cpu", frames=args.frames,
            frame_step=args.frame_step, crop=args.size, resize=args.size, max_steps=steps, keep_epochs=False,
            log_every=max(1, steps // 15), method_args=margs, warmup_epochs=1.0, cache_frames=True,
            eval_data=str(data), eval_every=max(1, steps // 5), **optim_args(args, run["method"]))
        result = train(config, progress=False)
        if result.stopped_by not in (None, "max_steps"):  # stopped early: no result, the run reruns on resume
            raise SystemExit(f"{run['name']}: stopped by {result.stopped_by} at step {result.global_step}")
        backbone, spec, _ = load_backbone(result.checkpoint)
        loss = _last_loss(folder / "metrics.csv")
    train_s = time.perf_counter() - t0
    spec = resolve_spec(spec, frames=args.frames, frame_step=args.frame_step, crop=args.size, resize=args.size)
    cfg = LinearEvalConfig(train_clips=args.clips, test_clips=args.clips, seed=run["seed"])
    res = evaluate_backbone(backbone, spec, train_items, test_items, len(classes), cfg)
    f = res.pop("features")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "features.npz", **f)  # plain arrays (no pickle): a probe change needs no retraining
    legacy = legacy_linear_scores(f, seed=run["seed"])
    centre = args.clips // 2
    r1 = recall_at_k(f["test"][:, centre], f["test_labels"], f["train"][:, centre], f["train_labels"], ks=(1, 5))
    rn = recall_at_k(f["test"].mean(1), f["test_labels"], f["train"].mean(1), f["train_labels"], ks=(1, 5))
    row = {**run, "linear_top1": res["top1"], "linear_top1_1clip": res["top1_1clip"], "probe": PROBE,
           "linear_top1_legacy": legacy["top1"], "linear_top1_1clip_legacy": legacy["top1_1clip"],
           "r1_1clip": r1[1], "r5_1clip": r1[5], "r1": rn[1], "r5": rn[5], "final_loss": loss,
           "train_s": round(train_s, 1), "eval_s": round(time.perf_counter() - t0 - train_s, 1),
           "steps": 0 if run["method"] == "untrained" else steps, "batch_size": args.batch_size,
           "method_args": method_args(args, run["method"]), "optim": optim_args(args, run["method"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(row, indent=1))
    for name in ("checkpoint.pt", "tensorboard"):  # keep the work folder small: results and curves stay
        path = folder / name
        if path.is_file():
            path.unlink()
    return row


PROBE = "vcl_infer.LinearProbe"  # rows of runs scored before the one-probe change say "torch-linear"


def legacy_linear_scores(features: dict[str, np.ndarray], *, seed: int) -> dict[str, float]:
    """The ladder's first probe, kept only to compare old rows with new ones on the same features.

    A torch linear layer on standardised clip features (every train clip a sample), Adam 1e-2,
    100 epochs of batch 256, seeded init; test clips' probabilities averaged. It was
    ``training.linear_eval.train_linear`` before that module handed its features to
    ``vcl_infer.LinearProbe``.
    """
    import torch
    import torch.nn.functional as F

    xtr, xte = features["train"], features["test"]
    x = xtr.reshape(-1, xtr.shape[-1]).astype(np.float32)
    y = torch.from_numpy(np.repeat(features["train_labels"], xtr.shape[1]).astype(np.int64))
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    g = torch.Generator().manual_seed(seed)
    k = int(max(features["train_labels"].max(), features["test_labels"].max())) + 1
    layer = torch.nn.Linear(x.shape[1], k)
    with torch.no_grad():
        bound = 1.0 / np.sqrt(x.shape[1])
        layer.weight.uniform_(-bound, bound, generator=g)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(100):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 256):
            idx = order[i : i + 256]
            loss = F.cross_entropy(layer(xt[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        z = layer(torch.from_numpy((xte.reshape(-1, xte.shape[-1]).astype(np.float32) - mean) / std))
        proba = torch.softmax(z, dim=1).numpy().reshape(xte.shape[0], xte.shape[1], -1)
    truth = features["test_labels"]
    return {"top1": float((proba.mean(1).argmax(1) == truth).mean()),
            "top1_1clip": float((proba[:, xte.shape[1] // 2].argmax(1) == truth).mean())}


def _last_loss(metrics: Path) -> float | None:
    import csv

    with metrics.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("loss")]
    return float(rows[-1]["loss"]) if rows else None


# ------------------------------------------------------------------------------ driver
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan(args)
    if args.run_one:
        run = next(r for r in runs if r["name"] == args.run_one)
        return run_one(args, run)
    if args.report_only:
        return write_report(args, runs, 0.0)
    for which in sorted({r["data"] for r in runs}):
        ensure_data(args, which)
    started = time.time()
    kept = kept_rows(args)
    todo = [r for r in runs if not (args.out / "runs" / r["name"] / "result.json").is_file() and r["name"] not in kept]
    print(f"ladder: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run, "
          f"{args.parallel} at a time", flush=True)
    passthrough = _passthrough(argv if argv is not None else sys.argv[1:])
    running: list[tuple[dict, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            run = todo.pop(0)
            if _done_or_running_elsewhere(args.out / "runs" / run["name"]):
                continue
            (args.out / "runs").mkdir(parents=True, exist_ok=True)
            log = (args.out / "runs" / f"{run['name']}.log").open("w")
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *passthrough, "--run-one", run["name"]],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((run, proc, time.time()))
        time.sleep(0.5)
        for item in list(running):
            run, proc, t_start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see runs/{run['name']}.log)"
            print(f"{run['name']}: {status} in {time.time() - t_start:.0f}s", flush=True)
            write_report(args, runs, time.time() - started)
    return write_report(args, runs, time.time() - started)


def _done_or_running_elsewhere(folder: Path) -> bool:
    """A result exists, or another driver's run is writing metrics there (within 5 minutes)."""
    if (folder / "result.json").is_file():
        return True
    metrics = folder / "metrics.csv"
    return metrics.is_file() and time.time() - metrics.stat().st_mtime < 300


def _passthrough(argv: list[str]) -> list[str]:
    """The driver's own arguments for its subprocesses (minus --run-one and --parallel)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--report-only":
            continue
        if a in ("--run-one", "--parallel", "--only"):
            skip = True
            continue
        if a.startswith(("--run-one=", "--parallel=", "--only=")):
            continue
        out.append(a)
    return out


def write_report(args: argparse.Namespace, runs: list[dict], seconds: float) -> dict[str, Any]:
    from benchmarks.ladder_report import render

    rows, spans, kept = [], [], kept_rows(args)
    for r in plan(args, full=True):  # every finished run, whichever driver ran it
        path = args.out / "runs" / r["name"] / "result.json"
        if not path.is_file() and r["name"] in kept:
            rows.append(kept[r["name"]])
        elif path.is_file():
            rows.append(json.loads(path.read_text()))
            end = path.stat().st_mtime
            if rows[-1].get("probe") == PROBE:  # run by this code here, not copied from an earlier ladder
                spans.append((end - rows[-1]["train_s"] - rows[-1]["eval_s"], end))
    done_names = {r["name"] for r in rows}
    args.pending = [r["name"] for r in plan(args, full=True) if r["name"] not in done_names]
    if spans:  # the ladder's wall time: first run's start to last run's end, across restarts
        seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    command = "python benchmarks/reproduce.py " + shlex.join(a for a in _passthrough(sys.argv[1:]) if a != "--smoke"
                                                             or args.smoke)
    args.settings = (f"Per-method settings at this budget: optimiser {json.dumps(OPTIM['simclr'])} for every "
                     f"self-supervised method, {json.dumps(OPTIM['supervised'])} for the ceiling"
                     + "".join(f", {json.dumps(optim_args(args, m))} for {m}" for m in OPTIM
                               if optim_args(args, m) != OPTIM[m]) + "; colour "
                     f"{json.dumps(COLOUR)} for every self-supervised method; method overrides "
                     f"{json.dumps({m: method_args(args, m) for m in METHOD_ARGS})} (everything else: the papers' values).")
    return render(args, rows, len(plan(args, full=True)), seconds, command)


if __name__ == "__main__":
    main()

"""Decode-worker priority: a build alone and beside a CPU-bound job, old policy against new.

A build's decode workers used to run at nice 10. The scheduler weighs nice 10 at 110 against
1024 for a normal process, so beside any other busy job the workers get about a tenth of their
fair share and a decode-bound build falls off a cliff (an 18x slower build was seen). The new
policy (``vcl_infer.index.build.DECODE_PRIORITY``) keeps the build's own priority and puts the
workers under ``SCHED_BATCH`` (no wake-up preemption of the encoder's threads).

In one run, rounds of four builds, interleaved so that the machine's own load hits every
condition alike::

    old policy, alone     old policy, beside BUSY busy loops
    new policy, alone     new policy, beside BUSY busy loops

Each build is a fresh process (``build_index`` into a fresh index, model load and worker
start included); the busy loops are plain ``while True`` processes at the benchmark's own
priority, started just before the build and killed (by pid) when it ends, with a hard end of
their own. It prints the median wall time of each condition with its min-max spread, the
load average around each build, the cliff (loaded / alone) per policy, and old / new::

    python benchmarks/decode_priority.py                     # 6 generated 20 s 240p videos
    python benchmarks/decode_priority.py --rounds 5 --busy 2 --json

A fair scheduler gives a build beside BUSY busy loops on n cores about n / (n + BUSY) of the
machine; a slowdown near (n + BUSY) / n is no cliff.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = {
    "old": {"nice": 10, "batch": False},
    "new": None,  # vcl_infer.index.build.DECODE_PRIORITY as shipped
}

# one build in a fresh interpreter: the policy is set on vcl_infer.index.build before it starts
_BUILD = """
import json, sys, time
import vcl_infer.index.build as build
policy = json.loads(sys.argv[1])
if policy is not None:
    build.DECODE_PRIORITY = policy
t0 = time.monotonic()
report = build.build_index(sys.argv[2], sys.argv[3], clips=int(sys.argv[4]), progress=False,
                           timeout_s=float(sys.argv[5]))
print(json.dumps({"wall_s": time.monotonic() - t0, "added": report.added, "policy": build.DECODE_PRIORITY,
                  "failed": [str(getattr(f, "reason", f))[:200] for f in report.failed]}))
"""

_BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def one_build(policy: dict | None, videos: Path, clips: int, busy: int, limit_s: float,
              decode_timeout_s: float = 60.0) -> dict:
    """Wall seconds of one build, with ``busy`` busy-loop processes beside it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loops = [subprocess.Popen([sys.executable, "-c", _BUSY, str(limit_s)]) for _ in range(busy)]
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="vcl-prio-") as index_dir:
            done = subprocess.run(
                [sys.executable, "-c", _BUILD, json.dumps(policy), str(videos), index_dir, str(clips),
                 str(decode_timeout_s)],
                env=env, capture_output=True, text=True, timeout=limit_s,
            )
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    if done.returncode != 0:
        raise SystemExit(f"a build failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    return result


def summarize(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    return {"median_s": round(statistics.median(walls), 2), "min_s": round(min(walls), 2),
            "max_s": round(max(walls), 2), "runs": [round(w, 2) for w in walls],
            "load_1min": [round(r["load_before"], 1) for r in runs], "policy": runs[0]["policy"],
            "added": [r["added"] for r in runs], "failed": [f for r in runs for f in r["failed"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, help="a folder of videos (default: generated ones)")
    parser.add_argument("--count", type=int, default=6, help="generated videos")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each generated video")
    parser.add_argument("--clips", type=int, default=8, help="clips per video")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the loaded builds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four builds")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds one build may take")
    parser.add_argument("--decode-timeout", type=float, default=60.0,
                        help="the build's per-file decode limit (its default, 60 s; a starved file fails "
                             "at it, so a build with failures is faster than its real slowdown)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    videos = args.videos
    if videos is None:
        from benchmarks.extract import make_videos

        videos = Path(tempfile.gettempdir()) / "vcl-bench-priority"
        make_videos(videos, args.count, args.seconds, 240)
    conditions = [(p, b) for p in POLICIES for b in (0, args.busy)]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in conditions}
    for round_no in range(args.rounds):
        order = conditions if round_no % 2 == 0 else conditions[::-1]  # no condition always first
        for name, busy in order:
            runs[(name, busy)].append(one_build(POLICIES[name], videos, args.clips, busy, args.limit,
                                                  args.decode_timeout))
            if not args.json:
                r = runs[(name, busy)][-1]
                print(f"round {round_no + 1}: {name:>3} policy, {busy} busy: {r['wall_s']:6.2f} s "
                      f"(load {r['load_before']:.1f}; {r['added']} added, {len(r['failed'])} failed)", flush=True)
    table = {f"{name}_{'loaded' if busy else 'alone'}": summarize(runs[(name, busy)]) for name, busy in conditions}
    med = {k: v["median_s"] for k, v in table.items()}
    out = {
        "cores": len(os.sched_getaffinity(0)), "busy_loops": args.busy, "rounds": args.rounds,
        "videos": str(videos), "clips_per_video": args.clips, "conditions": table,
        "cliff_old_loaded_over_alone": round(med["old_loaded"] / med["old_alone"], 2),
        "cliff_new_loaded_over_alone": round(med["new_loaded"] / med["new_alone"], 2),
        "old_over_new_loaded": round(med["old_loaded"] / med["new_loaded"], 2),
        "old_over_new_alone": round(med["old_alone"] / med["new_alone"], 2),
        "fair_slowdown": round((len(os.sched_getaffinity(0)) + args.busy) / len(os.sched_getaffinity(0)), 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{out['cores']} cores, {args.busy} busy loops beside the loaded builds, {args.rounds} rounds")
    for key, row in table.items():
        print(f"  {key:<11} median {row['median_s']:6.2f} s  (min {row['min_s']:.2f}, max {row['max_s']:.2f}; "
              f"load {row['load_1min']})  policy {row['policy']}")
        for reason in row["failed"]:
            print(f"    failed: {reason}")
    print(f"cliff (loaded / alone): old {out['cliff_old_loaded_over_alone']}x, new "
          f"{out['cliff_new_loaded_over_alone']}x (a fair share would be {out['fair_slowdown']}x)")
    print(f"old / new: loaded {out['old_over_new_loaded']}x, alone {out['old_over_new_alone']}x")


if __name__ == "__main__":
    main()

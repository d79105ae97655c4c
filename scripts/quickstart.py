"""The main job end to end (run by `make demo`), with the packaged default encoder.

1. Gather sample videos: a small generated motion set (vcl-synth), plus real files: the
   folder given with ``--videos DIR`` (``make demo VIDEOS=~/Videos``), else
   ``../shared/videos/`` (several of them broken on purpose) when present. Without either,
   the real-video steps are skipped, and the script says so.
2. `vcl-index build` them into out/quickstart/index: every unreadable file is listed with
   its reason and the build goes on.
3. `vcl-search`: a video searched with itself, and a 2-second cut of a real video
   (`FILE@START-END`), with an HTML page of thumbnails.
4. `vcl-index verify` and `vcl-index info`.
5. `vcl-classify fit` a linear probe on the generated set's train split (labels from its
   UCF101-style split files), then `vcl-classify eval` on its test split and `predict` one
   video. The default encoder is a small smoke-test model: expect modest accuracy.

The time of every step and the total are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "videos"
OUT = ROOT / "out" / "quickstart"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg", ".ts"}
CUT_SECONDS = 2.0
TIMES: list[tuple[str, float]] = []


def tool(name: str) -> str:
    """A console script of this environment (make runs us without the venv on PATH)."""
    return str(Path(sys.executable).parent / name)


def run(*command: str, capture: bool = False) -> str:
    print("\n$", " ".join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    step = Path(command[0]).name + ("" if "/" in command[1] else f" {command[1]}")
    TIMES.append((step, time.perf_counter() - start))
    return done.stdout or ""


def real_folder(given: str | None) -> Path | None:
    """The folder of real videos to add: ``--videos``, else ../shared/videos, else None (said loudly)."""
    if given:
        folder = Path(os.path.expanduser(given)).resolve()
        if not folder.is_dir():
            raise SystemExit(f"--videos / VIDEOS: {folder} is not a folder")
        return folder
    if SHARED_VIDEOS.is_dir():
        return SHARED_VIDEOS
    print("\nNOTE: no real videos: ../shared/videos does not exist here and no folder was given, so the demo "
          "SKIPS the real-video part (unreadable files listed with reasons, the 2-second cut query) and runs on "
          "generated videos only. Point it at a folder of your own: make demo VIDEOS=~/Videos", flush=True)
    return None


def gather_videos(real: Path | None, max_real: int) -> tuple[Path, int]:
    """A generated motion set (UCF101 layout) with up to ``max_real`` real files linked in beside it."""
    run(tool("vcl-synth"), str(OUT / "synth"), "--classes", "4", "--videos-per-class", "8", "--frames", "32",
        "--size", "64", "--seed", "1")
    videos = OUT / "synth" / "videos"
    linked = 0
    if real is not None:
        found = sorted(p for p in real.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        for path in found[:max_real]:
            link = videos / "real" / path.relative_to(real)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, link)  # files are followed; the walk does not enter linked folders
            linked += 1
        print(f"\nreal videos from {real}: {linked} of {len(found)} linked"
              + (f" (--max-real {max_real}; raise it for more)" if len(found) > max_real else ""), flush=True)
    return videos, linked


def cut_query(index: Path) -> Path | None:
    """A 2-second cut from the middle of the first indexed real video long enough (demo.mp4 preferred)."""
    from vcl_infer.index import VideoIndex

    with VideoIndex.open(index) as opened:
        durations = {}
        for path, (_, _, status) in opened.known_files().items():
            vid = opened.video_id(path) if status == "ok" and "/real/" in path else None
            if vid is not None:
                durations[path] = opened.video(vid).duration or 0.0
    long_enough = sorted(p for p, d in durations.items() if d >= 2 * CUT_SECONDS)
    if not long_enough:
        print("\nNOTE: no indexed real video of at least 4 s: the cut query is skipped", flush=True)
        return None
    chosen = next((p for p in long_enough if p.endswith("mmaction2/demo.mp4")), long_enough[0])
    middle = durations[chosen] / 2
    return Path(f"{chosen}@{middle - CUT_SECONDS / 2:g}-{middle + CUT_SECONDS / 2:g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", default=None,
                        help="folder of your own videos to add (default: ../shared/videos when present)")
    parser.add_argument("--max-real", type=int, default=200, help="link at most this many real files")
    args = parser.parse_args()
    started = time.perf_counter()
    real = real_folder(args.videos)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    index = OUT / "index"
    videos, linked = gather_videos(real, args.max_real)
    run(tool("vcl-index"), "build", str(videos), "--index", str(index), "--clips", "8")
    run(tool("vcl-index"), "info", "--index", str(index))
    run(tool("vcl-index"), "verify", "--index", str(index))
    queries = sorted(videos.glob("[A-Z]*/*.mp4"))[:1]
    cut = cut_query(index) if linked else None
    if cut is not None:
        queries.append(cut)
    for query in queries:
        run(tool("vcl-search"), str(query), "--index", str(index), "-k", "3")
    result = json.loads(run(tool("vcl-search"), str(queries[-1]), "--index", str(index), "-k", "3", "--json",
                            "--html", str(OUT / "results.html"), capture=True))
    print(json.dumps(result, indent=2))
    probe = OUT / "probe"
    run(tool("vcl-classify"), "fit", "--index", str(index), "--labels", str(OUT / "synth"), "--out", str(probe))
    run(tool("vcl-classify"), "eval", "--probe", str(probe), "--labels", str(OUT / "synth"), "--split", "test",
        "--out", str(OUT / "eval"))
    run(tool("vcl-classify"), "predict", str(queries[0]), "--probe", str(probe), "--clips", "4")
    print(f"\nresults page with thumbnails: {OUT / 'results.html'}")
    print("build report (every failed file with its reason):", index / "build_report.json")
    print("classification report and confusion matrix:", OUT / "eval")
    if real is None:
        print("real-video part: SKIPPED (see the NOTE above); make demo VIDEOS=~/Videos adds your own folder")
    elif cut is None:
        print(f"cut query: SKIPPED (no readable video of at least {2 * CUT_SECONDS:g} s in {real})")
    print("\ntime per step: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in TIMES))
    print(f"demo total: {time.perf_counter() - started:.1f} s (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

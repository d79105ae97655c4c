"""The main job end to end (run by `make demo`), with the packaged default encoder.

1. Gather sample videos: the real files in ../shared/videos/ (several of them broken on
   purpose) when present, plus a small generated motion set (vcl-synth).
2. `vcl-index build` them into out/quickstart/index: every unreadable file is listed with
   its reason and the build goes on.
3. `vcl-search`: a video searched with itself, and a 2-second cut of a real video
   (`FILE@START-END`), with an HTML page of thumbnails.
4. `vcl-index verify` and `vcl-index info`.
5. `vcl-classify fit` a linear probe on the generated set's train split (labels from its
   UCF101-style split files), then `vcl-classify eval` on its test split and `predict` one
   video. The default encoder is a small smoke-test model: expect modest accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "videos"
OUT = ROOT / "out" / "quickstart"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv"}


def tool(name: str) -> str:
    """A console script of this environment (make runs us without the venv on PATH)."""
    return str(Path(sys.executable).parent / name)


def run(*command: str, capture: bool = False) -> str:
    print("\n$", " ".join(command), flush=True)
    done = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def gather_videos() -> Path:
    """A generated motion set (UCF101 layout) with the real files linked in beside it."""
    run(tool("vcl-synth"), str(OUT / "synth"), "--classes", "4", "--videos-per-class", "8", "--frames", "32",
        "--size", "64", "--seed", "1")
    videos = OUT / "synth" / "videos"
    if SHARED_VIDEOS.is_dir():
        for path in sorted(SHARED_VIDEOS.rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES:
                link = videos / "real" / path.relative_to(SHARED_VIDEOS)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path, link)  # files are followed; the walk does not enter linked folders
    return videos


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    index = OUT / "index"
    videos = gather_videos()
    run(tool("vcl-index"), "build", str(videos), "--index", str(index), "--clips", "8")
    run(tool("vcl-index"), "info", "--index", str(index))
    run(tool("vcl-index"), "verify", "--index", str(index))
    queries = sorted(videos.glob("[A-Z]*/*.mp4"))[:1]
    demo = SHARED_VIDEOS / "mmaction2" / "demo.mp4"
    if demo.exists():
        queries.append(Path(f"{demo}@4-6"))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

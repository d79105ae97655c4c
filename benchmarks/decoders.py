"""Compare the video decoders that are importable here: decord (0.6.0 or decord2) and PyAV.

Needs only numpy plus the decoders, so it runs in throwaway venvs, one per decord flavour::

    python3 -m venv /tmp/vd0 && /tmp/vd0/bin/pip install decord==0.6.0 av numpy
    python3 -m venv /tmp/vd2 && /tmp/vd2/bin/pip install decord2 av numpy
    /tmp/vd0/bin/python benchmarks/decoders.py
    /tmp/vd2/bin/python benchmarks/decoders.py

Two parts:

1. robustness: every file under ``../shared/videos`` is opened and fully decoded by each
   decoder in its own subprocess (a decoder may abort or hang the process), recording the
   exit code or signal, the frame count and the first line of any error;
2. speed: frames/s decoding every frame of the two real action clips, best of 3, in this
   process (threads: the decoder's default).

Prints a markdown table; ``--json`` prints the raw records instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
SPEED_FILES = ("decord/flipping_a_pancake.mkv", "mmaction2/demo.mp4")
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv"}
CHILD_TIMEOUT_S = 30


def _decord_all(path: str) -> tuple[int, tuple[int, ...]]:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    n = len(vr)
    shape: tuple[int, ...] = ()
    for start in range(0, n, 32):  # batches of 32 keep memory flat on long files
        batch = vr.get_batch(list(range(start, min(start + 32, n)))).asnumpy()
        shape = batch.shape[1:]
    return n, shape


def _pyav_all(path: str) -> tuple[int, tuple[int, ...]]:
    import av

    n, shape = 0, ()
    with av.open(path, options={"protocol_whitelist": "file"}) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            shape = frame.to_ndarray(format="rgb24").shape
            n += 1
    return n, shape


DECODERS = {"decord": _decord_all, "pyav": _pyav_all}


def available() -> dict[str, str]:
    """Importable decoders -> version string."""
    found = {}
    try:
        import decord

        found["decord"] = getattr(decord, "__version__", "?")
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        pass
    try:
        import av

        found["pyav"] = f"{av.__version__} (FFmpeg {av.library_versions['libavcodec']})"
    except Exception:  # noqa: BLE001
        pass
    return found


def _child(decoder: str, path: str) -> None:
    try:
        n, shape = DECODERS[decoder](path)
        print(json.dumps({"ok": True, "frames": n, "shape": list(shape)}))
    except Exception as exc:  # noqa: BLE001 - report any Python-level failure
        first = (str(exc).strip().splitlines() or [""])[0]
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {first[:160]}"}))


def robustness(decoder: str) -> dict[str, dict]:
    """Decode every shared video in a subprocess; record what happened."""
    results = {}
    files = sorted(p for p in VIDEOS.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    for path in files:
        rel = str(path.relative_to(VIDEOS))
        cmd = [sys.executable, __file__, "--child", decoder, str(path)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            results[rel] = {"status": "hang", "seconds": CHILD_TIMEOUT_S}
            continue
        record: dict = {"seconds": round(time.perf_counter() - t0, 2), "rc": proc.returncode}
        if proc.returncode < 0:
            record["status"] = f"killed by {signal.Signals(-proc.returncode).name}"
        elif proc.returncode != 0:
            record["status"] = f"exit {proc.returncode}"
        else:
            line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            out = json.loads(line[-1]) if line else {"ok": False, "error": "no output"}
            record.update(out)
            record["status"] = "ok" if out["ok"] else "error"
        results[rel] = record
    return results


def speed(decoder: str, repeats: int = 3) -> dict[str, float]:
    """Frames per second decoding all frames, best of ``repeats``."""
    out = {}
    for rel in SPEED_FILES:
        path = str(VIDEOS / rel)
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            n, _ = DECODERS[decoder](path)
            best = max(best, n / (time.perf_counter() - t0))
        out[rel] = round(best, 1)
    return out


def _cell(record: dict) -> str:
    if record["status"] == "ok":
        return f"ok {record['frames']}f"
    if record["status"] == "error":
        return "err: " + record["error"][:70].replace("|", "/")
    return record["status"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("DECODER", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print raw JSON records")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not VIDEOS.is_dir():
        sys.exit(f"no test videos at {VIDEOS}")
    decoders = available()
    report = {
        "python": sys.executable,
        "cpus": os.cpu_count(),
        "decoders": decoders,
        "robustness": {d: robustness(d) for d in decoders},
        "speed_fps": {d: speed(d, args.repeats) for d in decoders},
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    names = list(decoders)
    print(f"# decoders ({sys.executable}, {os.cpu_count()} CPUs)\n")
    for name, version in decoders.items():
        print(f"- {name}: {version}")
    print("\n| file | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for rel in report["robustness"][names[0]] if names else []:
        cells = [_cell(report["robustness"][d][rel]) for d in names]
        print(f"| {rel} | " + " | ".join(cells) + " |")
    print("\n| frames/s, all frames, best of 3 | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for rel in SPEED_FILES:
        print(f"| {rel} | " + " | ".join(str(report["speed_fps"][d][rel]) for d in names) + " |")
    if len(names) == 2:
        a, b = names
        ratios = ", ".join(
            f"{rel}: {report['speed_fps'][a][rel] / report['speed_fps'][b][rel]:.2f}x" for rel in SPEED_FILES
        )
        print(f"\n{a}/{b} speed ratio: {ratios}")


if __name__ == "__main__":
    main()

"""A bounded load test of ``vcl-serve`` on loopback while a build writes to the served index.

It builds an index over generated videos, starts ``vcl-serve`` (token on, ``--workers``),
and sends ``--requests`` searches, ``--concurrency`` at a time (path queries under ``--root``
and uploads, video and clip level, some with a time range), while a writer keeps adding
new videos to the same index (``vcl-index add``, one commit each). It prints p50/p90/p99/max
latency, requests/s, errors (must be 0), and how many index generations the server
picked up during the run without a restart::

    python benchmarks/serve_load.py                           # 500 requests, 8 at a time
    python benchmarks/serve_load.py --requests 40 --videos 4  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TOKEN = "load-test-token-0123456789"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(index_dir: Path, root: Path, work: Path, workers: int) -> tuple[subprocess.Popen, str]:
    import httpx

    (work / "token").write_text(TOKEN)
    port = _port()
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vcl_infer.serve.cli", "--index", str(index_dir), "--port",
                             str(port), "--root", str(root), "--token-file", str(work / "token"), "--workers",
                             str(workers), "--max-queue", "64", "--log-level", "warning"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start; see " + str(work / "server.log"))


def _writer(index_dir: Path, sources: list[Path], new_dir: Path, stop: threading.Event, log: list) -> None:
    """Adds copies of ``sources`` under new names, one `vcl-index add` (one commit) each, until stopped."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    i = 0
    while not stop.is_set():
        target = new_dir / f"added_{i:04d}.mp4"
        target.write_bytes(sources[i % len(sources)].read_bytes())
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-c", "from vcl_infer.cli.index import main; main()", "add",
                               str(target), "--index", str(index_dir), "--json"], capture_output=True, env=env)
        log.append((done.returncode, time.monotonic() - t0))
        i += 1


def _requests(videos: list[Path], count: int) -> list[dict]:
    plan = []
    for i in range(count):
        video = videos[i % len(videos)]
        kind = i % 5
        fields = {"k": "5", "level": "clip" if kind == 3 else "video"}
        if kind == 2:
            fields.update(start="1.0", end="3.0")
        plan.append({"upload": video if kind == 4 else None, "path": None if kind == 4 else str(video),
                     "fields": fields})
    return plan


def _send(client, item: dict) -> tuple[float, int, int]:
    t0 = time.monotonic()
    try:
        if item["upload"] is not None:
            with open(item["upload"], "rb") as fh:
                response = client.post("/search", data=item["fields"], files={"file": (item["upload"].name, fh)})
        else:
            response = client.post("/search", data={**item["fields"], "path": item["path"]})
        generation = response.json().get("generation", -1) if response.status_code == 200 else -1
        return time.monotonic() - t0, response.status_code, generation
    except Exception:  # noqa: BLE001 - counted as an error
        return time.monotonic() - t0, -1, -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import httpx
    from extract import make_videos

    from vcl_infer.index.build import build_index

    work = Path(tempfile.mkdtemp(prefix="vcl-serve-load-"))
    root = work / "videos"
    videos = make_videos(root / "base", args.videos, args.seconds, args.height)
    index_dir = work / "index"
    build_index(root, index_dir, progress=False)
    proc, url = _start_server(index_dir, root, work, args.workers)
    stop, writes = threading.Event(), []
    (root / "new").mkdir()
    writer = threading.Thread(target=_writer, args=(index_dir, videos, root / "new", stop, writes), daemon=True)
    load_before = os.getloadavg()
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                          limits=httpx.Limits(max_connections=args.concurrency)) as client:
            generation0 = client.get("/healthz").json()["generation"]
            writer.start()
            t0 = time.monotonic()
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = []
                for result in pool.map(lambda item: _send(client, item), _requests(videos, args.requests)):
                    results.append(result)
                    if len(results) % 50 == 0:  # progress on stderr: a loaded machine makes this slow
                        print(f"{len(results)}/{args.requests} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
            wall = time.monotonic() - t0
            stop.set()
            generation1 = client.get("/healthz").json()["generation"]
    finally:
        stop.set()
        writer.join(120)
        proc.terminate()
        proc.wait(20)
    latencies = sorted(r[0] for r in results)
    errors = sum(1 for r in results if r[1] != 200)
    served = sorted({r[2] for r in results if r[2] >= 0})

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3)

    result = {"requests": args.requests, "concurrency": args.concurrency, "server_workers": args.workers,
              "wall_s": round(wall, 2), "requests_per_s": round(args.requests / wall, 2), "errors": errors,
              "status_codes": sorted({r[1] for r in results}), "p50_s": pct(0.50), "p90_s": pct(0.90),
              "p99_s": pct(0.99), "max_s": round(latencies[-1], 3), "mean_s": round(statistics.mean(latencies), 3),
              "writer_commits": len(writes), "writer_failures": sum(1 for w in writes if w[0] != 0),
              "generation_before": generation0, "generation_after": generation1,
              "generations_seen_in_responses": len(served), "cores": os.cpu_count(),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "server_log_tracebacks": (work / "server.log").read_text().count("Traceback")}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.requests} requests, {args.concurrency} at a time, server --workers {args.workers}, "
          f"{os.cpu_count()} cores, load {result['loadavg_before']} -> {result['loadavg_after']}")
    print(f"latency p50 {result['p50_s']} s, p90 {result['p90_s']} s, p99 {result['p99_s']} s, max {result['max_s']} s")
    print(f"{result['requests_per_s']} requests/s over {result['wall_s']} s; errors {errors} "
          f"(status codes {result['status_codes']})")
    print(f"meanwhile the writer committed {len(writes)} times ({result['writer_failures']} failed); generation "
          f"{generation0} -> {generation1}, {len(served)} generations answered; tracebacks in the server log: "
          f"{result['server_log_tracebacks']}")


if __name__ == "__main__":
    main()

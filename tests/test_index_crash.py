"""SIGKILL a writer that commits in a loop at random moments; the index must reopen consistent."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np

from vcl_infer.index import VideoIndex

DIM = 32
FP = "c" * 64

CHILD = textwrap.dedent("""
    import sys, numpy as np
    from vcl_infer.index import VideoIndex
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    ix = VideoIndex.open(path, writable=True)
    print("ready", flush=True)
    i = 0
    while True:
        for _ in range(5):
            cv = rng.standard_normal((20, %(dim)d)).astype(np.float32)
            ix.add_video(f"/s{seed}/{i}.mp4", size=i, mtime_ns=i, content_hash="", info={},
                         video_vector=cv.mean(0), clip_vectors=cv, windows=[(j, j + 1) for j in range(20)])
            i += 1
        if i %% 15 == 0:
            known = sorted(ix.known_files())
            ix.remove(known[: 3])
        ix.commit()
        print("committed", ix.info()["videos_ok"], flush=True)
""") % {"dim": DIM}


def _file_generations(path):
    db = sqlite3.connect(f"file:{path / 'catalog.sqlite'}?mode=ro", uri=True)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    db.close()
    return int(meta["generation"]), int(meta["clip.generation"]), int(meta["video.generation"])


def test_sigkill_during_commits_leaves_a_consistent_index(tmp_path):
    path = tmp_path / "ix"
    rng = np.random.default_rng(0)
    with VideoIndex.create(path, fingerprint=FP, spec_json="{}", dim=DIM) as ix:  # ~4 MB of clips
        for i in range(600):
            cv = rng.standard_normal((50, DIM)).astype(np.float32)
            ix.add_video(
                f"/base/{i}.mp4",
                size=i,
                mtime_ns=i,
                content_hash="",
                info={},
                video_vector=cv.mean(0),
                clip_vectors=cv,
                windows=[(j, j + 1) for j in range(50)],
            )
    kill_rng = np.random.default_rng(1)
    stale_seen = 0
    trials = 6
    for trial in range(trials):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(trial)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + float(kill_rng.uniform(0.05, 0.6))
        reads = 0
        while time.monotonic() < deadline:  # readers never fail while a writer commits
            with VideoIndex.open(path) as r:
                _, ids = r.search(rng.standard_normal((1, DIM)).astype(np.float32), 3, level="clip")
                r.clip(int(ids[0, 0]))
                reads += 1
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
        gen, cgen, vgen = _file_generations(path)
        stale_seen += min(cgen, vgen) < gen
        with VideoIndex.open(path, writable=True, fingerprint=FP) as ix:  # rebuilds stale files
            assert ix.verify() == []
            info = ix.info()
            db = sqlite3.connect(path / "catalog.sqlite")
            n_ok = db.execute("SELECT COUNT(*) FROM videos WHERE status='ok'").fetchone()[0]
            n_clips = db.execute("SELECT COUNT(*) FROM clips").fetchone()[0]
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            db.close()
            assert (info["videos_ok"], info["clips"]) == (n_ok, n_clips)
            assert ix._index["clip"].ntotal == n_clips and ix._index["video"].ntotal == n_ok
            if acked:  # an acknowledged commit is never lost
                assert n_ok >= acked[-1]
            s, ids = ix.search(rng.standard_normal((3, DIM)).astype(np.float32), 5, level="clip")
            assert (ids >= 0).all()
            ix.clip(int(ids[0, 0]))
        with VideoIndex.open(path) as ix:  # and readers accept it
            assert ix.verify() == []
        print(
            f"trial {trial}: {reads} concurrent reader opens, {len(acked)} commits acknowledged, files stale after kill: "
            f"{min(cgen, vgen) < gen}, videos {n_ok}"
        )
    print(f"{stale_seen}/{trials} kills left stale FAISS files (rebuilt on writable open)")

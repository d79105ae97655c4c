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
import pytest

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
            assert ix.files.loaded["clip"].ntotal == n_clips and ix.files.loaded["video"].ntotal == n_ok
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


# ---------------------------------------------------------------- kill -9 during build, repair and remove

N_VIDEOS = 320
REMOVED = {i for i in range(N_VIDEOS) if i % 7 == 0}

PHASES = textwrap.dedent("""
    import sys, numpy as np
    from vcl_infer.index import VideoIndex
    path, phase = sys.argv[1], sys.argv[2]
    n, dim, removed = %(n)d, %(dim)d, %(removed)r

    def video(i):
        rng = np.random.default_rng(i)
        cv = rng.standard_normal((3 + i %% 6, dim)).astype(np.float32)
        return cv, [(2.0 * j, 2.0 * j + 1.5) for j in range(len(cv))]

    print("ready", flush=True)
    if phase == "build":  # incremental and resumable, as the real build: skip what is already in
        ix = VideoIndex.open_or_create(path, fingerprint="%(fp)s", spec_json="{}", dim=dim)
        known = ix.known_files()
        todo = [i for i in range(n) if f"/v/{i:03d}.mp4" not in known]
        for pos, i in enumerate(todo):
            cv, windows = video(i)
            ix.add_video(f"/v/{i:03d}.mp4", size=i, mtime_ns=i, content_hash="", info={},
                         video_vector=cv.mean(0), clip_vectors=cv, windows=windows)
            if pos %% 5 == 4:
                ix.commit()
        ix.commit()
    elif phase == "repair":
        VideoIndex.open(path, writable=True, repair=True).close()
    else:
        ix = VideoIndex.open(path, writable=True)
        for pos, i in enumerate(sorted(removed)):
            ix.remove([f"/v/{i:03d}.mp4"])
            if pos %% 3 == 2:
                ix.commit()
        ix.commit()
    ix = None
    print("done", flush=True)
""") % {"n": N_VIDEOS, "dim": DIM, "removed": sorted(REMOVED), "fp": FP}


def _run_phase(path, phase: str, delay_s: float | None) -> bool | float:
    """Run one phase in a child; SIGKILL it ``delay_s`` after it is ready. True when it was killed
    mid-work; with no delay, the seconds the phase took from ready to done."""
    child = subprocess.Popen([sys.executable, "-c", PHASES, str(path), phase], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    if delay_s is None:
        t0 = time.monotonic()
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0 and "done" in out
        return time.monotonic() - t0
    time.sleep(delay_s)
    os.kill(child.pid, signal.SIGKILL)
    out, _ = child.communicate(timeout=60)
    return "done" not in out


def _contents(path) -> dict:
    """path -> (windows, clip vectors bytes, video vector bytes) straight from the catalog."""
    db = sqlite3.connect(f"file:{path / 'catalog.sqlite'}?mode=ro", uri=True)
    out = {}
    for vid, name, vector in db.execute("SELECT id, path, vector FROM videos WHERE status = 'ok'"):
        clips = db.execute("SELECT start_sec, end_sec, vector FROM clips WHERE video_id = ? ORDER BY id", (vid,))
        clips = clips.fetchall()
        out[name] = ([(a, b) for a, b, _ in clips], b"".join(v for _, _, v in clips), vector)
    db.close()
    return out


@pytest.mark.slow
def test_kill_9_during_build_repair_and_remove_ends_as_an_uninterrupted_run(tmp_path):
    """At least 10 SIGKILLs (>= 3 each in repair and remove) at random moments; the resumed phases end
    with the same rows, windows and vectors, bit for bit, as an uninterrupted run, and verify clean."""
    reference = tmp_path / "reference"
    # kill delays scale with how long each phase takes on this machine (an idle machine finishes a
    # phase in a fraction of what a loaded one needs): each kill leaves most of the work undone
    took = {phase: _run_phase(reference, phase, None) for phase in ("build", "repair", "remove")}
    killed_dir = tmp_path / "killed"
    rng = np.random.default_rng(11)
    kills = {}
    for phase, wanted in (("build", 4), ("repair", 3), ("remove", 3)):
        kills[phase], longest, attempts = 0, max(0.01, float(took[phase]) / (wanted + 2)), 0
        while kills[phase] < wanted and attempts < 40:
            attempts += 1
            if _run_phase(killed_dir, phase, float(rng.uniform(0.0, longest))):
                kills[phase] += 1
            elif phase != "repair":  # it finished first: nothing left to kill in this phase
                break
            else:
                longest /= 2
        _run_phase(killed_dir, phase, None)  # then let it finish
        with VideoIndex.open(killed_dir) as ix:
            assert ix.verify() == [], phase
    print(f"kills: {kills}")
    assert sum(kills.values()) >= 10 and all(kills[p] >= 3 for p in ("repair", "remove")), kills
    assert _contents(killed_dir) == _contents(reference)
    assert len(_contents(reference)) == N_VIDEOS - len(REMOVED)
    q = np.random.default_rng(3).standard_normal((5, DIM)).astype(np.float32)
    with VideoIndex.open(killed_dir) as a, VideoIndex.open(reference) as b:
        ids_a = a.search(q, 5, level="clip")[1]
        ids_b = b.search(q, 5, level="clip")[1]
        assert [[a.clip(int(c)).path for c in r] for r in ids_a] == [[b.clip(int(c)).path for c in r] for r in ids_b]


def test_a_create_killed_before_its_first_commit_is_started_again(tmp_path):
    """SIGKILL inside create, after SQLite made the catalog file but before the schema committed (what the
    kill loop above met under load): the next open_or_create starts the create again instead of calling
    the folder a damaged index. A catalog with metadata is never cleared."""
    index_dir = tmp_path / "ix"
    index_dir.mkdir()
    (index_dir / ".lock").write_text("")
    db = sqlite3.connect(index_dir / "catalog.sqlite")
    db.execute("PRAGMA journal_mode=WAL")  # the file exists, no table yet
    db.close()
    with VideoIndex.open_or_create(index_dir, fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        assert ix.info()["videos_ok"] == 0 and ix.dim == DIM
    with VideoIndex.open_or_create(index_dir, fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        assert ix.info()["generation"] >= 1  # reopened, not created again
    with pytest.raises(Exception, match="encoder"):
        VideoIndex.open_or_create(index_dir, fingerprint="d" * 64, spec_json="{}", dim=DIM)

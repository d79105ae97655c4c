"""Faults the index meets in the field (issue 11 items 1, 3-6, 9): each ends in a clear error naming
the fix, never a traceback, and never in an index made worse than it was."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from vcl_infer.cli.index import main as index_cli
from vcl_infer.index import IndexCorrupt, VideoIndex
from vcl_infer.index.errors import IndexDiskFull

DIM = 16
FP = "a" * 64
BAD_NAME = os.fsdecode(b"/videos/bad_\xff\xfe_name.mp4")  # what os.walk hands out for such a file


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _add(ix, rng, name, n_clips=4):
    cv = _unit(rng, n_clips)
    ix.add_video(name, size=10, mtime_ns=5, content_hash="", info={}, video_vector=cv.mean(0),
                 clip_vectors=cv, windows=[(j, j + 1.0) for j in range(n_clips)])
    return cv


@pytest.fixture()
def index_dir(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ix"
    with VideoIndex.create(path, fingerprint=FP, spec_json="{}", dim=DIM) as ix:
        for i in range(40):
            _add(ix, rng, f"/videos/{i:03d}.mp4")
        ix.add_failure("/videos/broken.mp4", size=1, mtime_ns=1, error_kind="corrupt", error="no frame")
    return path


def _snapshot(path):
    """Every stored clip (path, window, vector) and the search answer to fixed queries."""
    with VideoIndex.open(path) as ix:
        rows = {}
        for vid in [r[0] for r in ix.catalog.db.execute("SELECT id FROM videos WHERE status='ok'")]:
            rec = ix.video(vid)
            rows[rec.path] = ([(c.start_sec, c.end_sec) for c in ix.clips_of(vid)], ix.clip_vectors(vid))
        q = _unit(np.random.default_rng(9), 8)
        _, ids = ix.search(q, 5, level="clip")
        answer = [[ix.clip(int(c)).path for c in row] for row in ids]
    return rows, answer


def _same(a, b):
    assert a[1] == b[1] and set(a[0]) == set(b[0])
    for p in a[0]:
        assert a[0][p][0] == b[0][p][0]
        np.testing.assert_array_equal(a[0][p][1], b[0][p][1])


def _cli(*args):
    result = CliRunner().invoke(index_cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _read_side_errors(path) -> list[str]:
    """The messages of info, verify and repair (CLI) and of a search's index open (API)."""
    from vcl_infer.errors import VclError
    from vcl_infer.search.query import search_index

    messages = [_cli(cmd, str(path)).output for cmd in ("info", "verify")]
    with pytest.raises(VclError) as err:
        search_index(path, "/nonexistent-query.mp4")
    messages.append(str(err.value))
    messages.append(_cli("repair", str(path)).output)
    return messages


# ------------------------------------------------------------------ item 1: non-UTF-8 file names


def test_non_utf8_file_name_is_stored_losslessly(index_dir):
    rng = np.random.default_rng(1)
    with VideoIndex.open(index_dir, writable=True) as ix:
        cv = _add(ix, rng, BAD_NAME)
        ix.add_failure(os.fsdecode(b"/videos/also_\xff.mp4"), size=1, mtime_ns=1, error_kind="corrupt", error="x")
    with VideoIndex.open(index_dir) as ix:
        assert ix.verify() == []
        known = ix.known_files()
        assert known[BAD_NAME] == (10, 5, "ok") and os.fsencode(BAD_NAME) == b"/videos/bad_\xff\xfe_name.mp4"
        _, ids = ix.search(cv[:1], 1, level="clip")
        assert ix.clip(int(ids[0, 0])).path == BAD_NAME
        vid = ix.video_id(BAD_NAME)
        assert ix.video(vid).path == BAD_NAME
        np.testing.assert_allclose(ix.clip_vectors(vid), cv, atol=1e-6)
        assert {f.path for f in ix.failures()} >= {os.fsdecode(b"/videos/also_\xff.mp4")}
    with VideoIndex.open(index_dir, writable=True) as ix:  # replacing and removing it works too
        _add(ix, rng, BAD_NAME)
        assert ix.remove([BAD_NAME]) == 1
    with VideoIndex.open(index_dir) as ix:
        assert BAD_NAME not in ix.known_files() and ix.verify() == []


@pytest.mark.slow
def test_build_goes_on_past_a_non_utf8_file_name(tmp_path):
    from test_build_corpus import bundle, corpus

    from vcl_infer.index.build import build_index
    from vcl_infer.index.catalog import printable_path

    folder = tmp_path / "videos"
    folder.mkdir()
    good, other = sorted((corpus() / "gen").glob("short_*.mp4"))[:2]
    shutil.copy2(good, folder / "good.mp4")
    bad = os.path.join(os.fsencode(folder), b"bad_\xff\xfe_name.mp4")
    shutil.copy2(other, bad)
    kw = dict(model=bundle(), clips=2, workers=1, progress=False)
    report = build_index(folder, tmp_path / "ix", **kw)
    assert report.added + len(report.failed) == 2 and report.completed
    with VideoIndex.open(tmp_path / "ix") as ix:
        known = ix.known_files()
    assert os.fsdecode(bad) in known and str(folder / "good.mp4") in known
    again = build_index(folder, tmp_path / "ix", **kw)  # the re-run skips it, it does not die on it
    assert again.skipped == 2
    assert "\\xff\\xfe" in printable_path(os.fsdecode(bad))


# ------------------------------------------------------------------ item 3: truncated catalog


def test_truncated_catalog_gives_index_corrupt_from_every_entry_point(index_dir):
    before = {p.name: p.read_bytes() for p in index_dir.iterdir() if p.is_file()}
    catalog = index_dir / "catalog.sqlite"
    catalog.write_bytes(before["catalog.sqlite"][: len(before["catalog.sqlite"]) // 2])
    for message in _read_side_errors(index_dir):
        assert "catalog" in message and ("build the index again" in message or "repair" in message), message
    for writable in (False, True):
        with pytest.raises(IndexCorrupt, match="catalog"):
            VideoIndex.open(index_dir, writable=writable)
    assert (index_dir / "clips.faiss").read_bytes() == before["clips.faiss"]  # repair changed nothing


# ------------------------------------------------------------------ item 4: damaged catalog header


@pytest.mark.parametrize("offset", [18, 20, 28, 32, 52, 64])
def test_repair_never_makes_a_damaged_catalog_worse(index_dir, offset):
    healthy = _snapshot(index_dir)
    catalog = index_dir / "catalog.sqlite"
    raw = bytearray(catalog.read_bytes())
    raw[offset] ^= 0x40
    catalog.write_bytes(bytes(raw))
    files = {n: (index_dir / n).read_bytes() for n in ("clips.faiss", "videos.faiss")}
    result = _cli("repair", str(index_dir))
    if result.exit_code == 0:  # recovered: complete, verified, the same answers
        assert "recovered" in result.output or "repaired" in result.output
        assert _cli("verify", str(index_dir)).exit_code == 0
        _same(_snapshot(index_dir), healthy)
        with VideoIndex.open(index_dir) as ix:
            assert {f.path for f in ix.failures()} == {"/videos/broken.mp4"}
    else:  # refused: says why and what to do, and left every file as it was
        assert "build the index again" in result.output, result.output
        assert catalog.read_bytes() == bytes(raw)
        assert {n: (index_dir / n).read_bytes() for n in files} == files


def test_recovery_refuses_when_rows_are_missing(index_dir):
    """Rows lost from a damaged catalog are caught by the counts recorded at commit: repair refuses
    to swap in a short catalog. (Rows deleted behind the index's back stand in for a lost page.)"""
    db = sqlite3.connect(index_dir / "catalog.sqlite")
    db.execute("DELETE FROM clips WHERE id IN (SELECT id FROM clips LIMIT 3)")
    db.commit()
    db.close()
    catalog = index_dir / "catalog.sqlite"
    raw = bytearray(catalog.read_bytes())
    raw[32] ^= 0x40  # a broken freelist pointer: integrity_check fails, the rows stay readable
    catalog.write_bytes(bytes(raw))
    result = _cli("repair", str(index_dir))
    assert result.exit_code != 0 and "not provably all of them" in result.output, result.output
    assert "157 clip rows read, 160 recorded" in result.output and "build the index again" in result.output
    assert catalog.read_bytes() == bytes(raw)


# ------------------------------------------------------------------ item 5: deleted -wal after a kill

CHILD = textwrap.dedent("""
    import sys, numpy as np
    from vcl_infer.index import VideoIndex
    rng = np.random.default_rng(5)
    ix = VideoIndex.open(sys.argv[1], writable=True)
    for i in range(30):
        cv = rng.standard_normal((4, %d)).astype(np.float32)
        ix.add_video(f"/late/{i}.mp4", size=1, mtime_ns=1, content_hash="", info={}, video_vector=cv.mean(0),
                     clip_vectors=cv, windows=[(j, j + 1) for j in range(4)])
        ix.commit()
    print("done", flush=True)
    sys.stdin.read()
""") % DIM


def test_deleted_wal_after_a_kill_is_explained_and_repairable(index_dir):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(index_dir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "done"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    wal = index_dir / "catalog.sqlite-wal"
    assert wal.exists() and (index_dir / "catalog.sqlite-shm").exists()
    wal.unlink()
    *messages, repaired = _read_side_errors(index_dir)  # info, verify, search; then repair
    for message in messages:
        assert "catalog.sqlite-wal is missing" in message and "put it back" in message, message
        assert "vcl-index repair" in message and "re-adds the lost videos" in message
    assert "repaired" in repaired  # rebuilt from what the catalog still holds
    assert _cli("verify", str(index_dir)).exit_code == 0 and not (index_dir / "catalog.sqlite-wal-lost").exists()


# ------------------------------------------------------------------ item 6: disk full


def test_disk_full_in_the_catalog_says_so_and_keeps_the_last_commit(index_dir):
    before = _snapshot(index_dir)
    rng = np.random.default_rng(2)
    ix = VideoIndex.open(index_dir, writable=True)
    pages = ix.catalog.db.execute("PRAGMA page_count").fetchone()[0]
    ix.catalog.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk fills after two more pages
    with pytest.raises(IndexDiskFull, match=r"disk is full.*as of its last commit.*re-run"):
        for i in range(200):
            _add(ix, rng, f"/more/{i}.mp4", n_clips=20)
        ix.commit()
    ix.close()
    assert _cli("verify", str(index_dir)).exit_code == 0
    _same(_snapshot(index_dir), before)


def test_disk_full_writing_a_faiss_file_says_so_and_repairs(index_dir, monkeypatch):
    import errno

    from vcl_infer.index import segments  # where the FAISS files are written

    rng = np.random.default_rng(3)
    ix = VideoIndex.open(index_dir, writable=True)
    _add(ix, rng, "/more/x.mp4")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments.os, "fsync", full)
    with pytest.raises(IndexDiskFull, match=r"clips\.faiss.*vcl-index repair"):
        ix.commit()
    monkeypatch.undo()
    ix.close()
    assert not list(index_dir.glob(".*tmp*"))  # no half-written temp file left
    with pytest.raises(IndexCorrupt, match="older than the catalog"):
        VideoIndex.open(index_dir)  # the stale file is refused, never answered
    assert _cli("repair", str(index_dir)).exit_code == 0
    with VideoIndex.open(index_dir) as ix:
        assert ix.verify() == [] and "/more/x.mp4" in ix.known_files()


# ------------------------------------------------------------------ item 9: vector checksums


def _flip_in_file(catalog, vector: np.ndarray) -> None:
    raw = bytearray(catalog.read_bytes())
    pos = bytes(raw).find(vector.astype("<f4").tobytes())
    assert pos > 0
    raw[pos + 9] ^= 0x10
    catalog.write_bytes(bytes(raw))


def test_flipped_byte_in_a_stored_vector_is_caught_and_restored(index_dir):
    healthy = _snapshot(index_dir)
    with VideoIndex.open(index_dir) as ix:
        vid = ix.video_id("/videos/007.mp4")
        target = ix.clip_vectors(vid)[2]
    _flip_in_file(index_dir / "catalog.sqlite", target)
    with VideoIndex.open(index_dir) as ix:  # the FAISS files are intact, so search still opens
        problems = ix.verify()
        assert any("fail their checksum" in p and "vcl-index repair" in p for p in problems), problems
        with pytest.raises(IndexCorrupt, match="checksum"):
            ix.clip_vectors(vid)  # never handed out
    result = _cli("repair", str(index_dir))
    assert result.exit_code == 0 and "1 damaged stored vector(s) restored exactly" in result.output
    assert _cli("verify", str(index_dir)).exit_code == 0
    _same(_snapshot(index_dir), healthy)


def test_damaged_vector_without_an_exact_copy_is_removed_for_re_embedding(index_dir):
    with VideoIndex.open(index_dir) as ix:
        target = ix.clip_vectors(ix.video_id("/videos/011.mp4"))[0]
    _flip_in_file(index_dir / "catalog.sqlite", target)
    (index_dir / "clips.faiss").write_bytes(b"damaged too")
    result = _cli("repair", str(index_dir))
    assert result.exit_code == 0 and "/videos/011.mp4" in result.output and "re-run the build" in result.output
    with VideoIndex.open(index_dir) as ix:
        assert ix.verify() == [] and "/videos/011.mp4" not in ix.known_files()
        assert ix.info()["videos_ok"] == 39


def test_format_1_catalog_is_read_then_migrated(index_dir):
    healthy = _snapshot(index_dir)
    db = sqlite3.connect(index_dir / "catalog.sqlite")
    db.execute("ALTER TABLE clips DROP COLUMN checksum")
    db.execute("ALTER TABLE videos DROP COLUMN vector_checksum")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with VideoIndex.open(index_dir) as ix:  # read as is; verify says the vectors cannot be checked
        assert any("format 1" in p for p in ix.verify())
    with VideoIndex.open(index_dir, writable=True) as ix:
        assert ix.verify() == [] and ix.info()["format_version"] == 2
    _same(_snapshot(index_dir), healthy)

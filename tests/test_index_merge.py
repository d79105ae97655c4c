"""``vcl-index merge``: shards of one encoder merge into the index one build over all would give."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from vcl_infer.cli.index import main as index_cli
from vcl_infer.index import EncoderMismatch, IndexExists, VideoIndex
from vcl_infer.index.merge import merge_indexes

DIM = 16
FP = "b" * 64


def _video(i):
    rng = np.random.default_rng(i)
    cv = rng.standard_normal((2 + i % 4, DIM)).astype(np.float32)
    return cv, [(1.5 * j, 1.5 * j + 1.0) for j in range(len(cv))]


def _make(path, numbers, fingerprint=FP, spec="{}"):
    with VideoIndex.create(path, fingerprint=fingerprint, spec_json=spec, dim=DIM) as ix:
        for i in numbers:
            cv, windows = _video(i)
            ix.add_video(f"/v/{i:03d}.mp4", size=i, mtime_ns=i, content_hash=f"h{i}", info={"fps": 25.0},
                         video_vector=cv.mean(0), clip_vectors=cv, windows=windows)
            if i % 10 == 3:
                ix.add_failure(f"/v/bad{i}.mp4", size=1, mtime_ns=1, error_kind="corrupt", error="no frame")


def contents(path) -> dict:
    """path -> (status, record fields, windows, clip vectors, video vector) by path (ids may differ)."""
    out = {}
    with VideoIndex.open(path) as ix:
        assert ix.verify() == []
        for name in ix.known_files():
            rec = ix.video(ix.video_id(name))
            if rec.status != "ok":
                out[name] = (rec.status, rec.error_kind, rec.error)
                continue
            vector = ix.catalog.db.execute("SELECT vector FROM videos WHERE id = ?", (rec.id,)).fetchone()[0]
            out[name] = (rec.status, rec.size, rec.mtime_ns, rec.content_hash, rec.fps,
                         [(c.start_sec, c.end_sec) for c in ix.clips_of(rec.id)],
                         ix.clip_vectors(rec.id).tobytes(), vector)
    return out


def _answers(path, queries):
    with VideoIndex.open(path) as ix:
        _, clip_ids = ix.search(queries, 5, level="clip")
        _, video_ids = ix.search(queries, 3, level="video")
        return ([[ix.clip(int(c)).path for c in r] for r in clip_ids],
                [[ix.video(int(v)).path for v in r] for r in video_ids])


def test_merge_equals_one_index_over_everything(tmp_path):
    _make(tmp_path / "a", range(0, 60))
    _make(tmp_path / "b", range(60, 130))
    _make(tmp_path / "all", range(0, 130))
    result = CliRunner().invoke(index_cli, ["merge", str(tmp_path / "a"), str(tmp_path / "b"),
                                            "--into", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    merged, reference = contents(tmp_path / "c"), contents(tmp_path / "all")
    assert merged == reference and len(merged) == 130 + 13  # bit for bit, failures included
    q = np.random.default_rng(5).standard_normal((6, DIM)).astype(np.float32)
    assert _answers(tmp_path / "c", q) == _answers(tmp_path / "all", q)


def test_merge_refuses_other_encoders_and_a_used_folder(tmp_path):
    _make(tmp_path / "a", range(5))
    _make(tmp_path / "other", range(5, 9), fingerprint="c" * 64)
    _make(tmp_path / "respec", range(5, 9), spec='{"crop_size": 112}')
    with pytest.raises(EncoderMismatch, match="same encoder"):
        merge_indexes([tmp_path / "a", tmp_path / "other"], tmp_path / "c")
    with pytest.raises(EncoderMismatch, match="preprocessing"):
        merge_indexes([tmp_path / "a", tmp_path / "respec"], tmp_path / "c")
    with pytest.raises(IndexExists, match="not empty"):
        merge_indexes([tmp_path / "a", tmp_path / "a"], tmp_path / "other")
    result = CliRunner().invoke(index_cli, ["merge", str(tmp_path / "a"), str(tmp_path / "other"),
                                            "--into", str(tmp_path / "c")])
    assert result.exit_code == 1 and "same encoder" in result.output and result.exception.__class__ is SystemExit
    assert not (tmp_path / "c").exists()


def test_a_merge_that_dies_leaves_no_index_behind(tmp_path, monkeypatch):
    from vcl_infer.index import merge

    _make(tmp_path / "a", range(0, 40))
    _make(tmp_path / "b", range(40, 80))
    monkeypatch.setattr(merge, "COMMIT_EVERY", 10)
    calls = {"n": 0}
    real = VideoIndex.commit

    def dying_commit(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as a Ctrl-C or a kill mid-merge
        return real(self)

    monkeypatch.setattr(VideoIndex, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        merge_indexes([tmp_path / "a", tmp_path / "b"], tmp_path / "c")
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.merging-*"))


@pytest.mark.slow
def test_merge_of_two_built_folders_equals_one_build_over_both(tmp_path):
    from test_build_corpus import bundle, corpus

    from vcl_infer.index.build import build_index

    root = tmp_path / "videos"
    sources = sorted((corpus() / "gen").glob("short_*.mp4"))[:5]
    for k, src in enumerate(sources):
        (root / ("a" if k < 3 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / ("a" if k < 3 else "b") / src.name)
    (root / "b" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    kw = dict(model=bundle(), clips=2, workers=1, progress=False)
    build_index(root, tmp_path / "all", **kw)
    build_index(root / "a", tmp_path / "ia", **kw)
    build_index(root / "b", tmp_path / "ib", **kw)
    merge_indexes([tmp_path / "ia", tmp_path / "ib"], tmp_path / "merged")
    merged, reference = contents(tmp_path / "merged"), contents(tmp_path / "all")
    assert set(merged) == set(reference) and len(merged) == 6
    for name, ref in reference.items():  # same videos, windows and vectors, bit for bit
        assert merged[name] == ref, name

"""Label sources for vcl-classify / vcl-eval: class folders, UCF101 and HMDB51 splits, CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcl_infer.probe.labels import load_labels, read_csv_labels, source_has_splits


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_class_folders(tmp_path):
    for rel in ("walk/a.mp4", "walk/b.avi", "run/c.mp4", "empty/notes.txt"):
        touch(tmp_path / rel)
    items, classes = load_labels(tmp_path)
    assert classes == ["run", "walk"]
    assert [(Path(i.path).name, i.label) for i in items] == [("c.mp4", 0), ("a.mp4", 1), ("b.avi", 1)]
    assert not source_has_splits(tmp_path)
    with pytest.raises(ValueError, match="no train/test split"):
        load_labels(tmp_path, subset="test")  # never silently evaluate on the training set


def test_ucf101_split_files(tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (tmp_path / "splits/trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\nBowling/v_Bowling_g01_c01.avi 2\n")
    (tmp_path / "splits/testlist01.txt").write_text("Bowling/v_Bowling_g02_c01.avi\n")
    for rel in ("Archery/v_Archery_g01_c01.avi", "Bowling/v_Bowling_g01_c01.avi", "Bowling/v_Bowling_g02_c01.avi"):
        touch(tmp_path / "videos" / rel)
    assert source_has_splits(tmp_path)
    train, classes = load_labels(tmp_path, subset="train")
    test, _ = load_labels(tmp_path, subset="test")
    everything, _ = load_labels(tmp_path, subset="all")
    assert classes == ["Archery", "Bowling"]
    assert [i.label for i in train] == [0, 1] and [i.label for i in test] == [1]
    assert test[0].path == str(tmp_path / "videos/Bowling/v_Bowling_g02_c01.avi")
    assert test[0].group == "Bowling_g02" and len(everything) == 3


def test_hmdb51_split_files(tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/jump_test_split1.txt").write_text("j1.avi 1\nj2.avi 2\nj3.avi 0\n")
    (tmp_path / "splits/sit_test_split1.txt").write_text("s1.avi 2\ns2.avi 1\n")
    test, classes = load_labels(tmp_path, subset="test")
    assert classes == ["jump", "sit"]
    assert [(Path(i.path).name, i.label) for i in test] == [("j2.avi", 0), ("s1.avi", 1)]


def test_csv_with_and_without_header_and_split(tmp_path):
    (tmp_path / "a.csv").write_text("path,label,split\nclips/x.mp4,wave,train\n/abs/y.mp4,clap,test\nz.mp4,wave,test\n")
    items, classes = read_csv_labels(tmp_path / "a.csv")
    assert classes == ["clap", "wave"]
    assert [(i.path, i.label) for i in items] == [
        (str(tmp_path / "clips/x.mp4"), 1), ("/abs/y.mp4", 0), (str(tmp_path / "z.mp4"), 1)]
    test, test_classes = load_labels(tmp_path / "a.csv", subset="test")
    assert test_classes == classes and [i.label for i in test] == [0, 1]  # ids agree across sides
    assert source_has_splits(tmp_path / "a.csv")

    (tmp_path / "b.csv").write_text("v1.mp4,10\nv2.mp4,2\n")  # no header, numeric labels sort numerically
    items, classes = read_csv_labels(tmp_path / "b.csv")
    assert classes == ["2", "10"] and [i.label for i in items] == [1, 0]
    with pytest.raises(ValueError, match="no split column"):
        load_labels(tmp_path / "b.csv", subset="train")
    (tmp_path / "c.csv").write_text("path,label\nonly_a_path.mp4\n")
    with pytest.raises(ValueError, match="row 1"):
        read_csv_labels(tmp_path / "c.csv")


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "nope")

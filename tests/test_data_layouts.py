"""Data set layouts: UCF101 / HMDB51 split files, class folders, plain folders, leakage."""

import logging
from pathlib import Path

import pytest

from training.data.layouts import (
    VideoItem,
    class_folders,
    group_leakage,
    hmdb51_split,
    load_layout,
    scan_videos,
    ucf101_split,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


UCF_TRAIN = [
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi 1",
    "Archery/v_Archery_g09_c01.avi 3",
    "ApplyLipstick/v_ApplyLipstick_g10_c01.avi 2",
]
UCF_TEST = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c03.avi"]


def make_ucf(root: Path, test=UCF_TEST, folder="ucfTrainTestlist") -> Path:
    splits = root / folder
    splits.mkdir(parents=True)
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
    (splits / "trainlist01.txt").write_text("\r\n".join(UCF_TRAIN) + "\r\n")  # the official files are CRLF
    (splits / "testlist01.txt").write_text("\n".join(test) + "\n")
    for line in UCF_TRAIN + list(test):
        touch(root / line.split()[0])
    return splits


def test_ucf101_split_parses_labels_and_groups(tmp_path):
    splits = make_ucf(tmp_path)
    train, classes = ucf101_split(tmp_path, splits, 1, "train")
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [i.label for i in train] == [0, 0, 2, 1]
    assert train[0] == VideoItem(str(tmp_path / UCF_TRAIN[0].split()[0]), 0, "ApplyEyeMakeup_g08")
    test, _ = ucf101_split(tmp_path, splits, 1, "test")
    assert [(i.label, i.group) for i in test] == [(0, "ApplyEyeMakeup_g01"), (2, "Archery_g01")]
    assert group_leakage(train, test) == []
    with pytest.raises(ValueError):
        ucf101_split(tmp_path, splits, 1, "val")


def test_load_layout_detects_ucf101_and_warns_on_leakage(tmp_path, caplog):
    leaky = UCF_TEST + ["Archery/v_Archery_g09_c02.avi"]  # g09 is also in train
    make_ucf(tmp_path, test=leaky)
    with caplog.at_level(logging.WARNING, logger="training.data.layouts"):
        items, classes = load_layout(tmp_path, subset="test")
    assert len(items) == 3 and len(classes) == 3
    assert "Archery_g09" in caplog.text
    train, _ = load_layout(tmp_path)
    assert group_leakage(train, items) == ["Archery_g09"]


def test_load_layout_ucf101_with_videos_subfolder(tmp_path, caplog):
    make_ucf(tmp_path / "videos", folder="../splits")
    with caplog.at_level(logging.WARNING):
        items, classes = load_layout(tmp_path)
    assert len(items) == 4 and all(Path(i.path).is_file() for i in items)
    assert "leakage" not in caplog.text and "missing" not in caplog.text


def make_hmdb(root: Path) -> Path:
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "brush_hair_test_split2.txt").write_text("a.avi 2 \nb.avi 1 \nc.avi 1 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2 \ne.avi 1 \nf.avi 1 \n")
    for name in "abc":
        touch(root / "brush_hair" / f"{name}.avi")
    for name in "def":
        touch(root / "cartwheel" / f"{name}.avi")
    return splits


def test_hmdb51_split(tmp_path):
    splits = make_hmdb(tmp_path)
    train, classes = hmdb51_split(tmp_path, splits, 1, "train")
    assert classes == ["brush_hair", "cartwheel"]
    assert [(Path(i.path).name, i.label) for i in train] == [("a.avi", 0), ("e.avi", 1), ("f.avi", 1)]
    test, _ = hmdb51_split(tmp_path, splits, 1, "test")
    assert [Path(i.path).name for i in test] == ["b.avi", "d.avi"]
    assert test[0].path == str(tmp_path / "brush_hair" / "b.avi")
    train2, classes2 = hmdb51_split(tmp_path, splits, 2, "train")
    assert classes2 == ["brush_hair"] and len(train2) == 2
    items, _ = load_layout(tmp_path, subset="test")
    assert [i.path for i in items] == [i.path for i in test]


def test_class_folders_and_plain_folder(tmp_path):
    touch(tmp_path / "b_class" / "x.mp4")
    touch(tmp_path / "b_class" / "nested" / "y.MKV")
    touch(tmp_path / "a_class" / "z.avi")
    touch(tmp_path / "a_class" / "notes.txt")
    (tmp_path / "empty_class").mkdir()
    items, classes = class_folders(tmp_path)
    assert classes == ["a_class", "b_class"]
    assert [(Path(i.path).name, i.label) for i in items] == [("z.avi", 0), ("y.MKV", 1), ("x.mp4", 1)]
    assert load_layout(tmp_path) == (items, classes)
    assert [Path(i.path).name for i in scan_videos(tmp_path)] == ["z.avi", "y.MKV", "x.mp4"]
    # a loose video at the top level: not a class-per-folder set, so plain and unlabelled
    touch(tmp_path / "loose.webm")
    items, classes = load_layout(tmp_path)
    assert classes == [] and len(items) == 4 and {i.label for i in items} == {-1}


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_layout(tmp_path / "nope")

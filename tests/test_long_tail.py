"""Long-tailed train splits: the exponential profile, seeding, the files written, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from training.data.layouts import load_layout
from training.data.long_tail import long_tail_counts, select_long_tail, write_long_tail_split
from training.synth_cli import main as synth_main


def _ucf_layout(root: Path, per_class: dict[str, int], test_per_class: int = 2) -> Path:
    """A UCF101-style layout with empty placeholder files (only the lists matter here)."""
    splits = root / "splits"
    splits.mkdir(parents=True)
    classes = sorted(per_class)
    (splits / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    train, test = [], []
    for k, cls in enumerate(classes):
        (root / "videos" / cls).mkdir(parents=True)
        for i in range(per_class[cls] + test_per_class):
            rel = f"{cls}/v_{cls}_g{i + 1:02d}_c01.avi"
            (root / "videos" / rel).write_bytes(b"")
            if i < per_class[cls]:
                train.append(f"{rel} {k + 1}")
            else:
                test.append(rel)
    (splits / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.mark.parametrize("n_max,classes,rho,expected", [
    (100, 5, 10.0, [100, 56, 31, 17, 10]),   # 100 * 10**(-i/4)
    (8, 2, 4.0, [8, 2]),
    (8, 1, 4.0, [8]),
    (20, 4, 1.0, [20, 20, 20, 20]),
    (3, 3, 100.0, [3, 1, 1]),                # at least one video per class
])
def test_profile_is_exponential(n_max, classes, rho, expected):
    assert long_tail_counts(n_max, classes, rho) == expected


@pytest.mark.parametrize("rho", [0.5, float("nan"), float("inf")])
def test_bad_rho_is_rejected(rho):
    with pytest.raises(ValueError, match="rho"):
        long_tail_counts(10, 3, rho)


def test_selection_is_seeded_and_follows_the_profile():
    labels = [c for c in range(4) for _ in range(30)]
    kept, order = select_long_tail(labels, 4, 27.0, seed=5)
    again, order2 = select_long_tail(labels, 4, 27.0, seed=5)
    other, order3 = select_long_tail(labels, 4, 27.0, seed=6)
    assert (kept, order) == (again, order2) and (kept, order) != (other, order3)
    assert sorted(order) == [0, 1, 2, 3] and kept == sorted(kept)
    per_class = [sum(labels[r] == c for r in kept) for c in order]
    assert per_class == [30, 10, 3, 1]  # 30 * 27**(-i/3)


def test_writes_a_new_split_and_keeps_the_test_side(tmp_path):
    root = _ucf_layout(tmp_path / "d", {"A": 10, "B": 10, "C": 10})
    splits = root / "splits"
    test_before = (splits / "testlist01.txt").read_bytes()
    result = write_long_tail_split(root, 10.0, seed=1)
    assert result.split == 2 and result.train_list == splits / "trainlist02.txt"
    assert sorted(result.counts.values(), reverse=True) == list(result.counts.values()) == [10, 3, 1]
    assert (splits / "testlist01.txt").read_bytes() == test_before == (splits / "testlist02.txt").read_bytes()
    full, classes = load_layout(root)
    lt, classes_lt = load_layout(root, split=2)
    assert classes == classes_lt and len(full) == 30 and len(lt) == 14
    assert {i.path for i in lt} <= {i.path for i in full}
    assert load_layout(root, split=2, subset="test")[0] == load_layout(root, subset="test")[0]
    manifest = json.loads((splits / "long_tail.json").read_text())
    assert manifest["2"]["rho"] == 10.0 and manifest["2"]["counts"] == result.counts
    # the same call reuses its number; a different rho gets the next one
    assert write_long_tail_split(root, 10.0, seed=1).split == 2
    assert write_long_tail_split(root, 5.0, seed=1).split == 3


def test_refuses_to_overwrite_foreign_lists_and_unlabelled_folders(tmp_path):
    root = _ucf_layout(tmp_path / "d", {"A": 4, "B": 4})
    (root / "splits" / "trainlist02.txt").write_text("A/v_A_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match="not a long-tailed split"):
        write_long_tail_split(root, 2.0, out_split=2)
    with pytest.raises(ValueError, match="source split"):
        write_long_tail_split(root, 2.0, out_split=1)
    with pytest.raises(FileNotFoundError, match="split 7"):
        write_long_tail_split(root, 2.0, split=7)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="no labelled layout"):
        write_long_tail_split(plain, 2.0)


def test_class_folders_get_split_files(tmp_path):
    root = tmp_path / "folders"
    for cls, n in (("cat", 6), ("dog", 6)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{cls}{i}.mp4").write_bytes(b"")
    before, classes = load_layout(root)
    result = write_long_tail_split(root, 3.0)
    assert result.split == 2 and sorted(result.counts.values()) == [2, 6]
    after, classes_after = load_layout(root)  # split 1 still lists every video
    assert classes_after == classes and [(i.path, i.label) for i in after] == [(i.path, i.label) for i in before]
    assert len(load_layout(root, split=2)[0]) == 8


def test_cli_generates_with_a_long_tail_and_handles_existing_sets(tmp_path):
    out = tmp_path / "synth"
    r = CliRunner().invoke(synth_main, [str(out), "--classes", "3", "--videos-per-class", "8", "--frames", "4",
                                        "--size", "16", "--test-fraction", "0.5", "--long-tail", "4", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["train"] == 12 and info["long_tail"]["split"] == 2
    assert sorted(info["long_tail"]["counts"].values()) == [1, 2, 4]
    assert len(load_layout(out, split=2)[0]) == 7
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    r = CliRunner().invoke(synth_main, [str(copy), "--existing", "--long-tail", "2", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "split 3" in r.output and "--set split=3" in r.output
    r = CliRunner().invoke(synth_main, [str(copy), "--existing"])
    assert r.exit_code != 0 and "--long-tail" in r.output
    r = CliRunner().invoke(synth_main, [str(tmp_path / "nope"), "--existing", "--long-tail", "2"])
    assert r.exit_code != 0 and "not a folder" in r.output
    r = CliRunner().invoke(synth_main, [str(tmp_path / "x"), "--long-tail", "0.5"])
    assert r.exit_code != 0 and ">= 1" in r.output

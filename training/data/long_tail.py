"""Long-tailed train splits of a labelled data set (for TSC / KCL, Li et al., CVPR 2022).

Long-tailed benchmarks (CIFAR-LT, ImageNet-LT) subsample a balanced train set with an
exponential profile: with imbalance ratio ``rho = n_max / n_min`` and ``C`` classes in a
(seeded) head-to-tail order, class ``i`` keeps ``floor(n_max * rho ** (-i / (C - 1)))``
videos (at least one, at most what it has), ``n_max`` being the largest class's count. The
test side stays untouched, so the model is evaluated on the balanced test set.

The split is written as a NEW split number of the UCF101 layout, next to the original::

    DIR/splits/trainlistNN.txt   the kept lines of trainlist0S.txt (same format, same order)
    DIR/splits/testlistNN.txt    a byte copy of testlist0S.txt
    DIR/splits/long_tail.json    {"NN": {source split, rho, seed, class order, counts}}

so every tool selects it with its usual split option (``vcl-train --set split=NN``,
``vcl-eval --split NN``) and nothing else changes. ``NN`` is the next free split number
(2 for a ``vcl-synth`` set, 4 for UCF101), or the number an earlier call with the same
source split, ``rho`` and ``seed`` used (so re-running rewrites the same files).

A class-folder data set (``DIR/<class>/...``) has no split files: it first gets
``splits/classInd.txt`` and split 1 listing every video as train (what ``load_layout`` read
from the folders before; the test list is empty), then the long-tailed split as split 2.
HMDB51 split files are not supported.

Pure Python and numpy: ``vcl-synth`` imports this without torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcl_infer.probe.labels import VIDEO_SUFFIXES, class_folders

MANIFEST = "long_tail.json"
_LIST = re.compile(r"^(train|test)list(\d+)\.txt$")


def long_tail_counts(n_max: int, num_classes: int, rho: float) -> list[int]:
    """Videos kept by the classes in head-to-tail order: ``floor(n_max * rho**(-i/(C-1)))``, >= 1.

    The profile of Cui et al. 2019 ("Class-Balanced Loss Based on Effective Number of
    Samples", CIFAR-LT), used by the TSC paper's CIFAR-LT experiments. One class keeps ``n_max``.
    """
    if n_max < 1 or num_classes < 1:
        raise ValueError(f"n_max and num_classes must be >= 1, got {n_max!r}, {num_classes!r}")
    _check_rho(rho)
    if num_classes == 1:
        return [int(n_max)]
    # the small epsilon keeps exact powers (rho**-1 * n_max = n_min) from flooring one below
    return [max(1, int(math.floor(n_max * rho ** (-i / (num_classes - 1)) + 1e-9))) for i in range(num_classes)]


def _check_rho(rho: float) -> None:
    if not (math.isfinite(rho) and rho >= 1.0):
        raise ValueError(f"imbalance ratio rho must be a finite number >= 1, got {rho!r}")


def select_long_tail(
    labels: Sequence[int], num_classes: int, rho: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Which rows of a labelled list a long-tailed subset keeps.

    Args:
        labels: class id (``0 <= id < num_classes``) of each row.
        num_classes: ``C``; classes without rows keep nothing.
        rho: imbalance ratio ``n_max / n_min`` (>= 1).
        seed: seeds the class order and which rows each class keeps.

    Returns:
        ``(kept, order)``: the kept row indices (ascending, i.e. in the list's order) and the
        class ids from head to tail.
    """
    _check_rho(rho)
    rng = np.random.default_rng([int(seed), 0x1A17])
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for row, label in enumerate(labels):
        if not 0 <= int(label) < num_classes:
            raise ValueError(f"row {row}: label {label!r} is not in [0, {num_classes})")
        by_class[int(label)].append(row)
    order = [int(c) for c in rng.permutation(num_classes)]
    n_max = max((len(rows) for rows in by_class), default=0)
    if n_max == 0:
        raise ValueError("no labelled rows to subsample")
    quota = long_tail_counts(n_max, num_classes, rho)
    kept: list[int] = []
    for rank, cls in enumerate(order):
        rows = by_class[cls]
        take = min(len(rows), quota[rank])
        kept += [rows[int(i)] for i in rng.choice(len(rows), size=take, replace=False)]
    return sorted(kept), order


@dataclass(frozen=True)
class LongTailSplit:
    """What :func:`write_long_tail_split` wrote.

    Attributes:
        split: the new split number (train with ``--set split=<split>``).
        source_split: the split it subsamples.
        rho, seed: the imbalance ratio and seed used.
        train_list: path of the new ``trainlistNN.txt``.
        counts: class name -> train videos kept, head to tail.
    """

    split: int
    source_split: int
    rho: float
    seed: int
    train_list: Path
    counts: dict[str, int]


def _split_dir(root: Path) -> Path | None:
    # the places vcl_infer.probe.labels.load_layout looks for UCF101 split files
    for candidate in (root, root / "splits", root / "ucfTrainTestlist"):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _splits_from_class_folders(root: Path) -> Path:
    """Write classInd + split 1 (every video as train, empty test) for a class-folder layout."""
    hmdb = [p for d in (root, root / "splits", root / "testTrainMulti_7030_splits") if d.is_dir()
            for p in d.glob("*_test_split*.txt")]
    if hmdb:
        raise ValueError(f"{root} is an HMDB51 layout ({hmdb[0].name}); long-tailed HMDB51 splits are not supported")
    items, classes = class_folders(root)
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    if not classes or loose:
        raise ValueError(f"{root} holds no labelled layout: give UCF101 split files (classInd.txt, "
                         "trainlistNN.txt) or one folder per class")
    splits = root / "splits"
    splits.mkdir(exist_ok=True)
    rows = [f"{Path(i.path).relative_to(root).as_posix()} {i.label + 1}\n" for i in items]
    (splits / "classInd.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(classes)))
    (splits / "trainlist01.txt").write_text("".join(rows))
    (splits / "testlist01.txt").write_text("")
    return splits


def _manifest(splits: Path) -> dict[str, dict]:
    path = splits / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _output_split(splits: Path, manifest: dict[str, dict], source: int, rho: float, seed: int) -> int:
    for number, entry in manifest.items():
        same = (entry.get("source_split"), entry.get("rho"), entry.get("seed")) == (source, rho, seed)
        if same and (splits / f"trainlist{int(number):02d}.txt").is_file():
            return int(number)
    used = [int(m[2]) for p in splits.iterdir() if (m := _LIST.match(p.name))]
    return max(used, default=0) + 1


def _row_labels(rows: list[str], classes: list[str], source: Path) -> list[int]:
    """The class id of each train-list row (its first path component names the class)."""
    by_name = {name: k for k, name in enumerate(classes)}
    labels = []
    for row in rows:
        cls = row.split()[0].replace("\\", "/").split("/")[0]
        if cls not in by_name:
            raise ValueError(f"{source}: class {cls!r} of {row!r} is not in classInd.txt")
        labels.append(by_name[cls])
    return labels


def write_long_tail_split(
    root: str | Path, rho: float, *, split: int = 1, seed: int = 0, out_split: int | None = None
) -> LongTailSplit:
    """Write a long-tailed version of train split ``split`` of the data set in ``root``.

    See the module docstring for the profile, the files written and the split numbering.

    Args:
        root: a UCF101-style layout (``classInd.txt`` + ``trainlistNN.txt`` in ``root``,
            ``root/splits`` or ``root/ucfTrainTestlist``; what ``vcl-synth`` writes) or a
            class-folder layout.
        rho: imbalance ratio ``n_max / n_min`` (>= 1; TSC uses 10 to 256).
        split: the source split (its train list is subsampled, its test list copied).
        seed: seeds the class order and the videos kept.
        out_split: the split number to write; None = reuse / next free (module docstring).

    Raises:
        FileNotFoundError: ``root`` or the source split's lists are missing.
        ValueError: no labelled layout, bad ``rho``, or ``out_split`` would overwrite a list
            that is not a long-tailed split written here.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder")
    _check_rho(rho)
    splits = _split_dir(base)
    if splits is None:
        splits = _splits_from_class_folders(base)
    classes = [line.split(maxsplit=1)[1].strip() for line in sorted(_lines(splits / "classInd.txt"),
                                                                     key=lambda s: int(s.split()[0]))]
    source_train, source_test = splits / f"trainlist{split:02d}.txt", splits / f"testlist{split:02d}.txt"
    for path in (source_train, source_test):
        if not path.is_file():
            raise FileNotFoundError(f"split {split} has no {path.name} in {splits}")
    rows = _lines(source_train)
    labels = _row_labels(rows, classes, source_train)
    kept, order = select_long_tail(labels, len(classes), rho, seed)

    manifest = _manifest(splits)
    number = out_split if out_split is not None else _output_split(splits, manifest, split, rho, seed)
    if number == split:
        raise ValueError(f"out_split {number} is the source split; pick another number")
    train_list, test_list = splits / f"trainlist{number:02d}.txt", splits / f"testlist{number:02d}.txt"
    if train_list.exists() and str(number) not in manifest:
        raise ValueError(f"{train_list} exists and is not a long-tailed split written by vcl; pick another out_split")
    kept_labels = [labels[r] for r in kept]
    counts = {classes[c]: kept_labels.count(c) for c in order}
    train_list.write_text("".join(f"{rows[r]}\n" for r in kept))
    test_list.write_bytes(source_test.read_bytes())
    manifest[str(number)] = {"source_split": split, "rho": rho, "seed": seed, "counts": counts}
    (splits / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return LongTailSplit(split=number, source_split=split, rho=rho, seed=seed, train_list=train_list, counts=counts)

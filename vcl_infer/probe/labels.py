"""Where the videos of a data set are and what they are labelled: folder, split and CSV layouts.

Pure Python (no torch, no decoder): the runtime (``vcl-classify``, ``vcl-eval``) and
training (``training.data.layouts`` re-exports this module) read data sets the same way.

Five layouts, all read into the same list of :class:`VideoItem`:

- a plain folder of videos (unlabelled, for self-supervised pretraining): :func:`scan_videos`;
- one folder per class (``root/<class>/...``): :func:`class_folders`;
- UCF101 official splits (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``):
  :func:`ucf101_split`;
- HMDB51 official splits (``<class>_test_split<N>.txt``): :func:`hmdb51_split`;
- a CSV ``path,label[,split]`` (header optional): :func:`read_csv_labels`.

:func:`load_layout` picks a folder layout by looking at the folder; :func:`load_labels` also
takes a CSV and insists on labels. Items carry a ``group``: clips cut
from one source video (UCF101's ``gNN``) share it, and a split that puts one group on both
the train and the test side leaks (:func:`group_leakage`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg"})
SUBSETS = ("train", "test")
LABEL_SUBSETS = ("train", "test", "all")

_UCF_GROUP = re.compile(r"^v_(?P<cls>.+)_(?P<group>g\d+)_c\d+$")
_HMDB_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


@dataclass(frozen=True)
class VideoItem:
    """One video of a data set.

    Attributes:
        path: the video file.
        label: class id, ``-1`` when unlabelled.
        group: source the video was cut from (clips of one group must not straddle a
            train/test split); ``""`` when unknown.
    """

    path: str
    label: int = -1
    group: str = ""


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def scan_videos(root: str | os.PathLike) -> list[VideoItem]:
    """Every video file under ``root`` (recursive, by suffix, sorted), unlabelled."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder")
    return [VideoItem(str(p)) for p in sorted(base.rglob("*")) if _is_video(p)]


def class_folders(root: str | os.PathLike) -> tuple[list[VideoItem], list[str]]:
    """Videos in ``root/<class>/**``; labels are indices into the sorted class names.

    Returns:
        ``(items, classes)``: items sorted by path, ``classes[label]`` the folder name.
        Class folders holding no video are not classes.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder")
    per_class = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        videos = [p for p in sorted(folder.rglob("*")) if _is_video(p)]
        if videos:
            per_class[folder.name] = videos
    classes = sorted(per_class)
    items = [VideoItem(str(p), label, "") for label, name in enumerate(classes) for p in per_class[name]]
    return items, classes


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")


def ucf_group(path: str) -> str:
    """``<Class>_gNN`` for a UCF101 file name ``v_<Class>_gNN_cMM.avi``, else ``""``."""
    match = _UCF_GROUP.match(Path(path).stem)
    return f"{match['cls']}_{match['group']}" if match else ""


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def ucf101_split(
    root: str | os.PathLike, split_dir: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoItem], list[str]]:
    """One side of a UCF101 official split.

    Args:
        root: folder holding ``<Class>/v_<Class>_gNN_cMM.avi``.
        split_dir: folder with ``classInd.txt`` (``"1 ApplyEyeMakeup"``, 1-based ids),
            ``trainlist0N.txt`` (``"ApplyEyeMakeup/v_..._g08_c01.avi 1"``) and
            ``testlist0N.txt`` (paths only).
        split: N, 1 to 3 for UCF101.
        subset: ``train`` or ``test``.

    Returns:
        ``(items, classes)``: labels are 0-based (``classInd`` id - 1), groups
        ``<Class>_gNN``. Files in the list but missing on disk are kept (the loader reports
        them when it opens them) but counted in a warning.
    """
    _check_subset(subset)
    base, splits = Path(root), Path(split_dir)
    ids: dict[int, str] = {}
    for line in _lines(splits / "classInd.txt"):
        number, name = line.split(maxsplit=1)
        ids[int(number)] = name.strip()
    classes = [ids[k] for k in sorted(ids)]
    by_name = {name: i for i, name in enumerate(classes)}
    list_file = splits / f"{subset}list{split:02d}.txt"
    items, missing = [], 0
    for line in _lines(list_file):
        rel = line.split()[0].replace("\\", "/")
        cls = rel.split("/")[0]
        if cls not in by_name:
            raise ValueError(f"{list_file}: class {cls!r} of {rel!r} is not in classInd.txt")
        path = base / rel
        missing += not path.exists()
        items.append(VideoItem(str(path), by_name[cls], ucf_group(rel)))
    if missing:
        log.warning("%s: %d of %d listed videos are missing under %s", list_file, missing, len(items), base)
    return items, classes


def hmdb51_split(
    root: str | os.PathLike, split_dir: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[VideoItem], list[str]]:
    """One side of an HMDB51 official split.

    Args:
        root: folder holding ``<class>/<video>.avi``.
        split_dir: folder with ``<class>_test_split<N>.txt``; each line ``"<video>.avi K"``
            with K = 1 (train), 2 (test), 0 (unused).
        split: N, 1 to 3.
        subset: ``train`` or ``test``.

    Returns:
        ``(items, classes)``: classes sorted by name, groups empty (HMDB51 names carry no
        source id).
    """
    _check_subset(subset)
    base, splits = Path(root), Path(split_dir)
    files = {}
    for path in splits.iterdir():
        match = _HMDB_SPLIT.match(path.name)
        if match and int(match["split"]) == split:
            files[match["cls"]] = path
    if not files:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {splits}")
    classes = sorted(files)
    wanted = "1" if subset == "train" else "2"
    items = []
    for label, cls in enumerate(classes):
        for line in _lines(files[cls]):
            parts = line.split()
            if len(parts) >= 2 and parts[1] == wanted:
                items.append(VideoItem(str(base / cls / parts[0]), label, ""))
    return items, classes


def group_leakage(train: list[VideoItem], test: list[VideoItem]) -> list[str]:
    """Groups present in both ``train`` and ``test`` (sorted); empty groups are ignored."""
    return sorted({i.group for i in train if i.group} & {i.group for i in test if i.group})


def _ucf_split_dir(path: Path) -> Path | None:
    for candidate in (path, path / "splits", path / "ucfTrainTestlist"):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def _hmdb_split_dir(path: Path) -> Path | None:
    for candidate in (path, path / "splits", path / "testTrainMulti_7030_splits"):
        if candidate.is_dir() and any(_HMDB_SPLIT.match(p.name) for p in candidate.iterdir()):
            return candidate
    return None


def _video_root(path: Path, split_dir: Path) -> Path:
    """Where class folders live: ``path/videos`` when present, else ``path`` itself."""
    for candidate in (path / "videos", path):
        if candidate.is_dir() and candidate != split_dir:
            return candidate
    return path


def load_layout(
    path: str | os.PathLike, *, split: int = 1, subset: str = "train"
) -> tuple[list[VideoItem], list[str]]:
    """Read a data set folder, detecting its layout.

    In order: UCF101 split files (``classInd.txt`` in ``path``, ``path/splits`` or
    ``path/ucfTrainTestlist``; videos under ``path/videos`` or ``path``), HMDB51 split files
    (same places), one folder per class, else a plain folder (unlabelled, ``classes=[]``).
    With split files, a warning lists groups that appear on both sides of the split.

    Returns:
        ``(items, classes)``.
    """
    _check_subset(subset)
    base = Path(path)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder")
    ucf = _ucf_split_dir(base)
    if ucf is not None:
        root = _video_root(base, ucf)
        items, classes = ucf101_split(root, ucf, split, subset)
        if (ucf / f"trainlist{split:02d}.txt").is_file() and (ucf / f"testlist{split:02d}.txt").is_file():
            other = "test" if subset == "train" else "train"
            leaked = group_leakage(items, ucf101_split(root, ucf, split, other)[0])
            if leaked:
                log.warning(
                    "split %d of %s puts %d groups on both train and test sides (leakage): %s",
                    split, ucf, len(leaked), ", ".join(leaked[:20]) + (" ..." if len(leaked) > 20 else ""),
                )
        return items, classes
    hmdb = _hmdb_split_dir(base)
    if hmdb is not None:
        return hmdb51_split(_video_root(base, hmdb), hmdb, split, subset)
    items, classes = class_folders(base)
    loose = [p for p in base.iterdir() if _is_video(p)]
    if classes and not loose:
        return items, classes
    return scan_videos(base), []


# ---------------------------------------------------------------- labelled sources
def _class_order(names: list[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer (``"2" < "10"``)."""
    unique = set(names)
    if all(n.lstrip("-").isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def read_csv_labels(path: str | os.PathLike, *, subset: str = "all") -> tuple[list[VideoItem], list[str]]:
    """Read a CSV of ``path,label`` rows, optionally with a third ``split`` column.

    A first row ``path,label[,split]`` is a header and skipped. Relative video paths are
    resolved against the CSV's folder. ``label`` is a class name (or number);
    ``split`` is ``train`` or ``test``.

    Args:
        path: the CSV file.
        subset: ``all`` (every row), or ``train`` / ``test`` (rows of that split; the CSV
            then needs the ``split`` column).

    Returns:
        ``(items, classes)``: labels index ``classes``, the sorted label names of the WHOLE
        file (so train and test read separately agree on the ids).
    """
    if subset not in LABEL_SUBSETS:
        raise ValueError(f"subset must be one of {LABEL_SUBSETS}, got {subset!r}")
    csv_path = Path(path)
    with csv_path.open(newline="") as handle:
        rows = [[c.strip() for c in row] for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    if rows and [c.lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    for number, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0] or not row[1]:
            raise ValueError(f"{csv_path}: row {number} {row!r} is not 'path,label[,split]'")
        if len(row) > 2 and row[2] and row[2] not in SUBSETS:
            raise ValueError(f"{csv_path}: row {number}: split must be train or test, got {row[2]!r}")
    classes = _class_order([r[1] for r in rows])
    by_name = {name: i for i, name in enumerate(classes)}
    if subset != "all":
        if not any(len(r) > 2 and r[2] for r in rows):
            raise ValueError(f"{csv_path} has no split column; add a third column 'train'/'test' "
                             "or use the whole file (subset 'all')")
        rows = [r for r in rows if len(r) > 2 and r[2] == subset]
    base = csv_path.parent
    items = [VideoItem(str(Path(r[0]) if Path(r[0]).is_absolute() else base / r[0]), by_name[r[1]], ucf_group(r[0]))
             for r in rows]
    return items, classes


def source_has_splits(source: str | os.PathLike) -> bool:
    """Whether a label source defines train/test sides (split files, or a CSV split column)."""
    base = Path(source)
    if base.is_file():
        with base.open(newline="") as handle:
            return any(len(row) > 2 and row[2].strip() in SUBSETS for row in csv.reader(handle))
    return base.is_dir() and (_ucf_split_dir(base) is not None or _hmdb_split_dir(base) is not None)


def load_labels(
    source: str | os.PathLike, *, split: int = 1, subset: str = "all"
) -> tuple[list[VideoItem], list[str]]:
    """Labelled videos from a CSV file, UCF101/HMDB51 split files or a class-per-folder tree.

    Args:
        source: a ``.csv`` file (:func:`read_csv_labels`) or a folder (:func:`load_layout`).
        split: split number for split-file layouts (1 to 3).
        subset: ``train``, ``test`` or ``all`` (both sides). Sources without sides (class
            folders, a CSV without a split column) only accept ``all``, so a test set is
            never silently the training set.

    Returns:
        ``(items, classes)``, every item labelled.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: the source holds no labels, or has no sides and ``subset`` asks for one.
    """
    if subset not in LABEL_SUBSETS:
        raise ValueError(f"subset must be one of {LABEL_SUBSETS}, got {subset!r}")
    base = Path(source)
    if base.is_file():
        return read_csv_labels(base, subset=subset)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such label file or folder")
    if subset != "all" and not source_has_splits(base):
        raise ValueError(f"{base} has no train/test split files (classInd.txt + trainlist/testlist, or "
                         f"HMDB51 *_test_split{split}.txt); use subset 'all' or a CSV with a split column")
    if subset == "all":
        if source_has_splits(base):
            train, classes = load_layout(base, split=split, subset="train")
            test, _ = load_layout(base, split=split, subset="test")
            return train + test, classes
        items, classes = class_folders(base)
    else:
        items, classes = load_layout(base, split=split, subset=subset)
    if not classes:
        raise ValueError(f"{base} holds no labels: give one folder per class, split files or a CSV path,label")
    return items, classes

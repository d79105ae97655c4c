"""A tiny synthetic UCF101-style data set, generated once per test session, and run helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# 2 classes x 8 videos of 20 frames at 32 px: 8 train videos (2 batches of 4).
SYNTH = dict(classes=2, videos_per_class=8, frames=20, size=32, seed=0)
# Flags that keep a run to seconds on a 2-core CPU.
TINY = ["--arch", "r3d_small", "--frames", "4", "--frame-step", "2", "--crop", "32", "--batch-size", "4",
        "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(**SYNTH))
    return root


@pytest.fixture(scope="session")
def synth_with_bad_video(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set plus one unreadable ``.mp4`` listed in the train split."""
    root = tmp_path_factory.mktemp("synth_bad") / "data"
    shutil.copytree(synth_data, root)
    cls = sorted(p.name for p in (root / "videos").iterdir())[0]
    bad = root / "videos" / cls / f"v_{cls}_g09_c01.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    trainlist = root / "splits" / "trainlist01.txt"
    label = 1
    trainlist.write_text(trainlist.read_text().rstrip("\n") + f"\n{cls}/{bad.name} {label}\n")
    return root

"""Supervised fine-tuning: the method, labels through the loop, and ``--init``."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.checkpoint import load_checkpoint, save_checkpoint
from training.cli import main as train_main
from training.methods import create_method
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)


def _method(**kw):
    torch.manual_seed(0)
    return create_method("supervised", backbone=create_backbone("r3d_small"), spec=SPEC, **kw)


def test_needs_num_classes_and_labels():
    with pytest.raises(ValueError, match="num_classes"):
        _method()
    m = _method(num_classes=3)
    clips = torch.rand(4, 1, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="labels"):
        m.training_step(clips, 0)
    with pytest.raises(ValueError, match="labels must be in"):
        m.training_step(clips, 0, torch.tensor([0, 1, 2, 3]))


def test_cross_entropy_learns_the_labels():
    m = _method(num_classes=2)
    g = torch.Generator().manual_seed(0)
    clips = torch.rand(6, 1, 3, 4, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    clips[labels == 1] = clips[labels == 1] * 0.3  # darker clips are class 1
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = m.training_step(clips, 0, labels)
    expected = torch.nn.functional.cross_entropy(m.logits(m.augment(clips[:, 0], m.generator(0))), labels)
    assert torch.allclose(first["loss"], expected, atol=1e-5)
    for step in range(15):
        out = m({"clips": clips, "labels": labels}, step)  # the dict batch the loop gives
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < first["loss"].item() * 0.7
    assert out["acc"].item() == 1.0


def test_cli_fine_tunes_from_init(synth_data, tmp_path):  # noqa: F811
    torch.manual_seed(3)
    init_backbone = create_backbone("r3d_small")
    init = save_checkpoint(tmp_path / "pre.pt", model=init_backbone, arch="r3d_small", method="simclr")
    run = tmp_path / "ft"
    res = CliRunner().invoke(train_main, ["--method", "supervised", "--data", str(synth_data), "--init", str(init),
                                          "--out", str(run), "--epochs", "1", *TINY[2:]])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["arch"] == "r3d_small"  # taken from --init
    assert ckpt["config"]["init"] == str(init)
    assert ckpt["config"]["method_args"]["num_classes"] == 2
    # started from --init: the stem changed only by 2 small Adam steps, not a fresh random init
    key = "stem.0.weight"
    diff = (ckpt["model"][key] - init_backbone.state_dict()[key]).abs().max().item()
    assert 0 < diff < 1e-2
    assert "acc" in (run / "metrics.csv").read_text().splitlines()[0]


def test_unlabelled_data_is_refused(tmp_path, synth_data):  # noqa: F811
    import shutil

    flat = tmp_path / "flat"
    flat.mkdir()
    for p in list((synth_data / "videos").rglob("*.mp4"))[:8]:
        shutil.copy(p, flat / p.name)
    res = CliRunner().invoke(train_main, ["--method", "supervised", "--data", str(flat), "--out",
                                          str(tmp_path / "r"), "--epochs", "1", *TINY])
    assert res.exit_code != 0
    assert "needs labels" in res.output

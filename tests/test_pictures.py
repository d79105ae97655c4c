"""Pictures: numeric parts always, PNGs when matplotlib is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_fixtures import synth_data  # noqa: F401

from training.models import create_backbone
from training.pictures import activation_map, pca_2d, read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def test_pca_matches_the_leading_axis():
    rng = np.random.default_rng(0)
    x = np.outer(rng.normal(size=50), [3.0, 4.0, 0.0]) + 0.01 * rng.normal(size=(50, 3))
    xy = pca_2d(x)
    assert xy.shape == (50, 2)
    centred = x - x.mean(0)
    # the first coordinate is the projection on the direction (0.6, 0.8, 0) up to sign
    assert abs(np.corrcoef(xy[:, 0], centred @ np.array([0.6, 0.8, 0.0]))[0, 1]) > 0.999
    assert xy[:, 0].var() > 100 * xy[:, 1].var()


def test_activation_map_follows_the_moving_object():
    torch.manual_seed(0)
    net = create_backbone("r3d_small")
    clip = torch.zeros(3, 8, 32, 32)
    clip[:, :, 2:12, 2:12] = 3.0  # a bright square in the top-left corner
    cam = activation_map(net, clip)
    assert cam.shape == (8, 32, 32) and cam.min() == 0.0 and np.isclose(cam.max(), 1.0)
    assert cam[:, :16, :16].mean() > cam[:, 16:, 16:].mean()
    assert net.training  # mode restored


def test_read_metrics(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,epoch,lr,loss\n1,0,0.1,2.0\n2,0,0.1,\n")
    m = read_metrics(tmp_path)
    assert m["loss"][0] == 2.0 and np.isnan(m["loss"][1])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="step"):
        read_metrics(tmp_path / "bad.csv")


def test_pngs_from_the_cli(synth_data, tmp_path):  # noqa: F811
    pytest.importorskip("matplotlib")
    from training.checkpoint import save_checkpoint
    from training.eval_cli import main
    from vcl_infer.clips.spec import ClipSpec

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,epoch,lr,clips_per_s,loss\n" +
                                     "".join(f"{s},0,0.1,5.0,{3.0 / s}\n" for s in range(1, 11)))
    spec = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
    ckpt = save_checkpoint(tmp_path / "c.pt", model=create_backbone("r3d_small"), arch="r3d_small",
                           method="tclr", clip_spec=spec)
    video = next((synth_data / "videos").rglob("*.mp4"))
    runner = CliRunner()
    cmds = {
        "curves.png": ["pictures", "curves", "--run", str(run)],
        "map.png": ["pictures", "map", "--checkpoint", str(ckpt), "--data", str(synth_data), "--clips", "1"],
        "cam.png": ["pictures", "activations", "--checkpoint", str(ckpt), "--video", str(video)],
    }
    for name, args in cmds.items():
        res = runner.invoke(main, [*args, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, (name, res.output)
        assert (tmp_path / name).read_bytes()[:8] == PNG
    res = runner.invoke(main, ["pictures", "curves", "--run", str(tmp_path / "c.pt"), "--out", str(tmp_path / "x.png")])
    assert res.exit_code != 0

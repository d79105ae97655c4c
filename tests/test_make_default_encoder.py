"""make_default_encoder joins a two-stream backbone from its streams' own checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch
from script_modules import load_script

from training.checkpoint import save_checkpoint
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

script = load_script("scripts/make_default_encoder.py", "make_default_encoder_under_test")


def _stream_checkpoints(tmp_path, arch: str, frames: tuple[int, int]) -> dict:
    checkpoints, models = {}, {}
    for (name, stream_arch), n in zip(script.STREAMS[arch].items(), frames):
        torch.manual_seed(len(name))
        models[name] = create_backbone(stream_arch).eval()
        checkpoints[name] = save_checkpoint(tmp_path / f"{name}.pt", model=models[name], arch=stream_arch, method="simclr",
                                            clip_spec=ClipSpec(frames_per_clip=n, frame_step=2, resize_size=48, crop_size=48))
    return {"checkpoints": checkpoints, "models": models}


def test_each_stream_gets_its_own_trained_weights(tmp_path):
    arch = "r3d_small_moving_two_stream"
    args = argparse.Namespace(arch=arch, out=tmp_path)
    made = _stream_checkpoints(tmp_path, arch, (8, 8))
    assert set(script.stream_runs(args)) == {"appearance", "motion"}
    joined, clip = script.trained_backbone(args, made["checkpoints"])
    assert clip.frames_per_clip == 8
    x = torch.rand(2, 3, 8, 48, 48)
    with torch.no_grad():
        out = joined.eval()(x)
        for half, name in ((out[:, :128], "appearance"), (out[:, 128:], "motion")):
            assert torch.allclose(half, torch.nn.functional.normalize(made["models"][name](x), dim=1), atol=1e-5)


def test_streams_trained_on_different_clips_are_refused(tmp_path):
    arch = "r3d_small_two_stream"
    made = _stream_checkpoints(tmp_path, arch, (8, 16))
    with pytest.raises(SystemExit, match="different clips"):
        script.trained_backbone(argparse.Namespace(arch=arch, out=tmp_path), made["checkpoints"])


def test_a_one_stream_backbone_is_its_own_single_run(tmp_path):
    runs = script.stream_runs(argparse.Namespace(arch="r3d_small", out=tmp_path))
    assert runs == {"": ("r3d_small", tmp_path / "run")}

"""Time-reversed clips as extra negatives (training.methods.reversal), in SimCLR, MoCo/FAME and TCLR."""

from __future__ import annotations

import pytest
import torch

from training.losses.info_nce import info_nce_loss
from training.losses.nt_xent import nt_xent_extra_negatives
from training.methods import create_method
from training.methods.reversal import reverse_time
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=1, resize_size=32, crop_size=32)


def _method(name: str, **kw):
    torch.manual_seed(0)
    return create_method(name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **kw)


def test_extra_negatives_loss_reduces_to_nt_xent_and_grows_with_a_close_negative():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    plain = info_nce_loss(z1, z2, 0.2)
    assert torch.allclose(nt_xent_extra_negatives(z1, z2, torch.empty(0, 8), 0.2), plain)
    # a negative equal to each anchor's positive makes the positive indistinguishable
    with_copy = nt_xent_extra_negatives(z1, z2, z2, 0.2)
    expected_gap = torch.log(torch.tensor(2.0))  # roughly: the positive's term counted twice
    assert with_copy > plain + 0.5 * expected_gap


def test_reverse_time_plays_frames_backwards():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4, 1).expand(1, 2, 3, 4, 2)
    assert torch.equal(reverse_time(x)[:, :, 0], x[:, :, 2])
    with pytest.raises(ValueError):
        reverse_time(torch.zeros(3, 4))


@pytest.mark.parametrize("name,kw", [("simclr", {}), ("moco", {"queue_size": 16}), ("fame", {"queue_size": 16}),
                                     ("tclr", {"num_local": 2, "global_step": 1})])
def test_a_static_video_is_its_own_reversal_so_the_flag_raises_the_loss(name, kw):
    """Frames all equal: the reversed clip IS the clip, so a method that uses it as a negative
    must pay for it; without the flag the two runs would be equal."""
    torch.manual_seed(1)
    views = 6 if name == "tclr" else 2
    frame = torch.rand(4, 1, 3, 1, 32, 32)
    clips = frame.expand(4, views, 3, 4, 32, 32).contiguous()
    losses = {}
    for flag in (False, True):
        method = _method(name, reverse_negatives=flag, **kw)
        method.train()
        losses[flag] = float(method.training_step(clips, 0)["loss"].detach())
    assert losses[True] > losses[False]


def test_methods_whose_queue_carries_labels_refuse_it():
    method = _method("kcl", queue_size=16, reverse_negatives=True, num_classes=2)
    clips = torch.rand(4, 2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="reverse_negatives"):
        method.training_step(clips, 0, torch.tensor([0, 1, 0, 1]))

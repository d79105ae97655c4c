"""SimCLR's background_merge option: FAME's foreground-background merge on the first view only."""

from __future__ import annotations

import pytest
import torch

from training.augment.fame import FAMEAugment
from training.data.dataset import normalize_clips
from training.methods import create_method
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=1, resize_size=32, crop_size=32)
NO_COLOUR = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}  # augment() is then normalisation only


def _method(**kw):
    torch.manual_seed(0)
    return create_method("simclr", backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **kw)


def _square_on_flat_backgrounds(batch: int) -> torch.Tensor:
    """``B x 2 x 3 x T x 32 x 32``: item ``i`` a flat grey ``0.1 + 0.2 i`` with a white square moving right."""
    clips = torch.empty(batch, 2, 3, 4, 32, 32)
    for i in range(batch):
        clips[i] = 0.1 + 0.2 * i
        for t in range(4):
            clips[i, :, :, t, 12:20, 8 + 2 * t : 16 + 2 * t] = 1.0
    return clips


def test_the_merged_first_view_keeps_its_motion_on_another_items_background():
    method = _method(background_merge=True, **NO_COLOUR)
    clips = _square_on_flat_backgrounds(4)
    first = method.first_view(clips[:, 0], method.generator(3))
    perm = torch.randperm(4, generator=method.generator(3))  # the donors first_view drew
    assert (perm != torch.arange(4)).any()
    expected = FAMEAugment(beta=0.5)(clips[:, 0], perm)
    assert torch.allclose(first, normalize_clips(expected, SPEC))
    # beta 0.5 keeps exactly half the frame (ties: the top rows); the bottom corner is background
    corner = first[:, :, :, -1, -1]
    own = normalize_clips(clips[:, 0], SPEC)[:, :, :, -1, -1]
    donor = own[perm]
    assert torch.allclose(corner, donor)
    moved = perm != torch.arange(4)
    assert not torch.allclose(corner[moved], own[moved])  # the background really changed
    # the moving square (foreground) is the item's own: white where it is in every frame
    assert torch.allclose(first[:, :, :, 15, 15], normalize_clips(torch.ones(4, 3, 4, 1, 1), SPEC)[..., 0, 0])


def test_off_by_default_the_first_view_is_plain_simclr():
    method = _method(**NO_COLOUR)
    assert not method.hparams.background_merge and method.fame is None
    clips = _square_on_flat_backgrounds(4)
    first = method.first_view(clips[:, 0], method.generator(3))
    assert torch.equal(first, method.augment(clips[:, 0], method.generator(3)))


def test_the_option_changes_the_training_loss():
    clips = _square_on_flat_backgrounds(4)
    losses = {}
    for flag in (False, True):
        method = _method(background_merge=flag, **NO_COLOUR)
        method.train()
        losses[flag] = float(method.training_step(clips, 0)["loss"].detach())
    assert losses[True] != pytest.approx(losses[False])


@pytest.mark.parametrize("kw", [{"merge_beta": 0.0}, {"merge_beta": 1.5}, {"merge_hue_units": "degrees"}])
def test_bad_merge_settings_are_refused(kw):
    with pytest.raises(ValueError, match="merge_"):
        _method(background_merge=True, **kw)


def test_merge_both_views_gives_the_second_view_its_own_donors():
    clips = _square_on_flat_backgrounds(4)
    one = _method(background_merge=True, **NO_COLOUR)
    both = _method(background_merge=True, merge_both_views=True, **NO_COLOUR)
    g = both.generator(3)
    both.first_view(clips[:, 0], g)
    replay = torch.Generator()
    replay.set_state(g.get_state())  # where the second view's donor draw starts
    second = both.second_view(clips[:, 1], g)
    perm = torch.randperm(4, generator=replay)
    assert (perm != torch.arange(4)).any()
    assert torch.allclose(second, normalize_clips(FAMEAugment(beta=0.5)(clips[:, 1], perm), SPEC))
    plain = one.second_view(clips[:, 1], one.generator(3))
    assert torch.equal(plain, normalize_clips(clips[:, 1], SPEC))  # first view only: the second is untouched


def test_merge_both_views_needs_the_merge():
    with pytest.raises(ValueError, match="background_merge"):
        _method(merge_both_views=True)

"""r3d_small_diff sees what moves: a static image added to every frame changes nothing; the
two-stream backbone keeps the frames' appearance beside it."""

import pytest
import torch

from training.models import create_backbone


def _clips_with_static_offset(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clips = torch.rand(2, 3, 8, 32, 32, generator=g)
    background = torch.rand(2, 3, 1, 32, 32, generator=g)  # the same image in every frame
    return clips, clips + background


def test_a_static_background_does_not_change_the_features():
    torch.manual_seed(0)
    model = create_backbone("r3d_small_diff").eval()
    clips, shifted = _clips_with_static_offset(1)
    with torch.no_grad():
        assert torch.allclose(model(clips), model(shifted), atol=1e-5)


def test_the_plain_backbone_does_see_it():
    torch.manual_seed(0)
    model = create_backbone("r3d_small").eval()
    clips, shifted = _clips_with_static_offset(1)
    with torch.no_grad():
        assert not torch.allclose(model(clips), model(shifted), atol=1e-3)


def test_motion_changes_the_features_and_the_shape_is_the_contract():
    torch.manual_seed(0)
    model = create_backbone("r3d_small_diff").eval()
    clips, _ = _clips_with_static_offset(2)
    with torch.no_grad():
        out = model(clips)
        assert out.shape == (2, model.embed_dim)
        assert not torch.allclose(out, model(clips.flip(2)), atol=1e-3)


def test_one_frame_is_refused():
    with pytest.raises(ValueError, match="T >= 2"):
        create_backbone("r3d_small_diff")(torch.rand(1, 3, 1, 32, 32))


def test_the_two_stream_backbone_keeps_appearance_beside_motion():
    torch.manual_seed(0)
    model = create_backbone("r3d_small_two_stream").eval()
    clips, shifted = _clips_with_static_offset(3)
    with torch.no_grad():
        out, out_shifted = model(clips), model(shifted)
    d = model.appearance.embed_dim
    assert out.shape == (2, d + model.motion.embed_dim)
    assert torch.allclose(out[:, :d].norm(dim=1), torch.ones(2)) and torch.allclose(out[:, d:].norm(dim=1), torch.ones(2))
    # the background moves only the appearance half: the motion half is frame differences
    assert torch.allclose(out[:, d:], out_shifted[:, d:], atol=1e-5)
    assert not torch.allclose(out[:, :d], out_shifted[:, :d], atol=1e-3)


def test_the_two_streams_are_the_trained_backbones_they_were_given():
    torch.manual_seed(0)
    appearance, motion = create_backbone("r3d_small").eval(), create_backbone("r3d_small_diff").eval()
    model = create_backbone("r3d_small_two_stream")
    model.appearance.load_state_dict(appearance.state_dict())
    model.motion.load_state_dict(motion.state_dict())
    clips, _ = _clips_with_static_offset(4)
    with torch.no_grad():
        joined = model.eval()(clips)
        expected = torch.cat([torch.nn.functional.normalize(appearance(clips), dim=1),
                              torch.nn.functional.normalize(motion(clips), dim=1)], dim=1)
    assert torch.allclose(joined, expected, atol=1e-5)


def _square_over_background(square_colour: float, background: torch.Tensor) -> torch.Tensor:
    """A square moving along the top rows over a background; rows 20-31 only ever show the background."""
    clip = background.expand(1, 3, 8, 32, 32).clone()
    for t in range(8):
        clip[0, :, t, 2:8, 2 + 3 * t: 8 + 3 * t] = square_colour
    return clip


def test_the_moving_stream_sees_the_colour_of_what_moves_and_not_the_still_background():
    torch.manual_seed(0)
    model = create_backbone("r3d_small_moving").eval()
    g = torch.Generator().manual_seed(5)
    background = torch.rand(1, 3, 1, 32, 32, generator=g)
    other = background.clone()
    other[..., 20:, :] = torch.rand(1, 3, 1, 12, 32, generator=g)  # where nothing ever moves
    with torch.no_grad():
        base = model(_square_over_background(0.9, background))
        assert torch.allclose(base, model(_square_over_background(0.9, other)), atol=1e-5)
        assert not torch.allclose(base, model(_square_over_background(0.2, background)), atol=1e-3)

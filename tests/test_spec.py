import json

import pytest

from vcl_infer.clips.spec import ClipSpec, EncoderSpec
from vcl_infer.errors import SpecMismatch

# every spec field DESIGN.md names for the bundle ("The encoder bundle" section)
DESIGN_FIELDS = {
    "format_version", "arch", "method", "embed_dim", "l2_normalized", "frames_per_clip",
    "frame_step", "target_fps", "resize_mode", "resize_size", "crop_size", "mean", "std",
    "layout", "fingerprint", "verification",
}


def test_encoder_spec_json_holds_every_design_field_and_round_trips():
    spec = EncoderSpec(arch="r3d_small", embed_dim=128, clip=ClipSpec(frames_per_clip=8, frame_step=4),
                       fingerprint="sha256:00", verification={"min_cosine": 1.0})
    data = json.loads(spec.to_json())
    assert DESIGN_FIELDS <= set(data)
    assert EncoderSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("bad", [
    dict(frames_per_clip=0),
    dict(frame_step=None),  # neither step nor fps
    dict(target_fps=10.0),  # both
    dict(frame_step=None, target_fps=-1.0),
    dict(crop_size=200, resize_size=128),
    dict(std=(1.0, 0.0, 1.0)),
    dict(layout="NTHWC"),
    dict(resize_mode="stretch"),
    dict(short_video="mirror"),
    dict(channel_order="RGBA"),
])
def test_invalid_clip_specs_are_refused(bad):
    with pytest.raises(ValueError, match="invalid ClipSpec"):
        ClipSpec(**bad)


def test_spec_of_another_format_version_is_refused_with_the_fix():
    data = EncoderSpec(arch="a", embed_dim=4).to_dict()
    data["format_version"] = 99
    with pytest.raises(SpecMismatch, match="re-export"):
        EncoderSpec.from_dict(data)

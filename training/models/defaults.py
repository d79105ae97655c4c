"""The clip spec an architecture is exported with when its checkpoint does not say."""

from __future__ import annotations

from vcl_infer.clips.spec import ClipSpec

# torchvision's video models: 16 frames, resize 128 (short side), crop 112, Kinetics mean/std.
FULL_SIZE_CLIP = ClipSpec()
# The small CPU variants see fewer, smaller frames so a 2-core machine can train and serve them.
SMALL_CLIP = ClipSpec(frames_per_clip=8, frame_step=4, resize_size=72, crop_size=64)


def default_clip_spec(arch: str) -> ClipSpec:
    """Spec for ``arch`` when neither the checkpoint nor the command line gives one."""
    return SMALL_CLIP if "small" in arch else FULL_SIZE_CLIP

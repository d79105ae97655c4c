"""Class-agnostic activation maps over a clip's frames (FAME, Ding et al. 2022, Figure 1).

The map of a clip is the channel mean of the magnitude of the backbone's last feature map
(``B x D x t x h x w`` -> ``t x h x w``), upsampled (trilinear) to ``T x S x S`` and scaled to
[0, 1] over the clip. A backbone that learned motion lights up the moving object; one that
learned the scene lights up the background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.models.registry import Backbone
from training.pictures._plt import pyplot
from vcl_infer.clips.spec import ClipSpec


def activation_map(backbone: Backbone, clip: torch.Tensor) -> np.ndarray:
    """Activation map of one normalised clip.

    Args:
        backbone: has ``forward_features(B x 3 x T x S x S) -> B x D x t x h x w``.
        clip: ``3 x T x S x S`` float, normalised with the spec's mean/std.

    Returns:
        ``T x S x S`` float32 in [0, 1] (eval mode, no gradients).
    """
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a 3 x T x S x S clip, got {tuple(clip.shape)}")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            feats = backbone.forward_features(clip[None].float())
    finally:
        backbone.train(was_training)
    cam = feats.abs().mean(dim=1, keepdim=True)  # 1 x 1 x t x h x w
    cam = F.interpolate(cam, size=tuple(clip.shape[1:]), mode="trilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = cam / cam.max().clamp_min(1e-12)
    return cam.numpy().astype(np.float32)


def read_clip(video: str | Path, spec: ClipSpec, *, clip_index: int = 0, num_clips: int = 1) -> np.ndarray:
    """Clip ``clip_index`` of ``num_clips`` uniform clips of ``video``: ``T x S x S x 3`` uint8.

    Decoded like every other read of a video file, in an isolated decode worker: a decoder
    that hangs or crashes on the file costs a timeout, not the caller's process.
    """
    from vcl_infer.video.isolated import decode_clips

    return decode_clips(video, spec, num_clips).clips[clip_index]


def plot_activation_maps(
    backbone: Backbone,
    spec: ClipSpec,
    video: str | Path,
    out: str | Path,
    *,
    frames_shown: int = 8,
    clip_index: int = 0,
    num_clips: int = 1,
    alpha: float = 0.5,
    title: str | None = None,
) -> Path:
    """Frames of a clip of ``video`` (top) and their activation maps overlaid (bottom), as PNG."""
    from training.data.dataset import normalize_clips

    pixels = read_clip(video, spec, clip_index=clip_index, num_clips=num_clips)  # T x S x S x 3
    x = torch.from_numpy(pixels).permute(3, 0, 1, 2).float().div(255.0)
    cam = activation_map(backbone, normalize_clips(x, spec))
    t = pixels.shape[0]
    shown = np.unique(np.linspace(0, t - 1, min(frames_shown, t)).round().astype(int))
    plt = pyplot()
    fig, axes = plt.subplots(2, len(shown), figsize=(1.8 * len(shown), 3.9), squeeze=False)
    for j, i in enumerate(shown):
        axes[0, j].imshow(pixels[i])
        axes[1, j].imshow(pixels[i])
        axes[1, j].imshow(cam[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        axes[0, j].set_title(f"frame {i}", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(title or f"activation maps: {Path(video).name}", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

"""Every export checks itself: the exported encoder against the torch model, on real clips."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vcl_infer.clips.preprocess import fit_frames, to_model_input
from vcl_infer.clips.spec import ClipSpec

# Embeddings are unit vectors: these bound what fp32 reordering can explain. Untrained
# backbones map every input to nearly the same direction (cosine ~0.999 between random
# clips), so the cosine alone cannot catch a wrong export; the abs error bound can.
DEFAULT_MIN_COSINE = 0.9999
DEFAULT_MAX_ABS_ERROR = 1e-4

Encoder = Callable[[np.ndarray], np.ndarray]


class VerificationFailed(RuntimeError):
    """The exported encoder disagrees with its reference beyond tolerance."""


@dataclass
class Agreement:
    """How closely a candidate encoder matches a reference on the same clips."""

    reference: str
    candidate: str
    clips: int
    max_abs_error: float
    min_cosine: float
    mean_cosine: float
    sources: list[str] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    passed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def synthetic_frames(spec: ClipSpec, *, frames: int | None = None, size: tuple[int, int] = (120, 160), seed: int = 0) -> np.ndarray:
    """A moving textured pattern, ``T x H x W x 3`` uint8, for when no real video is at hand."""
    count = frames or spec.frames_per_clip * (spec.frame_step or 1)
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(size[0] * 2, size[1] * 2, 3), dtype=np.uint8)
    shifts = np.linspace(0, size[1] // 2, count).astype(int)
    return np.stack([texture[s // 2 : s // 2 + size[0], s : s + size[1]] for s in shifts])


def verification_clips(
    spec: ClipSpec, videos: Sequence[str | os.PathLike] = (), *, clips_per_video: int = 3
) -> tuple[np.ndarray, list[str]]:
    """Model input (``N x 3 x T x S x S`` float32) from real videos, and where each clip came from.

    Videos are decoded in a child process (untrusted files); without videos a synthetic
    moving pattern stands in and the report says so.
    """
    clips, sources = [], []
    for video in videos:
        from vcl_infer.video.isolated import decode_clips

        decoded = decode_clips(str(video), spec, clips_per_video)
        clips.append(decoded.clips)
        sources += [f"{video}@{w.start_sec:.2f}-{w.end_sec:.2f}" for w in decoded.windows]
    if not clips:
        frames = synthetic_frames(spec)
        step = spec.frame_step or 1
        picked = frames[:: step][: spec.frames_per_clip]
        clips.append(fit_frames(picked, spec)[None])
        sources.append("synthetic moving pattern (no --verify-video given)")
    return to_model_input(np.concatenate(clips), spec), sources


def compare(
    reference: Encoder,
    candidate: Encoder,
    inputs: np.ndarray,
    *,
    names: tuple[str, str],
    sources: Sequence[str] = (),
    min_cosine: float = DEFAULT_MIN_COSINE,
    max_abs_error: float = DEFAULT_MAX_ABS_ERROR,
) -> Agreement:
    """Run both encoders on ``inputs`` (in batches of 1 and of all, to exercise the dynamic
    batch axis) and measure their agreement."""
    expected = np.concatenate([reference(inputs[i : i + 1]) for i in range(len(inputs))])
    got = candidate(inputs)
    got_single = candidate(inputs[:1])
    if not np.allclose(got_single, got[:1], atol=max_abs_error):
        raise VerificationFailed(f"{names[1]} gives different outputs for batch 1 and batch {len(inputs)}")
    diff = float(np.max(np.abs(expected.astype(np.float64) - got)))
    norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    cosine = np.sum(expected.astype(np.float64) * got, axis=1) / np.maximum(norms, 1e-12)
    result = Agreement(
        reference=names[0],
        candidate=names[1],
        clips=len(inputs),
        max_abs_error=diff,
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        sources=list(sources),
        tolerance={"min_cosine": min_cosine, "max_abs_error": max_abs_error},
    )
    result.passed = result.min_cosine >= min_cosine and result.max_abs_error <= max_abs_error
    return result


def write_report(path: Path, checks: Sequence[Agreement], extra: dict | None = None) -> None:
    report = {"checks": [c.to_dict() for c in checks], **(extra or {})}
    path.write_text(json.dumps(report, indent=2) + "\n")


def ensure_passed(check: Agreement) -> None:
    if not check.passed:
        raise VerificationFailed(
            f"{check.candidate} disagrees with {check.reference} on {check.clips} clips: "
            f"min cosine {check.min_cosine:.6f} (need >= {check.tolerance['min_cosine']}), "
            f"max abs error {check.max_abs_error:.2e} (need <= {check.tolerance['max_abs_error']:.0e}); "
            "nothing was written. Check the model for ops that export differently, or relax "
            "--min-cosine / --max-abs-error if the difference is expected (fp16, int8)."
        )

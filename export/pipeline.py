"""Checkpoint -> verified encoder bundle (ONNX, optionally a TensorRT engine), all or nothing."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from export.onnx_export import DEFAULT_OPSET, EmbeddingModel, export_onnx
from export.verify import (
    DEFAULT_MAX_ABS_ERROR,
    DEFAULT_MIN_COSINE,
    Agreement,
    compare,
    ensure_passed,
    verification_clips,
    write_report,
)
from training.fingerprint import weights_fingerprint
from training.models.registry import Backbone
from vcl_infer._optional import require
from vcl_infer.clips.spec import ClipSpec, EncoderSpec
from vcl_infer.encode.bundle import BundlePaths


class FeatureSlice(torch.nn.Module):
    """A backbone whose output is channels ``[start, stop)`` of its pooled feature.

    Exports one part of a ``longshort`` representation (stationary or non-stationary half).
    The range is a buffer, so the bundle's weight fingerprint differs per part: an index built
    with one part refuses the other.
    """

    feature_range: torch.Tensor

    def __init__(self, backbone: Backbone, start: int, stop: int) -> None:
        super().__init__()
        if not 0 <= start < stop <= int(backbone.embed_dim):
            raise ValueError(f"feature range [{start}, {stop}) is not inside 0..{backbone.embed_dim}")
        self.backbone = backbone
        self.start, self.stop = int(start), int(stop)
        self.embed_dim = self.stop - self.start
        self.register_buffer("feature_range", torch.tensor([self.start, self.stop], dtype=torch.long))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.backbone(clips)[:, self.start : self.stop]


class TemporalFeatures(torch.nn.Module):
    """A backbone whose output keeps time: its last feature map averaged over space only.

    ``B x 3 x T x H x W -> B x (C * t)``: the ``B x C x t x h x w`` map of
    ``forward_features`` is averaged over ``h, w`` (TCLR's ``AdaptiveAvgPool3d((None, 1, 1))``)
    and flattened channel-major (index ``c * t + k``, as ``view(-1)`` of a ``C x t`` map), so
    TCLR's retrieval feature (512 x 4 = 2048-d for ``r3d_18_tclr`` on 16 frames; Dave et al.
    2022, ``nn_retrieval/complete_retrieval.py``) comes out of the bundle. Not normalised: the
    protocol averages clips before its L2.
    """

    def __init__(self, backbone: Backbone, steps: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels, self.steps = int(backbone.embed_dim), int(steps)
        self.embed_dim = self.channels * self.steps

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(clips).mean(dim=(3, 4)).flatten(1)


def temporal_steps(backbone: Backbone, clip: ClipSpec) -> int:
    """Time steps of ``backbone``'s last feature map for one clip of ``clip`` (one dry run)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return int(backbone.forward_features(torch.zeros((1, *clip.input_shape))).shape[2])
    finally:
        backbone.train(was_training)


def feature_spec_fields(module: torch.nn.Module) -> dict:
    """The :class:`EncoderSpec` fields that describe what ``module`` (from :func:`select_features`) outputs."""
    if isinstance(module, TemporalFeatures):
        return {"feature_layer": "temporal", "feature_steps": module.steps, "l2_normalized": False}
    return {}


def select_features(backbone: Backbone, method: str, features: str,
                    clip: ClipSpec | None = None) -> tuple[Backbone | FeatureSlice | TemporalFeatures, str]:
    """The module to export for ``features`` and the spec's method name.

    ``"all"`` returns ``backbone`` and ``method`` unchanged. ``"stationary"`` /
    ``"non-stationary"`` need a ``longshort`` checkpoint and return a :class:`FeatureSlice`
    of that half with method ``longshort:<part>``. ``"temporal"`` returns
    :class:`TemporalFeatures` (needs ``clip`` to know the time steps); the method is kept and
    :func:`feature_spec_fields` says what to record in the spec.

    Raises:
        ValueError: unknown part, or a part of a checkpoint that is not ``longshort``.
    """
    from training.methods.longshort import FEATURE_PARTS, feature_range

    if features == "temporal":
        if clip is None:
            raise ValueError("--features temporal needs the clip spec to size the time axis")
        return TemporalFeatures(backbone, temporal_steps(backbone, clip)), method
    if features not in FEATURE_PARTS:
        raise ValueError(f"features must be one of {', '.join((*FEATURE_PARTS, 'temporal'))}; got {features!r}")
    if features == "all":
        return backbone, method
    if method != "longshort":
        raise ValueError(
            f"--features {features} exports half of a longshort representation, but this checkpoint's "
            f"method is {method!r}; use --features all"
        )
    start, stop = feature_range(features, int(backbone.embed_dim))
    return FeatureSlice(backbone, start, stop), f"longshort:{features}"


@dataclass
class ExportResult:
    """What an export wrote and how well it matched torch."""

    paths: BundlePaths
    spec: EncoderSpec
    checks: list[Agreement] = field(default_factory=list)
    engine_written: bool = False

    def to_dict(self) -> dict:
        files = [self.paths.onnx, self.paths.sidecar, self.paths.report]
        if self.engine_written:
            files += [self.paths.engine, self.paths.engine_sidecar]
        return {
            "files": [str(p) for p in files],
            "spec": self.spec.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
        }


def _ort_encoder(onnx_path: Path):
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda clips: session.run(None, {name: np.ascontiguousarray(clips, dtype=np.float32)})[0]


def _torch_encoder(model: EmbeddingModel):
    def encode(clips: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(clips))).numpy()

    return encode


def _write_spec_files(onnx_path: Path, paths: BundlePaths, spec: EncoderSpec) -> None:
    """Rewrite the ONNX metadata and the sidecar with the final spec (verification included)."""
    onnx = require("onnx")
    from export.onnx_export import set_spec_metadata

    proto = onnx.load_model(str(onnx_path))
    set_spec_metadata(proto, spec)
    onnx.save_model(proto, str(onnx_path))
    paths.sidecar.write_text(spec.to_json() + "\n")


def _check_engine(engine: str) -> None:
    """Refuse an unknown engine, and ``trt`` where TensorRT cannot build (before anything is written)."""
    if engine not in ("onnx", "trt"):
        raise ValueError("engine must be 'onnx' or 'trt'")
    if engine == "trt":
        from export.tensorrt import TensorRTUnavailable, tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason:
            raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}. Nothing was written.")


def _verified_onnx(model: EmbeddingModel, onnx_path: Path, inputs: np.ndarray, sources: list[str],
                   min_cosine: float, max_abs_error: float) -> Agreement:
    """ONNX Runtime's embeddings of ``inputs`` against torch's (:class:`VerificationFailed` when apart)."""
    check = compare(
        _torch_encoder(model), _ort_encoder(onnx_path), inputs,
        names=("torch", "onnxruntime-cpu"), sources=sources,
        min_cosine=min_cosine, max_abs_error=max_abs_error,
    )
    ensure_passed(check)
    return check


def export_bundle(
    backbone: torch.nn.Module,
    spec: EncoderSpec,
    out: str | os.PathLike,
    *,
    verify_videos: Sequence[str | os.PathLike] = (),
    clips_per_video: int = 3,
    opset: int = DEFAULT_OPSET,
    min_cosine: float = DEFAULT_MIN_COSINE,
    max_abs_error: float = DEFAULT_MAX_ABS_ERROR,
    engine: str = "onnx",
    trt_options=None,
    calibration_inputs: np.ndarray | None = None,
) -> ExportResult:
    """Export, verify and write a bundle; on any failure nothing is left at ``out``.

    Args:
        backbone: a backbone with the ``forward_features`` / ``forward_head`` contract, or any
            module with ``embed_dim`` mapping clips to ``N x embed_dim`` (:class:`FeatureSlice`).
        spec: the encoder spec (fingerprint and verification are filled in here).
        out: the bundle's ``.onnx`` path, or a folder for ``model.onnx``.
        verify_videos: real videos whose clips the check runs on (synthetic when empty).
        engine: ``onnx``, or ``trt`` to also build and verify a TensorRT engine.
        calibration_inputs: clips (``N x 3 x T x S x S``) that calibrate a TensorRT int8 engine
            (``export.calibration``); the verification clips when None.
    """
    paths = BundlePaths.for_model(out)
    _check_engine(engine)
    backbone = backbone.eval()
    model = EmbeddingModel(backbone, l2_normalize=spec.l2_normalized).eval()
    spec = spec.replace(fingerprint=weights_fingerprint(backbone.state_dict()))
    paths.onnx.parent.mkdir(parents=True, exist_ok=True)
    # Build everything in a temporary folder beside the target, then move it in: a failed
    # or interrupted export leaves no half-written bundle.
    with tempfile.TemporaryDirectory(prefix=".vcl-export-", dir=paths.onnx.parent) as tmp:
        staged = BundlePaths.for_model(Path(tmp) / paths.onnx.name)
        export_onnx(model, spec, staged.onnx, opset=opset)
        inputs, sources = verification_clips(spec.clip, verify_videos, clips_per_video=clips_per_video)
        onnx_check = _verified_onnx(model, staged.onnx, inputs, sources, min_cosine, max_abs_error)
        checks = [onnx_check]
        spec = spec.replace(verification={
            "onnxruntime_vs_torch": {k: getattr(onnx_check, k) for k in ("clips", "max_abs_error", "min_cosine")},
        })
        _write_spec_files(staged.onnx, staged, spec)
        if engine == "trt":
            calibration = inputs if calibration_inputs is None else calibration_inputs
            checks.append(_build_and_verify_engine(staged, spec, inputs, sources, trt_options, min_cosine,
                                                   max_abs_error, calibration=calibration))
        write_report(staged.report, checks, {"spec": spec.to_dict()})
        moved = [staged.onnx, staged.sidecar, staged.report]
        if engine == "trt":
            moved += [staged.engine, staged.engine_sidecar]
        for path in moved:
            os.replace(path, paths.onnx.parent / path.name)
    return ExportResult(paths=paths, spec=spec, checks=checks, engine_written=engine == "trt")


def _build_and_verify_engine(staged: BundlePaths, spec, inputs, sources, options, min_cosine, max_abs_error,
                             calibration=None) -> Agreement:
    from export.tensorrt import TrtOptions, build_engine, engine_record, make_calibrator
    from vcl_infer.encode.backends.tensorrt_backend import TensorRTBackend

    options = options or TrtOptions()
    calibration = inputs if calibration is None else calibration
    calibrator = make_calibrator(calibration, spec, options.max_batch) if options.int8 else None
    engine = build_engine(staged.onnx, spec, options, calibrator=calibrator)
    staged.engine.write_bytes(engine)
    record = engine_record(engine, staged.onnx, spec, options)
    staged.engine_sidecar.write_text(json.dumps(record, indent=2) + "\n")
    # reduced precision is judged against looser defaults unless the user set them
    if options.int8 or options.fp16:
        min_cosine = min(min_cosine, 0.99 if options.int8 else 0.999)
        max_abs_error = max(max_abs_error, 0.05 if options.int8 else 0.01)
    # verified through the runtime's own backend, so what ships is what was checked
    runner = TensorRTBackend(staged.onnx, spec, options=options)
    check = compare(
        _ort_encoder(staged.onnx), runner.encode, inputs,
        names=("onnxruntime-cpu", "tensorrt"), sources=sources,
        min_cosine=min_cosine, max_abs_error=max_abs_error,
    )
    ensure_passed(check)
    record["verification"] = check.to_dict()
    staged.engine_sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return check

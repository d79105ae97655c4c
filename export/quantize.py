"""int8 encoder bundles: ONNX Runtime static quantization (QDQ, per-channel weights), verified against fp32.

The fp32 bundle is quantized with activation ranges measured on real clips (``calibration.py``),
then checked like every export: the int8 model against the fp32 one on held-out clips (cosine,
max abs error) and, given a labelled folder, retrieval R@1 of both. The spec records the scheme,
the calibration and those numbers (``spec.quantization``); the runtime runs the result as any
other bundle (ONNX Runtime executes QDQ graphs with int8 kernels).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from export.calibration import CalibrationSet, calibration_clips
from export.verify import Agreement, compare, ensure_passed, verification_clips, write_report
from vcl_infer._optional import require
from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode.bundle import BundlePaths, load_bundle_spec

# An int8 embedding is judged against fp32, not torch: these allow quantization noise while
# still failing a broken graph (an untrained backbone's clips all have cosine ~0.999, so the
# abs error bound is what catches a wrong model there).
INT8_MIN_COSINE = 0.99
INT8_MAX_ABS_ERROR = 0.05
_SCHEME = {"format": "QDQ", "weights": "int8 symmetric, per output channel", "activations": "uint8, per tensor",
           "calibration_method": "MinMax", "tool": "onnxruntime.quantization.quantize_static"}


@dataclass
class QuantizeResult:
    """What an int8 export wrote and how close it is to fp32."""

    paths: BundlePaths
    spec: EncoderSpec
    checks: list[Agreement] = field(default_factory=list)
    retrieval: dict | None = None
    engine_written: bool = False

    def to_dict(self) -> dict:
        return {"files": [str(p) for p in (self.paths.onnx, self.paths.sidecar, self.paths.report)],
                "spec": self.spec.to_dict(), "checks": [c.to_dict() for c in self.checks],
                "retrieval": self.retrieval}


class _ClipFeed:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over an array of clips."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int = 8) -> None:
        self._batches = iter([{name: np.ascontiguousarray(inputs[i : i + batch])} for i in range(0, len(inputs), batch)])

    def get_next(self):
        return next(self._batches, None)


def _session(path: Path, threads: int | None = None):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda clips: session.run(None, {name: np.ascontiguousarray(clips, dtype=np.float32)})[0]


def weights_digest(onnx_path: Path) -> str:
    """``sha256:<hex>`` over the model's initializers (name, type, shape, bytes) in name order.

    The int8 bundle's fingerprint: its weights differ from the fp32 model's, so an index built
    with one refuses the other (their embeddings differ, slightly).
    """
    onnx = require("onnx")
    from onnx import numpy_helper

    model = onnx.load_model(str(onnx_path))
    digest = hashlib.sha256()
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(tensor.name.encode())
        digest.update(str(array.dtype).encode() + repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return "sha256:" + digest.hexdigest()


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: CalibrationSet, input_name: str) -> bool:
    """Write the QDQ int8 model of ``fp32_path``; returns whether ORT's pre-processing ran.

    Pre-processing (shape inference and graph fusion, which ORT recommends before
    quantization) is tried first; a model it cannot handle is quantized as exported.
    """
    require("onnx")  # onnxruntime.quantization needs it; this names the extra that installs it
    quantization = require("onnxruntime.quantization")
    source, preprocessed = fp32_path, False
    with tempfile.TemporaryDirectory(prefix=".vcl-int8-pre-", dir=int8_path.parent) as tmp:
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            staged = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32_path), str(staged))
            source, preprocessed = staged, True
        except Exception:  # noqa: BLE001 - optional optimisation; the plain model still quantizes
            source = fp32_path
        quantization.quantize_static(
            str(source), str(int8_path), _ClipFeed(input_name, calibration.inputs),
            quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    return preprocessed


def labelled_recall(fp32: Path, int8: Path, labelled: str | os.PathLike, spec: EncoderSpec, *,
                    clips_per_video: int = 4) -> dict:
    """Leave-one-out video retrieval R@1 on class folders, fp32 vs int8 on the same decoded clips."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.pooling import pool_clips
    from vcl_infer.errors import VideoError
    from vcl_infer.probe.labels import class_folders
    from vcl_infer.probe.retrieval_metrics import recall_at_k
    from vcl_infer.video.isolated import decode_clips

    items, classes = class_folders(labelled)
    encoders = {"fp32": _session(fp32), "int8": _session(int8)}
    vectors: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    labels = []
    for item in items:
        try:
            clips = to_model_input(decode_clips(item.path, spec.clip, clips_per_video).clips, spec.clip)
        except VideoError:
            continue
        for kind, encode in encoders.items():
            vectors[kind].append(pool_clips(encode(clips)))
        labels.append(item.label)
    if len(labels) < 2:
        raise ValueError(f"--labelled {labelled}: fewer than 2 readable videos in class folders")
    labels_arr = np.asarray(labels)
    result: dict[str, float] = {"videos": len(labels), "classes": len(classes)}
    for kind, rows in vectors.items():
        matrix = np.stack(rows)
        hits = []
        for i in range(len(matrix)):  # each video queries all the others
            others = np.delete(np.arange(len(matrix)), i)
            hits.append(recall_at_k(matrix[i : i + 1], labels_arr[i : i + 1], matrix[others], labels_arr[others], ks=(1,))[1])
        result[f"{kind}_R@1"] = float(np.mean(hits))
    result["R@1_drop_points"] = 100.0 * (result["fp32_R@1"] - result["int8_R@1"])
    return result


def quantize_bundle(
    fp32_bundle: str | os.PathLike,
    out: str | os.PathLike,
    calibration: str | os.PathLike | CalibrationSet,
    *,
    verify_videos: Sequence[str | os.PathLike] = (),
    clips_per_video: int = 3,
    calibration_clips_per_video: int = 4,
    labelled: str | os.PathLike | None = None,
    min_cosine: float = INT8_MIN_COSINE,
    max_abs_error: float = INT8_MAX_ABS_ERROR,
) -> QuantizeResult:
    """Quantize the fp32 bundle at ``fp32_bundle`` to an int8 bundle at ``out``; all or nothing.

    Args:
        fp32_bundle: an exported (verified) fp32 bundle.
        out: the int8 bundle's ``.onnx`` path, or a folder for ``model.onnx``.
        calibration: a folder of real videos (decoded with the bundle's spec), or clips already decoded.
        verify_videos: videos for the held-out fp32-vs-int8 check (synthetic clip when empty).
        labelled: class folders to measure R@1 of fp32 and int8 on (optional).

    Raises:
        VerificationFailed: int8 disagrees with fp32 beyond ``min_cosine`` / ``max_abs_error``.
        VclError: no calibration clip could be decoded.
    """
    source = BundlePaths.for_model(fp32_bundle)
    spec = load_bundle_spec(source.onnx)
    if spec.quantization:
        raise ValueError(f"{source.onnx} is already quantized ({spec.quantization.get('type')}); give the fp32 bundle")
    calib = calibration if isinstance(calibration, CalibrationSet) else calibration_clips(
        spec.clip, calibration, clips_per_video=calibration_clips_per_video)
    paths = BundlePaths.for_model(out)
    paths.onnx.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vcl-int8-", dir=paths.onnx.parent) as tmp:
        staged = BundlePaths.for_model(Path(tmp) / paths.onnx.name)
        preprocessed = quantize_onnx(source.onnx, staged.onnx, calib, spec.input_name)
        fp32, int8 = _session(source.onnx), _session(staged.onnx)
        held_out, sources = verification_clips(spec.clip, verify_videos, clips_per_video=clips_per_video)
        names = ("onnxruntime-fp32", "onnxruntime-int8")
        checks = [compare(fp32, int8, held_out, names=names, sources=sources,
                          min_cosine=min_cosine, max_abs_error=max_abs_error),
                  compare(fp32, int8, calib.inputs, names=names, sources=["calibration clips"],
                          min_cosine=min_cosine, max_abs_error=max_abs_error)]
        for check in checks:
            ensure_passed(check)
        retrieval = labelled_recall(source.onnx, staged.onnx, labelled, spec) if labelled else None
        fidelity = {name: {k: getattr(c, k) for k in ("clips", "min_cosine", "mean_cosine", "max_abs_error")}
                    for name, c in zip(("held_out", "calibration"), checks)}
        quantization = {"type": "int8", **_SCHEME, "preprocessed": preprocessed,
                        "calibration": {**calib.summary(), "folder": str(calibration) if not isinstance(calibration, CalibrationSet) else None},
                        "source_fingerprint": spec.fingerprint, "fidelity_vs_fp32": fidelity}
        if retrieval is not None:
            quantization["retrieval"] = retrieval
        int8_spec = spec.replace(fingerprint=weights_digest(staged.onnx), quantization=quantization)
        _write_spec(staged, int8_spec)
        write_report(staged.report, checks, {"spec": int8_spec.to_dict(), "retrieval": retrieval})
        for path in (staged.onnx, staged.sidecar, staged.report):
            os.replace(path, paths.onnx.parent / path.name)
    return QuantizeResult(paths=paths, spec=int8_spec, checks=checks, retrieval=retrieval)


def export_then_quantize(backbone, spec: EncoderSpec, out: str | os.PathLike, *, calibration: str | os.PathLike,
                         labelled: str | os.PathLike | None = None, calibration_clips_per_video: int = 4,
                         **export_options) -> QuantizeResult:
    """Export ``backbone`` as a verified fp32 bundle (``export.pipeline.export_bundle``), then
    write its int8 bundle at ``out``; the fp32 bundle lives only in a temporary folder.

    The result's checks hold both steps: fp32 against torch, then int8 against fp32.
    """
    from export.pipeline import export_bundle

    paths = BundlePaths.for_model(out)
    paths.onnx.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vcl-fp32-", dir=paths.onnx.parent) as tmp:
        fp32 = export_bundle(backbone, spec, Path(tmp) / "fp32.onnx", **export_options)
        result = quantize_bundle(
            fp32.paths.onnx, out, calibration, verify_videos=export_options.get("verify_videos", ()),
            clips_per_video=export_options.get("clips_per_video", 3),
            calibration_clips_per_video=calibration_clips_per_video, labelled=labelled,
        )
    result.checks = fp32.checks + result.checks
    return result


def _write_spec(staged: BundlePaths, spec: EncoderSpec) -> None:
    onnx = require("onnx")
    from export.onnx_export import set_spec_metadata

    proto = onnx.load_model(str(staged.onnx))
    set_spec_metadata(proto, spec)
    onnx.save_model(proto, str(staged.onnx))
    staged.sidecar.write_text(spec.to_json() + "\n")

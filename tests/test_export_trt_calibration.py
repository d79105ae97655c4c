"""TensorRT int8 is calibrated on the --calibration clips, not on the verification clips (no GPU needed:
the TensorRT calls are replaced at their boundary, so only the wiring is tested here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from export.cli import main as vcl_export

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
CALIBRATION = VIDEOS / "mmaction2"


class _Stop(Exception):
    pass


@pytest.mark.skipif(not CALIBRATION.is_dir(), reason="../shared/videos not found")
def test_trt_int8_calibrator_gets_the_calibration_clips(tmp_path, monkeypatch):
    seen = {}

    def fake_calibrator(clips, spec, batch):
        seen["clips"] = np.array(clips)
        raise _Stop  # stop before any TensorRT call

    monkeypatch.setattr("export.tensorrt.tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr("export.tensorrt.make_calibrator", fake_calibrator)
    result = CliRunner().invoke(vcl_export, ["--arch", "r3d_small", "--out", str(tmp_path / "m.onnx"), "--engine", "trt",
                                             "--int8", "--calibration", str(CALIBRATION), "--calibration-clips", "2"])
    assert isinstance(result.exception, _Stop), result.output
    # 2 videos x 2 clips, model input shaped by the bundle's spec; the verification set is 1 synthetic clip
    assert seen["clips"].shape == (4, 3, 8, 64, 64) and seen["clips"].dtype == np.float32
    assert list(tmp_path.iterdir()) == []  # the failed export left nothing behind

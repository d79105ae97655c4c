"""``--engine ray`` cuts a fixed count of clips: stride options and stride indexes are refused."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vcl_infer.errors import VclError


@pytest.mark.parametrize("option", [["--clip-every", "2"], ["--min-clips", "4"], ["--max-clips", "10"],
                                    ["--recall", "0.9"]])
def test_the_cli_refuses_local_only_options_with_ray(tmp_path, option):
    from vcl_infer.cli.index import main

    result = CliRunner().invoke(main, ["build", str(tmp_path), "--index", str(tmp_path / "ix"),
                                       "--engine", "ray", *option])
    assert result.exit_code != 0
    assert "--engine local" in result.output and option[0] in result.output


def test_ray_builds_take_the_recorded_fixed_count_and_refuse_a_stride_index(tmp_path):
    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.clips.sampling_record import write_sampling
    from vcl_infer.distributed.pipeline import _fixed_sampling
    from vcl_infer.index.build import DEFAULT_CLIPS

    assert _fixed_sampling(tmp_path / "new", None) == ClipSampling.fixed(DEFAULT_CLIPS)
    assert _fixed_sampling(tmp_path / "new", 3) == ClipSampling.fixed(3)
    fixed, stride = tmp_path / "fixed", tmp_path / "stride"
    fixed.mkdir()
    stride.mkdir()
    write_sampling(fixed, ClipSampling.fixed(4))
    write_sampling(stride, ClipSampling(every_sec=2.0))
    assert _fixed_sampling(fixed, None) == ClipSampling.fixed(4)
    with pytest.raises(VclError, match="4 clips"):
        _fixed_sampling(fixed, 3)
    with pytest.raises(VclError, match="--engine local"):
        _fixed_sampling(stride, None)

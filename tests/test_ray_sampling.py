"""``--engine ray`` cuts videos exactly as a local build does: the same options, the same rule
resolution against the index's ``sampling.json`` (checked here without starting Ray; the
windows themselves are compared with a local build in ``test_distributed_ray.py``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vcl_infer.errors import VclError

pytest.importorskip("ray")
pytest.importorskip("pyarrow")


def test_the_cli_hands_the_sampling_options_and_recall_to_the_ray_build(tmp_path, monkeypatch):
    import vcl_infer.distributed.pipeline as pipeline
    from vcl_infer.cli.index import main
    from vcl_infer.index.build import BuildReport

    seen = {}

    def fake_build(videos_dir, index_dir, **kwargs):
        seen.update(kwargs)
        return BuildReport(index=str(index_dir))

    monkeypatch.setattr(pipeline, "build_with_ray", fake_build)
    result = CliRunner().invoke(main, ["build", str(tmp_path), "--index", str(tmp_path / "ix"), "--engine", "ray",
                                       "--clip-every", "2", "--min-clips", "4", "--max-clips", "10",
                                       "--recall", "0.9", "--index-type", "flat", "--json"])
    assert result.exit_code == 0, result.output
    assert (seen["clip_every"], seen["min_clips"], seen["max_clips"], seen["clips"]) == (2.0, 4, 10, None)
    assert (seen["target_recall"], seen["index_type"]) == (0.9, "flat")


def test_a_ray_build_resolves_the_rule_like_a_local_one_before_starting_ray(tmp_path, monkeypatch):
    import vcl_infer.distributed.pipeline as pipeline
    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.clips.sampling_record import write_sampling

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a refused rule")

    monkeypatch.setattr(pipeline, "ray_session", no_ray)
    videos = tmp_path / "videos"
    videos.mkdir()
    stride = tmp_path / "stride"
    stride.mkdir()
    write_sampling(stride, ClipSampling(every_sec=2.0))
    for options, match in [({"clip_every": 3.0}, "a clip every 2 s"), ({"clips": 8}, "a clip every 2 s"),
                           ({"clips": 3, "clip_every": 1.0}, "cannot be combined")]:
        with pytest.raises(VclError, match=match):
            pipeline.build_with_ray(videos, stride, progress=False, **options)

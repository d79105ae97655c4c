"""vcl-synth refuses a set that asks for a test split but could not have one."""

from __future__ import annotations

import json

from click.testing import CliRunner

from training.synth_cli import main


def test_too_few_videos_per_class_for_a_test_split_is_refused_with_the_minimum(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / "s"), "--classes", "2", "--videos-per-class", "2",
                                       "--frames", "4", "--size", "16"])
    assert result.exit_code != 0
    assert "0 test videos" in result.output and "--videos-per-class 5" in result.output
    assert not (tmp_path / "s" / "videos").exists()  # nothing half-written


def test_the_minimum_it_names_gives_test_videos_and_a_train_only_set_is_allowed(tmp_path):
    ok = CliRunner().invoke(main, [str(tmp_path / "a"), "--classes", "2", "--videos-per-class", "5",
                                   "--frames", "4", "--size", "16", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["test"] >= 2  # one held-out group per class
    train_only = CliRunner().invoke(main, [str(tmp_path / "b"), "--classes", "2", "--videos-per-class", "2",
                                           "--frames", "4", "--size", "16", "--test-fraction", "0", "--json"])
    assert train_only.exit_code == 0 and json.loads(train_only.output)["test"] == 0

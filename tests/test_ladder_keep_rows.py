"""benchmarks/reproduce.py: ``--override`` settings and ``--keep-rows`` (an earlier ladder's rows
reused, with their numbers, unless their method settings changed). No training here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_modules import load_script


def _reproduce():
    return load_script("benchmarks/reproduce.py", "reproduce_under_test")


def _row(mod, name: str, method: str, top1: float, **extra) -> dict:
    return {"name": name, "method": method, "seed": 0, "data": "motion", "linear_top1": top1,
            "linear_top1_1clip": top1, "probe": mod.PROBE, "linear_top1_legacy": top1, "r1_1clip": 0.3,
            "r5_1clip": 0.7, "r1": 0.3, "r5": 0.7, "final_loss": None, "train_s": 1.0, "eval_s": 1.0, **extra}


def _earlier_ladder(mod, tmp_path: Path, **arg_changes) -> Path:
    args = mod.parse_args(["--out", str(tmp_path / "old")])
    recorded = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, list))}
    recorded.update(arg_changes)
    rows = [_row(mod, "untrained-s0", "untrained", 0.25, method_args={}),
            _row(mod, "simclr-s0", "simclr", 0.5),  # from before rows recorded their settings
            _row(mod, "moco-s0", "moco", 0.4, method_args={"queue_size": 128}),  # settings since changed
            _row(mod, "fame-s0", "fame", 0.36, method_args=mod.METHOD_ARGS["fame"])]
    path = tmp_path / "old_ladder.json"
    path.write_text(json.dumps({"args": recorded, "rows": rows, "written": "2026-12-01 22:27:33"}))
    return path


def test_override_merges_over_the_ladder_settings():
    mod = _reproduce()
    args = mod.parse_args(["--out", "/tmp/x", "--override", '{"moco": {"symmetric": true, "momentum": 0.5}}',
                           "--override-optim", '{"moco": {"lr": 0.003}}'])
    assert mod.method_args(args, "moco") == {**mod.METHOD_ARGS["moco"], "symmetric": True, "momentum": 0.5}
    assert mod.method_args(args, "fame") == mod.METHOD_ARGS["fame"]  # other methods untouched
    assert mod.optim_args(args, "moco") == {"optimizer": "adam", "lr": 0.003}
    assert mod.optim_args(mod.parse_args(["--out", "/tmp/x"]), "moco") == mod.OPTIM["moco"]
    with pytest.raises(SystemExit):
        mod.parse_args(["--out", "/tmp/x", "--override", '{"moco": 1}'])


def test_keep_rows_keeps_unchanged_rows_and_drops_stale_ones(tmp_path):
    mod = _reproduce()
    path = _earlier_ladder(mod, tmp_path)
    args = mod.parse_args(["--out", str(tmp_path / "new"), "--keep-rows", str(path)])
    kept = mod.kept_rows(args)
    assert sorted(kept) == ["fame-s0", "simclr-s0", "untrained-s0"]  # moco-s0's settings changed: it reruns
    assert kept["untrained-s0"]["linear_top1"] == 0.25 and str(path) in kept["untrained-s0"]["kept_from"]
    changed = mod.parse_args(["--out", str(tmp_path / "new"), "--keep-rows", str(path),
                              "--override", '{"fame": {"symmetric": false}}'])
    assert "fame-s0" not in mod.kept_rows(changed)  # an override makes the earlier fame rows stale


def test_keep_rows_refuses_a_ladder_on_other_data(tmp_path):
    mod = _reproduce()
    path = _earlier_ladder(mod, tmp_path, data_seed=1)
    with pytest.raises(SystemExit, match="data_seed"):
        mod.kept_rows(mod.parse_args(["--out", str(tmp_path / "new"), "--keep-rows", str(path)]))


def test_report_with_kept_rows_marks_them_and_runs_nothing(tmp_path):
    mod = _reproduce()
    path = _earlier_ladder(mod, tmp_path)
    result = mod.main(["--out", str(tmp_path / "new"), "--keep-rows", str(path), "--report-only"])
    assert sorted(r["name"] for r in result["rows"]) == ["fame-s0", "simclr-s0", "untrained-s0"]
    md = (tmp_path / "new" / "ladder.md").read_text()
    assert "| untrained (floor) (kept: 1 of 1) | 1 |" in md and "Kept, not rerun (3 rows" in md
    assert "moco-s0" in md.split("Not run yet")[1]  # the stale row is pending, not reported

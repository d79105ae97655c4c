"""A run's ``metrics.csv`` (+ TensorBoard when installed), written by rank 0 of the loop."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricsLog:
    """``metrics.csv`` (+ TensorBoard when installed), rank 0 only."""

    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.csv"
        self.fields: list[str] = []  # the CSV header; empty until the first row
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            # a killed run may have logged past its last checkpoint: drop those rows
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            rows = [r for r in rows if int(r.get("step", 0)) <= resume_step] if resume_step else []
            if rows:
                self.fields = list(rows[0])
            with self.path.open("w", newline="") as f:
                if rows:
                    w = csv.DictWriter(f, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.fields
        if new:
            self.fields = list(row)
        elif any(k not in self.fields for k in row):
            # a column appears later (the kNN monitor's first row is step 0, before any loss):
            # rewrite the small file under the widened header so no value is dropped
            self.fields += [k for k in row if k not in self.fields]
            with self.path.open(newline="") as f:
                old = list(csv.DictReader(f))
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(old)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

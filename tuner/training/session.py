"""Where a trial reports to: Ray Tune inside a search, or the terminal for ``medtune train``.

The trial's code is the same in both; only these two methods differ.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol


class TrialSession(Protocol):
    def latest_checkpoint(self) -> Path | None:
        """The folder of the checkpoint to resume from, or None for a fresh start."""

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        """Publish one epoch's metrics with its checkpoint folder (which the caller deletes after)."""


class TuneSession:
    """Reports to Ray Tune: its scheduler decides from these metrics, and it stores the checkpoint."""

    def latest_checkpoint(self) -> Path | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        return Path(checkpoint.to_directory(tempfile.mkdtemp(prefix="medtune-restore-")))

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))


class LocalSession:
    """Prints one JSON line per epoch and keeps the newest checkpoint in ``out_dir/checkpoint``."""

    def __init__(self, out_dir: Path, resume: bool = False) -> None:
        self.checkpoint_dir = out_dir / "checkpoint"
        self.resume = resume
        self.history: list[dict[str, Any]] = []

    def latest_checkpoint(self) -> Path | None:
        return self.checkpoint_dir if self.resume and self.checkpoint_dir.is_dir() else None

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        self.history.append(metrics)
        print(json.dumps(metrics), flush=True)
        if self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)
        shutil.copytree(checkpoint, self.checkpoint_dir)

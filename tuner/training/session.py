"""Where a trial reports to: Ray Tune inside a search, or the terminal for ``medtune train``.

The trial's code is the same in both; only these two methods differ.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol


class TrialSession(Protocol):
    """Where a trial reports each epoch and finds its checkpoint: the trial code is the same under Tune
    and in ``medtune train``, and only this differs."""

    def latest_checkpoint(self) -> AbstractContextManager[Path | None]:
        """The folder of the checkpoint to resume from (None for a fresh start), readable while the
        context is open."""

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        """Publish one epoch's metrics with its checkpoint folder (which the caller deletes after)."""


class TuneSession:
    """Reports to Ray Tune: its scheduler decides from these metrics, and it stores the checkpoint.

    Each report also says where the trial ran (Ray node id, the GPUs it was given), which MLflow
    records as tags; and the last metrics are kept so that a diverged trial can end with a report."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """Ray's own folder where the storage is local (no copy); a download it removes afterwards where not."""
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        """Hand the epoch's metrics and checkpoint to Tune, with where the trial ran (for MLflow's tags)."""
        import ray
        from ray import tune

        placement = {"node_id": ray.get_runtime_context().get_node_id(),
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        self.last = {**metrics, **placement}
        tune.report(self.last, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))

    def report_divergence(self, reason: str) -> None:
        """End a trial whose loss stopped being finite as *stopped*, with its reason, rather than as an
        error that Tune would retry: the same weights would diverge again. The validation metrics are
        those of its last finite epoch (NaN when there was none), so schedulers read a number."""
        from ray import tune

        epoch = self.last.get("epoch", 0) + 1
        nan = float("nan")
        tune.report({**self.last, "val_auc": self.last.get("val_auc", nan), "epoch": epoch, "diverged": 1,
                     "stop_reason": f"epoch {epoch}: {reason}"})


class LocalSession:
    """Prints one JSON line per epoch and keeps the newest checkpoint in ``out_dir/checkpoint``."""

    def __init__(self, out_dir: Path, resume: bool = False) -> None:
        self.checkpoint_dir = out_dir / "checkpoint"
        self.resume = resume
        self.history: list[dict[str, Any]] = []

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """``out_dir/checkpoint`` when resuming and it exists, else None (a fresh start)."""
        yield self.checkpoint_dir if self.resume and self.checkpoint_dir.is_dir() else None

    def report(self, metrics: dict[str, Any], checkpoint: Path) -> None:
        """Print the epoch as one JSON line and keep its checkpoint as the newest (for ``--resume``)."""
        self.history.append(metrics)
        print(json.dumps(metrics), flush=True)
        if self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)
        shutil.copytree(checkpoint, self.checkpoint_dir)

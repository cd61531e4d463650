"""Trial sessions for tests: one that stops the trial like a preemption (resume tests), one that keeps
each epoch's saved state (tests of what the trial trained), and the straight-vs-resumed pair that every
bit-exact resume test compares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial


class CrashAfter(LocalSession):
    """Reports (and keeps the checkpoint of) epochs up to ``epochs``, then interrupts the trial.
    ``session`` goes to ``LocalSession`` (a checkpoint ``policy``)."""

    def __init__(self, out_dir: Path, epochs: int, **session: Any) -> None:
        super().__init__(out_dir, **session)
        self.epochs = epochs

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.epochs:
            raise KeyboardInterrupt("simulated preemption")


class StateRecorder(LocalSession):
    """Keeps each epoch's trial state as its checkpoint saved it (``states[i]["model"]``,
    ``["optimizer"]``): what the trial trained, read from what a resume would load."""

    def __init__(self, out_dir: Path, **session: Any) -> None:
        super().__init__(out_dir, **session)
        self.states: list[dict[str, Any]] = []

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        self.states.append(torch.load(checkpoint / STATE_FILE, weights_only=True))


def straight_and_resumed(config: dict[str, Any], data, root: Path, crash_after: int,
                         **session: Any) -> tuple[LocalSession, LocalSession]:
    """``config`` run straight into ``root / "straight"``, and into ``root / "resumed"`` preempted after
    epoch ``crash_after`` then resumed: the two sessions a bit-exact resume test compares."""
    straight = LocalSession(root / "straight", **session)
    run_trial(config, data, straight)
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, data, CrashAfter(root / "resumed", crash_after, **session))
    resumed = LocalSession(root / "resumed", resume=True, **session)
    run_trial(config, data, resumed)
    return straight, resumed

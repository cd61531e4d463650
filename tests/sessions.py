"""A trial session that stops the trial like a preemption, for resume tests."""

from __future__ import annotations

from pathlib import Path

from tuner.training.session import LocalSession


class CrashAfter(LocalSession):
    """Reports (and keeps the checkpoint of) epochs up to ``epochs``, then interrupts the trial."""

    def __init__(self, out_dir: Path, epochs: int) -> None:
        super().__init__(out_dir)
        self.epochs = epochs

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.epochs:
            raise KeyboardInterrupt("simulated preemption")

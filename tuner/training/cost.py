"""What a trial costs: its wall time, the CPU time of its process and the GPU time it held, reported
with every epoch (running totals) so that MLflow records them and the report can total a study and
each of its arms.

- ``cost_wall_s``: seconds of wall-clock time the trial has run;
- ``cost_cpu_s``: CPU-seconds its process used (user + system, all threads: ``time.process_time``),
  counted from the trial's start, so a worker process that Tune reuses for the next trial starts
  that trial at zero;
- ``cost_gpu_s``: the GPU fraction it was given (``--gpus-per-trial``, as Ray assigned it) times its wall
  time: what it held, whether or not it kept the GPU busy.

A trial resumed from a checkpoint continues its totals: they travel in the checkpoint (``COST_FILE``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

COST_FILE = "cost.json"


@dataclass
class TrialCost:
    """A trial's running cost: the totals of earlier runs of it (before a resume) plus this run's."""

    gpus: float = 0.0  # the GPU fraction the trial holds
    wall_s: float = 0.0  # totals carried over from the checkpoint it resumed from
    cpu_s: float = 0.0
    _started: tuple[float, float] = field(default_factory=lambda: (time.monotonic(), time.process_time()))

    def metrics(self) -> dict[str, float]:
        """The totals so far, as the metrics a trial reports (``cost_wall_s``, ``cost_cpu_s``, ``cost_gpu_s``)."""
        wall = self.wall_s + time.monotonic() - self._started[0]
        return {"cost_wall_s": wall, "cost_cpu_s": self.cpu_s + time.process_time() - self._started[1],
                "cost_gpu_s": self.gpus * wall}

    def checkpoint(self, folder: Path) -> dict[str, float]:
        """The totals so far (``metrics``), also written into the checkpoint ``folder`` so that a resume
        continues them."""
        totals = self.metrics()
        (folder / COST_FILE).write_text(json.dumps({"wall_s": totals["cost_wall_s"], "cpu_s": totals["cost_cpu_s"]}))
        return totals

    def resume(self, folder: Path) -> None:
        """Carry over the totals saved in the checkpoint ``folder`` (none in one written before costs were)."""
        path = folder / COST_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            self.wall_s, self.cpu_s = float(saved["wall_s"]), float(saved["cpu_s"])

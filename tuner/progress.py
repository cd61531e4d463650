"""A search's progress on the terminal at the default level (``tuner.terminal``): one line per
finished trial, and a progress line with trials done / running / pruned and the best score so far,
rewritten in place on a TTY, or repeated as a line after ``HEARTBEAT_S`` seconds without output when
the output is a file or a pipe (a CI log, ``make demo | tee``). ``make_tuner`` adds it to every Tuner
(``medtune tune``, its confirmation stage, ``medtune pretrain --search``)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from ray import tune

from tuner.schema import COMPLETED, DIVERGED, EARLY_STOPPING, ERRORED, STOPPED_EARLY, trial_outcome
from tuner.terminal import DEFAULT, level

HEARTBEAT_S = 60.0  # without a TTY: a progress line after this long without any output
REDRAW_S = 0.5  # on a TTY: the progress line is rewritten at most this often
ENDED_WORDS = {COMPLETED: "completed", STOPPED_EARLY: "pruned by ASHA", EARLY_STOPPING: "stopped by its patience",
               DIVERGED: "diverged"}


def progress_callbacks(metric: str, mode: str, total: int, name: Callable[[Any], str]) -> list[tune.Callback]:
    """The Tune callbacks that show a search's progress at the current level: ``TrialProgress`` at
    the default level; none at ``--quiet`` (the summary only) or ``--verbose`` (Tune's own tables)."""
    return [TrialProgress(metric, mode, total, name)] if level() == DEFAULT else []


class TrialProgress(tune.Callback):
    """Tune callback: one line per finished trial and a progress line (done, pruned, errored and
    running of ``total``; the best ``metric`` so far by ``mode``). ``name`` names a trial as the
    search's table and folders do. It writes to ``sys.stdout`` as it is at each call, and keeps no
    stream: Tune pickles its callbacks with the experiment for ``--resume``."""

    def __init__(self, metric: str, mode: str, total: int, name: Callable[[Any], str]) -> None:
        self.metric, self.mode, self.total, self.name = metric, mode, total, name
        self.running: set[str] = set()
        self.ended: dict[str, int] = {}  # outcome -> trials
        self.best: float | None = None
        self.best_trial = ""
        self.started = time.monotonic()
        self.last_output = self.started
        self.drawn = False  # a progress line is on the TTY, to be rewritten

    def setup(self, **info: Any) -> None:
        """Tune starts (or, after ``--resume``, restarts) the run: the clock starts now."""
        self.started = self.last_output = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial started: one more running."""
        self.running.add(trial.trial_id)
        self._draw()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        """An epoch's report: the best so far may change."""
        self._consider(trial, result.get(self.metric))
        self._draw()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial ended without an error: its line says how it ended, after how many epochs, and the
        score it selected."""
        result = trial.last_result or {}
        outcome = trial_outcome(trial.config, result)
        score = result.get("best_score", result.get(f"best_{self.metric}", result.get(self.metric)))
        self._consider(trial, score)
        epochs = result.get("epoch", result.get("training_iteration", 0))
        shown = f"{self.metric} {score:.4f}" if _finite(score) else f"no finite {self.metric}"
        self._ended(trial, outcome, f"{ENDED_WORDS[outcome]} after {epochs} epoch{'s' * (epochs != 1)}, {shown}")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial raised: its line says where its traceback is."""
        self._ended(trial, ERRORED, f"errored (traceback in {trial.path}/error.txt)")

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Every turn of Tune's loop: keep the progress line alive."""
        self._draw()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """The last progress line is left in place, and the terminal is the summary's."""
        if self.drawn:
            self._write("\n")
            self.drawn = False

    def status(self) -> str:
        """``medtune: [#####...] 5/12 done (2 pruned, 0 errored), 2 running; best val_auc 0.8123 (id); 1m05s``."""
        done = sum(self.ended.values())
        best = (f"best {self.metric} {self.best:.4f} ({self.best_trial})" if self.best is not None
                else f"no {self.metric} yet")
        seconds = int(time.monotonic() - self.started)
        return (f"medtune: [{_bar(done, self.total)}] {done}/{self.total} done ({self.ended.get(STOPPED_EARLY, 0)} "
                f"pruned, {self.ended.get(ERRORED, 0)} errored), {len(self.running)} running; {best}; "
                f"{seconds // 60}m{seconds % 60:02d}s")

    def _ended(self, trial: Any, outcome: str, words: str) -> None:
        self.running.discard(trial.trial_id)
        self.ended[outcome] = self.ended.get(outcome, 0) + 1
        self._line(f"medtune: trial {sum(self.ended.values())}/{self.total} {self.name(trial)}: {words}")
        self._draw(force=True)

    def _consider(self, trial: Any, value: Any) -> None:
        if _finite(value) and (self.best is None or (value > self.best if self.mode == "max" else value < self.best)):
            self.best, self.best_trial = float(value), trial.trial_id

    def _line(self, text: str) -> None:
        """A line of its own (on a TTY, in place of the progress line, which is drawn again below)."""
        self._write(("\r\033[K" if self.drawn else "") + text + "\n")
        self.drawn = False
        self.last_output = time.monotonic()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if sys.stdout.isatty():
            if force or now - self.last_output >= REDRAW_S:
                self._write("\r\033[K" + self.status())
                self.drawn, self.last_output = True, now
        elif now - self.last_output >= HEARTBEAT_S:
            self._line(self.status())

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = min(width, round(width * done / total)) if total else 0
    return "#" * filled + "." * (width - filled)

"""The Tune callback that logs every trial to MLflow live, and survives the tracking server failing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from tuner.tracking._runs import SEARCH_RUNS, RunLayout, TrialRuns
from tuner.tracking._store import redact, unredact

RECONNECT_S = 30.0


class MlflowTrialLogger(tune.Callback):
    """Logs each trial live: its child run, its per-epoch metrics (step = epoch), and at its end its
    outcome and its checkpoint's final artifact (a search's test scores, a pretraining search's
    reconstructions; see ``RunLayout``). If the tracking server fails, the search is not stopped:
    logging pauses, is retried every ``RECONNECT_S`` seconds, and catches up from the trials' results
    once the server answers again. Each new run records ``dataset`` (a ``dataset_record``) as its
    dataset input."""

    layout: RunLayout = SEARCH_RUNS  # also the layout of a logger pickled before layouts existed (--resume)
    dataset: dict[str, str] | None = None  # and no dataset input for one pickled before they were logged

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 extra_params: Mapping[str, Any], layout: RunLayout = SEARCH_RUNS,
                 dataset: Mapping[str, str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.extra_params = dict(extra_params)
        self.layout = layout
        self.dataset = dict(dataset) if dataset else None
        self.offline_since: float | None = None
        self._runs: TrialRuns | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        # ... on shared storage: never the tracking password (``unredact`` restores it on --resume)
        return {**self.__dict__, "_runs": None, "offline_since": None, "tracking_uri": redact(self.tracking_uri)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tracking_uri = unredact(self.tracking_uri)

    @property
    def runs(self) -> TrialRuns:
        """The trials' runs, with a client opened on first use (not pickled: Tune pickles this logger)."""
        if self._runs is None:
            self._runs = TrialRuns(MlflowClient(self.tracking_uri), self.experiment_id, self.parent_run_id,
                                   self.extra_params, self.layout, self.dataset)
        return self._runs

    def _guarded(self, trials: list, action: Callable[[], object]) -> None:
        if self.offline_since is not None:
            if time.monotonic() - self.offline_since < RECONNECT_S:
                return
            try:
                for trial in trials:
                    self.runs.catch_up(trial)
            except Exception:  # still down: try again later
                self.offline_since = time.monotonic()
                return
            self.offline_since = None
            print("medtune: MLflow answers again; logging caught up.", file=sys.stderr, flush=True)
            return  # catch_up has logged this event's data too
        try:
            action()
        except Exception as error:
            self.offline_since = time.monotonic()
            print(f"medtune: MLflow logging failed ({type(error).__name__}: {str(error)[:200]}); the search goes "
                  f"on, and logging resumes when {redact(self.tracking_uri)} answers (or, afterwards, "
                  f"{self.layout.offline_fix}).", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.run_id(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.log_result(trial, result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.finish(trial, errored=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trials, lambda: self.runs.finish(trial, errored=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.offline_since is not None:
            self.offline_since = float("-inf")  # one last try, now
            self._guarded(trials, lambda: None)
        if self.offline_since is not None:
            print(f"medtune: MLflow is still unreachable; once it is back, {self.layout.offline_fix}.",
                  file=sys.stderr, flush=True)

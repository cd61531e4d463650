"""The search's Optuna studies: persisted in a sqlite file that optuna-dashboard opens, told how each
trial really ended, one study per arm cell.

- Storage: ``<storage>/optuna.db`` (``OPTUNA_FILE``), beside a local MLflow store's ``mlflow.db`` and
  never the same database (MLflow and Optuna both keep their schema version in an ``alembic_version``
  table and would break each other); with a tracking server, still this local file. A study is named
  after the experiment, ``<experiment>/<arm>`` per arm cell (``study_name``).
- ``StudySearch``: Ray's ``OptunaSearch``, which reports each epoch's validation metric as an
  intermediate value at step = ``training_iteration`` (all but the last, which Tune passes only to
  ``on_trial_complete``: reported here too), but tells Optuna that a trial ASHA stopped is COMPLETE
  with its early-rung value. Here it is PRUNED (its last intermediate value stays its
  value), a trial that ran its epochs, or ended by its own patience or divergence, is COMPLETE with
  the best score it selected (``best_score``), and an errored one is FAIL.
- ``ArmSearcher``: one ``StudySearch`` per arm cell, the cell's values pinned, handing each new trial
  to the cell with the fewest so far until every cell has its share (``tuner.arms``).

Tune pickles the searcher into its experiment state, and ``--resume`` unpickles it; Optuna's
``RDBStorage`` reconnects on unpickling, so a resumed search continues the same studies.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tuner.config import TRIAL_DEFAULTS
from tuner.errors import ConfigError
from tuner.schema import STOPPED_EARLY, trial_outcome

OPTUNA_FILE = "optuna.db"


def optuna_storage_url(storage: Path, tracking_uri: str) -> str:
    """The sqlite URL of the search's studies in ``storage``; refuses a tracking URI naming the same file."""
    path = storage / OPTUNA_FILE
    if tracking_uri.startswith("sqlite:") and Path(tracking_uri.partition(":///")[2]).resolve() == path.resolve():
        raise ConfigError(f"--tracking-uri {tracking_uri} is the Optuna study file; MLflow and Optuna cannot share "
                          "one database (both keep a schema version in alembic_version). Use another file, e.g. "
                          f"sqlite:///{storage / 'mlflow.db'}.")
    return f"sqlite:///{path}"


def study_name(experiment: str, label: str) -> str:
    """``<experiment>`` for a space without arms, ``<experiment>/<arm label>`` for each arm cell."""
    return f"{experiment}/{label}" if label else experiment


def refuse_existing_studies(url: str, experiment: str) -> None:
    """A new search must not continue an old study of the same name (TPE would learn from its trials);
    an old one is left where a deleted Tune folder left it, and the user decides."""
    if not Path(url.partition(":///")[2]).is_file():
        return
    names = [name for name in optuna.get_all_study_names(storage=url)
             if name == experiment or name.startswith(experiment + "/")]
    if names:
        raise ConfigError(f"{url} already holds the Optuna studies of an experiment named {experiment!r} "
                          f"({', '.join(names)}). Pass --resume to continue that search, choose another --experiment, "
                          f"or delete them (optuna delete-study --storage {url} --study-name NAME).")


def optuna_verdict(config: Mapping[str, Any], result: Mapping[str, Any] | None, error: bool,
                   metric: str) -> tuple[TrialState, float | None]:
    """How Optuna is told a trial ended: FAIL if it errored (or selected no finite score), PRUNED if
    it stopped before its epochs without its own patience or divergence (the scheduler stopped it),
    else COMPLETE with the score it selected."""
    if error:
        return TrialState.FAIL, None
    if not result:
        return TrialState.PRUNED, None  # ended before its first report
    if trial_outcome({"epochs": TRIAL_DEFAULTS["epochs"], **config}, result) == STOPPED_EARLY:
        return TrialState.PRUNED, None
    value = result.get("best_score", result.get(metric))
    if value is None or not math.isfinite(value):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, float(value)


class StudySearch(OptunaSearch):
    """``OptunaSearch`` telling Optuna PRUNED, COMPLETE or FAIL as ``optuna_verdict`` says."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._configs: dict[str, dict[str, Any]] = {}  # what each trial runs: its epochs decide "pruned"

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Ray's suggestion, remembered for the verdict."""
        config = super().suggest(trial_id)
        self._configs[trial_id] = dict(config or {})
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Tell the study the trial's state. Its last result comes here, not to ``on_trial_result`` (Tune
        passes the result that ends a trial, e.g. the rung ASHA cut it at, only to this), so it is
        reported first: the intermediate values are every epoch Tune saw."""
        if trial_id in self._completed_trials:
            return
        if result and self.metric in result and "training_iteration" in result:
            self.on_trial_result(trial_id, result)
        state, value = optuna_verdict(self._configs.get(trial_id, {}), result, error, self.metric)
        # A trial told before Tune last saved its state, then resumed, keeps what the study was told.
        self._ot_study.tell(self._ot_trials[trial_id], value, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)

    def fail_lost_trials(self) -> None:
        """After a restore: a trial the study handed out after Tune last saved this searcher died with
        the driver, and Tune will never run it; it is FAIL, not RUNNING forever in the dashboard."""
        known = {trial.number for trial in self._ot_trials.values()}
        for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                self._ot_study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


class ArmSearcher(Searcher):
    """One study per arm cell; each new trial goes to the cell with the fewest trials (the first such,
    in the space's order) until every cell has ``share``; then the search is finished."""

    def __init__(self, searchers: list[StudySearch], share: int, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.searchers = searchers
        self.share = share
        self.cell_of: dict[str, int] = {}  # trial id -> index of its cell

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's config, from the study of the cell with the fewest trials so far."""
        if trial_id not in self.cell_of:
            counts = [0] * len(self.searchers)
            for index in self.cell_of.values():
                counts[index] += 1
            open_cells = [index for index, count in enumerate(counts) if count < self.share]
            if not open_cells:
                return Searcher.FINISHED
            self.cell_of[trial_id] = min(open_cells, key=counts.__getitem__)
        return self.searchers[self.cell_of[trial_id]].suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """An epoch's report, to the trial's study (its intermediate value)."""
        self.searchers[self.cell_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """The trial's end, to its study."""
        self.searchers[self.cell_of[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Pickle every study's searcher and the assignments (Tune's experiment state, for --resume)."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from ``save``'s pickle: the same studies, reopened in the same storage."""
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
        for searcher in self.searchers:
            searcher.fail_lost_trials()

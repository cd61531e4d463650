"""Run a Tuner to its ``ResultGrid``, even when a trial's pickled error could not be written whole.

Ray Tune pickles a failed trial's exception to ``error.pkl`` beside its ``error.txt``, and ``ResultGrid``
unpickles every one of them once the search has ended. On a disk that has filled, that pickle is left
empty or truncated, and ``Tuner.fit`` raises ``EOFError`` after every trial has run: the search's results,
safe in Tune's folder, would be lost to the caller. The trial's ``error.txt`` (the same failure, as text)
is all ``ResultGrid`` falls back to when there is no pickle, so an unreadable pickle is removed and the
grid is read again.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ray import tune
from ray.tune.result import EXPR_ERROR_PICKLE_FILE as ERROR_PICKLE  # in each trial's folder

_TRUNCATED = (EOFError, pickle.UnpicklingError)


def fit_results(runner: tune.Tuner, experiment_dir: Path) -> tune.ResultGrid:
    """``runner.fit()``; where building its ``ResultGrid`` fails on a truncated ``error.pkl`` (a full
    disk), those pickles are removed and the grid is built from the trials' ``error.txt`` instead."""
    try:
        return runner.fit()
    except _TRUNCATED:
        if not remove_unreadable_error_pickles(experiment_dir):
            raise  # not a truncated pickle of ours: the caller sees Ray's error as it was
    return runner.get_results()


def remove_unreadable_error_pickles(experiment_dir: Path) -> list[Path]:
    """Remove each trial's ``error.pkl`` that cannot be unpickled; returns the ones removed."""
    removed = []
    for path in sorted(experiment_dir.glob(f"*/{ERROR_PICKLE}")):
        try:
            pickle.loads(path.read_bytes())
        except _TRUNCATED:
            path.unlink()
            removed.append(path)
    return removed

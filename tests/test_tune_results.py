"""A trial's error pickle left empty or truncated by a full disk: Ray's ``ResultGrid`` raises on it once the
search has run; ``fit_results`` gives the grid, with the trial's error read from its ``error.txt``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from ray import tune

from tuner.tune_results import ERROR_PICKLE, fit_results, remove_unreadable_error_pickles


def _fails_on_one(config):
    if config["fail"]:
        raise RuntimeError("the trial's own failure")
    tune.report({"score": 1.0})


class _FillTheDisk(tune.Callback):
    """Leaves each trial's ``error.pkl`` as a disk that filled mid-write does (the first ``keep`` bytes),
    after the last trial has ended and before ``Tuner.fit`` reads the results."""

    def __init__(self, experiment_dir: Path, keep: int) -> None:
        self.experiment_dir, self.keep = experiment_dir, keep

    def on_experiment_end(self, trials, **info) -> None:
        for path in self.experiment_dir.glob(f"*/{ERROR_PICKLE}"):
            path.write_bytes(path.read_bytes()[:self.keep])


def _tuner(storage: Path, keep: int | None) -> tune.Tuner:
    callbacks = [] if keep is None else [_FillTheDisk(storage / "disk", keep)]
    return tune.Tuner(_fails_on_one, param_space={"fail": tune.grid_search([False, True])},
                      run_config=tune.RunConfig(storage_path=str(storage), name="disk", verbose=0,
                                                callbacks=callbacks))


@pytest.mark.parametrize("keep", [0, 7], ids=["empty", "truncated"])
def test_ray_alone_loses_the_finished_search(ray_local, tmp_path, keep):
    with pytest.raises((EOFError, pickle.UnpicklingError)):
        _tuner(tmp_path, keep).fit()


@pytest.mark.parametrize("keep", [0, 7], ids=["empty", "truncated"])
def test_fit_results_gives_the_grid_with_the_error_from_its_text(ray_local, tmp_path, keep):
    results = fit_results(_tuner(tmp_path, keep), tmp_path / "disk")
    assert len(results) == 2 and results.num_errors == 1
    failed = next(r for r in results if r.error is not None)
    assert "the trial's own failure" in str(failed.error)
    assert next(r for r in results if r.error is None).metrics["score"] == 1.0
    assert not list((tmp_path / "disk").glob(f"*/{ERROR_PICKLE}"))


def test_readable_pickles_are_kept(ray_local, tmp_path):
    results = fit_results(_tuner(tmp_path, None), tmp_path / "disk")
    assert results.num_errors == 1
    assert remove_unreadable_error_pickles(tmp_path / "disk") == []
    assert len(list((tmp_path / "disk").glob(f"*/{ERROR_PICKLE}"))) == 1

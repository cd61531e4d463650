"""The search's Optuna studies: persisted in ``optuna.db`` (what optuna-dashboard opens), one per arm,
told COMPLETE / PRUNED / FAIL as the trials really ended, with the per-epoch validation metric Tune saw
as intermediate values; and ASHA counting epochs since a strategy's last phase change, so no staged
trial is judged while it is still in an earlier phase."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray import tune

from tuner.arms import ArmPlan
from tuner.cli import main
from tuner.errors import ConfigError
from tuner.optuna_study import (
    OPTUNA_FILE,
    ArmSearcher,
    StudySearch,
    optuna_storage_url,
    optuna_verdict,
    refuse_existing_studies,
    study_name,
)
from tuner.schema import SEARCH_FILE, STOPPED_EARLY, trial_outcome
from tuner.search import SearchRequest
from tuner.tracking import read_results
from tuner.tune_build import arm_searcher, asha

MAX_T = 8
# kind -> (epoch of its last phase change, val_auc before it, val_auc from it on)
KINDS = {"good": (1, 0.9, 0.9), "staged": (4, 0.5, 0.95), "weak": (1, 0.6, 0.6), "patient": (1, 0.97, 0.97),
         "long": (1, 0.99, 0.99), "boom": (1, 0.99, 0.99)}


def _fake_define(trial, kind: str) -> dict:
    trial.suggest_float("x", 0.0, 1.0)  # a knob the cell's study tunes
    return {"kind": kind, "epochs": 12 if kind == "long" else MAX_T}


def _fake_trial(config: dict) -> None:
    """Reports like ``run_trial``: ``phase_epoch`` is 0 until the kind's last phase change."""
    settled, before, after = KINDS[config["kind"]]
    best = -math.inf
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(config.get("sleep", 0))
        if config["kind"] == "boom" and epoch == 2:
            raise RuntimeError("boom")
        auc = before if epoch < settled else after
        best = max(best, auc)
        patience = config["kind"] == "patient" and epoch == 3
        tune.report({"epoch": epoch, "val_auc": auc, "best_score": best, "settled_epoch": settled,
                     "phase_epoch": max(0, epoch - settled + 1), "stopped_by_patience": int(patience)})
        if patience:
            return


def _slow_define(trial, kind: str) -> dict:
    return {**_fake_define(trial, kind), "epochs": 3, "sleep": 1.0}


def _fake_tuner(tmp_path, kinds: list[str], time_attr: str, share: int = 1, define=_fake_define) -> tune.Tuner:
    url = f"sqlite:///{tmp_path / OPTUNA_FILE}"
    studies = [StudySearch(space=functools.partial(define, kind=kind), metric="val_auc", mode="max",
                           sampler=optuna.samplers.RandomSampler(seed=0), storage=optuna.storages.RDBStorage(url),
                           study_name=study_name("fake", f"kind={kind}")) for kind in kinds]
    return tune.Tuner(_fake_trial, tune_config=tune.TuneConfig(
        metric="val_auc", mode="max", scheduler=asha(MAX_T, 1, 2, time_attr=time_attr),
        search_alg=ArmSearcher(studies, share, "val_auc", "max"), num_samples=share * len(kinds),
        max_concurrent_trials=1), run_config=tune.RunConfig(storage_path=str(tmp_path), name="fake", verbose=0))


def _fake_search(tmp_path, kinds: list[str], time_attr: str):
    url = f"sqlite:///{tmp_path / OPTUNA_FILE}"
    results = _fake_tuner(tmp_path, kinds, time_attr).fit()
    by_kind = {r.config["kind"]: r for r in results}
    return url, by_kind


def test_asha_judges_a_staged_trial_only_after_its_last_phase_change(ray_local, tmp_path):
    url, trials = _fake_search(tmp_path, list(KINDS), "phase_epoch")
    epochs = {kind: len(r.metrics_dataframe) for kind, r in trials.items()}
    # staged: below every other trial while still probing (epochs 1-3), never cut then; weak: cut at its
    # first rung; long: bounded by max_t; patient: ended by its own patience
    assert epochs == {"good": MAX_T, "staged": MAX_T, "weak": 1, "patient": 3, "long": MAX_T, "boom": 1}
    for kind, result in trials.items():
        assert result.metrics_dataframe["phase_epoch"].iloc[-1] >= 1, kind  # nobody ended in an earlier phase
    states = {kind: optuna.load_study(study_name=study_name("fake", f"kind={kind}"), storage=url).trials[0]
              for kind in KINDS}
    assert {kind: t.state for kind, t in states.items()} == {
        "good": TrialState.COMPLETE, "staged": TrialState.COMPLETE, "weak": TrialState.PRUNED,
        "patient": TrialState.COMPLETE, "long": TrialState.PRUNED, "boom": TrialState.FAIL}
    assert states["staged"].value == 0.95 and states["patient"].value == 0.97  # the score each selected
    for kind, result in trials.items():
        frame = result.metrics_dataframe
        assert states[kind].intermediate_values == dict(zip(frame["training_iteration"], frame["val_auc"],
                                                            strict=True)), kind


def test_counting_plain_epochs_would_cut_the_staged_trial_while_it_probes(ray_local, tmp_path):
    """The contrast that makes the test above able to fail: ASHA on training_iteration."""
    _, trials = _fake_search(tmp_path, ["good", "staged"], "training_iteration")
    assert len(trials["staged"].metrics_dataframe) == 1


def test_verdicts():
    config = {"epochs": 4}
    assert optuna_verdict(config, {"epoch": 4, "best_score": 0.8, "val_auc": 0.7}, False, "val_auc") == (
        TrialState.COMPLETE, 0.8)
    assert optuna_verdict(config, {"epoch": 2, "val_auc": 0.7}, False, "val_auc") == (TrialState.PRUNED, None)
    assert optuna_verdict(config, {"epoch": 2, "stopped_by_patience": 1, "best_score": 0.75}, False,
                          "val_auc") == (TrialState.COMPLETE, 0.75)
    assert optuna_verdict(config, {"epoch": 2, "diverged": 1, "best_score": 0.6}, False, "val_auc") == (
        TrialState.COMPLETE, 0.6)
    assert optuna_verdict(config, {"epoch": 1, "diverged": 1, "val_auc": math.nan}, False, "val_auc") == (
        TrialState.FAIL, None)
    assert optuna_verdict(config, {"epoch": 4, "best_score": 0.8}, True, "val_auc") == (TrialState.FAIL, None)


def test_the_study_file_is_never_mlflows(tmp_path):
    assert optuna_storage_url(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}") == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert optuna_storage_url(tmp_path, "http://mlflow:5000").endswith("/optuna.db")  # a server: still local
    with pytest.raises(ConfigError, match="cannot share one database"):
        optuna_storage_url(tmp_path, f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_new_search_never_continues_an_old_study(tmp_path):
    url = f"sqlite:///{tmp_path / OPTUNA_FILE}"
    refuse_existing_studies(url, "exp")  # no file yet
    optuna.create_study(study_name="exp/head=conv", storage=url)
    refuse_existing_studies(url, "exp2")
    with pytest.raises(ConfigError, match="exp/head=conv.*--resume.*optuna delete-study"):
        refuse_existing_studies(url, "exp")


def test_the_studies_survive_tunes_pickling_for_resume(tmp_path):
    """Tune saves the searcher with ``save`` and ``--resume`` restores it: the restored searcher goes on
    with the same studies in the same file (RDBStorage reconnects), and the shares stay equal."""
    request = SearchRequest(space="quick", dataset="x", num_samples=6)
    plan = ArmPlan(("head",), (("linear",), ("conv",), ("convskip",)), 2)
    url = f"sqlite:///{tmp_path / OPTUNA_FILE}"
    searcher = arm_searcher(request, plan, "exp", url)
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    searcher.on_trial_result("t0", {"val_auc": 0.7, "training_iteration": 1})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = ArmSearcher([], 0, "val_auc", "max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("t0", {"val_auc": 0.8, "training_iteration": 2})
    restored.on_trial_complete("t0", {"epoch": 4, "val_auc": 0.8, "best_score": 0.8})
    rest = [restored.suggest(f"t{i}") for i in range(3, 6)]
    assert restored.suggest("t6") == "FINISHED"
    assert plan.trials_per_arm(first + rest) == {"head=linear": 2, "head=conv": 2, "head=convskip": 2}
    linear = optuna.load_study(study_name="exp/head=linear", storage=url).trials
    assert len(linear) == 2 and linear[0].state == TrialState.COMPLETE and linear[0].value == 0.8
    assert linear[0].intermediate_values == {1: 0.7, 2: 0.8}


@pytest.fixture(scope="module")
def finished_strategies_search(ray_local, small_npz, module_tmp_factory):
    """A real finetune_strategies search through ``medtune tune``: resnet18 at 28 px, 4 epochs, the ft,
    lp and lp_ft arms, 2 trials each."""
    storage = module_tmp_factory.mktemp("results")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["tune", "--space", "finetune_strategies", "--dataset", str(small_npz), "--num-samples", "6",
                       "--max-epochs", "4", "--storage", str(storage), "--experiment", "strategies", "--seed", "1",
                       "--set", "backbone=resnet18", "--set", "weights=none", "--set", "image_size=28",
                       "--set", "resize_size=None", "--set", "strategy=['ft','lp','lp_ft']"])
    assert status == 0, printed.getvalue()[-3000:]
    return storage, printed.getvalue()


def test_each_arm_got_its_share_and_the_summary_says_so(finished_strategies_search):
    storage, printed = finished_strategies_search
    shares = {"strategy=ft, backbone=resnet18": 2, "strategy=lp, backbone=resnet18": 2,
              "strategy=lp_ft, backbone=resnet18": 2}
    saved = json.loads((storage / "strategies" / SEARCH_FILE).read_text())
    assert saved["trials_per_arm"] == shares
    assert saved["arms"]["factors"] == ["strategy", "backbone"] and saved["arms"]["trials_per_cell"] == 2
    assert ("trials per arm (strategy x backbone): " + "; ".join(f"{k}: {v}" for k, v in shares.items())) in printed


def test_optuna_dashboards_storage_holds_what_tune_saw(finished_strategies_search):
    """``optuna.load_study`` on the search's optuna.db (what optuna-dashboard opens): one study per arm,
    each trial's state as the trial ended in Tune, and its intermediate values the per-epoch val_auc."""
    storage, _ = finished_strategies_search
    url = f"sqlite:///{storage / OPTUNA_FILE}"
    names = sorted(optuna.get_all_study_names(storage=url))
    assert names == [f"strategies/strategy={s}, backbone=resnet18" for s in ("ft", "lp", "lp_ft")]
    tune_trials = tune.ExperimentAnalysis(str(storage / "strategies")).trials
    assert len(tune_trials) == 6
    optuna_trials = {name: optuna.load_study(study_name=name, storage=url).trials for name in names}
    assert all(len(trials) == 2 for trials in optuna_trials.values())
    # Tune keeps its trials in the order the searcher suggested them, and each study numbers its own:
    # the i-th Tune trial of an arm is its study's trial i.
    pairs = []
    for name, trials in optuna_trials.items():
        arm = [t for t in tune_trials if name.startswith(f"strategies/strategy={t.config['strategy']},")]
        pairs += zip(arm, sorted(trials, key=lambda t: t.number), strict=True)
    seen_states = set()
    for trial, match in pairs:
        epochs = read_results(Path(trial.path))
        assert all(trial.config[key] == value for key, value in match.params.items())
        if trial.status == "ERROR":
            expected = TrialState.FAIL
        elif trial_outcome(trial.config, epochs[-1]) == STOPPED_EARLY:
            expected = TrialState.PRUNED
        else:
            expected = TrialState.COMPLETE
            assert match.value == epochs[-1]["best_score"]
        assert match.state == expected, (trial.config, epochs[-1])
        seen_states.add(expected)
        assert match.intermediate_values == {r["training_iteration"]: r["val_auc"] for r in epochs}
        # no trial was judged while still in an earlier phase: a pruned trial ended past its settled epoch
        if expected == TrialState.PRUNED:
            assert epochs[-1]["phase_epoch"] >= 1 and epochs[-1]["epoch"] >= epochs[-1]["settled_epoch"]
    assert TrialState.COMPLETE in seen_states


def run_killable_search(folder: str) -> None:
    """The driver ``test_resume_continues_the_same_studies`` kills (run in a subprocess)."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    _fake_tuner(Path(folder), ["good", "weak"], "phase_epoch", share=3, define=_slow_define).fit()


def test_resume_continues_the_same_studies(ray_local, tmp_path):
    """Kill the driver after its first trials, restore the Tune experiment (what --resume does): the
    unpickled searcher goes on in the same studies, every arm ends with exactly its share, and no trial
    is left RUNNING."""
    url = f"sqlite:///{tmp_path / OPTUNA_FILE}"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r}); " \
           f"from tests.test_optuna_study import run_killable_search; run_killable_search({str(tmp_path)!r})"
    driver = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"})

    def finished() -> int:
        if not (tmp_path / OPTUNA_FILE).is_file():
            return 0
        try:
            return sum(t.state.is_finished() for name in optuna.get_all_study_names(storage=url)
                       for t in optuna.load_study(study_name=name, storage=url).trials)
        except Exception:  # the driver is creating the schema
            return 0

    try:
        deadline = time.monotonic() + 300
        while finished() < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
        assert 2 <= finished() < 6, "the driver did not get to a mid-search state"
        time.sleep(1.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    before = finished()
    assert before < 6
    results = tune.Tuner.restore(str(tmp_path / "fake"), trainable=_fake_trial, resume_errored=True).fit()
    assert len(results) == 6 and Counter(r.config["kind"] for r in results) == {"good": 3, "weak": 3}
    assert all(r.error is None for r in results)
    assert sorted(optuna.get_all_study_names(storage=url)) == ["fake/kind=good", "fake/kind=weak"]
    for name in ("fake/kind=good", "fake/kind=weak"):
        trials = optuna.load_study(study_name=name, storage=url).trials
        assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
        told = [t for t in trials if t.state != TrialState.FAIL or t.intermediate_values]
        assert len(told) == 3, [(t.state, t.intermediate_values) for t in trials]

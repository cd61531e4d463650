"""Top-k ensembles, through a real search (Ray Tune, ASHA-free grid, MLflow store) of three tiny trials on
real BreastMNIST images: each trial stores its best epoch's validation scores beside its test scores; k
is chosen on validation; the report's ensemble section and ``medtune ensemble`` agree; and the model
taken away, run on the raw test images, gives the section's test AUC."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from analysis.delong import auc_ci, delong_test
from analysis.ensemble import parse_k, seed_ensemble, top_k_ensemble
from analysis.loading import load_search
from analysis.report import build_report
from tuner.cli import main
from tuner.confirm import ConfirmRequest, run_confirm
from tuner.confirm_select import Selection
from tuner.ensemble_model import MANIFEST_FILE, load_ensemble
from tuner.errors import ConfigError
from tuner.schema import CONFIRM, TEST_SCORES_FILE, VAL_SCORES_FILE, confirm_experiment
from tuner.search import SearchRequest, run_search
from tuner.tracking import read_results

PINS = {"lr": [0.01], "kernel_size": [3]}  # the quick space narrowed to one config per head: 3 trials


@pytest.fixture(scope="module")
def searched(ray_local, small_npz, module_tmp_factory):
    """The search, and a confirmation stage of its best configuration with two fresh seeds."""
    storage = module_tmp_factory.mktemp("results")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    # grace 2 = every epoch: ASHA stops no trial, so each ends with a checkpoint of its best weights
    run_search(SearchRequest(space="quick", dataset=str(small_npz), max_epochs=2, search="grid", pins=PINS,
                             grace_period=2, storage=str(storage), experiment="ens"))
    run_confirm(ConfirmRequest(experiment="ens", selection=Selection("top_k", k=1), seeds=2, storage=str(storage)))
    # Logging the search's model through MLflow's fluent API may leave $MLFLOW_TRACKING_URI set to MLflow's
    # default store in the working folder; the commands below must resolve this search's store, as a new
    # process would.
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return storage


def _trial_dirs(storage: Path) -> list[Path]:
    return sorted(p.parent for p in (storage / "ens").glob("*/params.json"))


def _newest(trial_dir: Path) -> Path:
    return sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name)[-1]


def test_each_trial_stores_its_best_epochs_validation_scores(searched):
    for trial_dir in _trial_dirs(searched):
        last = read_results(trial_dir)[-1]
        val = pd.read_csv(_newest(trial_dir) / VAL_SCORES_FILE)
        test = pd.read_csv(_newest(trial_dir) / TEST_SCORES_FILE)
        assert len(val) == last["n_val_images"] == 40 and len(test) == 40
        # the stored validation scores are those of the best epoch: their AUC is the trial's best_val_auc
        assert roc_auc_score(val["label"], val["score_1"]) == pytest.approx(last["best_val_auc"], abs=1e-6)


def test_k_is_chosen_on_validation_and_the_report_and_the_taken_away_model_agree(searched, small_data, tmp_path):
    report = build_report("ens", storage=searched, out=tmp_path / "report")
    assert not [p for p in report.problems if p.startswith("Ensembles")], report.problems
    summaries = pd.read_csv(tmp_path / "report" / "ensemble.csv")
    assert summaries["rule"].tolist() == ["top_k", "seeds"]
    summary = summaries.iloc[0]
    curve = pd.read_csv(tmp_path / "report" / "ensemble_k.csv")

    # k by hand: rank the trials by best_score (Tune's own results), average their validation scores
    last = {d: read_results(d)[-1] for d in _trial_dirs(searched)}
    ranked = sorted(last, key=lambda d: -last[d]["best_score"])
    vals = [pd.read_csv(_newest(d) / VAL_SCORES_FILE) for d in ranked]
    by_hand = [roc_auc_score(vals[0]["label"], np.mean([v["score_1"] for v in vals[:k]], axis=0))
               for k in range(1, 4)]
    assert curve["val_auc"].tolist() == pytest.approx(by_hand, abs=1e-6)
    k = int(np.argmax(by_hand)) + 1
    assert summary["k"] == k and summary["k_chosen_by"] == "validation"

    # the test figure by hand: the k members' mean test probabilities, DeLong CI, against the top trial
    tests = [pd.read_csv(_newest(d) / TEST_SCORES_FILE) for d in ranked]
    mean = np.mean([t["score_1"] for t in tests[:k]], axis=0)
    auc, low, high = auc_ci(tests[0]["label"], mean)
    assert summary["test_auc"] == pytest.approx(auc, abs=1e-9)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((low, high), abs=1e-9)
    paired = delong_test(tests[0]["label"], mean, tests[0]["score_1"])
    assert summary["p_value"] == pytest.approx(paired.p_value, abs=1e-9)

    # the same ensemble taken away: written by the command, reloaded, run on the raw test images
    out = tmp_path / "model"
    assert main(["ensemble", "--experiment", "ens", "--storage", str(searched), "--out", str(out)]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert [Path(m["trial_dir"]).name for m in manifest["members"]] == [d.name for d in ranked[:k]]
    model = load_ensemble(out)
    probs = model.predict_proba(small_data.test.images)
    assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probs[:, 1], mean, atol=1e-5)
    assert roc_auc_score(small_data.test.labels, probs[:, 1]) == pytest.approx(summary["test_auc"], abs=1e-6)


def test_a_given_k_averages_the_k_best_and_k_one_is_the_best_trial(searched):
    loaded = load_search("ens", storage=searched, source="tune")
    one = top_k_ensemble(loaded, 1)
    assert one.k_rule == "given" and one.members[0] == one.reference
    assert one.test_auc == pytest.approx(one.reference_auc) and one.results["p_value"].iloc[0] == 1.0
    three = top_k_ensemble(loaded, "3")
    assert [m.validation for m in three.members] == sorted((m.validation for m in three.members), reverse=True)
    with pytest.raises(ConfigError, match="k=4 is more than the 3 explore trials"):
        top_k_ensemble(loaded, 4)


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", True])
def test_k_must_be_a_whole_number_or_auto(bad):
    with pytest.raises(ConfigError, match="whole number of trials >= 1, or 'auto'"):
        parse_k(bad)


def test_trials_that_scored_different_cases_are_refused(searched):
    loaded = load_search("ens", storage=searched, source="tune")
    second = loaded.frame.sort_values("best_score", ascending=False).iloc[1]
    shifted = loaded.test_scores(second).copy()
    shifted["index"] = shifted["index"] + 1  # other case ids: the scores of other images
    loaded._scores[second["test_scores"]] = shifted
    with pytest.raises(ConfigError, match="scored different test cases"):
        top_k_ensemble(loaded, 2)


def test_auto_k_without_validation_scores_says_to_give_k(searched, tmp_path, capsys):
    # a copy of the search as it was before trials stored validation scores (weights left out: not read)
    copy = tmp_path / "old"
    shutil.copytree(searched / "ens", copy / "ens", ignore=shutil.ignore_patterns("*.pt", VAL_SCORES_FILE))
    loaded = load_search("ens", storage=copy, source="tune")
    with pytest.raises(ConfigError, match=r"no per-case val scores.*give k yourself"):
        top_k_ensemble(loaded, "auto")
    assert top_k_ensemble(loaded, 2).k == 2
    status = main(["ensemble", "--experiment", "ens", "--storage", str(copy), "--offline", "--k", "nine",
                   "--out", str(tmp_path / "x")])
    assert status == 2 and "k='nine' is not allowed" in capsys.readouterr().err


def test_a_taken_away_ensemble_of_three_reproduces_its_test_auc(searched, small_data, tmp_path):
    ensemble = top_k_ensemble(load_search("ens", storage=searched), 3)
    out = tmp_path / "three"
    assert main(["ensemble", "--experiment", "ens", "--storage", str(searched), "--k", "3", "--out", str(out)]) == 0
    probs = load_ensemble(out).predict_proba(small_data.test.images)
    assert np.allclose(probs, ensemble.scores, atol=1e-5)
    assert roc_auc_score(small_data.test.labels, probs[:, 1]) == pytest.approx(ensemble.test_auc, abs=1e-6)
    written = pd.read_csv(out / "test_scores.csv")
    assert np.allclose(written["score_1"], ensemble.scores[:, 1], atol=1e-8)
    assert main(["ensemble", "--experiment", "ens", "--storage", str(searched), "--k", "3", "--out", str(out)]) == 2


def test_the_confirmed_seeds_of_one_configuration_make_a_seed_ensemble(searched, small_data, tmp_path):
    ensemble = seed_ensemble(load_search("ens", storage=searched))
    confirm_dirs = sorted(p.parent for p in (searched / confirm_experiment("ens")).glob("*/params.json"))
    seeds = sorted(json.loads((d / "params.json").read_text())["seed"] for d in confirm_dirs)
    assert ensemble.k == 2 == len(seeds) and {m.stage for m in ensemble.members} == {CONFIRM}
    assert len({m.config_id for m in ensemble.members}) == 1
    tests = [pd.read_csv(_newest(d) / TEST_SCORES_FILE) for d in confirm_dirs]
    assert ensemble.test_auc == pytest.approx(roc_auc_score(tests[0]["label"],
                                                            np.mean([t["score_1"] for t in tests], axis=0)))
    out = tmp_path / "seeds"
    assert main(["ensemble", "--experiment", "ens", "--storage", str(searched), "--confirmed", "--out", str(out)]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert sorted(m["config"]["seed"] for m in manifest["members"]) == seeds
    probs = load_ensemble(out).predict_proba(small_data.test.images)
    assert roc_auc_score(small_data.test.labels, probs[:, 1]) == pytest.approx(ensemble.test_auc, abs=1e-6)

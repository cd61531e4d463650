"""The confirmation stage: a real search, then its chosen configurations re-run at full budget with fresh
seeds through Ray Tune, logged under the search's MLflow parent; and the selection rules, on crafted
search folders where validation and test disagree."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

import tuner.confirm
from tests.conftest import ray_never_started
from tuner.cli import main
from tuner.config import make_trial_config
from tuner.confirm import ConfirmRequest, check_request, confirm_dir, fresh_seeds, replicate_configs
from tuner.confirm_select import Selection, load_search, select
from tuner.errors import ConfigError
from tuner.schema import CONFIG_ID_TAG, CONFIRM, EXPLORE, PARENT_TAG, SEARCH_FILE, STAGE_TAG
from tuner.search import SearchRequest, run_search
from tuner.tracking import read_results, trial_config_id

PINS = {"lr": [0.01], "kernel_size": [3]}  # the quick space narrowed to one config per head


_INTERRUPTED = "MEDTUNE_TEST_CONFIRM_INTERRUPTED"


class _CtrlCAfterTwoRuns(tune.Callback):
    """Presses Ctrl+C (SIGINT to the driver) once two runs have finished, once per test session: Tune
    saves its state and stops, as when a user interrupts the stage. Tune pickles it with the stage, so
    the resumed stage carries it too; the flag in the environment keeps it from firing again."""

    def __init__(self) -> None:
        self.finished = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        if self.finished == 2 and not os.environ.get(_INTERRUPTED):
            os.environ[_INTERRUPTED] = "1"
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def confirmed(ray_local, small_npz, module_tmp_factory):
    """A 3-trial grid search (one per head, 2 epochs); then `medtune confirm --per-level head --seeds 2`,
    interrupted after two of its six runs, and `medtune confirm --resume`."""
    storage = module_tmp_factory.mktemp("results")
    search = run_search(SearchRequest(space="quick", dataset=str(small_npz), max_epochs=2, search="grid",
                                      pins=PINS, storage=str(storage), experiment="explore"))
    command = ["confirm", "--experiment", "explore", "--storage", str(storage)]
    make_tuner = tuner.confirm.make_tuner
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(_INTERRUPTED, raising=False)
        patch.setattr(tuner.confirm, "make_tuner", lambda *a, callbacks, **k: make_tuner(
            *a, callbacks=[*callbacks, _CtrlCAfterTwoRuns()], **k))
        interrupted = main([*command, "--per-level", "head", "--seeds", "2"])
        assert os.environ.get(_INTERRUPTED), "the stage was not interrupted"
        before_resume = {tuple(sorted(c.items())): r for c, r in _confirm_trials(storage) if len(r) == 2}
        resumed = main([*command, "--resume"])
    return search, storage, (interrupted, resumed), before_resume


def _confirm_trials(storage: Path) -> list[tuple[dict, list[dict]]]:
    """Each confirmation trial's config and the epochs of its last pass: a run the interruption caught
    before its first full-state checkpoint (the default policy writes none in a short trial) starts
    again from epoch 1 on resume, and Tune's result file keeps both passes."""
    return [(json.loads((d / "params.json").read_text()), _last_pass(read_results(d)))
            for d in sorted(p.parent for p in confirm_dir(storage, "explore").glob("*/params.json"))]


def _last_pass(results: list[dict]) -> list[dict]:
    starts = [i for i, r in enumerate(results) if r["epoch"] == 1]
    return results[starts[-1]:] if starts else results


def test_each_chosen_configuration_ran_twice_at_full_budget_with_fresh_seeds(confirmed):
    search, storage, status, _ = confirmed
    assert status == (1, 0), "the interrupted stage must say it is unfinished, the resumed one that it is done"
    record = json.loads((confirm_dir(storage, "explore") / SEARCH_FILE).read_text())
    assert record["stage"] == CONFIRM and record["parent_run_id"] == search.parent_run_id
    assert record["selection"]["rule"] == "per_level" and record["selection"]["factors"] == ["head"]
    chosen = {c["config_id"]: c for c in record["configurations"]}
    assert sorted(c["levels"]["head"] for c in chosen.values()) == ["conv", "convskip", "linear"]
    explore_seeds = {json.loads(p.read_text())["seed"] for p in (storage / "explore").glob("*/params.json")}
    trials = _confirm_trials(storage)
    assert len(trials) == 6
    runs_per_config: dict[str, list[int]] = {}
    for config, results in trials:
        assert config["patience"] is None and config["epochs"] == 2
        assert [r["epoch"] for r in results] == [1, 2], "a confirmation run stopped before its full epochs"
        assert not any(r.get("stopped_by_patience") or r.get("diverged") for r in results)
        runs_per_config.setdefault(trial_config_id(config), []).append(config["seed"])
    assert set(runs_per_config) == set(chosen), "confirmation runs are not the chosen configurations"
    for seeds in runs_per_config.values():
        assert len(seeds) == 2 and len(set(seeds)) == 2 and not set(seeds) & explore_seeds
    assert record["seeds"] == sorted(runs_per_config[next(iter(chosen))])


def test_confirmation_runs_are_children_of_the_search_parent_tagged_confirm(confirmed):
    search, storage, _, _ = confirmed
    client = MlflowClient(search.tracking_uri)
    experiment = client.get_experiment_by_name("explore")
    children = [r for r in client.search_runs([experiment.experiment_id], max_results=100)
                if r.data.tags.get(PARENT_TAG) == search.parent_run_id]
    by_stage = {stage: [r for r in children if r.data.tags.get(STAGE_TAG) == stage] for stage in (EXPLORE, CONFIRM)}
    assert len(by_stage[EXPLORE]) == 3 and len(by_stage[CONFIRM]) == 6 and len(children) == 9
    record = json.loads((confirm_dir(storage, "explore") / SEARCH_FILE).read_text())
    chosen = {c["config_id"] for c in record["configurations"]}
    assert chosen == {c["run_config_id"] for c in record["configurations"]}  # no folds, the search had no patience
    assert {r.data.tags[CONFIG_ID_TAG] for r in by_stage[CONFIRM]} == chosen
    # per-level on a one-config-per-head search confirms exactly the explored configurations
    assert {r.data.tags[CONFIG_ID_TAG] for r in by_stage[EXPLORE]} == chosen
    for run in by_stage[CONFIRM]:
        assert run.info.status == "FINISHED" and run.data.tags["medtune.outcome"] == "completed"
        assert run.data.params["patience"] == "None" and int(run.data.metrics["epoch"]) == 2
    logged = {a.path for a in client.list_artifacts(search.parent_run_id, "confirm")}
    assert logged == {f"confirm/{SEARCH_FILE}"}


def test_resume_repeats_no_finished_run(confirmed, capsys):
    search, storage, _, before_resume = confirmed
    assert 2 <= len(before_resume) < 6, "the interruption did not leave a part-done stage"
    after = {tuple(sorted(c.items())): r for c, r in _confirm_trials(storage)}
    for config, results in before_resume.items():
        assert after[config] == results, "a run finished before the interruption ran again"
    assert all([r["epoch"] for r in results] == [1, 2] for results in after.values())
    # resuming a finished stage runs nothing
    before = [(c["seed"], len(r)) for c, r in _confirm_trials(storage)]
    assert main(["confirm", "--experiment", "explore", "--storage", str(storage), "--resume"]) == 0
    assert "6 runs: 6 completed" in capsys.readouterr().out
    assert [(c["seed"], len(r)) for c, r in _confirm_trials(storage)] == before
    client = MlflowClient(search.tracking_uri)
    experiment = client.get_experiment_by_name("explore")
    confirm_runs = client.search_runs([experiment.experiment_id], f"tags.`{STAGE_TAG}` = '{CONFIRM}'")
    assert len(confirm_runs) == 6
    # sync knows the folder is a confirmation stage: nothing missing, nothing logged as exploration
    assert main(["sync", "--experiment", "explore-confirm", "--storage", str(storage)]) == 0
    assert "0 epoch results were missing" in capsys.readouterr().out
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sum(r.data.tags.get(STAGE_TAG) == CONFIRM for r in runs) == 6 and len(runs) == 10  # + the parent
    assert main(["confirm", "--experiment", "explore", "--storage", str(storage), "--top-k", "1", "--seeds", "2"]) == 2
    assert "already holds a confirmation stage" in capsys.readouterr().err
    assert main(["confirm", "--experiment", "explore", "--storage", str(storage), "--resume", "--seeds", "3"]) == 2
    assert "not --seeds 3" in capsys.readouterr().err


# ---- selection on crafted search folders -------------------------------------------------------------

BASE = {"backbone": "resnet18", "weights": "none", "strategy": "ft", "epochs": 2, "batch_size": 64,
        "image_size": 28}


def _fake_search(storage: Path, trials: list[tuple[dict, float, float, dict]]) -> str:
    """A search folder as `medtune tune` leaves it: its SEARCH_FILE and, per trial, params.json and
    result.json (best validation score, and a test AUC that the selection must never read)."""
    folder = storage / "fake"
    request = SearchRequest(space="quick", dataset="unused", max_epochs=2, search="grid", pins=PINS)
    folder.mkdir(parents=True)
    (folder / SEARCH_FILE).write_text(json.dumps({"parent_run_id": "p", "experiment": "fake", "trial_params": {},
                                                  "request": asdict(request)}))
    for index, (values, val, test, extra) in enumerate(trials):
        trial = folder / f"t{index}"
        trial.mkdir()
        config = make_trial_config({**BASE, **values})
        (trial / "params.json").write_text(json.dumps(config))
        lines = [{"epoch": e, "best_score": val * e / 2, "test_auc": test, **extra} for e in (1, 2)]
        (trial / "result.json").write_text("\n".join(json.dumps(r) for r in lines))
    return "fake"


CONV = {"head": "conv", "kernel_size": 3, "filters": 4}


@pytest.fixture
def disagreeing(tmp_path):
    """Validation and test rank the configurations differently; the top one by validation diverged."""
    name = _fake_search(tmp_path, [
        ({"head": "linear", "lr": 0.01}, 0.70, 0.99, {}),
        ({**CONV, "lr": 0.01}, 0.90, 0.55, {}),  # the validation-best
        ({**CONV, "lr": 0.1}, 0.85, 0.97, {}),  # better on test, worse on validation
        ({**CONV, "lr": 0.01, "seed": 1}, 0.84, 0.50, {}),  # a second seed of the best: its mean is 0.87
        ({"head": "convskip", "kernel_size": 5, "filters": 4, "lr": 0.01}, 0.75, 0.60, {}),
        ({"head": "linear", "lr": 0.05}, 0.99, 0.99, {"diverged": 1}),
    ])
    return tmp_path, name


def test_selection_ranks_on_validation_never_test(disagreeing):
    storage, name = disagreeing
    search = load_search(storage, name)
    assert len(search.candidates) == 4 and search.seeds == {0, 1}
    best = search.candidates[0]
    assert (best.config["head"], best.config["lr"], best.trials) == ("conv", 0.01, 2)
    assert best.val_score == pytest.approx(0.87)
    top = select(search, Selection("top_k", k=2))
    assert [(c.config["lr"], c.val_score) for c in top] == [(0.01, pytest.approx(0.87)), (0.1, pytest.approx(0.85))]
    per_level = {c.levels["head"]: c.config for c in select(search, Selection("per_level", factors=("head",)))}
    assert per_level["conv"]["lr"] == 0.01 and per_level["linear"]["lr"] == 0.01, "chose on test, or a diverged run"


def test_factorial_holds_the_other_knobs_at_the_best(disagreeing):
    storage, name = disagreeing
    chosen = select(load_search(storage, name), Selection("factorial", factors=("head",)))
    configs = {c.levels["head"]: c.config for c in chosen}
    assert set(configs) == {"linear", "conv", "convskip"}
    assert all(c["lr"] == 0.01 for c in configs.values())
    assert configs["linear"]["kernel_size"] is None and configs["convskip"]["kernel_size"] == 5
    with pytest.raises(ConfigError, match="factorial head,kernel_size: head='linear' × kernel_size=3"):
        select(load_search(storage, name), Selection("factorial", factors=("head", "kernel_size")))


def test_a_weight_file_broken_since_the_search_is_refused_before_data_or_ray(tmp_path):
    """The search fitted its weight files on the driver; the stage, days later, fits them again."""
    trunk = tmp_path / "trunk.pt"
    trunk.write_bytes(b"PK\x03\x04 cut off mid-write")
    name = _fake_search(tmp_path, [({"head": "linear", "lr": 0.01, "weights": str(trunk)}, 0.8, 0.8, {})])
    with ray_never_started(), pytest.raises(ConfigError, match="trunk.pt"):
        tuner.confirm.run_confirm(ConfirmRequest(name, Selection("top_k", k=1), seeds=2, storage=str(tmp_path)))


def test_replicates_have_fresh_seeds_no_patience_and_folds():
    seeds = fresh_seeds({0, 1, 2000}, 3)
    assert seeds == [2001, 2002, 2003] and fresh_seeds({0}, 2) == [1000, 1001]
    search_config = make_trial_config({**BASE, **CONV, "lr": 0.01, "patience": 2})
    from tuner.confirm_select import Candidate

    candidate = Candidate(trial_config_id(search_config), search_config, 0.8, 1)
    runs = replicate_configs([candidate], [1000, 1001], None)
    assert [(r["seed"], r["patience"], r["epochs"]) for r in runs] == [(1000, None, 2), (1001, None, 2)]
    runs = replicate_configs([candidate], [1000], 3)
    assert [(r["folds"], r["fold"], r["seed"]) for r in runs] == [(3, 0, 1000), (3, 1, 1000), (3, 2, 1000)]


def test_refusals(disagreeing, tmp_path, capsys):
    storage, name = disagreeing
    search = load_search(storage, name)
    with pytest.raises(ConfigError, match="unknown parameter 'hed'.*head"):
        select(search, Selection("per_level", factors=("hed",)))
    with pytest.raises(ConfigError, match="--per-level seed: seed replicates a configuration"):
        select(search, Selection("per_level", factors=("seed",)))
    with pytest.raises(ConfigError, match="per-level lr: the search ran lr=0.1, which is not a level"):
        select(search, Selection("per_level", factors=("lr",)))
    with pytest.raises(ConfigError, match="--top-k 5: the search 'fake' ran only 4"):
        select(search, Selection("top_k", k=5))
    without_convskip = _fake_search(tmp_path / "other", [({"head": "linear", "lr": 0.01}, 0.7, 0.7, {}),
                                                         ({**CONV, "lr": 0.01}, 0.8, 0.8, {})])
    with pytest.raises(ConfigError, match="never ran head='convskip'"):
        select(load_search(tmp_path / "other", without_convskip), Selection("per_level", factors=("head",)))
    with pytest.raises(ConfigError, match="no finished search"):
        load_search(storage, "nope")
    for seeds in (0, -1):
        with pytest.raises(ConfigError, match=f"--seeds {seeds}"):
            check_request(ConfirmRequest("fake", Selection("top_k", k=1), seeds=seeds))
    assert main(["confirm", "--experiment", "nope", "--storage", str(storage), "--top-k", "1", "--seeds", "2"]) == 2
    assert "no finished search" in capsys.readouterr().err
    assert main(["confirm", "--experiment", name, "--storage", str(storage), "--top-k", "1", "--seeds", "0"]) == 2
    assert "--seeds 0" in capsys.readouterr().err
    assert main(["confirm", "--experiment", name, "--storage", str(storage), "--per-level", "hed", "--seeds", "2"]) == 2
    assert "did you mean 'head'" in capsys.readouterr().err.lower()


def test_tune_checks_the_confirm_options_before_searching(tmp_path, small_npz, capsys):
    status = main(["tune", "--space", "quick", "--dataset", str(small_npz), "--storage", str(tmp_path),
                   "--experiment", "x", "--confirm-top-k", "1", "--confirm-seeds", "0"])
    assert status == 2 and "--seeds 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tune_runs_the_stage_after_the_search_on_folds_and_resumes_both(ray_local, tmp_path, small_npz, capsys):
    command = ["tune", "--space", "quick", "--dataset", str(small_npz), "--storage", str(tmp_path), "--experiment",
               "both", "--search", "grid", "--max-epochs", "1", "--set", "head=linear", "--set", "lr=[0.01]",
               "--confirm-top-k", "1", "--confirm-seeds", "1", "--confirm-folds", "2"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "confirmation of 'both' by --top-k 1" in out and "2 runs: 2 completed" in out
    trials = sorted(confirm_dir(tmp_path, "both").glob("*/result.json"))
    ran = [json.loads(t.read_text()) for t in trials]
    assert sorted((r["config"]["seed"], r["config"]["folds"], r["config"]["fold"]) for r in ran) == [
        (1000, 2, 0), (1000, 2, 1)]
    assert ran[0]["val_loss"] != ran[1]["val_loss"], "both folds validated on the same images"
    (chosen,) = json.loads((confirm_dir(tmp_path, "both") / SEARCH_FILE).read_text())["configurations"]
    assert {trial_config_id(r["config"]) for r in ran} == {chosen["run_config_id"]} != {chosen["config_id"]}
    assert main([*command, "--resume"]) == 0
    assert sorted(confirm_dir(tmp_path, "both").glob("*/result.json")) == trials
    assert all(len(t.read_text().splitlines()) == 1 for t in trials)

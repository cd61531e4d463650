"""A real finished search and its confirmation stage analyzed end to end: BreastMNIST (a real-image
subset), several heads, strategies and unfreeze depths, one seed each, trained by Ray Tune with ASHA and logged
to MLflow; then the validation-best configuration of each head re-run with two fresh seeds
(``tuner.confirm``); then `medtune analyze` from MLflow and from the Tune folders alone must give the
same numbers, with every section of the report filled and the conclusions drawn from the confirmation
runs."""

from __future__ import annotations

import filecmp
import textwrap

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import search_spaces
from analysis.loading import SOURCE_COLUMNS, load_search
from tuner.confirm import ConfirmRequest, run_confirm
from tuner.confirm_select import Selection
from tuner.search import SearchRequest, run_search

# A study module as a researcher would write one: heads x strategies (top-k at two depths), one seed each,
# with its default analysis. It lives in a temporary folder added to the search_spaces package.
SPACE = """
from search_spaces import Space

ANALYSIS = {
    "formula": "test_auc ~ C(head) + C(strategy, Treatment('ft')) + log10_lr",
    "groups": "seed",
    "x": "strategy",
    "compare": ["strategy=ft,lp,topk", "head"],
}


def define(s: Space) -> dict:
    head = s.choice("head", ["linear", "conv"])
    if head == "conv":
        s.choice("kernel_size", [3])
    strategy = s.choice("strategy", ["ft", "lp", "topk"])
    if strategy == "topk":
        s.choice("unfreeze", [1, 3])
    s.float("lr", 1e-3, 1e-1, log=True, grid=[3e-2])
    return {"backbone": "resnet18", "weights": "none", "optimizer": "sgd", "epochs": 2, "batch_size": 64,
            "image_size": 28, "augment": False, "dropout": 0.0, "filters": 4 if head != "linear" else None}
"""
NAME = "study"


def frame_differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Differences between two trial frames outside ``SOURCE_COLUMNS`` (where each source keeps a
    trial: they differ by design); empty when none."""
    cols_a = [c for c in a.columns if c not in SOURCE_COLUMNS]
    cols_b = [c for c in b.columns if c not in SOURCE_COLUMNS]
    if cols_a != cols_b:
        return [f"columns differ: {sorted(set(cols_a) ^ set(cols_b)) or 'order'}"]
    if len(a) != len(b):
        return [f"{len(a)} rows against {len(b)}"]
    return [f"column {col!r} differs" for col in cols_a
            if not a[col].reset_index(drop=True).equals(b[col].reset_index(drop=True))]


@pytest.fixture(scope="module")
def study_space(module_tmp_factory):
    folder = module_tmp_factory.mktemp("spaces")
    (folder / "analysis_probe.py").write_text(textwrap.dedent(SPACE))
    search_spaces.__path__.append(str(folder))
    yield "analysis_probe"
    search_spaces.__path__.remove(str(folder))


@pytest.fixture(scope="module")
def ray_here():
    """Ray for this module only, shut down after it: this file runs before tests (test_cli) that check
    that bad input exits before Ray starts, which a session-wide Ray would break."""
    import ray

    if ray.is_initialized():  # a session-wide Ray started earlier: use it, leave it to its owner
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def study(ray_here, small_npz, study_space, module_tmp_factory):
    storage = module_tmp_factory.mktemp("study")
    outcome = run_search(
        SearchRequest(
            space=study_space,
            dataset=str(small_npz),
            search="grid",
            storage=str(storage),
            experiment=NAME,
            seed=0,
        )
    )
    confirmed = run_confirm(ConfirmRequest(experiment=NAME, selection=Selection("per_level", factors=("head",)),
                                           seeds=2, storage=str(storage), tracking_uri=outcome.tracking_uri))
    assert confirmed.completed == confirmed.runs == 4
    return storage, outcome


def test_the_tune_folder_alone_gives_the_same_frame_as_mlflow(study):
    storage, outcome = study
    online = load_search(NAME, outcome.tracking_uri, storage)
    offline = load_search(NAME, storage=storage, source="tune")
    assert len(online.frame) == outcome.trials - outcome.errored + 4 == 12
    assert frame_differences(online.frame, offline.frame) == []  # stage and config_id included
    assert list(online.frame["stage"]) == ["explore"] * 8 + ["confirm"] * 4
    confirm = online.frame[online.frame["stage"] == "confirm"]
    assert confirm.groupby("head")["config_id"].nunique().eq(1).all() and set(confirm["head"]) == {"linear", "conv"}
    assert (confirm["outcome"] == "completed").all() and (confirm["epochs_trained"] == 2).all()
    frame = online.frame[online.frame["stage"] == "explore"]
    assert set(frame["strategy"]) == {"ft", "lp", "topk"} and set(frame["unfreeze"].dropna()) == {1, 3}
    assert set(frame["head"]) == {"linear", "conv"} and set(frame["seed"]) == {0}
    assert (frame["lr"] == 3e-2).all()  # the configured lr, not the last epoch's (final_lr)
    for i in (0, len(frame) - 1):
        assert online.history(frame.iloc[i]).equals(offline.history(offline.frame.iloc[i]))
        assert online.test_scores(frame.iloc[i]).equals(offline.test_scores(offline.frame.iloc[i]))


@pytest.fixture(scope="module")
def reports(study, module_tmp_factory):
    from tuner.cli import main

    storage, outcome = study
    out = {}
    for source in ("mlflow", "tune"):
        out[source] = module_tmp_factory.mktemp(f"report-{source}")
        argv = [
            "analyze",
            "--experiment",
            NAME,
            "--storage",
            str(storage),
            "--tracking-uri",
            outcome.tracking_uri,
            "--out",
            str(out[source]),
        ]
        assert main(argv + (["--offline"] if source == "tune" else [])) == 0
    return out


def test_medtune_analyze_concludes_from_the_confirmation_runs(reports):
    folder = reports["mlflow"]
    text = (folder / "report.md").read_text()
    sections = [
        "Overview",
        "Mixed model",
        "Does each factor matter?",
        "DeLong comparisons",
        "Seeds and test cases",
        "Fine-tuning strategies",
        "Effect plots",
        "Learning curves and overfitting",
        "Sensitivity to stopped trials (exploratory)",
        "What is optimistic (exploratory)",
        "Tuning curves (exploratory)",
        "Optuna studies (exploratory)",
        "Hyperparameter importance (exploratory)",
    ]
    for number, title in enumerate(sections, 1):
        assert f"## {number}. {title}\n" in text
    assert "could not be computed" not in text and "Not run" not in text and "Not fitted" not in text
    assert "Basis: confirmatory: 4 confirmation runs of 2 configuration(s) at full budget (2 replicates each)" in text
    for png in ("roc_curves.png", "learning_curves.png", "tuning_curves.png", "importance.png"):
        assert (folder / png).stat().st_size > 5000, png
    trials = pd.read_csv(folder / "trials.csv")
    confirm_runs = set(trials.loc[trials["stage"] == "confirm", "run_name"])
    delong = pd.read_csv(folder / "delong.csv")
    assert "head" in set(delong["factor"]) <= {"head", "strategy"} and delong["paired"].all()
    assert all(set(t.split(" + ")) <= confirm_runs for t in delong["trials_a"].tolist() + delong["trials_b"].tolist())
    boot = pd.read_csv(folder / "bootstrap_seeds_cases.csv")
    assert (boot["replicates_a"] == 2).all() and (boot["replicates_b"] == 2).all()
    assert ((boot["ci_low"] <= boot["difference"]) & (boot["difference"] <= boot["ci_high"])).all()
    model = pd.read_csv(folder / "mixed_model.csv")
    assert {"boot_ci_low", "boot_p"} <= set(model.columns)  # two configurations: few groups
    linked = pd.read_csv(folder / "optimism_confirmed.csv")
    assert len(linked) == 2 and (linked["confirmation runs"] == 2).all()
    curves = pd.read_csv(folder / "tuning_curves.csv")
    assert curves.loc[curves["group"] == "all trials", "n"].max() == 8


def test_mlflow_and_tune_folder_reports_have_the_same_numbers(reports):
    tables = sorted(p.name for p in reports["mlflow"].glob("*.csv"))
    assert len(tables) >= 15
    assert sorted(p.name for p in reports["tune"].glob("*.csv")) == tables
    match, mismatch, errors = filecmp.cmpfiles(reports["mlflow"], reports["tune"], tables, shallow=False)
    assert mismatch == [] and errors == []


def test_the_report_is_logged_to_the_parent_run(study, reports):
    _, outcome = study
    client = MlflowClient(outcome.tracking_uri)
    logged = {a.path for a in client.list_artifacts(outcome.parent_run_id, "report")}
    assert {
        "report/report.md",
        "report/report.html",
        "report/delong.csv",
        "report/mixed_model.csv",
        "report/roc_curves.png",
    } <= logged


def test_a_csv_manifest_is_named_alike_offline_and_from_mlflow(ray_here, breastmnist, tmp_path):
    """The offline loader reads the data set's name that the search recorded (``trial_params`` in
    ``medtune_search.json``, the same value MLflow holds as a param) instead of re-deriving it from
    the request, where a ``.csv`` manifest came out as ``tiny.csv`` offline but ``tiny`` in MLflow."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for label in (0, 1):  # 16 real images per class: 8 train, 4 val, 4 test
        for k, i in enumerate(np.flatnonzero(breastmnist.train.labels == label)[:16]):
            Image.fromarray(breastmnist.train.images[i]).save(folder / f"{i}.png")
            rows.append({"path": f"images/{i}.png", "label": int(label),
                         "split": "train" if k < 8 else "val" if k < 12 else "test"})
    manifest = tmp_path / "tiny.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    storage = tmp_path / "results"
    outcome = run_search(SearchRequest(space="quick", dataset=str(manifest), search="random", num_samples=1,
                                       max_epochs=1, pins={"head": "linear", "seed": 0, "lr": 0.01},
                                       storage=str(storage), experiment="manifest"))
    assert outcome.completed + outcome.stopped_early == 1
    online = load_search("manifest", outcome.tracking_uri, storage)
    offline = load_search("manifest", storage=storage, source="tune")
    assert [s.dataset for s in online.searches] == [s.dataset for s in offline.searches] == ["tiny"]
    assert list(online.frame["dataset"]) == list(offline.frame["dataset"]) == ["tiny"]
    assert frame_differences(online.frame, offline.frame) == []

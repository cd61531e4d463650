"""The analysis concludes from confirmation runs and never pools unequal budgets silently: fake Tune
folders of a search (some trials stopped by ASHA or patience) and of its confirmation stage
(``<experiment>-confirm``, ``stage: confirm``), written here as the contract lays them out, then the
frame, the report's sections, their labels and their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from analysis.loading import load_search
from analysis.report import AnalysisOptions, analyze, build_report
from tests.test_analysis_units import write_trial
from tuner.schema import CONFIRM, SEARCH_FILE, confirm_experiment

HEAD_EFFECT = {"linear": 0.6, "conv": 1.0, "convskip": 1.4}
N_TEST = 120
LABELS = np.array([0, 1] * (N_TEST // 2))


def _trial(rng, trial_id, head, lr, seed, *, epochs_run=4, epochs=4, patience=False, val_noise=0.01,
           signal=None):
    """One binary-task trial: per-case test scores from its head's effect plus a seed effect, test
    metrics computed from them, its validation AUC near its test AUC, ``epochs_run`` of ``epochs``."""
    strength = HEAD_EFFECT[head] + (0.15 if lr == 1e-2 else 0.0) + rng.normal(0, 0.1) if signal is None else signal
    p1 = 1 / (1 + np.exp(-(strength * (2 * LABELS - 1) + rng.normal(0, 1.0, N_TEST))))
    scores = pd.DataFrame({"index": np.arange(N_TEST), "label": LABELS, "score_0": 1 - p1, "score_1": p1})
    auc = roc_auc_score(LABELS, p1)
    val = float(np.clip(auc + rng.normal(0, val_noise), 0, 1))
    lines = [{"epoch": e, "lr": lr, "train_loss": 0.5, "val_loss": 0.6, "train_acc": 0.8, "val_acc": 0.75,
              "val_auc": val, "best_val_auc": val, "test_auc": auc, "test_acc": 0.7, "test_loss": 0.5,
              "stopped_by_patience": patience and e == epochs_run} for e in range(1, epochs_run + 1)]
    config = {"backbone": "resnet18", "weights": "none", "head": head, "strategy": "ft", "lr": lr, "seed": seed,
              "epochs": epochs, "batch_size": 32, "image_size": 28}
    return trial_id, config, lines, scores


def _folder(storage: Path, name: str, trials: list, *, stage: str | None = None, statuses=None) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    record = {"parent_run_id": "parent-123", "experiment": name, "trial_params": {"dataset": "synth"},
              "request": {"space": "quick", "dataset": "/data/synth.npz", "search": "random"}}
    if stage:
        record["stage"] = stage
    (folder / SEARCH_FILE).write_text(json.dumps(record))
    for trial_id, config, lines, scores in trials:
        write_trial(folder, trial_id, config, lines, scores)
    statuses = statuses or {}
    state = {"trial_data": [[json.dumps({"trial_id": t[0], "status": statuses.get(t[0], "TERMINATED")}), "{}"]
                            for t in trials]}
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    return folder


STOPPED = (0, 5, 6, 11)  # heads linear, conv, conv, convskip


def _search(rng) -> list:
    """12 search trials (3 heads x 2 lrs x 2 draws, one seed each); four of them stopped early: ASHA
    after 1 epoch (even ones; weak scores: they never learned), or patience after 2 (odd ones)."""
    trials = []
    for i, (head, lr, draw) in enumerate((h, lr, d) for h in HEAD_EFFECT for lr in (1e-3, 1e-2) for d in (0, 1)):
        epochs_run = (1 if i % 2 == 0 else 2) if i in STOPPED else 4
        signal = 0.2 if epochs_run < 4 else None
        trials.append(_trial(rng, f"e{i:04d}", head, lr, draw, epochs_run=epochs_run, patience=epochs_run == 2,
                             signal=signal))
    return trials


def _confirm(rng, seeds=(10, 11, 12, 13, 14), drop: tuple[str, int] | None = None) -> list:
    """The confirmation stage: each head's configuration at lr 1e-2, full budget, fresh seeds."""
    trials = []
    for head in HEAD_EFFECT:
        for seed in seeds:
            epochs_run = 2 if drop == (head, seed) else 4  # a run that diverged / did not finish its budget
            trials.append(_trial(rng, f"c-{head}-{seed}", head, 1e-2, seed, epochs_run=epochs_run))
    return trials


@pytest.fixture(scope="module")
def confirmed(module_tmp_factory) -> Path:
    storage = module_tmp_factory.mktemp("confirmed")
    rng = np.random.default_rng(3)
    _folder(storage, "study", _search(rng))
    _folder(storage, confirm_experiment("study"), _confirm(rng), stage=CONFIRM)
    return storage


def test_loading_gives_each_trial_its_stage_configuration_and_outcome(confirmed):
    loaded = load_search("study", storage=confirmed, source="tune")
    frame = loaded.frame
    assert list(frame.columns[:5]) == ["experiment", "dataset", "stage", "config_id", "trial_id"]
    assert (frame["stage"].iloc[:12] == "explore").all() and (frame["stage"].iloc[12:] == CONFIRM).all()
    confirm = frame[frame["stage"] == CONFIRM]
    assert confirm.groupby("head")["config_id"].nunique().eq(1).all()  # the seeds replicate one configuration
    assert confirm["config_id"].nunique() == 3 and set(confirm["seed"]) == {10, 11, 12, 13, 14}
    explore = frame[frame["stage"] == "explore"]
    assert explore["outcome"].value_counts().to_dict() == {"completed": 8, "stopped_early": 2, "early_stopping": 2}
    assert set(frame["parent_run_id"]) == {"parent-123"} and set(frame["experiment"]) == {"study"}
    info = loaded.searches[0]
    assert info.counts == {"explore": {"finished": 12, "errored": 0, "unfinished": 0},
                           "confirm": {"finished": 15, "errored": 0, "unfinished": 0}}
    assert info.confirm_location == str(confirmed / "study-confirm")


@pytest.fixture(scope="module")
def confirmed_report(confirmed, module_tmp_factory):
    out = module_tmp_factory.mktemp("report")
    report = build_report("study", storage=confirmed, out=out, source="tune",
                          options=AnalysisOptions(formula="test_auc ~ C(head, Treatment('linear'))",
                                                  compare=["head=linear,conv,convskip"], resamples=500, refits=99))
    return report, out


def test_conclusions_rest_on_the_confirmation_runs_and_the_search_is_labelled_exploratory(confirmed_report):
    report, out = confirmed_report
    assert report.problems == []
    titles = {s.title: s for s in report.sections}
    for conclusion in ("Mixed model", "DeLong comparisons", "Seeds and test cases", "Effect plots"):
        assert conclusion in titles and titles[conclusion].basis.startswith("confirmatory: 15 confirmation runs")
    for search in ("Sensitivity to stopped trials", "What is optimistic", "Tuning curves", "Hyperparameter importance"):
        assert f"{search} (exploratory)" in titles
    text = (out / "report.md").read_text()
    assert "Conclusions rest on the confirmation runs" in text and "These results hold on this test set" in text
    model = pd.read_csv(out / "mixed_model.csv").set_index("term")
    assert len(model) == 3 and {"boot_ci_low", "boot_ci_high", "boot_p"} <= set(model.columns)  # 3 groups: few
    assert model.loc["C(head, Treatment('linear'))[T.convskip]", "estimate"] > 0.05
    assert pd.read_csv(out / "mixed_model_variances.csv")["name"].tolist() == ["config_id (Intercept)", "Residual"]
    delong = pd.read_csv(out / "delong.csv")
    assert (delong["trials_a"].str.count(r" \+ ") == 4).all()  # pooled: the five confirmation seeds
    assert delong["trials_a"].str.contains("-s1[0-4]").all()


def test_the_bootstrap_counts_the_confirmation_seeds_and_holm_spans_its_family(confirmed_report):
    from statsmodels.stats.multitest import multipletests

    _, out = confirmed_report
    boot = pd.read_csv(out / "bootstrap_seeds_cases.csv")
    assert list(boot["level"]) == ["conv", "convskip"] and set(boot["reference"]) == {"linear"}
    assert (boot["replicates_a"] == 5).all() and (boot["replicates_b"] == 5).all()
    assert np.isfinite(boot["df"]).all()  # seed variance counted, small-sample widening applied
    assert (boot["ci_low"] < boot["difference"]).all() and (boot["difference"] < boot["ci_high"]).all()
    assert np.allclose(boot["p_holm"], multipletests(boot["p_value"], method="holm")[1])
    delong = pd.read_csv(out / "delong.csv").set_index("level")
    for row in boot.itertuples():  # the bootstrap's interval is the wider: it adds seed variance
        assert row.ci_high - row.ci_low > delong.loc[row.level, "difference_ci_high"] - \
            delong.loc[row.level, "difference_ci_low"]


def test_the_report_says_what_is_optimistic(confirmed_report, confirmed):
    _, out = confirmed_report
    chosen = pd.read_csv(out / "optimism_chosen_trials.csv").iloc[0]
    frame = load_search("study", storage=confirmed, source="tune").frame
    explore = frame[frame["stage"] == "explore"]
    assert chosen["chosen best_val_auc"] == explore["best_val_auc"].max() >= chosen["median best_val_auc"]
    linked = pd.read_csv(out / "optimism_confirmed.csv")
    assert len(linked) == 3 and (linked["confirmation runs"] == 5).all()
    assert np.allclose(linked["optimism"], linked["search best_val_auc"] - linked["confirmed best_val_auc"])
    assert "winner's curse" in (out / "report.md").read_text()


def test_exploratory_analyses_leave_stopped_trials_out_and_say_so(tmp_path):
    rng = np.random.default_rng(4)
    _folder(tmp_path, "alone", _search(rng))
    report = build_report("alone", storage=tmp_path, out=tmp_path / "out", source="tune",
                          options=AnalysisOptions(formula="test_auc ~ C(head) + log10_lr", refits=0))
    titles = {s.title: s for s in report.sections}
    mixed = titles["Mixed model (exploratory)"]
    assert "the 8 search trials that ran their whole budget; 4 stopped trials" in mixed.basis
    assert "2 stopped by ASHA, 2 stopped by patience" in mixed.basis
    assert pd.read_csv(tmp_path / "out" / "trials.csv").shape[0] == 12
    sensitivity = pd.read_csv(tmp_path / "out" / "sensitivity_stopped_trials.csv")
    assert sensitivity.groupby("variant")["trials"].first().to_dict() == {
        "complete budgets only": 8, "pooled with stopped trials": 12, "pooled, budget as covariate": 12}
    assert "np.log2(epochs_trained)" in set(sensitivity["term"])
    # the stopped trials scored low: pooling them moves the estimates, which the table shows
    by = sensitivity.set_index(["variant", "term"])["estimate"]
    assert by[("complete budgets only", "Intercept")] != pytest.approx(by[("pooled with stopped trials", "Intercept")])
    model = pd.read_csv(tmp_path / "out" / "mixed_model.csv")  # complete budgets only is the exploratory model
    complete = sensitivity[sensitivity["variant"] == "complete budgets only"]
    assert np.allclose(complete["estimate"], model["estimate"])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "There are no confirmation runs, so every section is exploratory" in text


def test_pooling_stopped_trials_is_a_choice_the_report_states(tmp_path):
    rng = np.random.default_rng(5)
    _folder(tmp_path, "pooled", _search(rng))
    report = build_report("pooled", storage=tmp_path, out=tmp_path / "out", source="tune",
                          options=AnalysisOptions(formula="test_auc ~ C(head)", include_stopped=True, refits=0))
    mixed = next(s for s in report.sections if s.title.startswith("Mixed model"))
    assert "12 search trials pooled at unequal budgets" in mixed.basis and "--include-stopped" in mixed.basis
    text = (tmp_path / "out" / "report.md").read_text()
    assert "12 trials" in text and "(here they are pooled: --include-stopped)" in text


def test_an_incomplete_confirmation_run_is_left_out_and_its_replicate_set_flagged(tmp_path):
    rng = np.random.default_rng(6)
    _folder(tmp_path, "gap", _search(rng))
    _folder(tmp_path, confirm_experiment("gap"), _confirm(rng, drop=("conv", 12)), stage=CONFIRM)
    report = build_report("gap", storage=tmp_path, out=tmp_path / "out", source="tune",
                          options=AnalysisOptions(formula="test_auc ~ C(head)", refits=0, resamples=200))
    overview = report.sections[0]
    notes = " ".join(b.text for b in overview.blocks if b.kind == "note")
    assert "1 confirmation run(s) did not complete their budget" in notes and "s12: stopped_early" in notes
    assert "unequal replicate counts (4 to 5)" in notes
    mixed = next(s for s in report.sections if s.title == "Mixed model")
    assert mixed.basis.startswith("confirmatory: 14 confirmation runs of 3 configuration(s) at full budget")
    boot = pd.read_csv(tmp_path / "out" / "bootstrap_seeds_cases.csv").set_index("level")
    assert boot.loc["conv", "replicates_a"] == 4


def test_a_score_file_that_cannot_be_read_is_noted_in_the_section_that_read_it(tmp_path):
    rng = np.random.default_rng(7)
    _folder(tmp_path, "lost", _search(rng))
    loaded = load_search("lost", storage=tmp_path, source="tune")
    complete = loaded.frame[loaded.frame["outcome"] == "completed"]
    best = complete.loc[complete["best_val_auc"].idxmax()]
    Path(best["test_scores"]).unlink()  # gone after loading: only a section's read finds out
    (tmp_path / "out").mkdir()
    report = analyze(loaded, tmp_path / "out", AnalysisOptions(formula="test_auc ~ C(head)", refits=0))
    delong = next(s for s in report.sections if s.title.startswith("DeLong"))
    words = f"Test scores of trial {best['run_name']} could not be read"
    assert any(b.kind == "note" and words in b.text for b in delong.blocks)
    assert words in (tmp_path / "out" / "report.md").read_text()

"""Tables choose on validation and report on test: built so that validation and test disagree, every
choice (the strategy tables' cells, "best per data set", the compared models) must follow validation;
and cells without the complete replicate set are flagged and kept out of the comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import comparisons as cmp
from analysis import strategy_tables as st
from analysis.design import factor_coverage

PARAMS = ["strategy", "backbone", "lr", "seed", "dataset"]


def _disagreeing() -> pd.DataFrame:
    """Per cell, lr 1e-3 wins on validation and loses on test; across cells, lp_ft / vgg19 wins on
    validation while ft / vgg19 has the best test scores."""
    rows = []
    cells = {("ft", "resnet50"): (0.80, 0.78), ("lp_ft", "resnet50"): (0.84, 0.80),
             ("ft", "vgg19"): (0.85, 0.95), ("lp_ft", "vgg19"): (0.90, 0.85)}
    for (strategy, backbone), (val, test) in cells.items():
        for lr, val_shift, test_shift in ((1e-3, 0.02, -0.05), (1e-4, 0.0, 0.0)):
            for seed in (0, 1, 2):
                rows.append({"dataset": "d", "strategy": strategy, "backbone": backbone, "lr": lr, "seed": seed,
                             "best_val_auc": val + val_shift + 0.001 * seed,
                             "test_auc": test + test_shift + 0.002 * seed,
                             "run_name": f"{strategy}-{backbone}-{lr}-s{seed}",
                             "trial_id": f"{strategy}{backbone}{lr}{seed}"})
    return pd.DataFrame(rows)


def test_cells_choose_the_validation_best_configuration_and_report_its_test_scores():
    long = st.cells(_disagreeing(), PARAMS)
    cell = long[(long["strategy"] == "ft") & (long["backbone"] == "vgg19")].iloc[0]
    assert cell["val_mean"] == pytest.approx(0.87 + 0.001)  # lr 1e-3: the validation winner
    assert cell["mean"] == pytest.approx(0.90 + 0.002)  # its test score, not lr 1e-4's better 0.952
    assert cell["ci_low"] < cell["mean"] < cell["ci_high"] and cell["n_seeds"] == 3 and cell["complete"]
    assert "0.001-s0" in cell["trials"] and "0.0001-s0" not in cell["trials"]


def test_best_per_dataset_and_the_bold_cells_follow_validation_not_test():
    long = st.cells(_disagreeing(), PARAMS)
    best = st.best_per_dataset(long, st.change_vs_ft(long, "test_auc"), "test_auc").iloc[0]
    assert (best["strategy"], best["backbone"]) == ("lp_ft", "vgg19")  # best on validation; ft/vgg19 on test
    assert best["test_auc"] < long.loc[long["strategy"].eq("ft") & long["backbone"].eq("vgg19"), "mean"].iloc[0]
    table = st.cell_table(long, "d").set_index("strategy")
    assert table.loc["lp_ft", "vgg19 test_auc"].startswith("**") and table.loc["lp_ft", "vgg19 test_auc"].endswith("†")
    assert not table.loc["ft", "vgg19 test_auc"].startswith("**")


@pytest.mark.parametrize("mode", ["best", "pooled"])
def test_compared_models_are_chosen_on_validation(mode):
    frame = _disagreeing()
    frame = frame[frame["backbone"] == "vgg19"].assign(test_scores="x")
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    scores = {name: pd.DataFrame({"index": np.arange(40), "label": y, "score_0": 1 - (p := rng.uniform(0, 1, 40)),
                                  "score_1": p}) for name in frame["run_name"]}
    result = cmp.compare(frame, [cmp.parse_compare("strategy=ft,lp_ft")], lambda r: scores[r["run_name"]],
                         params=PARAMS, mode=mode)
    for trials in (result.table.iloc[0]["trials_a"], result.table.iloc[0]["trials_b"]):
        assert all("-0.001-" in t for t in trials.split(" + "))  # lr 1e-3: the validation winner
    if mode == "best":
        assert result.table.iloc[0]["trials_b"] == "ft-vgg19-0.001-s2"  # the top validation seed


def test_a_cell_without_the_complete_replicate_set_is_flagged_and_refused():
    frame = _disagreeing()
    frame = frame[~((frame["strategy"] == "lp_ft") & (frame["backbone"] == "vgg19") & (frame["seed"] == 2))]
    long = st.cells(frame, PARAMS)
    cell = long[(long["strategy"] == "lp_ft") & (long["backbone"] == "vgg19")].iloc[0]
    assert not cell["complete"] and cell["replicates"] == "0 1" and cell["n_seeds"] == 2
    assert st.cell_table(long, "d").set_index("strategy").loc["lp_ft", "vgg19 test_auc"].endswith("‡")
    change = st.change_vs_ft(long, "test_auc")
    assert set(zip(change["strategy"], change["backbone"], strict=True)) == {("lp_ft", "resnet50")}
    best = st.best_per_dataset(long, change, "test_auc").iloc[0]
    assert (best["strategy"], best["backbone"]) == ("ft", "vgg19")  # the incomplete winner is refused


def test_every_varying_factor_is_in_the_model_or_the_report_says_why():
    frame = _disagreeing().assign(config_id=lambda f: f["strategy"] + f["backbone"] + f["lr"].astype(str),
                                  kernel_size=lambda f: np.where(f["strategy"] == "ft", 3, np.nan),
                                  log10_lr=lambda f: np.log10(f["lr"]))
    coverage = factor_coverage(frame, [*PARAMS, "kernel_size"], "test_auc ~ C(strategy) + log10_lr",
                               ["config_id"]).set_index("factor")
    assert coverage.loc["strategy", "in the model"] == coverage.loc["lr", "in the model"] == "fixed effect"
    assert coverage.loc["seed", "in the model"] == "replicate"
    assert coverage.loc["backbone", "in the model"] == "no" and "absorbed" in coverage.loc["backbone", "why"]
    assert "applies to some trials only" in coverage.loc["kernel_size", "why"]
    assert "dataset" not in coverage.index  # it never varies here

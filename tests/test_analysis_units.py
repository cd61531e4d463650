"""Analysis building blocks on synthetic but realistic searches: Holm, likelihood-ratio tests,
random-effect planning, the strategies paper's tables, Optuna importance, DeLong comparisons by
factor, plots, and the whole report from a Tune folder written here (no training: fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy.stats import chi2
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from statsmodels.stats.multitest import multipletests

from analysis import comparisons as cmp
from analysis import strategy_tables as st
from analysis.delong import delong_test, delong_unpaired
from analysis.importance import param_importances
from analysis.loading import load_search
from analysis.modeling import likelihood_ratio_tests, paper_table, plan_model
from analysis.multiplicity import holm
from tuner.errors import ConfigError

# --------------------------------------------------------------------------------------------
# a synthetic Tune experiment folder, laid out as `medtune tune` leaves it

STRATEGY_EFFECT = {"ft": 1.0, "lp": 0.25, "lp_ft": 1.35}
BACKBONE_EFFECT = {"resnet18": 0.0, "densenet121": 0.3}
LR_EFFECT = {1e-3: 0.0, 1e-4: -0.3}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def write_trial(
    folder: Path, trial_id: str, config: dict, epochs: list[dict], scores: pd.DataFrame | None
) -> Path:
    trial_dir = folder / f"{trial_id}-{config['backbone']}-{config['strategy']}-s{config['seed']}"
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps(config))
    lines = []
    for i, values in enumerate(epochs):
        lines.append(
            {
                **values,
                "timestamp": 1_700_000_000 + i,
                "checkpoint_dir_name": f"checkpoint_{i:06d}",
                "should_checkpoint": True,
                "done": i == len(epochs) - 1,
                "training_iteration": i + 1,
                "trial_id": trial_id,
                "date": "2026-01-01_00-00-00",
                "time_this_iter_s": 0.5,
                "time_total_s": 0.5 * (i + 1),
                "pid": 1,
                "hostname": "h",
                "node_ip": "127.0.0.1",
                "config": config,
                "time_since_restore": 0.5,
                "iterations_since_restore": i + 1,
            }
        )
    (trial_dir / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    checkpoint = trial_dir / f"checkpoint_{len(epochs) - 1:06d}"
    checkpoint.mkdir()
    if scores is not None:
        scores.to_csv(checkpoint / "test_scores.csv", index=False)
    return trial_dir


def write_experiment(
    storage: Path,
    name: str,
    trials: list[tuple[str, dict, list[dict], pd.DataFrame | None, str]],
    *,
    dataset: str,
    space: str | None = None,
) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    (folder / "medtune_search.json").write_text(
        json.dumps(
            {
                "parent_run_id": None,
                "experiment": name,
                "trial_params": {"dataset": dataset},  # the name the search logs with every trial
                "request": {"space": space, "dataset": f"/data/{dataset}.npz", "search": "grid"},
            }
        )
    )
    for trial_id, config, epochs, scores, _ in trials:
        write_trial(folder, trial_id, config, epochs, scores)
    state = {"trial_data": [[json.dumps({"trial_id": t[0], "status": t[4]}), "{}"] for t in trials]}
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    return folder


def strategy_study(
    rng: np.random.Generator,
    n_test: int = 80,
    seeds=(0, 1, 2),
    strategies=STRATEGY_EFFECT,
    missing_scores: tuple[str, ...] = (),
) -> list:
    """Trials of strategy x backbone x lr x seed, binary task: each trial's scores on one fixed test
    set; its test metrics computed from them; validation AUC close to test AUC."""
    labels = np.array([0, 1] * (n_test // 2))
    trials = []
    for strategy in strategies:
        for backbone, b_effect in BACKBONE_EFFECT.items():
            for lr, lr_effect in LR_EFFECT.items():
                for seed in seeds:
                    signal = STRATEGY_EFFECT[strategy] + b_effect + lr_effect + rng.normal(0, 0.1)
                    p1 = _sigmoid(signal * (2 * labels - 1) + rng.normal(0, 1.0, n_test))
                    scores = pd.DataFrame(
                        {"index": np.arange(n_test), "label": labels, "score_0": 1 - p1, "score_1": p1}
                    )
                    auc = roc_auc_score(labels, p1)
                    predicted = (p1 > 0.5).astype(int)
                    test = {
                        "test_auc": auc,
                        "test_acc": float((predicted == labels).mean()),
                        "test_kappa": cohen_kappa_score(labels, predicted),
                        "test_loss": 0.5,
                    }
                    val_auc = float(np.clip(auc + rng.normal(0, 0.01), 0, 1))
                    epochs = []
                    for epoch in (1, 2, 3):
                        train_acc, val_acc = 0.6 + 0.1 * epoch, 0.6 + 0.05 * epoch
                        train_loss, val_loss = 0.8 - 0.15 * epoch, 0.75 - 0.05 * epoch
                        epochs.append(
                            {
                                "epoch": epoch,
                                "lr": lr * 0.5 ** (epoch - 1),
                                "train_loss": train_loss,
                                "train_acc": train_acc,
                                "val_loss": val_loss,
                                "val_acc": val_acc,
                                "val_auc": val_auc - 0.01 * (3 - epoch),
                                "best_val_auc": val_auc,
                                "best_epoch": epoch,
                                "gap_acc": train_acc - val_acc,
                                "gap_loss": val_loss - train_loss,
                                **test,
                                "n_params": 1000,
                                "n_trainable_params": 1000,
                            }
                        )
                    config = {
                        "backbone": backbone,
                        "weights": "imagenet",
                        "head": "linear",
                        "strategy": strategy,
                        "lr": lr,
                        "seed": seed,
                        "epochs": 3,
                        "batch_size": 64,
                        "dropout": 0.0,
                    }
                    trial_id = f"{len(trials):08x}"
                    keep = None if trial_id in missing_scores else scores
                    trials.append((trial_id, config, epochs, keep, "TERMINATED"))
    return trials


@pytest.fixture(scope="module")
def study_storage(module_tmp_factory) -> Path:
    """Two data sets (two searches), three strategies, two backbones, two learning rates, three seeds."""
    storage = module_tmp_factory.mktemp("study")
    rng = np.random.default_rng(7)
    write_experiment(storage, "study-a", strategy_study(rng), dataset="synth_a")
    write_experiment(storage, "study-b", strategy_study(rng, n_test=60), dataset="synth_b")
    return storage


# --------------------------------------------------------------------------------------------
# Holm


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.05, 6), rng.uniform(0, 1, 10), [0.01, 0.01, 1.0]])
    rng.shuffle(p)
    expected = multipletests(p, method="holm")[1]
    assert np.allclose(holm(p), expected, rtol=0, atol=1e-15)


def test_holm_leaves_missing_p_values_out_of_the_family():
    p = np.array([0.01, np.nan, 0.04, 0.03])
    adjusted = holm(p)
    assert np.isnan(adjusted[1])
    assert np.allclose(adjusted[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])


def test_parse_compare():
    assert cmp.parse_compare("weights=imagenet,radimagenet") == cmp.ComparisonSpec(
        "weights", ("imagenet", "radimagenet")
    )
    assert cmp.parse_compare("head") == cmp.ComparisonSpec("head")
    with pytest.raises(ValueError, match="at least two levels"):
        cmp.parse_compare("head=conv")


# --------------------------------------------------------------------------------------------
# mixed models: random effects, logit, likelihood-ratio tests, the paper's table


def _search_frame(rng, n_seeds=4, datasets=("a", "b", "c"), head_effect=0.04) -> pd.DataFrame:
    rows = []
    seed_effect = rng.normal(0, 0.01, n_seeds)
    for d_index, dataset in enumerate(datasets):
        for seed in range(n_seeds):
            for head, h_effect in {
                "conv": 0.0,
                "linear": -head_effect,
                "convskip": 0.5 * head_effect,
            }.items():
                for optimizer in ("sgd", "adam"):
                    lr = 10 ** rng.uniform(-4, -2)
                    rows.append(
                        {
                            "dataset": dataset,
                            "seed": seed,
                            "head": head,
                            "optimizer": optimizer,
                            "lr": lr,
                            "log10_lr": np.log10(lr),
                            "test_auc": 0.8
                            + 0.03 * d_index
                            + seed_effect[seed]
                            + h_effect
                            + rng.normal(0, 0.01),
                        }
                    )
    return pd.DataFrame(rows)


def test_seed_and_dataset_are_crossed_random_effects_when_both_vary():
    frame = _search_frame(np.random.default_rng(1))
    plan = plan_model(frame, "test_auc ~ C(head) + C(optimizer) + log10_lr", random=["seed", "dataset"])
    assert plan.random == ["seed", "dataset"]
    assert any("crossed" in note for note in plan.notes)


def test_random_effects_that_cannot_be_estimated_get_a_note_not_a_crash():
    frame = _search_frame(np.random.default_rng(2), datasets=("only",))
    plan = plan_model(frame, "test_auc ~ C(head)", random=["seed", "dataset"])
    assert plan.random == ["seed"]
    assert any("`dataset` takes a single value ('only')" in note for note in plan.notes)
    frame["seed"] = range(len(frame))  # every trial its own seed
    plan = plan_model(frame, "test_auc ~ C(head)", random=["seed", "dataset"])
    assert plan.random == []
    assert any("every trial has its own `seed`" in note for note in plan.notes)
    plan = plan_model(_search_frame(np.random.default_rng(2)), "test_auc ~ C(head) + C(dataset)",
                      random=["seed", "dataset"])
    assert plan.random == ["seed"]
    assert any("`dataset` is a fixed effect" in note for note in plan.notes)


def test_unknown_column_in_the_formula_is_a_clear_error():
    frame = _search_frame(np.random.default_rng(3))
    with pytest.raises(ValueError, match="names column 'heads'.*did you mean 'head'"):
        plan_model(frame, "test_auc ~ C(heads)")


def test_likelihood_ratio_tests_find_the_factor_that_matters():
    frame = _search_frame(np.random.default_rng(4))
    plan = plan_model(frame, "test_auc ~ C(head) + C(optimizer) + log10_lr", random=["seed", "dataset"])
    table, notes = likelihood_ratio_tests(plan)
    table = table.set_index("factor")
    assert list(table.index) == ["head", "optimizer", "log10_lr"]
    assert table.loc["head", "df"] == 2 and table.loc["optimizer", "df"] == 1
    assert table.loc["head", "p"] < 1e-6  # "does the head matter?": yes
    assert table.loc["optimizer", "p"] > 0.01 and table.loc["log10_lr", "p"] > 0.01
    assert np.allclose(table["p_holm"], multipletests(table["p"], method="holm")[1])
    assert notes == []


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_likelihood_ratio_statistic_matches_independent_computations():
    rng = np.random.default_rng(5)
    frame = _search_frame(rng, n_seeds=8, datasets=("only",), head_effect=0.01)
    frame["test_auc"] += frame["seed"].map(dict(enumerate(rng.normal(0, 0.03, 8))))  # clear seed variance
    plan = plan_model(frame, "test_auc ~ C(head) + log10_lr", random=["seed"])
    row = likelihood_ratio_tests(plan)[0].set_index("factor").loc["head"]
    full = smf.mixedlm("test_auc ~ C(head) + log10_lr", frame, groups=frame["seed"]).fit(reml=False)
    reduced = smf.mixedlm("test_auc ~ log10_lr", frame, groups=frame["seed"]).fit(reml=False)
    assert full.converged and reduced.converged
    lr = 2 * (full.llf - reduced.llf)
    assert row["lr"] == pytest.approx(lr, rel=1e-5)
    assert row["p"] == pytest.approx(chi2.sf(lr, 2), rel=1e-4)
    # without random effects the LR of nested OLS models is n log(RSS_reduced / RSS_full)
    plan = plan_model(frame, "test_auc ~ C(head) + log10_lr", random=[])
    row = likelihood_ratio_tests(plan)[0].set_index("factor").loc["head"]
    rss_full = smf.ols("test_auc ~ C(head) + log10_lr", frame).fit().ssr
    rss_reduced = smf.ols("test_auc ~ log10_lr", frame).fit().ssr
    assert row["lr"] == pytest.approx(len(frame) * np.log(rss_reduced / rss_full), rel=1e-9)


def test_a_factor_that_never_varies_cannot_be_tested_and_says_so():
    frame = _search_frame(np.random.default_rng(6))
    frame["optimizer"] = "sgd"
    plan = plan_model(frame, "test_auc ~ C(head) + C(optimizer)", random=["seed", "dataset"])
    table, notes = likelihood_ratio_tests(plan)
    row = table.set_index("factor").loc["optimizer"]
    assert row["df"] == 0 and np.isnan(row["p"])
    assert any("`optimizer` cannot be tested" in note for note in notes)


def test_logit_response_for_aucs_near_one():
    frame = _search_frame(np.random.default_rng(7))
    frame["test_auc"] = 0.5 * frame["test_auc"] + 0.48  # near 1, one at exactly 1
    frame.loc[0, "test_auc"] = 1.0
    plan = plan_model(frame, "test_auc ~ C(head)", random=["seed", "dataset"], logit=True)
    assert plan.formula == "logit_test_auc ~ C(head)"
    assert np.isfinite(plan.data["logit_test_auc"]).all()
    assert plan.data["logit_test_auc"].max() == pytest.approx(np.log(0.999 / 0.001))
    assert any("1 value(s) at 0 or 1 were clipped" in note for note in plan.notes)


def test_paper_table_has_the_columns_of_table_5_and_names_the_reference():
    from analysis.modeling import fit_plan

    frame = _search_frame(np.random.default_rng(8))
    fit = fit_plan(plan_model(frame, "test_auc ~ C(head, Treatment('conv')) + log10_lr", random=["seed", "dataset"]))
    table = paper_table(fit)
    assert list(table.columns) == ["Term", "Estimate", "SE", "z", "p", "95% CI"]
    assert "head = linear (vs conv)" in set(table["Term"])
    row = table.set_index("Term").loc["head = linear (vs conv)"]
    assert row["Estimate"] == pytest.approx(-0.04, abs=0.01)
    low, high = map(float, re.findall(r"-?[\d.]+(?:e-?\d+)?", row["95% CI"]))
    assert low < row["Estimate"] < high


# --------------------------------------------------------------------------------------------
# the strategies paper's tables


def _cells_frame() -> pd.DataFrame:
    rows = []
    values = {
        ("ft", "resnet50"): [0.80, 0.82, 0.84],
        ("lp", "resnet50"): [0.70, 0.71, 0.72],
        ("lp_ft", "resnet50"): [0.85, 0.86, 0.87],
        ("ft", "vgg19"): [0.90, 0.90, 0.90],
        ("lp", "vgg19"): [0.9005, 0.9005, 0.9005],
        ("lp_ft", "vgg19"): [0.95, 0.93, 0.94],
    }
    for (strategy, backbone), aucs in values.items():
        for lr, shift in ((1e-3, 0.0), (1e-4, -0.05)):  # the worse lr must not be chosen
            for seed, auc in enumerate(aucs):
                rows.append(
                    {
                        "dataset": "d1",
                        "strategy": strategy,
                        "backbone": backbone,
                        "lr": lr,
                        "seed": seed,
                        "test_auc": auc + shift,
                        "test_kappa": 2 * (auc + shift) - 1,
                        "best_val_auc": auc + shift,
                        "run_name": f"{strategy}-{backbone}-{lr}-{seed}",
                    }
                )
    return pd.DataFrame(rows)


def test_strategy_cells_choose_the_best_config_and_report_mean_and_se_over_seeds():
    long = st.cells(_cells_frame(), params=["strategy", "backbone", "lr", "seed", "dataset"])
    cell = long[(long.strategy == "ft") & (long.backbone == "resnet50") & (long.metric == "test_auc")].iloc[0]
    assert cell["mean"] == pytest.approx(0.82)
    assert cell["se"] == pytest.approx(np.std([0.80, 0.82, 0.84], ddof=1) / np.sqrt(3))
    assert cell["n_seeds"] == 3
    assert set(long["metric"]) == {"test_auc", "test_kappa"}  # whatever study metrics exist


def test_strategy_tables_3_to_12():
    long = st.cells(_cells_frame(), params=["strategy", "backbone", "lr", "seed", "dataset"])
    table = st.cell_table(long, "d1")
    assert list(table["strategy"]) == ["ft", "lp", "lp_ft"]
    assert list(table.columns) == [
        "strategy",
        "resnet50 test_auc",
        "resnet50 test_kappa",
        "vgg19 test_auc",
        "vgg19 test_kappa",
    ]
    assert table.loc[2, "resnet50 test_auc"] == "**0.8600 (0.0058)**"
    assert table.loc[2, "vgg19 test_auc"].endswith("†")  # best over all architectures
    change = st.change_vs_ft(long, "test_auc").set_index(["backbone", "strategy"])
    assert change.loc[("resnet50", "lp_ft"), "change_pct"] == pytest.approx(100 * (0.86 - 0.82) / 0.82)
    assert change.loc[("vgg19", "lp"), "change_pct"] == pytest.approx(100 * 0.0005 / 0.9)  # 0.056%: no win
    wins = st.wins_over_ft(st.change_vs_ft(long, "test_auc")).set_index("strategy")
    # a win needs the Welch interval of the difference above 0: +0.04 over three noisy seeds on resnet50 is
    # not one ([-0.0016, 0.082]), +0.04 on vgg19 (FT identical on all seeds) is
    diff = st.change_vs_ft(long, "test_auc").set_index(["backbone", "strategy"])
    assert diff.loc[("resnet50", "lp_ft"), "diff_ci_low"] < 0 < diff.loc[("vgg19", "lp_ft"), "diff_ci_low"]
    assert wins.loc["lp_ft", "resnet50"] == 0 and wins.loc["lp_ft", "vgg19"] == 1
    assert wins.loc["lp", "Total"] == 0 and wins.loc["lp", "cases"] == 2  # lp on vgg19: +0.056%, under 0.1%
    assert wins.loc["lp_ft", "Effectiveness (%)"] == 50.0
    assert wins.loc["Total", "Total"] == 1
    best = st.best_per_dataset(long, st.change_vs_ft(long, "test_auc"), "test_auc").iloc[0]
    assert (best["backbone"], best["strategy"]) == ("vgg19", "lp_ft")
    assert best["change_vs_ft_pct"] == pytest.approx(100 * (0.94 - 0.90) / 0.90)


def test_strategy_tables_say_why_they_do_not_apply():
    frame = _cells_frame()
    assert st.applies(frame) is None
    assert "single strategy" in st.applies(frame[frame.strategy == "ft"])
    assert "no `backbone`" in st.applies(frame.drop(columns=["backbone"]))
    assert "none of the study's metrics" in st.applies(frame.drop(columns=["test_auc", "test_kappa"]))


# --------------------------------------------------------------------------------------------
# Optuna importance


def test_importance_finds_the_dominant_parameter():
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            "weight_decay": 10 ** rng.uniform(-5, -1, n),
            "lr": 10 ** rng.uniform(-4, -1, n),
            "head": rng.choice(["linear", "conv"], n),
            "seed": rng.integers(0, 3, n),
            "dropout": rng.uniform(0, 0.5, n),
        }
    )
    frame["kernel_size"] = np.where(frame["head"] == "conv", rng.choice([3, 5], n), None)
    frame["test_auc"] = 0.9 - 0.1 * (np.log10(frame["lr"]) + 2.5) ** 2 + rng.normal(0, 0.005, n)
    # the params are deliberately not in alphabetical order (Optuna 5 mislabels a non-sorted list)
    table, notes = param_importances(
        frame, ["weight_decay", "lr", "head", "seed", "dropout", "kernel_size"], "test_auc"
    )
    assert table.iloc[0]["param"] == "lr"
    assert (table.set_index("param").loc["lr"] > 0.8).all()
    assert set(table["param"]) == {"weight_decay", "lr", "head", "seed", "dropout", "kernel_size"}
    assert np.allclose(table[["fanova", "mean_decrease_impurity"]].sum(), 1.0)
    assert any("kernel_size" in note for note in notes)


def test_importance_with_too_few_trials_says_why():
    table, notes = param_importances(
        pd.DataFrame({"lr": [1e-3, 1e-2], "test_auc": [0.7, 0.8]}), ["lr"], "test_auc"
    )
    assert table.empty and "at least 3 trials" in notes[0]


# --------------------------------------------------------------------------------------------
# DeLong comparisons by factor


def _scored_frame(rng, n=60, classes=2, levels=("imagenet", "radimagenet"), seeds=(0, 1, 2)):
    labels = np.arange(n) % classes
    rows, scores = [], {}
    for level_index, level in enumerate(levels):
        for seed in seeds:
            for lr in (1e-3, 1e-4):
                strength = 1.5 - 0.8 * level_index + (0.3 if lr == 1e-3 else 0.0)
                logits = rng.normal(0, 1, (n, classes))
                logits[np.arange(n), labels] += strength
                probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                name = f"{level}-lr{lr}-s{seed}"
                frame = pd.DataFrame({"index": np.arange(n), "label": labels})
                for k in range(classes):
                    frame[f"score_{k}"] = probs[:, k]
                scores[name] = frame
                rows.append(
                    {
                        "dataset": "d",
                        "weights": level,
                        "seed": seed,
                        "lr": lr,
                        "run_name": name,
                        "trial_id": name,
                        "test_scores": name,
                        "best_val_auc": strength + rng.normal(0, 0.05),
                    }
                )
    return pd.DataFrame(rows), scores


def test_best_trial_of_each_level_paired_delong_with_holm():
    frame, scores = _scored_frame(np.random.default_rng(0))
    result = cmp.compare(
        frame,
        [cmp.parse_compare("weights=imagenet,radimagenet")],
        lambda row: scores[row["run_name"]],
        params=["weights", "seed", "lr"],
    )
    assert result.problems == []
    row = result.table.iloc[0]
    best = {
        w: frame[frame.weights == w].sort_values("best_val_auc").iloc[-1]["run_name"]
        for w in ("imagenet", "radimagenet")
    }
    assert (row["trials_a"], row["trials_b"]) == (best["radimagenet"], best["imagenet"])
    expected = delong_test(
        scores[best["imagenet"]]["label"],
        scores[best["radimagenet"]]["score_1"],
        scores[best["imagenet"]]["score_1"],
    )
    assert row["paired"] and row["z"] == expected.z and row["p_value"] == expected.p_value
    assert row["p_holm"] == row["p_value"]  # a family of one


def test_one_sided_alternative_and_direction():
    frame, scores = _scored_frame(np.random.default_rng(1))
    specs = [cmp.parse_compare("weights=imagenet,radimagenet")]
    two = cmp.compare(frame, specs, lambda r: scores[r["run_name"]], params=["weights"]).table.iloc[0]
    less = cmp.compare(
        frame, specs, lambda r: scores[r["run_name"]], params=["weights"], alternative="less"
    ).table.iloc[0]
    assert two["difference"] < 0  # radimagenet is the weaker level by construction
    assert less["p_value"] == pytest.approx(two["p_value"] / 2)


def test_multiclass_is_compared_one_vs_rest_per_class_with_holm_across_classes():
    frame, scores = _scored_frame(np.random.default_rng(2), classes=3)
    result = cmp.compare(
        frame, [cmp.parse_compare("weights")], lambda r: scores[r["run_name"]], params=["weights"]
    )
    assert list(result.table["class"]) == ["0", "1", "2"]
    assert np.allclose(result.table["p_holm"], multipletests(result.table["p_value"], method="holm")[1])
    a, b = result.table.iloc[1][["trials_a", "trials_b"]]
    y = (scores[a]["label"] == 1).astype(int)
    assert result.table.iloc[1]["auc_a"] == pytest.approx(roc_auc_score(y, scores[a]["score_1"]))


def test_pooled_mode_averages_the_best_configurations_seeds():
    frame, scores = _scored_frame(np.random.default_rng(3))
    result = cmp.compare(
        frame,
        [cmp.parse_compare("weights=imagenet,radimagenet")],
        lambda r: scores[r["run_name"]],
        params=["weights", "seed", "lr"],
        mode="pooled",
    )
    row = result.table.iloc[0]
    members = row["trials_b"].split(" + ")
    assert len(members) == 3 and len({frame.set_index("run_name").loc[m, "lr"] for m in members}) == 1
    pooled = np.mean([scores[m]["score_1"] for m in members], axis=0)
    assert row["auc_b"] == pytest.approx(roc_auc_score(scores[members[0]]["label"], pooled))


def test_unpaired_test_when_the_models_scored_different_test_sets():
    frame, scores = _scored_frame(np.random.default_rng(4))
    best_b = frame[frame.weights == "radimagenet"].sort_values("best_val_auc").iloc[-1]["run_name"]
    scores[best_b] = scores[best_b].iloc[:50].copy()  # a different (smaller) test set
    result = cmp.compare(
        frame,
        [cmp.parse_compare("weights=imagenet,radimagenet")],
        lambda r: scores[r["run_name"]],
        params=["weights"],
    )
    row = result.table.iloc[0]
    best_a = row["trials_b"]
    expected = delong_unpaired(
        scores[best_b]["label"], scores[best_b]["score_1"], scores[best_a]["label"], scores[best_a]["score_1"]
    )
    assert not row["paired"] and row["z"] == expected.z and row["p_value"] == expected.p_value


def test_missing_level_and_missing_scores_are_reported_and_the_rest_still_runs():
    frame, scores = _scored_frame(np.random.default_rng(5))
    best = frame[frame.weights == "imagenet"].sort_values("best_val_auc").iloc[-1]["run_name"]
    result = cmp.compare(
        frame,
        [cmp.parse_compare("weights=imagenet,radimagenet,scratch"), cmp.parse_compare("heads=a,b")],
        lambda r: None if r["run_name"] == best else scores[r["run_name"]],
        params=["weights"],
    )
    assert any(
        "level 'scratch' of weights has no finished trial (levels with trials: imagenet, radimagenet)" in p
        for p in result.problems
    )
    assert any("there is no column 'heads'" in p for p in result.problems)
    assert any(best in note and "no test scores" in note for note in result.notes)
    assert len(result.table) == 1 and best not in result.table.iloc[0]["trials_b"]


# --------------------------------------------------------------------------------------------
# loading a Tune folder, and the whole report from it


def test_offline_loader_reads_finished_trials_and_counts_the_rest(tmp_path):
    rng = np.random.default_rng(11)
    trials = strategy_study(rng, seeds=(0,), strategies={"ft": 1.0})
    trials[0] = (*trials[0][:4], "ERROR")
    trials[1] = (*trials[1][:4], "RUNNING")
    write_experiment(tmp_path, "exp", trials, dataset="synth")
    loaded = load_search("exp", storage=tmp_path, source="tune")
    frame = loaded.frame
    assert len(frame) == len(trials) - 2
    info = loaded.searches[0]
    assert (info.finished, info.errored, info.unfinished, info.task) == (len(trials) - 2, 1, 1, "binary")
    assert set(frame["dataset"]) == {"synth"} and set(frame["outcome"]) == {"completed"}
    assert set(frame["lr"]) <= {1e-3, 1e-4}  # the configured lr, not the last epoch's
    assert (frame["final_lr"] == frame["lr"] * 0.25).all()
    assert "time_this_iter_s" not in frame and "training_iteration" not in frame
    history = loaded.history(frame.iloc[0])
    assert list(history.index) == [1, 2, 3] and history["gap_acc"].iloc[-1] == pytest.approx(0.15)
    assert "1 errored and 1 unfinished" in loaded.notes[0]


def test_an_experiment_with_no_finished_trials_is_a_clear_error(tmp_path):
    trials = [
        (*t[:4], "RUNNING")
        for t in strategy_study(np.random.default_rng(0), seeds=(0,), strategies={"ft": 1.0})
    ]
    write_experiment(tmp_path, "empty", trials, dataset="synth")
    with pytest.raises(ConfigError, match="'empty' has no finished trials yet .*run or resume its search"):
        load_search("empty", storage=tmp_path, source="tune")
    with pytest.raises(ConfigError, match="no Tune experiment folder"):
        load_search("absent", storage=tmp_path, source="tune")


@pytest.fixture(scope="module")
def study_report(study_storage, module_tmp_factory):
    from analysis.report import AnalysisOptions, build_report

    out = module_tmp_factory.mktemp("report")
    report = build_report(
        ["study-a", "study-b"],
        storage=study_storage,
        out=out,
        source="tune",
        options=AnalysisOptions(compare=["strategy=ft,lp,lp_ft"], refits=49, resamples=500),
    )
    return report, out


def test_every_section_of_the_offline_report_is_filled(study_report):
    report, out = study_report
    assert report.problems == []
    # no confirmation runs: every section but the overview is exploratory
    assert [(s.title, s.status) for s in report.sections] == [
        ("Overview", "ok"),
        ("Mixed model (exploratory)", "ok"),
        ("Does each factor matter? (exploratory)", "ok"),
        ("DeLong comparisons (exploratory)", "ok"),
        ("Seeds and test cases (exploratory)", "ok"),
        ("Fine-tuning strategies (exploratory)", "ok"),
        ("Effect plots (exploratory)", "ok"),
        ("Learning curves and overfitting (exploratory)", "ok"),
        ("Sensitivity to stopped trials (exploratory)", "not applicable"),  # every trial ran its budget
        ("What is optimistic (exploratory)", "ok"),
        ("Tuning curves (exploratory)", "ok"),
        ("Optuna studies (exploratory)", "not applicable"),  # crafted trials: no search wrote an Optuna study
        ("Hyperparameter importance (exploratory)", "ok"),
        ("Ensembles", "not applicable"),  # these crafted trials store no validation scores to choose k by
        ("Cost", "not applicable"),  # crafted trials record no cost metrics
    ]
    for png in (
        "roc_curves.png",
        "change_vs_ft_heatmap.png",
        "test_auc_by_lr.png",
        "learning_curves.png",
        "learning_curves_by_strategy.png",
        "tuning_curves.png",
        "importance.png",
    ):
        assert (out / png).stat().st_size > 5000, png


def test_offline_report_numbers(study_report):
    _, out = study_report
    model = pd.read_csv(out / "mixed_model.csv").set_index("term")
    # lp_ft beats ft and lp trails it, on both data sets, as the study was built
    assert model.loc["C(strategy)[T.lp]", "estimate"] < 0 < model.loc["C(strategy)[T.lp_ft]", "estimate"]
    variances = pd.read_csv(out / "mixed_model_variances.csv")
    # crossed: configurations (nested in the two data sets, three seeds each) and data sets
    assert list(variances["name"]) == ["config_id", "dataset", "Residual"]
    lrt = pd.read_csv(out / "likelihood_ratio_tests.csv").set_index("factor")
    assert lrt.loc["strategy", "p"] < 1e-4
    delong = pd.read_csv(out / "delong.csv")
    assert len(delong) == 4 and set(delong["dataset"]) == {"synth_a", "synth_b"}
    assert set(delong["reference"]) == {"ft"} and set(delong["level"]) == {"lp", "lp_ft"}
    assert np.allclose(delong["p_holm"], multipletests(delong["p_value"], method="holm")[1])
    wins = pd.read_csv(out / "wins_over_ft.csv").set_index("strategy")
    change = pd.read_csv(out / "change_vs_ft.csv")
    clear = change[(change["change_pct"] > 0.1) & (change["diff_ci_low"] > 0)].groupby("strategy").size()
    assert wins.loc["lp_ft", "Total"] == clear.get("lp_ft", 0) and wins.loc["lp", "Total"] == 0
    assert (change.loc[change["strategy"] == "lp", "diff_ci_high"] < 0).all()  # lp clearly trails FT
    best = pd.read_csv(out / "best_per_dataset.csv")
    assert list(best["strategy"]) == ["lp_ft", "lp_ft"] and list(best["backbone"]) == ["densenet121"] * 2
    tables = sorted(p.name for p in out.glob("strategy_table_*.csv"))
    assert tables == ["strategy_table_1_synth_a.csv", "strategy_table_2_synth_b.csv"]
    gaps = pd.read_csv(out / "overfitting_gaps_by_strategy.csv")
    assert np.allclose(gaps["final gap_acc"], 0.15) and np.allclose(gaps["final gap_loss"], 0.25)
    importance = pd.read_csv(out / "importance.csv")
    assert importance.iloc[0]["param"] == "strategy"


def test_report_html_is_self_contained_and_the_markdown_its_twin(study_report):
    report, out = study_report
    text_md = (out / "report.md").read_text()
    text_html = (out / "report.html").read_text()
    assert "src='data:image/png;base64," in text_html
    assert not re.search(r"src=['\"](?!data:)", text_html)  # no external file
    for section in report.sections:
        assert section.title in text_md and section.question in text_md
    # the question each table answers, written above it
    assert re.search(
        r"\*\*How often does each strategy beat FT by more than 0.1% with the 95% interval of the difference above "
        r"0 \(test_auc\)\?\*\*\n\n\|", text_md
    )
    assert (
        "<p class='q'>How often does each strategy beat FT by more than 0.1% with the 95% interval of the "
        "difference above 0 (test_auc)?</p><table>"
        in text_html
    )
    assert "Reference levels" in text_md and "C(strategy): `ft`" in text_md


def test_bad_input_gives_clear_messages_and_the_rest_of_the_report(study_storage, tmp_path, capsys):
    from analysis.cli import main

    code = main(
        [
            "--experiment",
            "study-a",
            "--storage",
            str(study_storage),
            "--offline",
            "--out",
            str(tmp_path),
            "--formula",
            "test_auc ~ C(strategy) + C(heads)",
            "--compare",
            "strategy=ft,g_lf",
            "--refits",
            "0",
            "--resamples",
            "200",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "names column 'heads'" in err and "did you mean 'head'" in err
    assert "level 'g_lf' of strategy has no finished trial" in err
    text = (tmp_path / "report.md").read_text()
    assert "Not fitted: formula names column 'heads'" in text
    assert "Not run: the mixed model above was not fitted" in text
    for still in ("strategy_table_1_synth_a.csv", "importance.png", "learning_curves.png"):
        assert (tmp_path / still).is_file()


def test_missing_test_scores_are_named_and_the_comparison_uses_the_next_best(tmp_path):
    from analysis.report import AnalysisOptions, build_report

    rng = np.random.default_rng(3)
    trials = strategy_study(rng, seeds=(0, 1), strategies={"ft": 1.0, "lp": 0.2})
    best_ft = max((t for t in trials if t[1]["strategy"] == "ft"), key=lambda t: t[2][-1]["best_val_auc"])
    trials = [(*t[:3], None, t[4]) if t[0] == best_ft[0] else t for t in trials]
    write_experiment(tmp_path, "gaps", trials, dataset="synth")
    report = build_report(
        "gaps",
        storage=tmp_path,
        out=tmp_path / "out",
        source="tune",
        options=AnalysisOptions(compare=["strategy=ft,lp"], refits=0, resamples=200),
    )
    text = report.markdown_path.read_text()
    assert "1 trial(s) have no per-sample test scores" in text
    assert "have no test scores; the next best" in text
    assert next(s for s in report.sections if s.title.startswith("DeLong comparisons")).status == "ok"


def test_medtune_analyze_offline_cli(study_storage, tmp_path, capsys):
    from tuner.cli import main

    code = main(
        [
            "analyze",
            "--experiment",
            "study-b",
            "--storage",
            str(study_storage),
            "--offline",
            "--out",
            str(tmp_path),
            "--random",
            "seed",
            "--logit",
            "--compare",
            "backbone",
            "--compare-mode",
            "pooled",
            "--alternative",
            "greater",
            "--refits",
            "0",
            "--resamples",
            "200",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "the report was not logged to MLflow" in capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    assert "logit_test_auc ~" in text and "one-sided (A > reference)" in text
    delong = pd.read_csv(tmp_path / "delong.csv")
    assert set(delong["factor"]) == {"backbone"} and (delong["trials_a"].str.count(r" \+ ") == 2).all()


def test_a_section_that_crashes_is_contained_and_logged(study_storage, tmp_path, monkeypatch):
    from analysis.report import AnalysisOptions, build_report
    from analysis.sections import importance as importance_section

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(importance_section, "param_importances", broken)
    report = build_report("study-a", storage=study_storage, out=tmp_path, source="tune",
                          options=AnalysisOptions(refits=0, resamples=200))
    statuses = {s.title: s.status for s in report.sections}
    assert statuses.pop("Hyperparameter importance (exploratory)") == "failed"
    assert statuses.pop("Sensitivity to stopped trials (exploratory)") == "not applicable"
    assert statuses.pop("Ensembles") == "not applicable"  # crafted trials: no validation scores
    assert statuses.pop("Optuna studies (exploratory)") == "not applicable"  # nor an Optuna study
    assert statuses.pop("Cost") == "not applicable"  # nor cost metrics
    assert set(statuses.values()) == {"ok"}
    assert report.problems == ["Hyperparameter importance: RuntimeError: boom (traceback in errors.log)"]
    assert "RuntimeError: boom" in (tmp_path / "errors.log").read_text()
    assert "This section could not be computed (RuntimeError: boom)" in (tmp_path / "report.md").read_text()


def test_multilabel_scores_are_compared_label_by_label():
    rng = np.random.default_rng(9)
    n, k = 80, 3
    labels = rng.integers(0, 2, (n, k))
    scores, rows = {}, []
    for level, strength in (("a", 1.5), ("b", 0.5)):
        frame = pd.DataFrame({"index": np.arange(n)})
        for j in range(k):
            frame[f"label_{j}"] = labels[:, j]
        for j in range(k):
            frame[f"score_{j}"] = _sigmoid(strength * (2 * labels[:, j] - 1) + rng.normal(0, 1, n))
        scores[level] = frame
        rows.append(
            {"dataset": "d", "head": level, "run_name": level, "trial_id": level, "best_val_auc": strength}
        )
    result = cmp.compare(
        pd.DataFrame(rows), [cmp.parse_compare("head=a,b")], lambda r: scores[r["run_name"]], params=["head"]
    )
    assert list(result.table["class"]) == ["0", "1", "2"] and result.table["paired"].all()
    for j in range(k):
        expected = delong_test(labels[:, j], scores["b"][f"score_{j}"], scores["a"][f"score_{j}"])
        assert result.table.iloc[j]["z"] == expected.z


def test_an_empty_experiment_among_others_is_noted_not_fatal(tmp_path):
    rng = np.random.default_rng(12)
    write_experiment(tmp_path, "done", strategy_study(rng, seeds=(0,), strategies={"ft": 1.0}), dataset="a")
    running = [(*t[:4], "PENDING") for t in strategy_study(rng, seeds=(0,), strategies={"ft": 1.0})]
    write_experiment(tmp_path, "pending", running, dataset="b")
    loaded = load_search(["done", "pending"], storage=tmp_path, source="tune")
    assert set(loaded.frame["experiment"]) == {"done"}
    assert "pending: no finished trials; it adds nothing to this analysis." in loaded.notes


def test_an_aliased_term_is_left_out_of_both_fits_of_a_likelihood_ratio_test():
    """On confirmation runs each head was confirmed at its own lr: log10_lr is determined by the heads.
    The test of head must then compare the model with and without its two coefficients, not trade them
    for a log10_lr coefficient that only the reduced model could estimate."""
    frame = _search_frame(np.random.default_rng(9), datasets=("only",))
    frame["log10_lr"] = frame["head"].map({"conv": -3.0, "linear": -2.0, "convskip": -2.5})
    plan = plan_model(frame, "test_auc ~ C(head) + log10_lr", random=["seed"])
    table, notes = likelihood_ratio_tests(plan)
    table = table.set_index("factor")
    assert table.loc["head", "df"] == 2 and table.loc["head", "p"] < 1e-6
    assert table.loc["log10_lr", "df"] == 0 and np.isnan(table.loc["log10_lr", "p"])
    assert any("`log10_lr` cannot be tested" in note for note in notes)


def test_a_reference_level_without_trials_falls_back_with_a_note():
    """A study's formula names FT as the reference; a confirmation stage that chose no FT configuration
    must still be modelled, against the first level present, and say so."""
    frame = _search_frame(np.random.default_rng(10))
    plan = plan_model(frame, "test_auc ~ C(head, Treatment('mlp')) + log10_lr", random=["seed"])
    assert plan.formula == "test_auc ~ C(head) + log10_lr"
    assert any("reference level `mlp` of `head` has no analyzed trial" in note for note in plan.notes)
    kept = plan_model(frame, "test_auc ~ C(head, Treatment('linear'))", random=["seed"])
    assert kept.formula == "test_auc ~ C(head, Treatment('linear'))"

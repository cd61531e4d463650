"""Ensembles of finished trials, chosen on validation and scored on test.

Two kinds, both the mean of their members' per-case class probabilities at each member's
best-validation epoch (the scores every trial stores, ``tuner.schema.TEST_SCORES_FILE``):

- ``top_k_ensemble``: the k best trials of a search stage by the validation column that ranks trials
  (``best_score``, else ``best_val_auc``; ``analysis.loading.selection_column``). ``k="auto"`` chooses k
  on validation too: the k (1 .. ``max_k``) whose ensemble of *validation* scores
  (``tuner.schema.VAL_SCORES_FILE``, stored beside the test scores) has the highest validation AUC, the
  smallest such k on a tie. The test split never enters a choice;
- ``seed_ensemble``: the confirmed seeds (and folds) of one configuration of the confirmation stage, by
  default the configuration with the best mean validation value over its completed runs.

Each ensemble is scored on the test cases with its AUC and DeLong CI, and compared (paired DeLong,
``analysis.delong``) with the single best trial by validation among the trials it was drawn from: what
averaging buys over the model one would otherwise have taken. Members must have scored the same cases
(same case index, same labels); anything else is refused, since averaging the probabilities of
different images means nothing. Multi-class and multi-label tasks are scored one-vs-rest per class, and
their figure is the mean of those AUCs; a binary task's figure is the AUC of class 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.compared_models import arrays, class_problems, same_cases
from analysis.delong import auc_ci, delong_test
from analysis.loading import LoadedSearch, load_test_scores, selection_column
from tuner.errors import ConfigError
from tuner.schema import COMPLETED, CONFIRM, EXPLORE, STAGES, TEST_SCORES_FILE, VAL_SCORES_FILE

__all__ = ["AUTO", "DEFAULT_MAX_K", "Ensemble", "Member", "parse_k", "seed_ensemble", "top_k_ensemble"]

AUTO = "auto"
DEFAULT_MAX_K = 10


@dataclass(frozen=True)
class Member:
    """One trial of an ensemble: who it is, its validation value, and where its files are."""

    run_name: str
    trial_id: str
    experiment: str
    stage: str
    config_id: str
    validation: float
    trial_dir: str | None
    test_scores: str

    @classmethod
    def of(cls, row: pd.Series, select: str) -> Member:
        """The member a trials-frame row describes."""
        trial_dir = row.get("trial_dir")
        return cls(str(row["run_name"]), str(row["trial_id"]), str(row["experiment"]), str(row["stage"]),
                   str(row.get("config_id")), float(row[select]),
                   trial_dir if isinstance(trial_dir, str) else None, str(row["test_scores"]))


@dataclass
class Ensemble:
    """An ensemble and its test figures: the members (best by validation first), how k was chosen
    (``k_rule``: ``given``, ``validation`` or ``seeds``) with the validation AUC of each k tried
    (``val_curve``), the test cases and the mean scores, the single best trial it is compared with
    (``reference``), and the per-class table (``results``: the ensemble's AUC and DeLong CI, the
    reference's, their difference with its CI, z and p)."""

    rule: str
    select: str
    members: list[Member]
    k_rule: str
    labels: np.ndarray
    index: np.ndarray
    scores: np.ndarray
    multilabel: bool
    reference: Member
    reference_scores: np.ndarray
    results: pd.DataFrame
    val_curve: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """How many trials it averages."""
        return len(self.members)

    @property
    def test_auc(self) -> float:
        """Its test figure: the AUC of class 1 (binary), else the mean one-vs-rest AUC."""
        return float(self.results["auc"].mean())

    @property
    def reference_auc(self) -> float:
        """The same figure for the single best trial by validation."""
        return float(self.results["reference_auc"].mean())

    @property
    def task(self) -> str:
        """binary, multiclass or multilabel, from the scores' shape."""
        return "multilabel" if self.multilabel else "binary" if self.scores.shape[1] == 2 else "multiclass"

    def summary(self) -> dict[str, Any]:
        """One row for a table: the rule, k and how it was chosen, the two figures and their difference."""
        row = self.results.iloc[0] if len(self.results) == 1 else None
        one = {} if row is None else {
            "ci_low": row["ci_low"], "ci_high": row["ci_high"], "difference_ci_low": row["difference_ci_low"],
            "difference_ci_high": row["difference_ci_high"], "p_value": row["p_value"]}
        return {"experiment": self.members[0].experiment, "rule": self.rule, "k": self.k, "k_chosen_by": self.k_rule,
                "members": " + ".join(m.run_name for m in self.members), "test_auc": self.test_auc,
                "reference": self.reference.run_name, "reference_test_auc": self.reference_auc,
                "difference": self.test_auc - self.reference_auc, **one}

    def member_frame(self) -> pd.DataFrame:
        """The members as a table, best by validation first."""
        return pd.DataFrame([{"rank": i + 1, "run_name": m.run_name, "trial_id": m.trial_id, "stage": m.stage,
                              "config_id": m.config_id, self.select: m.validation}
                             for i, m in enumerate(self.members)])


def parse_k(value: str | int) -> int | str:
    """``auto`` or a whole number >= 1 (as the command line gives it)."""
    if value == AUTO:
        return AUTO
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(value).strip() not in (str(k), f"+{k}"):
        raise ConfigError(f"k={value!r} is not allowed: give a whole number of trials >= 1, or 'auto' to choose k "
                          "on validation.")
    return k


def top_k_ensemble(loaded: LoadedSearch, k: int | str = AUTO, *, stage: str = EXPLORE,
                   max_k: int = DEFAULT_MAX_K, experiment: str | None = None) -> Ensemble:
    """The mean of the k best trials of ``stage`` by validation (the module docstring), scored on test."""
    k = parse_k(k)
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r} is not one of {', '.join(STAGES)}.")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise ConfigError(f"max_k={max_k!r} is not allowed: give a whole number >= 1 (the largest k 'auto' tries).")
    frame, select = _pool(loaded, experiment)
    ranked = _ranked(frame[frame["stage"] == stage], select)
    if ranked.empty:
        raise ConfigError(f"{_name(frame)} has no finished {stage} trial with test scores and a {select} value: "
                          "nothing to ensemble.")
    if k != AUTO and k > len(ranked):
        raise ConfigError(f"k={k} is more than the {len(ranked)} {stage} trials with test scores; give k <= "
                          f"{len(ranked)}.")
    curve = None
    if k == AUTO:
        k, curve = _choose_k(loaded, ranked, min(max_k, len(ranked)), select)
    chosen = ranked.head(k)
    return _scored(loaded, "top_k", select, chosen, ranked.iloc[0], "given" if curve is None else "validation", curve)


def seed_ensemble(loaded: LoadedSearch, config_id: str | None = None, *, experiment: str | None = None) -> Ensemble:
    """The mean of the completed confirmation runs (seeds, folds) of one configuration: ``config_id``,
    else the one with the best mean validation value; compared with the best single confirmation run
    by validation."""
    frame, select = _pool(loaded, experiment)
    confirmed = _ranked(frame[(frame["stage"] == CONFIRM) & (frame["outcome"] == COMPLETED)], select)
    if confirmed.empty:
        raise ConfigError(f"{_name(frame)} has no completed confirmation run with test scores: run "
                          "`medtune confirm` first, or ensemble the search's trials (top k).")
    means = confirmed.groupby("config_id", sort=False)[select].mean().sort_values(ascending=False, kind="stable")
    if config_id is None:
        config_id = str(means.index[0])
    elif config_id not in means.index:
        raise ConfigError(f"config_id={config_id!r} has no completed confirmation run; confirmed configurations: "
                          f"{', '.join(map(str, means.index))}.")
    chosen = confirmed[confirmed["config_id"] == config_id]
    return _scored(loaded, "seeds", select, chosen, confirmed.iloc[0], "seeds", None)


# --------------------------------------------------------------------------------------------


def _pool(loaded: LoadedSearch, experiment: str | None) -> tuple[pd.DataFrame, str]:
    """The trials of one experiment (and its confirmation stage), and the validation column."""
    frame = loaded.frame
    names = list(dict.fromkeys(frame["experiment"]))
    if experiment is None and len(names) > 1:
        raise ConfigError(f"an ensemble is of one search; name one experiment of {', '.join(names)}.")
    if experiment is not None:
        if experiment not in names:
            raise ConfigError(f"experiment={experiment!r} has no finished trials here; loaded: {', '.join(names)}.")
        frame = frame[frame["experiment"] == experiment]
    select = selection_column(frame)
    if select is None:
        raise ConfigError(f"{_name(frame)}'s trials report neither best_score nor best_val_auc: no validation "
                          "value ranks them.")
    return frame, select


def _ranked(frame: pd.DataFrame, select: str) -> pd.DataFrame:
    """Trials with test scores and a validation value, best first (trial id breaks ties)."""
    usable = frame[frame[select].notna() & frame["test_scores"].map(lambda v: isinstance(v, str))]
    return usable.sort_values([select, "trial_id"], ascending=[False, True], kind="stable")


def _name(frame: pd.DataFrame) -> str:
    return ", ".join(dict.fromkeys(map(str, frame["experiment"]))) or "the search"


def _read(loaded: LoadedSearch, row: pd.Series, split: str) -> pd.DataFrame | None:
    """A trial's per-case scores of ``split``: the test scores through the loader; the validation
    scores from beside them (the same checkpoint folder, or the same MLflow run's artifacts)."""
    if split == "test":
        return loaded.test_scores(row)
    location = str(row["test_scores"])
    if not location.endswith(TEST_SCORES_FILE):
        return None
    sibling = location[: -len(TEST_SCORES_FILE)] + VAL_SCORES_FILE
    try:
        return pd.read_csv(sibling) if loaded.source == "tune" else load_test_scores(sibling, loaded.tracking_uri)
    except Exception:  # not stored (a trial from before validation scores were kept): the caller says so
        return None


def _aligned(loaded: LoadedSearch, rows: pd.DataFrame, split: str) -> list[pd.DataFrame]:
    """Each row's scores of ``split``, refused unless every table holds the same cases with the same labels."""
    tables = []
    for _, row in rows.iterrows():
        table = _read(loaded, row, split)
        if table is None:
            fix = ("give k yourself (e.g. --k 3): trials stored per-case validation scores only from this version on"
                   if split == "val" else "check that its files exist")
            raise ConfigError(f"trial {row['run_name']} has no per-case {split} scores, which the ensemble needs; "
                              f"{fix}.")
        if tables and not same_cases(tables[0], table):
            first = rows.iloc[0]["run_name"]
            raise ConfigError(f"trials {first} and {row['run_name']} scored different {split} cases ({len(tables[0])} "
                              f"and {len(table)} cases, or other case ids or labels): an ensemble averages the "
                              "probabilities of the same images, so ensemble only trials of one data set and split.")
        tables.append(table)
    return tables


def _mean(tables: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    labels, _, index, multilabel = arrays(tables[0])
    return labels, np.mean([arrays(t)[1] for t in tables], axis=0), index, multilabel


def _figure(labels: np.ndarray, scores: np.ndarray, multilabel: bool) -> float:
    """Class 1's AUC (binary), else the mean one-vs-rest AUC."""
    problems = class_problems(labels, multilabel, scores.shape[1])
    return float(np.mean([auc_ci(y, scores[:, k])[0] for _, k, y in problems]))


def _choose_k(loaded: LoadedSearch, ranked: pd.DataFrame, max_k: int, select: str) -> tuple[int, pd.DataFrame]:
    """The k in 1..max_k whose ensemble of validation scores has the best validation AUC (smallest on a tie)."""
    tables = _aligned(loaded, ranked.head(max_k), "val")
    labels, _, _, multilabel = arrays(tables[0])
    values = np.stack([arrays(t)[1] for t in tables])
    ks = range(1, max_k + 1)
    curve = pd.DataFrame({"k": ks, "val_auc": [_figure(labels, values[:k].mean(axis=0), multilabel) for k in ks]})
    best = int(curve.loc[curve["val_auc"].idxmax(), "k"])  # idxmax: the first (smallest k) of equal maxima
    curve["chosen"] = curve["k"] == best
    return best, curve


def _scored(loaded: LoadedSearch, rule: str, select: str, chosen: pd.DataFrame, best: pd.Series, k_rule: str,
            curve: pd.DataFrame | None) -> Ensemble:
    """The ensemble of ``chosen`` scored on test, against ``best`` (the single best trial by validation)."""
    tables = _aligned(loaded, pd.concat([chosen, best.to_frame().T]), "test")
    labels, scores, index, multilabel = _mean(tables[:-1])
    reference = arrays(tables[-1])[1]
    rows = []
    for name, k, y in class_problems(labels, multilabel, scores.shape[1]):
        result = delong_test(y, scores[:, k], reference[:, k])
        rows.append({"class": name, "auc": result.auc_a, "ci_low": result.auc_a_ci[0], "ci_high": result.auc_a_ci[1],
                     "reference_auc": result.auc_b, "reference_ci_low": result.auc_b_ci[0],
                     "reference_ci_high": result.auc_b_ci[1], "difference": result.difference,
                     "difference_ci_low": result.difference_ci[0], "difference_ci_high": result.difference_ci[1],
                     "z": result.z, "p_value": result.p_value, "n_positive": result.n_positive,
                     "n_negative": result.n_negative})
    members = [Member.of(row, select) for _, row in chosen.iterrows()]
    return Ensemble(rule, select, members, k_rule, labels, index, scores, multilabel, Member.of(best, select),
                    reference, pd.DataFrame(rows), curve)

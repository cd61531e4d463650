"""Which trials a conclusion may rest on.

The search explores: ASHA and patience stop trials on the very factors under test, TPE gives levels
unequal numbers of trials, and each configuration ran with one seed. So:

- when the study has confirmation runs (``stage = confirm``: chosen configurations re-run at full
  budget with fresh seeds), every conclusion (mixed model, DeLong, bootstrap, strategy tables, effect
  plots) rests on them, on the runs that completed their budget;
- without them, the same analyses run on the search's trials and are labelled *exploratory*; by
  default only trials that ran their whole budget enter them, because pooling a trial stopped after 3
  epochs with one that ran 30 mixes final performance, learning speed and surviving ASHA. The trials
  left out are counted in words, and the sensitivity section shows what pooling them (and pooling them
  with the budget as a covariate) would change. ``include_stopped`` pools them, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tuner.schema import COMPLETED, CONFIRM, DIVERGED, EARLY_STOPPING, EXPLORE, STOPPED_EARLY

STOPPED = {STOPPED_EARLY: "stopped by ASHA", EARLY_STOPPING: "stopped by patience", DIVERGED: "diverged"}


def is_stopped(frame: pd.DataFrame) -> pd.Series:
    """Trials that did not run their whole budget: ASHA- or patience-stopped or diverged, or (a run
    without a recorded outcome) trained fewer epochs than configured."""
    outcome = frame["outcome"] if "outcome" in frame else pd.Series(None, index=frame.index, dtype=object)
    stopped = outcome.isin(list(STOPPED))
    if "epochs" in frame:
        trained = pd.to_numeric(frame["epochs_trained"], errors="coerce")
        short = trained < pd.to_numeric(frame["epochs"], errors="coerce")
        stopped |= outcome.isna() & short
    return stopped


@dataclass(frozen=True)
class StudyFrames:
    """The trials split by stage, and the frame the conclusions rest on (``analyzed``: the completed
    confirmation runs, else the search's trials that ran their whole budget, or all of them with
    ``include_stopped``), with the words that say so (``basis``) and what was left out (``notes``)."""

    explore: pd.DataFrame
    confirm: pd.DataFrame
    analyzed: pd.DataFrame
    explore_analyzed: pd.DataFrame
    conclusive: bool
    include_stopped: bool
    basis: str
    explore_basis: str
    notes: list[str] = field(default_factory=list)


def split_stages(frame: pd.DataFrame, include_stopped: bool = False) -> StudyFrames:
    """The frames and words of the module docstring."""
    explore = frame[frame["stage"] == EXPLORE]
    confirm = frame[frame["stage"] == CONFIRM]
    notes: list[str] = []
    stopped = is_stopped(explore)
    explore_analyzed = explore if include_stopped else explore[~stopped]
    counts = ", ".join(f"{int((explore['outcome'] == o).sum())} {words}" for o, words in STOPPED.items()
                       if (explore["outcome"] == o).any())
    if include_stopped and stopped.any():
        explore_basis = (f"exploratory: {len(explore)} search trials pooled at unequal budgets ({counts}; "
                         "--include-stopped); the sensitivity section shows what that changes")
    elif stopped.any():
        explore_basis = (f"exploratory: the {len(explore_analyzed)} search trials that ran their whole budget; "
                         f"{int(stopped.sum())} stopped trials ({counts}) left out (see the sensitivity section)")
    else:
        explore_basis = f"exploratory: the search's {len(explore)} trials, each run to its whole budget"
    if explore_analyzed.empty and len(explore):
        notes.append("No search trial ran its whole budget, so the exploratory analyses have no trials; "
                     "run a confirmation stage (`medtune confirm`) or pool the stopped ones with --include-stopped.")
    if confirm.empty:
        return StudyFrames(explore, confirm, explore_analyzed, explore_analyzed, False, include_stopped,
                           explore_basis, explore_basis, notes)
    done = confirm[confirm["outcome"] == COMPLETED]
    if len(done) < len(confirm):
        short = confirm[confirm["outcome"] != COMPLETED]
        notes.append(f"{len(short)} confirmation run(s) did not complete their budget ("
                     + ", ".join(f"{r.run_name}: {r.outcome}" for r in short.itertuples()) + "): left out, so "
                     "their configurations' replicate sets are incomplete.")
    notes += _confirm_balance(done)
    configs = done.groupby(["dataset", "config_id"]).ngroups
    basis = (f"confirmatory: {len(done)} confirmation runs of {configs} configuration(s) at full budget "
             f"({_replicates(done)})")
    return StudyFrames(explore, confirm, done, explore_analyzed, True, include_stopped, basis, explore_basis, notes)


def _replicates(done: pd.DataFrame) -> str:
    sizes = done.groupby(["dataset", "config_id"]).size()
    if sizes.empty:
        return "no replicate"
    if sizes.nunique() == 1:
        return f"{int(sizes.iloc[0])} replicates each"
    return f"{int(sizes.min())} to {int(sizes.max())} replicates per configuration"


def _confirm_balance(done: pd.DataFrame) -> list[str]:
    """Notes when the confirmation runs are not one balanced design: unequal replicate counts or
    unequal budgets (epochs trained) across configurations of a data set."""
    notes = []
    for dataset, part in done.groupby("dataset", sort=True):
        sizes = part.groupby("config_id").size()
        if sizes.nunique() > 1:
            notes.append(f"{dataset}: the confirmed configurations have unequal replicate counts "
                         f"({sizes.min()} to {sizes.max()}): tables flag the incomplete ones.")
        epochs = part["epochs_trained"].unique()
        if len(epochs) > 1:
            notes.append(f"{dataset}: confirmation runs trained different numbers of epochs "
                         f"({', '.join(map(str, sorted(epochs)))}): their budgets differ, which the comparisons "
                         "pool.")
    return notes

"""What a finished search amounts to (``SearchOutcome``): trials by how they ended, the trials each arm
got, the best one (and its logged model), and where a person sees its runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.arms import ArmPlan
from tuner.schema import COMPLETED
from tuner.tracking import runs_page, trial_outcome


@dataclass
class SearchOutcome:
    """The counts and the best trial a search ends with, and where its results are, for the CLI's
    summary and for tests and benchmarks that run searches."""

    experiment: str
    experiment_dir: Path
    tracking_uri: str
    parent_run_id: str
    trials: int
    completed: int
    stopped_early: int  # by ASHA or by the trial's own early stopping (patience)
    errored: int
    best: dict[str, Any] | None
    arm_factors: tuple[str, ...] = ()
    trials_per_arm: dict[str, int] = field(default_factory=dict)  # arm label -> trials it ran (all arms listed)
    experiment_id: str = ""
    best_trial_dir: Path | None = None  # the best trial's Tune folder (its checkpoint holds its best epoch's weights)
    model_uri: str | None = None  # the best trial's model, once logged on the parent run (``tuner.model_export``)
    registered: str | None = None  # the registered model's name and version, once registered

    def runs_lines(self) -> list[str]:
        """Where to see the runs: the URL of the experiment's runs page (after the command that serves
        it, for a local store)."""
        url, serve = runs_page(self.tracking_uri, self.experiment_id)
        return ([f"  view them:   {serve}", f"  then open:   {url}"] if serve else [f"  runs page:   {url}"])

    def arms_line(self) -> str:
        """The share each arm got, in words (empty when the space declares no arms)."""
        if not self.arm_factors:
            return ""
        shares = "; ".join(f"{label}: {count}" for label, count in self.trials_per_arm.items())
        return f"trials per arm ({' x '.join(self.arm_factors)}): {shares}"


def summarise(results: Any, name: str, experiment_dir: Path, tracking_uri: str, parent_run_id: str,
              plan: ArmPlan, experiment_id: str) -> SearchOutcome:
    """The outcome of Tune's ``ResultGrid``: each trial counted once by how it ended, the trials each
    arm cell of ``plan`` ran, and the best by its own best selection score (``best_score``), with its
    test metrics."""
    completed = stopped = errored = 0
    for result in results:
        if result.error is not None:
            errored += 1
        elif trial_outcome(result.config, result.metrics or {}) == COMPLETED:
            completed += 1
        else:
            stopped += 1
    best, trial_dir = None, None
    if errored < len(results):
        top = best_result(results)
        best = {"config": top.config, "trial_id": top.metrics.get("trial_id"),
                **{k: top.metrics.get(k) for k in ("best_score", "best_val_auc", "test_auc", "test_acc")}}
        trial_dir = Path(top.path)
    return SearchOutcome(name, experiment_dir, tracking_uri, parent_run_id, len(results), completed, stopped,
                         errored, best, plan.factors, plan.trials_per_arm(result.config for result in results),
                         experiment_id, best_trial_dir=trial_dir)


def best_result(results: Any) -> Any:
    """The trial validation ranks first (``best_score``) among those that ran their full budget, when
    any did; a trial ASHA stopped early was judged on fewer epochs, and may hold no best-epoch weights."""
    full = [r for r in results if ran_full_budget(r)]
    if not full:
        return results.get_best_result(metric="best_score", mode="max", scope="last")
    return max(full, key=lambda r: r.metrics["best_score"])


def ran_full_budget(result: Any) -> bool:
    """A Tune ``Result`` that ran its whole budget without error, with a finite best validation score:
    the trials (and replicates) a best model may be chosen among."""
    metrics = result.metrics or {}
    return (result.error is None and result.config is not None and math.isfinite(metrics.get("best_score", math.nan))
            and trial_outcome(result.config, metrics) == COMPLETED)

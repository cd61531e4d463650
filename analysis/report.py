"""The report of one search: the statistics a paper needs, as Markdown, CSV tables and PNG plots,
written to a folder and logged to the search's parent MLflow run.

Each section states the question it answers. Sections that the design cannot support (no test scores,
a factor that never varies) say so in words instead of failing the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.delong import delong_test
from analysis.loading import load_test_scores, load_trials, resolve_tracking_uri
from analysis.mixed_model import fit_mixed_model
from analysis.plots import learning_curves, metric_by_factor
from search_spaces import get_space
from tuner.errors import ConfigError

DEFAULT_ANALYSIS = {"formula": "test_auc ~ C(head) + log10_lr", "groups": "seed", "x": "lr"}


@dataclass
class Report:
    folder: Path
    sections: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def add(self, title: str, question: str, body: str) -> None:
        self.sections.append(f"## {title}\n\n*{question}*\n\n{body}\n")

    def table(self, frame: pd.DataFrame, name: str, columns: list[str] | None = None) -> str:
        """Writes the whole table as CSV; shows ``columns`` of it (default all) in the Markdown."""
        path = self.folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        shown = frame[columns] if columns else frame
        return shown.to_markdown(index=False, floatfmt=".4g") + f"\n\n(all columns: `{path.name}`)"


def write_report(
    experiment: str, tracking_uri: str | None = None, storage: str = "results", out: str | Path | None = None
) -> Path:
    """Analyse every finished trial of ``experiment``; returns the Markdown file's path."""
    uri = resolve_tracking_uri(tracking_uri, storage)
    trials = load_trials(experiment, uri)
    if trials.empty or "test_auc" not in trials:
        raise ConfigError(
            f"experiment {experiment!r} has no finished trials with test metrics yet; run or "
            "resume its search first."
        )
    client = MlflowClient(uri)
    parent_id = trials["parent_run_id"].dropna().iloc[0]
    parent = client.get_run(parent_id)
    space_name = parent.data.params.get("space")
    analysis = (
        {**DEFAULT_ANALYSIS, **getattr(get_space(space_name), "ANALYSIS", {})}
        if space_name
        else DEFAULT_ANALYSIS
    )
    folder = Path(out) if out else Path(storage).expanduser().resolve() / experiment / "report"
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(folder)
    trials = trials[np.isfinite(trials["test_auc"].astype(float))]
    report.table(trials.drop(columns=["test_scores"], errors="ignore"), "trials")

    _overview(report, trials, parent.data.params)
    _mixed_model(report, trials, analysis)
    _delong(report, trials, uri)
    _plots(report, trials, analysis, client)

    markdown = folder / "report.md"
    markdown.write_text(f"# medtune report: {experiment}\n\n" + "\n".join(report.sections))
    client.log_artifacts(parent_id, str(folder), artifact_path="report")
    return markdown


def _overview(report: Report, trials: pd.DataFrame, params: dict[str, str]) -> None:
    counts = trials["outcome"].value_counts().to_dict()
    best = trials.loc[trials["best_val_auc"].idxmax()]
    body = (
        f"Search space `{params.get('space')}` on `{params.get('dataset')}`, searcher "
        f"`{params.get('search')}` with ASHA. {len(trials)} finished trials "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())}). Test metrics are those of each trial's "
        "best-validation-AUC epoch, so trials that ASHA stopped early are scored too (on fewer epochs).\n\n"
        f"Best trial by validation AUC: `{best['run_name']}`: val AUC {best['best_val_auc']:.4f}, "
        f"test AUC {best['test_auc']:.4f}, test accuracy {best['test_acc']:.4f}."
    )
    report.add("Overview", "What was searched, and what won on validation?", body)


def _mixed_model(report: Report, trials: pd.DataFrame, analysis: dict) -> None:
    groups = analysis.get("groups") if analysis.get("groups") in trials else None
    notes: list[str] = []
    try:
        fit = fit_mixed_model(trials, analysis["formula"], groups=groups)
    except ValueError as error:
        report.add(
            "Mixed model", "Which factors change test AUC, holding the others fixed?", f"Not fitted: {error}"
        )
        return
    notes += fit.notes
    references = ", ".join(f"{term}: `{level}`" for term, level in fit.reference_levels.items())
    body = (
        f"Formula `{fit.formula}`"
        + (f", random intercept per `{groups}`" if groups else "")
        + f", {'REML' if fit.reml else 'ML'}, {fit.n_obs} trials."
        + (f" Reference levels: {references}." if references else "")
        + "\n\n"
        + report.table(fit.table, "mixed_model")
        + "\n\n"
        + report.table(fit.random_effects, "mixed_model_variances")
        + "".join(f"\n\n> Note: {note}" for note in notes)
    )
    report.add("Mixed model", "Which factors change test AUC, holding the others fixed?", body)


def _delong(report: Report, trials: pd.DataFrame, uri: str) -> None:
    question = "Is the best trial of each head significantly better or worse than the overall best?"
    scored = trials[trials["test_scores"].notna()]
    if scored.empty or "head" not in scored:
        report.add("DeLong tests", question, "Not run: no trial has per-sample test scores.")
        return
    best = scored.loc[scored["best_val_auc"].idxmax()]
    best_scores = load_test_scores(best["test_scores"], uri)
    if best_scores.filter(like="score_").shape[1] != 2:
        report.add("DeLong tests", question, "Not run: DeLong's test compares binary classifiers.")
        return
    rows = []
    for head, group in scored.groupby("head"):
        challenger = group.loc[group["best_val_auc"].idxmax()]
        scores = load_test_scores(challenger["test_scores"], uri)
        result = delong_test(best_scores["label"], scores["score_1"], best_scores["score_1"])
        rows.append(
            {
                "head": head,
                "trial": challenger["run_name"],
                "overall_best": best["run_name"],
                **result.as_dict(),
            }
        )
    table = pd.DataFrame(rows)
    shown = [
        "head",
        "trial",
        "auc_a",
        "auc_b",
        "difference",
        "difference_ci_low",
        "difference_ci_high",
        "z",
        "p_value",
    ]
    report.add(
        "DeLong tests",
        question,
        "Paired DeLong tests (Sun & Xu) on the shared test split: each head's best trial "
        f"(by validation AUC) as A against the overall best (`{best['run_name']}`) as B; "
        "`difference` = AUC_A - AUC_B, higher score = positive class (label 1).\n\n"
        + report.table(table, "delong", columns=shown),
    )


def _plots(report: Report, trials: pd.DataFrame, analysis: dict, client: MlflowClient) -> None:
    x = analysis.get("x", "lr")
    body = []
    if x in trials and trials[x].notna().any():
        path = metric_by_factor(trials, x, report.folder / f"test_auc_by_{x}.png")
        report.files.append(path)
        body.append(f"![test AUC by {x}]({path.name})")
    top = trials.nlargest(5, "best_val_auc")
    histories = {
        row["run_name"]: pd.DataFrame(
            [{"step": m.step, "value": m.value} for m in client.get_metric_history(row["run_id"], "val_auc")]
        )
        for _, row in top.iterrows()
    }
    path = learning_curves(histories, report.folder / "learning_curves.png")
    report.files.append(path)
    body.append(f"![validation AUC per epoch]({path.name})")
    report.add(
        "Plots", f"How does test AUC move with {x}, and how did the best trials learn?", "\n\n".join(body)
    )

"""Ensembles: does averaging the probabilities of the k best trials by validation (k chosen on
validation), or of a configuration's confirmed seeds, beat the single model validation would choose, on
the same test images? (``analysis.ensemble``; ``medtune ensemble`` takes the same model away.)"""

from __future__ import annotations

import pandas as pd

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from analysis.ensemble import AUTO, DEFAULT_MAX_K, Ensemble, seed_ensemble, top_k_ensemble
from tuner.errors import ConfigError

SHOWN = {"experiment": "experiment", "rule": "ensemble", "k": "k", "k_chosen_by": "k chosen by",
         "test_auc": "test AUC", "ci_low": "CI low", "ci_high": "CI high", "reference": "best single trial",
         "reference_test_auc": "its test AUC", "difference": "difference", "difference_ci_low": "diff CI low",
         "difference_ci_high": "diff CI high", "p_value": "p"}


def ensembles(ctx: ReportContext, notes: list[str]) -> list[Ensemble]:
    """Per search: the top-k ensemble of its trials (k on validation), and the seed ensemble of its
    validation-best confirmed configuration when it has a confirmation stage; what cannot be built is
    a note."""
    built = []
    for info in ctx.loaded.searches:
        if info.finished == 0:
            continue
        makers = [("top-k", lambda name=info.experiment: top_k_ensemble(ctx.loaded, AUTO, experiment=name))]
        if not ctx.study.confirm.empty and (ctx.study.confirm["experiment"] == info.experiment).any():
            makers.append(("confirmed seeds", lambda name=info.experiment: seed_ensemble(ctx.loaded, experiment=name)))
        for what, make in makers:
            try:
                built.append(make())
            except ConfigError as error:
                notes.append(f"{info.experiment}: no {what} ensemble ({error})")
    return built


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The ensembles' test AUCs with DeLong CIs against the best single trial, their members, and the
    validation AUC of each k tried."""
    notes: list[str] = []
    built = ensembles(ctx, notes)
    for note in notes:
        section.note(note)
    if not built:
        section.skip("No ensemble could be built (see the notes).")
        return
    section.text(
        "Each ensemble averages its members' class probabilities case by case, each member at its best-validation "
        f"epoch. *top_k*: the k best search trials by `{built[0].select}` (trials that ASHA or patience stopped "
        "included, each ranked by its best validation score at the budget it reached), k from 1 to "
        f"{DEFAULT_MAX_K} chosen by the validation AUC of the ensemble of their validation scores (the smallest k on "
        "a tie). *seeds*: the completed "
        "confirmation runs of the configuration with the best mean validation value. The test split chooses "
        "nothing; it only scores. Each is compared (paired DeLong) with the single best trial by validation among "
        "the trials it was drawn from; difference = ensemble - that trial. DeLong holds the trained models fixed. "
        "`medtune ensemble` writes the same ensemble as a model to take away."
    )
    summary = pd.DataFrame([e.summary() for e in built])
    report.table(section, summary, "ensemble", "Does the ensemble beat the single model validation would choose, "
                 "on the same test images?", shown=summary[[c for c in SHOWN if c in summary]].rename(columns=SHOWN))
    members = pd.concat([e.member_frame().assign(experiment=e.members[0].experiment, ensemble=e.rule)
                         for e in built], ignore_index=True)
    report.table(section, members, "ensemble_members", "Which trials does each ensemble average?")
    curves = [e.val_curve.assign(experiment=e.members[0].experiment) for e in built if e.val_curve is not None]
    if curves:
        report.table(section, pd.concat(curves, ignore_index=True), "ensemble_k",
                     "How does the ensemble's validation AUC change with k (the chosen k marked)?")
    per_class = [e.results.assign(experiment=e.members[0].experiment, ensemble=e.rule) for e in built
                 if len(e.results) > 1]
    if per_class:
        report.table(section, pd.concat(per_class, ignore_index=True), "ensemble_classes",
                     "What is each class's one-vs-rest test AUC, ensemble against the best single trial?")


UNIT = SectionUnit("Ensembles", lambda ctx: "Does an ensemble chosen on validation beat the single best model on "
                   "the same test images?", "overview", build,
                   lambda ctx: "the trials of each search (and its confirmation runs), chosen on validation; the "
                   "test split only scores")

"""Optuna's own plots of the search's studies (``optuna.visualization.matplotlib``), read from the
study storage the search wrote (``<storage>/optuna.db``, what optuna-dashboard opens): the optimization
history of every arm's study, and per study its intermediate values (each trial's per-epoch validation
metric, where ASHA's cuts show as curves that stop), parallel coordinates and slice plots."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from analysis.context import ReportContext, SectionUnit, all_search_trials  # noqa: E402
from analysis.document import Report, Section  # noqa: E402

# per study: (file suffix, Optuna's plot, the question it answers)
STUDY_PLOTS: tuple[tuple[str, Callable[..., Any], str], ...] = (
    ("intermediate", optuna_plots.plot_intermediate_values,
     "Each trial's validation metric per epoch: where did ASHA cut trials?"),
    ("parallel", optuna_plots.plot_parallel_coordinate,
     "Which combinations of values did the finished trials try, and how did they score?"),
    ("slice", optuna_plots.plot_slice, "How does the score vary with each searched value?"),
)


def search_studies(url: str, experiment: str) -> list[optuna.Study]:
    """The studies of ``experiment`` in the storage ``url``: the search's own (``<experiment>``) and one
    per arm cell (``<experiment>/<arm>``), in name order."""
    names = sorted(name for name in optuna.get_all_study_names(storage=url)
                   if name == experiment or name.startswith(experiment + "/"))
    return [optuna.load_study(study_name=name, storage=url) for name in names]


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """Per search with studies: the history of all its studies together, then each study's plots."""
    shown = 0
    for info in ctx.loaded.searches:
        url = info.optuna_storage
        if not url:
            continue
        if url.startswith("sqlite:") and not Path(url.partition(":///")[2]).is_file():
            section.note(f"{info.experiment}: its Optuna studies were in {url}, which is not on this machine.")
            continue
        every = search_studies(url, info.experiment)
        counts = {state: sum(t.state == state for s in every for t in s.get_trials(deepcopy=False))
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        studies = [s for s in every  # a study whose trials all failed has nothing to plot
                   if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in s.get_trials(deepcopy=False))]
        if not studies:
            continue
        shown += 1
        section.text(
            f"`{info.experiment}`: {len(every)} Optuna stud{'y' if len(every) == 1 else 'ies'} in `{url}`, trials: "
            f"{counts[TrialState.COMPLETE]} COMPLETE, {counts[TrialState.PRUNED]} PRUNED by ASHA, "
            f"{counts[TrialState.FAIL]} FAIL; `optuna-dashboard {url}` shows them interactively. A COMPLETE "
            "trial's value is the score it selected; a PRUNED one has its epochs as intermediate values only."
        )
        stem = _file_stem(info.experiment)
        path = _save(optuna_plots.plot_optimization_history, studies if len(studies) > 1 else studies[0],
                     report.folder / f"optuna_{stem}_history.png")
        report.image(section, path, "Best score so far against trial number, per arm's study")
        for study in studies:
            label = study.study_name.partition("/")[2] or study.study_name
            for suffix, plot, question in STUDY_PLOTS:
                path = _save(plot, study, report.folder / f"optuna_{_file_stem(study.study_name)}_{suffix}.png")
                report.image(section, path, f"{label}: {question}")
    if not shown:
        section.skip("No Optuna study to plot: grid searches have none, and sampled searches write theirs to "
                     "<storage>/optuna.db.")


def _save(plot: Callable[[Any], Any], studies: Any, path: Path) -> Path:
    """Draw one of Optuna's plots of ``studies`` (it makes its own figure) and save it as ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(studies)
    figure = np.ravel(axes)[0].figure
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:100]


UNIT = SectionUnit("Optuna studies",
                   lambda ctx: "How did the searcher explore each arm, and where did ASHA stop trials?",
                   "search", build, all_search_trials)

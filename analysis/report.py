"""The report of one or more searches and their confirmation stages: a self-contained HTML file
(plots embedded) and its Markdown twin, CSV tables and PNG plots, written to a folder and logged to each
search's parent MLflow run.

Each section is a unit of ``analysis.sections`` (title, question, kind, build from the typed
``ReportContext``); ``SECTIONS`` is their order: the conclusions first (from the confirmation runs when
there are any, else labelled *exploratory*), then what describes the search itself. A section the design
cannot support says why in words, and the others still render. Sections that failed because of the
user's input are also listed in ``Report.problems`` (the CLI prints them and exits 1).
"""

from __future__ import annotations

import traceback
from pathlib import Path

from analysis.context import AnalysisOptions, ReportContext, SectionUnit, make_context
from analysis.document import Report, UserInputError
from analysis.loading import SOURCE_COLUMNS, LoadedSearch, load_search
from analysis.render_html import render_html
from analysis.render_markdown import render_markdown
from analysis.sections import (
    bootstrap,
    cost,
    delong,
    effects,
    ensemble,
    factors,
    importance,
    learning,
    mixed,
    optimism,
    optuna_plots,
    overview,
    sensitivity,
    strategies,
    tuning,
)
from analysis.upload import log_to_parents
from tuner.terminal import say

__all__ = ["SECTIONS", "AnalysisOptions", "analyze", "build_report"]

SECTIONS: tuple[SectionUnit, ...] = (
    overview.UNIT, mixed.UNIT, factors.UNIT, delong.UNIT, bootstrap.UNIT, strategies.UNIT, effects.UNIT,
    learning.UNIT, sensitivity.UNIT, optimism.UNIT, tuning.UNIT, optuna_plots.UNIT, importance.UNIT, ensemble.UNIT,
    cost.UNIT,
)


def build_report(experiment: str | list[str], tracking_uri: str | None = None, storage: str | Path = "results",
                 out: str | Path | None = None, *, source: str = "mlflow",
                 options: AnalysisOptions | None = None) -> Report:
    """Load the experiment(s), write every section into ``out`` (default: the search's ``report/``
    folder) and, when read from MLflow, log the folder to each search's parent run so the report sits
    next to the trials it describes. What ``medtune analyze`` runs."""
    options = options or AnalysisOptions()
    loaded = load_search(experiment, tracking_uri, storage, source)
    names = [s.experiment for s in loaded.searches]
    if out is not None:
        folder = Path(out)
    elif len(names) == 1:
        folder = Path(storage).expanduser().resolve() / names[0] / "report"
    else:
        folder = Path(storage).expanduser().resolve() / "reports" / "+".join(names)[:120]
    folder.mkdir(parents=True, exist_ok=True)
    report = analyze(loaded, folder, options)
    if loaded.source == "mlflow":
        log_to_parents(report, loaded)
    return report


def analyze(loaded: LoadedSearch, folder: Path, options: AnalysisOptions,
            sections: tuple[SectionUnit, ...] = SECTIONS) -> Report:
    """Every section into ``folder``: report.md, report.html, CSVs and PNGs."""
    names = [s.experiment for s in loaded.searches]
    report = Report(folder, f"medtune report: {', '.join(names)}")
    ctx = make_context(loaded, options)
    (folder / "errors.log").unlink(missing_ok=True)
    report.csv(loaded.frame.drop(columns=list(SOURCE_COLUMNS), errors="ignore"), "trials")
    for number, unit in enumerate(sections, 1):
        say(f"medtune: report section {number}/{len(sections)}: {unit.title}", transient=number < len(sections))
        _run(report, unit, ctx)
    report.markdown_path = folder / "report.md"
    report.markdown_path.write_text(render_markdown(report))
    report.html_path = folder / "report.html"
    report.html_path.write_text(render_html(report))
    report.files += [report.markdown_path, report.html_path]
    return report


def _run(report: Report, unit: SectionUnit, ctx: ReportContext) -> None:
    """One section, contained: a problem of the user's input or a crash costs only this section."""
    title = unit.title + (" (exploratory)" if unit.exploratory(ctx) else "")
    section = report.section(title, unit.question(ctx), unit.basis_words(ctx))
    known = len(ctx.loaded.notes)  # a score file that cannot be read is noted when a section first reads it
    try:
        unit.build(report, section, ctx)
    except UserInputError as error:
        section.status = "partial" if any(b.kind != "note" for b in section.blocks) else "failed"
        section.note(str(error))
        report.problems.append(f"{unit.title}: {error}")
    except Exception as error:  # one section's failure must not cost the others
        section.status = "failed"
        section.note(f"This section could not be computed ({type(error).__name__}: {error}); the traceback is in "
                     "errors.log.")
        report.problems.append(f"{unit.title}: {type(error).__name__}: {error} (traceback in errors.log)")
        with open(report.folder / "errors.log", "a") as log:
            log.write(f"--- {unit.title}\n{traceback.format_exc()}\n")
    for note in ctx.loaded.notes[known:]:  # noted after the overview was written: shown in the section that read it
        section.note(note)
    if not section.blocks:
        section.status = "not applicable"
        section.note("Nothing to show.")

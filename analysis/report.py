"""The report of one or more searches: a self-contained HTML file (plots embedded) and its Markdown
twin, CSV tables and PNG plots, written to a folder and logged to each search's parent MLflow run.

Every table has the question it answers written above it. A section the design cannot support (no
test scores, a factor that never varies, a formula naming an unknown column) says why in words, and
the others still render. Sections that failed because of the user's input are also listed in
``Report.problems`` (the CLI prints them and exits 1).
"""

from __future__ import annotations

import base64
import html
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import comparisons as cmp
from analysis import strategy_tables as st
from analysis.importance import param_importances
from analysis.loading import SOURCE_COLUMNS, LoadedSearch, load_search, selection_column
from analysis.modeling import (
    DEFAULT_RANDOM,
    fit_plan,
    likelihood_ratio_tests,
    paper_table,
    plan_model,
    with_response,
)
from analysis.plots import (
    change_heatmap,
    gap_history,
    importance_bars,
    learning_curves,
    metric_by_factor,
    roc_curves,
)
from tuner.errors import ConfigError

DEFAULT_METRIC = "test_auc"
CATEGORICAL_FACTORS = ("head", "weights", "strategy", "backbone", "unfreeze", "kernel_size", "optimizer")
_OUTCOMES = {  # tuner.tracking's outcome tags of finished trials, as the overview names them
    "completed": "completed",
    "stopped_early": "stopped early (ASHA)",
    "early_stopping": "early stopping (patience)",
    "diverged": "diverged",
}
_P_COLUMNS = {"p", "p_value", "p_holm", "Holm p"}


@dataclass
class AnalysisOptions:
    """What ``medtune analyze`` lets a user override; None = the study module's default."""

    formula: str | None = None
    metric: str | None = None
    random: list[str] | None = None
    logit: bool = False
    compare: list[str] = field(default_factory=list)
    compare_mode: str = "best"
    alternative: str = "two-sided"
    alpha: float = 0.05
    top: int = 5


# --------------------------------------------------------------------------------------------
# the document


@dataclass
class Block:
    """One piece of a section, kept as data so that the Markdown and the HTML render the same content
    and cannot drift apart."""

    kind: str  # text | table | image | note
    text: str = ""
    frame: pd.DataFrame | None = None
    path: Path | None = None
    question: str = ""
    csv: str = ""


@dataclass
class Section:
    """A numbered part of the report: the question it answers, its blocks, and whether it could be
    computed (so the CLI can tell a complete report from a partial one)."""

    title: str
    question: str
    blocks: list[Block] = field(default_factory=list)
    status: str = "ok"  # ok | not applicable | partial (some of it failed) | failed

    def text(self, text: str) -> None:
        """A paragraph of findings (Markdown: `code`, **bold**, *italic*)."""
        self.blocks.append(Block("text", text=text))

    def note(self, text: str) -> None:
        """A caveat set apart from the findings (what was left out, and why), so it is not missed."""
        self.blocks.append(Block("note", text=text))


@dataclass
class Report:
    """The report being written: its sections, every file written to ``folder`` (all of them are
    logged to MLflow), and the problems caused by the user's input (the CLI's exit status 1)."""

    folder: Path
    title: str
    sections: list[Section] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    markdown_path: Path | None = None
    html_path: Path | None = None
    logged_to: list[str] = field(default_factory=list)

    def section(self, title: str, question: str) -> Section:
        """A new section at the end; its number is its position."""
        section = Section(title, question)
        self.sections.append(section)
        return section

    def table(
        self,
        section: Section,
        frame: pd.DataFrame,
        name: str,
        question: str,
        shown: pd.DataFrame | None = None,
    ) -> None:
        """The whole ``frame`` as ``<name>.csv``; ``shown`` (default the frame) in the document."""
        path = self.folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        section.blocks.append(
            Block("table", frame=shown if shown is not None else frame, question=question, csv=path.name)
        )

    def csv(self, frame: pd.DataFrame, name: str) -> Path:
        """A table written as CSV only (not shown in the document)."""
        path = self.folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        return path

    def image(self, section: Section, path: Path, question: str) -> None:
        """A plot already saved as ``path``, shown in ``section`` under the question it answers."""
        self.files.append(path)
        section.blocks.append(Block("image", path=path, question=question))


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: p-values to 3 significant digits, other numbers to 4, missing as –."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            out[column] = values.map({True: "yes", False: "no"})
        elif pd.api.types.is_integer_dtype(values):
            out[column] = values.astype(str)
        elif pd.api.types.is_float_dtype(values):
            fmt = "{:.3g}" if column in _P_COLUMNS else "{:.4g}"
            out[column] = values.map(lambda v, f=fmt: "–" if pd.isna(v) else f.format(v))
            if column in _P_COLUMNS:  # a p-value below double precision underflows to 0
                out.loc[values == 0, column] = "<1e-300"
        else:
            out[column] = values.map(
                lambda v: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    return out


def render_markdown(report: Report) -> str:
    """The report as Markdown (images linked by file name): readable in a terminal, a diff or
    MLflow's artifact viewer, where the HTML is not."""
    lines = [f"# {report.title}", ""]
    for number, section in enumerate(report.sections, 1):
        lines += [f"## {number}. {section.title}", "", f"*{section.question}*", ""]
        for block in section.blocks:
            if block.kind == "text":
                lines += [block.text, ""]
            elif block.kind == "note":
                lines += [f"> Note: {block.text}", ""]
            elif block.kind == "table":
                shown = _display(block.frame)
                lines += [f"**{block.question}**", ""]
                lines += [
                    shown.to_markdown(index=False, disable_numparse=True) if len(shown) else "(no rows)",
                    "",
                ]
                lines += [f"(table as CSV: `{block.csv}`)", ""]
            elif block.kind == "image":
                lines += [f"**{block.question}**", "", f"![{block.question}]({block.path.name})", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """The Markdown this report writes (`code`, **bold**, *italic*) as HTML; code is left verbatim."""
    parts = []
    for i, part in enumerate(str(text).split("`")):
        if i % 2:  # inside backticks (a formula may hold * and **)
            parts.append(f"<code>{html.escape(part)}</code>")
            continue
        part = html.escape(part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", part)
        part = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<i>\1</i>", part)
        parts.append(part)
    return "".join(parts).replace("\n", "<br>\n")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#f3f3f3}
.q{font-weight:600;margin-top:1.2em}.question{font-style:italic;color:#444}
.note{border-left:4px solid #d9a300;background:#fff8e1;padding:.4em .8em;margin:.6em 0}img{max-width:100%}
code{background:#f4f4f4;padding:0 3px}.csv{color:#777;font-size:.8em}"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML file (plots embedded as base64), so it can be mailed or
    opened from MLflow without the folder next to it."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for number, section in enumerate(report.sections, 1):
        parts.append(f"<h2>{number}. {html.escape(section.title)}</h2>")
        parts.append(f"<p class='question'>{_inline_html(section.question)}</p>")
        for block in section.blocks:
            if block.kind == "text":
                parts.append(f"<p>{_inline_html(block.text)}</p>")
            elif block.kind == "note":
                parts.append(f"<div class='note'>Note: {_inline_html(block.text)}</div>")
            elif block.kind == "table":
                shown = _display(block.frame)
                parts.append(f"<p class='q'>{_inline_html(block.question)}</p><table><tr>")
                parts.append("".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns) + "</tr>")
                for _, row in shown.iterrows():
                    parts.append("<tr>" + "".join(f"<td>{_inline_html(v)}</td>" for v in row) + "</tr>")
                parts.append(f"</table><p class='csv'>table as CSV: {html.escape(block.csv)}</p>")
            elif block.kind == "image":
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(
                    f"<p class='q'>{_inline_html(block.question)}</p>"
                    f"<img alt='{html.escape(block.question)}' src='data:image/png;base64,{data}'>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# entry points


def build_report(
    experiment: str | list[str],
    tracking_uri: str | None = None,
    storage: str | Path = "results",
    out: str | Path | None = None,
    *,
    source: str = "mlflow",
    options: AnalysisOptions | None = None,
) -> Report:
    """Load the experiment(s), write every section into ``out`` (default: the search's
    ``report/`` folder) and, when read from MLflow, log the folder to each search's parent run so the
    report sits next to the trials it describes. What ``medtune analyze`` runs."""
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
        _log_to_parents(report, loaded)
    return report


def analyze(loaded: LoadedSearch, folder: Path, options: AnalysisOptions) -> Report:
    """Every section into ``folder``: report.md, report.html, CSVs and PNGs."""
    names = [s.experiment for s in loaded.searches]
    report = Report(folder, f"medtune report: {', '.join(names)}")
    frame = loaded.frame
    config, config_notes = _analysis_config(loaded, options)
    (folder / "errors.log").unlink(missing_ok=True)
    report.csv(frame.drop(columns=list(SOURCE_COLUMNS), errors="ignore"), "trials")

    steps: list[tuple[str, str, Callable[..., None]]] = [
        ("Overview", "What was searched, what finished, and what won on validation?", _overview),
        ("Mixed model", f"Which factors change {config['metric']}, holding the others fixed?", _mixed_model),
        (
            "Does each factor matter?",
            "Does removing a factor from the model make the fit significantly worse?",
            _lrt,
        ),
        (
            "DeLong comparisons",
            "Are the AUC differences between the compared models more than chance on these test images?",
            _comparisons,
        ),
        (
            "Fine-tuning strategies",
            "Which fine-tuning strategy works best for each architecture and data set, "
            "and how often does each beat full fine-tuning?",
            _strategies,
        ),
        (
            "Effect plots",
            f"How does {config['metric']} move with {' and '.join(config['xs'])}?",
            _by_factor,
        ),
        (
            "Learning curves and overfitting",
            "How did the best trials learn, and how far apart are their training and validation curves?",
            _learning,
        ),
        (
            "Hyperparameter importance",
            f"Which hyperparameters explain most of the variation in {config['metric']}?",
            _importance,
        ),
    ]
    state: dict[str, Any] = {"config_notes": config_notes}
    for title, question, step in steps:
        section = report.section(title, question)
        try:
            step(report, section, loaded, config, options, state)
        except _UserInputError as error:
            section.status = "partial" if any(b.kind != "note" for b in section.blocks) else "failed"
            section.note(str(error))
            report.problems.append(f"{title}: {error}")
        except Exception as error:  # one section's failure must not cost the others
            section.status = "failed"
            section.note(
                f"This section could not be computed ({type(error).__name__}: {error}); the traceback is "
                "in errors.log."
            )
            report.problems.append(f"{title}: {type(error).__name__}: {error} (traceback in errors.log)")
            with open(folder / "errors.log", "a") as log:
                log.write(f"--- {title}\n{traceback.format_exc()}\n")
        if not section.blocks:
            section.status = "not applicable"
            section.note("Nothing to show.")
    report.markdown_path = folder / "report.md"
    report.markdown_path.write_text(render_markdown(report))
    report.html_path = folder / "report.html"
    report.html_path.write_text(render_html(report))
    report.files += [report.markdown_path, report.html_path]
    return report


class _UserInputError(Exception):
    """A section could not be computed because of what the user asked for (bad formula, unknown
    comparison level): shown in the section and returned as a problem."""


def _analysis_config(loaded: LoadedSearch, options: AnalysisOptions) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    spaces = sorted({s.space for s in loaded.searches if s.space})
    module_analysis: dict[str, Any] = {}
    if len(spaces) > 1:
        notes.append(
            f"The searches used different spaces ({', '.join(spaces)}); the defaults of "
            f"`{spaces[0]}` are used."
        )
    if spaces:
        try:
            from search_spaces import get_space

            module_analysis = dict(getattr(get_space(spaces[0]), "ANALYSIS", {}) or {})
        except ConfigError as error:
            notes.append(
                f"Search space `{spaces[0]}` is not available here ({error}); generic defaults are used."
            )
    frame = loaded.frame
    formula = options.formula or module_analysis.get("formula")
    metric = options.metric or (formula.partition("~")[0].strip() if formula else None) or DEFAULT_METRIC
    if options.metric and not options.formula and formula:
        formula = with_response(formula, options.metric)
    if not formula:
        formula = _default_formula(frame, loaded.param_columns, metric)
        notes.append(f"No study default formula; fitted `{formula}` (every searched factor that varies).")
    random = options.random if options.random is not None else module_analysis.get("random")
    if random is None:
        random = [module_analysis["groups"]] if module_analysis.get("groups") else []
        random += [r for r in DEFAULT_RANDOM if r not in random]
    x = module_analysis.get("x") or (
        "unfreeze" if "unfreeze" in frame and frame["unfreeze"].nunique() > 1 else "lr"
    )
    compare = list(options.compare) or list(module_analysis.get("compare", []))
    source = (
        "command line"
        if options.formula
        else ("study module" if module_analysis.get("formula") else "generic default")
    )
    return {
        "formula": formula,
        "metric": metric,
        "random": list(random),
        "x": x,
        "xs": [x] + [f for f in ("unfreeze",) if f != x and f in frame and frame[f].nunique() > 1],
        "compare": compare,
        "line": module_analysis.get("line", "head"),
        "formula_source": source,
        "select": selection_column(frame),
    }, notes


def _select_words(frame: pd.DataFrame, select: str | None) -> str:
    if select == "best_score":
        metrics = sorted(map(str, frame["metric"].dropna().unique())) if "metric" in frame else []
        return f"`best_score`, each trial's best {' / '.join(metrics) or 'validation metric'}"
    if select is None:
        return "no validation score was reported"
    return f"`{select}`"


def _default_formula(frame: pd.DataFrame, params: list[str], metric: str) -> str:
    terms = [f"C({c})" for c in CATEGORICAL_FACTORS if c in frame and c in params and frame[c].nunique() > 1]
    if "log10_lr" in frame and frame["log10_lr"].nunique() > 1:
        terms.append("log10_lr")
    return f"{metric} ~ {' + '.join(terms) or '1'}"


# --------------------------------------------------------------------------------------------
# sections


def _overview(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    if loaded.source == "mlflow":
        section.text(f"Trials read from MLflow at `{loaded.tracking_uri}`.")
    else:
        section.text(
            "Trials read offline from the Tune experiment folder(s) "
            + ", ".join(f"`{s.location}`" for s in loaded.searches)
            + " (no MLflow)."
        )
    rows = []
    for info in loaded.searches:
        part = frame[frame["experiment"] == info.experiment]
        rows.append(
            {
                "experiment": info.experiment,
                "space": info.space,
                "dataset": info.dataset,
                "task": info.task,
                "searcher": info.search,
                "finished": info.finished,
                **{
                    label: int((part["outcome"] == outcome).sum())
                    for outcome, label in _OUTCOMES.items()
                    if outcome in ("completed", "stopped_early") or (frame["outcome"] == outcome).any()
                },
                "errored": info.errored,
                "unfinished": info.unfinished,
            }
        )
    report.table(section, pd.DataFrame(rows), "searches", "What was searched, and how many trials finished?")
    metric = config["metric"]
    section.text(
        f"Each trial's test metrics are those of its best validation epoch, so trials that ASHA (or early "
        f"stopping) ended early are scored too, on fewer epochs. The outcome analyzed is `{metric}`; models "
        f"are chosen on validation ({_select_words(frame, config['select'])}), never on the test split."
    )
    select = config["select"]
    if select is not None:
        best_rows = []
        for dataset, part in frame.groupby("dataset", sort=True):
            if part[select].notna().any():
                best = part.loc[part[select].idxmax()]
                best_rows.append(
                    {
                        "dataset": dataset,
                        "trial": best["run_name"],
                        select: best[select],
                        **{m: best[m] for m in (metric, "test_acc") if m in best and m != select},
                    }
                )
        report.table(
            section,
            pd.DataFrame(best_rows),
            "best_trials",
            "Which trial won on validation, and how did it score on test?",
        )
    missing = frame[frame["test_scores"].isna()]["run_name"].tolist() if "test_scores" in frame else []
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        section.note(
            f"{len(missing)} trial(s) have no per-sample test scores, so they cannot enter DeLong "
            f"tests or ROC curves: {shown}."
        )
    for note in loaded.notes + state["config_notes"]:
        section.note(note)
    if metric not in frame:
        section.note(f"There is no `{metric}` column; metrics available: {', '.join(loaded.metric_columns)}.")


def _mixed_model(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    formula = config["formula"]
    try:
        plan = plan_model(frame, formula, config["random"], logit=options.logit)
        fit = fit_plan(plan)
    except ValueError as error:
        state["plan_error"] = str(error)
        raise _UserInputError(f"Not fitted: {error}") from None
    state["plan"] = plan
    random = " + ".join(f"(1 | {r})" for r in plan.random) if plan.random else "none (fixed effects only)"
    references = "; ".join(f"{term}: `{level}`" for term, level in fit.reference_levels.items())
    section.text(
        f"Formula `{fit.formula}` ({config['formula_source']}); random intercepts: {random}; "
        f"{'REML' if fit.reml else 'ML (OLS: no random effect)'}; {fit.n_obs} trials."
        + (f"\n\nReference levels (each estimate is relative to these): {references}." if references else "")
    )
    for note in plan.notes + fit.notes:
        section.note(note)
    report.table(
        section,
        fit.table,
        "mixed_model",
        f"How much does each term change {f'logit({plan.response})' if plan.logit else plan.response}, "
        "and how sure is that (Wald z, 95% CI)?",
        shown=paper_table(fit),
    )
    report.table(
        section,
        fit.random_effects,
        "mixed_model_variances",
        "How much of the variation lies between seeds / data sets, and how much is residual?",
    )


def _lrt(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    plan = state.get("plan")
    if plan is None:
        reason = state.get("plan_error", "the model could not be fitted")
        section.status = "failed"
        section.note(f"Not run: the mixed model above was not fitted ({reason}).")
        return
    table, notes = likelihood_ratio_tests(plan)
    if table.empty:
        section.note("The formula has no term to test.")
        return
    section.text(
        "Likelihood-ratio tests: the model is refitted by maximum likelihood (ML, not REML: REML "
        "likelihoods of models with different fixed effects are not comparable) without every term that "
        "reads the factor, on the same trials and random effects; LR = 2 (logLik full - logLik reduced) "
        "is referred to a chi-square with df = the number of coefficients removed. Holm's correction is "
        "across the factors."
    )
    shown = table.rename(columns={"lr": "LR chi2", "p_holm": "Holm p"})
    shown.insert(0, "question", [f"Does {f} matter?" for f in table["factor"]])
    report.table(section, table, "likelihood_ratio_tests", "Does each factor matter at all?", shown=shown)
    for note in notes:
        section.note(note)


def _comparisons(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    problems: list[str] = []
    specs = []
    for text in config["compare"]:
        try:
            specs.append(cmp.parse_compare(text))
        except ValueError as error:
            problems.append(str(error))
    if not config["compare"]:
        specs = [cmp.ComparisonSpec(f) for f in cmp.DEFAULT_FACTORS if f in frame and frame[f].nunique() > 1]
        if not specs:
            section.status = "not applicable"
            section.note(
                "Nothing to compare: none of " + ", ".join(cmp.DEFAULT_FACTORS) + " varies. Name a "
                "factor with --compare FACTOR[=LEVEL,LEVEL,...]."
            )
            _raise_problems(problems)
            return
    if frame["test_scores"].isna().all():
        section.status = "not applicable"
        section.note("Not run: no trial has per-sample test scores.")
        _raise_problems(problems)
        return
    result = cmp.compare(
        frame,
        specs,
        loaded.test_scores,
        params=loaded.param_columns,
        mode=options.compare_mode,
        alternative=options.alternative,
        alpha=options.alpha,
        select=config["select"] or "best_val_auc",
    )
    problems += result.problems
    side = {
        "two-sided": "two-sided",
        "greater": "one-sided (A > reference)",
        "less": "one-sided (A < reference)",
    }[options.alternative]
    select = config["select"]
    how = (
        f"the best trial of each level by `{select}`"
        if options.compare_mode == "best"
        else f"the best configuration of each level by mean `{select}`, its seeds' test scores averaged "
        "per case"
    )
    section.text(
        f"Each level is represented by {how}. A = the level, B = the reference (the first level listed, or "
        f"the level of the overall best trial); difference = AUC_A - AUC_B; {side} tests at alpha = "
        f"{options.alpha:g}. Paired DeLong (Sun & Xu) when both models scored the same test cases, unpaired "
        "otherwise; multi-class tasks one-vs-rest per class. The ROC direction is fixed: a higher score "
        "means the positive class (an AUC below 0.5 stays below 0.5). Holm's correction runs across every "
        f"test in the table ({len(result.table)})."
    )
    for note in result.notes:
        section.note(note)
    if result.table.empty:
        section.note("No comparison could be made (see the notes).")
        _raise_problems(problems)
        return
    shown_cols = [
        "dataset",
        "factor",
        "level",
        "reference",
        "class",
        "paired",
        "auc_a",
        "auc_b",
        "difference",
        "difference_ci_low",
        "difference_ci_high",
        "z",
        "p_value",
        "p_holm",
    ]
    shown = result.table[shown_cols].rename(
        columns={
            "difference_ci_low": "diff CI low",
            "difference_ci_high": "diff CI high",
            "p_value": "p",
            "p_holm": "Holm p",
        }
    )
    if result.table["class"].nunique() == 1:
        shown = shown.drop(columns=["class"])
    report.table(
        section,
        result.table,
        "delong",
        "Is each level's model better or worse than the reference's on the same test images?",
        shown=shown,
    )
    aucs = []
    for (dataset, factor, _), models in result.models.items():
        for model in models:
            for name, _, _, (auc, low, high) in cmp.roc_points(model):
                aucs.append(
                    {
                        "dataset": dataset,
                        "factor": factor,
                        "level": cmp.level_text(model.level),
                        "class": name,
                        "trials": " + ".join(model.trials),
                        "auc": auc,
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
    if aucs:
        report.table(
            section,
            pd.DataFrame(aucs),
            "compared_aucs",
            "What is each compared model's test AUC, with its 95% DeLong CI?",
        )
    panels = []
    for (dataset, factor, _), models in result.models.items():
        points = [(m, cmp.roc_points(m)) for m in models]
        classes = [name for name, *_ in points[0][1]][:4]
        for cls in classes:
            curves = []
            for model, rocs in points:
                for name, fpr, tpr, ci in rocs:
                    if name == cls:
                        curves.append((f"{factor}={cmp.level_text(model.level)}", fpr, tpr, ci))
            suffix = f", class {cls}" if len(points[0][1]) > 1 else ""
            panels.append((f"{dataset}: {factor}{suffix}", curves))
    if panels:
        path = roc_curves(panels[:9], report.folder / "roc_curves.png")
        report.image(section, path, "How do the compared models' ROC curves differ?")
    _raise_problems(problems)


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise _UserInputError(" ".join(problems))


def _strategies(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    why = st.applies(frame)
    if why:
        section.status = "not applicable"
        section.note(f"Not applicable: {why}")
        return
    long = st.cells(frame, loaded.param_columns, select=config["select"] or "best_val_auc")
    metrics = list(dict.fromkeys(long["metric"]))
    main = config["metric"] if config["metric"] in metrics else metrics[0]
    section.text(
        f"Each cell is the configuration with the best mean `{config['select']}` over its seeds; mean (SE "
        f"over seeds) of each test metric. Main metric: `{main}`. Bold: the best strategy per architecture "
        "and metric; †: the best over all architectures."
    )
    report.csv(long, "strategy_cells")  # long form; the per-data-set tables below show it
    for i, dataset in enumerate(sorted(long["dataset"].unique(), key=str)):
        table = st.cell_table(long, dataset)
        report.table(
            section,
            table,
            f"strategy_table_{i + 1}_{_slug(dataset)}",
            f"{dataset}: which strategy and architecture score best, and how much do seeds vary?",
        )
    if long["n_seeds"].max() < 2:
        section.note("Each cell has a single seed, so there is no standard error (–).")
    change = st.change_vs_ft(long, main)
    if st.REFERENCE not in set(frame["strategy"]):
        section.note(
            f"No `{st.REFERENCE}` (full fine-tuning) trials: the change-vs-FT heatmap, Table 12 and the "
            "improvements of Table 11 need them."
        )
    elif change["change_pct"].notna().any():
        report.table(
            section,
            change,
            "change_vs_ft",
            f"How much does each strategy change {main} relative to FT on the same architecture (%)?",
        )
        path = change_heatmap(change, report.folder / "change_vs_ft_heatmap.png", main)
        report.image(section, path, f"Change in {main} relative to FT, per strategy and architecture")
        wins = st.wins_over_ft(change)
        report.table(
            section,
            wins,
            "wins_over_ft",
            f"How often does each strategy beat FT by more than {st.WIN_THRESHOLD}% ({main})?",
        )
    else:
        section.note("No data set has FT and another strategy on the same architecture: nothing to compare.")
    best = st.best_per_dataset(long, change, main)
    report.table(
        section, best, "best_per_dataset", "Which strategy and architecture is best on each data set?"
    )


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))[:40]


def _by_factor(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    metric, line = config["metric"], config["line"]
    if metric not in frame:
        section.status = "not applicable"
        section.note(f"No `{metric}` column.")
        return
    shown = 0
    for x in config["xs"]:
        if x not in frame or frame[x].notna().sum() == 0:
            section.note(f"No plot against `{x}`: the trials have no `{x}`.")
            continue
        rows = frame[frame[x].notna() & frame[metric].notna()]
        if rows[x].nunique() < 2:
            section.note(f"No plot against `{x}`: it never varies (always {rows[x].iloc[0]!r}).")
            continue
        if len(rows) < len(frame):
            section.note(
                f"{len(frame) - len(rows)} trial(s) have no `{x}` (e.g. a strategy that does not use it) "
                f"and are left out of the plot against `{x}`."
            )
        path = metric_by_factor(rows, x, report.folder / f"{metric}_by_{x}.png", metric=metric, line=line)
        discrete = rows[x].nunique() <= 12 or not pd.api.types.is_numeric_dtype(rows[x])
        per = f", per {line}" if line in rows and line != x else ""
        interval = " (mean and 95% t interval over trials, kept within [0, 1])" if discrete else ""
        report.image(section, path, f"How does {metric} move with {x}{per}?{interval}")
        if discrete:
            group = [x] + ([line] if per else [])
            summary = rows.groupby(group, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
            report.table(section, summary, f"{metric}_by_{x}", f"What is the mean {metric} at each {x}{per}?")
        shown += 1
    if not shown:
        section.status = "not applicable"


def _learning(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    select = config["select"]
    if select is None:
        section.status = "not applicable"
        section.note("No validation score (`best_score` or `best_val_auc`): cannot tell the best trials.")
        return
    top = frame.sort_values([select, "trial_id"], ascending=[False, True]).head(options.top)
    histories = {row["run_name"]: loaded.history(row) for _, row in top.iterrows()}
    histories = {k: v for k, v in histories.items() if not v.empty}
    if histories:
        path = learning_curves(
            histories, report.folder / "learning_curves.png", f"The {len(histories)} best trials by {select}"
        )
        report.image(
            section, path, "How did the best trials learn: loss, accuracy, and train - val gap per epoch?"
        )
    factor = next(
        (f for f in ("weights", "strategy", "head", "backbone") if f in frame and frame[f].nunique() > 1),
        None,
    )
    if factor is None:
        section.note("No factor among weights, strategy, head, backbone varies: no per-level curves.")
        return
    by_level, gap_rows = {}, []
    reported = [g for g in ("gap_acc", "gap_loss") if g in frame and frame[g].notna().any()]
    for level, part in frame.groupby(factor, sort=True):
        if part[select].isna().all():
            continue
        best = part.loc[part[select].idxmax()]
        history = loaded.history(best)
        if not history.empty:
            by_level[f"{factor}={level} ({best['run_name']})"] = history
        final = gap_history(history).iloc[-1] if not history.empty else pd.Series(dtype=float)
        gaps_all = _final_gaps(part, reported)
        gap_rows.append(
            {
                factor: level,
                "best trial": best["run_name"],
                "epochs": int(best["epochs_trained"]),
                "final gap_acc": final.get("gap_acc", np.nan),
                "final gap_loss": final.get("gap_loss", np.nan),
                "mean gap_acc (all trials)": gaps_all["gap_acc"].mean(),
                "mean gap_loss (all trials)": gaps_all["gap_loss"].mean(),
                "trials": len(part),
            }
        )
    if by_level:
        path = learning_curves(
            by_level, report.folder / f"learning_curves_by_{factor}.png", f"Best trial per {factor} level"
        )
        report.image(
            section, path, f"Does one {factor} overfit more than another (best trial of each, side by side)?"
        )
    if gap_rows:
        source = (
            "reported by the trials (" + ", ".join(reported) + ")"
            if reported
            else "computed from the final train and validation values"
        )
        section.text(
            f"gap_acc = train_acc - val_acc and gap_loss = val_loss - train_loss at the last epoch "
            f"trained, {source}. Positive gaps mean the model fits training data better than it "
            "generalises."
        )
        report.table(
            section,
            pd.DataFrame(gap_rows),
            f"overfitting_gaps_by_{factor}",
            f"How large is the final train - validation gap for each {factor}?",
        )


def _final_gaps(part: pd.DataFrame, reported: list[str]) -> pd.DataFrame:
    """Each trial's final gaps: the reported gap metrics, else computed from train and val values."""
    gaps = pd.DataFrame(index=part.index)
    for name, (minuend, subtrahend) in {
        "gap_acc": ("train_acc", "val_acc"),
        "gap_loss": ("val_loss", "train_loss"),
    }.items():
        if name in reported:
            gaps[name] = part[name]
        elif minuend in part and subtrahend in part:
            gaps[name] = part[minuend] - part[subtrahend]
        else:
            gaps[name] = np.nan
    return gaps


def _importance(report: Report, section: Section, loaded: LoadedSearch, config, options, state) -> None:
    frame = loaded.frame
    metric = config["metric"]
    params = [p for p in loaded.param_columns if p != "dataset" or frame["dataset"].nunique() > 1]
    table, notes = param_importances(frame, params, metric)
    for note in notes:
        section.note(note)
    if table.empty:
        section.status = "not applicable"
        return
    section.text(
        "Optuna's fANOVA and mean-decrease-in-impurity evaluators (random forests over the finished "
        f"trials, seed 0), each normalised to sum to 1. `seed` is included: its importance is the share "
        f"of variation in {metric} that noise alone explains."
    )
    report.table(
        section, table, "importance", f"Which hyperparameters explain most of the variation in {metric}?"
    )
    path = importance_bars(table, report.folder / "importance.png", metric)
    report.image(section, path, "Hyperparameter importance (fANOVA and mean decrease in impurity)")


# --------------------------------------------------------------------------------------------
# MLflow


def _log_to_parents(report: Report, loaded: LoadedSearch) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(loaded.tracking_uri)
    for info in loaded.searches:
        if not info.parent_run_id:
            continue
        try:
            client.log_artifacts(info.parent_run_id, str(report.folder), artifact_path="report")
            client.set_tag(
                info.parent_run_id, "medtune.report", datetime.now(UTC).isoformat(timespec="seconds")
            )
            report.logged_to.append(info.parent_run_id)
        except Exception as error:  # the report on disk is the deliverable; logging is a copy
            report.problems.append(
                f"could not log the report to parent run {info.parent_run_id} of "
                f"{info.experiment} ({type(error).__name__}: {str(error)[:200]})."
            )

"""What every section of the report reads, typed: the user's options, the analysis configuration
resolved from them and the study module's ``ANALYSIS``, the trials split by stage, and the mixed model
(fitted once, shared by the sections that need it). A section is a ``SectionUnit``: a title, the
question it answers, what it rests on, and a build from this context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import patsy

from analysis.document import Report, Section
from analysis.loading import LoadedSearch, selection_column
from analysis.mixed_model import MixedModelFit
from analysis.modeling import CONFIG_COLUMN, DEFAULT_RANDOM, ModelPlan, fit_plan, plan_model, with_response
from analysis.stages import StudyFrames, split_stages
from tuner.errors import ConfigError
from tuner.schema import REPLICATE_KEYS

DEFAULT_METRIC = "test_auc"
CATEGORICAL_FACTORS = ("head", "weights", "strategy", "backbone", "unfreeze", "kernel_size", "optimizer")


@dataclass
class AnalysisOptions:
    """What ``medtune analyze`` lets a user override; None = the study module's default (or, for
    ``compare_mode``, ``pooled`` on confirmation runs and ``best`` on search trials)."""

    formula: str | None = None
    metric: str | None = None
    random: list[str] | None = None
    logit: bool = False
    compare: list[str] = field(default_factory=list)
    compare_mode: str | None = None
    alternative: str = "two-sided"
    alpha: float = 0.05
    top: int = 5
    include_stopped: bool = False
    resamples: int = 2000  # the bootstrap over seeds and test cases
    refits: int = 199  # the parametric bootstrap of the mixed model when groups are few


@dataclass(frozen=True)
class AnalysisConfig:
    """The analysis as resolved: the formula and where it came from, the response, the random
    effects, the effect-plot axes, the comparisons, the validation column that chooses, and notes on
    how it was resolved."""

    formula: str
    formula_source: str
    metric: str
    random: list[str]
    x: str
    xs: list[str]
    line: str
    compare: list[str]
    arms: list[str]
    select: str | None
    notes: list[str]


@dataclass(frozen=True)
class ModelOutcome:
    """The mixed model of the analyzed trials: its plan and fit, or why it could not be fitted."""

    plan: ModelPlan | None
    fit: MixedModelFit | None
    error: str | None


@dataclass
class ReportContext:
    """Everything a section builds from; the mixed model is fitted on first use and then shared."""

    loaded: LoadedSearch
    options: AnalysisOptions
    config: AnalysisConfig
    study: StudyFrames
    _model: ModelOutcome | None = field(default=None, repr=False)

    @property
    def compare_mode(self) -> str:
        """``--compare-mode``, else pooled replicates on confirmation runs and the best trial otherwise."""
        return self.options.compare_mode or ("pooled" if self.study.conclusive else "best")

    def model(self) -> ModelOutcome:
        """The mixed model of ``study.analyzed`` (fitted once)."""
        if self._model is None:
            try:
                plan = plan_model(self.study.analyzed, self.config.formula, self.config.random,
                                  logit=self.options.logit)
                self._model = ModelOutcome(plan, fit_plan(plan), None)
            except (ValueError, patsy.PatsyError) as error:
                self._model = ModelOutcome(None, None, str(error))
        return self._model


@dataclass(frozen=True)
class SectionUnit:
    """One section: its title, the question it answers (from the context: it may name the metric),
    its kind (``overview``; ``conclusion``: rests on the confirmation runs when there are any, else is
    exploratory; ``search``: always the search's trials, so always exploratory), its build, and what it
    rests on in words where that is not its kind's default (``basis``)."""

    title: str
    question: Callable[[ReportContext], str]
    kind: str
    build: Callable[[Report, Section, ReportContext], None]
    basis: Callable[[ReportContext], str] | None = None

    def exploratory(self, ctx: ReportContext) -> bool:
        """Whether the section rests on the search's trials (and is labelled so)."""
        return self.kind == "search" or (self.kind == "conclusion" and not ctx.study.conclusive)

    def basis_words(self, ctx: ReportContext) -> str:
        """What the section rests on, in words (empty for the overview)."""
        if self.basis is not None:
            return self.basis(ctx)
        return {"overview": "", "conclusion": ctx.study.basis, "search": ctx.study.explore_basis}[self.kind]


def all_search_trials(ctx: ReportContext) -> str:
    """The basis of a section that reads every search trial, stopped ones included."""
    return f"exploratory: all {len(ctx.study.explore)} search trials, stopped ones included"


def make_context(loaded: LoadedSearch, options: AnalysisOptions) -> ReportContext:
    """The typed context of one report."""
    study = split_stages(loaded.frame, options.include_stopped)
    return ReportContext(loaded, options, resolve_config(loaded, study, options), study)


def resolve_config(loaded: LoadedSearch, study: StudyFrames, options: AnalysisOptions) -> AnalysisConfig:
    """Options first, then the study module's ``ANALYSIS``, then defaults read from the trials."""
    notes: list[str] = []
    declared, arms = _module_analysis(loaded, notes)
    frame = study.analyzed if len(study.analyzed) else loaded.frame
    formula = options.formula or declared.get("formula")
    metric = options.metric or (formula.partition("~")[0].strip() if formula else None) or DEFAULT_METRIC
    if options.metric and not options.formula and formula:
        formula = with_response(formula, options.metric)
    source = "command line" if options.formula else "study module" if declared.get("formula") else "generic default"
    if not formula:
        formula = default_formula(frame, loaded.param_columns, metric)
        notes.append(f"No study default formula; fitted `{formula}` (every searched factor that varies).")
    random = options.random if options.random is not None else declared.get("random")
    if random is None:
        groups = declared.get("groups")
        if groups in REPLICATE_KEYS:
            notes.append(f"The study module names `{groups}` as the random effect; `{groups}` replicates a "
                         f"configuration, so the configuration (`{CONFIG_COLUMN}`) is the random effect instead.")
            groups = None
        random = [groups] if groups else []
        random += [r for r in DEFAULT_RANDOM if r not in random]
    x = declared.get("x") or ("unfreeze" if _varies(frame, "unfreeze") else "lr")
    return AnalysisConfig(
        formula=formula, formula_source=source, metric=metric, random=list(random), x=x,
        xs=[x] + [f for f in ("unfreeze",) if f != x and _varies(frame, f)], line=declared.get("line", "head"),
        compare=list(options.compare) or list(declared.get("compare", [])), arms=arms,
        select=selection_column(loaded.frame), notes=notes)


def default_formula(frame: pd.DataFrame, params: list[str], metric: str) -> str:
    """Every categorical factor that varies, and log10(lr) when it varies."""
    terms = [f"C({c})" for c in CATEGORICAL_FACTORS if c in params and _varies(frame, c)]
    if _varies(frame, "log10_lr"):
        terms.append("log10_lr")
    return f"{metric} ~ {' + '.join(terms) or '1'}"


def _varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].nunique() > 1


def _module_analysis(loaded: LoadedSearch, notes: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The study module's ``ANALYSIS`` and ``ARMS`` (the factors it compares), when it is available."""
    spaces = sorted({s.space for s in loaded.searches if s.space})
    if len(spaces) > 1:
        notes.append(f"The searches used different spaces ({', '.join(spaces)}); the defaults of `{spaces[0]}` "
                     "are used.")
    if not spaces:
        return {}, []
    from search_spaces import get_space, space_arms  # a study module is plain Python: imported only when named

    try:
        module = get_space(spaces[0])
        arms = space_arms(module)
    except ConfigError as error:
        notes.append(f"Search space `{spaces[0]}` is not available here ({error}); generic defaults are used.")
        return {}, []
    return dict(getattr(module, "ANALYSIS", {}) or {}), list(arms)

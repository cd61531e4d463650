"""Overview: what was searched and confirmed, what finished, how models are chosen, what was left out."""

from __future__ import annotations

import pandas as pd

from analysis.context import ReportContext, SectionUnit
from analysis.document import Report, Section
from tuner.schema import COMPLETED, EXPLORE, STAGES
from tuner.tracking import redact

OUTCOME_WORDS = {COMPLETED: "completed", "stopped_early": "stopped early (ASHA)",
                 "early_stopping": "early stopping (patience)", "diverged": "diverged"}


def select_words(frame: pd.DataFrame, select: str | None) -> str:
    """How trials are ranked on validation, in words."""
    if select == "best_score":
        metrics = sorted(map(str, frame["metric"].dropna().unique())) if "metric" in frame else []
        return f"`best_score`, each trial's best {' / '.join(metrics) or 'validation metric'}"
    if select is None:
        return "no validation score was reported"
    return f"`{select}`"


def build(report: Report, section: Section, ctx: ReportContext) -> None:
    """The searches and stages table, the rule that chooses models, and every note on the input."""
    loaded, study, config = ctx.loaded, ctx.study, ctx.config
    frame = loaded.frame
    if loaded.source == "mlflow":
        section.text(f"Trials read from MLflow at `{redact(loaded.tracking_uri)}`.")  # never its password
    else:
        folders = [s.location for s in loaded.searches] + [s.confirm_location for s in loaded.searches
                                                           if s.confirm_location]
        section.text("Trials read offline from the Tune experiment folder(s) "
                     + ", ".join(f"`{f}`" for f in folders) + " (no MLflow).")
    rows = []
    for info in loaded.searches:
        for stage in sorted(info.counts, key=STAGES.index):
            part = frame[(frame["experiment"] == info.experiment) & (frame["stage"] == stage)]
            rows.append({
                "experiment": info.experiment, "stage": stage, "space": info.space, "dataset": info.dataset,
                "task": info.task, "searcher": info.search if stage == EXPLORE else "confirmation",
                "finished": info.count("finished", stage),
                "configurations": int(part["config_id"].nunique()),
                **{label: int((part["outcome"] == outcome).sum()) for outcome, label in OUTCOME_WORDS.items()
                   if outcome in (COMPLETED, "stopped_early") or (frame["outcome"] == outcome).any()},
                "errored": info.count("errored", stage), "unfinished": info.count("unfinished", stage),
            })
    report.table(section, pd.DataFrame(rows), "searches",
                 "What was searched and confirmed, and how many trials finished?")
    if study.conclusive:
        section.text(f"Conclusions rest on the confirmation runs ({study.basis}). Sections marked "
                     "*(exploratory)* describe the search, whose trials chose the candidates: they ran at unequal "
                     "budgets with one seed each, so they rank candidates but support no claim.")
    else:
        section.text(f"There are no confirmation runs, so every section is exploratory ({study.basis}). A search "
                     "chooses candidates; to conclude, re-run the chosen configurations at full budget with fresh "
                     "seeds (`medtune confirm`) and analyze again.")
    section.text(f"Each trial's test metrics are those of its best validation epoch. The outcome analyzed is "
                 f"`{config.metric}`; models are chosen on validation ({select_words(frame, config.select)}), "
                 "never on the test split, and every test result holds on this test set.")
    missing = frame[frame["test_scores"].isna()]["run_name"].tolist() if "test_scores" in frame else []
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        section.note(f"{len(missing)} trial(s) have no per-sample test scores, so they cannot enter DeLong "
                     f"tests, the bootstrap or ROC curves: {shown}.")
    for note in loaded.notes + study.notes + config.notes:
        section.note(note)
    if config.metric not in frame:
        section.note(f"There is no `{config.metric}` column; metrics available: {', '.join(loaded.metric_columns)}.")


UNIT = SectionUnit("Overview", lambda ctx: "What was searched and confirmed, what finished, and what do the "
                   "conclusions rest on?", "overview", build)

"""The report folder logged to each search's parent MLflow run, so the report sits next to the trials
it describes. The report on disk is the deliverable; logging it is a copy, and a failure to log is a
problem the CLI reports, not a lost report."""

from __future__ import annotations

from datetime import UTC, datetime

from analysis.document import Report
from analysis.loading import LoadedSearch

REPORT_TAG = "medtune.report"  # when the report was last logged to a parent run


def log_to_parents(report: Report, loaded: LoadedSearch) -> None:
    """Log ``report.folder`` under ``report/`` of every search's parent run; record where it went."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(loaded.tracking_uri)
    for info in loaded.searches:
        if not info.parent_run_id:
            continue
        try:
            client.log_artifacts(info.parent_run_id, str(report.folder), artifact_path="report")
            client.set_tag(info.parent_run_id, REPORT_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
            report.logged_to.append(info.parent_run_id)
        except Exception as error:  # the report on disk is the deliverable; logging is a copy
            report.problems.append(
                f"could not log the report to parent run {info.parent_run_id} of "
                f"{info.experiment} ({type(error).__name__}: {str(error)[:200]})."
            )

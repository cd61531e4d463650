"""The MLflow UI on a finished search, in a real headless Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``, so no browser download is needed): the experiment's runs page
shows the search's parent run with the Dataset column filled, its trials nested under it, a val_auc
chart, and a screenshot of the runs page is written to the test's temporary folder.

MLflow 3.17's UI opens an experiment in its GenAI workflow unless the page's URL (``workflowType``) or
the browser's saved choice says "Model training"; the runs page of the search is the URL with
``workflowType=machine_learning``."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

from tests.services import MlflowServer
from tuner.cli import main
from tuner.tracking import runs_page as tracking_runs_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; "
                                                          "`make system-packages` installs it)")
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def served_search(ray_local, small_npz, module_tmp_factory):
    """A real ``medtune tune`` (quick space: resnet18 at 28 px, one trial per head arm, 2 epochs) into a
    local sqlite store, and an MLflow server on that store."""
    storage = module_tmp_factory.mktemp("results")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["tune", "--space", "quick", "--dataset", str(small_npz), "--num-samples", "3",
                       "--max-epochs", "2", "--storage", str(storage), "--experiment", "browser"])
    assert status == 0, printed.getvalue()[-3000:]
    server = MlflowServer(f"sqlite:///{storage / 'mlflow.db'}", storage / "served-artifacts", storage)
    uri = server.start()
    yield uri, storage
    server.stop()


def test_the_mlflow_ui_shows_the_search_runs_children_dataset_and_val_auc(served_search, tmp_path):
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    uri, _ = served_search
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("browser")
    # The experiment's kind, which MLflow 3's UI reads where no workflow is chosen in the URL (helper h3's).
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    children = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id])
                      if r.data.tags.get("mlflow.parentRunId"))
    assert len(children) == 3
    runs_page, _ = tracking_runs_page(uri, experiment.experiment_id)  # the URL the search prints
    assert runs_page.endswith("?workflowType=machine_learning")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(runs_page)
            # the runs view: its table, the parent run of the search
            grid = page.locator(".ag-center-cols-container")
            names = page.locator('[col-id="attributes.`Run Name`"]')
            names.get_by_role("link", name="browser", exact=True).wait_for()  # not the sidebar's experiment link
            assert any(text.endswith("browser") for text in names.all_inner_texts())
            assert page.locator('[role="columnheader"]', has_text="Dataset").count() >= 1
            # the nested children: collapsed under the parent until it is expanded
            assert not any(child in " ".join(names.all_inner_texts()) for child in children)
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            names.get_by_role("link", name=children[0], exact=True).wait_for()
            shown = " ".join(names.all_inner_texts())
            assert all(child in shown for child in children), shown
            # the Dataset column: each trial's dataset input (its name, digest and split), helper h3's
            page.get_by_text("Train+Val+Test").first.wait_for()
            assert grid.get_by_text("breastsmall (").count() >= 3, grid.inner_text()[:2000]
            page.screenshot(path=str(tmp_path / "mlflow-runs.png"), full_page=True)
            # a val_auc chart: the chart view (the parent stays expanded, so its trials are drawn), its
            # charts narrowed to val_auc: the trials' curves, and the parent's best so far (helper h3's)
            page.goto(runs_page + "&compareRunsMode=CHART")
            page.get_by_placeholder("Search metric charts").fill("val_auc")
            page.get_by_text("val_auc", exact=True).first.wait_for()
            page.get_by_text("search_best_val_auc", exact=True).first.wait_for()
            page.screenshot(path=str(tmp_path / "mlflow-charts.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "mlflow-runs.png").stat().st_size > 20_000

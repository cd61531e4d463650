"""optuna-dashboard opens the search's study storage: its own WSGI app (``optuna_dashboard.wsgi``, what
``optuna-dashboard sqlite:///<storage>/optuna.db`` serves) runs on a real HTTP server on 127.0.0.1, and
its JSON API (``/api/studies``, ``/api/studies/<id>``) shows every trial with the state and the per-epoch
intermediate values Tune saw. The report's Optuna section draws Optuna's own plots from the same
studies."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna_dashboard
import pytest
from ray import tune

from analysis.document import Report
from analysis.records import SearchInfo
from analysis.sections import optuna_plots
from tests.test_optuna_study import KINDS, _fake_search
from tuner.cli import main
from tuner.optuna_study import OPTUNA_FILE
from tuner.schema import STOPPED_EARLY, trial_outcome
from tuner.tracking import read_results


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no access log on the test's output
        pass


@contextlib.contextmanager
def dashboard(url: str) -> Iterator[str]:
    """optuna-dashboard's app on ``url``'s storage, served on a free port of 127.0.0.1; yields its address."""
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(url), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def studies_through_the_dashboard(url: str) -> dict[str, dict]:
    """Every study as the dashboard's API gives it: name -> its detail (trials, states, intermediate values)."""
    with dashboard(url) as address:
        listed = json.load(urllib.request.urlopen(f"{address}/api/studies", timeout=30))["study_summaries"]
        return {s["study_name"]: json.load(urllib.request.urlopen(f"{address}/api/studies/{s['study_id']}",
                                                                  timeout=30)) for s in listed}


def _intermediate(trial: dict) -> dict[int, float]:
    return {v["step"]: v["value"] for v in trial["intermediate_values"]}


SHORT_KINDS = ["good", "weak", "boom"]  # one trial each: COMPLETE, PRUNED by ASHA, FAIL


@pytest.fixture(scope="module")
def fake_search(ray_local, module_tmp_factory):
    """Real Tune and ASHA over a trainable that reports like a trial (``tests.test_optuna_study``)."""
    folder = module_tmp_factory.mktemp("fake")
    url, trials = _fake_search(folder, SHORT_KINDS, "phase_epoch")
    return folder, url, trials


def test_the_dashboard_shows_each_trial_as_it_ended_in_tune(fake_search):
    """Short form: COMPLETE, PRUNED by ASHA, and FAIL for the one that raised, each with the epochs
    Tune saw as its intermediate values."""
    _, url, trials = fake_search
    studies = studies_through_the_dashboard(url)
    assert sorted(studies) == sorted(f"fake/kind={kind}" for kind in SHORT_KINDS)
    states = {}
    for kind, result in trials.items():
        (trial,) = studies[f"fake/kind={kind}"]["trials"]
        states[kind] = trial["state"]
        frame = result.metrics_dataframe
        assert _intermediate(trial) == dict(zip(frame["training_iteration"], frame["val_auc"], strict=True)), kind
    assert states == {"good": "Complete", "weak": "Pruned", "boom": "Fail"}
    (good,) = studies["fake/kind=good"]["trials"]
    assert good["values"] == [KINDS["good"][2]] and len(good["intermediate_values"]) == 8
    (boom,) = studies["fake/kind=boom"]["trials"]
    assert _intermediate(boom) == {1: 0.99}  # the epoch it reported before raising


def test_the_report_draws_optunas_plots_from_the_studies(fake_search):
    folder, url, _ = fake_search
    tmp_path = folder
    report = Report(tmp_path / "report", "r")
    report.folder.mkdir()
    section = report.section("Optuna studies", "?")
    ctx = SimpleNamespace(loaded=SimpleNamespace(searches=[SearchInfo("fake", optuna_storage=url)]))
    optuna_plots.build(report, section, ctx)
    images = sorted(p.name for p in report.files)
    assert images == sorted(["optuna_fake_history.png"] + [f"optuna_fake_kind_{kind}_{plot}.png"
                                                          for kind in ("good", "weak")
                                                          for plot in ("intermediate", "parallel", "slice")])
    assert all(p.stat().st_size > 5000 for p in report.files)  # a drawn figure, not an empty canvas
    assert "3 Optuna studies" in section.blocks[0].text  # boom's study is counted, but has nothing to plot
    assert "trials: 1 COMPLETE, 1 PRUNED by ASHA, 1 FAIL" in section.blocks[0].text
    empty = report.section("Optuna studies", "?")
    optuna_plots.build(report, empty, SimpleNamespace(loaded=SimpleNamespace(searches=[SearchInfo("grid")])))
    assert empty.status == "not applicable"


@pytest.mark.long
def test_a_real_search_opens_in_optuna_dashboard_and_its_report(ray_local, small_npz, tmp_path):
    """A real ``medtune tune`` (resnet18 at 28 px, 3 epochs, ASHA) opened by optuna-dashboard: one study
    per arm, each trial's state and per-epoch val_auc as Tune recorded them; the report has the plots."""
    from analysis.report import AnalysisOptions, build_report

    storage = tmp_path / "results"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["tune", "--space", "quick", "--dataset", str(small_npz), "--num-samples", "6",
                       "--max-epochs", "3", "--storage", str(storage), "--experiment", "dash", "--seed", "3"])
    assert status == 0, printed.getvalue()[-3000:]
    assert f"optuna-dashboard sqlite:///{storage / OPTUNA_FILE}" in printed.getvalue()
    studies = studies_through_the_dashboard(f"sqlite:///{storage / OPTUNA_FILE}")
    assert sorted(studies) == [f"dash/head={h}" for h in ("conv", "convskip", "linear")]
    tune_trials = tune.ExperimentAnalysis(str(storage / "dash")).trials
    seen = set()
    for name, detail in studies.items():
        head = name.partition("=")[2]
        arm = [t for t in tune_trials if t.config["head"] == head]
        assert len(detail["trials"]) == len(arm) == 2
        for trial, shown in zip(arm, sorted(detail["trials"], key=lambda t: t["number"]), strict=True):
            epochs = read_results(Path(trial.path))
            expected = "Pruned" if trial_outcome(trial.config, epochs[-1]) == STOPPED_EARLY else "Complete"
            assert shown["state"] == expected
            assert _intermediate(shown) == {r["training_iteration"]: r["val_auc"] for r in epochs}
            if expected == "Complete":
                assert shown["values"] == [epochs[-1]["best_score"]]
            seen.add(expected)
    assert seen == {"Complete", "Pruned"}
    report = build_report("dash", storage=storage, source="tune",
                          options=AnalysisOptions(resamples=100, refits=0))
    (section,) = [s for s in report.sections if s.title.startswith("Optuna studies")]
    assert section.status == "ok", [b.text for b in section.blocks]
    assert (report.folder / "optuna_dash_history.png").is_file()
    assert "optuna_dash_head_linear_intermediate.png" in report.markdown_path.read_text()

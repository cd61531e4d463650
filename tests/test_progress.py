"""The terminal: by default a start line, one line per finished trial, a progress line (rewritten on a
TTY, repeated after a silence otherwise) and the summary; ``--verbose`` Tune's tables; ``--quiet`` the
summary only; the libraries' log noise (checkpoints, sync thresholds) in ``<storage>/medtune.log``."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ray import tune
from ray.tune.search import BasicVariantGenerator

from tests.test_optuna_study import MAX_T, _fake_trial
from tuner import progress
from tuner.progress import TrialProgress, progress_callbacks
from tuner.terminal import LOG_FILE, TUNE_OUTPUT_ENV, say, terminal, tune_verbosity
from tuner.tune_build import asha, make_tuner

REPO = Path(__file__).resolve().parents[1]


def _fake_run(tmp_path: Path, kinds: list[str]) -> None:
    """Real Tune and ASHA through ``make_tuner`` (what every medtune search builds), one trial at a time."""
    points = [{"kind": kind, "epochs": MAX_T} for kind in kinds]
    make_tuner(tune.with_resources(_fake_trial, {"cpu": 2}), name="fake", storage=tmp_path, metric="val_auc",
               mode="max", scheduler=asha(MAX_T, 1, 2, time_attr="phase_epoch"),
               search_alg=BasicVariantGenerator(points_to_evaluate=points), num_samples=len(points),
               trial_name=lambda trial: f"t-{trial.config['kind']}", callbacks=[],
               param_space={"kind": None, "epochs": None}).fit()


def test_one_line_per_finished_trial_and_nothing_from_tune(ray_local, tmp_path, capfd):
    with terminal("default", tmp_path):
        _fake_run(tmp_path, ["good", "weak", "boom"])
    out, err = capfd.readouterr()
    lines = out.splitlines()
    trial_lines = [line for line in lines if line.startswith("medtune: trial ")]
    assert trial_lines[0] == "medtune: trial 1/3 t-good: completed after 8 epochs, val_auc 0.9000"
    assert trial_lines[1] == "medtune: trial 2/3 t-weak: pruned by ASHA after 1 epoch, val_auc 0.6000"
    assert trial_lines[2].startswith("medtune: trial 3/3 t-boom: errored (traceback in ")
    assert len(trial_lines) == 3
    assert all(line.startswith("medtune: ") for line in lines), out  # no table, no "Trial status"
    assert "Checkpoint" not in out + err and "snapshotting" not in out + err


def test_quiet_and_verbose_choose_what_tune_prints():
    with terminal("quiet", None):
        assert progress_callbacks("val_auc", "max", 4, str) == [] and tune_verbosity() == 0
    with terminal("verbose", None):
        assert progress_callbacks("val_auc", "max", 4, str) == [] and tune_verbosity() == 2
        assert TUNE_OUTPUT_ENV not in os.environ  # Tune's own (newer) output engine, its full tables
    with terminal("default", None):
        (callback,) = progress_callbacks("val_auc", "max", 4, str)
        assert isinstance(callback, TrialProgress) and tune_verbosity() == 0
        assert os.environ[TUNE_OUTPUT_ENV] == "0"


def test_library_logs_go_to_the_log_file_and_come_back_after(tmp_path, capfd):
    ray_logger = logging.getLogger("ray.tune.execution.experiment_state")
    with terminal("default", tmp_path):
        ray_logger.warning("Experiment state snapshotting has been triggered multiple times")
        logging.getLogger("mlflow.store.db.utils").warning("Creating initial MLflow database tables")
        say("medtune: shown")
    with terminal("quiet", tmp_path):
        say("medtune: not shown")
    out, err = capfd.readouterr()
    assert out == "medtune: shown\n" and "snapshotting" not in err and "MLflow database" not in err
    log = (tmp_path / LOG_FILE).read_text()
    assert "WARNING ray.tune.execution.experiment_state: Experiment state snapshotting" in log
    assert "mlflow.store.db.utils: Creating initial" in log
    handlers = logging.getLogger("ray").handlers
    assert not any(getattr(h, "baseFilename", "").endswith(LOG_FILE) for h in handlers)  # put back


def test_no_log_file_until_something_is_logged(tmp_path):
    with terminal("default", tmp_path / "results"):
        pass
    assert not (tmp_path / "results").exists()  # a command refused for bad input leaves nothing


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Trial:
    def __init__(self, trial_id: str, config: dict, last_result: dict) -> None:
        self.trial_id, self.config, self.last_result, self.path = trial_id, config, last_result, "/x"


def test_the_progress_line_is_rewritten_on_a_tty_and_repeated_after_silence_otherwise(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setattr(progress, "REDRAW_S", 0.0)
    bar = TrialProgress("val_auc", "max", 2, lambda t: t.trial_id)
    first = _Trial("a", {"epochs": 4}, {"epoch": 4, "best_score": 0.8})
    bar.on_trial_start(0, [], first)
    bar.on_trial_result(0, [], first, {"val_auc": 0.8})
    bar.on_trial_complete(0, [], first)
    bar.on_experiment_end([])
    text = tty.getvalue()
    assert "\r\033[Kmedtune: trial 1/2 a: completed after 4 epochs, val_auc 0.8000\n" in text
    assert text.endswith("1/2 done (0 pruned, 0 errored), 0 running; best val_auc 0.8000 (a); 0m00s\n")
    assert text.count("\r\033[Kmedtune: [") == 3  # drawn at the start, the epoch and the end, in place
    assert text.count("\n") == 2  # the trial's line and the last progress line; the rest rewritten in place
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stdout", pipe)
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)
    quiet_bar = TrialProgress("val_elbo", "min", 3, lambda t: t.trial_id)
    second = _Trial("b", {"epochs": 4}, {"epoch": 2, "best_val_elbo": 9.5})
    quiet_bar.on_trial_start(0, [], second)
    quiet_bar.on_trial_complete(0, [], second)
    lines = pipe.getvalue().splitlines()
    assert "\r" not in pipe.getvalue()
    assert lines[0].startswith("medtune: [") and "0/3 done" in lines[0] and "1 running" in lines[0]
    assert lines[1] == "medtune: trial 1/3 b: pruned by ASHA after 2 epochs, val_elbo 9.5000"
    assert "1/3 done (1 pruned, 0 errored), 0 running; best val_elbo 9.5000 (b)" in lines[2]


def _medtune(tmp_path: Path, small_npz: Path, name: str, samples: int, *flags: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "tuner", "tune", "--space", "quick", "--dataset", str(small_npz),
                           "--num-samples", str(samples), "--max-epochs", "1", "--storage", str(tmp_path),
                           "--experiment", name, *flags], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


@pytest.mark.long
def test_the_command_lines_at_each_level(small_npz, tmp_path):
    """``medtune tune`` in a subprocess (its own Ray, stdout a pipe): a few lines by default, one per
    trial; Tune's tables with --verbose; the summary only with --quiet."""
    default = _medtune(tmp_path, small_npz, "default", 6)
    trials = [line for line in default if line.startswith("medtune: trial ")]
    assert [line.split()[2] for line in trials] == [f"{i}/6" for i in range(1, 7)]
    assert default[0].startswith("medtune: search 'default' (optuna, space quick")
    assert len(default) <= 26, "\n".join(default)
    assert not [line for line in default if "Checkpoint" in line or "Token authentication" in line
                or "snapshotting" in line or "new study created" in line]
    log = (tmp_path / LOG_FILE).read_text()
    assert "A new study created in RDB" in log  # what Optuna said went to the file
    summary = default[default.index("medtune: 6 trials: 6 completed, 0 stopped early by ASHA, 0 errored."):]
    verbose = _medtune(tmp_path, small_npz, "verbose", 3, "--verbose")
    assert len(verbose) > 3 * len(default) and any("Trial status" in line for line in verbose)
    quiet = [line for line in _medtune(tmp_path, small_npz, "quiet", 3, "--quiet") if line]
    assert quiet[0] == "medtune: 3 trials: 3 completed, 0 stopped early by ASHA, 0 errored."
    assert not [line for line in quiet if line.startswith(("medtune: trial", "medtune: search", "medtune: ["))]
    assert len(quiet) <= len(summary)


def test_steps_of_a_long_task_are_thinned_in_a_pipe(tmp_path, capsys, monkeypatch):
    """In a pipe (not a TTY) a transient step line is kept only after a quiet spell, so a report's fifteen
    sections give a line now and then, not fifteen; lines that are not transient always stay."""
    from tuner import terminal as terminal_module

    quiet = terminal_module.PIPED_TRANSIENT_EVERY_S
    clock = iter([1000.0, 1001.0, 1002.0, 1002.0 + quiet + 1, 1002.0 + quiet + 5])
    monkeypatch.setattr(terminal_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(terminal_module, "_last_line_at", 0.0)
    with terminal("default", tmp_path):
        say("step 1", transient=True)   # the first after a quiet spell: kept
        say("step 2", transient=True)   # a second later: left out
        say("done")                     # not transient: kept
        say("step 3", transient=True)   # after a quiet spell again: kept
        say("step 4", transient=True)   # 4 s later: left out
    assert capsys.readouterr().out.splitlines() == ["step 1", "done", "step 3"]

"""A checkpoint that is truncated or unreadable on resume makes its trial go back to its previous good
checkpoint, or start afresh, with a warning; it never crashes the trial or the search."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from tests.sessions import CrashAfter
from tests.test_interrupt import TRIALS, children, interrupted_search, trial_results
from tuner.search import run_search
from tuner.tracking import read_results
from tuner.training.checkpoint import STATE_FILE, UnreadableCheckpoint, read_checkpoint
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

CONFIG = {"backbone": "resnet18_small", "weights": "none", "head": "linear", "strategy": "ft", "optimizer": "sgd",
          "lr": 0.05, "seed": 0, "epochs": 2, "batch_size": 32, "image_size": 28}


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_file_is_refused_before_anything_is_applied(small_data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_trial(CONFIG, small_data, CrashAfter(tmp_path, 1))
    read_checkpoint(tmp_path / "checkpoint")  # whole: it reads
    _truncate(tmp_path / "checkpoint" / STATE_FILE)
    with pytest.raises(UnreadableCheckpoint, match=STATE_FILE):
        read_checkpoint(tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / STATE_FILE).write_text("not a checkpoint")
    with pytest.raises(UnreadableCheckpoint):
        read_checkpoint(tmp_path / "checkpoint")


def test_medtune_train_resumes_from_the_previous_checkpoint_or_afresh_with_a_warning(small_data, tmp_path, capsys):
    fresh = LocalSession(tmp_path / "fresh")
    expected = run_trial(CONFIG, small_data, fresh)
    with pytest.raises(KeyboardInterrupt):
        run_trial(CONFIG, small_data, CrashAfter(tmp_path / "cut", 1))
    checkpoint = tmp_path / "cut" / "checkpoint"
    shutil.copytree(checkpoint, tmp_path / "cut" / "checkpoint.previous")  # a replacement cut short
    _truncate(checkpoint / STATE_FILE)
    capsys.readouterr()
    resumed = LocalSession(tmp_path / "cut", resume=True)
    assert run_trial(CONFIG, small_data, resumed) == expected
    assert [m["epoch"] for m in resumed.history] == [2]  # from the previous, good checkpoint (epoch 1)
    assert "checkpoint unreadable, skipped" in capsys.readouterr().err

    _truncate(checkpoint / STATE_FILE)  # now the only checkpoint is broken
    shutil.rmtree(tmp_path / "cut" / "checkpoint.previous", ignore_errors=True)
    again = LocalSession(tmp_path / "cut", resume=True)
    assert run_trial(CONFIG, small_data, again) == expected
    assert [m["epoch"] for m in again.history] == [1, 2]  # afresh
    assert "training starts afresh" in capsys.readouterr().err


EPOCHS = 4  # a trial is interrupted between its first state checkpoint and its end, with room to spare


def _registered_states(trial_dir) -> list:
    """The trial's state checkpoints, if Tune has registered one: Tune writes a result line when it takes
    the epoch's report and its checkpoint. (A checkpoint folder with no result line yet is one Tune never
    took: on resume the trial restarts without it, whatever it holds.)"""
    return sorted(trial_dir.glob(f"checkpoint_*/{STATE_FILE}")) if (trial_dir / "result.json").is_file() and \
        (trial_dir / "result.json").read_text().strip() else []


def _unfinished_with_state(storage) -> bool:
    folder = storage / "corrupt"
    return folder.is_dir() and any(_registered_states(d) and len(read_results(d)) < EPOCHS
                                   for d in folder.iterdir() if d.is_dir())


def test_a_search_resumed_onto_truncated_checkpoints_restarts_those_trials_and_finishes(ray_local, small_npz,
                                                                                        tmp_path):
    request, _ = interrupted_search(small_npz, tmp_path, "corrupt", max_epochs=EPOCHS, checkpoint_every=1,
                                    when=lambda: _unfinished_with_state(tmp_path))
    before = trial_results(tmp_path / "corrupt")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    done = {r.data.tags["medtune.trial_id"] for r in children(client, "corrupt") if r.info.status == "FINISHED"}
    broken = []
    for trial_dir in (tmp_path / "corrupt").iterdir():
        if not trial_dir.is_dir() or trial_dir.name.split("-")[0] in done:
            continue
        states = _registered_states(trial_dir)
        for state in states:
            _truncate(state)
        if states:
            broken.append(trial_dir.name.split("-")[0])
    assert broken, "no unfinished trial had a state checkpoint to break"

    outcome = run_search(replace(request, resume=True))
    assert outcome.trials == TRIALS and outcome.errored == 0
    after = trial_results(tmp_path / "corrupt")
    assert all(after[t] == before[t] for t in done)
    runs = {r.data.tags["medtune.trial_id"]: r for r in children(client, "corrupt")}
    assert len(runs) == TRIALS and all(r.info.status == "FINISHED" for r in runs.values())
    for trial_id in broken:  # the warning reached the trial's run; it started afresh and finished
        assert "afresh" in runs[trial_id].data.tags["medtune.checkpoint_warning"]
        epochs = sorted(m.step for m in client.get_metric_history(runs[trial_id].info.run_id, "epoch"))
        assert epochs == list(range(1, EPOCHS + 1))

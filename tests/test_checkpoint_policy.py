"""Checkpoints that cost what they must: a trial writes its full state by the declared policy
(``--checkpoint-every`` / ``--checkpoint-seconds``), its best epoch's test scores whenever they change,
its best model at its end; a resume loses at most the epochs since the last state checkpoint and
continues bit-exactly; Tune keeps the previous state checkpoint until the next one is complete."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.services import REPO
from tests.sessions import CrashAfter
from tuner.errors import ConfigError
from tuner.schema import TEST_SCORES_FILE
from tuner.search import SearchRequest, run_search
from tuner.training.checkpoint import (
    BEST_MODEL_FILE,
    CHECKPOINT_RANK,
    STATE_FILE,
    CheckpointClock,
    CheckpointPolicy,
)
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

CONFIG = {"backbone": "resnet18_small", "weights": "none", "head": "linear", "strategy": "ft", "optimizer": "sgd",
          "lr": 0.05, "seed": 0, "epochs": 3, "batch_size": 32, "image_size": 28}


def test_the_clock_writes_state_by_count_or_time_and_scores_when_the_best_changes():
    clock = CheckpointClock(CheckpointPolicy(every_epochs=2, every_seconds=0))
    kinds = [clock.kind(e, last=e == 5, best_changed=e in (1, 3)) for e in range(1, 6)]
    assert kinds == ["scores", "state", "scores", "state", "final"]
    by_time = CheckpointClock(CheckpointPolicy(every_epochs=0, every_seconds=3600))
    assert [by_time.kind(e, last=e == 3, best_changed=False) for e in (1, 2, 3)] == [None, None, "final"]
    by_time.last_state -= 3601  # an hour has passed since the last state checkpoint
    assert by_time.kind(4, last=False, best_changed=False) == "state"
    assert by_time.kind(5, last=False, best_changed=False) is None  # the hour starts again


def test_the_policy_is_range_checked_on_the_driver(small_npz):
    with pytest.raises(ConfigError, match="--checkpoint-every.*>= 0"):
        CheckpointPolicy(every_epochs=-1)
    done = subprocess.run([sys.executable, "-m", "tuner", "tune", "--space", "quick", "--dataset", str(small_npz),
                           "--checkpoint-seconds", "-5"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "--checkpoint-seconds" in done.stderr and "Traceback" not in done.stderr


class _Kinds(LocalSession):
    """Records which files each epoch's checkpoint folder holds."""

    def __init__(self, out_dir, policy, **kwargs) -> None:
        super().__init__(out_dir, policy=policy, **kwargs)
        self.files: list[set[str] | None] = []

    def report(self, metrics, checkpoint) -> None:
        self.files.append(None if checkpoint is None else {p.name for p in checkpoint.iterdir()})
        super().report(metrics, checkpoint)


def test_run_trial_writes_by_the_policy_and_resumes_bit_exactly_from_the_last_state(small_data, tmp_path):
    policy = CheckpointPolicy(every_epochs=2, every_seconds=0)
    whole = _Kinds(tmp_path / "whole", policy)
    expected = run_trial(CONFIG, small_data, whole)
    assert whole.files[1] is not None and STATE_FILE in whole.files[1]  # epoch 2: the state
    assert whole.files[2] is not None and STATE_FILE not in whole.files[2]  # epoch 3 (last): best model + scores
    assert {BEST_MODEL_FILE, TEST_SCORES_FILE} <= whole.files[2]
    for files in (whole.files[0], whole.files[2]):
        assert files is None or STATE_FILE not in files

    with pytest.raises(KeyboardInterrupt):
        # preempted after epoch 3's report
        run_trial(CONFIG, small_data, CrashAfter(tmp_path / "cut", 3, policy=policy))
    resumed = LocalSession(tmp_path / "cut", resume=True, policy=policy)
    result = run_trial(CONFIG, small_data, resumed)
    assert [m["epoch"] for m in resumed.history] == [3]  # only the epoch since the last state is lost
    assert result == expected  # bit-exact: the same numbers as the uninterrupted trial
    state = torch.load(tmp_path / "cut" / "checkpoint" / STATE_FILE, weights_only=True)
    assert state["progress"]["epoch"] == 2


def test_tune_keeps_the_newest_state_beside_the_newest_checkpoint_and_mlflow_gets_the_scores(
        ray_local, small_npz, tmp_path):
    outcome = run_search(SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=3,
                                       pins={"head": "linear", "lr": 0.05, "seed": 0, "backbone": "resnet18_small"},
                                       storage=str(tmp_path), experiment="policy", grace_period=3,
                                       checkpoint_every=2, checkpoint_seconds=0))
    assert outcome.trials == 1 and outcome.errored == 0
    trial_dir = next(p for p in (tmp_path / "policy").iterdir() if (p / "result.json").is_file())
    kept = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
    holds_state = [(trial_dir / name / STATE_FILE).is_file() for name in kept]
    assert len(kept) == 2 and holds_state == [True, False], kept  # epoch 2's state kept beside the final one
    rows = [line for line in pd.read_json(trial_dir / "result.json", lines=True).to_dict("records")]
    ranks = [row.get(CHECKPOINT_RANK) for row in rows]
    assert ranks[1] > 0 and ranks[2] == -1.0
    final = pd.read_csv(trial_dir / kept[-1] / TEST_SCORES_FILE)
    client = MlflowClient(outcome.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("policy").experiment_id],
                             filter_string="tags.`medtune.trial_id` != ''")[0]
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, TEST_SCORES_FILE, str(tmp_path)))
    pd.testing.assert_frame_equal(logged, final)


def test_the_default_policy_writes_no_state_in_a_short_trial_but_keeps_the_best_scores(ray_local, small_npz,
                                                                                       tmp_path):
    outcome = run_search(SearchRequest(space="quick", dataset=str(small_npz), search="grid", max_epochs=2,
                                       pins={"head": "linear", "lr": 0.05, "seed": 0, "backbone": "resnet18_small"},
                                       storage=str(tmp_path), experiment="default", grace_period=2))
    assert outcome.trials == 1 and outcome.errored == 0
    trial_dir = next(p for p in (tmp_path / "default").iterdir() if (p / "result.json").is_file())
    kept = list(trial_dir.glob("checkpoint_*"))
    assert len(kept) == 1 and not (kept[0] / STATE_FILE).exists()
    assert (kept[0] / BEST_MODEL_FILE).is_file() and (kept[0] / TEST_SCORES_FILE).is_file()

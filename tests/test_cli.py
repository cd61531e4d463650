"""The command line: bad input is refused before Ray starts, with the problem and the fix, exit code
2 and no traceback; `medtune train` runs one trial without Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, ray_never_started
from tuner.cli import main


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "nope", "--dataset", "breastmnist"], "unknown search space 'nope'"),
    (["--space", "quick", "--dataset", "breastmnist", "--set", "backbone=vgg99"], "unknown backbone 'vgg99'"),
    (["--space", "quick", "--dataset", "breastmnist", "--set", "head=attention"], "unknown head 'attention'"),
    (["--space", "quick", "--dataset", "breastmnist", "--set", "strategy=sideways"], "unknown strategy"),
    (["--space", "convskip_unfreeze", "--dataset", "breastmnist", "--set", "weights=none", "--set", "unfreeze=6"],
     "unfreeze=6 is out of range"),
    (["--space", "quick", "--dataset", "nosuchmnist"], "data set 'nosuchmnist' not found"),
    (["--space", "quick", "--dataset", "breastmnist", "--set", "lerning_rate=0.1"], "unknown parameter 'lerning_rate'"),
])
def test_bad_input_exits_2_before_ray_starts(args, message, capsys):
    with ray_never_started():
        assert main(["tune", *args, "--storage", "/nonexistent/never-created"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("medtune: error:")


def test_missing_dataset_and_one_class_split_are_refused(tmp_path, capsys, breastmnist):
    import numpy as np

    assert main(["tune", "--space", "quick", "--dataset", "breastmnist", "--data-root", str(tmp_path)]) == 2
    assert str(tmp_path / "breastmnist.npz") in capsys.readouterr().err
    arrays = {}
    for split in ("train", "val", "test"):
        source = breastmnist.split(split)
        arrays[f"{split}_images"] = source.images[:30]
        arrays[f"{split}_labels"] = (np.ones(30) if split == "test" else source.labels[:30]).reshape(-1, 1)
    np.savez(tmp_path / "skewed.npz", **arrays)
    assert main(["tune", "--space", "quick", "--dataset", str(tmp_path / "skewed.npz"),
                 "--storage", str(tmp_path / "results")]) == 2
    assert "test split contains only one class" in capsys.readouterr().err


def test_module_entry_point_prints_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tuner", "tune", "--space", "quick", "--dataset", "breastmnist",
                           "--set", "unfreeze=3"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "unfreeze=3 is a parameter of the topk strategy" in done.stderr


def test_train_runs_one_trial_without_ray(small_npz, tmp_path, capsys):
    with ray_never_started():
        code = main(["train", "--space", "quick", "--dataset", str(small_npz), "--set", "epochs=1", "--set",
                     "head=conv", "--set", "kernel_size=5", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert '"kernel_size": 5' in out and '"epoch": 1' in out
    assert (tmp_path / "checkpoint" / "test_scores.csv").is_file()


def test_train_refuses_a_list_pin_with_one_line(small_npz, tmp_path, capsys):
    """``medtune train`` runs one configuration: a list would have trained its first value unsaid."""
    with ray_never_started():
        code = main(["train", "--space", "quick", "--dataset", str(small_npz), "--set", "head=['linear','conv']",
                     "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "medtune train runs one configuration" in err and "--set head='linear'" in err
    assert not (tmp_path / "checkpoint").exists()

"""One trial through the same code the search runs, reporting to a local session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.sessions import straight_and_resumed
from tuner.training.checkpoint import BEST_MODEL_FILE, STATE_FILE, TEST_SCORES_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

BASE = {"backbone": "resnet18", "weights": "none", "head": "convskip", "kernel_size": 3, "filters": 2,
        "image_size": 28, "batch_size": 32, "lr": 0.01, "epochs": 3, "augment": True, "seed": 3}
REPORTED = {"epoch", "train_loss", "train_acc", "val_loss", "val_auc", "val_acc", "test_auc", "test_acc",
            "n_params", "n_trainable_params", "best_val_auc", "best_epoch"}


def test_reports_every_epoch_and_keeps_best_model_scores(small_data, tmp_path):
    session = LocalSession(tmp_path)
    run_trial(BASE, small_data, session)
    assert [r["epoch"] for r in session.history] == [1, 2, 3]
    assert all(REPORTED <= set(r) for r in session.history)
    last = session.history[-1]
    best = max(session.history, key=lambda r: r["val_auc"])
    assert last["best_val_auc"] == best["val_auc"] and last["best_epoch"] == best["epoch"]
    assert last["test_auc"] == best["test_auc"], "test metrics must be those of the best-validation epoch"
    checkpoint = tmp_path / "checkpoint"
    assert {STATE_FILE, BEST_MODEL_FILE, TEST_SCORES_FILE} <= {p.name for p in checkpoint.iterdir()}
    scores = pd.read_csv(checkpoint / TEST_SCORES_FILE)
    assert np.array_equal(scores["label"].to_numpy(), small_data.test.labels)
    assert np.allclose(scores[["score_0", "score_1"]].sum(axis=1), 1.0, atol=1e-5)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(scores["label"], scores["score_1"]) == pytest.approx(last["test_auc"], abs=1e-6)


def test_resume_from_checkpoint_is_bit_exact(small_data, tmp_path):
    uninterrupted, resumed = straight_and_resumed(BASE, small_data, tmp_path, crash_after=1)
    assert [r["epoch"] for r in resumed.history] == [2, 3]
    for expected, got in zip(uninterrupted.history[1:], resumed.history, strict=True):
        assert got == expected
    final_a = torch.load(tmp_path / "straight" / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    final_b = torch.load(tmp_path / "resumed" / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_linear_probe_leaves_trunk_bit_identical(small_data, tmp_path):
    from tuner.models import get_backbone

    spec = get_backbone("resnet18")
    torch.manual_seed(11)
    trunk = spec.build(weights=None)
    trunk.fc = torch.nn.Identity()
    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    torch.save(start, tmp_path / "start.pt")
    session = LocalSession(tmp_path / "out")
    run_trial({**BASE, "weights": str(tmp_path / "start.pt"), "strategy": "lp", "epochs": 2}, small_data, session)
    assert session.history[-1]["n_trainable_params"] == sum(
        p.numel() for name, p in _head_params(tmp_path / "out"))
    trained = torch.load(tmp_path / "out" / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    for key, value in start.items():
        assert torch.equal(trained[f"trunk.{key}"], value), key


def _head_params(out: Path):
    state = torch.load(out / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    return [(k, v) for k, v in state.items() if k.startswith("head.")]


def test_exploding_loss_ends_the_trial_with_its_reason(small_data, tmp_path):
    with pytest.raises(FloatingPointError, match="training loss became"):
        run_trial({**BASE, "lr": 1e12, "epochs": 2}, small_data, LocalSession(tmp_path))


def test_multilabel_trial_uses_sigmoid_scores(small_data, tmp_path):
    """A multi-label .npz (one 0/1 column per label) trains with per-label sigmoid + BCE."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        source = small_data.split(split)
        y = source.labels
        arrays[f"{split}_images"] = source.images
        arrays[f"{split}_labels"] = np.stack([y, 1 - y, rng.integers(0, 2, len(y))], axis=1).astype(np.uint8)
    np.savez(tmp_path / "multi.npz", **arrays)
    from tuner.data import load_dataset

    data = load_dataset(str(tmp_path / "multi.npz"))
    assert data.task == "multilabel" and data.num_classes == 3
    session = LocalSession(tmp_path / "out")
    result = run_trial({**BASE, "epochs": 1, "head": "linear", "kernel_size": None, "filters": None}, data, session)
    assert {"val_auc", "val_map", "val_macro_acc", "val_f1", "test_auc_c2"} <= set(result)
    scores = pd.read_csv(tmp_path / "out" / "checkpoint" / TEST_SCORES_FILE)
    assert [c for c in scores.columns if c.startswith("label_")] == ["label_0", "label_1", "label_2"]
    # sigmoid scores: each label's score is a probability of its own, rows need not sum to 1
    assert not np.allclose(scores[["score_0", "score_1", "score_2"]].sum(axis=1), 1.0)

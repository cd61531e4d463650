"""Metrics against scikit-learn and hand-checked values; losses against their formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

from tuner._torchvision import torchvision
from tuner.training.losses import FocalLoss, build_loss
from tuner.training.metrics import classification_metrics


def test_binary_hand_checked():
    labels = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(labels, probs, "binary")
    # positives (0.4, 0.8, 0.9) vs negatives (0.1, 0.6): 5 of 6 pairs ranked right
    assert m["auc"] == pytest.approx(5 / 6) == pytest.approx(roc_auc_score(labels, p1))
    assert m["auc_c0"] == pytest.approx(5 / 6) and m["auc_c1"] == pytest.approx(5 / 6)
    # predictions 0,1,0,1,1: accuracy 3/5; for both classes (TP+TN)/N = 3/5
    assert m["acc"] == pytest.approx(0.6) and m["macro_acc"] == pytest.approx(0.6)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(labels, [0, 1, 0, 1, 1]))
    # binary map and f1: scikit-learn's binary defaults, class 1 positive (not the mean of both classes)
    assert m["f1"] == pytest.approx(f1_score(labels, [0, 1, 0, 1, 1]))
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # TP 2, FP 1, FN 1: precision = recall = 2/3
    assert m["map"] == pytest.approx(average_precision_score(labels, p1))
    # AP of class 1 by hand: ranking 0.9+, 0.8+, 0.6-, 0.4+, 0.1-: precision at each positive 1, 1, 3/4
    assert m["map"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    macro_map = np.mean([average_precision_score(labels == 0, 1 - p1), average_precision_score(labels, p1)])
    assert m["map"] != pytest.approx(macro_map)  # what it was before: both classes averaged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_are_sklearns_binary_defaults_with_class_1_positive(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 80)
    p1 = np.clip(0.35 * labels + rng.uniform(0, 0.65, 80), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(labels, probs, "binary")
    predicted = probs.argmax(axis=1)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, p1))
    assert m["map"] == pytest.approx(average_precision_score(labels, p1))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted))
    assert m["acc"] == pytest.approx(np.mean(predicted == labels))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(labels, predicted))
    # swapping which class is called 1 changes map and f1 (they score class 1), not auc
    swapped = classification_metrics(1 - labels, probs[:, ::-1], "binary")
    assert swapped["auc"] == pytest.approx(m["auc"])
    assert swapped["map"] == pytest.approx(average_precision_score(1 - labels, 1 - p1))
    assert swapped["f1"] == pytest.approx(f1_score(1 - labels, 1 - predicted))


def test_multiclass_against_sklearn_and_the_papers_macro_accuracy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    probs = rng.dirichlet(np.ones(4), 60)
    probs[np.arange(60), labels] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, "multiclass")
    predicted = probs.argmax(axis=1)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    for k in range(4):
        assert m[f"auc_c{k}"] == pytest.approx(roc_auc_score(labels == k, probs[:, k]))
    assert m["acc"] == pytest.approx(np.mean(predicted == labels))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(labels, predicted))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    onehot = np.eye(4)[labels]
    assert m["map"] == pytest.approx(average_precision_score(onehot, probs, average="macro"))
    # the paper's eq. 6: mean over classes of (TP + TN) / (TP + TN + FP + FN)
    per_class = []
    for k in range(4):
        tp = np.sum((predicted == k) & (labels == k))
        tn = np.sum((predicted != k) & (labels != k))
        per_class.append((tp + tn) / len(labels))
    assert m["macro_acc"] == pytest.approx(np.mean(per_class))


def test_multilabel_against_sklearn():
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=np.float32)
    probs = np.array([[0.9, 0.2, 0.7], [0.3, 0.8, 0.4], [0.6, 0.4, 0.1], [0.2, 0.1, 0.9], [0.7, 0.6, 0.2],
                      [0.4, 0.7, 0.3]])
    m = classification_metrics(labels, probs, "multilabel")
    predicted = (probs >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, average="macro"))
    assert m["map"] == pytest.approx(average_precision_score(labels, probs, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert m["acc"] == pytest.approx(np.mean((predicted == labels).all(axis=1)))  # exact match: rows 0,1,3 = 3/6
    assert m["acc"] == pytest.approx(0.5)
    assert m["macro_acc"] == pytest.approx(np.mean((predicted == labels).mean(axis=0)))
    assert m["kappa"] == pytest.approx(np.mean([cohen_kappa_score(labels[:, k], predicted[:, k]) for k in range(3)]))


def test_absent_class_has_no_auc_and_is_left_out_of_the_mean():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    m = classification_metrics(labels, probs, "multiclass")
    assert np.isnan(m["auc_c2"]) and m["auc"] == pytest.approx(np.mean([m["auc_c0"], m["auc_c1"]]))


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 5), torch.randint(0, 5, (16,))
    focal = FocalLoss("multiclass", gamma=0.0, alpha=None)
    assert focal(logits, targets).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())


def test_focal_loss_formula_on_known_inputs():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 1])
    p_true = torch.softmax(logits, 1)[torch.arange(3), targets]
    gamma, alpha = 2.0, 0.25
    alpha_t = torch.tensor([1 - alpha, alpha, alpha])
    expected = (-alpha_t * (1 - p_true) ** gamma * torch.log(p_true)).mean()
    assert FocalLoss("binary", gamma, alpha)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_multilabel_focal_loss_is_torchvisions_sigmoid_focal_loss_and_the_formula():
    torch.manual_seed(1)
    logits, targets = torch.randn(8, 3), torch.randint(0, 2, (8, 3)).float()
    ours = FocalLoss("multilabel", gamma=1.5, alpha=0.3)(logits, targets)
    reference = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.3, gamma=1.5, reduction="mean")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.3 * targets + 0.7 * (1 - targets)
    by_hand = (-alpha_t * (1 - p_t) ** 1.5 * torch.log(p_t)).mean()
    assert ours.item() == pytest.approx(reference.item()) == pytest.approx(by_hand.item(), rel=1e-5)


def test_default_losses_by_task():
    assert isinstance(build_loss("binary", {"loss": "ce"}), torch.nn.CrossEntropyLoss)
    assert isinstance(build_loss("multilabel", {"loss": "ce"}), torch.nn.BCEWithLogitsLoss)

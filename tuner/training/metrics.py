"""Scores of a model's probabilities, with scikit-learn's definitions, for every task.

For multi-class and multi-label tasks every class (or label) is scored one-vs-rest on its own
probability column and the macro average is reported, as the fine-tuning-strategies paper defines its
metrics. A class absent from a split has no AUC (NaN) and is left out of the macro averages.

A binary task follows scikit-learn's binary convention with class 1 as the positive class, as
MedMNIST's evaluator does for AUC: ``auc`` is ``roc_auc_score(y, p1)`` (in exact arithmetic the macro
average of both columns, but float32 p0 and 1 - p1 can tie differently), ``map`` is
``average_precision_score(y, p1)`` and ``f1`` is
``f1_score(y, prediction)``, each of class 1 alone. Which class is 1 is the data set's: in BreastMNIST
class 1 is *normal or benign* and class 0 *malignant*, so its binary ``map`` and ``f1`` score finding
the non-malignant images (the per-class ``auc_c<k>`` are there for either reading).

- ``acc``: accuracy (exact match of all labels for a multi-label task);
- ``macro_acc``: mean over classes of (TP + TN) / N, the paper's "macro accuracy";
- ``kappa``: Cohen's kappa (mean over labels for a multi-label task);
- ``f1``: macro F1 (binary: class 1's F1); predictions are the argmax, or probability >= 0.5 per label
  for multi-label.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

from tuner.data.splits import Task


def indicator(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices (N,) as a one-hot (N, C) matrix; a multi-label matrix is returned as it is."""
    if labels.ndim == 2:
        return labels.astype(np.int64)
    return np.eye(num_classes, dtype=np.int64)[labels]


def predictions(probs: np.ndarray, task: Task) -> np.ndarray:
    """(N, C) 0/1 predictions: the argmax class, or every label with probability >= 0.5."""
    if task == "multilabel":
        return (probs >= 0.5).astype(np.int64)
    return np.eye(probs.shape[1], dtype=np.int64)[probs.argmax(axis=1)]


def classification_metrics(labels: np.ndarray, probs: np.ndarray, task: Task) -> dict[str, float]:
    """``auc, map, acc, macro_acc, kappa, f1`` and per-class ``auc_c<k>``."""
    truth, predicted = indicator(labels, probs.shape[1]), predictions(probs, task)
    per_class_auc = [_one_vs_rest(roc_auc_score, truth[:, k], probs[:, k]) for k in range(probs.shape[1])]
    per_class_ap = [_one_vs_rest(average_precision_score, truth[:, k], probs[:, k]) for k in range(probs.shape[1])]
    if task == "multilabel":
        kappa = float(np.nanmean([_kappa(truth[:, k], predicted[:, k]) for k in range(truth.shape[1])]))
    else:
        kappa = _kappa(labels, probs.argmax(axis=1))
    if task == "binary":  # scikit-learn's binary convention, class 1 positive (MedMNIST's evaluator's AUC)
        auc, mean_ap = per_class_auc[1], per_class_ap[1]
        f1 = float(f1_score(labels, predicted[:, 1], zero_division=0))
    else:
        auc, mean_ap = _nanmean(per_class_auc), _nanmean(per_class_ap)
        f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
    scores = {
        "auc": auc,
        "map": mean_ap,
        "acc": float(accuracy_score(truth, predicted)),
        "macro_acc": float(np.mean((truth == predicted).mean(axis=0))),
        "kappa": kappa,
        "f1": f1,
    }
    scores.update({f"auc_c{k}": value for k, value in enumerate(per_class_auc)})
    return scores


def _one_vs_rest(metric, truth: np.ndarray, scores: np.ndarray) -> float:
    if truth.min() == truth.max():  # the class is absent from (or is all of) this split
        return float("nan")
    return float(metric(truth, scores))


def _kappa(truth: np.ndarray, predicted: np.ndarray) -> float:
    with warnings.catch_warnings():  # kappa of constant vectors divides 0 by 0: NaN, said so in the docs
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(truth, predicted))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")

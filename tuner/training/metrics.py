"""Scores of a model's class probabilities, with scikit-learn's definitions.

Binary AUC is computed on the probability of class 1, as MedMNIST's evaluator does; multi-class AUC
is the macro average of one-vs-rest AUCs.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                               labels=np.arange(probs.shape[1])))


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(accuracy_score(labels, probs.argmax(axis=1)))

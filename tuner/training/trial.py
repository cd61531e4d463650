"""One trial, top to bottom: read the config, build data, model and strategy, train, report each
epoch, keep the best model by the validation metric, and score it on the test split.

The test split is scored whenever the validation metric improves, so every trial, including one that
ASHA or early stopping ends early, carries the test scores of the model that validation would choose.

Each epoch also reports ``settled_epoch`` (the strategy's ``last_phase_change``) and ``phase_epoch``
(``max(0, epoch - settled_epoch + 1)``, 0 while a staged strategy is still in an earlier phase). Patience
counts only epochs from ``settled_epoch`` on, so a staged strategy is never stopped while it is still
probing; the search's scheduler reads ``phase_epoch`` for the same reason. With ``folds`` set the
trial trains on fold ``fold`` of ``tuner.data.fold_splits`` (seed 0: every configuration sees the same
folds).
"""

from __future__ import annotations

import copy
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tuner.config import make_trial_config
from tuner.data import DatasetSplits, fold_splits
from tuner.errors import ConfigError
from tuner.models import HEADS, build_classifier
from tuner.models.weights import preprocessing_for
from tuner.strategies import build_strategy, trunk_distances
from tuner.training.checkpoint import CheckpointClock, Progress, read_checkpoint, save_checkpoint
from tuner.training.epoch_plan import EpochPlanner
from tuner.training.feature_store import FeatureStore
from tuner.training.inputs import applied_preprocessing, build_loaders, check_sampler_for_data, preprocessing_params
from tuner.training.loop import Evaluation, Precision, evaluate, train_one_epoch
from tuner.training.losses import build_loss, check_class_weights, class_counts
from tuner.training.metrics import classification_metrics
from tuner.training.optimizers import build_optimizer
from tuner.training.rgn import rgn_scales
from tuner.training.session import TrialSession


def run_trial(config: dict[str, Any], data: DatasetSplits, session: TrialSession) -> dict[str, Any]:
    """Train one configuration on ``data``; returns the last epoch's metrics."""
    config = make_trial_config(config)
    check_config_for_data(config, data)
    if config["folds"] is not None:
        data = fold_splits(data, config["folds"], config["fold"])
    _seed_everything(config["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model = build_classifier(backbone=config["backbone"], weights=config["weights"], head=config["head"],
                             head_params=HEADS.get(config["head"]).own_values(config), num_outputs=data.num_classes,
                             dropout=config["dropout"], layer_groups=config["layer_groups"]).to(device)
    strategy = build_strategy(config, model.num_groups)
    settled = strategy.last_phase_change(model.num_groups)
    # The starting trunk, for strategies whose penalty pulls towards it (a copy of the trunk: kept only there).
    start_weights = ({name: p.detach().clone() for name, p in model.trunk.named_parameters()}
                     if strategy.pulls_to_start else {})
    loader_generator = torch.Generator().manual_seed(config["seed"])
    preprocessing = preprocessing_for(model.spec, config["weights"])
    loaders = build_loaders(data, config, preprocessing, loader_generator, device)
    optimizer = build_optimizer(model, config, per_tensor=strategy.per_tensor_learning_rates)
    loss_fn = build_loss(data.task, config, None if data.task == "multilabel" else
                         class_counts(data.train.labels, data.num_classes)).to(device)  # class weights: on the device
    preprocess = preprocessing_params(*applied_preprocessing(config, preprocessing))  # reported: logged as params
    precision = Precision(device, config["amp"])
    planner = EpochPlanner(model, loaders, precision=precision, device=device,
                           store=FeatureStore.for_trial(session.feature_cache_dir()))

    # No copy of the starting weights as "best": epoch 1 always becomes the best epoch (best_epoch == 0).
    progress, best_model, test_scores, val_scores = Progress(), {}, None, None
    saved = session.restore(read_checkpoint)  # the newest readable state checkpoint, if any
    if saved is not None:
        saved.apply(model=model, optimizer=optimizer, loader_generator=loader_generator)
        progress, best_model, test_scores, val_scores = saved.progress, saved.best_model, saved.test_scores, \
            saved.val_scores
    clock = CheckpointClock(session.policy)  # which epochs write their state (tuner.training.checkpoint)

    result: dict[str, Any] = {}
    for epoch in range(progress.epoch + 1, config["epochs"] + 1):
        model.set_trainable_groups(strategy.trainable_groups(model.num_groups, epoch))
        # What this epoch runs: the classifier on images, or its trainable part on stored frozen outputs.
        plan = planner.plan()
        phase = strategy.optimizer_phase(epoch, config["lr"], config["epochs"])
        # A later phase is a new training with a fresh optimizer; a resume inside it has restored the
        # phase's own optimizer from the checkpoint.
        if epoch == phase.first and epoch > 1:
            optimizer = build_optimizer(model, {**config, "lr": phase.lr},
                                        per_tensor=strategy.per_tensor_learning_rates)
        lr = phase.learning_rate(epoch)
        scales = (rgn_scales(model, loaders[0].dataset, loss_fn,
                             batch_size=config["batch_size"], batches=strategy.rgn_batches, seed=config["seed"],
                             epoch=epoch, device=device, precision=precision)
                  if strategy.per_tensor_learning_rates else None)
        set_learning_rates(optimizer, lr, scales)
        train_loss, train_acc = train_one_epoch(plan.model, plan.train, optimizer, loss_fn, device, precision,
                                                data.task, lambda: strategy.penalty(model, start_weights))
        val = evaluate(plan.model, plan.val, loss_fn, device, precision, data.task)
        val_metrics = _prefixed("val", val, data)

        progress.epoch = epoch
        score = val_metrics[config["metric"]]
        if score > progress.best_score or progress.best_epoch == 0:
            progress.best_score, progress.best_epoch = score, epoch
            progress.best_val_auc = val_metrics["val_auc"]
            best_model = _cpu_state(model)
            test = evaluate(plan.model, plan.test, loss_fn, device, precision, data.task)
            progress.test_metrics = _prefixed("test", test, data)
            test_scores = scores_frame(test.labels, test.probs)
            val_scores = scores_frame(val.labels, val.probs)
        # Epochs without improvement, counted from the epoch the strategy settled (never during probing).
        patience_over = (config["patience"] is not None and epoch >= settled
                         and epoch - max(progress.best_epoch, settled - 1) >= config["patience"])

        result = {
            "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc, **val_metrics,
            "gap_acc": train_acc - val_metrics["val_acc"], "gap_loss": val.loss - train_loss,
            "best_score": progress.best_score, "best_val_auc": progress.best_val_auc,
            "best_epoch": progress.best_epoch, **progress.test_metrics,
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "n_train_images": len(data.train), "n_val_images": len(data.val),
            "settled_epoch": settled, "phase_epoch": max(0, epoch - settled + 1),
            **({f"train_{k}": v for k, v in trunk_distances(model, start_weights).items()}
               if strategy.pulls_to_start else {}),
            "stopped_by_patience": int(patience_over), **preprocess,
        }
        kind = clock.kind(epoch, last=patience_over or epoch == config["epochs"],
                          best_changed=progress.best_epoch == epoch)
        if kind is None:
            session.report(result, None)
        else:
            with tempfile.TemporaryDirectory(prefix="medtune-ckpt-") as folder:
                save_checkpoint(Path(folder), kind=kind, model=model, optimizer=optimizer,
                                loader_generator=loader_generator, progress=progress, best_model=best_model,
                                test_scores=test_scores, val_scores=val_scores)
                session.report(result, Path(folder))
        if patience_over:
            break
    return result


def check_config_for_data(config: dict[str, Any], data: DatasetSplits) -> None:
    """The checks that need the data set's task."""
    if config["focal_alpha"] is not None and data.task == "multiclass":
        raise ConfigError(f"focal_alpha weighs a positive class against a negative one; {data.name!r} is a "
                          f"{data.num_classes}-class task. Drop focal_alpha (gamma alone still focuses the loss).")
    check_class_weights(data.task, config)
    check_sampler_for_data(config, data)


def set_learning_rates(optimizer: torch.optim.Optimizer, lr: float, scales: list[float] | None) -> None:
    """Every parameter group gets ``lr`` (times its Auto-RGN scale, one group per tensor)."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * (scales[index] if scales is not None else 1.0)


def scores_frame(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per-sample test scores: ``index, label, score_0..`` (``label_0..`` for multi-label)."""
    frame = pd.DataFrame({"index": np.arange(len(labels))})
    if labels.ndim == 2:
        for column in range(labels.shape[1]):
            frame[f"label_{column}"] = labels[:, column].astype(int)
    else:
        frame["label"] = labels
    for column in range(probs.shape[1]):
        frame[f"score_{column}"] = probs[:, column]
    return frame


def _prefixed(prefix: str, evaluation: Evaluation, data: DatasetSplits) -> dict[str, float]:
    metrics = classification_metrics(evaluation.labels, evaluation.probs, data.task)
    return {f"{prefix}_loss": evaluation.loss, **{f"{prefix}_{k}": v for k, v in metrics.items()}}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in copy.copy(model.state_dict()).items()}

"""One trial, top to bottom: read the config, build data, model and strategy, train, report each
epoch, keep the best-validation model, and score it on the test split.

The test split is scored whenever validation AUC improves, so every trial, including one that ASHA
stops early, carries the test scores of the model that validation would choose.
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
from tuner.data import DatasetSplits, ImageDataset, build_transform
from tuner.models import build_classifier
from tuner.strategies import get_strategy
from tuner.training import metrics
from tuner.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from tuner.training.loop import Precision, evaluate, train_one_epoch
from tuner.training.session import TrialSession


def run_trial(config: dict[str, Any], data: DatasetSplits, session: TrialSession) -> dict[str, Any]:
    """Train one configuration on ``data``; returns the last epoch's metrics."""
    config = make_trial_config(config)
    _seed_everything(config["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model = build_classifier(backbone=config["backbone"], weights=config["weights"], head=config["head"],
                             num_outputs=data.num_classes, dropout=config["dropout"],
                             kernel_size=config["kernel_size"], filters=config["filters"],
                             hidden_ratio=config["hidden_ratio"]).to(device)
    strategy = get_strategy(config["strategy"])
    loader_generator = torch.Generator().manual_seed(config["seed"])
    train_loader, val_loader, test_loader = _loaders(data, config, loader_generator, device)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    loss_fn = nn.CrossEntropyLoss()
    precision = Precision(device, config["amp"])

    progress, best_model, test_scores = Progress(), _cpu_state(model), None
    resume_from = session.latest_checkpoint()
    if resume_from is not None:
        progress, best_model, test_scores = load_checkpoint(
            resume_from, model=model, optimizer=optimizer, scheduler=scheduler,
            loader_generator=loader_generator)

    result: dict[str, Any] = {}
    for epoch in range(progress.epoch + 1, config["epochs"] + 1):
        model.set_trainable_groups(strategy.trainable_groups(config, model.num_groups, epoch))
        train_loss, train_acc = train_one_epoch(model, train_loader, optimizer, loss_fn, device, precision)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        val = evaluate(model, val_loader, loss_fn, device, precision)
        val_auc = metrics.auc(val.labels, val.probs)

        progress.epoch = epoch
        if val_auc > progress.best_val_auc:
            progress.best_val_auc, progress.best_epoch = val_auc, epoch
            best_model = _cpu_state(model)
            test = evaluate(model, test_loader, loss_fn, device, precision)
            progress.test_metrics = {"test_auc": metrics.auc(test.labels, test.probs),
                                     "test_acc": metrics.accuracy(test.labels, test.probs),
                                     "test_loss": test.loss}
            test_scores = _scores_frame(test.labels, test.probs)

        result = {
            "epoch": epoch, "lr": lr,
            "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val.loss, "val_auc": val_auc, "val_acc": metrics.accuracy(val.labels, val.probs),
            "best_val_auc": progress.best_val_auc, "best_epoch": progress.best_epoch,
            **progress.test_metrics,
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        with tempfile.TemporaryDirectory(prefix="medtune-ckpt-") as folder:
            save_checkpoint(Path(folder), model=model, optimizer=optimizer, scheduler=scheduler,
                            loader_generator=loader_generator, progress=progress, best_model=best_model,
                            test_scores=test_scores)
            session.report(result, Path(folder))
    return result


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in copy.copy(model.state_dict()).items()}


def _scores_frame(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"index": np.arange(len(labels)), "label": labels})
    for column in range(probs.shape[1]):
        frame[f"score_{column}"] = probs[:, column]
    return frame


def _loaders(data: DatasetSplits, config: dict[str, Any], generator: torch.Generator, device: torch.device):
    """The training loader shuffles with its own seeded generator (saved in checkpoints) and drops a
    last batch of one, which BatchNorm cannot normalise."""
    size, batch = config["image_size"], config["batch_size"]
    train_set = ImageDataset(data.train, build_transform(size, augment=config["augment"]))
    pin = device.type == "cuda"
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch, shuffle=True, generator=generator, pin_memory=pin,
        drop_last=len(train_set) % batch == 1)
    eval_loaders = [torch.utils.data.DataLoader(ImageDataset(split, build_transform(size, augment=False)),
                                                batch_size=max(batch, 128), pin_memory=pin)
                    for split in (data.val, data.test)]
    return train_loader, *eval_loaders


def _optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    params, lr, decay = model.parameters(), config["lr"], config["weight_decay"]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config["momentum"], nesterov=True, weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=decay)

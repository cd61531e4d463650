"""Every knob of the trial config proven through ``run_trial``: each has a test asserting its effect on
what the trial built and ran (the model, the optimizer, the loss, the strategy's penalty, the images
and batches the model saw, the epochs reported), so removing any knob from the trial's construction
makes a test fail (a kernel size that never reached the heads was the first paper's public-code bug).

``KNOB_TESTS`` maps every key of ``tuner.config.TRIAL_DEFAULTS`` to its test, and
``test_every_knob_has_an_effect_test`` fails when a key is added without one. Every run goes through
``run_trial`` with a ``LocalSession`` on a tiny BreastMNIST subset (resnet18 at 28 px, batch 8, one
epoch unless the knob is about epochs), recording what the trial built by wrapping the builders that
``tuner.training.trial`` calls (``build_classifier``, ``build_optimizer``, ``build_loss``,
``Precision``, ``build_loaders``, ``build_strategy``) and the SP penalty, and by a forward pre-hook on
the built model. The frozen-prefix feature cache is turned off here, so that every batch passes
through the model's own forward (the cache has its own tests, ``tests/test_feature_cache.py``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.sessions import StateRecorder
from tuner.config import TRIAL_DEFAULTS
from tuner.data import build_transform
from tuner.models import get_backbone
from tuner.models.heads import ConvHead, LinearHead, MLPHead
from tuner.models.weights import imagenet_file, preprocessing_for
from tuner.strategies import regularization
from tuner.training import trial as trial_module
from tuner.training.checkpoint import BEST_MODEL_FILE
from tuner.training.losses import FocalLoss

BASE = {"backbone": "resnet18", "weights": "none", "image_size": 28, "batch_size": 8, "lr": 0.01, "epochs": 1,
        "seed": 0}
TRAIN, VAL = 32, 16  # images in the tiny subset's train and val splits


@dataclass
class Forward:
    """One call of the built model: its input, and whether it trained, evaluated, or measured (eval mode
    with gradients: Auto-RGN)."""

    images: torch.Tensor
    training: bool
    grad: bool


@dataclass
class Run:
    """What one ``run_trial`` built and reported."""

    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)
    initial_states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    optimizer_states: list[dict[str, Any]] = field(default_factory=list)  # per epoch, from the checkpoint
    losses: list[nn.Module] = field(default_factory=list)
    amp_requests: list[bool] = field(default_factory=list)
    precisions: list[Any] = field(default_factory=list)
    loaders: list[tuple] = field(default_factory=list)
    strategies: list[Any] = field(default_factory=list)
    penalties: list[tuple[float, float, str]] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        """The one classifier the trial built."""
        assert len(self.models) == 1
        return self.models[0]

    def column(self, key: str) -> list[Any]:
        """One reported value, epoch by epoch."""
        return [metrics[key] for metrics in self.history]

    def calls(self, *, training: bool, grad: bool) -> list[Forward]:
        """The model's forward calls of one kind: training, evaluation, or Auto-RGN's measurement."""
        return [f for f in self.forwards if f.training == training and f.grad == grad]


def _recorded(record: Callable[[Any], None], build: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args, **kwargs):
        built = build(*args, **kwargs)
        record(built)
        return built

    return wrapper


def execute(config: dict[str, Any], data, out: Path) -> Run:
    """``run_trial(config)`` with every builder it calls recorded."""
    run = Run(config)

    forwards = run.forwards  # the hook holds the list, not the run: run -> model -> hook -> run would be a
    # cycle, freed only by the cyclic collector (the module's RSS grew to 11 GB before it ran)

    def on_model(model: nn.Module) -> None:
        run.models.append(model)
        run.initial_states.append(copy.deepcopy(model.state_dict()))
        model.register_forward_pre_hook(lambda module, args: forwards.append(
            Forward(args[0].detach().cpu().clone(), module.training, torch.is_grad_enabled())))

    def precision(device, enabled):
        run.amp_requests.append(enabled)
        built = real_precision(device, enabled)
        run.precisions.append(built)
        return built

    def penalty(model, start, alpha, beta, norm):
        run.penalties.append((alpha, beta, norm))
        return real_penalty(model, start, alpha, beta, norm)

    real_precision, real_penalty = trial_module.Precision, regularization.sp_penalty
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDTUNE_FEATURE_CACHE", "0")
        patch.setattr(trial_module, "build_classifier", _recorded(on_model, trial_module.build_classifier))
        patch.setattr(trial_module, "build_optimizer", _recorded(run.optimizers.append,
                                                                 trial_module.build_optimizer))
        patch.setattr(trial_module, "build_loss", _recorded(run.losses.append, trial_module.build_loss))
        patch.setattr(trial_module, "build_loaders", _recorded(run.loaders.append, trial_module.build_loaders))
        patch.setattr(trial_module, "build_strategy", _recorded(run.strategies.append,
                                                                trial_module.build_strategy))
        patch.setattr(trial_module, "Precision", precision)
        patch.setattr(regularization, "sp_penalty", penalty)
        session = StateRecorder(out)
        trial_module.run_trial(config, data, session)
    run.history = session.history
    run.optimizer_states = [{"param_groups": state["optimizer"]["param_groups"]} for state in session.states]
    run.best_model = torch.load(out / "checkpoint" / BEST_MODEL_FILE, weights_only=True)
    # A run is cached for the module: keep what the knob tests read, not what training held (gradients,
    # momentum; ~300 MB per resnet18 run, 11 GB of RSS for the module's ~40 runs).
    for model in run.models:
        model.zero_grad(set_to_none=True)
    for optimizer in run.optimizers:
        optimizer.state.clear()
    return run


class Runner:
    """Runs configurations (BASE overlaid with the given values) for the knob tests to share: the
    ``KEEP`` most recently asked are kept (a resnet18 run holds ~130 MB: model, starting and best
    weights), an older one is run again when asked (runs are deterministic)."""

    KEEP = 8

    def __init__(self, data, folder: Path) -> None:
        self.data = data
        self.folder = folder
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._started = 0

    def __call__(self, **values: Any) -> Run:
        key = repr(sorted(values.items()))
        if key in self._runs:
            self._runs.move_to_end(key)
        else:
            self._runs[key] = self.fresh(**values)
            if len(self._runs) > self.KEEP:
                self._runs.popitem(last=False)
        return self._runs[key]

    def fresh(self, **values: Any) -> Run:
        """A new run, even of a configuration run before. Its checkpoints (130 MB for resnet18) go once
        it is read: the module makes ~40 runs."""
        self._started += 1
        out = self.folder / f"run{self._started}"
        run = execute({**BASE, **values}, self.data, out)
        shutil.rmtree(out)
        return run


@pytest.fixture(scope="module")
def runner(tiny_data, module_tmp_factory) -> Runner:
    return Runner(tiny_data, module_tmp_factory.mktemp("runs"))


def _group_size(model: nn.Module, index: int) -> int:
    return sum(p.numel() for p in model.group_parameters(index))


def _head_size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.head.parameters())


def _image_hashes(images) -> Counter:
    return Counter(hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images)


# --- the model ------------------------------------------------------------------------------------------


def knob_backbone(runner: Runner) -> None:
    small, default = runner(backbone="resnet18_small").model, runner().model
    assert small.spec.name == "resnet18_small" and default.spec.name == "resnet18"
    assert small.trunk.conv1.kernel_size == (3, 3) and default.trunk.conv1.kernel_size == (7, 7)
    assert runner(backbone="resnet18_small").calls(training=True, grad=True)[0].images.shape[-1] == 28


def knob_weights(runner: Runner) -> None:
    torch.manual_seed(21)
    trunk = get_backbone("resnet18").build(weights=None)
    trunk.fc = nn.Identity()
    path = runner.folder / "start.pt"
    torch.save(trunk.state_dict(), path)
    initial = runner(weights=str(path)).initial_states[0]
    assert all(torch.equal(initial[f"trunk.{k}"], v) for k, v in trunk.state_dict().items())
    assert not torch.equal(runner().initial_states[0]["trunk.conv1.weight"], trunk.state_dict()["conv1.weight"])


def knob_layer_groups(runner: Runner) -> None:
    paper = runner(layer_groups="paper", strategy="g_fl", unfreeze_every=1, epochs=2)
    assert paper.model.num_groups == 6 and runner().model.num_groups == 5
    # epoch 2 of g_fl trains the first group: conv1 alone in the paper's blocks (conv1 and bn1 in stages)
    assert paper.column("n_trainable_params")[1] == _head_size(paper.model) + 64 * 3 * 7 * 7


def knob_head(runner: Runner) -> None:
    assert isinstance(runner(head="mlp", hidden_ratio=0.25).model.head, MLPHead)
    assert isinstance(runner(head="conv", kernel_size=5, filters=3).model.head, ConvHead)
    assert isinstance(runner().model.head, LinearHead)


def knob_kernel_size(runner: Runner) -> None:
    assert runner(head="conv", kernel_size=5, filters=3).best_model["head.conv.weight"].shape == (3, 1, 5)
    assert runner(head="convskip", kernel_size=1, filters=3).best_model["head.conv.weight"].shape == (3, 1, 1)


def knob_filters(runner: Runner) -> None:
    best = runner(head="conv", kernel_size=5, filters=3).best_model
    assert best["head.conv.weight"].shape[0] == 3 and best["head.fc.weight"].shape == (2, 3 * 512)


def knob_hidden_ratio(runner: Runner) -> None:
    best = runner(head="mlp", hidden_ratio=0.25).best_model
    assert best["head.0.weight"].shape == (128, 512) and best["head.3.weight"].shape == (2, 128)


def knob_dropout(runner: Runner) -> None:
    assert [m.p for m in runner(dropout=0.3).model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    assert [m.p for m in runner(head="mlp", hidden_ratio=0.25, dropout=0.6).model.modules()
            if isinstance(m, nn.Dropout)] == [0.6]


# --- the strategy -----------------------------------------------------------------------------------------


def knob_strategy(runner: Runner) -> None:
    lp = runner(strategy="lp")
    assert lp.column("n_trainable_params") == [_head_size(lp.model)]
    assert runner().column("n_trainable_params") == runner().column("n_params")


def knob_unfreeze_every(runner: Runner) -> None:
    run = runner(strategy="g_lf", unfreeze_every=2, epochs=3)
    head, layer4 = _head_size(run.model), _group_size(run.model, 4)
    assert run.column("n_trainable_params") == [head, head, head + layer4]
    assert run.column("settled_epoch") == [5 * 2 + 1] * 3


def knob_lp_epochs(runner: Runner) -> None:
    run = runner(strategy="lp_ft", lp_epochs=1, epochs=2, lp_ft_lr=0.003)
    assert run.column("n_trainable_params") == [_head_size(run.model), sum(p.numel() for p in run.model.parameters())]
    assert run.column("phase_epoch") == [0, 1] and run.column("settled_epoch") == [2, 2]


def knob_lp_ft_lr(runner: Runner) -> None:
    run = runner(strategy="lp_ft", lp_epochs=1, epochs=2, lp_ft_lr=0.003)
    assert len(run.optimizers) == 2 and run.optimizers[0] is not run.optimizers[1]  # a fresh optimizer
    assert run.column("lr") == pytest.approx([0.01, 0.003])
    assert [state["param_groups"][0]["lr"] for state in run.optimizer_states] == pytest.approx([0.01, 0.003])
    assert run.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.003)


def knob_unfreeze(runner: Runner) -> None:
    run = runner(strategy="topk", unfreeze=1)
    assert run.column("n_trainable_params") == [_head_size(run.model) + _group_size(run.model, 4)]


def knob_sp_alpha(runner: Runner) -> None:
    run = runner(strategy="l2_sp", sp_alpha=0.3, sp_beta=0.02)
    assert run.penalties and set(run.penalties) == {(0.3, 0.02, "l2")}
    # the pull is felt: a strong alpha keeps the trunk nearer its start than no alpha
    free, pulled = runner(strategy="l2_sp", sp_alpha=0.0, sp_beta=0.0), runner(strategy="l2_sp", sp_alpha=20.0)
    assert pulled.column("train_sp_distance_l2")[0] < 0.5 * free.column("train_sp_distance_l2")[0]


def knob_sp_beta(runner: Runner) -> None:
    assert {beta for _, beta, _ in runner(strategy="l2_sp", sp_alpha=0.3, sp_beta=0.02).penalties} == {0.02}
    assert {beta for _, beta, _ in runner(strategy="l1_sp", l1_sp_alpha=2e-5, sp_beta=0.05).penalties} == {0.05}


def knob_l1_sp_alpha(runner: Runner) -> None:
    run = runner(strategy="l1_sp", l1_sp_alpha=2e-5, sp_beta=0.05)
    assert run.penalties and set(run.penalties) == {(2e-5, 0.05, "l1")}
    assert run.column("train_sp_distance_l1")[0] > 0


def knob_rgn_batches(runner: Runner) -> None:
    for batches in (3, 1):
        run = runner(strategy="auto_rgn", rgn_batches=batches)
        measured = run.calls(training=False, grad=True)
        assert [f.images.shape[0] for f in measured] == [8] * batches  # rgn_batches batches of batch_size
    lrs = [group["lr"] for group in runner(strategy="auto_rgn", rgn_batches=3).optimizer_states[0]["param_groups"]]
    assert max(lrs) == pytest.approx(0.01) and min(lrs) < 0.01  # per-tensor rates from the measured scales


# --- the loss and the optimizer ---------------------------------------------------------------------------


def knob_loss(runner: Runner) -> None:
    assert isinstance(runner(loss="focal", focal_gamma=1.5, focal_alpha=0.3).losses[0], FocalLoss)
    assert type(runner().losses[0]) is nn.CrossEntropyLoss


def knob_focal_gamma(runner: Runner) -> None:
    assert runner(loss="focal", focal_gamma=1.5, focal_alpha=0.3).losses[0].gamma == 1.5


def knob_focal_alpha(runner: Runner) -> None:
    assert runner(loss="focal", focal_gamma=1.5, focal_alpha=0.3).losses[0].alpha == 0.3


def knob_optimizer(runner: Runner) -> None:
    assert type(runner(optimizer="adam").optimizers[0]) is torch.optim.Adam
    assert type(runner().optimizers[0]) is torch.optim.SGD


def knob_momentum(runner: Runner) -> None:
    group = runner(momentum=0.5).optimizer_states[0]["param_groups"][0]
    assert group["momentum"] == 0.5 and group["nesterov"] is True


def knob_lr(runner: Runner) -> None:
    run = runner(lr=0.02, epochs=2)
    expected = [0.02, 0.02 * 0.5 * (1 + math.cos(math.pi / 2))]  # cosine over the epochs
    assert run.column("lr") == pytest.approx(expected)
    assert [state["param_groups"][0]["lr"] for state in run.optimizer_states] == pytest.approx(expected)


def knob_weight_decay(runner: Runner) -> None:
    assert runner(weight_decay=1e-3).optimizer_states[0]["param_groups"][0]["weight_decay"] == 1e-3
    assert runner().optimizer_states[0]["param_groups"][0]["weight_decay"] == 0.0


def knob_amp(runner: Runner) -> None:
    assert runner(amp=False).amp_requests == [False] and runner().amp_requests == [True]
    # the policy is on only where it was asked for and the device is CUDA (on CPU autocast brings no speed)
    assert [precision.enabled for precision in runner().precisions] == [torch.cuda.is_available()]
    assert [precision.enabled for precision in runner(amp=False).precisions] == [False]


# --- the data ---------------------------------------------------------------------------------------------


def knob_batch_size(runner: Runner) -> None:
    assert [f.images.shape[0] for f in runner(batch_size=16).calls(training=True, grad=True)] == [16, 16]
    assert [f.images.shape[0] for f in runner().calls(training=True, grad=True)] == [8] * 4


def knob_image_size(runner: Runner) -> None:
    for forward in runner(image_size=36).forwards:
        assert forward.images.shape[1:] == (3, 36, 36)


def knob_resize_size(runner: Runner, data) -> None:
    preprocessing = preprocessing_for(get_backbone("resnet18"), "none")
    cropped = build_transform(28, augment=False, resize_size=40, preprocessing=preprocessing)
    square = build_transform(28, augment=False, preprocessing=preprocessing)
    run = runner(resize_size=40)
    first_val = run.calls(training=False, grad=False)[0].images[0]  # the val split comes in order
    assert torch.allclose(first_val, cropped(data.val.images[0]))
    assert not torch.allclose(first_val, square(data.val.images[0]))
    assert torch.allclose(runner().calls(training=False, grad=False)[0].images[0], square(data.val.images[0]))
    # the training images too: every one the model trained on is a resized-and-cropped training image
    expected = torch.stack([cropped(image) for image in data.train.images]).flatten(1)
    squares = torch.stack([square(image) for image in data.train.images]).flatten(1)
    trained = torch.cat([f.images for f in run.calls(training=True, grad=True)]).flatten(1)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(trained, expected, compute_mode=exact).min(dim=1).values.max() < 1e-4
    assert torch.cdist(trained, squares, compute_mode=exact).min(dim=1).values.min() > 1e-2


def knob_augment(runner: Runner) -> None:
    augmented, plain = runner(augment=True), runner()
    assert augmented.loaders[0][0].dataset.transform.random and not plain.loaders[0][0].dataset.transform.random
    # the same shuffled images (one loader generator), transformed differently
    first_augmented = augmented.calls(training=True, grad=True)[0].images
    first_plain = plain.calls(training=True, grad=True)[0].images
    assert first_augmented.shape == first_plain.shape and not torch.allclose(first_augmented, first_plain)


def knob_crop(runner: Runner, data) -> None:
    spec = get_backbone("resnet18")
    with pytest.MonkeyPatch.context() as patch:  # a fixed trunk where torchvision caches ImageNet's weights
        patch.setenv("TORCH_HOME", str(runner.folder.parent / "torch-home"))
        if not imagenet_file(spec).is_file():
            imagenet_file(spec).parent.mkdir(parents=True)
            torch.save(spec.build(weights=None).state_dict(), imagenet_file(spec))
        cropped, square = runner(weights="imagenet", crop="weights"), runner(weights="imagenet")
    imagenet = preprocessing_for(spec, "imagenet")  # crop_pct 224/256: 28 px is resized to 32, then cropped
    expected = build_transform(28, augment=False, resize_size=32, preprocessing=imagenet)(data.val.images[0])
    assert torch.equal(cropped.calls(training=False, grad=False)[0].images[0], expected)
    assert not torch.allclose(square.calls(training=False, grad=False)[0].images[0], expected)
    assert cropped.column("preprocess_resize") == ["32"] and square.column("preprocess_resize") == ["none"]


def knob_sampler(runner: Runner) -> None:
    balanced, plain = runner(sampler="balanced"), runner()
    assert isinstance(balanced.loaders[0][0].sampler, torch.utils.data.WeightedRandomSampler)

    def distinct(run: Run) -> int:
        return len(torch.unique(torch.cat([f.images for f in run.calls(training=True, grad=True)]).flatten(1), dim=0))

    # drawn with replacement: an epoch of 32 draws repeats some images; a shuffle shows each one once
    assert distinct(balanced) < TRAIN == distinct(plain)


def knob_class_weights(runner: Runner) -> None:
    counts = np.bincount(runner.data.train.labels)
    expected = torch.tensor(counts.sum() / (2 * counts), dtype=torch.float32)  # n / (classes * count)
    assert torch.equal(runner(class_weights="balanced").losses[0].weight, expected)
    assert torch.equal(runner(loss="focal", class_weights="balanced").losses[0].weight, expected)
    assert runner().losses[0].weight is None


def knob_folds(runner: Runner, data) -> None:
    folds = [runner(folds=2, fold=fold) for fold in (0, 1)]
    vals = [_image_hashes(run.loaders[0][1].dataset.split.images) for run in folds]
    trains = [_image_hashes(run.loaders[0][0].dataset.split.images) for run in folds]
    pool = _image_hashes([*data.train.images, *data.val.images])
    assert vals[0] + vals[1] == pool  # the two validation folds split train + val between them
    assert all(train + val == pool for train, val in zip(trains, vals, strict=True))
    assert [run.column("n_val_images")[0] for run in folds] == [sum(v.values()) for v in vals]
    assert runner().column("n_val_images") == [VAL] and runner().column("n_train_images") == [TRAIN]
    assert _image_hashes(folds[0].loaders[0][2].dataset.split.images) == _image_hashes(data.test.images)


def knob_fold(runner: Runner, data) -> None:
    vals = [set(_image_hashes(runner(folds=2, fold=f).loaders[0][1].dataset.split.images)) for f in (0, 1)]
    assert vals[0] and vals[1] and not vals[0] & vals[1]  # disjoint validation folds


# --- the run ----------------------------------------------------------------------------------------------


def knob_epochs(runner: Runner) -> None:
    assert runner(lr=0.02, epochs=2).column("epoch") == [1, 2] and runner().column("epoch") == [1]


def knob_patience(runner: Runner) -> None:
    # a head that cannot change (lr 1e-12, frozen trunk): no epoch improves on the first
    stopped = runner(strategy="lp", lr=1e-12, epochs=3, patience=1)
    assert stopped.column("epoch") == [1, 2] and stopped.column("stopped_by_patience") == [0, 1]
    assert runner(strategy="lp", lr=1e-12, epochs=3).column("epoch") == [1, 2, 3]


def knob_metric(runner: Runner) -> None:
    # a linear probe on a fixed random trunk, whose validation accuracy and AUC peak at different epochs
    common = {"strategy": "lp", "optimizer": "adam", "lr": 0.01, "epochs": 4}
    best_epochs = {}
    for metric in ("val_acc", "val_auc"):
        run = runner(metric=metric, **common)
        values = run.column(metric)
        assert run.history[-1]["best_score"] == max(values)
        best_epochs[metric] = run.history[-1]["best_epoch"]
        assert best_epochs[metric] == values.index(max(values)) + 1  # the first epoch with the best value
        assert run.history[-1]["test_acc"] == run.history[best_epochs[metric] - 1]["test_acc"]
    assert best_epochs["val_acc"] != best_epochs["val_auc"]  # so choosing by the other one would be seen


def knob_seed(runner: Runner) -> None:
    one, zero = runner(seed=1), runner()
    assert not torch.equal(one.initial_states[0]["trunk.conv1.weight"], zero.initial_states[0]["trunk.conv1.weight"])
    assert [f.images.sum().item() for f in one.calls(training=True, grad=True)] != [
        f.images.sum().item() for f in zero.calls(training=True, grad=True)]  # another shuffle
    again = runner.fresh()
    assert again.history == zero.history  # the same seed: the same numbers


KNOB_TESTS: dict[str, Callable[..., None]] = {
    "backbone": knob_backbone, "weights": knob_weights, "layer_groups": knob_layer_groups, "head": knob_head,
    "kernel_size": knob_kernel_size, "filters": knob_filters, "hidden_ratio": knob_hidden_ratio,
    "dropout": knob_dropout, "strategy": knob_strategy, "unfreeze_every": knob_unfreeze_every,
    "lp_epochs": knob_lp_epochs, "lp_ft_lr": knob_lp_ft_lr, "unfreeze": knob_unfreeze, "sp_alpha": knob_sp_alpha,
    "sp_beta": knob_sp_beta, "l1_sp_alpha": knob_l1_sp_alpha, "rgn_batches": knob_rgn_batches, "loss": knob_loss,
    "focal_gamma": knob_focal_gamma, "focal_alpha": knob_focal_alpha, "optimizer": knob_optimizer,
    "momentum": knob_momentum, "lr": knob_lr, "weight_decay": knob_weight_decay, "batch_size": knob_batch_size,
    "epochs": knob_epochs, "patience": knob_patience, "image_size": knob_image_size,
    "resize_size": knob_resize_size, "augment": knob_augment, "metric": knob_metric, "seed": knob_seed,
    "folds": knob_folds, "fold": knob_fold, "amp": knob_amp, "crop": knob_crop, "sampler": knob_sampler,
    "class_weights": knob_class_weights,
}
NEEDS_DATA = {"resize_size", "folds", "fold", "crop"}


def test_every_knob_has_an_effect_test():
    missing = sorted(set(TRIAL_DEFAULTS) - set(KNOB_TESTS))
    stale = sorted(set(KNOB_TESTS) - set(TRIAL_DEFAULTS))
    assert not missing, f"config keys without a test of their effect through run_trial: {missing}"
    assert not stale, f"knob tests for keys that no longer exist: {stale}"


@pytest.mark.parametrize("knob", sorted(KNOB_TESTS))
def test_knob_reaches_what_it_controls(knob, runner, tiny_data):
    test = KNOB_TESTS[knob]
    test(runner, tiny_data) if knob in NEEDS_DATA else test(runner)

"""Each fine-tuning strategy's defining property, on real models (and real images where it trains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tuner.config import make_trial_config
from tuner.errors import ConfigError
from tuner.models import build_classifier, get_backbone
from tuner.spec import IMAGENET_PREPROCESSING
from tuner.strategies import build_strategy, relative_gradient_norms, sp_penalty
from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import _rgn_scales, cosine_learning_rate, run_trial, set_learning_rates

BASE = {"backbone": "resnet18", "head": "linear", "image_size": 28, "batch_size": 32, "lr": 0.01, "seed": 5}


@pytest.mark.parametrize(("name", "expected"), [
    ("g_lf", [[], [], [5], [5], [4, 5], [4, 5], [3, 4, 5], [3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5],
              [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]),
    ("g_fl", [[], [], [0], [0], [0, 1], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3],
              [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]),
])
def test_gradual_unfreezing_order_on_resnet50_paper_blocks(name, expected):
    config = make_trial_config({"backbone": "resnet50", "layer_groups": "paper", "strategy": name,
                                "unfreeze_every": 2, "epochs": 14})
    groups = len(get_backbone("resnet50").layer_groups("paper"))
    assert groups == 6
    strategy = build_strategy(config, groups)
    got = [list(strategy.trainable_groups(groups, epoch)) for epoch in range(1, 15)]
    assert got == expected


class _Recorder(LocalSession):
    """Keeps each epoch's trunk weights as saved in the checkpoint."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.trunks: list[dict[str, torch.Tensor]] = []

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)["model"]
        self.trunks.append({k: v for k, v in state.items() if k.startswith("trunk.")})


def _group_sizes(grouping: str) -> tuple[list[int], int]:
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2, layer_groups=grouping)
    sizes = [sum(p.numel() for p in model.group_parameters(i)) for i in range(model.num_groups)]
    return sizes, sum(p.numel() for p in model.head.parameters())


@pytest.mark.parametrize("name", ["g_lf", "g_fl"])
def test_gradual_unfreezing_trains_the_expected_blocks_each_epoch(name, small_data, tmp_path):
    session = _Recorder(tmp_path)
    config = {**BASE, "weights": "none", "strategy": name, "unfreeze_every": 1, "epochs": 4, "layer_groups": "paper"}
    run_trial(config, small_data, session)
    sizes, head = _group_sizes("paper")
    full = make_trial_config(config)
    for epoch, metrics in enumerate(session.history, start=1):
        groups = build_strategy(full, len(sizes)).trainable_groups(len(sizes), epoch)
        assert metrics["n_trainable_params"] == head + sum(sizes[i] for i in groups)
    # epoch 1 trains the head alone: the trunk is exactly the starting trunk after it
    initial = session.trunks[0]
    assert session.history[0]["n_trainable_params"] == head
    changed = [k for k in initial if not torch.equal(initial[k], session.trunks[1][k])]
    first_group = "trunk.layer4." if name == "g_lf" else "trunk.conv1."
    assert changed and all(k.startswith(first_group) for k in changed), changed[:3]


def test_lp_ft_keeps_trunk_frozen_for_lp_epochs_then_trains_all(small_data, tmp_path):
    spec = get_backbone("resnet18")
    torch.manual_seed(3)
    trunk = spec.build(weights=None)
    trunk.fc = torch.nn.Identity()
    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    torch.save(start, tmp_path / "start.pt")
    session = _Recorder(tmp_path / "out")
    run_trial({**BASE, "weights": str(tmp_path / "start.pt"), "strategy": "lp_ft", "lp_epochs": 2, "epochs": 3},
              small_data, session)
    for epoch in (0, 1):  # after epochs 1 and 2: bit-identical trunk, BatchNorm statistics included
        assert all(torch.equal(session.trunks[epoch][f"trunk.{k}"], v) for k, v in start.items())
    sizes, head = _group_sizes("stages")
    assert [m["n_trainable_params"] for m in session.history] == [head, head, head + sum(sizes)]
    assert not torch.equal(session.trunks[2]["trunk.conv1.weight"], start["conv1.weight"])


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_sp_penalty_is_the_formula(norm):
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    start = {name: p.detach().clone() for name, p in model.trunk.named_parameters()}
    with torch.no_grad():
        model.trunk.conv1.weight.add_(0.5)  # 64*3*7*7 = 9408 entries moved by 0.5
        model.trunk.layer4[1].bn2.bias.sub_(2.0)  # 512 entries moved by -2
        model.head[1].weight.fill_(0.25)
        model.head[1].bias.fill_(-1.0)
    alpha, beta = 0.3, 0.07
    head_weights = 512 * 2
    if norm == "l1":
        expected = alpha * (9408 * 0.5 + 512 * 2.0) + beta * (head_weights * 0.25 + 2 * 1.0)
    else:
        expected = alpha * (9408 * 0.25 + 512 * 4.0) + beta * (head_weights * 0.0625 + 2 * 1.0)
    got = sp_penalty(model, start, alpha, beta, norm)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_sp_gradient_pulls_weights_back_to_the_start(norm):
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    start = {name: p.detach().clone() for name, p in model.trunk.named_parameters()}
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    distance_before = sum((p - start[n]).abs().sum() for n, p in model.trunk.named_parameters()).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        sp_penalty(model, start, 1.0, 0.0, norm).backward()
        optimizer.step()
    distance_after = sum((p - start[n]).abs().sum() for n, p in model.trunk.named_parameters()).item()
    assert distance_after < distance_before


def test_sp_trains_end_to_end_and_refuses_weight_decay(small_data, tmp_path):
    session = LocalSession(tmp_path)
    run_trial({**BASE, "weights": "none", "strategy": "l2_sp", "sp_alpha": 0.01, "epochs": 1}, small_data, session)
    assert session.history[0]["n_trainable_params"] == session.history[0]["n_params"]
    with pytest.raises(ConfigError, match="set weight_decay=0"):
        make_trial_config({"strategy": "l1_sp", "weight_decay": 1e-4})


def test_auto_rgn_learning_rates_are_normalised_relative_gradient_norms(small_data):
    config = make_trial_config({**BASE, "weights": "none", "strategy": "auto_rgn", "epochs": 2})
    torch.manual_seed(0)
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    loss_fn = torch.nn.CrossEntropyLoss()
    from tuner.training.loop import Precision

    scales = _rgn_scales(model, small_data, config, IMAGENET_PREPROCESSING, loss_fn, torch.device("cpu"),
                         Precision(torch.device("cpu"), False))

    # independently: the first 32 training images, unaugmented, one backward pass
    from tuner.data import build_transform

    images = torch.stack([build_transform(28, augment=False)(small_data.train.images[i]) for i in range(32)])
    labels = torch.as_tensor(small_data.train.labels[:32])
    model.train()
    model.zero_grad()
    loss_fn(model(images), labels).backward()
    rgn = []
    for p in model.parameters():
        w = torch.linalg.vector_norm(p.detach()).item()
        rgn.append(torch.linalg.vector_norm(p.grad).item() / w if w > 0 else None)
    top = max(r for r in rgn if r is not None)
    expected = [1.0 if r is None else r / top for r in rgn]
    assert scales == pytest.approx(expected, rel=1e-5)
    assert max(scales) == 1.0 and min(scales) > 0

    optimizer = torch.optim.Adam([{"params": [p]} for p in model.parameters()], lr=1.0)
    lr = cosine_learning_rate(0.01, epoch=2, epochs=2)
    set_learning_rates(optimizer, lr, scales)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr * s for s in expected], rel=1e-5)


def test_relative_gradient_norms_of_known_tensors():
    a = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    b = torch.nn.Parameter(torch.tensor([1.0, 0.0]))  # |w| = 1
    zero = torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad, zero.grad = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5]), torch.ones(3)
    assert relative_gradient_norms([a, b, zero]) == pytest.approx([0.2 / 0.5, 1.0, 1.0])


def test_cosine_schedule_matches_torch():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=7)
    for epoch in range(1, 8):
        assert cosine_learning_rate(0.1, epoch, 7) == pytest.approx(scheduler.get_last_lr()[0], abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_early_stopping_with_patience(small_data, tmp_path):
    session = LocalSession(tmp_path)
    result = run_trial({**BASE, "weights": "none", "lr": 1e-6, "epochs": 12, "patience": 1, "optimizer": "sgd"},
                       small_data, session)
    assert result["stopped_by_patience"] == 1 and len(session.history) < 12
    assert result["epoch"] - result["best_epoch"] >= 1


@pytest.mark.parametrize(("values", "message"), [
    ({"strategy": "g_lf", "unfreeze_every": 0}, "unfreeze_every=0 is out of range: it must be >= 1"),
    ({"strategy": "lp_ft", "lp_epochs": 10, "epochs": 10}, "lp_epochs=10 must be an integer from 1 to epochs - 1"),
    ({"strategy": "lp", "lp_epochs": 2}, "lp_epochs=2 is a parameter of the lp_ft strategy"),
    ({"strategy": "ft", "sp_alpha": 0.1}, "sp_alpha=0.1 is a parameter of the l1_sp and l2_sp strategy"),
    ({"strategy": "auto_rgn", "unfreeze_every": 2}, "is a parameter of the g_lf and g_fl strategy"),
])
def test_strategy_parameter_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        make_trial_config(values)


def test_filled_defaults_are_what_is_logged():
    config = make_trial_config({"strategy": "l2_sp", "head": "conv"})
    assert (config["sp_alpha"], config["sp_beta"], config["kernel_size"], config["filters"]) == (0.1, 0.01, 3, 8)
    assert config["unfreeze_every"] is None and config["lp_epochs"] is None
    assert np.isclose(make_trial_config({"strategy": "g_fl"})["unfreeze_every"], 1)

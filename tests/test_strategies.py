"""Each fine-tuning strategy's defining property, on real models (and real images where it trains)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.sessions import StateRecorder, straight_and_resumed
from tuner.config import make_trial_config
from tuner.errors import ConfigError
from tuner.models import build_classifier, get_backbone
from tuner.strategies import build_strategy, cosine_learning_rate, relative_gradient_norms, sp_penalty
from tuner.training.rgn import measurement_sample, rgn_scales
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial, set_learning_rates

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


def _trunks(session: StateRecorder) -> list[dict[str, torch.Tensor]]:
    """Each epoch's trunk weights, as saved in the checkpoint."""
    return [{k: v for k, v in state["model"].items() if k.startswith("trunk.")} for state in session.states]


def _optimizers(session: StateRecorder) -> list[dict]:
    """Each epoch's saved optimizer state."""
    return [state["optimizer"] for state in session.states]


def _group_sizes(grouping: str) -> tuple[list[int], int]:
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2, layer_groups=grouping)
    sizes = [sum(p.numel() for p in model.group_parameters(i)) for i in range(model.num_groups)]
    return sizes, sum(p.numel() for p in model.head.parameters())


@pytest.mark.parametrize("name", ["g_lf", "g_fl"])
def test_gradual_unfreezing_trains_the_expected_blocks_each_epoch(name, small_data, tmp_path):
    session = StateRecorder(tmp_path)
    config = {**BASE, "weights": "none", "strategy": name, "unfreeze_every": 1, "epochs": 4, "layer_groups": "paper"}
    run_trial(config, small_data, session)
    sizes, head = _group_sizes("paper")
    full = make_trial_config(config)
    for epoch, metrics in enumerate(session.history, start=1):
        groups = build_strategy(full, len(sizes)).trainable_groups(len(sizes), epoch)
        assert metrics["n_trainable_params"] == head + sum(sizes[i] for i in groups)
    # epoch 1 trains the head alone: the trunk is exactly the starting trunk after it
    initial = _trunks(session)[0]
    assert session.history[0]["n_trainable_params"] == head
    changed = [k for k in initial if not torch.equal(initial[k], _trunks(session)[1][k])]
    first_group = "trunk.layer4." if name == "g_lf" else "trunk.conv1."
    assert changed and all(k.startswith(first_group) for k in changed), changed[:3]


def test_lp_ft_keeps_trunk_frozen_for_lp_epochs_then_trains_all(small_data, tmp_path):
    spec = get_backbone("resnet18")
    torch.manual_seed(3)
    trunk = spec.build(weights=None)
    trunk.fc = torch.nn.Identity()
    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    torch.save(start, tmp_path / "start.pt")
    session = StateRecorder(tmp_path / "out")
    run_trial({**BASE, "weights": str(tmp_path / "start.pt"), "strategy": "lp_ft", "lp_epochs": 2, "epochs": 3},
              small_data, session)
    for epoch in (0, 1):  # after epochs 1 and 2: bit-identical trunk, BatchNorm statistics included
        assert all(torch.equal(_trunks(session)[epoch][f"trunk.{k}"], v) for k, v in start.items())
    sizes, head = _group_sizes("stages")
    assert [m["n_trainable_params"] for m in session.history] == [head, head, head + sum(sizes)]
    assert not torch.equal(_trunks(session)[2]["trunk.conv1.weight"], start["conv1.weight"])


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
    head = beta / 2 * (head_weights * 0.0625 + 2 * 1.0)  # Li et al.: beta/2 ||w||^2 on the head, for both norms
    if norm == "l1":
        expected = alpha * (9408 * 0.5 + 512 * 2.0) + head
    else:  # Li et al.'s 1/2: alpha/2 ||w - w0||^2
        expected = alpha / 2 * (9408 * 0.25 + 512 * 4.0) + head
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
    config = make_trial_config({**BASE, "weights": "none", "strategy": "auto_rgn", "epochs": 2, "rgn_batches": 2})
    torch.manual_seed(0)
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    loss_fn = torch.nn.CrossEntropyLoss()
    from tuner.data import ImageDataset, build_transform
    from tuner.training.loop import Precision

    dataset = ImageDataset(small_data.train, build_transform(28, augment=False))
    scales = rgn_scales(model, dataset, loss_fn, batch_size=32, batches=config["rgn_batches"], seed=5, epoch=2,
                        device=torch.device("cpu"), precision=Precision(torch.device("cpu"), False))

    # independently: 2 x 32 images drawn by the (seed, epoch) generator, unaugmented, in eval mode, one
    # backward pass of their mean loss
    sample = measurement_sample(len(dataset), 64, seed=5, epoch=2)
    assert len(set(sample.tolist())) == 64 and sorted(sample.tolist()) != list(range(64))
    images = torch.stack([dataset[int(i)][0] for i in sample])
    labels = torch.as_tensor(small_data.train.labels[sample])
    model.eval()
    model.zero_grad()
    loss_fn(model(images), labels).backward()
    rgn = []
    for p in model.parameters():
        w = torch.linalg.vector_norm(p.detach()).item()
        rgn.append(torch.linalg.vector_norm(p.grad).item() / w if w > 0 else None)
    top = max(r for r in rgn if r is not None)
    expected = [1.0 if r is None else r / top for r in rgn]
    assert scales == pytest.approx(expected, rel=1e-4)
    assert max(scales) == 1.0 and min(scales) > 0

    optimizer = torch.optim.Adam([{"params": [p]} for p in model.parameters()], lr=1.0)
    lr = cosine_learning_rate(0.01, epoch=2, epochs=2)
    set_learning_rates(optimizer, lr, scales)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr * s for s in expected], rel=1e-4)


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
    ({"strategy": "ft", "sp_alpha": 0.1}, "sp_alpha=0.1 is a parameter of the l2_sp strategy"),
    ({"strategy": "l1_sp", "sp_alpha": 0.1}, "sp_alpha=0.1 is a parameter of the l2_sp strategy, but the strategy "
                                             "is 'l1_sp'"),
    ({"strategy": "lp", "lp_ft_lr": 1e-4}, "lp_ft_lr=0.0001 is a parameter of the lp_ft strategy"),
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


def test_l1_sp_has_its_own_alpha_and_lp_ft_lr_defaults_to_a_tenth_of_lr():
    config = make_trial_config({"strategy": "l1_sp"})
    assert (config["l1_sp_alpha"], config["sp_beta"], config["sp_alpha"]) == (1e-5, 0.01, None)
    lp_ft = make_trial_config({"strategy": "lp_ft", "lp_epochs": 2, "epochs": 4, "lr": 3e-3})
    assert lp_ft["lp_ft_lr"] == pytest.approx(3e-4)  # filled in, so the logged config is what ran
    assert make_trial_config({**lp_ft, "lp_ft_lr": 5e-2})["lp_ft_lr"] == 5e-2


# --- phases: when a staged strategy becomes itself --------------------------------------------------------


@pytest.mark.parametrize(("values", "groups", "expected"), [
    ({"strategy": "ft"}, 5, 1), ({"strategy": "lp"}, 5, 1), ({"strategy": "topk", "unfreeze": 2}, 5, 1),
    ({"strategy": "l1_sp"}, 5, 1), ({"strategy": "l2_sp"}, 5, 1), ({"strategy": "auto_rgn"}, 5, 1),
    ({"strategy": "lp_ft", "lp_epochs": 3}, 5, 4),
    ({"strategy": "g_lf", "unfreeze_every": 2}, 5, 11), ({"strategy": "g_fl", "unfreeze_every": 1}, 6, 7),
])
def test_last_phase_change_is_the_epoch_of_the_last_change_of_trainable_set(values, groups, expected):
    config = make_trial_config({"epochs": 20, **values})
    strategy = build_strategy(config, groups)
    assert strategy.last_phase_change(groups) == expected
    trainable = [set(strategy.trainable_groups(groups, epoch)) for epoch in range(1, 21)]
    changes = [epoch for epoch in range(2, 21) if trainable[epoch - 1] != trainable[epoch - 2]]
    assert max(changes, default=1) == expected


def test_patience_does_not_stop_lp_ft_while_it_probes(small_data, tmp_path):
    # A head that cannot improve (lr 1e-12): plain patience 1 would stop at epoch 2, inside the probe.
    session = LocalSession(tmp_path)
    run_trial({**BASE, "weights": "none", "strategy": "lp_ft", "lp_epochs": 3, "epochs": 6, "patience": 1,
               "lr": 1e-12, "lp_ft_lr": 1e-12}, small_data, session)
    history = session.history
    assert [m["settled_epoch"] for m in history] == [4] * len(history)
    assert [m["phase_epoch"] for m in history] == [max(0, m["epoch"] - 3) for m in history]
    assert len(history) >= 4 and not any(m["stopped_by_patience"] for m in history[:3])
    sizes, head = _group_sizes("stages")
    assert history[3]["n_trainable_params"] == head + sum(sizes)  # it reached its fine-tuning phase
    # from the settled epoch on, patience counts: the fine-tuning phase has `patience` epochs to beat the
    # best score so far, wherever that score was reached
    last = history[-1]
    assert last["stopped_by_patience"] == 1 and last["epoch"] == max(3, last["best_epoch"]) + 1


def test_patience_still_stops_a_strategy_that_settled_at_once(small_data, tmp_path):
    session = LocalSession(tmp_path)
    run_trial({**BASE, "weights": "none", "strategy": "lp", "epochs": 6, "patience": 1, "lr": 1e-12},
              small_data, session)
    assert [m["epoch"] for m in session.history] == [1, 2] and session.history[-1]["stopped_by_patience"] == 1
    assert [m["phase_epoch"] for m in session.history] == [1, 2]


# --- LP-FT: two trainings ---------------------------------------------------------------------------------


LP_FT = {**BASE, "weights": "none", "strategy": "lp_ft", "lp_epochs": 2, "epochs": 4, "optimizer": "adam",
         "lr": 1e-3, "lp_ft_lr": 4e-4, "batch_size": 48}  # 96 images: 2 steps per epoch


def test_lp_ft_fine_tunes_from_a_fresh_optimizer_at_its_own_learning_rate(small_data, tmp_path):
    session = StateRecorder(tmp_path)
    run_trial(LP_FT, small_data, session)
    head_weight = len(list(build_classifier(backbone="resnet18", weights="none", head="linear",
                                            num_outputs=2).parameters())) - 2  # head.1.weight's index
    steps = [int(state["state"][head_weight]["step"]) for state in _optimizers(session)]
    assert steps == [2, 4, 2, 4]  # Adam's step count restarts with the fine-tuning phase
    conv1 = 0  # the stem's first tensor: trains only in the fine-tuning phase
    assert [conv1 in state["state"] for state in _optimizers(session)] == [False, False, True, True]
    # each phase its own cosine: probing anneals lr over 2 epochs, fine-tuning lp_ft_lr over the other 2
    assert [m["lr"] for m in session.history] == pytest.approx([1e-3, 5e-4, 4e-4, 2e-4])
    assert [state["param_groups"][0]["lr"] for state in _optimizers(session)] == pytest.approx([1e-3, 5e-4, 4e-4, 2e-4])


@pytest.mark.parametrize("crash_after", [2, 3])  # at the phase boundary, and inside the fine-tuning phase
def test_lp_ft_resumes_bit_exact_in_either_phase(crash_after, small_data, tmp_path):
    uninterrupted, resumed = straight_and_resumed(LP_FT, small_data, tmp_path, crash_after)
    assert resumed.history == uninterrupted.history[crash_after:]


# --- L1-SP and the trunk's distance from its start -------------------------------------------------------


def test_l1_sp_at_its_default_moves_the_trunk_more_than_lp(small_data, tmp_path):
    """At the old shared alpha (0.1) the L1 pull on every one of ~11M weights pins the trunk at its start;
    at its own default the trunk moves about as far as without any pull."""
    common = {**BASE, "weights": "none", "optimizer": "adam", "lr": 1e-3, "epochs": 2}
    distances = {}
    for name, values in {"l1_sp": {"strategy": "l1_sp"}, "pinned": {"strategy": "l1_sp", "l1_sp_alpha": 0.1},
                         "free": {"strategy": "l2_sp", "sp_alpha": 0.0, "sp_beta": 0.0}}.items():
        session = LocalSession(tmp_path / name)
        run_trial({**common, **values}, small_data, session)
        assert {"train_sp_distance_l1", "train_sp_distance_l2"} <= set(session.history[-1])
        distances[name] = session.history[-1]["train_sp_distance_l2"]
    lp = StateRecorder(tmp_path / "lp")
    run_trial({**common, "strategy": "lp"}, small_data, lp)
    assert "train_sp_distance_l2" not in lp.history[-1]  # reported for the SP strategies only
    torch.manual_seed(BASE["seed"])  # the trial's weight initialisation
    start = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    assert all(torch.equal(_trunks(lp)[-1][f"trunk.{name}"], p) for name, p in start.trunk.named_parameters())
    assert distances["l1_sp"] > 0.8 * distances["free"] > 0
    assert distances["l1_sp"] > 2 * distances["pinned"]


def test_the_reported_trunk_distance_is_the_norm_of_the_moved_weights(small_data, tmp_path):
    session = StateRecorder(tmp_path)
    run_trial({**BASE, "weights": "none", "strategy": "l2_sp", "epochs": 1}, small_data, session)
    torch.manual_seed(BASE["seed"])  # the trial's weight initialisation
    start = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    moved = [_trunks(session)[0][f"trunk.{name}"] - p.detach() for name, p in start.trunk.named_parameters()]
    metrics = session.history[0]
    assert metrics["train_sp_distance_l2"] == pytest.approx(float(sum(d.pow(2).sum() for d in moved)) ** 0.5, rel=1e-5)
    assert metrics["train_sp_distance_l1"] == pytest.approx(float(sum(d.abs().sum() for d in moved)), rel=1e-5)


# --- Auto-RGN's measuring pass ----------------------------------------------------------------------------


def _reordered(split, order):
    from tuner.data.splits import take

    return take(split, np.asarray(order))


def test_auto_rgn_scales_do_not_depend_on_the_order_of_the_classes(small_data):
    """An image folder lists its images class by class: the measured scales must not follow that order.
    96 images, 4 batches of 32: the measurement sample is every image, in its own shuffled order."""
    from tuner.data import ImageDataset, build_transform
    from tuner.training.loop import Precision

    labels = small_data.train.labels
    by_class = np.argsort(labels, kind="stable")
    shuffled = np.random.default_rng(1).permutation(len(labels))
    assert labels[by_class][:32].max() == 0  # sorted: the first batch is one class
    results = []
    for order in (by_class, shuffled, by_class[::-1]):
        torch.manual_seed(0)
        model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
        dataset = ImageDataset(_reordered(small_data.train, order), build_transform(28, augment=False))
        results.append(rgn_scales(model, dataset, torch.nn.CrossEntropyLoss(), batch_size=32, batches=4, seed=0,
                                  epoch=1, device=torch.device("cpu"), precision=Precision(torch.device("cpu"), False)))
    assert results[1] == pytest.approx(results[0], rel=1e-4, abs=1e-7)
    assert results[2] == pytest.approx(results[0], rel=1e-4, abs=1e-7)


def test_auto_rgn_measurement_changes_no_statistics_and_draws_no_random_numbers(small_data):
    from tuner.data import ImageDataset, build_transform
    from tuner.training.loop import Precision

    torch.manual_seed(0)
    model = build_classifier(backbone="resnet18", weights="none", head="mlp", num_outputs=2, dropout=0.5)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    dataset = ImageDataset(small_data.train, build_transform(28, augment=False))
    measure = dict(batch_size=16, batches=2, seed=3, device=torch.device("cpu"),
                   precision=Precision(torch.device("cpu"), False))
    first = rgn_scales(model, dataset, torch.nn.CrossEntropyLoss(), epoch=1, **measure)
    assert torch.equal(torch.get_rng_state(), rng_before)  # no dropout drawn, no global shuffling
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats and counters included
    assert model.training and all(p.grad is None for p in model.parameters())
    # the same (seed, epoch) measures the same batches (a resume), another epoch other ones
    assert rgn_scales(model, dataset, torch.nn.CrossEntropyLoss(), epoch=1, **measure) == first
    assert rgn_scales(model, dataset, torch.nn.CrossEntropyLoss(), epoch=2, **measure) != first
    assert not np.array_equal(measurement_sample(96, 32, 3, 1), measurement_sample(96, 32, 3, 2))


def test_auto_rgn_trial_resumes_bit_exact(small_data, tmp_path):
    config = {**BASE, "weights": "none", "strategy": "auto_rgn", "rgn_batches": 2, "epochs": 3, "dropout": 0.3}
    uninterrupted, resumed = straight_and_resumed(config, small_data, tmp_path, crash_after=1)
    assert resumed.history == uninterrupted.history[1:]

"""Search spaces and trial configs: every searched value is a canonical key that reaches the trial,
conditional parameters appear only on their branch, and bad values are refused up front."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import OptunaSpace, enumerate_space, get_space, space_names
from tuner.cli import pins_from_pairs
from tuner.config import TRIAL_DEFAULTS, make_trial_config
from tuner.errors import ConfigError
from tuner.search import SearchRequest, prepare


def test_shipped_spaces_are_found():
    assert {"quick", "convskip_unfreeze"} <= set(space_names())
    with pytest.raises(ConfigError, match="unknown search space 'nope'.*quick"):
        get_space("nope")


@pytest.mark.parametrize("name", ["quick", "convskip_unfreeze"])
def test_every_grid_point_is_a_valid_trial_config(name):
    configs = enumerate_space(get_space(name).define, {"weights": "none"})
    assert configs
    for config in configs:
        assert set(config) <= set(TRIAL_DEFAULTS), set(config) - set(TRIAL_DEFAULTS)
        make_trial_config(config)


def test_quick_grid_follows_conditional_branches():
    configs = enumerate_space(get_space("quick").define)
    # linear: 3 lr x 2 seeds; conv and convskip: 3 kernel sizes x 3 lr x 2 seeds each
    assert len(configs) == 6 + 18 + 18
    assert all("kernel_size" not in c for c in configs if c["head"] == "linear")
    assert {c["kernel_size"] for c in configs if c["head"] == "conv"} == {3, 5, 7}
    assert {c["lr"] for c in configs} == {1e-3, 1e-2, 1e-1}


def test_convskip_unfreeze_covers_every_depth_of_its_backbone():
    configs = enumerate_space(get_space("convskip_unfreeze").define, {"weights": "none", "seed": 0})
    assert {c["unfreeze"] for c in configs} == set(range(0, 6))
    assert {c["head"] for c in configs} == {"linear", "conv", "convskip"}


def test_pins_are_not_searched():
    configs = enumerate_space(get_space("quick").define, {"head": "conv", "kernel_size": 5})
    assert {c["head"] for c in configs} == {"conv"} and {c["kernel_size"] for c in configs} == {5}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space = OptunaSpace(trial, {"head": "convskip"})
    get_space("quick").define(space)
    assert "head" not in trial.params and space.values["head"] == "convskip"
    assert "kernel_size" in trial.params and "lr" in trial.params


def test_optuna_samples_within_the_declared_ranges():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        space = OptunaSpace(trial)
        constants = get_space("convskip_unfreeze").define(space)
        config = make_trial_config({**constants, **space.values, "weights": "none"})
        assert 1e-5 <= config["lr"] <= 1e-2 and 0 <= config["unfreeze"] <= 5
        study.tell(trial, config["lr"])


def test_pins_from_pairs_types_values():
    assert pins_from_pairs(["lr=1e-3", "head=conv", "augment=true", "kernel_size=5", "unfreeze=None",
                            "weights=none", "backbone=['resnet18','vgg19']"]) == {
        "lr": 1e-3, "head": "conv", "augment": True, "kernel_size": 5, "unfreeze": None, "weights": "none",
        "backbone": ["resnet18", "vgg19"]}
    with pytest.raises(ConfigError, match="not key=value"):
        pins_from_pairs(["lr"])


@pytest.mark.parametrize(("pins", "message"), [
    ({"kernal_size": 3}, "unknown parameter 'kernal_size'.*Did you mean 'kernel_size'"),
    ({"backbone": "resnet19"}, "unknown backbone 'resnet19'"),
    ({"head": "transformer"}, "unknown head 'transformer'"),
    ({"strategy": "magic"}, "unknown strategy 'magic'"),
    ({"unfreeze": 9}, "unfreeze=9 is out of range: resnet50 has 5 layer groups"),
    ({"head": "linear", "kernel_size": 3}, "kernel_size=3 is a parameter of the conv and convskip head"),
    ({"strategy": "ft"}, "unfreeze=.* is a parameter of the topk strategy"),
    ({"image_size": 8}, "image_size=8 is too small"),
])
def test_bad_values_are_refused_before_any_trial(pins, message):
    with pytest.raises(ConfigError, match=message):
        prepare(SearchRequest(space="convskip_unfreeze", dataset="breastmnist", pins={"weights": "none", **pins}))


def test_missing_weights_are_refused_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="resnet50-0676ba61.pth"):
        prepare(SearchRequest(space="convskip_unfreeze", dataset="breastmnist", pins={"weights": "imagenet"}))

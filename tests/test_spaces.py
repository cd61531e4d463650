"""Search spaces and trial configs: every searched value is a canonical key that reaches the trial,
conditional parameters appear only on their branch, seeds are never searched, and bad values are
refused up front."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import OptunaSpace, Space, enumerate_space, get_space, space_names
from tuner.cli import pins_from_pairs
from tuner.config import TRIAL_DEFAULTS, make_trial_config
from tuner.errors import ConfigError
from tuner.search import SearchRequest, prepare
from tuner.search_request import effective_pins
from tuner.tune_build import _OptunaDefine


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
    # linear: 3 lr; conv and convskip: 3 kernel sizes x 3 lr each (no seeds: they are replicates)
    assert len(configs) == 3 + 9 + 9
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


@pytest.mark.parametrize("name", space_names())
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_no_searcher_ever_samples_a_seed(name, sampler, monkeypatch):
    """Over many Optuna samples (through the search's own define-by-run) and the whole grid of every
    space, ``seed`` is never a trial parameter: each configuration runs with the search's one seed."""
    monkeypatch.delenv("MEDTUNE_SSL_ENCODER", raising=False)
    request = SearchRequest(space=name, dataset="breastmnist", pins={"seed": 7})
    sampler = (optuna.samplers.TPESampler(seed=0, n_startup_trials=5) if sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(sampler=sampler, direction="maximize")
    define = _OptunaDefine(name, effective_pins(request))
    for number in range(40):
        trial = study.ask()
        config = define(trial)
        assert "seed" not in trial.params and "fold" not in trial.params
        assert config["seed"] == 7
        study.tell(trial, float(number % 7))
    assert all("seed" not in t.params for t in study.trials)
    grid = enumerate_space(get_space(name).define, {"weights": "none"})
    assert grid and all("seed" not in config for config in grid)  # the grid never varies it either


def test_every_configuration_of_a_search_runs_with_one_seed():
    _, configs = prepare(SearchRequest(space="quick", dataset="breastmnist"))
    assert {c["seed"] for c in configs} == {TRIAL_DEFAULTS["seed"]}
    _, configs = prepare(SearchRequest(space="quick", dataset="breastmnist", pins={"seed": 3}))
    assert {c["seed"] for c in configs} == {3}


@pytest.mark.parametrize("key", ["seed", "fold"])
def test_a_space_that_asks_for_a_replicate_key_is_refused(key):
    with pytest.raises(ConfigError, match=f"asks for '{key}'.*replicates.*medtune confirm --seeds"):
        enumerate_space(lambda s: {"x": s.choice(key, [0, 1])})
    with pytest.raises(ConfigError, match="replicates"):
        Space().constant(key, 0)


def test_a_list_of_seeds_is_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"--set seed=\[0, 1\].*replicates.*--set seed=0"):
        prepare(SearchRequest(space="quick", dataset="breastmnist", pins={"seed": [0, 1]}))


def test_the_optuna_config_holds_the_space_constants_and_asked_constants():
    """``s.constant`` values (``epochs`` of finetune_strategies, ``backbone`` of ssl_vs_imagenet) reach a
    sampled trial's config, not only the grid's."""
    config = _OptunaDefine("finetune_strategies", {"weights": "none"})(optuna.create_study().ask())
    assert config["epochs"] == 50 and config["weights"] == "none"
    config = _OptunaDefine("ssl_vs_imagenet", {})(optuna.create_study().ask())
    assert config["backbone"] == "convnext_tiny"


def test_a_pin_overrides_a_space_constant_in_the_grid_and_in_a_sampled_trial():
    """``quick`` returns ``image_size: 28`` as a constant; ``--set image_size=32`` must win in every
    configuration, on both paths a configuration is made by (the grid and Tune's Optuna define), and a
    list pin of an asked value narrows it without leaking the list into the config."""
    pins = {"image_size": 32, "weights": "none", "head": ["linear", "convskip"]}
    grid = enumerate_space(get_space("quick").define, pins)
    assert {c["image_size"] for c in grid} == {32} and {c["head"] for c in grid} == {"linear", "convskip"}
    study = optuna.create_study()
    for _ in range(4):
        config = _OptunaDefine("quick", pins)(study.ask())
        assert config["image_size"] == 32 and config["head"] in ("linear", "convskip")
    assert {c["image_size"] for c in enumerate_space(get_space("quick").define, {"weights": "none"})} == {28}


def test_a_list_pin_on_a_value_the_space_never_asks_is_refused_before_anything_runs():
    """``quick`` sets ``optimizer: sgd`` and never asks for it: ``--set optimizer=[adam,sgd]`` used to be
    dropped, and every trial ran SGD. A list on a value some branch asks (``kernel_size``, asked for
    conv heads only) still narrows it."""
    with pytest.raises(ConfigError, match=r"never asks for 'optimizer' \(it sets optimizer to 'sgd'\)"):
        prepare(SearchRequest(space="quick", dataset="breastmnist", pins={"optimizer": ["adam", "sgd"]}))
    with pytest.raises(ConfigError, match=r"never asks for 'momentum' \(momentum stays at the trial's default\)"):
        prepare(SearchRequest(space="quick", dataset="breastmnist", pins={"momentum": [0.5, 0.9]}))
    _, configs = prepare(SearchRequest(space="quick", dataset="breastmnist", pins={"kernel_size": [3, 5]}))
    assert {c["kernel_size"] for c in configs if c["head"] != "linear"} == {3, 5}

"""Components declared once: a head or strategy registered from this file alone runs through
``run_trial``; every declared parameter refuses bad values; a parameter given to a component that
ignores it is refused; the README's tables are the declarations'."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tuner.config import COMPONENTS, TRIAL_DEFAULTS, make_trial_config, trial_params
from tuner.errors import ConfigError
from tuner.models import HEADS, HeadSpec, build_classifier
from tuner.params_doc import README, readme_tables, render_tables
from tuner.spec import Param
from tuner.strategies import STRATEGIES, Strategy, StrategyContext, StrategySpec
from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

BASE = {"backbone": "resnet18", "weights": "none", "image_size": 28, "batch_size": 32, "lr": 0.01, "seed": 3}

# --- a throw-away head: one module class, one Param, one registration ---------------------------------

BOTTLENECK = Param("bottleneck", int, 4, "width of the throw-away head's hidden layer", low=1)


class BottleneckHead(nn.Sequential):
    """Features -> ``bottleneck`` units -> logits."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float, bottleneck: int) -> None:
        super().__init__(nn.Linear(in_features, bottleneck), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(bottleneck, num_outputs))


@pytest.fixture
def bottleneck_head():
    spec = HEADS.register(HeadSpec("bottleneck", "a test's throw-away head", (BOTTLENECK,), build=BottleneckHead))
    yield spec
    HEADS.unregister(spec.name)


def test_a_head_registered_from_a_test_file_runs_through_run_trial(bottleneck_head, small_data, tmp_path):
    session = LocalSession(tmp_path)
    result = run_trial({**BASE, "head": "bottleneck", "bottleneck": 3, "epochs": 1}, small_data, session)
    model = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    assert model["head.0.weight"].shape == (3, 512)  # resnet18's 512 features into the searched width
    assert model["head.3.weight"].shape == (2, 3)
    assert [m["epoch"] for m in session.history] == [1]
    assert 0.0 <= result["val_auc"] <= 1.0 and 0.0 <= result["test_auc"] <= 1.0
    weights = [v for k, v in model.items() if "running" not in k and "num_batches" not in k]
    assert result["n_params"] == sum(v.numel() for v in weights)
    # its parameter is a config key like any other: default filled in, range checked, refused elsewhere
    assert "bottleneck" in TRIAL_DEFAULTS and make_trial_config({"head": "bottleneck"})["bottleneck"] == 4
    with pytest.raises(ConfigError, match="bottleneck=0 is out of range"):
        make_trial_config({"head": "bottleneck", "bottleneck": 0})
    with pytest.raises(ConfigError, match="bottleneck=3 is a parameter of the bottleneck head, but the head is "
                                          "'linear'"):
        make_trial_config({"head": "linear", "bottleneck": 3})


def test_an_unregistered_head_and_its_parameter_are_gone(bottleneck_head):
    HEADS.unregister(bottleneck_head.name)
    try:
        assert "bottleneck" not in TRIAL_DEFAULTS
        with pytest.raises(ConfigError, match="unknown parameter 'bottleneck'"):
            make_trial_config({"bottleneck": 3})
    finally:
        HEADS.register(bottleneck_head)  # for the fixture's teardown


# --- a throw-away strategy: the last group joins from epoch `top_from` -----------------------------------

TOP_FROM = Param("top_from", int, 2, "the epoch from which the last layer group trains", low=1)


class TopFrom(Strategy):
    """The head alone, then from epoch ``top_from`` on also the last layer group."""

    def __init__(self, context: StrategyContext, *, top_from: int) -> None:
        if top_from > context.epochs:
            raise ConfigError(f"top_from={top_from} is after the last epoch ({context.epochs}).")
        self.top_from = top_from

    def trainable_groups(self, num_groups: int, epoch: int) -> range:
        return range(num_groups - 1, num_groups) if epoch >= self.top_from else range(0)


@pytest.fixture
def top_from_strategy():
    spec = STRATEGIES.register(StrategySpec("top_from", "a test's throw-away strategy", (TOP_FROM,), strategy=TopFrom))
    yield spec
    STRATEGIES.unregister(spec.name)


def test_a_strategy_registered_from_a_test_file_runs_through_run_trial(top_from_strategy, small_data, tmp_path):
    session = LocalSession(tmp_path)
    run_trial({**BASE, "strategy": "top_from", "top_from": 2, "epochs": 2}, small_data, session)
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    head = sum(p.numel() for p in model.head.parameters())
    last_group = sum(p.numel() for p in model.group_parameters(model.num_groups - 1))
    assert [m["n_trainable_params"] for m in session.history] == [head, head + last_group]
    assert all(0.0 <= m["val_auc"] <= 1.0 for m in session.history)
    # its own check sees the trial facts it was given (epochs), not the config
    with pytest.raises(ConfigError, match=r"top_from=3 is after the last epoch \(2\)"):
        make_trial_config({"strategy": "top_from", "top_from": 3, "epochs": 2})


# --- every declared parameter refuses bad values, naming its key ---------------------------------------


def _chooser(name: str) -> dict[str, str]:
    """The component choice under which ``name`` is used (none for a trial-level key)."""
    for registry in COMPONENTS:
        if name in registry.params():
            return {registry.kind: registry.users(name)[0]}
    return {}


def _invalid_values(param: Param) -> list[object]:
    types = param.type if isinstance(param.type, tuple) else (param.type,)
    if str in types:
        bad: list[object] = [3]
    elif bool in types:
        bad = ["yes"]
    elif float in types:
        bad = ["1"]
    else:
        bad = [2.5, True]  # an int key refuses a float and a bool
    if param.choices is not None:
        bad.append("nope")
    if param.low is not None:
        bad.append(param.low if param.low_open else param.low - 1)
    if param.high is not None:
        bad.append(param.high if param.high_open else param.high + 1)
    return bad


INVALID = [(param.name, value) for param in trial_params().values() for value in _invalid_values(param)]


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[f"{k}={v!r}" for k, v in INVALID])
def test_every_parameter_refuses_a_bad_value_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{key}={value!r}')} "):
        make_trial_config({**_chooser(key), key: value})


def test_shared_parameters_are_one_declaration():
    assert HEADS.get("conv").params == HEADS.get("convskip").params
    assert all(a is b for a, b in zip(HEADS.get("conv").params, HEADS.get("convskip").params, strict=True))


# --- a parameter given to a component that ignores it is refused, in every registry ---------------------


def _valid(param: Param) -> object:
    if param.default is not None:
        return param.default
    if param.low is not None and param.high is not None:
        return (param.low + param.high) / 2
    return int(param.low or 0) + 1


FOREIGN = [(registry, component.name, param) for registry in COMPONENTS for param in registry.params().values()
           for component in registry if param.name not in component.param_names()]


@pytest.mark.parametrize(("registry", "chosen", "param"), FOREIGN,
                         ids=[f"{registry.kind}={chosen}+{param.name}" for registry, chosen, param in FOREIGN])
def test_a_parameter_given_to_a_component_that_ignores_it_is_refused(registry, chosen, param):
    kind, value = registry.kind, _valid(param)
    users = " and ".join(c.name for c in registry if param.name in c.param_names())
    expected = (f"{param.name}={value!r} is a parameter of the {users} {kind}, but the {kind} is {chosen!r}, "
                "which ignores it")
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}"):
        make_trial_config({kind: chosen, param.name: value})


@pytest.mark.parametrize("registry", COMPONENTS, ids=[r.kind for r in COMPONENTS])
def test_a_misspelt_component_name_gets_the_closest_one(registry):
    name = registry.names()[0]
    with pytest.raises(ConfigError, match=f"unknown {registry.kind} '{name}x'. Did you mean '{name}'"):
        make_trial_config({registry.kind: f"{name}x"})


# --- the README's tables are generated from the declarations -------------------------------------------


def test_readme_tables_are_the_declarations():
    assert readme_tables(README.read_text()) == render_tables(), (
        "README.md's parameter tables differ from the declarations: run `python -m tuner.params_doc`")

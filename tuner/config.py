"""A trial's configuration: canonical names, defaults, and the checks run before any trial starts.

Every key here is a canonical name: the same word is the ``--set`` key, the MLflow param, and the
analysis frame column. ``None`` means "not used by this model" (a conv knob on a linear head, an
unfreeze depth under full fine-tuning), and is logged as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

from tuner.errors import ConfigError
from tuner.models import HEAD_KNOBS, get_backbone
from tuner.models.heads import check_head
from tuner.models.weights import NAMED_WEIGHTS
from tuner.strategies import check_strategy_config

TRIAL_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "weights": "imagenet",
    "head": "linear",
    "kernel_size": None,
    "filters": None,
    "hidden_ratio": None,
    "dropout": 0.0,
    "strategy": "ft",
    "unfreeze": None,
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": 10,
    "image_size": 224,
    "augment": False,
    "seed": 0,
    "amp": True,
}
OPTIMIZERS = ("sgd", "adam")

_TYPES: dict[str, type | tuple[type, ...]] = {
    "backbone": str, "weights": str, "head": str, "strategy": str, "optimizer": str,
    "kernel_size": int, "filters": int, "unfreeze": int, "batch_size": int, "epochs": int,
    "image_size": int, "seed": int, "hidden_ratio": (int, float), "dropout": (int, float),
    "lr": (int, float), "momentum": (int, float), "weight_decay": (int, float), "augment": bool,
    "amp": bool,
}


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    close = get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown parameter {key!r} for {where}.{hint} Known: {', '.join(sorted(known))}.")


def make_trial_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, checked; returns the config a trial runs with."""
    unknown = [k for k in values if k not in TRIAL_DEFAULTS]
    if unknown:
        raise unknown_key_error(unknown[0], list(TRIAL_DEFAULTS), "a trial")
    config = {**TRIAL_DEFAULTS, **values}
    check_trial_config(config)
    return config


def check_trial_config(config: Mapping[str, Any]) -> None:
    """Every check that needs no file or data: names, types, ranges, and that every given value is one
    the model actually uses."""
    for key, expected in _TYPES.items():
        value = config[key]
        if value is None:
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{key}={value!r} must be of type {names}.")
    spec = get_backbone(config["backbone"])
    check_head(config["head"])
    for knob in {k for knobs in HEAD_KNOBS.values() for k in knobs} - set(HEAD_KNOBS[config["head"]]):
        if config[knob] is not None:
            users = " and ".join(h for h, knobs in HEAD_KNOBS.items() if knob in knobs)
            raise ConfigError(f"{knob}={config[knob]!r} only shapes the {users} head, but the head is "
                              f"{config['head']!r}, which ignores it. Remove {knob} or change the head.")
    check_strategy_config(config, spec.num_groups, spec.name)
    if config["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {config['optimizer']!r}; use one of {', '.join(OPTIMIZERS)}.")
    weights = config["weights"]
    if weights not in NAMED_WEIGHTS and not (weights.endswith((".pt", ".pth", ".bin")) or "/" in weights):
        raise ConfigError(f"weights={weights!r} is neither one of {', '.join(NAMED_WEIGHTS)} nor the path of a "
                          "state-dict file (.pt / .pth).")
    _check_range(config, "lr", low=0.0, low_open=True)
    _check_range(config, "momentum", low=0.0, high=1.0, high_open=True)
    _check_range(config, "weight_decay", low=0.0)
    _check_range(config, "dropout", low=0.0, high=1.0, high_open=True)
    _check_range(config, "hidden_ratio", low=0.0, low_open=True)
    _check_range(config, "kernel_size", low=1)
    _check_range(config, "filters", low=1)
    _check_range(config, "batch_size", low=2)
    _check_range(config, "epochs", low=1)
    if config["image_size"] < spec.min_image_size:
        raise ConfigError(f"image_size={config['image_size']} is too small for {spec.name}: its feature maps "
                          f"vanish below {spec.min_image_size} px. Use image_size >= {spec.min_image_size}.")


def _check_range(config: Mapping[str, Any], key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    value = config[key]
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise ConfigError(f"{key}={value!r} is out of range: it must be {' and '.join(p for p in (lo, hi) if p)}.")

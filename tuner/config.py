"""A trial's configuration: canonical names, defaults, and the checks run before any trial starts.

Every key here is a canonical name: the same word is the ``--set`` key, the MLflow param, and the
analysis frame column. ``None`` means "not used by this model" (a conv knob on a linear head, an
unfreeze depth under full fine-tuning), and is logged as such. A knob the model does use but that was
not given gets its default filled in, so the logged config is exactly what ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

from tuner.errors import ConfigError
from tuner.models import HEAD_KNOBS, get_backbone
from tuner.models.heads import DEFAULT_FILTERS, DEFAULT_HIDDEN_RATIO, DEFAULT_KERNEL_SIZE, check_head
from tuner.models.weights import NAMED_WEIGHTS
from tuner.strategies import STRATEGY_DEFAULTS, check_strategy_config, get_strategy

TRIAL_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "weights": "imagenet",
    "head": "linear",
    "kernel_size": None,
    "filters": None,
    "hidden_ratio": None,
    "dropout": 0.0,
    "strategy": "ft",
    "layer_groups": "stages",
    "unfreeze": None,
    "unfreeze_every": None,
    "lp_epochs": None,
    "sp_alpha": None,
    "sp_beta": None,
    "loss": "ce",
    "focal_gamma": None,
    "focal_alpha": None,
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": 10,
    "image_size": 224,
    "resize_size": None,
    "augment": False,
    "patience": None,
    "metric": "val_auc",
    "seed": 0,
    "amp": True,
}
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "focal")
# Validation metrics a trial can select its best epoch by (and a search optimise); higher is better.
SELECTION_METRICS = ("val_auc", "val_map", "val_acc", "val_macro_acc", "val_kappa", "val_f1")
_KNOB_DEFAULTS = {"kernel_size": DEFAULT_KERNEL_SIZE, "filters": DEFAULT_FILTERS, "hidden_ratio": DEFAULT_HIDDEN_RATIO,
                  "focal_gamma": 2.0, **STRATEGY_DEFAULTS}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "backbone": str, "weights": str, "head": str, "strategy": str, "optimizer": str,
    "kernel_size": int, "filters": int, "unfreeze": int, "batch_size": int, "epochs": int,
    "image_size": int, "seed": int, "hidden_ratio": (int, float), "dropout": (int, float),
    "lr": (int, float), "momentum": (int, float), "weight_decay": (int, float), "augment": bool,
    "amp": bool, "layer_groups": str, "unfreeze_every": int, "lp_epochs": int, "sp_alpha": (int, float),
    "sp_beta": (int, float), "loss": str, "focal_gamma": (int, float), "focal_alpha": (int, float),
    "resize_size": int, "patience": int, "metric": str,
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
    _check_types(config)
    used = set(HEAD_KNOBS.get(config["head"], ())) | set(get_strategy(config["strategy"]).params)
    used |= {"focal_gamma"} if config["loss"] == "focal" else set()
    for key in used:
        if config[key] is None and key in _KNOB_DEFAULTS:
            config[key] = _KNOB_DEFAULTS[key]
    check_trial_config(config)
    return config


def _check_types(config: Mapping[str, Any]) -> None:
    for key, expected in _TYPES.items():
        value = config[key]
        if value is None:
            if TRIAL_DEFAULTS[key] is not None:
                raise ConfigError(f"{key} cannot be None: every trial needs one (default {TRIAL_DEFAULTS[key]!r}).")
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{key}={value!r} must be of type {names}.")


def check_trial_config(config: Mapping[str, Any]) -> None:
    """Every check that needs no file or data: names, types, ranges, and that every given value is one
    the model actually uses."""
    _check_types(config)
    spec = get_backbone(config["backbone"])
    num_groups = len(spec.layer_groups(config["layer_groups"]))
    check_head(config["head"])
    for knob in {k for knobs in HEAD_KNOBS.values() for k in knobs} - set(HEAD_KNOBS[config["head"]]):
        if config[knob] is not None:
            users = " and ".join(h for h, knobs in HEAD_KNOBS.items() if knob in knobs)
            raise ConfigError(f"{knob}={config[knob]!r} only shapes the {users} head, but the head is "
                              f"{config['head']!r}, which ignores it. Remove {knob} or change the head.")
    check_strategy_config(config, num_groups, spec.name)
    if config["loss"] not in LOSSES:
        raise ConfigError(f"unknown loss {config['loss']!r}; use one of {', '.join(LOSSES)}.")
    for knob in ("focal_gamma", "focal_alpha"):
        if config["loss"] != "focal" and config[knob] is not None:
            raise ConfigError(f"{knob}={config[knob]!r} only shapes the focal loss, but loss is {config['loss']!r}. "
                              f"Remove {knob} or set loss=focal.")
    if config["metric"] not in SELECTION_METRICS:
        raise ConfigError(f"metric={config['metric']!r} cannot select the best epoch; use one of "
                          f"{', '.join(SELECTION_METRICS)}.")
    if config["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {config['optimizer']!r}; use one of {', '.join(OPTIMIZERS)}.")
    weights = config["weights"]
    from tuner.models.weights import SSL_PREFIX  # ssl:<encoder file or MLflow run id> (tuner.pretrain)

    if weights.startswith(SSL_PREFIX) and not weights[len(SSL_PREFIX):].strip():
        raise ConfigError(f"weights={weights!r} names no SSL encoder: use ssl:<encoder.pt path> or ssl:<MLflow run "
                          "id> of a `medtune pretrain` run.")
    if weights not in NAMED_WEIGHTS and not (weights.startswith(SSL_PREFIX) or weights.endswith((".pt", ".pth", ".bin"))
                                             or "/" in weights):
        raise ConfigError(f"weights={weights!r} is neither one of {', '.join(NAMED_WEIGHTS)}, nor ssl:<encoder file "
                          "or MLflow run id>, nor the path of a state-dict file (.pt / .pth).")
    _check_range(config, "lr", low=0.0, low_open=True)
    _check_range(config, "momentum", low=0.0, high=1.0, high_open=True)
    _check_range(config, "weight_decay", low=0.0)
    _check_range(config, "dropout", low=0.0, high=1.0, high_open=True)
    _check_range(config, "hidden_ratio", low=0.0, low_open=True)
    _check_range(config, "kernel_size", low=1)
    _check_range(config, "filters", low=1)
    _check_range(config, "batch_size", low=2)
    _check_range(config, "epochs", low=1)
    _check_range(config, "patience", low=1)
    _check_range(config, "focal_gamma", low=0.0)
    _check_range(config, "focal_alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    if config["resize_size"] is not None and config["resize_size"] < config["image_size"]:
        raise ConfigError(f"resize_size={config['resize_size']} is smaller than image_size={config['image_size']}: "
                          "the centre crop would not fit. Use resize_size >= image_size, or drop it.")
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

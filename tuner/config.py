"""A trial's configuration: canonical names, defaults, and the checks run before any trial starts.

Every key here is a canonical name: the same word is the ``--set`` key, the MLflow param, and the
analysis frame column. Nothing is declared twice: the trial-level keys are the ``Param``s of
``TRIAL_PARAMS``; the keys of a head, strategy, loss or optimizer are the ``Param``s that component
declares in its registry (``COMPONENTS``). Types, ranges, defaults and refusals all derive from them.

``None`` means "not used by this model" (a conv knob on a linear head, an unfreeze depth under full
fine-tuning), and is logged as such. A knob the chosen component does use but that was not given gets
its default filled in, so the logged config is exactly what ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tuner.errors import ConfigError
from tuner.models import HEADS, get_backbone
from tuner.options import FOLDS
from tuner.spec import SEED_MAX, Param, Registry, did_you_mean, refuse_foreign_params
from tuner.strategies import STRATEGIES, build_strategy
from tuner.training.inputs import CROP, SAMPLER
from tuner.training.losses import LOSSES
from tuner.training.optimizers import OPTIMIZERS
from tuner.weight_sources import check_weights

# Validation metrics a trial can select its best epoch by (and a search optimise); higher is better.
SELECTION_METRICS = ("val_auc", "val_map", "val_acc", "val_macro_acc", "val_kappa", "val_f1")

TRIAL_PARAMS: tuple[Param, ...] = (
    Param("backbone", str, "resnet18", "the trunk, from the backbone registry"),
    Param("weights", str, "imagenet", "the trunk's starting weights: `none`, `imagenet`, `radimagenet`, "
          "`ssl:<encoder file or MLflow run id>`, or a state-dict file path"),
    Param("layer_groups", str, "stages", "the trunk's layer groups: `stages` (5 groups, comparable across "
          "families) or `paper` (the strategies paper's blocks)"),
    Param("head", str, "linear", "the classifier head on the pooled features"),
    Param("dropout", (int, float), 0.0, "dropout in the head", low=0.0, high=1.0, high_open=True),
    Param("strategy", str, "ft", "the fine-tuning strategy: which layer groups train when (below)"),
    Param("loss", str, "ce", "the training loss"),
    Param("optimizer", str, "sgd", "the optimizer"),
    Param("lr", (int, float), 1e-3, "the base learning rate, cosine-annealed over `epochs`", low=0.0, low_open=True),
    Param("weight_decay", (int, float), 0.0, "the optimizer's weight decay", low=0.0),
    Param("batch_size", int, 32, "training images per step", low=2),
    Param("epochs", int, 10, "training epochs", low=1),
    Param("patience", int, None, "stop after that many epochs without a better validation score", low=1,
          nullable=True),
    Param("image_size", int, 224, "side of the square image the trunk sees (at least the backbone's minimum)", low=1),
    Param("resize_size", int, None, "resize the shorter side to this, then centre-crop `image_size` (unset: a "
          "square resize)", low=1, nullable=True),
    Param("augment", bool, False, "random rotation, shift and shear of the training images"),
    CROP,  # declared with the input pipeline (tuner.training.inputs), which applies them
    SAMPLER,
    Param("metric", str, "val_auc", "the validation metric that selects the best epoch", choices=SELECTION_METRICS),
    Param("seed", int, 0, "seeds weight initialisation, shuffling and augmentation", low=0, high=SEED_MAX),
    FOLDS,  # also `medtune confirm --folds`: one declaration
    Param("fold", int, 0, "with `folds`: which fold is the validation split", low=0),
    Param("amp", bool, True, "mixed precision on CUDA"),
)
# The component registries; each is chosen by the trial-level key named like its kind (head=, strategy=, ...).
COMPONENTS: tuple[Registry[Any], ...] = (HEADS, STRATEGIES, LOSSES, OPTIMIZERS)
_TRIAL_LEVEL = frozenset(p.name for p in TRIAL_PARAMS)


def trial_params() -> dict[str, Param]:
    """Every key of a trial config, by name: each trial-level ``Param`` followed by the parameters of the
    components it chooses between. Read from the registries on each call, so that a component
    registered after import (a plug-in, a test's throw-away head) brings its keys along."""
    declared: list[Param] = []
    for param in TRIAL_PARAMS:
        declared.append(param)
        declared += [p for registry in COMPONENTS if registry.kind == param.name for p in registry.params().values()]
    params: dict[str, Param] = {}
    for param in declared:
        if params.setdefault(param.name, param) is not param:
            raise ValueError(f"config key {param.name!r} is declared twice; a component parameter needs a name of "
                             "its own (or the same Param object)")
    return params


class _TrialDefaults(Mapping[str, Any]):
    """Every config key with the value a trial runs with when it is not given: the trial-level default,
    or None for a component's parameter (filled with its default when that component is chosen)."""

    def __getitem__(self, key: str) -> Any:
        param = trial_params()[key]
        return param.default if key in _TRIAL_LEVEL else None

    def __iter__(self) -> Iterator[str]:
        return iter(trial_params())

    def __len__(self) -> int:
        return len(trial_params())


# A live view of the declarations, not a copy: a component registered later adds its keys.
TRIAL_DEFAULTS: Mapping[str, Any] = _TrialDefaults()


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    """The one message for a config key nothing declares: the closest declared key, and every one."""
    return ConfigError(f"unknown parameter {key!r} for {where}.{did_you_mean(key, known)} "
                       f"Known: {', '.join(sorted(known))}.")


def make_trial_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, the chosen components' parameters filled in, checked; returns
    the config a trial runs with."""
    params = trial_params()
    unknown = [k for k in values if k not in params]
    if unknown:
        raise unknown_key_error(unknown[0], list(params), "a trial")
    config = {**TRIAL_DEFAULTS, **values}
    for param in TRIAL_PARAMS:
        param.check(config[param.name])
    for registry in COMPONENTS:
        config.update(registry.get(config[registry.kind]).own_values(config))
    check_trial_config(config)
    return config


def check_trial_config(config: Mapping[str, Any]) -> None:
    """Every check that needs no file or data: names, types, ranges, and that every given value is one
    the model actually uses."""
    for param in TRIAL_PARAMS:
        param.check(config[param.name])
    spec = get_backbone(config["backbone"])
    num_groups = len(spec.layer_groups(config["layer_groups"]))
    for registry in COMPONENTS:
        component = registry.get(config[registry.kind])
        refuse_foreign_params(registry, component, config)
        component.own_values(config)
    build_strategy(config, num_groups)  # the strategy's own checks: against the trunk's groups, epochs, weight decay
    check_weights(spec, config["weights"])  # its form, from the weight-source registry (tuner.weight_sources)
    if config["folds"] is None and config["fold"] != 0:
        raise ConfigError(f"fold={config['fold']} without folds: the fold index selects one fold of k-fold "
                          "cross-validation. Set folds (e.g. folds=5), or drop fold.")
    if config["folds"] is not None and config["fold"] >= config["folds"]:
        raise ConfigError(f"fold={config['fold']} is out of range for folds={config['folds']}: use a fold index "
                          f"from 0 to {config['folds'] - 1}.")
    if config["resize_size"] is not None and config["resize_size"] < config["image_size"]:
        raise ConfigError(f"resize_size={config['resize_size']} is smaller than image_size={config['image_size']}: "
                          "the centre crop would not fit. Use resize_size >= image_size, or drop it.")
    if config["resize_size"] is not None and config["crop"] == "weights":
        raise ConfigError(f"resize_size={config['resize_size']} and crop=weights both set the resize before the "
                          "centre crop. Drop resize_size (crop=weights takes it from the weights), or use crop=none.")
    if config["image_size"] < spec.min_image_size:
        raise ConfigError(f"image_size={config['image_size']} is too small for {spec.name}: its feature maps "
                          f"vanish below {spec.min_image_size} px. Use image_size >= {spec.min_image_size}.")

"""A pretraining run's configuration: defaults, types and ranges, checked before any data is read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.pretrain.vae import check_decodable

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "backbone": "convnext_tiny",  # the paper's encoder
    "latent_dim": 256,
    "beta": 1.0,
    "kl_warmup_epochs": 10,
    "epochs": 30,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 64,
    "image_size": 64,
    "decoder_width": 256,
    "augment": False,
    "seed": 0,
}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "backbone": str, "latent_dim": int, "beta": (int, float), "kl_warmup_epochs": int, "epochs": int,
    "lr": (int, float), "weight_decay": (int, float), "batch_size": int, "image_size": int,
    "decoder_width": int, "augment": bool, "seed": int,
}


def make_pretrain_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, checked."""
    unknown = sorted(set(values) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown pretraining parameter {unknown[0]!r}; known: {', '.join(PRETRAIN_DEFAULTS)}.")
    config = {**PRETRAIN_DEFAULTS, **values}
    for key, expected in _TYPES.items():
        value = config[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{key}={value!r} must be of type {names}.")
    spec = get_backbone(config["backbone"])
    if config["latent_dim"] < 1:
        raise ConfigError(f"latent_dim={config['latent_dim']} is out of range: the VAE's latent needs at least "
                          "1 dimension (the paper uses 256).")
    for key, low, strict in (("beta", 0.0, False), ("lr", 0.0, True), ("weight_decay", 0.0, False),
                             ("kl_warmup_epochs", 0, False), ("epochs", 1, False), ("batch_size", 2, False),
                             ("decoder_width", 1, False)):
        value = config[key]
        if value < low or (strict and value == low):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {'>' if strict else '>='} {low}.")
    if config["image_size"] < spec.min_image_size:
        raise ConfigError(f"image_size={config['image_size']} is too small for {spec.name}: its feature maps "
                          f"vanish below {spec.min_image_size} px. Use image_size >= {spec.min_image_size}.")
    check_decodable(config["image_size"])
    return config

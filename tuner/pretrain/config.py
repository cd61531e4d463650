"""A pretraining run's configuration: its ``Param``s (types, ranges, defaults; ``medtune pretrain``'s
options are built from them), checked before any data is read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.options import CPUS_PER_TRIAL, GPUS_PER_TRIAL, GRACE_PERIOD, NUM_SAMPLES, REDUCTION_FACTOR, option
from tuner.pretrain.vae import check_decodable
from tuner.spec import SEED_MAX, Param, did_you_mean

PRETRAIN_PARAMS: tuple[Param, ...] = (
    Param("backbone", str, "convnext_tiny", "registry backbone whose trunk is the encoder (the paper's: "
          "convnext_tiny)"),
    Param("latent_dim", int, 256, "latent dimensions", low=1),
    Param("beta", (int, float), 1.0, "KL weight after warm-up", low=0.0),
    Param("kl_warmup_epochs", int, 10, "linear KL warm-up: beta_e = beta * min(1, e / W), epochs from 1; 0: none",
          low=0),
    Param("epochs", int, 30, "pretraining epochs", low=1),
    Param("lr", (int, float), 1e-3, "Adam learning rate, cosine schedule", low=0.0, low_open=True),
    Param("weight_decay", (int, float), 0.0, "Adam's weight decay", low=0.0),
    Param("batch_size", int, 64, "training images per step", low=2),
    Param("image_size", int, 64, "b * 2**k with b in 4..7 (28, 32, 64, 128, 224, ...), at least the backbone's "
          "minimum", low=1),
    Param("decoder_width", int, 256, "channels of the decoder's first grid", low=1),
    Param("augment", bool, False, "rotation/shift/shear on training images"),
    Param("seed", int, 0, "seeds initialisation, shuffling and augmentation", low=0, high=SEED_MAX),
)
PRETRAIN_DEFAULTS: dict[str, Any] = {param.name: param.default for param in PRETRAIN_PARAMS}
# `medtune pretrain --search`'s options (PretrainRequest fields), shared with `medtune tune` where they mean the same
PRETRAIN_SEARCH_OPTIONS: tuple[Param, ...] = (
    option(NUM_SAMPLES, default=8, nullable=False), CPUS_PER_TRIAL, GPUS_PER_TRIAL, GRACE_PERIOD, REDUCTION_FACTOR,
    Param("search_seed", int, 0, "--search: the random sampler's seed", low=0, high=SEED_MAX),
)


def make_pretrain_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, each checked against its declaration, then the checks that
    need the backbone (its minimum size) and the decoder (the sizes it can reach)."""
    unknown = sorted(set(values) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown pretraining parameter {unknown[0]!r}.{did_you_mean(unknown[0], PRETRAIN_DEFAULTS)} "
                          f"Known: {', '.join(PRETRAIN_DEFAULTS)}.")
    config = {**PRETRAIN_DEFAULTS, **values}
    for param in PRETRAIN_PARAMS:
        param.check(config[param.name])
    spec = get_backbone(config["backbone"])
    if config["image_size"] < spec.min_image_size:
        raise ConfigError(f"image_size={config['image_size']} is too small for {spec.name}: its feature maps "
                          f"vanish below {spec.min_image_size} px. Use image_size >= {spec.min_image_size}.")
    check_decodable(config["image_size"])
    return config

"""The weight sources medtune ships: ``none``, ``imagenet`` (torchvision), ``radimagenet``, and the path
of a state-dict file. (``ssl:<...>`` is registered by the pretraining side, which owns encoders.)

``imagenet`` goes through torchvision's own weights enums, so the file is cached under
``$TORCH_HOME/hub/checkpoints/`` and a file placed there by hand is used unchanged; its preprocessing
is read from the enum's ``transforms()``. ``radimagenet`` reads RadImageNet's PyTorch release from
``$MEDTUNE_WEIGHTS_DIR/radimagenet/``.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import torch

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec
from tuner.models.weights._source import WEIGHTS_DIR_ENV, WeightSource, register_weight_source, weights_dir
from tuner.models.weights._state_dict import imported_preprocessing
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")


def imagenet_file(spec: BackboneSpec) -> Path:
    """Where torchvision caches (and looks for) this backbone's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.imagenet_weights.url).name


def torchvision_preprocessing(weights: Any) -> Preprocessing:
    """A torchvision weights enum member's own preprocessing (its ``transforms()``): mean, std,
    interpolation, and ``crop_pct = crop_size / resize_size`` (224 / 256 for most ImageNet weights)."""
    preset = weights.transforms()
    crop, resize = getattr(preset, "crop_size", None), getattr(preset, "resize_size", None)
    crop_pct = crop[0] / resize[0] if crop and resize else None
    return Preprocessing(tuple(preset.mean), tuple(preset.std), interpolation=preset.interpolation.value,
                         crop_pct=crop_pct, source=f"torchvision {type(weights).__name__}.{weights.name}")


class NoWeights(WeightSource):
    """``none``: a randomly initialised trunk (torchvision's own init), trained from scratch."""

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        return None

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        return IMAGENET_PREPROCESSING  # what medtune has always normalised with; nothing else is implied


class TorchvisionImagenet(WeightSource):
    """``imagenet``: the torchvision ImageNet weights the backbone declares, downloaded once (hash
    checked) into torchvision's cache."""

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        _require_imagenet(spec)
        path = imagenet_file(spec)
        if not path.is_file():
            _download_imagenet(spec, path)
        return path

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        _require_imagenet(spec)
        return torchvision_preprocessing(spec.imagenet_weights)


class RadImageNet(WeightSource):
    """``radimagenet``: RadImageNet's PyTorch release, placed by hand (it has no download URL)."""

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        if spec.radimagenet_file is None:
            other = "weights=imagenet" if spec.imagenet_weights is not None else "weights=none or ssl:<encoder>"
            raise ConfigError(f"RadImageNet publishes no weights for {spec.name}; use resnet50 or "
                              f"densenet121, or {other}.")
        path = weights_dir() / "radimagenet" / spec.radimagenet_file
        if not path.is_file():
            raise ConfigError(
                f"RadImageNet weights for {spec.name} not found: {path}. Put RadImageNet's PyTorch file "
                f"{spec.radimagenet_file} into {path.parent} (or set ${WEIGHTS_DIR_ENV})."
            )
        return path

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        return IMAGENET_PREPROCESSING  # medtune's normalisation so far; results stay comparable


class StateDictFile(WeightSource):
    """The path of a state-dict file (``.pt``, ``.pth``, ``.bin``, or any value with a ``/``): the
    catch-all form, matched last."""

    def recognises(self, spec: BackboneSpec, value: str) -> bool:
        return value.endswith(STATE_DICT_SUFFIXES) or "/" in value

    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights file not found: {path}. Give the path of an existing state-dict file "
                              "(saved with torch.save), or another form of weights.")
        return path

    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        # What ``medtune weights import`` recorded beside the file, else medtune's default.
        return imported_preprocessing(value) or IMAGENET_PREPROCESSING


def _require_imagenet(spec: BackboneSpec) -> None:
    if spec.imagenet_weights is None:
        instead = (f", or backbone {spec.imagenet_alternative} for ImageNet transfer"
                   if spec.imagenet_alternative else "")
        raise ConfigError(f"no ImageNet weights exist for {spec.name}; use weights=none or ssl:<encoder>{instead}.")


def _download_imagenet(spec: BackboneSpec, path: Path) -> None:
    """Fetch through torchvision (which verifies the hash) once, on the driver, before trials start."""
    try:
        spec.imagenet_weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise ConfigError(
            f"ImageNet weights for {spec.name} are not cached and cannot be downloaded ({error}). "
            f"Put {path.name} (from {spec.imagenet_weights.url}) into {path.parent}, or set $TORCH_HOME "
            "to a folder whose hub/checkpoints/ holds it."
        ) from error


register_weight_source(NoWeights("none", "start from a random initialisation", form="none"))
register_weight_source(TorchvisionImagenet("imagenet", "torchvision's ImageNet weights of the backbone",
                                           form="imagenet"))
register_weight_source(RadImageNet("radimagenet", "RadImageNet's PyTorch release, from $MEDTUNE_WEIGHTS_DIR",
                                   form="radimagenet"))
register_weight_source(StateDictFile("file", "a state-dict file saved with torch.save",
                                     form="<path of a state-dict file (.pt / .pth / .bin)>", priority=-1))

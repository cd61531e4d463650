"""Where a trunk's starting weights come from: ``none``, ``imagenet``, ``radimagenet``, ``ssl:<...>``
(an encoder from ``medtune pretrain``: a file or an MLflow run id, see ``tuner.pretrain.encoder``) or a
file.

``imagenet`` goes through torchvision's own weights enums, so the file is cached under
``$TORCH_HOME/hub/checkpoints/`` and a file placed there by hand is used unchanged. ``radimagenet``
reads RadImageNet's PyTorch release from ``$MEDTUNE_WEIGHTS_DIR/radimagenet/``. Any other value is a
path to a state-dict file. Every file is loaded with ``weights_only=True`` (no pickled code runs), its
keys are rewritten by the backbone's declared foreign prefixes, and it must fill every trunk tensor:
a file that silently left part of the trunk random would invalidate a whole study.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec

WEIGHTS_DIR_ENV = "MEDTUNE_WEIGHTS_DIR"
NAMED_WEIGHTS = ("none", "imagenet", "radimagenet")
SSL_PREFIX = "ssl:"  # weights=ssl:<encoder.pt path or MLflow run id> (tuner.pretrain.encoder)


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "~/.medtune/weights")).expanduser()


def imagenet_file(spec: BackboneSpec) -> Path:
    """Where torchvision caches (and looks for) this backbone's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.imagenet_weights.url).name


def weights_file(spec: BackboneSpec, weights: str) -> Path | None:
    """The file a ``weights`` value needs (None for ``none``); raises if it cannot be had."""
    if weights == "none":
        return None
    if weights == "imagenet":
        if spec.imagenet_weights is None:
            instead = (f", or backbone {spec.imagenet_alternative} for ImageNet transfer"
                       if spec.imagenet_alternative else "")
            raise ConfigError(f"no ImageNet weights exist for {spec.name}; use weights=none or ssl:<encoder>{instead}.")
        path = imagenet_file(spec)
        if not path.is_file():
            _download_imagenet(spec, path)
        return path
    if weights == "radimagenet":
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
    if weights.startswith(SSL_PREFIX):
        from tuner.pretrain.encoder import resolve_ssl_encoder  # imported here: it imports this module

        return resolve_ssl_encoder(spec, weights[len(SSL_PREFIX):])
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}. weights must be one of "
                          f"{', '.join(NAMED_WEIGHTS)} or the path of a state-dict file.")
    return path


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


def load_trunk_weights(trunk: nn.Module, spec: BackboneSpec, weights: str) -> None:
    """Fill ``trunk`` (a torchvision model whose classifier is replaced) from ``weights``."""
    path = weights_file(spec, weights)
    if path is None:
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise ConfigError(f"cannot load weights file {path} ({type(error).__name__}: {error}). It must "
                          "be a PyTorch state dict saved with torch.save.") from error
    state = _unwrap(state, path)
    state = remap_keys(state, spec.foreign_prefixes)
    expected = trunk.state_dict()
    classifier_prefix = spec.classifier_attr + "."
    usable = {k: v for k, v in state.items() if not k.startswith(classifier_prefix)}
    problems = describe_mismatch({k: tuple(v.shape) for k, v in usable.items()},
                                 {k: tuple(v.shape) for k, v in expected.items()}, found_as="file")
    if problems:
        raise ConfigError(f"weights file {path} does not fit backbone {spec.name}: {'; '.join(problems)}. "
                          "Is it a state dict of that architecture?")
    trunk.load_state_dict({k: usable[k] for k in expected})


def describe_mismatch(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], *,
                      found_as: str, report_extra: bool = False) -> list[str]:
    """How a state dict's tensors differ from a trunk's, in words; empty when every trunk tensor is there
    with its shape (and, with ``report_extra``, nothing else is)."""
    missing = sorted(set(expected) - set(found))
    wrong = sorted(k for k in set(expected) & set(found) if found[k] != expected[k])
    extra = sorted(set(found) - set(expected)) if report_extra else []
    problems = []
    if missing:
        problems.append(f"{len(missing)} trunk tensors missing (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} tensors the trunk does not have (e.g. {', '.join(extra[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {found_as} {found[k]}, model {expected[k]})")
    return problems


def remap_keys(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rewrite keys saved under another module layout (e.g. ``backbone.4.0.conv1.weight`` to
    ``layer1.0.conv1.weight``); keys matching no foreign prefix are kept as they are."""
    remapped = {}
    for key, value in state.items():
        for foreign, ours in prefixes.items():
            if key.startswith(foreign):
                key = ours + key[len(foreign):]
                break
        remapped[key] = value
    return remapped


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or one nested under 'state_dict' / 'model', stripping DataParallel's
    'module.' prefix."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict (name -> tensor).")
    return {k.removeprefix("module."): v for k, v in state.items()}

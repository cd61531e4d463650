"""Reading a state-dict file into a trunk, the one way every file-backed weight source loads.

Every file is loaded with ``weights_only=True`` (no pickled code runs), its keys are rewritten by the
backbone's declared foreign prefixes, and it must fill every trunk tensor with the right shape: a file
that silently left part of the trunk random would invalidate a whole study.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec
from tuner.spec import Preprocessing

METADATA_SUFFIX = ".json"  # provenance beside a file written by ``medtune weights import``


def load_into_trunk(trunk: nn.Module, spec: BackboneSpec, path: Path) -> None:
    """Fill ``trunk`` (the torchvision model with its classifier replaced) from the state dict in ``path``,
    refusing a file that does not fill every trunk tensor."""
    load_state_into_trunk(trunk, spec, read_state_file(path), path)


def load_state_into_trunk(trunk: nn.Module, spec: BackboneSpec, state: dict[str, torch.Tensor], path: Path) -> None:
    """Fill ``trunk`` from ``state`` (read from ``path``, named in refusals): keys remapped by the
    backbone's foreign prefixes, the classifier's tensors ignored, every trunk tensor required."""
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
    with its shape (and, with ``report_extra``, nothing else is). Shared by every source that checks a
    file against a trunk, so each refusal names the same facts."""
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
    ``layer1.0.conv1.weight``), so files from other code load without a conversion step; keys
    matching no foreign prefix are kept as they are."""
    remapped = {}
    for key, value in state.items():
        for foreign, ours in prefixes.items():
            if key.startswith(foreign):
                key = ours + key[len(foreign):]
                break
        remapped[key] = value
    return remapped


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a ``torch.save`` file (loaded with ``weights_only=True``:
    no pickled code runs), unwrapped from a ``state_dict``/``model`` entry and DataParallel's ``module.``."""
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}.")
    try:
        state = load_safetensors(path) if path.suffix == ".safetensors" else torch.load(
            path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for a bad file
        raise ConfigError(f"cannot load weights file {path} ({load_error_text(error)}). It must be a PyTorch "
                          "state dict saved with torch.save, or a safetensors file.") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict (name -> tensor).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_error_text(error: Exception) -> str:
    """Why a file could not be loaded, in one line: for a pickle that asks for code (which
    ``weights_only=True`` refused to run), the global it asked for; else the error's first line.
    torch's own text is paragraphs long, and suggests ``weights_only=False``, which medtune never uses."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError):
        asked = next((line for line in lines if "GLOBAL" in line), "it holds objects other than tensors")
        return f"it holds pickled code, which is never run: {asked.split('. ')[0][:200]}"
    return f"{type(error).__name__}: {(lines[0] if lines else '')[:200]}"


def metadata_path(weights_path: Path) -> Path:
    """Where ``import_weights`` writes a converted file's provenance: ``<file>.json`` beside it."""
    return weights_path.with_name(weights_path.name + METADATA_SUFFIX)


def imported_preprocessing(weights_path: str | Path) -> Preprocessing | None:
    """The preprocessing ``import_weights`` recorded beside a converted file, None where it recorded none
    (or the file was not made by it): what a file weight source should normalise with."""
    path = metadata_path(Path(weights_path).expanduser())
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text()).get("preprocessing")
    if recorded is None:
        return None
    return Preprocessing(mean=tuple(recorded["mean"]), std=tuple(recorded["std"]),
                         interpolation=recorded["interpolation"], crop_pct=recorded["crop_pct"],
                         source=f"{recorded['source']} (recorded by medtune weights import in {path.name})")

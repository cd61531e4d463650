"""The weight-source interface, its registry, and the doors every caller goes through.

A weight source is one way of writing ``weights=...``. It declares, in one class: how it recognises a
value (``recognises``), what it checks before anything is read (``check``), the file it needs
(``file``, which may download or refuse), how that file fills a trunk (``load``), and the
preprocessing its weights expect (``preprocessing``). Adding a source is one ``register_weight_source``
call; nothing else in medtune names the sources.

A value is matched against the sources in order of ``priority`` (highest first): the catch-all
"path of a state-dict file" form has the lowest, so ``ssl:/x/encoder.pt`` is an ssl reference, not a
file. Two sources of the same priority that both claim a value are a bug, and refused as one.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec
from tuner.models.weights._state_dict import load_into_trunk
from tuner.spec import Component, Preprocessing, Registry

WEIGHTS_DIR_ENV = "MEDTUNE_WEIGHTS_DIR"


def weights_dir() -> Path:
    """The folder for weights torchvision does not cache (RadImageNet's files, downloaded encoders):
    ``$MEDTUNE_WEIGHTS_DIR``, else ``~/.medtune/weights``, so every node of a cluster can be pointed at
    one shared copy."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "~/.medtune/weights")).expanduser()


@dataclass(frozen=True)
class WeightSource(Component, ABC):
    """One form of the ``weights`` value: how it is recognised, resolved, loaded, and preprocessed.

    ``form`` is how a user writes it (``ssl:<encoder file or MLflow run id>``), for the refusal that
    lists every form; ``priority`` orders the matching (see the module docstring).
    """

    form: str = ""
    priority: int = 0

    def recognises(self, spec: BackboneSpec, value: str) -> bool:
        """Whether ``value`` is written in this source's form (by default: it is the source's name). The
        backbone is given so that a source can claim a value for its own kind of backbone only."""
        return value == self.name

    def check(self, spec: BackboneSpec, value: str) -> None:
        """Refuse a malformed value when the config is checked, before any file is read or fetched
        (nothing to check by default)."""

    @abstractmethod
    def file(self, spec: BackboneSpec, value: str) -> Path | None:
        """The checked local file the trunk loads from (None: nothing to load). Runs on the driver
        before trials start, so it may download once or refuse with the fix."""

    def load(self, trunk: nn.Module, spec: BackboneSpec, value: str) -> None:
        """Fill ``trunk`` from this source; by default from ``file`` as a state dict, with the
        backbone's prefix remaps and a refusal of any file that does not fill every trunk tensor."""
        path = self.file(spec, value)
        if path is not None:
            load_into_trunk(trunk, spec, path)

    @abstractmethod
    def preprocessing(self, spec: BackboneSpec, value: str) -> Preprocessing:
        """The normalisation and resize convention these weights were trained with, so that a trunk
        sees images the way its weights expect."""

    def written_as(self) -> str:
        """How a user writes this form, for messages."""
        return self.form or self.name


WEIGHT_SOURCES: Registry[WeightSource] = Registry("weight source")


def register_weight_source(source: WeightSource) -> WeightSource:
    """Declare a weight source; from then on every ``weights`` value is matched against it too."""
    return WEIGHT_SOURCES.register(source)


def weight_forms() -> list[str]:
    """Every way ``weights`` may be written, most specific first (for messages and documentation)."""
    ordered = sorted(WEIGHT_SOURCES, key=lambda s: -s.priority)
    return list(dict.fromkeys(s.written_as() for s in ordered))


def find_weight_source(spec: BackboneSpec, weights: str) -> WeightSource:
    """The source that ``weights`` is written for, on backbone ``spec``; a value in no known form is
    refused with every form there is."""
    matches = [s for s in WEIGHT_SOURCES if isinstance(weights, str) and s.recognises(spec, weights)]
    if not matches:
        raise ConfigError(f"weights={weights!r} is in no known form. Use one of: {', '.join(weight_forms())}.")
    best = max(s.priority for s in matches)
    top = [s for s in matches if s.priority == best]
    if len(top) > 1:
        raise ValueError(f"weights={weights!r} is claimed by the weight sources {', '.join(s.name for s in top)} "
                         "at the same priority; give one of them a higher priority")
    return top[0]


def check_weights(spec: BackboneSpec, weights: str) -> WeightSource:
    """What a config check needs: the value's source, after the checks that need no file."""
    source = find_weight_source(spec, weights)
    source.check(spec, weights)
    return source


def weights_file(spec: BackboneSpec, weights: str) -> Path | None:
    """The file a ``weights`` value needs (None for ``none``); raises if it cannot be had. The search
    calls it on the driver for every configuration, so a missing file fails before any trial runs."""
    return find_weight_source(spec, weights).file(spec, weights)


def load_trunk_weights(trunk: nn.Module, spec: BackboneSpec, weights: str) -> None:
    """Fill ``trunk`` (a torchvision model whose classifier is replaced) from ``weights``."""
    find_weight_source(spec, weights).load(trunk, spec, weights)


def preprocessing_for(spec: BackboneSpec, weights: str) -> Preprocessing:
    """The preprocessing the trunk's starting weights expect; reads no weight file."""
    return find_weight_source(spec, weights).preprocessing(spec, weights)

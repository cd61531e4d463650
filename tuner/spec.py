"""The declarations every extension point is built from: a typed parameter, a named component, a
registry of components, and the preprocessing a set of weights expects.

A component (a backbone, head, strategy, optimizer, loss or weight source) is declared once, with its
parameters' types, ranges and defaults. Config checking, default filling, refusals of a knob the chosen
component ignores, and the README's parameter table all read these declarations, so adding a
component means writing it in one place (timm's ``register_model`` and Optuna's self-checking objects
are the models).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Generic, TypeVar

from tuner.errors import ConfigError

# The highest seed a seed Param allows: numpy's seeds are 32-bit (trial, searcher and pretraining seeds).
SEED_MAX = 2**32 - 1


def did_you_mean(word: object, known: Sequence[str] | Mapping[str, Any]) -> str:
    """`` Did you mean 'x'?`` for the closest known name, or an empty string."""
    close = get_close_matches(str(word), list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: object, known: Sequence[str] | Mapping[str, Any]) -> ConfigError:
    """The one message for a name no registry knows: what was asked, the closest match, every choice."""
    return ConfigError(f"unknown {kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(sorted(known))}.")


@dataclass(frozen=True)
class Param:
    """One configuration key: its type, default, allowed range or choices, and what it does.

    ``default`` is the value a trial runs with when the key is not given. For a component's parameter
    (a head's ``kernel_size``) the config holds ``None`` unless that component is chosen, and this
    default is filled in when it is, so the logged config is exactly what ran.
    """

    name: str
    type: type | tuple[type, ...]
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes ``low`` itself
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False  # None is a meaningful value (e.g. "no resize", "no patience")

    def check(self, value: Any, key: str | None = None) -> None:
        """Refuse a value of the wrong type or outside the range, naming the key, the value, what is
        allowed and the fix. ``key`` is how the user wrote the key (``--num-samples`` for a command-line
        option, written ``--num-samples 0``), when that is not the Param's name (written ``lr=0``)."""
        key = key or self.name
        given = f"{key} {value!r}" if key.startswith("-") else f"{key}={value!r}"
        if value is None:
            if self.nullable or self.default is None:
                return
            raise ConfigError(f"{key} cannot be None: every trial needs one (default {self.default!r}).")
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            allowed = f", {self.range_text()}" if self.range_text() else ""
            raise ConfigError(f"{given} must be of type {names}{allowed} ({self.doc}).{self._example()}")
        if self.choices is not None and value not in self.choices:
            allowed = [str(c) for c in self.choices]
            raise ConfigError(f"{given} is not allowed.{did_you_mean(value, allowed)}"
                              f" Use one of {', '.join(allowed)}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{given} is not a finite number: it must be "
                              f"{self.range_text() or 'finite'} ({self.doc}).{self._example()}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ConfigError(f"{given} is out of range: it must be {self.range_text()} "
                              f"({self.doc}).{self._example()}")

    def _example(self) -> str:
        """The fix when nothing better is known: the default, which is always allowed."""
        return f" The default is {self.default!r}." if self.default is not None and self.choices is None else ""

    def range_text(self) -> str:
        """The allowed values in words (``> 0 and < 1``, ``one of sgd, adam``); empty when anything of the type goes."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        high = "" if self.high is None else f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return " and ".join(part for part in (low, high) if part)


def _number(bound: float) -> str:
    """A range bound as written: integers in full (a seed's 4294967295), other numbers short (1e-08)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


@dataclass(frozen=True)
class Component:
    """A named, documented choice with its own parameters (a head, a strategy, an optimizer, ...)."""

    name: str
    doc: str
    params: tuple[Param, ...] = field(default=())

    def param_names(self) -> tuple[str, ...]:
        """The config keys this component reads; no other component of its kind may be given them."""
        return tuple(p.name for p in self.params)

    def own_values(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """This component's parameters from a full config, defaults filled in and each value checked."""
        values = {}
        for param in self.params:
            value = config.get(param.name)
            values[param.name] = param.default if value is None else value
            param.check(values[param.name])
        return values


C = TypeVar("C", bound=Component)


class Registry(Generic[C]):
    """The components of one kind, by name: ``register`` declares one, ``get`` is the one door."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, C] = {}

    def register(self, component: C) -> C:
        """Declare ``component``; a second declaration under the same name is a bug, not an override."""
        if component.name in self._items:
            raise ValueError(f"{self.kind} {component.name!r} is already registered")
        for param in component.params:
            for other in self._items.values():
                for theirs in other.params:
                    if theirs.name == param.name and theirs != param:
                        raise ValueError(f"{self.kind} {component.name!r} declares {param.name!r} differently "
                                         f"from {other.name!r}; share one Param")
        self._items[component.name] = component
        return component

    def unregister(self, name: str) -> None:
        """Remove a component (a test's throw-away one)."""
        del self._items[name]

    def get(self, name: str) -> C:
        """The component called ``name``; an unknown name is refused with the closest match and every choice."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown_name(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._items)

    def params(self) -> dict[str, Param]:
        """Every parameter any component of this kind declares, by name (shared ones once)."""
        return {p.name: p for component in self._items.values() for p in component.params}

    def users(self, param: str) -> list[str]:
        """The components that read ``param``."""
        return [c.name for c in self._items.values() if param in c.param_names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[C]:
        return iter(self._items.values())


def refuse_foreign_params(registry: Registry[Any], chosen: Component, config: Mapping[str, Any]) -> None:
    """A value given for a parameter that only other components of this kind read would be logged but
    never used: refuse it, naming who reads it."""
    for name in sorted(set(registry.params()) - set(chosen.param_names())):
        if config.get(name) is not None:
            users = " and ".join(registry.users(name))
            raise ConfigError(f"{name}={config[name]!r} is a parameter of the {users} {registry.kind}, but the "
                              f"{registry.kind} is {chosen.name!r}, which ignores it. Remove {name} or change the "
                              f"{registry.kind}.")


@dataclass(frozen=True)
class Preprocessing:
    """What a set of weights expects of an image: normalisation, interpolation, and the resize/crop
    convention where it has one. It comes from the weights' own declaration (torchvision's
    ``transforms()``, timm's ``pretrained_cfg``), never from a global constant."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float | None = None  # resize to image_size / crop_pct, then centre-crop, where the weights say so
    source: str = ""  # where these values come from, for the logged params

    def as_params(self) -> dict[str, str]:
        """The preprocessing as MLflow params (``preprocess_mean`` ...)."""
        return {"preprocess_mean": ",".join(f"{v:.4g}" for v in self.mean),
                "preprocess_std": ",".join(f"{v:.4g}" for v in self.std),
                "preprocess_interpolation": self.interpolation,
                "preprocess_crop_pct": "none" if self.crop_pct is None else f"{self.crop_pct:g}",
                "preprocess_source": self.source}


IMAGENET_PREPROCESSING = Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), source="imagenet-default")

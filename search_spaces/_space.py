"""Define-by-run search spaces.

A search-space module defines ``define(s: Space) -> dict``: it asks ``s`` for each searched value and
returns the constants. Branching is plain Python, so a parameter can exist only where it matters
(a kernel size only for conv heads). The same function serves every searcher:

- ``OptunaSpace`` asks an Optuna trial (TPE or random sampling);
- ``enumerate_space`` walks every branch, which gives the grid search (each numeric parameter's
  ``grid`` values) and the set of configurations checked before a search starts.

Pinned values (``--set key=value``) are returned without asking, so they are never searched. A list
pin (``--set backbone=[resnet18,vgg19]``, ``--set lr=[1e-3,1e-4]``) makes the parameter a choice
among those values instead.

A space never asks for ``seed`` or ``fold`` (``tuner.schema.REPLICATE_KEYS``): they replicate a
configuration rather than define it. A searcher that chose seeds would learn which seeds are lucky;
replicates belong to the confirmation stage (``medtune confirm --seeds N``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tuner.errors import ConfigError
from tuner.schema import REPLICATE_KEYS

Define = Callable[["Space"], Mapping[str, Any] | None]


class Space:
    """What ``define`` functions call. Subclasses decide where values come from."""

    def __init__(self, pins: Mapping[str, Any] | None = None) -> None:
        self.pins = dict(pins or {})
        self.values: dict[str, Any] = {}

    def choice(self, name: str, options: Sequence[Any]) -> Any:
        return self._record(name, lambda: self._choice(name, list(options)))

    def int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False,
            grid: Sequence[int] | None = None) -> int:
        """``grid`` lists the values a grid search tries (default: every value from low to high)."""
        return self._record(name, lambda: self._int(name, low, high, step, log,
                                                    list(grid or range(low, high + 1, step))))

    def constant(self, name: str, value: Any) -> Any:
        """A value that is not searched but that later questions depend on (e.g. ``epochs``, which
        bounds ``lp_epochs``): the pinned value if there is one, else ``value``."""
        return self._record(name, lambda: value)

    def float(self, name: str, low: float, high: float, *, log: bool = False,
              grid: Sequence[float] | None = None) -> float:
        """``grid`` lists the values a grid search tries (default: the two bounds)."""
        return self._record(name, lambda: self._float(name, low, high, log, list(grid or (low, high))))

    def configuration(self, constants: Mapping[str, Any] | None) -> dict[str, Any]:
        """The configuration one pass through ``define`` gave: the constants it returned, every value it
        asked, and the fixed pins. A pin overrides a constant of the same name (``--set image_size=64``
        over a space that returns ``image_size: 28``); a list pin only narrows a question."""
        fixed = {key: value for key, value in self.pins.items() if not isinstance(value, list)}
        return {**(constants or {}), **self.values, **fixed}

    def _record(self, name: str, ask: Callable[[], Any]) -> Any:
        if name in REPLICATE_KEYS:
            raise ConfigError(f"the search space asks for {name!r}, but seeds and folds are replicates, not "
                              f"hyperparameters: a searcher would learn which {name}s are lucky. Remove it from the "
                              f"space; a search runs each configuration with one {name} (pin it with --set "
                              f"{name}=N), and the confirmation stage replicates the chosen ones "
                              "(medtune confirm --seeds N).")
        if name in self.values:
            raise ValueError(f"search space asks for {name!r} twice")
        pinned = self.pins.get(name, ask)
        if isinstance(pinned, list):
            self.values[name] = self._choice(name, pinned)
        else:
            self.values[name] = ask() if pinned is ask else pinned
        return self.values[name]

    def _choice(self, name: str, options: list[Any]) -> Any:
        raise NotImplementedError

    def _int(self, name: str, low: int, high: int, step: int, log: bool, grid: list[int]) -> int:
        raise NotImplementedError

    def _float(self, name: str, low: float, high: float, log: bool, grid: list[float]) -> float:
        raise NotImplementedError


class OptunaSpace(Space):
    """Values suggested by an Optuna trial (whatever its sampler: TPE, random, ...)."""

    def __init__(self, trial: Any, pins: Mapping[str, Any] | None = None) -> None:
        super().__init__(pins)
        self.trial = trial

    def _choice(self, name: str, options: list[Any]) -> Any:
        return self.trial.suggest_categorical(name, options)

    def _int(self, name: str, low: int, high: int, step: int, log: bool, grid: list[int]) -> int:
        return self.trial.suggest_int(name, low, high, step=step, log=log)

    def _float(self, name: str, low: float, high: float, log: bool, grid: list[float]) -> float:
        return self.trial.suggest_float(name, low, high, log=log)


class _PathSpace(Space):
    """Answers the i-th question with option ``path[i]``; records how many options each question had,
    so ``enumerate_space`` can walk every branch depth-first."""

    def __init__(self, path: list[int], pins: Mapping[str, Any] | None) -> None:
        super().__init__(pins)
        self.path = path
        self.widths: list[int] = []

    def _pick(self, options: list[Any]) -> Any:
        depth = len(self.widths)
        self.widths.append(len(options))
        return options[self.path[depth] if depth < len(self.path) else 0]

    def _choice(self, name: str, options: list[Any]) -> Any:
        return self._pick(options)

    def _int(self, name: str, low: int, high: int, step: int, log: bool, grid: list[int]) -> int:
        return self._pick(grid)

    def _float(self, name: str, low: float, high: float, log: bool, grid: list[float]) -> float:
        return self._pick(grid)


def enumerate_space(define: Define, pins: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every configuration of the space's grid: all choices, all ints, floats at their ``grid``
    values, following conditional branches. Each result is ``Space.configuration``: constants, asked
    values and fixed pins."""
    configs: list[dict[str, Any]] = []
    asked: set[str] = set()
    path: list[int] | None = []
    while path is not None:
        space = _PathSpace(path, pins)
        configs.append(space.configuration(define(space)))
        asked |= space.values.keys()
        path = _next_path(path + [0] * (len(space.widths) - len(path)), space.widths)
    _check_list_pins_are_asked(pins or {}, asked, configs)
    return configs


def _check_list_pins_are_asked(pins: Mapping[str, Any], asked: set[str], configs: list[dict[str, Any]]) -> None:
    """A list pin narrows a question the space asks; on a value no branch asks (a constant such as
    ``optimizer: sgd``, or a parameter the space leaves at the trial's default) it would be dropped and
    every trial would run one value: refused instead."""
    for name, values in pins.items():
        if isinstance(values, list) and name not in asked:
            fixed = sorted({repr(c[name]) for c in configs if name in c})
            where = f"it sets {name} to {', '.join(fixed)}" if fixed else f"{name} stays at the trial's default"
            raise ConfigError(f"--set {name}={values}: the search space never asks for {name!r} ({where}), so a "
                              f"list cannot make it a choice and every trial would run one value. Pin one value "
                              f"(--set {name}={values[0]!r}), or search it with a space that asks for it "
                              f"(s.choice({name!r}, ...) in a module of search_spaces/).")


def _next_path(path: list[int], widths: list[int]) -> list[int] | None:
    """The next branch in depth-first order: advance the deepest question with options left."""
    for depth in reversed(range(len(widths))):
        if path[depth] + 1 < widths[depth]:
            return path[:depth] + [path[depth] + 1]
    return None

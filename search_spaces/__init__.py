"""Search spaces, one module per study. Each module is plain Python a researcher can copy and edit:

- ``define(s: Space) -> dict``: asks ``s`` for each searched value; returns the constants;
- ``ANALYSIS``: the study's default analysis (the mixed-model formula, its groups, the factor to
  plot against); ``medtune analyze`` reads it;
- ``ARMS`` (optional): the factors the study compares, e.g. ``("head", "unfreeze")``. A sampled search
  gives every cell of those factors (every combination of their levels the space can reach) an equal
  share of the trials and tunes the other knobs within each cell, so no arm is starved and each is
  compared at its own best (``tuner.arms``).

``get_space("name")`` finds ``search_spaces/<name>.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from search_spaces._space import Define, OptunaSpace, Space, enumerate_space
from tuner.errors import ConfigError

__all__ = ["Define", "OptunaSpace", "Space", "enumerate_space", "get_space", "space_arms", "space_names"]


def space_names() -> list[str]:
    """The shipped spaces: every module of ``search_spaces/`` not starting with ``_``."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_space(name: str) -> ModuleType:
    """The space module ``search_spaces/<name>.py``; an unknown name is refused with the known ones."""
    if name not in space_names():
        raise ConfigError(f"unknown search space {name!r}. Known spaces: {', '.join(space_names())} "
                          "(modules in search_spaces/).")
    return importlib.import_module(f"search_spaces.{name}")


def space_arms(space: ModuleType) -> tuple[str, ...]:
    """The factors a space's study compares (its ``ARMS``; none when it declares none)."""
    arms = tuple(getattr(space, "ARMS", ()))
    if not all(isinstance(factor, str) for factor in arms):
        raise ConfigError(f"{space.__name__}.ARMS must be a tuple of config keys, e.g. ('head',); got {arms!r}.")
    return arms

"""Search spaces, one module per study. Each module is plain Python a researcher can copy and edit:

- ``define(s: Space) -> dict``: asks ``s`` for each searched value; returns the constants;
- ``ANALYSIS``: the study's default analysis (the mixed-model formula, its groups, the factor to
  plot against); ``medtune analyze`` reads it.

``get_space("name")`` finds ``search_spaces/<name>.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from search_spaces._space import Define, OptunaSpace, Space, enumerate_space
from tuner.errors import ConfigError

__all__ = ["Define", "OptunaSpace", "Space", "enumerate_space", "get_space", "space_names"]


def space_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_space(name: str) -> ModuleType:
    if name not in space_names():
        raise ConfigError(f"unknown search space {name!r}. Known spaces: {', '.join(space_names())} "
                          "(modules in search_spaces/).")
    return importlib.import_module(f"search_spaces.{name}")

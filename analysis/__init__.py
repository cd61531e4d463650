"""Analysis of finished searches: the public surface for analysis scripts.

from analysis import load_trials, fit_mixed_model, delong_test

Names are imported on first use (PEP 562), so ``medtune --help`` and the CLI's argument parsing do
not pay for MLflow, statsmodels and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DelongResult": "analysis.delong",
    "auc_ci": "analysis.delong",
    "delong_test": "analysis.delong",
    "delong_unpaired": "analysis.delong",
    "holm": "analysis.multiplicity",
    "load_search": "analysis.loading",
    "load_test_scores": "analysis.loading",
    "load_trials": "analysis.loading",
    "MixedModelFit": "analysis.mixed_model",
    "crossed_random_effects": "analysis.mixed_model",
    "fit_mixed_model": "analysis.mixed_model",
    "likelihood_ratio_tests": "analysis.modeling",
    "param_importances": "analysis.importance",
    "parametric_bootstrap": "analysis.small_sample",
    "replicate_bootstrap": "analysis.replicate_bootstrap",
    "expected_max": "analysis.tuning_curves",
    "tuning_curve": "analysis.tuning_curves",
    "split_stages": "analysis.stages",
    "AnalysisOptions": "analysis.context",
    "build_report": "analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then keep the name here (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The lazy names too, so that completion and ``dir(analysis)`` show the whole surface."""
    return sorted(set(globals()) | set(__all__))

"""Analysis of finished searches: the public surface for analysis scripts.

from analysis import load_trials, fit_mixed_model, delong_test
"""

from analysis.delong import DelongResult, auc_ci, delong_test, delong_unpaired
from analysis.loading import load_test_scores, load_trials
from analysis.mixed_model import MixedModelFit, crossed_random_effects, fit_mixed_model

__all__ = [
    "DelongResult",
    "MixedModelFit",
    "auc_ci",
    "crossed_random_effects",
    "delong_test",
    "delong_unpaired",
    "fit_mixed_model",
    "load_test_scores",
    "load_trials",
]

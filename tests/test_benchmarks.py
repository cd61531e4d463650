"""Each benchmark's short form runs to the end and prints its figure lines. No timing is asserted:
the figures are ratios measured on whatever machine runs the tests (BENCHMARKS.md has the real ones).
``load.py --short`` runs in tests/test_load.py, which also reads its MLflow stores back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FIGURE = re.compile(r"^FIGURE (\S+) = (\S+) \| goal (.+?) \| (MET|MISSED|-) \| .+$", re.MULTILINE)

EXPECTED = {
    "overhead": ["overhead.end_to_end_ratio", "overhead.per_epoch_ratio", "overhead.fixed_cost_in_bare_epochs"],
    "search_efficiency": ["search_efficiency.trial_epochs_fraction_median", "search_efficiency.wall_fraction"],
    "memory": ["memory.pss_vs_allowance.2_trials", "memory.private_data_copies.2_trials", "memory.pss_ratio_2_vs_1",
               "memory.worker_import_saving_mib"],
    "lp_cache": ["lp_cache.epoch_speedup.resnet18.lp", "lp_cache.epoch_speedup.densenet121.lp",
                 "lp_cache.bit_identical.resnet18.lp", "lp_cache.bit_identical.densenet121.lp",
                 "lp_cache.search_speedup.4x_resnet18.lp", "lp_cache.search_speedup_over_per_trial.4x_resnet18.lp",
                 "lp_cache.search_same_metrics.4x_resnet18.lp"],
    "tabular": ["tabular.trial_epochs_fraction_median.medtune_tpe_asha",
                "tabular.trial_epochs_fraction_median.optuna_tpe_sh", "tabular.medtune_vs_tpe_sh",
                "tabular.seeds_within_20pct.medtune_tpe_asha"],
    "quality": ["quality.test_auc_mean", "quality.test_acc_mean", "quality.single_best_test_auc_mean",
                "quality.cpu_minutes"],
    "transfer": ["transfer.test_auc.lp.32.imagenet", "transfer.test_auc.ft.32.random",
                 "transfer.imagenet_minus_random.ft.32", "transfer.cpu_minutes"],
    "omp_wait": ["omp_wait.passive_over_default.resnet18_ft_28.idle",
                 "omp_wait.passive_over_default.resnet18_ft_28.busy"],
    "input_pipeline": ["input_pipeline.epoch_speedup.128.augment", "input_pipeline.epoch_speedup.128.plain",
                       "input_pipeline.bit_identical.128"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(EXPECTED))
def test_short_form_runs_and_prints_its_figures(script):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"), "--short"],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = {name: value for name, value, _, _ in FIGURE.findall(proc.stdout)}
    assert set(EXPECTED[script]) <= set(figures), (sorted(figures), proc.stdout[-2000:])
    for name in EXPECTED[script]:
        value = figures[name]
        assert value in ("yes", "NO") or float(value) == float(value), (name, value)  # a number, not NaN
    if script == "lp_cache":  # the one figure that is not a timing: the cache must not change results
        assert figures["lp_cache.bit_identical.resnet18.lp"] == "yes"
        assert figures["lp_cache.bit_identical.densenet121.lp"] == "yes"
        assert figures["lp_cache.search_same_metrics.4x_resnet18.lp"] == "yes"
    if script == "input_pipeline":  # unaugmented trials keep their numbers
        assert figures["input_pipeline.bit_identical.128"] == "yes"

"""The function every Tune trial worker runs.

It lives apart from ``tuner.search`` because Ray pickles a trainable by reference: a worker imports
the module the function is defined in. Defined in ``tuner.search``, it made every worker import
MLflow, Optuna and the driver's search code, which no trial uses (~100 MiB per worker;
``benchmarks/memory.py`` measures it). From here a worker imports the trial and Tune's reporting only.
"""

from __future__ import annotations

from typing import Any

from tuner.data import DatasetSplits
from tuner.training.checkpoint import CheckpointPolicy
from tuner.training.session import TuneSession
from tuner.training.trial import run_trial


def tune_trial(config: dict[str, Any], data: DatasetSplits, policy: CheckpointPolicy | None = None) -> None:
    """The Tune function trainable: one trial reporting to Tune, writing its state by ``policy``; a
    diverged trial reports that it diverged instead of erroring."""
    session = TuneSession(policy)
    try:
        run_trial(config, data, session)
    except FloatingPointError as error:
        session.report_divergence(str(error))

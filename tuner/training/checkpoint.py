"""What a trial saves each epoch, so that a paused, preempted or failed trial resumes where it was.

A checkpoint folder holds ``state.pt`` (the model, optimizer, random-number states and the trial's
progress; the learning-rate schedule is a function of the epoch), ``best_model.pt`` (the weights with
the best validation score so far) and ``test_scores.csv`` (the best model's per-sample test
probabilities, the input to DeLong tests).
The best model's files travel in every checkpoint, so the newest checkpoint alone is enough,
whether the search finished the trial or ASHA stopped it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from tuner.schema import TEST_SCORES_FILE

STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"


@dataclass
class Progress:
    """The trial's bookkeeping that is not a tensor."""

    epoch: int = 0
    best_score: float = float("-inf")  # best value of the config's selection metric
    best_val_auc: float = float("nan")  # validation AUC at that epoch
    best_epoch: int = 0
    test_metrics: dict[str, float] = field(default_factory=dict)


def save_checkpoint(folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loader_generator: torch.Generator, progress: Progress,
                    best_model: dict[str, torch.Tensor], test_scores: pd.DataFrame | None) -> None:
    """Write everything a bit-exact resume needs (weights, optimizer, RNG states, progress) plus the best
    epoch's weights and per-sample test scores, which DeLong tests read."""
    folder.mkdir(parents=True, exist_ok=True)
    with _without_crc32():
        torch.save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "progress": asdict(progress), "torch_rng": torch.get_rng_state(),
            "loader_rng": loader_generator.get_state(),
        }, folder / STATE_FILE)
        torch.save(best_model, folder / BEST_MODEL_FILE)
    if test_scores is not None:
        test_scores.to_csv(folder / TEST_SCORES_FILE, index=False, float_format="%.9g")


@contextmanager
def _without_crc32() -> Iterator[None]:
    """Checksumming every record is about 40% of torch.save's time, paid every epoch (benchmarks/overhead.py).
    torch.load does not check the checksums, so the files load the same; only a generic unzip tool would
    complain about them."""
    previous = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(previous)


def load_checkpoint(folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loader_generator: torch.Generator
                    ) -> tuple[Progress, dict[str, torch.Tensor], pd.DataFrame | None]:
    """Restore ``model``, ``optimizer`` and the RNG states from ``folder``; returns the progress, the best
    weights and the best epoch's test scores, so a resumed trial continues exactly where it stopped."""
    # Training draws random numbers only from torch (augmentation, dropout, shuffling), so the torch
    # states are all a bit-exact resume needs.
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    loader_generator.set_state(state["loader_rng"])
    best_model = torch.load(folder / BEST_MODEL_FILE, map_location="cpu", weights_only=True)
    scores_path = folder / TEST_SCORES_FILE
    test_scores = pd.read_csv(scores_path) if scores_path.is_file() else None
    return Progress(**state["progress"]), best_model, test_scores

"""What a trial saves, and when, so that a paused, preempted or failed trial resumes where it was.

A checkpoint folder holds some of: ``state.pt`` (the model, optimizer, random-number states and the
trial's progress; the learning-rate schedule is a function of the epoch), ``best_model.pt`` (the
weights with the best validation score so far), ``test_scores.csv`` (the best model's per-sample
test probabilities, the input to DeLong tests) and ``val_scores.csv`` (its validation probabilities).

Three kinds, by what they must cost (``CheckpointPolicy`` says which an epoch writes):

- a *state* checkpoint, everything above: what a resume needs. Written every ``checkpoint_every``
  epochs and/or once ``checkpoint_seconds`` have passed since the last one. A resume loses at most the
  epochs since; ASHA never needs one (it stops trials, it never pauses them).
- a *final* checkpoint, the best model and its scores, when the trial's last epoch is not a state one.
- a *scores* checkpoint, the scores files alone (a few KB), when the best epoch changed and no other
  is due: a trial ASHA stops after any epoch still carries its best epoch's test scores.

Tune keeps the newest checkpoint and the newest state checkpoint (``CHECKPOINT_RANK``), so the
previous state is deleted only once the next one is complete, and a trial resumes from the newest
state it can read (``read_checkpoint`` reads every file before anything is applied).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from tuner.schema import TEST_SCORES_FILE, VAL_SCORES_FILE
from tuner.spec import Param

STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"
# Reported with each checkpoint: the time a state checkpoint was written, -1 for the others. Tune keeps
# the top-ranked checkpoint (the newest state) besides the newest one (CheckpointConfig(num_to_keep=1)).
CHECKPOINT_RANK = "checkpoint_state_rank"

CHECKPOINT_EVERY = Param("checkpoint_every", int, 0, "a search trial writes its full state (model, optimizer) "
                         "every this many epochs; 0: by `--checkpoint-seconds` alone", low=0)
CHECKPOINT_SECONDS = Param("checkpoint_seconds", (int, float), 300.0, "a search trial writes its full state "
                           "once this many seconds have passed since the last time (a resume loses at most "
                           "that much); 0: by `--checkpoint-every` alone", low=0.0)


CheckpointKind = Literal["state", "final", "scores"]  # what an epoch writes (see the module)


class UnreadableCheckpoint(ValueError):
    """A checkpoint folder that is truncated, missing a file, or not what a trial writes: the trial
    goes back to an older checkpoint, or starts afresh, rather than failing the search."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a trial writes its full state: every ``every_epochs`` epochs (0: never by count) and/or
    once ``every_seconds`` have passed since the last state checkpoint (0: never by time). With both 0
    a trial never writes its state (a resume starts it afresh); its best model and scores still go
    into a final checkpoint."""

    every_epochs: int = CHECKPOINT_EVERY.default
    every_seconds: float = CHECKPOINT_SECONDS.default

    def __post_init__(self) -> None:
        CHECKPOINT_EVERY.check(self.every_epochs, key="--checkpoint-every")
        CHECKPOINT_SECONDS.check(self.every_seconds, key="--checkpoint-seconds")

    def state_due(self, epoch: int, since_last_s: float) -> bool:
        """Whether ``epoch``'s end writes the trial's state, ``since_last_s`` seconds after the last
        state checkpoint (or the trial's start)."""
        by_count = self.every_epochs > 0 and epoch % self.every_epochs == 0
        by_time = self.every_seconds > 0 and since_last_s >= self.every_seconds
        return by_count or by_time


EVERY_EPOCH = CheckpointPolicy(every_epochs=1, every_seconds=0.0)  # `medtune train`: one trial, resumable anywhere


class CheckpointClock:
    """Which kind of checkpoint each epoch of one trial writes under ``policy`` (see the module)."""

    def __init__(self, policy: CheckpointPolicy) -> None:
        self.policy = policy
        self.last_state = time.monotonic()

    def kind(self, epoch: int, *, last: bool, best_changed: bool) -> CheckpointKind | None:
        """``"state"``, ``"final"``, ``"scores"`` or None (no checkpoint) for the end of ``epoch``."""
        if self.policy.state_due(epoch, time.monotonic() - self.last_state):
            self.last_state = time.monotonic()
            return "state"
        if last:
            return "final"
        return "scores" if best_changed else None


@dataclass
class Progress:
    """The trial's bookkeeping that is not a tensor."""

    epoch: int = 0
    best_score: float = float("-inf")  # best value of the config's selection metric
    best_val_auc: float = float("nan")  # validation AUC at that epoch
    best_epoch: int = 0
    test_metrics: dict[str, float] = field(default_factory=dict)


def save_checkpoint(folder: Path, *, kind: CheckpointKind = "state", model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, loader_generator: torch.Generator, progress: Progress,
                    best_model: dict[str, torch.Tensor], test_scores: pd.DataFrame | None,
                    val_scores: pd.DataFrame | None = None) -> None:
    """Write a checkpoint of ``kind`` (see the module): a state one holds everything a bit-exact resume
    needs (weights, optimizer, RNG states, progress), a state or final one the best epoch's weights, and
    each the best epoch's per-sample test scores, which DeLong tests read, and its per-sample validation
    scores, which choose a top-k ensemble's k on validation (``analysis.ensemble``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _without_crc32():
        if kind == "state":
            torch.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": asdict(progress), "torch_rng": torch.get_rng_state(),
                "loader_rng": loader_generator.get_state(),
            }, folder / STATE_FILE)
        if kind in ("state", "final"):
            torch.save(best_model, folder / BEST_MODEL_FILE)
    if test_scores is not None:
        test_scores.to_csv(folder / TEST_SCORES_FILE, index=False, float_format="%.9g")
    if val_scores is not None:
        val_scores.to_csv(folder / VAL_SCORES_FILE, index=False, float_format="%.9g")


def has_state(folder: Path) -> bool:
    """Whether ``folder`` is a state checkpoint (one a trial can resume from)."""
    return (folder / STATE_FILE).is_file()


@contextmanager
def _without_crc32() -> Iterator[None]:
    """Checksumming every record is about 40% of torch.save's time (benchmarks/overhead.py). torch.load
    does not check the checksums, so the files load the same; only a generic unzip tool would complain
    about them. A truncated file still fails to load: its zip directory is at the end."""
    previous = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(previous)


@dataclass
class SavedState:
    """A state checkpoint read in full (``read_checkpoint``), not yet applied to a model."""

    state: dict
    best_model: dict[str, torch.Tensor]
    test_scores: pd.DataFrame | None
    val_scores: pd.DataFrame | None

    @property
    def progress(self) -> Progress:
        """The trial's bookkeeping at that checkpoint."""
        return Progress(**self.state["progress"])

    def apply(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              loader_generator: torch.Generator) -> None:
        """Restore ``model``, ``optimizer`` and the RNG states, so the trial continues exactly where it stopped."""
        # Training draws random numbers only from torch (augmentation, dropout, shuffling), so the torch
        # states are all a bit-exact resume needs.
        model.load_state_dict(self.state["model"])
        optimizer.load_state_dict(self.state["optimizer"])
        torch.set_rng_state(self.state["torch_rng"])
        loader_generator.set_state(self.state["loader_rng"])


def read_checkpoint(folder: Path) -> SavedState:
    """Every file of the state checkpoint in ``folder``, read before anything is applied, so that a
    truncated or foreign checkpoint raises ``UnreadableCheckpoint`` and leaves the trial untouched."""
    reading = STATE_FILE
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        missing = {"model", "optimizer", "progress", "torch_rng", "loader_rng"} - set(state)
        if missing:
            raise ValueError(f"not a medtune trial state (missing {sorted(missing)})")
        Progress(**state["progress"])  # its fields must be Progress's
        reading = BEST_MODEL_FILE
        best_model = torch.load(folder / BEST_MODEL_FILE, map_location="cpu", weights_only=True)
        if not isinstance(best_model, dict):
            raise ValueError("not a state dict")
        scores = []
        for name in (TEST_SCORES_FILE, VAL_SCORES_FILE):
            reading = name
            scores.append(pd.read_csv(folder / name) if (folder / name).is_file() else None)
    except Exception as error:  # any way a file can be broken: truncated zip, bad pickle, cut CSV, wrong keys
        raise UnreadableCheckpoint(f"{folder / reading}: {type(error).__name__}: {str(error)[:200]}") from error
    return SavedState(state, best_model, *scores)

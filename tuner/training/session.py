"""Where a trial reports to: Ray Tune inside a search, or the terminal for ``medtune train``.

The trial's code is the same in both; only these methods differ. Each session says when its trial
writes its full state (``policy``; see ``tuner.training.checkpoint``), and ``restore`` goes back to the
newest state checkpoint it can read: a truncated or unreadable one is skipped with a warning (an older
one, else a fresh start), never a failed search.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tuner.training.checkpoint import (
    CHECKPOINT_RANK,
    EVERY_EPOCH,
    STATE_FILE,
    CheckpointPolicy,
    UnreadableCheckpoint,
    has_state,
)
from tuner.training.cost import TrialCost

T = TypeVar("T")
# What a full disk (or quota, or file-size limit) looks like to a write.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StorageFull(OSError):
    """A checkpoint could not be written: the storage is full. The trial ends with this as its reason
    (the search and the other trials go on); ``--resume`` after freeing space re-runs it from its last
    complete checkpoint."""


class TrialSession(Protocol):
    """Where a trial reports each epoch and finds its checkpoint: the trial code is the same under Tune
    and in ``medtune train``, and only this differs."""

    policy: CheckpointPolicy  # when the trial writes its full state

    def restore(self, read: Callable[[Path], T]) -> T | None:
        """``read`` of the newest state checkpoint that it can read (None: a fresh start); a checkpoint
        that ``read`` finds unreadable (``UnreadableCheckpoint``) is skipped with a warning."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Publish one epoch's metrics, with its checkpoint folder if it wrote one (deleted by the caller after)."""

    def feature_cache_dir(self) -> Path | None:
        """Where trials share stored frozen-prefix outputs (``tuner.training.feature_store``); None: nowhere."""


class TuneSession:
    """Reports to Ray Tune: its scheduler decides from these metrics, and it stores the checkpoint.

    Each report also says where the trial ran (Ray node id, the GPUs it was given), which MLflow
    records as tags, and what the trial has cost so far (``tuner.training.cost``); and the last metrics
    are kept so that a diverged trial can end with a report."""

    def __init__(self, policy: CheckpointPolicy | None = None) -> None:
        import ray

        self.policy = policy or CheckpointPolicy()
        self.last: dict[str, Any] = {}
        self.warning = ""  # why the trial did not resume from its newest checkpoint; sent with the next report
        self.cost = TrialCost(gpus=float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)))

    def restore(self, read: Callable[[Path], T]) -> T | None:
        """From Tune's newest checkpoint if it holds the trial's state, else from the newest state
        checkpoint beside it in the trial's folder (Tune keeps one: ``CHECKPOINT_RANK``), then any older
        one left there; each read in Ray's own folder where the storage is local (no copy), a download
        it removes afterwards where not."""
        from ray import tune

        latest = tune.get_checkpoint()
        if latest is None:
            return None
        for checkpoint in _state_checkpoints(latest):
            try:
                with checkpoint.as_directory() as folder:
                    restored = read(Path(folder))
                    self.cost.resume(Path(folder))
                    return restored
            except UnreadableCheckpoint as error:
                self.warning += _warn(f"checkpoint unreadable, skipped: {error}") + "; "
        self.warning += _warn(f"no readable state checkpoint beside {latest.path}: the trial starts afresh")
        return None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Hand the epoch's metrics (and checkpoint, if any) to Tune, with where the trial ran (for MLflow's
        tags) and its checkpoint's rank. A full storage ends the trial with ``StorageFull``."""
        import ray
        from ray import tune

        placement = {"node_id": ray.get_runtime_context().get_node_id(),
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                     **({"checkpoint_warning": self.warning} if self.warning else {})}
        self.warning = ""
        if checkpoint is None:
            self.last = {**metrics, **placement, **self.cost.metrics()}
            tune.report(self.last)
            return
        with _storage_full_is_clear(metrics.get("epoch"), _remove_partial_tune_checkpoint):
            rank = {CHECKPOINT_RANK: time.time() if has_state(checkpoint) else -1.0}
            self.last = {**metrics, **placement, **self.cost.checkpoint(checkpoint), **rank}
            tune.report(self.last, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))

    def feature_cache_dir(self) -> Path | None:
        """``feature_cache`` in the search's Tune experiment folder, where its storage is a file system
        path (local or shared between the nodes); None for remote storage (an object store URI)."""
        import pyarrow.fs
        from ray import tune

        storage = tune.get_context().get_storage()
        if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return None
        return Path(storage.experiment_fs_path) / "feature_cache"

    def report_divergence(self, reason: str) -> None:
        """End a trial whose loss stopped being finite as *stopped*, with its reason, rather than as an
        error that Tune would retry: the same weights would diverge again. The validation metrics are
        those of its last finite epoch (NaN when there was none), so schedulers read a number."""
        from ray import tune

        epoch = self.last.get("epoch", 0) + 1
        nan = float("nan")
        tune.report({**self.last, **self.cost.metrics(), "val_auc": self.last.get("val_auc", nan), "epoch": epoch,
                     "diverged": 1, "stop_reason": f"epoch {epoch}: {reason}"})


class LocalSession:
    """Prints one JSON line per epoch and keeps the newest checkpoint in ``out_dir/checkpoint``."""

    def __init__(self, out_dir: Path, resume: bool = False, policy: CheckpointPolicy = EVERY_EPOCH) -> None:
        self.checkpoint_dir = out_dir / "checkpoint"
        self.resume = resume
        self.policy = policy
        self.history: list[dict[str, Any]] = []

    def _remove_partial(self) -> None:
        """Delete what a write cut short by a full disk left beside ``out_dir/checkpoint``."""
        shutil.rmtree(self.checkpoint_dir.with_name("checkpoint.partial"), ignore_errors=True)
        for leftover in self.checkpoint_dir.glob(".*.partial"):
            leftover.unlink(missing_ok=True)

    def restore(self, read: Callable[[Path], T]) -> T | None:
        """``out_dir/checkpoint`` when resuming and it exists (or the previous one, if a replacement was
        cut short), else None; an unreadable one is a warning and a fresh start."""
        if not self.resume:
            return None
        for folder in (self.checkpoint_dir, self.checkpoint_dir.with_name("checkpoint.previous")):
            if has_state(folder):
                try:
                    return read(folder)
                except UnreadableCheckpoint as error:
                    _warn(f"checkpoint unreadable, skipped: {error}")
        _warn(f"no readable checkpoint in {self.checkpoint_dir.parent}: training starts afresh")
        return None

    def feature_cache_dir(self) -> Path | None:
        """None: a single trial has no one to share with (``MEDTUNE_FEATURE_CACHE_DIR`` still names a store)."""
        return None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Print the epoch as one JSON line and keep its checkpoint (for ``--resume``): a state checkpoint
        replaces ``out_dir/checkpoint`` by a rename once it is complete (the previous one stays until
        then); the files of another kind (best model, scores) are added to it."""
        self.history.append(metrics)
        print(json.dumps(metrics), flush=True)
        if checkpoint is None:
            return
        with _storage_full_is_clear(metrics.get("epoch"), self._remove_partial):
            if not has_state(checkpoint) and self.checkpoint_dir.is_dir():
                for file in checkpoint.iterdir():
                    shutil.copy2(file, self.checkpoint_dir / f".{file.name}.partial")
                    os.replace(self.checkpoint_dir / f".{file.name}.partial", self.checkpoint_dir / file.name)
                return
            partial, previous = (self.checkpoint_dir.with_name(f"checkpoint.{n}") for n in ("partial", "previous"))
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(checkpoint, partial)
            shutil.rmtree(previous, ignore_errors=True)
            if self.checkpoint_dir.exists():
                os.replace(self.checkpoint_dir, previous)
            os.replace(partial, self.checkpoint_dir)
            shutil.rmtree(previous, ignore_errors=True)


def _state_checkpoints(latest: Any) -> Iterator[Any]:
    """Tune checkpoints that hold a trial's state, newest first: ``latest`` itself if it does, then the
    others in its trial's folder (Tune's ``checkpoint_NNNNNN``, newest by number first)."""
    import pyarrow.fs
    from ray import tune

    filesystem, parent = latest.filesystem, os.path.dirname(latest.path.rstrip("/"))
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    names = sorted((info.path for info in found if info.type == pyarrow.fs.FileType.Directory
                    and os.path.basename(info.path).startswith("checkpoint_")), reverse=True)
    for path in [latest.path, *(p for p in names if p != latest.path)]:
        state = filesystem.get_file_info(f"{path}/{STATE_FILE}")
        if state.type == pyarrow.fs.FileType.File:
            yield tune.Checkpoint(path, filesystem=filesystem)


def _remove_partial_tune_checkpoint() -> None:
    """Delete the checkpoint folder Tune was copying when the storage filled: its files are of no use
    (Tune never registered it) and they hold the space the driver needs for its own small files."""
    from ray import tune

    storage = tune.get_context().get_storage()
    try:
        storage.storage_filesystem.delete_dir(storage.checkpoint_fs_path)
    except OSError:
        pass  # never created, or already gone


@contextmanager
def _storage_full_is_clear(epoch: Any, remove_partial: Callable[[], None]) -> Iterator[None]:
    """Turn a write that found the storage full into ``StorageFull``, whose message says so and how to go
    on, after ``remove_partial`` has deleted what the write left."""
    try:
        yield
    except Exception as error:
        cause = _no_space(error)
        if cause is None:
            raise
        remove_partial()
        raise StorageFull(cause.errno, f"the checkpoint of epoch {epoch} could not be written: "
                          f"{os.strerror(cause.errno)} ({cause.filename or cause}). The trial ends here; free "
                          "space, then resume the search (medtune tune ... --resume) to finish it from its last "
                          "complete checkpoint.") from error


def _no_space(error: BaseException | None) -> OSError | None:
    """The full-disk OSError behind ``error`` (Ray wraps the one its copy raised), or None."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return error
        if isinstance(error, OSError) and "No space left on device" in str(error):
            return OSError(errno.ENOSPC, str(error))
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _warn(message: str) -> str:
    """Print ``message`` as a warning on stderr (the trial's log); returns it."""
    print(f"medtune: warning: {message}", file=sys.stderr, flush=True)
    return message

"""Frozen-prefix outputs shared across the trials of a search: a disk store keyed by everything the
outputs depend on.

Within one trial ``tuner.training.epoch_plan`` computes the frozen prefix once. The trials of a search
that share a frozen prefix (same backbone, weights, frozen depth, image size, preprocessing and
deterministic transform, on the same data) would each compute the same outputs again; with a store,
the first one computes and writes them and the others read them.

The key is made of digests of what the computation consumes, not of the names that led to it, so two
computations with one key are the same computation and give the same bits:

- ``prefix``: the prefix's traced code and module structure (the backbone, where it is cut: the
  frozen depth) and every parameter and buffer it holds (the weights, whatever file or seed they came
  from; BatchNorm's running statistics);
- ``inputs``: every image tensor and label the prefix is fed, in order, after the transform (the data
  set and split, the image size, the resize and crop, the preprocessing's mean and std);
- ``batching``: each split's size and the batch size its outputs are computed in (a convolution's
  bits depend on the batch size);
- ``runtime``: torch version, device (CPU capability or GPU model), threads and mixed precision.

Entries are written to a temporary file and renamed (atomic on one file system), so a reader never
sees half an entry, and trials on several nodes can share a store on shared storage. A lock file
(``flock``) makes concurrent trials with one key wait for the first instead of computing it twice; a
file system without ``flock`` only loses that saving. An unreadable entry, or one whose recorded key
differs, is recomputed and replaced. Entries are read memory-mapped, so trials on one node share one
copy in the page cache.

``MEDTUNE_FEATURE_CACHE_SHARED=0`` turns sharing off (each trial computes its own, as before);
``MEDTUNE_FEATURE_CACHE_DIR`` names the store's folder (a search's default is ``feature_cache`` in its
Tune experiment folder).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARED_ENV = "MEDTUNE_FEATURE_CACHE_SHARED"
DIR_ENV = "MEDTUNE_FEATURE_CACHE_DIR"
# Per split: (outputs, labels).
Outputs = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class FeatureKey:
    """What a set of stored prefix outputs depends on (see the module docstring); equal keys mean
    bit-identical outputs."""

    prefix: str
    inputs: str
    batching: tuple[tuple[int, int], ...]
    runtime: str

    def text(self) -> str:
        """Every component as canonical JSON: recorded in the entry, so a reader can tell a digest collision."""
        return json.dumps(asdict(self), sort_keys=True)

    def digest(self) -> str:
        """The entry's file name: a digest of every component."""
        return hashlib.sha256(self.text().encode()).hexdigest()[:40]


def _update(hasher: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())


def prefix_digest(prefix: nn.Module) -> str:
    """The prefix's code, module structure, parameters and buffers."""
    hasher = hashlib.sha256(str(prefix).encode())  # a GraphModule prints its modules and its code
    for name, tensor in prefix.state_dict().items():
        hasher.update(name.encode())
        _update(hasher, tensor)
    return hasher.hexdigest()


def inputs_digest(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Every (images, labels) batch the prefix would be fed, in order."""
    hasher = hashlib.sha256()
    for images, labels in batches:
        _update(hasher, images)
        _update(hasher, torch.as_tensor(labels))
    return hasher.hexdigest()


def runtime_fingerprint(device: torch.device, precision: str) -> str:
    """What else a kernel's bits can depend on: torch, the device's kind, threads and precision."""
    kind = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else torch.backends.cpu.get_cpu_capability())
    return f"torch {torch.__version__}; {device.type} {kind}; {torch.get_num_threads()} threads; {precision}"


def switched_on(variable: str) -> bool:
    """Whether the on-by-default switch ``$variable`` is on: unset or anything but 0, false, no, off (any
    case). One reading for the feature cache's switches (``MEDTUNE_FEATURE_CACHE``, ``..._SHARED``)."""
    return os.environ.get(variable, "1").lower() not in ("0", "false", "no", "off")


def sharing_enabled() -> bool:
    """``MEDTUNE_FEATURE_CACHE_SHARED=0`` (or false/no/off) makes each trial compute its own outputs."""
    return switched_on(SHARED_ENV)


class FeatureStore:
    """A folder of entries, one file per key. ``hits`` and ``misses`` count this object's lookups."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_trial(cls, default: Path | None) -> FeatureStore | None:
        """The store a trial uses: ``$MEDTUNE_FEATURE_CACHE_DIR``, else ``default`` (the session's);
        None where there is none or sharing is off."""
        folder = os.environ.get(DIR_ENV) or default
        return cls(Path(folder)) if folder and sharing_enabled() else None

    def path(self, key: FeatureKey) -> Path:
        """The entry's file."""
        return self.folder / f"{key.digest()}.pt"

    def fetch(self, key: FeatureKey, compute: Callable[[], Outputs]) -> Outputs:
        """The stored outputs for ``key``; computed (once across concurrent callers) and stored if absent."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only or full store: the trial computes its own outputs, as without one
            self.misses += 1
            return compute()
        found = self._read(key)
        if found is not None:
            self.hits += 1
            return found
        with open(self.folder / f"{key.digest()}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError:  # a file system without locks: concurrent trials may compute it twice
                pass
            found = self._read(key)  # another trial may have written it while this one waited
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            outputs = compute()
            self._write(key, outputs)
        return outputs

    def _read(self, key: FeatureKey) -> Outputs | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, weights_only=True, mmap=True)
            if entry["key"] != key.text():
                return None
            return [(outputs, labels) for outputs, labels in entry["splits"]]
        except Exception:  # truncated or unreadable: recompute and replace it
            return None

    def _write(self, key: FeatureKey, outputs: Outputs) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".writing-", suffix=".pt")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                torch.save({"key": key.text(), "splits": [list(s) for s in outputs]}, handle)
            os.replace(temporary, self.path(key))
        except OSError:  # a full or read-only store: this trial still has its outputs
            Path(temporary).unlink(missing_ok=True)

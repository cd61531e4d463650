"""What an epoch runs: the model and the three loaders, planned once per set of trainable groups.

Where the trunk's trainable groups form a suffix (groups k..n-1 with k >= 1: ``lp``, ``topk``, the
probing phase of ``lp_ft``, the first epochs of ``g_lf``) and the training transform declares itself
deterministic (``ImageTransform.random`` is False), the frozen prefix (groups 0..k-1) is a fixed
function of fixed inputs: frozen groups run in inference mode (BatchNorm uses its stored statistics,
see ``tuner.models.classifier``) and their weights never change. The plan then computes that prefix
once per split (``tuner.training.trunk_split``) and runs only the trainable suffix and the head on the
stored outputs. Otherwise the plan is the classifier on the images.

Same results as recomputing, bit for bit on CPU:

- A convolution's output for one image depends on the size of the batch it was computed in (the
  kernels differ), never on which other images share the batch. The training split is therefore
  precomputed in batches of exactly the training batch size, and the evaluation splits in exactly
  their loaders' batches. The one batch of an epoch with another size (the last, partial one) is
  computed when it is drawn, as the uncached path computes it: a few images per epoch.
- The training loader over the stored outputs has the same length, batch size, ``drop_last`` and the
  same seeded generator as the image loader, so it draws the same permutations from it, and the
  global random stream (dropout in the head) is drawn in the same order: the frozen prefix draws
  nothing, and deterministic transforms draw nothing.
- The optimizer, the checkpoints and resuming are untouched: the plan holds no training state and is
  rebuilt (deterministically) after a resume.

The stored outputs are dropped when the trainable groups change (``lp_ft``'s fine-tuning phase,
gradual unfreezing). Given a ``FeatureStore`` (``tuner.training.feature_store``: a search's trials),
the outputs are looked up there by a key of everything they depend on, and computed only on a miss,
so the trials of a search that share a frozen prefix compute it once between them. They are not
used when they would exceed ``MEDTUNE_FEATURE_CACHE_MAX_GB`` (2 GiB by default), and
``MEDTUNE_FEATURE_CACHE=0`` turns them off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from tuner.models.classifier import Classifier
from tuner.training.feature_store import (
    FeatureKey,
    FeatureStore,
    Outputs,
    inputs_digest,
    prefix_digest,
    runtime_fingerprint,
    switched_on,
)
from tuner.training.loop import Precision
from tuner.training.trunk_split import split_trunk

DEFAULT_MAX_GB = 2.0


def cache_enabled() -> bool:
    """``MEDTUNE_FEATURE_CACHE=0`` (or false/no/off) turns stored frozen outputs off, for A/B checks."""
    return switched_on("MEDTUNE_FEATURE_CACHE")


def max_cache_bytes() -> int:
    """The most memory stored frozen outputs may take (``MEDTUNE_FEATURE_CACHE_MAX_GB``)."""
    return int(float(os.environ.get("MEDTUNE_FEATURE_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 2**30)


@dataclass
class EpochPlan:
    """The model an epoch trains and evaluates (the classifier, or its suffix and head on stored frozen
    outputs) and the loaders that feed it. ``stored_bytes`` is what the stored outputs take (0 if none)."""

    model: nn.Module
    train: DataLoader
    val: DataLoader
    test: DataLoader
    stored_bytes: int = 0


class SuffixClassifier(nn.Module):
    """The classifier seen from the cut: its trainable suffix, then its head. Both are the classifier's
    own modules (shared, not copied), so training this trains the classifier."""

    def __init__(self, suffix: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.suffix = suffix
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.suffix(features))


class StoredSplit(Dataset):
    """Stored prefix outputs of one split, computed in batches of ``batch_size`` images (None: in the
    evaluation loader's own batches). A batch of another size is computed by ``recompute``. Batches
    are fetched whole (``__getitems__``); indexing copies, so nothing downstream can change the store."""

    def __init__(self, outputs: torch.Tensor, labels: torch.Tensor, batch_size: int | None,
                 recompute: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.outputs = outputs
        self.labels = labels
        self.batch_size = batch_size
        self.recompute = recompute

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size is not None and len(indices) != self.batch_size:
            return self.recompute(indices)
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.outputs[index], self.labels[index]


def _whole_batch(batch):
    return batch


class EpochPlanner:
    """Per trial: ``plan()`` gives the current epoch's plan for the classifier's trainable groups,
    reusing the last one while they stay the same. ``builds`` counts how often frozen outputs were
    computed, ``loads`` how often they were read from ``store``, and ``refused`` says why the last
    plan runs on images (for tests and benchmarks)."""

    def __init__(self, model: Classifier, loaders: tuple[DataLoader, DataLoader, DataLoader], *,
                 precision: Precision, device: torch.device, max_bytes: int | None = None,
                 enabled: bool | None = None, store: FeatureStore | None = None) -> None:
        self.model = model
        self.loaders = loaders
        self.precision = precision
        self.device = device
        self.max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
        self.enabled = cache_enabled() if enabled is None else enabled
        self._key: frozenset[int] | None = None
        self._plan: EpochPlan | None = None
        self.store = store
        self.builds = 0
        self.loads = 0
        self.refused: str | None = None

    def plan(self) -> EpochPlan:
        """The plan for the classifier's current trainable groups."""
        key = self.model.trainable_groups
        if key != self._key or self._plan is None:
            self._key, self._plan = key, None  # drop the old outputs before computing new ones
            self._plan = self._stored_plan() or EpochPlan(self.model, *self.loaders)
        return self._plan

    def _stored_plan(self) -> EpochPlan | None:
        model, loaders = self.model, self.loaders
        self.refused = self._refusal()
        if self.refused:
            return None
        split = split_trunk(model, min(model.trainable_groups, default=model.num_groups))
        if split is None:
            self.refused = "the trunk cannot be cut at the frozen boundary"
            return None
        train_loader, val_loader, test_loader = loaders
        train_size = min(train_loader.batch_size, len(train_loader.dataset))
        batchings = [(train_size, _chunks(len(train_loader.dataset), train_size)), (None, _batches(val_loader)),
                     (None, _batches(test_loader))]
        was_training = model.training
        model.eval()
        try:
            samples = sum(len(loader.dataset) for loader in loaders)
            total = self._bytes_per_sample(split.prefix, train_loader.dataset) * samples
            if total > self.max_bytes:
                self.refused = (f"the frozen outputs would take {total / 2**30:.2f} GiB "
                                f"(limit {self.max_bytes / 2**30:.2f})")
                return None
            def compute() -> Outputs:
                self.builds += 1
                return [self._compute(split.prefix, loader.dataset, batches)
                        for loader, (_, batches) in zip(loaders, batchings, strict=True)]

            outputs = compute() if self.store is None else self._fetch(split.prefix, batchings, compute)
            stores = [StoredSplit(out, labels, size, self._recompute(split.prefix, loader.dataset))
                      for (out, labels), loader, (size, _) in zip(outputs, loaders, batchings, strict=True)]
        finally:
            model.train(was_training)
        pin = self.device.type == "cuda"
        # the image loader's own sampler where it has one (sampler=balanced): the same draws, from the same generator
        sampler = None if isinstance(train_loader.sampler, RandomSampler) else train_loader.sampler
        train = DataLoader(stores[0], batch_size=train_loader.batch_size, shuffle=sampler is None, sampler=sampler,
                           generator=train_loader.generator, drop_last=train_loader.drop_last,
                           collate_fn=_whole_batch, pin_memory=pin)
        val, test = (DataLoader(store, batch_size=loader.batch_size, collate_fn=_whole_batch, pin_memory=pin)
                     for store, loader in zip(stores[1:], (val_loader, test_loader), strict=True))
        stored = sum(store.outputs.numel() * store.outputs.element_size() for store in stores)
        return EpochPlan(SuffixClassifier(split.suffix, model.head), train, val, test, stored)

    def _refusal(self) -> str | None:
        model = self.model
        if not self.enabled:
            return "turned off (MEDTUNE_FEATURE_CACHE=0)"
        if getattr(self.loaders[0].dataset.transform, "random", True):
            return "the training images are augmented"
        trainable = sorted(model.trainable_groups)
        first = trainable[0] if trainable else model.num_groups
        if trainable == list(range(model.num_groups)):
            return "the whole trunk trains"
        if first == 0 or trainable != list(range(first, model.num_groups)):
            return "the trainable groups are not a suffix of the trunk"
        return None

    @torch.no_grad()
    def _bytes_per_sample(self, prefix: nn.Module, dataset: Dataset) -> int:
        """One sample's prefix output size, to refuse an oversized store before computing any of it."""
        image, _ = dataset[0]
        with self.precision.autocast():
            out = prefix(image.unsqueeze(0).to(self.device))
        return out.numel() * out.element_size()

    def _fetch(self, prefix: nn.Module, batchings: list[tuple[int | None, list[list[int]]]],
               compute: Callable[[], Outputs]) -> Outputs:
        """The outputs from the store, keyed by the prefix, its exact inputs, the batching and the runtime."""
        datasets = [loader.dataset for loader in self.loaders]
        inputs = inputs_digest(default_collate([dataset[i] for i in indices])
                               for dataset in datasets for indices in _batches_of(len(dataset), 256))
        batching = tuple((len(dataset), size or loader.batch_size)
                         for dataset, loader, (size, _) in zip(datasets, self.loaders, batchings, strict=True))
        precision = f"autocast {self.precision.enabled} {self.precision.dtype}"
        key = FeatureKey(prefix_digest(prefix), inputs, batching, runtime_fingerprint(self.device, precision))
        hits = self.store.hits
        outputs = self.store.fetch(key, compute)
        self.loads += self.store.hits - hits
        return outputs

    def _recompute(self, prefix: nn.Module,
                   dataset: Dataset) -> Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]:
        """The prefix's outputs for some samples of ``dataset``, computed as one batch."""
        def recompute(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            images, labels = default_collate([dataset[i] for i in indices])
            with torch.no_grad(), self.precision.autocast():
                return prefix(images.to(self.device)).detach().cpu(), labels

        return recompute

    def _compute(self, prefix: nn.Module, dataset: Dataset,
                 batches: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's prefix output (and label), computed in ``batches``."""
        recompute = self._recompute(prefix, dataset)
        outputs = labels = None
        for indices in batches:
            batch_outputs, batch_labels = recompute(indices)
            if outputs is None:
                outputs = torch.empty((len(dataset), *batch_outputs.shape[1:]), dtype=batch_outputs.dtype)
                labels = torch.empty((len(dataset), *batch_labels.shape[1:]), dtype=batch_labels.dtype)
            index = torch.as_tensor(indices)
            outputs[index] = batch_outputs
            labels[index] = batch_labels
        return outputs, labels


def _chunks(n: int, size: int) -> list[list[int]]:
    """Batches of exactly ``size`` covering 0..n-1; the last one overlaps the one before where n is
    not a multiple of ``size`` (recomputing a few samples, in a batch of the right size)."""
    size = min(size, n)
    starts = list(range(0, n - size + 1, size))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [list(range(s, s + size)) for s in starts]


def _batches(loader: DataLoader) -> list[list[int]]:
    """The evaluation loader's own batches, in order (it does not shuffle)."""
    return _batches_of(len(loader.dataset), loader.batch_size)


def _batches_of(n: int, batch: int) -> list[list[int]]:
    return [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]

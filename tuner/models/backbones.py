"""The backbones medtune ships, each with its layer groups, and the ``timm/<model name>`` family (any timm
model, declared on first use from its own ``group_matcher``: ``tuner.models.timm_backbones``).

``stages`` groupings (5 groups each, stem first) mean the same depth of network in every family:
ResNets: stem (conv1 + bn1), layer1..layer4. DenseNet-121: stem, each dense block with the transition
after it (the last with the final norm). VGG-19: its five conv stages (between max-pools), and fc6+fc7
as a sixth. ConvNeXt-Tiny, EfficientNet-B0, MobileNetV3-Large: stem, then their stages in four groups.

``resnet18_small`` and ``resnet50_small`` are the ResNets MedMNIST v2 trains on its 28 px images (its
"ResNet-18 (28)" baseline): a 3x3 stride-1 stem conv and no max-pool, so a 28 px image keeps 28x28 maps
in layer1 instead of torchvision's 7x7 (and layer4 4x4 instead of 1x1). The rest is torchvision's
ResNet, with the same layer groups. No ImageNet or RadImageNet weights exist for that stem: they train
from scratch or from an in-domain encoder (``weights=ssl:...``). They cost about 16x the compute of the
ImageNet stem per image at the same input size.

``paper`` groupings are the blocks of the fine-tuning-strategies paper (arXiv 2023, "Comparison of
fine-tuning strategies for transfer learning in medical image classification"), which states only the
counts: ResNet-50 in 6, DenseNet-121 in 9, VGG-19 in 6. We take the parameter-bearing children of
torchvision's modules in order: ResNet-50 conv1 | bn1 | layer1 | layer2 | layer3 | layer4 (6);
DenseNet-121 conv0 | norm0 | block1 | transition1 | block2 | transition2 | block3 | transition3 |
block4+norm5 (9: the final norm is too small to be a block of its own); VGG-19 its five conv stages and
fc6+fc7 (6, the same as its stages grouping).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tuner._torchvision import torchvision
from tuner.models.registry import BackboneSpec, LayerGroups, register_backbone, register_backbone_family
from tuner.models.timm_backbones import FAMILY_DOC, TIMM_PREFIX, timm_backbone

models = torchvision.models

# RadImageNet's PyTorch ResNet-50 stores the trunk as nn.Sequential(*children[:-2]) under "backbone":
# index 0 conv1, 1 bn1, (2 relu, 3 maxpool), 4-7 layer1-layer4.
_RESNET_RADIMAGENET_PREFIXES = {
    "backbone.0.": "conv1.", "backbone.1.": "bn1.", "backbone.4.": "layer1.",
    "backbone.5.": "layer2.", "backbone.6.": "layer3.", "backbone.7.": "layer4.",
}
_RESNET_STAGES = LayerGroups(("stem", "layer1", "layer2", "layer3", "layer4"),
                             (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)))
_RESNET_PAPER = LayerGroups(("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
                            (("conv1",), ("bn1",), ("layer1",), ("layer2",), ("layer3",), ("layer4",)))

register_backbone(BackboneSpec(
    name="resnet18", build=models.resnet18, imagenet_weights=models.ResNet18_Weights.IMAGENET1K_V1,
    feature_dim=512, classifier_attr="fc", groupings={"stages": _RESNET_STAGES, "paper": _RESNET_PAPER},
    foreign_prefixes=_RESNET_RADIMAGENET_PREFIXES,
))
register_backbone(BackboneSpec(
    name="resnet50", build=models.resnet50, imagenet_weights=models.ResNet50_Weights.IMAGENET1K_V1,
    feature_dim=2048, classifier_attr="fc", groupings={"stages": _RESNET_STAGES, "paper": _RESNET_PAPER},
    foreign_prefixes=_RESNET_RADIMAGENET_PREFIXES, radimagenet_file="ResNet50.pt",
))


def _small_input_stem(build_resnet: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A torchvision ResNet builder whose stem keeps the input's resolution (3x3 conv, stride 1, no max-pool)."""

    def build(**kwargs) -> nn.Module:
        model = build_resnet(**kwargs)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model

    return build


for _base, _build, _dim in (("resnet18", models.resnet18, 512), ("resnet50", models.resnet50, 2048)):
    register_backbone(BackboneSpec(
        name=f"{_base}_small", build=_small_input_stem(_build), imagenet_weights=None, feature_dim=_dim,
        classifier_attr="fc", groupings={"stages": _RESNET_STAGES, "paper": _RESNET_PAPER}, min_image_size=8,
        imagenet_alternative=_base,
    ))

_DENSE = "features."
register_backbone(BackboneSpec(
    name="densenet121", build=models.densenet121,
    imagenet_weights=models.DenseNet121_Weights.IMAGENET1K_V1, feature_dim=1024,
    classifier_attr="classifier",
    groupings={
        "stages": LayerGroups(
            ("stem", "block1", "block2", "block3", "block4"),
            ((_DENSE + "conv0", _DENSE + "norm0"),
             (_DENSE + "denseblock1", _DENSE + "transition1"),
             (_DENSE + "denseblock2", _DENSE + "transition2"),
             (_DENSE + "denseblock3", _DENSE + "transition3"),
             (_DENSE + "denseblock4", _DENSE + "norm5"))),
        "paper": LayerGroups(
            ("conv0", "norm0", "block1", "transition1", "block2", "transition2", "block3", "transition3",
             "block4"),
            ((_DENSE + "conv0",), (_DENSE + "norm0",), (_DENSE + "denseblock1",), (_DENSE + "transition1",),
             (_DENSE + "denseblock2",), (_DENSE + "transition2",), (_DENSE + "denseblock3",),
             (_DENSE + "transition3",), (_DENSE + "denseblock4", _DENSE + "norm5"))),
    },
    # RadImageNet's DenseNet-121 keeps torchvision's "features" under "backbone.0".
    foreign_prefixes={"backbone.0.": _DENSE},
    radimagenet_file="DenseNet121.pt",
    min_image_size=32,  # its transitions' 2x2 average pools need at least 2x2 maps
))


def _vgg19_groups() -> LayerGroups:
    """Conv stages between max-pools (torchvision's features indices), then fc6 and fc7 with their
    dropouts; the head replaces fc8 (classifier.6)."""
    stages = ((0, 2), (5, 7), (10, 12, 14, 16), (19, 21, 23, 25), (28, 30, 32, 34))
    paths = tuple(tuple(f"features.{i}" for i in stage) for stage in stages)
    fc = ("classifier.0", "classifier.2", "classifier.3", "classifier.5")
    return LayerGroups(("conv1", "conv2", "conv3", "conv4", "conv5", "fc6_fc7"), (*paths, fc))


_VGG_GROUPS = _vgg19_groups()
register_backbone(BackboneSpec(
    name="vgg19", build=models.vgg19, imagenet_weights=models.VGG19_Weights.IMAGENET1K_V1, feature_dim=4096,
    classifier_attr="classifier.6", groupings={"stages": _VGG_GROUPS, "paper": _VGG_GROUPS}, min_image_size=32,
))
register_backbone(BackboneSpec(
    name="convnext_tiny", build=models.convnext_tiny,
    imagenet_weights=models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, feature_dim=768,
    classifier_attr="classifier.2",
    groupings={"stages": LayerGroups(
        ("stem", "stage1", "stage2", "stage3", "stage4"),
        (("features.0",), ("features.1",), ("features.2", "features.3"), ("features.4", "features.5"),
         ("features.6", "features.7", "classifier.0")))},
    min_image_size=32,
))
register_backbone(BackboneSpec(
    name="efficientnet_b0", build=models.efficientnet_b0,
    imagenet_weights=models.EfficientNet_B0_Weights.IMAGENET1K_V1, feature_dim=1280,
    classifier_attr="classifier.1",
    groupings={"stages": LayerGroups(
        ("stem", "stage1_2", "stage3", "stage4_5", "stage6_7"),
        (("features.0",), ("features.1", "features.2"), ("features.3",), ("features.4", "features.5"),
         ("features.6", "features.7", "features.8", "classifier.0")))},
    min_image_size=32,
))
register_backbone(BackboneSpec(
    name="mobilenet_v3_large", build=models.mobilenet_v3_large,
    imagenet_weights=models.MobileNet_V3_Large_Weights.IMAGENET1K_V1, feature_dim=1280,
    classifier_attr="classifier.3",
    groupings={"stages": LayerGroups(
        ("stem", "blocks1_3", "blocks4_6", "blocks7_12", "blocks13_15"),
        (("features.0",), tuple(f"features.{i}" for i in range(1, 4)), tuple(f"features.{i}" for i in range(4, 7)),
         tuple(f"features.{i}" for i in range(7, 13)),
         (*(f"features.{i}" for i in range(13, 17)), "classifier.0", "classifier.2")))},
    min_image_size=32,
))

# Every timm model, declared on first use with its own layer groups (see tuner.models.timm_backbones).
register_backbone_family(TIMM_PREFIX, timm_backbone, FAMILY_DOC)

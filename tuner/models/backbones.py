"""The backbones medtune ships, each with its layer groups.

ResNets: the stem (conv1 + bn1) and the four residual stages, 5 groups. DenseNet-121: the stem, then
each dense block together with the transition that follows it (the last with the final norm), 5
groups, so that "unfreeze the top k groups" means the same depth of network on both families.
"""

from __future__ import annotations

from tuner._torchvision import torchvision
from tuner.models.registry import BackboneSpec, register_backbone

models = torchvision.models

# RadImageNet's PyTorch ResNet-50 stores the trunk as nn.Sequential(*children[:-2]) under "backbone":
# index 0 conv1, 1 bn1, (2 relu, 3 maxpool), 4-7 layer1-layer4.
_RESNET_RADIMAGENET_PREFIXES = {
    "backbone.0.": "conv1.", "backbone.1.": "bn1.", "backbone.4.": "layer1.",
    "backbone.5.": "layer2.", "backbone.6.": "layer3.", "backbone.7.": "layer4.",
}
_RESNET_GROUPS = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
_RESNET_GROUP_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")

register_backbone(BackboneSpec(
    name="resnet18", build=models.resnet18, imagenet_weights=models.ResNet18_Weights.IMAGENET1K_V1,
    feature_dim=512, classifier_attr="fc", groups=_RESNET_GROUPS, group_names=_RESNET_GROUP_NAMES,
    foreign_prefixes=_RESNET_RADIMAGENET_PREFIXES,
))
register_backbone(BackboneSpec(
    name="resnet50", build=models.resnet50, imagenet_weights=models.ResNet50_Weights.IMAGENET1K_V1,
    feature_dim=2048, classifier_attr="fc", groups=_RESNET_GROUPS, group_names=_RESNET_GROUP_NAMES,
    foreign_prefixes=_RESNET_RADIMAGENET_PREFIXES, radimagenet_file="ResNet50.pt",
))
register_backbone(BackboneSpec(
    name="densenet121", build=models.densenet121,
    imagenet_weights=models.DenseNet121_Weights.IMAGENET1K_V1, feature_dim=1024,
    classifier_attr="classifier",
    groups=(("features.conv0", "features.norm0"),
            ("features.denseblock1", "features.transition1"),
            ("features.denseblock2", "features.transition2"),
            ("features.denseblock3", "features.transition3"),
            ("features.denseblock4", "features.norm5")),
    group_names=("stem", "block1", "block2", "block3", "block4"),
    # RadImageNet's DenseNet-121 keeps torchvision's "features" under "backbone.0".
    foreign_prefixes={"backbone.0.": "features."},
    radimagenet_file="DenseNet121.pt",
    min_image_size=32,  # its transitions' 2x2 average pools need at least 2x2 maps
))

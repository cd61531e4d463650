"""Models: the backbone registry, classifier heads, starting weights, and the classifier."""

from tuner.models import backbones as _backbones  # noqa: F401  (registers the shipped backbones)
from tuner.models.classifier import Classifier, build_classifier
from tuner.models.heads import HEAD_KNOBS, build_head, head_names
from tuner.models.registry import BackboneSpec, backbone_names, get_backbone, register_backbone

__all__ = ["HEAD_KNOBS", "BackboneSpec", "Classifier", "backbone_names", "build_classifier", "build_head",
           "get_backbone", "head_names", "register_backbone"]

"""The ConvSkip paper's space (arXiv 2508.17567): which classifier head, how many of the top layer
groups to unfreeze, which pretrained weights, and the optimisation knobs around them.

ResNet-50 with SGD (Nesterov momentum 0.9) and a cosine schedule, images at 256 px with rotation,
shift and shear augmentation, as the paper. Its layer groups are medtune's ResNet groups (stem,
layer1-layer4; see tuner/models/backbones.py), so ``unfreeze`` runs from 0 (a frozen trunk) to 5.
RadImageNet weights need its PyTorch file under $MEDTUNE_WEIGHTS_DIR/radimagenet/.

The study compares heads across unfreeze depths (``ARMS``): each head x depth cell gets the same number
of trials, and the other knobs are tuned within it.
"""

from search_spaces import Space
from tuner.models import get_backbone

ARMS = ("head", "unfreeze")

ANALYSIS = {
    "formula": "test_auc ~ C(head, Treatment('conv')) + C(unfreeze) + log10_lr + C(weights)",
    "x": "unfreeze",
}


def define(s: Space) -> dict:
    backbone = s.choice("backbone", ["resnet50"])
    s.choice("weights", ["imagenet", "radimagenet"])
    head = s.choice("head", ["linear", "conv", "convskip"])
    if head in ("conv", "convskip"):
        s.choice("kernel_size", [3, 5, 7, 9])
    s.int("unfreeze", 0, get_backbone(backbone).num_groups)
    s.float("lr", 1e-5, 1e-2, log=True, grid=[1e-4, 1e-3, 1e-2])
    s.float("dropout", 0.0, 0.5, grid=[0.5])
    s.float("weight_decay", 1e-5, 0.4, log=True, grid=[1e-4])
    return {
        "strategy": "topk",
        "optimizer": "sgd",
        "momentum": 0.9,
        "filters": 16 if head != "linear" else None,
        "epochs": 30,
        "batch_size": 32,
        "image_size": 256,
        "augment": True,
    }

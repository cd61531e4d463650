"""The fine-tuning-strategies study (Davila et al., "Comparison of fine-tuning strategies for transfer
learning in medical image classification"): eight strategies on ResNet-50, DenseNet-121 and VGG-19,
three learning rates, with the paper's protocol (the paper's three seeds are replicates: ``medtune
confirm --seeds 3``).

Protocol (``PROTOCOL``): ImageNet weights, Adam, batch 64, up to 50 epochs with early stopping (patience
5 on the validation metric) alongside ASHA, no augmentation; images resized so the shorter side is 232
(ResNet) or 256 (DenseNet, VGG), then centre-cropped to 224; the paper's layer blocks (ResNet-50 6,
DenseNet-121 9, VGG-19 6) for the gradual strategies.

The paper fixes no value for the strategies' own parameters; the grid uses one value of each
(``unfreeze_every`` 2, ``lp_epochs`` half the epochs, ``lp_ft_lr`` its default lr / 10, L2-SP's
``sp_alpha`` 0.1 and ``sp_beta`` 0.01, Li et al.'s defaults, L1-SP's own ``l1_sp_alpha`` 1e-5), and
Optuna searches them. L1-SP's α has its own range (1e-7..1e-3): its gradient is α on every one of
millions of trunk weights, so at L2-SP's 0.1 it would hold the trunk at its start and behave as a
linear probe (tuner/strategies/regularization.py).

On small images: ``--set image_size=32 --set resize_size=None``; fewer arms:
``--set "backbone=['resnet18','densenet121']" --set "lr=[1e-3]"``.

The study compares strategies on each architecture (``ARMS``): each strategy x backbone cell gets the
same number of sampled trials, and the strategy's own knobs and the lr are tuned within it.
"""

from search_spaces import Space

STRATEGIES = ["ft", "lp", "g_lf", "g_fl", "lp_ft", "l1_sp", "l2_sp", "auto_rgn"]
RESIZE_SHORTER_SIDE = {"resnet18": 232, "resnet50": 232, "densenet121": 256, "vgg19": 256}
PROTOCOL = {
    "weights": "imagenet",
    "optimizer": "adam",
    "batch_size": 64,
    "patience": 5,
    "image_size": 224,
    "augment": False,
    "layer_groups": "paper",
    "head": "linear",
}

ARMS = ("strategy", "backbone")

ANALYSIS = {
    "formula": "test_auc ~ C(strategy, Treatment('ft')) * C(backbone) + log10_lr",
    "x": "strategy",
}


def define(s: Space) -> dict:
    backbone = s.choice("backbone", ["resnet50", "densenet121", "vgg19"])
    epochs = s.constant("epochs", 50)
    strategy = s.choice("strategy", STRATEGIES)
    if strategy in ("g_lf", "g_fl"):
        s.int("unfreeze_every", 1, 5, grid=[2])
    elif strategy == "lp_ft":
        s.int("lp_epochs", 1, max(1, epochs - 1), grid=[max(1, epochs // 2)])
        s.float("lp_ft_lr", 1e-6, 1e-3, log=True, grid=[None])  # the grid: unset, lp_ft's default lr / 10
    elif strategy == "l1_sp":
        s.float("l1_sp_alpha", 1e-7, 1e-3, log=True, grid=[1e-5])
        s.float("sp_beta", 1e-4, 1.0, log=True, grid=[0.01])
    elif strategy == "l2_sp":
        s.float("sp_alpha", 1e-4, 1.0, log=True, grid=[0.1])
        s.float("sp_beta", 1e-4, 1.0, log=True, grid=[0.01])
    s.choice("lr", [1e-3, 1e-4, 1e-5])
    return {**PROTOCOL, "resize_size": RESIZE_SHORTER_SIDE.get(backbone, 256)}

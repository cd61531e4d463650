"""A small, fast space for the quick start and CI: BreastMNIST at its native 28 px, trained from
scratch (no pretrained weights are needed), a few epochs, heads and learning rates searched; each head is
an arm with an equal share of the trials."""

from search_spaces import Space

# The factor the study compares: each head gets the same number of trials, tuned within it.
ARMS = ("head",)

ANALYSIS = {
    "formula": "test_auc ~ C(head) + log10_lr",
    "x": "lr",
}


def define(s: Space) -> dict:
    head = s.choice("head", ["linear", "conv", "convskip"])
    if head != "linear":
        s.choice("kernel_size", [3, 5, 7])
    s.float("lr", 1e-3, 1e-1, log=True, grid=[1e-3, 1e-2, 1e-1])
    return {
        "backbone": "resnet18",
        "weights": "none",
        "strategy": "ft",
        "optimizer": "sgd",
        "epochs": 4,
        "batch_size": 64,
        "image_size": 28,
        "augment": False,
        "dropout": 0.0,
        "filters": 4 if head != "linear" else None,
    }

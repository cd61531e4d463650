"""BreastMNIST at its 28 px source resolution, for the best test AUC a CPU budget allows
(benchmarks/quality.py). The ResNet-18 MedMNIST v2 trains on 28 px images (``resnet18_small``: 3x3
stride-1 stem, no max-pool; torchvision's stem would leave a 28 px image 7x7 maps in layer1 and 1x1 in
layer4) from scratch (no pretrained weights exist for that stem), Adam on a cosine schedule over up to 24
epochs, the rotation/shift/shear augmentation on; searched: the head, the learning rate, weight decay and
dropout. 24 epochs of batch 32 are about as many optimizer steps as MedMNIST's 100 epochs of batch 128.

Adam rather than the SGD of the other spaces: from scratch on 28 px inputs, SGD at 1e-2..3e-2 kept
collapsing to constant predictions (validation AUC 0.5) in pilot runs, Adam at 1e-3 did not."""

from search_spaces import Space

ANALYSIS = {
    "formula": "test_auc ~ C(head) + log10_lr",
    "x": "lr",
}


def define(s: Space) -> dict:
    head = s.choice("head", ["linear", "convskip", "mlp"])
    if head == "convskip":
        s.choice("kernel_size", [3, 5, 7])
    if head == "mlp":
        s.float("hidden_ratio", 0.25, 1.0, grid=[0.5])
    s.float("lr", 2e-4, 3e-3, log=True, grid=[5e-4, 1e-3])
    s.float("weight_decay", 1e-6, 1e-3, log=True, grid=[1e-4])
    s.float("dropout", 0.0, 0.5, grid=[0.0, 0.3])
    return {
        "backbone": "resnet18_small",
        "weights": "none",
        "strategy": "ft",
        "optimizer": "adam",
        "epochs": 24,
        "batch_size": 32,
        "image_size": 28,
        "augment": True,
        "filters": 4 if head == "convskip" else None,
    }

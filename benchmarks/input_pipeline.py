"""Input pipeline (tuner/data/batches.py, tuner/training/inputs.py): one epoch's data cost (the training
split augmented, the validation and test splits, everything up to the model's input; no model) with
the per-image pipeline (``ImageDataset`` + ``build_transform``: resize, affine, normalise, one image at
a time, every epoch) against images prepared once per trial and augmented batched, side by side in one
process, epochs alternating A/B/B/A.

Figures: the median per-repetition ratio per-image / prepared at each size, with and without
augmentation; the one-time preparation cost in per-image epochs; whether the unaugmented batches are
bit-identical between the two.

    python benchmarks/input_pipeline.py            # BreastMNIST (546 / 78 / 156 images), 128 and 224 px, 5 reps
    python benchmarks/input_pipeline.py --short    # CI: a 96-image subset, 128 px, 2 reps
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401
from _common import abba, figure, median, note, scratch_dir  # noqa: E402

GOAL = 5.0  # issue 16: the per-epoch data cost at 128 px with augmentation >= 5x lower


def old_loaders(data, size: int, augment: bool, batch: int, seed: int):
    """Today's per-image loaders, as trial.py built them before the prepared pipeline."""
    import torch

    from tuner.data import ImageDataset, build_transform

    train = torch.utils.data.DataLoader(ImageDataset(data.train, build_transform(size, augment=augment)),
                                        batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    plain = build_transform(size, augment=False)
    return [train, *(torch.utils.data.DataLoader(ImageDataset(split, plain), batch_size=max(batch, 128))
                     for split in (data.val, data.test))]


def new_loaders(data, size: int, augment: bool, batch: int, seed: int):
    """The trial's loaders now (``tuner.training.inputs.build_loaders``), on this machine's device."""
    import torch

    from tuner.config import make_trial_config
    from tuner.spec import IMAGENET_PREPROCESSING
    from tuner.training.inputs import build_loaders

    config = make_trial_config({"image_size": size, "batch_size": batch, "augment": augment, "weights": "none"})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return list(build_loaders(data, config, IMAGENET_PREPROCESSING, torch.Generator().manual_seed(seed), device))


def epoch_seconds(loaders) -> float:
    """One pass over every loader, each batch made in full (on CUDA, until the device is done)."""
    import torch

    start = time.perf_counter()
    for loader in loaders:
        for images, _ in loader:
            images.sum().item() if images.is_cuda else None
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def identical(data, size: int, batch: int) -> bool:
    """Unaugmented, the two pipelines give the same batches, bit for bit."""
    import torch

    old, new = old_loaders(data, size, False, batch, 0), new_loaders(data, size, False, batch, 0)
    return all(torch.equal(a.cpu(), b) and torch.equal(la.cpu(), lb)
               for new_loader, old_loader in zip(new, old, strict=True)
               for (a, la), (b, lb) in zip(new_loader, old_loader, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="CI form: a 96-image subset, 128 px, 2 repetitions")
    parser.add_argument("--sizes", default=None, help="comma-separated image sizes (default 128,224; short 128)")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from tuner.data import load_dataset, save_npz_subset

    data = load_dataset("breastmnist")
    if args.short:
        data = load_dataset(str(save_npz_subset(data, scratch_dir("medtune-input-") / "small.npz",
                                                {"train": (32, 64), "val": (15, 25), "test": (15, 25)})))
    sizes = [int(s) for s in (args.sizes or ("128" if args.short else "128,224")).split(",")]
    repetitions = args.repetitions or (2 if args.short else 5)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    note(f"{len(data.train)}/{len(data.val)}/{len(data.test)} images, batch {args.batch_size}, "
         f"{torch.get_num_threads()} torch threads, prepared pipeline on {device}")
    for size in sizes:
        for augment in (True, False):
            label = f"{size}.{'augment' if augment else 'plain'}"
            start = time.perf_counter()
            new = new_loaders(data, size, augment, args.batch_size, 0)
            prepare = time.perf_counter() - start
            old = old_loaders(data, size, augment, args.batch_size, 0)
            times: dict[str, list[float]] = {"old": [], "new": []}
            for _, arm in abba(["old", "new"], repetitions):
                times[arm].append(epoch_seconds(old if arm == "old" else new))
            ratios = [o / n for o, n in zip(times["old"], times["new"], strict=True)]
            images = len(data.train) + len(data.val) + len(data.test)
            note(f"{label}: per-image {median(times['old']):.3f} s/epoch ({images / median(times['old']):.0f} "
                 f"images/s), prepared {median(times['new']):.3f} s/epoch ({images / median(times['new']):.0f} "
                 f"images/s); preparing took {prepare:.3f} s")
            if augment:
                figure(f"input_pipeline.epoch_speedup.{label}", median(ratios), goal=f">= {GOAL:g}x" if size == 128
                       else "-", met=median(ratios) >= GOAL if size == 128 else None,
                       what="per-epoch data cost, per-image pipeline / prepared + batched augmentation")
            else:
                figure(f"input_pipeline.epoch_speedup.{label}", median(ratios),
                       what="per-epoch data cost without augmentation, per-image / prepared")
            figure(f"input_pipeline.prepare_cost_in_old_epochs.{label}", prepare / median(times["old"]),
                   what="one-time preparation of the three splits, in per-image epochs")
        figure(f"input_pipeline.bit_identical.{size}", "yes" if identical(data, size, args.batch_size) else "NO",
               goal="yes", what="unaugmented batches of the two pipelines equal bit for bit")


if __name__ == "__main__":
    main()

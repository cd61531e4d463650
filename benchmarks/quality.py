"""Quality: what a medtune search finds on BreastMNIST (28 px source images), next to MedMNIST v2's
published table, with the budget stated.

One search per seed (Optuna TPE with that seed, every trial trained with that seed), over the
``breast_quality`` space (MedMNIST's 28 px ResNet-18, ``resnet18_small``, from scratch, Adam,
augmentation on; head, lr, weight decay and dropout searched), ASHA stopping weak trials. The model
reported for a search is the one validation chooses: the trial with the best validation AUC, at its
best-validation epoch; its test AUC (MedMNIST's convention: AUC of the score of label 1) and test ACC
(argmax) are reported. The test split plays no part in any choice.

    python benchmarks/quality.py                        # 3 seeds x 8 trials x up to 24 epochs, 28 px input
    python benchmarks/quality.py --backbone resnet18    # the same with torchvision's ImageNet stem
    python benchmarks/quality.py --short                # CI: 1 seed x 2 trials x 1 epoch on a subset
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, note, tune_results  # noqa: E402

# MedMNIST v2 (Scientific Data 2023), Table 3, BreastMNIST test AUC / ACC.
PUBLISHED = {
    "ResNet-18 (28)": (0.901, 0.863),
    "ResNet-50 (28)": (0.857, 0.812),
    "auto-sklearn": (0.836, 0.803),
    "AutoKeras": (0.871, 0.831),
    "Google AutoML Vision": (0.919, 0.861),
}
GOAL_AUC = 0.919


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (to finish an interrupted run)")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="pin the epoch budget (default: the space's)")
    parser.add_argument("--grace-period", type=int, default=4)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--image-size", type=int, help="pin the network's input size (the source stays 28 px)")
    parser.add_argument("--backbone", help="pin the backbone (default: the space's resnet18_small)")
    parser.add_argument("--storage", help="where the searches go (default: a temporary folder)")
    parser.add_argument("--json", help="write the per-seed results here")
    parser.add_argument("--plot", help="write a PNG of the per-seed test AUC next to the published ones")
    args = parser.parse_args()
    dataset, pins = "breastmnist", {}
    if args.short:
        args.seeds, args.num_samples, args.epochs, args.grace_period = 1, 2, 1, 1
        dataset = _common.small_breastmnist()

    import ray

    from tuner.search import SearchRequest, run_search

    if args.image_size:
        pins["image_size"] = args.image_size
    if args.backbone:
        pins["backbone"] = args.backbone
    tag = (f"-{args.image_size}px" if args.image_size else "") + (f"-{args.backbone}" if args.backbone else "")
    storage, where = _common.search_storage(args.storage, "medtune-quality-")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    note(f"quality: space breast_quality, pins {json.dumps(pins)}, {Path(dataset).name}, {args.seeds} seed(s) x "
         f"{args.num_samples} trials, "
         f"ASHA grace {args.grace_period} reduction {args.reduction_factor}; storage {where}; {_common.machine()}")
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        start = time.perf_counter()
        outcome = run_search(SearchRequest(space="breast_quality", dataset=dataset, search="optuna", seed=seed,
                                           num_samples=args.num_samples, max_epochs=args.epochs,
                                           pins={**pins, "seed": seed}, grace_period=args.grace_period,
                                           reduction_factor=args.reduction_factor, storage=str(storage),
                                           experiment=f"quality{tag}-seed{seed}"))
        wall = time.perf_counter() - start
        rows = tune_results(outcome.experiment_dir)
        best = outcome.best
        chosen = {k: best["config"][k] for k in ("backbone", "head", "lr", "weight_decay", "dropout", "image_size",
                                                  "kernel_size", "hidden_ratio") if best["config"].get(k) is not None}
        results.append({"seed": seed, "trials": outcome.trials, "completed": outcome.completed,
                        "trial_epochs": len(rows), "wall_s": wall, "val_auc": best["best_val_auc"],
                        "test_auc": best["test_auc"], "test_acc": best["test_acc"], "config": chosen})
        note(f"seed {seed}: {outcome.trials} trials ({outcome.completed} ran to the end), {len(rows)} trial-epochs, "
             f"{wall / 60:.1f} min; chosen {json.dumps(chosen)}: val AUC {best['best_val_auc']:.3f}, "
             f"test AUC {best['test_auc']:.3f}, test ACC {best['test_acc']:.3f}")
    ray.shutdown()

    aucs, accs = [r["test_auc"] for r in results], [r["test_acc"] for r in results]
    auc_mean, acc_mean = statistics.mean(aucs), statistics.mean(accs)
    note(f"budget used: {sum(r['trial_epochs'] for r in results)} trial-epochs, "
         f"{sum(r['wall_s'] for r in results) / 60:.1f} min wall on this machine")
    note("| model | test AUC | test ACC |")
    note("|---|---|---|")
    for name, (auc, acc) in PUBLISHED.items():
        note(f"| {name} (published) | {auc:.3f} | {acc:.3f} |")
    note(f"| medtune search, val-AUC choice, mean ± sd of {len(results)} seed(s) | {auc_mean:.3f} ± "
         f"{spread(aucs):.3f} | {acc_mean:.3f} ± {spread(accs):.3f} |")
    figure("quality.test_auc_mean", auc_mean, f"> {GOAL_AUC}", auc_mean > GOAL_AUC,
           f"test AUC of the validation-chosen model, mean of {len(results)} seed(s) (sd {spread(aucs):.3f})")
    figure("quality.test_acc_mean", acc_mean, what=f"test ACC, same models (sd {spread(accs):.3f})")
    figure("quality.auc_vs_automl_vision", auc_mean / PUBLISHED["Google AutoML Vision"][0], "> 1",
           auc_mean > GOAL_AUC, "mean test AUC / Google AutoML Vision's 0.919")
    figure("quality.auc_vs_resnet18_28", auc_mean / PUBLISHED["ResNet-18 (28)"][0],
           what="mean test AUC / MedMNIST's ResNet-18 (28) 0.901")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if args.plot:
        plot(results, Path(args.plot))


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(PUBLISHED) + [f"medtune seed {r['seed']}" for r in results]
    values = [auc for auc, _ in PUBLISHED.values()] + [r["test_auc"] for r in results]
    colours = ["0.6"] * len(PUBLISHED) + ["tab:blue"] * len(results)
    ax.barh(names, values, color=colours)
    ax.axvline(GOAL_AUC, color="tab:red", lw=1, ls="--")
    ax.set_xlim(0.8, 1.0)
    ax.set_xlabel("BreastMNIST test AUC")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()

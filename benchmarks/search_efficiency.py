"""Search efficiency: the ConvSkip paper's method (train every point of the grid to the end) vs. medtune's
default search (Optuna TPE proposing, ASHA stopping), on the same finite space.

The space is ``convskip_unfreeze`` narrowed with pins to what this machine can train many times:
ResNet-18 from a fixed random initialisation (``weights=none``, seed 0: no ImageNet weights here),
BreastMNIST at 28 px, head in {linear, convskip(k=3)} x unfreeze 0..5 x lr in {1e-3, 1e-2}, dropout
0.5 and weight decay 1e-4 (the space's grid values), no augmentation, a few epochs. A list pin makes
Optuna choose among exactly the grid's values, so both searches see the same 24 configurations.

- grid: ``--search grid`` with ASHA's grace period equal to the epoch budget (so nothing stops early):
  every configuration for every epoch.
- TPE + ASHA: ``--search optuna`` (TPE, one search per seed), ASHA with grace period 1 and reduction
  factor 2, ``num_samples`` trials.

Cost is counted in trial-epochs (every result a trial reported, from Tune's ``result.json`` files),
in the order they were reported; the figure is the number of trial-epochs TPE + ASHA spent until
its best validation AUC so far came within 0.005 of the grid's best, divided by the grid's total.

    python benchmarks/search_efficiency.py            # 24-point grid, 8 epochs, 4 TPE seeds x 16 trials
    python benchmarks/search_efficiency.py --short    # CI: 4-point grid, 2 epochs, 1 seed x 4 trials, subset
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, median, note, tune_results  # noqa: E402

TOLERANCE = 0.005


def pins(short: bool) -> dict:
    return {"backbone": "resnet18", "weights": "none", "seed": 0, "image_size": 28, "batch_size": 32,
            "augment": False, "dropout": 0.5, "weight_decay": 1e-4, "head": ["linear", "convskip"],
            "kernel_size": [3], "unfreeze": [0, 5] if short else [0, 1, 2, 3, 4, 5],
            "lr": [1e-2] if short else [1e-3, 1e-2]}


def spent_until(rows: list[dict], target: float) -> int | None:
    """Trial-epochs reported up to and including the first whose val_auc reaches ``target``."""
    for index, row in enumerate(rows, start=1):
        if row["val_auc"] >= target:
            return index
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4, help="TPE + ASHA searches, seeds 0..N-1")
    parser.add_argument("--num-samples", type=int, default=24,
                        help="trials per TPE + ASHA search (a multiple of its 12 head x unfreeze arms)")
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--storage", help="where the searches go (default: a temporary folder)")
    parser.add_argument("--json", help="write the per-search figures here")
    parser.add_argument("--plot", help="write a PNG of the best validation AUC so far against trial-epochs")
    args = parser.parse_args()
    dataset = "breastmnist"
    if args.short:
        args.epochs, args.seeds, args.num_samples = 2, 1, 4
        dataset = _common.small_breastmnist()

    import ray

    from tuner.search import SearchRequest, run_search

    storage, where = _common.search_storage(args.storage, "medtune-search-eff-")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    space_pins = pins(args.short)
    note(f"search_efficiency: convskip_unfreeze with pins {json.dumps(space_pins)}, {args.epochs} epochs, "
         f"{Path(dataset).name}; storage {where}; {_common.machine()}")

    start = time.perf_counter()
    grid = run_search(SearchRequest(space="convskip_unfreeze", dataset=dataset, search="grid", pins=space_pins,
                                    max_epochs=args.epochs, grace_period=args.epochs, storage=str(storage),
                                    experiment="grid"))
    grid_wall = time.perf_counter() - start
    grid_rows = tune_results(grid.experiment_dir)
    grid_best = max(r["val_auc"] for r in grid_rows)
    target = grid_best - TOLERANCE
    grid_total = len(grid_rows)
    assert grid.errored == 0 and grid_total == grid.trials * args.epochs, (grid, grid_total)
    grid_own = spent_until(grid_rows, target)
    best_row = max(grid_rows, key=lambda r: r["val_auc"])
    note(f"grid: {grid.trials} trials, {grid_total} trial-epochs, best val AUC {grid_best:.4f} "
         f"({best_row['trial_dir']}, epoch {best_row['epoch']}); in its own order it came within "
         f"{TOLERANCE} after {grid_own} trial-epochs")

    per_seed, curves = [], {"grid (paper's method)": grid_rows}
    for seed in range(args.seeds):
        start = time.perf_counter()
        search = run_search(SearchRequest(space="convskip_unfreeze", dataset=dataset, search="optuna", seed=seed,
                                          num_samples=args.num_samples, pins=space_pins, max_epochs=args.epochs,
                                          grace_period=1, reduction_factor=args.reduction_factor,
                                          storage=str(storage), experiment=f"tpe-asha-{seed}"))
        wall = time.perf_counter() - start
        rows = tune_results(search.experiment_dir)
        curves[f"TPE+ASHA seed {seed}"] = rows
        spent = spent_until(rows, target)
        best = max(r["val_auc"] for r in rows)
        per_seed.append({"seed": seed, "trials": search.trials, "trial_epochs": len(rows), "spent": spent,
                         "best_val_auc": best, "fraction": None if spent is None else spent / grid_total,
                         "wall_vs_grid": wall / grid_wall})
        note(f"TPE+ASHA seed {seed}: {search.trials} trials, {len(rows)} trial-epochs in all, best val AUC "
             f"{best:.4f}; within {TOLERANCE} of the grid's best after "
             f"{'never' if spent is None else spent} trial-epochs; wall {wall / grid_wall:.2f} x the grid's")

    reached = [s["fraction"] for s in per_seed if s["fraction"] is not None]
    # a seed that never got there counts as having spent everything it ran (a lower bound on its cost)
    fractions = [s["fraction"] if s["fraction"] is not None else s["trial_epochs"] / grid_total for s in per_seed]
    worst = max(fractions)
    med = median(fractions)
    figure("search_efficiency.trial_epochs_fraction_median", med, "<= 0.20",
           med <= 0.20 and len(reached) * 2 > len(per_seed),
           f"TPE+ASHA trial-epochs until within {TOLERANCE} of the grid's best val AUC / the grid's "
           f"{grid_total}, median of {len(per_seed)} seed(s); {len(reached)} of {len(per_seed)} got there")
    figure("search_efficiency.trial_epochs_fraction_worst", worst, "<= 0.20", worst <= 0.20 and len(reached) ==
           len(per_seed), "the same, worst seed (a seed that never got there: all it spent)")
    figure("search_efficiency.total_trial_epochs_fraction", median(s["trial_epochs"] / grid_total for s in per_seed),
           what=f"TPE+ASHA's whole search ({args.num_samples} trials) / the grid, in trial-epochs, median")
    figure("search_efficiency.grid_own_order_fraction", (grid_own or grid_total) / grid_total,
           what="the grid itself, in its enumeration order, until within tolerance of its final best / all of it")
    figure("search_efficiency.wall_fraction", median(s["wall_vs_grid"] for s in per_seed),
           what="TPE+ASHA search wall time / grid search wall time, median (same Ray, same machine)")
    if args.json:
        Path(args.json).write_text(json.dumps({"grid_best": grid_best, "grid_trial_epochs": grid_total,
                                               "grid_own": grid_own, "per_seed": per_seed}, indent=1))
    if args.plot:
        plot(curves, target, Path(args.plot))
    ray.shutdown()


def plot(curves: dict[str, list[dict]], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, rows in curves.items():
        best = np.maximum.accumulate([r["val_auc"] for r in rows])
        ax.step(np.arange(1, len(rows) + 1), best, where="post", label=name,
                lw=2 if name.startswith("grid") else 1, color="k" if name.startswith("grid") else None)
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"grid best - {TOLERANCE}")
    ax.axvline(0.2 * len(curves["grid (paper's method)"]), color="0.5", ls=":", lw=1, label="20% of the grid")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best validation AUC so far")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()

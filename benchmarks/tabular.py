"""A tabular search-efficiency benchmark (HPOBench / YAHPO style): train a grid of a real study once,
record every epoch's validation and test metrics in a CSV, then replay searchers against that table,
so that 20+ search seeds cost seconds each instead of hours of training.

The grid is the ``breast_quality`` study (BreastMNIST at 28 px, from scratch, Adam, cosine schedule,
augmentation on) over head x learning rate x weight decay x dropout, 120 configurations, with the epoch
budget (8 by default) and the backbone pinned over the space's own (``resnet18``, torchvision's stem:
2.2 s an epoch here against 7.6 s for the study's ``resnet18_small``), every configuration trained to the
end with ``run_trial`` (seed 0: a search does not search seeds). The committed table,
``benchmarks/tables/breast_quality_28px.csv``, is that grid (2,602 s of training). Each configuration is
one identity in the table; a search proposing it gets its recorded epochs, one report per epoch.

Searchers replayed, each for ``--seeds`` seeds and ``--budget`` trials per seed:

- ``medtune TPE+ASHA``: medtune's own searcher and scheduler through real Ray Tune (``StudySearch``
  with Optuna's TPE, PRUNED for trials ASHA stops; ``tuner.tune_build.asha`` counting ``phase_epoch``,
  medtune's default grace period 1 and reduction factor 2, or ``--grace-period`` /
  ``--reduction-factor``), a trainable that reads the table and reports as a trial does;
- ``random+ASHA``: the same with Optuna's random sampler (``medtune tune --search random``);
- ``Optuna TPE+SH`` and ``Optuna TPE+Hyperband``: plain Optuna, ``TPESampler`` with
  ``SuccessiveHalvingPruner`` or ``HyperbandPruner`` at their defaults, one trial at a time, the loop
  a user would write (``trial.report`` each epoch, ``should_prune``).

Cost is counted in trial-epochs, in the order they were reported. Figures: the median and the spread
(quartiles) over seeds of the trial-epochs spent until the best validation AUC so far came within
0.005 of the grid's best, as a fraction of the grid's trial-epochs, every search judged within the same
declared trial-epoch budget (``--judge-within``, 200 by default: a little over 20 % of the committed
grid's 960), a seed that did not get there within it charged one more than that budget; the regret (grid
best minus best so far) against the budget spent, in ``--plot``. The budget is declared, not the fewest
any search spent, so that runs with other settings (a grace period, more seeds) are judged alike; a
search that spent less than it is refused (give it more ``--budget`` trials). ``--json`` keeps every
search's trace, to judge it again without replaying.

    python benchmarks/tabular.py grid --out benchmarks/tables/breast_quality_28px.csv     # train the grid
    python benchmarks/tabular.py replay --seeds 40 --budget 100 --plot benchmarks/figures/tabular_regret.png
    python benchmarks/tabular.py --short     # CI: an 8-configuration, 2-epoch resnet18 grid on a subset, 2 seeds
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, median, note  # noqa: E402

from tuner.options import GRACE_PERIOD, REDUCTION_FACTOR  # noqa: E402

TOLERANCE = 0.005
HEADS = [("linear", {}), ("convskip", {"kernel_size": 3}), ("convskip", {"kernel_size": 5}),
         ("convskip", {"kernel_size": 7}), ("mlp", {"hidden_ratio": 0.5})]
LRS = [2e-4, 5e-4, 1e-3, 3e-3]
WEIGHT_DECAYS = [1e-6, 3e-5, 1e-3]
DROPOUTS = [0.0, 0.3]
KNOBS = ("head_variant", "lr", "weight_decay", "dropout")


def grid_points(short: bool, reduced: bool = False) -> list[dict]:
    """The grid's configurations as the knobs a searcher chooses (``head_variant`` names a head with
    its own values) and the study's pins they become: 120 (5 heads x 4 lr x 3 decays x 2 dropouts), 24
    ``reduced``, 8 ``short``."""
    heads, lrs, decays, dropouts = HEADS, LRS, WEIGHT_DECAYS, DROPOUTS
    if short:
        heads, lrs, decays = HEADS[:2], LRS[1:3], WEIGHT_DECAYS[:1]
    elif reduced:
        heads, lrs, decays = [HEADS[0], HEADS[1], HEADS[4]], LRS[1::2], WEIGHT_DECAYS[::2]
    points = []
    for (head, extra), lr, decay, dropout in itertools.product(heads, lrs, decays, dropouts):
        variant = head + "".join(f"_{v}" for v in extra.values())
        points.append({"head_variant": variant, "lr": lr, "weight_decay": decay, "dropout": dropout,
                       "pins": {"head": head, **extra, "lr": lr, "weight_decay": decay, "dropout": dropout}})
    return points


def point_key(point: dict) -> str:
    return json.dumps([point[k] for k in KNOBS])


def train_grid(args: argparse.Namespace) -> None:
    """Train every configuration of the grid to the end, appending its epochs to the CSV (a rerun skips
    the configurations already there)."""
    import torch

    from search_spaces import enumerate_space, get_space
    from tuner.config import make_trial_config
    from tuner.data import load_dataset
    from tuner.training.session import LocalSession
    from tuner.training.trial import run_trial

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = {row["key"] for row in _read(out)} if out.exists() else set()
    data = load_dataset(args.dataset)
    define = get_space("breast_quality").define
    points = grid_points(args.short, args.reduced)
    note(f"grid: {len(points)} configurations x {args.epochs} epochs of breast_quality ({args.backbone}) on "
         f"{Path(args.dataset).name}, {len(done)} already in {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    for index, point in enumerate(points):
        if point_key(point) in done:
            continue
        grid_pins = {**point["pins"], "epochs": args.epochs, "seed": 0, "backbone": args.backbone}
        (point_config,) = enumerate_space(define, grid_pins)
        config = make_trial_config(point_config)
        session = LocalSession(_common.scratch_dir("medtune-tabular-"))
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run_trial(config, data, session)
        wall = time.perf_counter() - start
        # the grid's own budget and backbone, not the space's constants (24 epochs of resnet18_small)
        assert len(session.history) == args.epochs and config["backbone"] == args.backbone, (config, session.history)
        write_header = not out.exists()
        with out.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if write_header:
                writer.writerow(["key", *KNOBS, "epoch", "phase_epoch", "val_auc", "test_auc", "val_loss", "wall_s"])
            for row in session.history:
                writer.writerow([point_key(point), *(point[k] for k in KNOBS), row["epoch"], row["phase_epoch"],
                                 f"{row['val_auc']:.6f}", f"{row['test_auc']:.6f}", f"{row['val_loss']:.6f}",
                                 f"{wall / len(session.history):.2f}"])
        note(f"{index + 1}/{len(points)} {point_key(point)}: best val AUC "
             f"{max(r['val_auc'] for r in session.history):.4f}, {wall:.0f} s")


def _read(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def load_table(path: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, dict]]:
    """Per configuration: its epochs' (val AUC, test AUC), in order; and its knob values."""
    curves: dict[str, list[tuple[int, float, float]]] = {}
    knobs: dict[str, dict] = {}
    for row in _read(path):
        curves.setdefault(row["key"], []).append((int(row["epoch"]), float(row["val_auc"]), float(row["test_auc"])))
        knobs[row["key"]] = {"head_variant": row["head_variant"], "lr": float(row["lr"]),
                             "weight_decay": float(row["weight_decay"]), "dropout": float(row["dropout"])}
    return {k: [(v, t) for _, v, t in sorted(c)] for k, c in curves.items()}, knobs


class _Choices:
    """The table's knobs as Optuna define-by-run categoricals: every proposal is a point of the table."""

    def __init__(self, knobs: dict[str, dict], epochs: int) -> None:
        self.values = {k: sorted({point[k] for point in knobs.values()}, key=str) for k in KNOBS}
        self.epochs = epochs

    def __call__(self, trial) -> dict:
        for knob in KNOBS:
            trial.suggest_categorical(knob, self.values[knob])
        return {"epochs": self.epochs}


def _table_trial(config: dict, curves: dict) -> None:
    """A trial that reads its epochs from the table and reports them as run_trial does."""
    from ray import tune

    curve = curves[json.dumps([config[k] for k in KNOBS])]
    best = float("-inf")
    for epoch, (val, test) in enumerate(curve, start=1):
        best = max(best, val)
        tune.report({"epoch": epoch, "phase_epoch": epoch, "settled_epoch": 1, "val_auc": val, "test_auc": test,
                     "best_score": best, "stopped_by_patience": 0})


def replay_tune(curves: dict, knobs: dict, *, sampler: str, seed: int, budget: int, epochs: int,
                storage: Path, grace_period: int = 1, reduction_factor: int = 2) -> list[float]:
    """medtune's searcher and ASHA through real Ray Tune against the table; the val AUC of every
    trial-epoch, in the order reported."""
    import optuna
    from ray import tune

    from tuner.optuna_study import ArmSearcher, StudySearch
    from tuner.tune_build import asha

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = (optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    study = StudySearch(space=_Choices(knobs, epochs), metric="val_auc", mode="max", sampler=chosen)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_table_trial, curves=curves), {"cpu": 1}),
        tune_config=tune.TuneConfig(metric="val_auc", mode="max", num_samples=budget, reuse_actors=True,
                                    search_alg=ArmSearcher([study], budget, "val_auc", "max"),
                                    scheduler=asha(epochs, grace_period, reduction_factor,
                                                   time_attr="phase_epoch")),
        run_config=tune.RunConfig(name=f"{sampler}-{seed}", storage_path=str(storage), verbose=0))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tuner.fit()
    rows = _common.tune_results(storage / f"{sampler}-{seed}")
    return [row["val_auc"] for row in rows]


def replay_optuna(curves: dict, knobs: dict, *, pruner: str, seed: int, budget: int, epochs: int) -> list[float]:
    """Plain Optuna: TPE with its own pruner, one trial at a time; the val AUC of every trial-epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = (optuna.pruners.SuccessiveHalvingPruner() if pruner == "sh"
              else optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs))
    # named, so that HyperbandPruner's brackets (a hash of the study's name and the trial's number) are the
    # same in every replay of a seed: with Optuna's random default name its result moved between runs
    study = optuna.create_study(study_name=f"tabular-{pruner}-seed{seed}", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=chosen)
    choices = _Choices(knobs, epochs)
    spent: list[float] = []

    def objective(trial) -> float:
        choices(trial)
        curve = curves[json.dumps([trial.params[k] for k in KNOBS])]
        best = float("-inf")
        for epoch, (val, _) in enumerate(curve, start=1):
            spent.append(val)
            best = max(best, val)
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    study.optimize(objective, n_trials=budget)
    return spent


def spent_until(values: list[float], target: float) -> int | None:
    """Trial-epochs up to and including the first that reaches ``target``."""
    return next((i for i, v in enumerate(values, start=1) if v >= target), None)


def cost(values: list[float], target: float, cap: int) -> int:
    """Trial-epochs to ``target`` within ``cap``, the trial-epochs every search is judged within; ``cap + 1``
    (more than the budget, the same for every searcher) for a search that did not get there. Charging such
    a search only what it spent would rank it by how little it spent, and a search allowed more
    trial-epochs could reach the target late."""
    spent = spent_until(values[:cap], target)
    return cap + 1 if spent is None else spent


def replay(args: argparse.Namespace) -> None:
    """Every searcher, every seed, against the table; prints the figures."""
    import ray

    curves, knobs = load_table(Path(args.table))
    epochs = max(len(c) for c in curves.values())
    grid_total = sum(len(c) for c in curves.values())
    grid_best = max(v for c in curves.values() for v, _ in c)
    target = grid_best - TOLERANCE
    note(f"replay: {len(curves)} configurations x {epochs} epochs = {grid_total} trial-epochs in {args.table}; "
         f"grid best val AUC {grid_best:.4f}; {args.seeds} seeds x {args.budget} trials per searcher; "
         f"{_common.machine()}")
    storage = _common.scratch_dir("medtune-tabular-replay-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    asha_settings = {"grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    searchers = {
        "medtune TPE+ASHA": lambda s: replay_tune(curves, knobs, sampler="tpe", seed=s, budget=args.budget,
                                                  epochs=epochs, storage=storage, **asha_settings),
        "random+ASHA": lambda s: replay_tune(curves, knobs, sampler="random", seed=s, budget=args.budget,
                                             epochs=epochs, storage=storage, **asha_settings),
        "Optuna TPE+SH": lambda s: replay_optuna(curves, knobs, pruner="sh", seed=s, budget=args.budget,
                                                 epochs=epochs),
        "Optuna TPE+Hyperband": lambda s: replay_optuna(curves, knobs, pruner="hyperband", seed=s,
                                                        budget=args.budget, epochs=epochs),
    }
    traces: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for name, run in searchers.items():
        start = time.perf_counter()
        traces[name] = [run(seed) for seed in range(args.seeds)]
        seconds[name] = time.perf_counter() - start
    cap = args.judge_within
    fewest = min(len(t) for runs in traces.values() for t in runs)
    if fewest < cap:  # a search that stopped early would be charged a miss it had no budget to avoid
        raise SystemExit(f"tabular: a search spent only {fewest} trial-epochs in its {args.budget} trials, under "
                         f"--judge-within {cap}: give every search more trials (--budget) or judge within less")
    note(f"every search judged within {cap} trial-epochs (declared; the fewest any search spent: {fewest})")
    if args.json:
        Path(args.json).write_text(json.dumps({"judge_within": cap, "grid_total": grid_total, "target": target,
                                               "grace_period": args.grace_period, "traces": traces}))
    for name in searchers:
        costs = [cost(t, target, cap) for t in traces[name]]
        reached = sum(c <= cap for c in costs)
        fractions = sorted(c / grid_total for c in costs)
        q1, q3 = fractions[len(fractions) // 4], fractions[(3 * len(fractions)) // 4]
        med = median(fractions)
        primary = name == "medtune TPE+ASHA"
        slug = name.replace(" ", "_").replace("+", "_").lower()
        note(f"{name}: {seconds[name]:.0f} s for {args.seeds} seeds; {reached} reached the target")
        within = sum(c <= min(cap, 0.2 * grid_total) for c in costs) / len(costs)  # a miss costs cap + 1
        figure(f"tabular.seeds_within_20pct.{slug}", within, "> 0.5" if primary else "-",
               within > 0.5 if primary else None, fmt="{:.2f}",
               what=f"share of seeds within {TOLERANCE} of the grid's best val AUC after at most 20% of the grid's "
                    f"trial-epochs ({0.2 * grid_total:.0f}; judged within {cap})")
        figure(f"tabular.trial_epochs_fraction_median.{slug}", med, "<= 0.20" if primary else "-",
               (med <= 0.20 and reached * 2 > args.seeds) if primary else None,
               what=f"trial-epochs until within {TOLERANCE} of the grid's best val AUC / the grid's {grid_total}; "
                    f"quartiles {q1:.3f}-{q3:.3f}; {reached}/{args.seeds} seeds got there")
    medtune = median(cost(t, target, cap) for t in traces["medtune TPE+ASHA"])
    for peer in ("Optuna TPE+SH", "Optuna TPE+Hyperband"):
        theirs = median(cost(t, target, cap) for t in traces[peer])  # neither got there: 1, not ahead
        figure(f"tabular.medtune_vs_{peer.split()[1].replace('+', '_').lower()}", theirs / medtune, "> 1",
               theirs / medtune > 1, fmt="{:.2f}",
               what=f"{peer}'s median trial-epochs to the target / medtune TPE+ASHA's (> 1: medtune ahead)")
    if args.plot:
        plot(traces, grid_best, grid_total, Path(args.plot))
    ray.shutdown()


def plot(traces: dict[str, list[list[float]]], grid_best: float, grid_total: int, path: Path) -> None:
    """Median regret (grid best minus best so far) against trial-epochs spent, quartile bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, runs in traces.items():
        length = max(len(r) for r in runs)
        regret = np.array([grid_best - np.maximum.accumulate(np.pad(r, (0, length - len(r)), mode="edge"))
                           for r in runs]).clip(min=1e-4)  # 0 (the grid's best found) drawn at 1e-4
        x = np.arange(1, length + 1)
        ax.step(x, np.median(regret, axis=0), where="post", label=name)
        ax.fill_between(x, np.quantile(regret, 0.25, axis=0), np.quantile(regret, 0.75, axis=0), step="post",
                        alpha=0.2)
    ax.axhline(TOLERANCE, color="tab:red", ls="--", lw=1, label=f"regret {TOLERANCE}")
    ax.axvline(0.2 * grid_total, color="0.5", ls=":", lw=1, label="20% of the grid")
    ax.set_yscale("log")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("validation regret (median, IQR)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["grid", "replay"], help="train the table, or replay against it")
    parser.add_argument("--short", action="store_true", help="CI: a tiny grid on a subset, then a 2-seed replay")
    parser.add_argument("--out", default="benchmarks/tables/breast_quality_28px.csv", help="the grid's CSV")
    parser.add_argument("--table", default="benchmarks/tables/breast_quality_28px.csv", help="the table to replay")
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--epochs", type=int, default=8, help="the grid's epoch budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training the grid")
    parser.add_argument("--backbone", default="resnet18",
                        help="the grid's backbone (the committed table's; the study's own is resnet18_small)")
    parser.add_argument("--reduced", action="store_true",
                        help="a 24-configuration grid (heads linear/convskip_3/mlp x 2 lr x 2 dropout x 2 decays)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100,
                        help="trials per search seed (100: every search spends more than --judge-within)")
    parser.add_argument("--judge-within", type=int, default=200,
                        help="the trial-epochs every search is judged within (200: just over 20%% of the grid)")
    parser.add_argument("--plot", help="write the regret-against-budget PNG here")
    parser.add_argument("--json", help="write every search's per-trial-epoch validation trace here")
    parser.add_argument("--grace-period", type=int, default=GRACE_PERIOD.default,
                        help="ASHA's, for medtune's searchers")
    parser.add_argument("--reduction-factor", type=int, default=REDUCTION_FACTOR.default,
                        help="ASHA's, for medtune's searchers")
    args = parser.parse_args()
    if args.short:
        folder = _common.scratch_dir("medtune-tabular-short-")
        args.dataset, args.epochs, args.out = _common.small_breastmnist(), 2, str(folder / "grid.csv")
        args.backbone = "resnet18"
        train_grid(args)
        args.table, args.seeds, args.budget, args.judge_within = args.out, 2, 6, 6  # 6 trials: >= 6 epochs
        replay(args)
    elif args.mode == "grid":
        train_grid(args)
    else:
        replay(args)


if __name__ == "__main__":
    main()

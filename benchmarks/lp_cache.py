"""Frozen-prefix feature cache (tuner/training/epoch_plan.py): an epoch trained on the stored
outputs of the frozen trunk vs. the same epoch recomputing them, side by side in one process.

For each case (backbone, strategy) two identical trials are set up, one with the cache and one
without; their epochs (train + validation pass) alternate A/B/B/A, and the figure is the median of
the per-pair ratios recompute / cached. Also printed: the one-time cost of filling the cache, in
recomputing epochs, and whether the two arms' metrics and weights came out bit-identical.

Then whole trials through ``run_trial`` (checkpoints included), cache on vs. off, A/B/B/A.

Then across trials (``tuner.training.feature_store``): a search of 8 lp trials on one backbone and one
set of weights (a fixed ResNet-18 trunk saved as a file, standing in for pretrained weights), through
real Ray Tune and MLflow, in three arms: the stored outputs shared between its trials (the default);
computed once by each trial (``MEDTUNE_FEATURE_CACHE_SHARED=0``, the per-trial cache); and recomputed by
every epoch of every trial (``MEDTUNE_FEATURE_CACHE=0``, the peer the issue's goal names: a search
without the cache). Each arm runs in its own process with Ray already started, and times
``run_search`` end to end; the arms alternate A/B/C/C/B/A. ASHA's grace period is the whole budget, so
every trial runs every epoch in every arm.

    python benchmarks/lp_cache.py            # BreastMNIST (546 training images), 4 epoch pairs per case
    python benchmarks/lp_cache.py --short    # CI: 96-image subset, 2 epoch pairs, lp only, a 4-trial search
    python benchmarks/lp_cache.py --only-search --search-size 64   # just the cross-trial search arms
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import abba, figure, median, note  # noqa: E402

CASES = [  # (backbone, image size, strategy extras)
    ("resnet18", 28, {"strategy": "lp"}),
    ("densenet121", 32, {"strategy": "lp"}),
    ("resnet18", 28, {"strategy": "topk", "unfreeze": 1}),
    ("densenet121", 32, {"strategy": "topk", "unfreeze": 1}),
]


SEARCH_ARMS = {  # the cross-trial searches' arms: the environment each one's process runs in
    "shared": {"MEDTUNE_FEATURE_CACHE": "1", "MEDTUNE_FEATURE_CACHE_SHARED": "1"},
    "per_trial": {"MEDTUNE_FEATURE_CACHE": "1", "MEDTUNE_FEATURE_CACHE_SHARED": "0"},
    "recompute": {"MEDTUNE_FEATURE_CACHE": "0"},
}


class _Arm:
    """One trial's model, loaders, optimizer and (maybe) cache, stepped one epoch at a time."""

    def __init__(self, config: dict, data, cached: bool) -> None:
        import torch

        from tuner.config import make_trial_config
        from tuner.models import HEADS, build_classifier
        from tuner.spec import IMAGENET_PREPROCESSING
        from tuner.strategies import build_strategy
        from tuner.training.epoch_plan import EpochPlanner
        from tuner.training.loop import Precision
        from tuner.training.losses import build_loss
        from tuner.training.optimizers import build_optimizer
        from tuner.training.trial import build_loaders

        self.config = config = make_trial_config(config)
        self.data = data
        self.device = torch.device("cpu")
        torch.manual_seed(config["seed"])
        self.model = build_classifier(backbone=config["backbone"], weights=config["weights"], head=config["head"],
                                      num_outputs=data.num_classes,
                                      head_params=HEADS.get(config["head"]).own_values(config))
        self.model.set_trainable_groups(build_strategy(config, self.model.num_groups).trainable_groups(
            self.model.num_groups, 1))
        self.loaders = build_loaders(data, config, IMAGENET_PREPROCESSING,
                                     torch.Generator().manual_seed(config["seed"]), self.device)
        self.optimizer = build_optimizer(self.model, config, per_tensor=False)
        self.loss_fn = build_loss(data.task, {"loss": "ce"})
        self.precision = Precision(self.device, False)
        self.cache = EpochPlanner(self.model, self.loaders, precision=self.precision, device=self.device,
                                  enabled=cached)
        start = time.perf_counter()
        self.plan = self.cache.plan()
        self.net, self.train_loader, self.val_loader = self.plan.model, self.plan.train, self.plan.val
        self.build_s = time.perf_counter() - start
        self.history: list[tuple[float, float, float]] = []

    def epoch(self) -> float:
        from tuner.training.loop import evaluate, train_one_epoch

        start = time.perf_counter()
        loss, acc = train_one_epoch(self.net, self.train_loader, self.optimizer, self.loss_fn, self.device,
                                    self.precision, self.data.task)
        val = evaluate(self.net, self.val_loader, self.loss_fn, self.device, self.precision, self.data.task)
        self.history.append((loss, acc, val.loss))
        return time.perf_counter() - start


def epoch_ratios(data, backbone: str, size: int, extra: dict, pairs: int) -> dict:
    import torch

    config = {"backbone": backbone, "weights": "none", "head": "linear", "image_size": size, "batch_size": 32,
              "lr": 1e-3, "epochs": 10, "augment": False, "seed": 0, **extra}
    arms = {"cached": _Arm(config, data, cached=True), "recompute": _Arm(config, data, cached=False)}
    assert arms["cached"].cache.builds == 1, arms["cached"].cache.refused
    times: dict[str, list[float]] = {"cached": [], "recompute": []}
    for _, name in abba(["recompute", "cached"], pairs):
        times[name].append(arms[name].epoch())
    identical = arms["cached"].history == arms["recompute"].history and all(
        torch.equal(a, b) for a, b in zip(arms["cached"].model.state_dict().values(),
                                          arms["recompute"].model.state_dict().values(), strict=True))
    ratios = [r / c for r, c in zip(times["recompute"], times["cached"], strict=True)]
    return {"speedup": median(ratios), "build_in_epochs": arms["cached"].build_s / median(times["recompute"]),
            "identical": identical, "nbytes": arms["cached"].plan.stored_bytes,
            "ratios": ratios}


def whole_trials(data, backbone: str, size: int, epochs: int, repetitions: int) -> float:
    """run_trial (checkpoints and all) with the cache off / on."""
    import os

    from tuner.training.session import LocalSession
    from tuner.training.trial import run_trial

    config = {"backbone": backbone, "weights": "none", "head": "linear", "image_size": size, "batch_size": 32,
              "lr": 0.01, "epochs": epochs, "augment": False, "seed": 0, "strategy": "lp"}
    walls: dict[str, list[float]] = {"on": [], "off": []}
    for _, arm in abba(["off", "on"], repetitions):
        os.environ["MEDTUNE_FEATURE_CACHE"] = "1" if arm == "on" else "0"
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run_trial(config, data, LocalSession(_common.scratch_dir("medtune-lpcache-")))
        walls[arm].append(time.perf_counter() - start)
    os.environ.pop("MEDTUNE_FEATURE_CACHE")
    return median(off / on for off, on in zip(walls["off"], walls["on"], strict=True))


def _weights_file(folder: Path) -> str:
    """A fixed random ResNet-18 trunk saved as a state-dict file: every trial starts from the same weights,
    as from a pretrained file, without a download."""
    import torch

    from tuner.models import get_backbone

    torch.manual_seed(21)
    trunk = get_backbone("resnet18").build(weights=None)
    trunk.fc = torch.nn.Identity()
    path = folder / "resnet18_fixed.pt"
    torch.save(trunk.state_dict(), path)
    return str(path)


def search_arm(args: argparse.Namespace) -> None:
    """One arm of the cross-trial comparison, in this process: start Ray, then time one search."""
    from tuner.cluster import init_ray
    from tuner.search import SearchRequest, run_search

    init_ray(args.cpus_per_trial, 0.0)
    storage = Path(args.storage)
    pins = {"strategy": "lp", "head": "linear", "weights": args.weights, "image_size": args.search_size,
            "batch_size": 32}
    request = SearchRequest(space="quick", dataset=args.dataset, num_samples=args.trials,
                            max_epochs=args.search_epochs, search="optuna", cpus_per_trial=args.cpus_per_trial,
                            pins=pins, storage=str(storage), experiment=args.search_arm, seed=1,
                            grace_period=args.search_epochs)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(request)
    wall = time.perf_counter() - start
    rows = _common.tune_results(outcome.experiment_dir)
    entries = len(list((outcome.experiment_dir / "feature_cache").glob("*.pt")))
    print("RESULT " + json.dumps({"wall_s": wall, "trials": outcome.trials, "errored": outcome.errored,
                                  "trial_epochs": len(rows), "entries": entries,
                                  "val_auc": sorted(round(r["val_auc"], 12) for r in rows)}), flush=True)


def cross_trial(dataset: str, *, size: int, epochs: int, trials: int, repetitions: int, cpus_per_trial: float) -> dict:
    """The search with shared stored outputs vs. each trial computing its own vs. no cache, A/B/C/C/B/A."""
    folder = _common.scratch_dir("medtune-lpshare-")
    weights = _weights_file(folder)
    walls: dict[str, list[float]] = {arm: [] for arm in SEARCH_ARMS}
    results: dict[str, dict] = {}
    metrics: list[list[float]] = []  # every search's sorted val AUCs
    for rep, arm in abba(list(SEARCH_ARMS), repetitions):
        storage = folder / f"{arm}-{rep}"
        _, stdout = _common.run_python(
            [__file__, "--search-arm", arm, "--dataset", dataset, "--weights", weights, "--storage", str(storage),
             "--search-size", str(size), "--search-epochs", str(epochs), "--trials", str(trials),
             "--cpus-per-trial", str(cpus_per_trial)], env=SEARCH_ARMS[arm])
        results[arm] = _common.last_json_line(stdout)
        assert results[arm]["errored"] == 0 and results[arm]["trials"] == trials, results[arm]
        walls[arm].append(results[arm]["wall_s"])
        metrics.append(results[arm]["val_auc"])

    def speedup(peer: str) -> float:
        return median([p / s for p, s in zip(walls[peer], walls["shared"], strict=True)])

    return {"over_recompute": speedup("recompute"), "over_per_trial": speedup("per_trial"), "walls": walls,
            "results": results, "same_metrics": all(m == metrics[0] for m in metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--pairs", type=int, default=4, help="epoch pairs per case")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only-search", action="store_true", help="only the cross-trial search arms")
    parser.add_argument("--trials", type=int, default=8, help="trials of each cross-trial search")
    parser.add_argument("--search-size", type=int, default=28, help="image size of the cross-trial searches")
    parser.add_argument("--search-epochs", type=int, default=10, help="epochs of each cross-trial trial")
    parser.add_argument("--search-repetitions", type=int, default=1, help="A/B pairs of cross-trial searches")
    parser.add_argument("--cpus-per-trial", type=float, default=2.0)
    # One arm of the cross-trial comparison, run in a fresh process by cross_trial().
    parser.add_argument("--search-arm", choices=list(SEARCH_ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_arm:
        search_arm(args)
        return

    import torch

    from tuner.data import load_dataset

    torch.set_num_threads(args.threads)
    dataset = "breastmnist"
    cases = CASES
    if args.short:
        dataset = _common.small_breastmnist()
        cases, args.pairs = CASES[:2], 2
    data = load_dataset(dataset)
    note(f"lp_cache: {Path(dataset).name} ({len(data.train)} training images), batch 32, {args.threads} torch "
         f"thread(s), {args.pairs} epoch pairs per case, A/B/B/A; {_common.machine()}")
    trials, epochs = (4, 3) if args.short else (args.trials, args.search_epochs)
    shared = cross_trial(dataset, size=args.search_size, epochs=epochs, trials=trials,
                         repetitions=args.search_repetitions, cpus_per_trial=args.cpus_per_trial)
    note(f"cross-trial search: {trials} lp trials x {epochs} epochs, resnet18 {args.search_size} px, walls "
         f"{shared['walls']}; trial-epochs {({a: r['trial_epochs'] for a, r in shared['results'].items()})}, "
         f"stored entries {({a: r['entries'] for a, r in shared['results'].items()})}")
    figure(f"lp_cache.search_speedup.{trials}x_resnet18.lp", shared["over_recompute"], ">= 10",
           shared["over_recompute"] >= 10, fmt="{:.1f}",
           what=f"search of {trials} lp trials at {args.search_size} px (run_search, Ray Tune + MLflow): every "
                "epoch recomputing the frozen trunk (no cache) / the trials sharing its stored outputs")
    figure(f"lp_cache.search_speedup_over_per_trial.{trials}x_resnet18.lp", shared["over_per_trial"], fmt="{:.1f}",
           what="the same search: each trial computing its frozen outputs once (the per-trial cache) / sharing them")
    figure(f"lp_cache.search_same_metrics.{trials}x_resnet18.lp", "yes" if shared["same_metrics"] else "NO", "yes",
           shared["same_metrics"], what="every trial-epoch's val_auc identical in the three searches")
    if args.only_search:
        return
    for backbone, size, extra in cases:
        label = f"{backbone}.{extra['strategy']}{extra.get('unfreeze', '')}"
        result = epoch_ratios(data, backbone, size, extra, args.pairs)
        note(f"{label} at {size} px: per-pair ratios {[round(r, 1) for r in result['ratios']]}, cache "
             f"{result['nbytes'] / 2**20:.1f} MiB")
        primary = extra["strategy"] == "lp"
        figure(f"lp_cache.epoch_speedup.{label}", result["speedup"], ">= 10" if primary else "-",
               result["speedup"] >= 10 if primary else None, fmt="{:.1f}",
               what=f"recomputing epoch / cached epoch (train + validation), {backbone} {size} px")
        figure(f"lp_cache.fill_cost_in_epochs.{label}", result["build_in_epochs"], fmt="{:.2f}",
               what="one-time cache fill / one recomputing epoch")
        figure(f"lp_cache.bit_identical.{label}", "yes" if result["identical"] else "NO", "yes", result["identical"],
               what="cached and recomputing arms: same losses, accuracies and final weights, bit for bit")
    if not args.short:
        ratio = whole_trials(data, "resnet18", 28, epochs=10, repetitions=2)
        figure("lp_cache.whole_trial_speedup.resnet18.lp", ratio, fmt="{:.1f}",
               what="10-epoch lp trial through run_trial (checkpoints, test scoring): cache off / on")


if __name__ == "__main__":
    main()

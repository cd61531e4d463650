"""Load: a search of many very short trials runs to the end, every trial in MLflow exactly once with
its metrics, the driver's memory measured as it goes, and two such searches at once into the same
default store (SQLite in --storage) lose nothing.

Each trial trains timm's ``test_resnet`` (0.4 M parameters) for 1 epoch on a 64-image BreastMNIST
subset at 32 px, so a trial is almost all Ray Tune, checkpointing and MLflow. Every search runs in
its own driver process (``medtune tune``'s ``run_search``, Ray started locally by it), which samples
its own RSS after Ray is up and after every finished trial, and times the MLflow logger's callbacks
(they run in Tune's driver loop, so time in them is time the loop is not scheduling trials).

Afterwards, for each search, MLflow is read back and compared with Tune's own results folder:
exactly one child run per Tune trial (by trial id), each FINISHED with val_auc and test_auc logged
once per reported epoch.

    python benchmarks/load.py                # one search of 200 trials, then two at once of 200 each
    python benchmarks/load.py --short        # CI (tests/test_load.py): 6 trials, then two at once of 3
    python benchmarks/load.py --trials 200 --pair 0    # just the single search
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, note  # noqa: E402

PINS = {"backbone": "timm/test_resnet", "weights": "none", "strategy": "ft", "head": "linear", "image_size": 32,
        "batch_size": 32, "augment": False}


def tiny_dataset(folder: Path) -> str:
    """64 training, 16 validation, 16 test BreastMNIST images."""
    from tuner.data import load_dataset, save_npz_subset

    return str(save_npz_subset(load_dataset("breastmnist"), folder / "breast64.npz",
                               {"train": (21, 43), "val": (5, 11), "test": (5, 11)}))


class _DriverProbe:
    """The driver's RSS after each finished trial, and the seconds spent in the MLflow logger's callbacks."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.lock = threading.Lock()
        self.logger_s = 0.0
        self.calls = 0
        self.finished: list[tuple[int, int]] = []  # (trials finished, RSS bytes)

    def rss(self) -> int:
        return self.process.memory_info().rss

    def instrument(self, logger_class: type) -> None:
        """Wrap the logger's callbacks to time them (and to sample RSS at each trial's end)."""
        for name in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"):
            original = getattr(logger_class, name)

            def timed(self_, *args, __original=original, __name=name, **kwargs):
                start = time.perf_counter()
                try:
                    return __original(self_, *args, **kwargs)
                finally:
                    with self.lock:
                        self.logger_s += time.perf_counter() - start
                        self.calls += 1
                        if __name in ("on_trial_complete", "on_trial_error"):
                            self.finished.append((len(self.finished) + 1, self.rss()))

            setattr(logger_class, name, timed)


def search_run(args: argparse.Namespace) -> None:
    """One search in this (fresh) driver process; prints its figures as a RESULT line."""
    from tuner.cluster import init_ray
    from tuner.search import SearchRequest, run_search
    from tuner.tracking import MlflowTrialLogger

    probe = _DriverProbe()
    probe.instrument(MlflowTrialLogger)
    init_ray(1.0, 0.0)
    request = SearchRequest(space="quick", dataset=args.dataset, num_samples=args.trials, max_epochs=1,
                            search="random", cpus_per_trial=1.0, pins=PINS, storage=args.storage,
                            experiment=args.search_run, seed=args.seed)
    rss_start = probe.rss()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(request)
    wall = time.perf_counter() - start
    print("RESULT " + json.dumps({
        "experiment": outcome.experiment, "experiment_dir": str(outcome.experiment_dir),
        "tracking_uri": outcome.tracking_uri, "parent_run_id": outcome.parent_run_id, "trials": outcome.trials,
        "errored": outcome.errored, "wall_s": wall, "rss_start": rss_start, "rss_end": probe.rss(),
        "finished": probe.finished, "logger_s": probe.logger_s, "logger_calls": probe.calls}), flush=True)


def check_exactly_once(result: dict) -> list[str]:
    """What MLflow lacks or duplicates against Tune's results folder (empty: nothing)."""
    from mlflow.tracking import MlflowClient

    from tuner.schema import TRIAL_ID_TAG

    client = MlflowClient(result["tracking_uri"])
    experiment = client.get_experiment_by_name(result["experiment"])
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]]
    tune_trials = {}
    for result_file in Path(result["experiment_dir"]).glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if rows:
            tune_trials[rows[0]["trial_id"]] = len(rows)
    problems = []
    by_trial: dict[str, list] = {}
    for run in children:
        by_trial.setdefault(run.data.tags.get(TRIAL_ID_TAG, "?"), []).append(run)
    duplicated = sorted(t for t, rs in by_trial.items() if len(rs) > 1)
    missing = sorted(set(tune_trials) - set(by_trial))
    extra = sorted(set(by_trial) - set(tune_trials))
    if len(tune_trials) != result["trials"]:
        problems.append(f"Tune has {len(tune_trials)} trials with results of {result['trials']}")
    problems += [f"{len(duplicated)} trials logged twice"] if duplicated else []
    problems += [f"{len(missing)} trials missing from MLflow"] if missing else []
    problems += [f"{len(extra)} MLflow runs with no Tune trial"] if extra else []
    for trial_id, (run,) in ((t, rs) for t, rs in by_trial.items() if len(rs) == 1 and t in tune_trials):
        if run.info.status != "FINISHED":
            problems.append(f"trial {trial_id}: run {run.info.status}")
        for metric in ("val_auc", "test_auc"):
            history = client.get_metric_history(run.info.run_id, metric)
            if len(history) != tune_trials[trial_id]:
                problems.append(f"trial {trial_id}: {metric} logged {len(history)} times for "
                                f"{tune_trials[trial_id]} epochs")
    return problems


def _start(name: str, trials: int, dataset: str, storage: Path, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--search-run", name, "--trials", str(trials), "--dataset",
                             dataset, "--storage", str(storage), "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_common.REPO,
                            env=os.environ.copy())


def _finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"search failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return _common.last_json_line(stdout)


def _growth_per_100(result: dict) -> float:
    """Driver RSS growth per 100 trials: the least-squares slope over the second half of the trials
    (the first half includes the warm-up: imports, Ray's and MLflow's first connections)."""
    points = result["finished"][len(result["finished"]) // 2:]
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / max(sum((x - mean_x) ** 2 for x, _ in points), 1e-9))
    return slope * 100 / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--trials", type=int, default=200, help="trials of the single search (0: none)")
    parser.add_argument("--pair", type=int, default=200, help="trials of each of the two concurrent searches (0: none)")
    parser.add_argument("--storage", help="keep the searches here (default: a scratch folder)")
    parser.add_argument("--search-run", help=argparse.SUPPRESS)  # one search, in a fresh driver process
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_run:
        search_run(args)
        return 0
    if args.short:
        args.trials, args.pair = 6, 3
    storage, where = _common.search_storage(args.storage, "medtune-load-")
    dataset = tiny_dataset(_common.scratch_dir("medtune-load-data-"))
    note(f"load: timm/test_resnet, 1 epoch on 64 images; storage {where}; {_common.machine()}")
    ok = True

    if args.trials:
        single = _finish(_start("single", args.trials, dataset, storage, 0))
        problems = check_exactly_once(single)
        ok &= not problems
        minutes = single["wall_s"] / 60
        note(f"single search: {single['trials']} trials in {single['wall_s']:.0f} s; driver RSS "
             f"{single['rss_start'] / 2**20:.0f} -> {single['rss_end'] / 2**20:.0f} MiB; MLflow logger "
             f"{single['logger_s']:.1f} s in {single['logger_calls']} callbacks; problems: {problems or 'none'}")
        figure("load.exactly_once.single", "yes" if not problems else "NO", "yes", not problems,
               what=f"{args.trials} trials: each in MLflow exactly once, FINISHED, val/test AUC once per epoch")
        figure("load.trials_per_minute.single", single["trials"] / minutes, fmt="{:.1f}",
               what="trials finished per minute of run_search (1 CPU per trial, 2 at a time)")
        figure("load.driver_rss_growth_mib_per_100_trials", _growth_per_100(single), fmt="{:.1f}",
               what="driver RSS slope over the second half of the trials, MiB per 100 trials")
        figure("load.driver_rss_mib_start_end", f"{single['rss_start'] / 2**20:.0f} -> {single['rss_end'] / 2**20:.0f}",
               what="driver RSS after Ray started, and after the search")
        figure("load.logger_share_of_wall", single["logger_s"] / single["wall_s"], fmt="{:.3f}",
               what="time in the MLflow logger's callbacks / the search's wall time (the logger keeping up)")

    if args.pair:
        procs = [_start(f"pair-{i}", args.pair, dataset, storage, 10 + i) for i in range(2)]
        pair = [_finish(proc) for proc in procs]
        pair_problems = [f"{r['experiment']}: {p}" for r in pair for p in check_exactly_once(r)]
        ok &= not pair_problems
        note(f"two searches at once into {pair[0]['tracking_uri']}: "
             f"{[round(r['wall_s']) for r in pair]} s; problems: {pair_problems or 'none'}")
        figure("load.exactly_once.two_at_once", "yes" if not pair_problems else "NO", "yes", not pair_problems,
               what=f"two searches of {args.pair} trials at once into one default store: nothing lost or doubled")
        figure("load.trials_per_minute.two_at_once", 2 * args.pair / (max(r["wall_s"] for r in pair) / 60),
               fmt="{:.1f}", what="both searches' trials per minute of the longer one's wall time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Memory: the Ray worker processes running 4 concurrent trials vs. 1 trial, the same data.

Ray is started with ``num_cpus=4`` (on this 2-core machine that only lets Tune place 4 one-CPU trials
at once). Two searches run in turn through ``run_search`` (grid search over the ``quick`` space, every
value pinned but lr, ASHA's grace period = the epoch budget so nothing stops early): one with one
configuration, one with four (four learning rates). While each runs, a thread samples every process
of this driver's Ray whose title says it runs a Tune trial (``ray::ImplicitFunc``) twice a second with psutil: RSS (what
the brief asks for; it counts shared pages, torch's libraries above all, once per process), PSS
(shared pages split between the processes sharing them) and USS (pages only that process has).
The figure is the peak of the summed RSS with 4 trials over its peak with 1 trial; PSS and USS follow.

    python benchmarks/memory.py            # full BreastMNIST, 3 epochs
    python benchmarks/memory.py --short    # CI: 96-image subset, 2 epochs, 2 trials vs 1
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, note  # noqa: E402

TRIAL_TITLE = "ImplicitFunc"  # the Tune function-trainable actor's process title (ray::ImplicitFunc.train)
LRS = [1e-3, 3e-3, 1e-2, 3e-2]


class Sampler(threading.Thread):
    """Samples the trial processes' memory until stopped; keeps (n_processes, rss, pss, uss) sums."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[int, int, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop_event.is_set():
            rss = pss = uss = count = 0
            for proc in me.children(recursive=True):  # this driver's Ray only, not other searches on the machine
                try:
                    if TRIAL_TITLE not in " ".join(proc.cmdline()):
                        continue
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                count += 1
                rss, pss, uss = rss + info.rss, pss + info.pss, uss + info.uss
            if count:
                self.samples.append((count, rss, pss, uss))
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak(self, processes: int) -> tuple[int, int, int]:
        """The largest sums over samples that saw ``processes`` trial processes at once."""
        full = [s for s in self.samples if s[0] >= processes]
        if not full:
            raise RuntimeError(f"never saw {processes} trial processes at once: {self.samples[:20]}")
        return max(s[1] for s in full), max(s[2] for s in full), max(s[3] for s in full)


def measure(dataset: str, lrs: list[float], epochs: int, storage: Path, name: str) -> tuple[int, int, int]:
    from tuner.search import SearchRequest, run_search

    sampler = Sampler()
    sampler.start()
    try:
        outcome = run_search(SearchRequest(
            space="quick", dataset=dataset, search="grid", storage=str(storage), experiment=name,
            pins={"head": "linear", "seed": 0, "lr": lrs, "batch_size": 32, "epochs": epochs},
            grace_period=epochs, cpus_per_trial=1))
    finally:
        sampler.stop()
    assert outcome.errored == 0 and outcome.trials == len(lrs), outcome
    return sampler.peak(len(lrs))


def import_footprint(module: str) -> int:
    """RSS of a fresh interpreter after importing ``module``."""
    code = f"import importlib, psutil; importlib.import_module({module!r}); print(psutil.Process().memory_info().rss)"
    _, stdout = _common.run_python(["-c", code])
    return int(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    dataset = "breastmnist"
    if args.short:
        args.epochs, args.trials = 2, 2
        dataset = _common.small_breastmnist()

    import ray

    ray.init(num_cpus=args.trials, include_dashboard=False, log_to_driver=False, configure_logging=False)
    storage = _common.scratch_dir("medtune-memory-")
    note(f"memory: resnet18, {Path(dataset).name}, 28 px, {args.epochs} epochs, {args.trials} concurrent trials vs "
         f"1, ray.init(num_cpus={args.trials}); {_common.machine()}")
    one = measure(dataset, LRS[:1], args.epochs, storage, "one")
    many = measure(dataset, LRS[:args.trials], args.epochs, storage, "many")
    ray.shutdown()
    mib = 2**20
    note(f"1 trial: RSS {one[0] / mib:.0f} MiB, PSS {one[1] / mib:.0f} MiB, USS {one[2] / mib:.0f} MiB; "
         f"{args.trials} trials: RSS {many[0] / mib:.0f}, PSS {many[1] / mib:.0f}, USS {many[2] / mib:.0f} MiB (sums)")
    rss = many[0] / one[0]
    figure(f"memory.rss_ratio_{args.trials}_vs_1", rss, "<= 1.6", rss <= 1.6 if args.trials == 4 else None,
           fmt="{:.2f}", what=f"peak summed RSS of the trial processes, {args.trials} concurrent trials / 1 trial")
    figure(f"memory.pss_ratio_{args.trials}_vs_1", many[1] / one[1], fmt="{:.2f}",
           what="the same in PSS (shared pages divided among the processes that share them)")
    figure(f"memory.uss_ratio_{args.trials}_vs_1", many[2] / one[2], fmt="{:.2f}",
           what="the same in USS (each process's private pages)")
    search_imports, trial_imports = import_footprint("tuner.search"), import_footprint("tuner.training.trial")
    figure("memory.import_share_of_trial_rss", search_imports / one[0], fmt="{:.2f}",
           what="RSS of a bare interpreter after `import tuner.search` (the module a trial worker loads, as "
                "_tune_trial lives there) / one trial worker's peak RSS")
    figure("memory.mlflow_optuna_share_of_trial_rss", (search_imports - trial_imports) / one[0], fmt="{:.2f}",
           what="what tuner.search adds over tuner.training.trial (MLflow, Optuna, Tune's search code) / one "
                "trial worker's peak RSS")
    figure("memory.extra_trial_rss_fraction", (many[0] - one[0]) / (args.trials - 1) / one[0], fmt="{:.2f}",
           what="RSS each additional concurrent trial adds / the RSS of one trial")


if __name__ == "__main__":
    main()

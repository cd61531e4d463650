"""Memory: do 4 concurrent trials share one copy of the data? Summed proportional memory (PSS) of the
trial processes, 4 concurrent trials vs 1, on a data set big enough for sharing to show.

The data set is synthetic: 224 px RGB uint8 noise images with random binary labels, written as a
MedMNIST-style ``.npz`` of ``--data-gb`` GiB (80/10/10 train/val/test). The trials train resnet18 at
224 px, so the images are used at their stored size: prepared without a copy (``tuner.data.batches``),
read from Ray's object store, where ``with_parameters`` puts them once. A copy per trial would add the
data's size per trial.

Three arms, each a real search through ``run_search`` (grid over the ``quick`` space, one learning rate
per trial, ASHA's grace period = the epoch budget): **tiny**, 1 trial on a 64-image data set of the same
images (the data-free footprint F); **one**, 1 trial on the big data; **four**, 4 trials on it. Ray is
started with ``num_cpus=4`` (so Tune places 4 one-CPU trials at once on 2 cores). A thread samples
every process of this driver's Ray whose title says it runs a Tune trial twice a second with psutil:
RSS, PSS (shared pages divided among the processes that map them: the object store's data and the
libraries) and USS (pages only that process has). Once it has seen the arm's trials running it samples
``--window`` seconds more, then stops the search the way Ctrl-C does (the trials are training by then:
model, optimizer, activations and the data all resident). Each arm's figure is the peak of the sums.

Goal (issue 16): the summed PSS of 4 trials <= one copy of the data + 4 x F x 1.1. The import figures
say what a trial process is made of: a bare interpreter's RSS after importing torch, Ray Tune, the
trainable's module (what a worker loads) and ``tuner.search`` (what it loaded before the trainable
moved out of it); and the model's and optimizer's bytes.

    python benchmarks/memory.py            # 1 GiB of 224 px images, 4 trials vs 1, 60 s windows
    python benchmarks/memory.py --short    # CI: 24 MiB, 2 trials vs 1, 4 s windows
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import figure, note  # noqa: E402

TRIAL_TITLE = "ImplicitFunc"  # the Tune function-trainable actor's process title (ray::ImplicitFunc.train)
LRS = [1e-3, 3e-3, 1e-2, 3e-2]
SIZE = 224
MIB = 2**20


class Sampler(threading.Thread):
    """Samples the trial processes' memory, keeping (n_processes, rss, pss, uss) sums; ``window``
    seconds after it first sees ``processes`` trial processes it interrupts this process (SIGINT: the
    search stops as on Ctrl-C)."""

    def __init__(self, processes: int, window: float, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.processes, self.window, self.period = processes, window, period
        self.samples: list[tuple[int, int, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        full_since: float | None = None
        while not self._stop_event.is_set():
            rss = pss = uss = count = 0
            for proc in trial_processes():  # this driver's Ray only, not other searches on the machine
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                count += 1
                rss, pss, uss = rss + info.rss, pss + info.pss, uss + info.uss
            if count:
                self.samples.append((count, rss, pss, uss))
            if count >= self.processes and full_since is None:
                full_since = time.monotonic()
            if full_since is not None and time.monotonic() - full_since > self.window:
                os.kill(os.getpid(), signal.SIGINT)
                return
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak(self) -> tuple[int, int, int]:
        """The largest sums over samples that saw all the arm's trial processes at once."""
        full = [s for s in self.samples if s[0] >= self.processes]
        if not full:
            raise RuntimeError(f"never saw {self.processes} trial processes at once: {self.samples[:20]}")
        return max(s[1] for s in full), max(s[2] for s in full), max(s[3] for s in full)


def write_data(path: Path, images: int, seed: int = 0) -> int:
    """A synthetic 224 px RGB ``.npz`` of ``images`` noise images (80/10/10), random binary labels;
    returns the images' bytes."""
    rng = np.random.default_rng(seed)
    counts = {"train": images * 8 // 10, "val": images // 10}
    counts["test"] = images - counts["train"] - counts["val"]
    arrays = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        labels = np.arange(n) % 2  # both classes in every split
        arrays[f"{split}_labels"] = rng.permutation(labels).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return sum(a.nbytes for k, a in arrays.items() if k.endswith("_images"))


def trial_processes() -> list:
    """This driver's processes that run a Tune trial."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if TRIAL_TITLE in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_for_no_trial_processes(timeout: float = 120.0) -> None:
    """Until the previous arm's trial processes have exited: one still exiting would count as this arm's."""
    deadline = time.monotonic() + timeout
    while trial_processes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"trial processes still running after {timeout:.0f} s: {trial_processes()}")
        time.sleep(0.5)


def measure(dataset: str, trials: int, window: float, storage: Path, name: str) -> tuple[int, int, int]:
    """Peak summed (RSS, PSS, USS) of ``trials`` concurrent trials on ``dataset``, sampled for ``window``
    seconds once all of them run; the search is then interrupted."""
    from tuner.interrupt import SearchInterrupted
    from tuner.search import SearchRequest, run_search

    wait_for_no_trial_processes()
    sampler = Sampler(trials, window)
    sampler.start()
    try:
        run_search(SearchRequest(
            space="quick", dataset=dataset, search="grid", storage=str(storage), experiment=name,
            pins={"backbone": "resnet18", "weights": "none", "head": "linear", "strategy": "ft", "seed": 0,
                  "lr": LRS[:trials], "batch_size": 16, "image_size": SIZE, "augment": False, "epochs": 50},
            grace_period=50, cpus_per_trial=1))
        raise RuntimeError(f"{name}: the search ended before the sampler had seen {trials} trials for {window} s")
    except SearchInterrupted:
        pass
    finally:
        sampler.stop()
    return sampler.peak()


def import_footprint(module: str) -> int:
    """RSS of a fresh interpreter after importing ``module``."""
    code = f"import importlib, psutil; importlib.import_module({module!r}); print(psutil.Process().memory_info().rss)"
    _, stdout = _common.run_python(["-c", code])
    return int(stdout.strip().splitlines()[-1])


def model_bytes() -> int:
    """resnet18's parameters and buffers with a binary linear head (SGD with momentum keeps as much again)."""
    from tuner.models import build_classifier

    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--data-gb", type=float, default=1.0, help="GiB of 224 px images in the big data set")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--window", type=float, default=60.0, help="seconds sampled once all trials run")
    args = parser.parse_args()
    if args.short:
        args.data_gb, args.trials, args.window = 24 / 1024, 2, 4.0
    import ray

    folder = _common.scratch_dir("medtune-memory-")
    per_image = SIZE * SIZE * 3
    data_bytes = write_data(folder / "big.npz", max(20, round(args.data_gb * 2**30 / per_image)))
    write_data(folder / "tiny.npz", 64, seed=1)
    ray.init(num_cpus=args.trials, include_dashboard=False, log_to_driver=False, configure_logging=False)
    note(f"memory: resnet18 at {SIZE} px, batch 16, {data_bytes / MIB:.0f} MiB of images; {args.trials} concurrent "
         f"trials vs 1, sampled {args.window:.0f} s once running; ray.init(num_cpus={args.trials}); "
         f"{_common.machine()}")
    tiny = measure(str(folder / "tiny.npz"), 1, args.window, folder, "tiny")
    one = measure(str(folder / "big.npz"), 1, args.window, folder, "one")
    many = measure(str(folder / "big.npz"), args.trials, args.window, folder, "many")
    ray.shutdown()
    for name, (rss, pss, uss) in (("tiny data, 1 trial", tiny), ("big data, 1 trial", one),
                                  (f"big data, {args.trials} trials", many)):
        note(f"{name}: RSS {rss / MIB:.0f} MiB, PSS {pss / MIB:.0f} MiB, USS {uss / MIB:.0f} MiB (sums)")
    allowance = data_bytes + args.trials * tiny[1] * 1.1
    figure(f"memory.pss_vs_allowance.{args.trials}_trials", many[1] / allowance, "<= 1",
           many[1] <= allowance if args.trials == 4 else None, fmt="{:.2f}",
           what=f"summed PSS of {args.trials} trials ({many[1] / MIB:.0f} MiB) / (one copy of the data "
                f"{data_bytes / MIB:.0f} MiB + {args.trials} x the 1-trial PSS on tiny data "
                f"{tiny[1] / MIB:.0f} MiB x 1.1)")
    figure(f"memory.private_data_copies.{args.trials}_trials", (many[2] - args.trials * tiny[2]) / data_bytes,
           fmt="{:.2f}", what=f"summed USS of {args.trials} trials minus {args.trials} x a tiny-data trial's USS, "
                              "in copies of the data (0: no trial holds a private copy)")
    figure(f"memory.pss_ratio_{args.trials}_vs_1", many[1] / one[1], fmt="{:.2f}",
           what=f"summed PSS, {args.trials} trials / 1 trial, on the big data")
    torch_rss, tune_rss = import_footprint("torch"), import_footprint("ray.tune")
    worker_rss, search_rss = import_footprint("tuner.training.trainable"), import_footprint("tuner.search")
    note(f"a bare interpreter's RSS after importing torch {torch_rss / MIB:.0f} MiB, ray.tune {tune_rss / MIB:.0f} "
         f"MiB, tuner.training.trainable (what a worker imports) {worker_rss / MIB:.0f} MiB, tuner.search "
         f"{search_rss / MIB:.0f} MiB; resnet18's weights {model_bytes() / MIB:.0f} MiB (momentum as much again)")
    figure("memory.worker_import_saving_mib", (search_rss - worker_rss) / MIB, fmt="{:.0f}",
           what="RSS a trial worker no longer loads since the trainable left tuner.search (MLflow, Optuna, "
                "the driver's search code), MiB per worker")


if __name__ == "__main__":
    main()

"""A trial sharing its cores: OpenMP's default spin-waiting vs ``OMP_WAIT_POLICY=PASSIVE``.

A trial with 2 CPUs runs torch with 2 OpenMP threads. By default an idle OpenMP thread spins for a while
before it sleeps; when another busy process shares the cores (a neighbour trial, a data job on a shared
workstation), the spinning threads take the cores the working ones need. ``OMP_WAIT_POLICY=PASSIVE``
makes idle threads sleep at once; this measures what that costs on idle cores and saves on shared ones,
which is what the README's advice rests on (medtune leaves the policy to the user: neither is better
everywhere).

Four arms, each in a fresh interpreter (the policy is read when torch's OpenMP starts): the wait
policy (``default`` / ``PASSIVE``) x the neighbour (``idle``: none; ``busy``: a second process training
the same model with the same threads and policy, started first and running throughout). Each arm times
``run_trial`` epochs 2..E of one configuration with 2 torch threads, the arms in A/B/B/A order per
neighbour. Figures: the PASSIVE arm's epoch time over the default's, idle and busy.

    python benchmarks/omp_wait.py            # resnet18 ft 28 px and Lite0-sized lp 64 px, 4 epochs, 2 repetitions
    python benchmarks/omp_wait.py --short    # CI: resnet18 at 28 px on a 96-image subset, 2 epochs, 1 repetition
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import abba, figure, median, note  # noqa: E402

CASES = {
    "resnet18_ft_28": {"backbone": "resnet18", "weights": "none", "strategy": "ft", "image_size": 28,
                       "augment": True},
    "efficientnet_lp_64": {"backbone": "timm/tf_efficientnet_lite0", "weights": "none", "strategy": "lp",
                           "image_size": 64, "augment": True},
}
THREADS = 2


def epoch_seconds(case: str, dataset: str, epochs: int, forever: bool) -> None:
    """In this process: train ``case`` with THREADS torch threads; print the wall of epochs 2..E (or, with
    ``forever``, train until killed: the busy neighbour)."""
    import torch

    from tuner.data import load_dataset
    from tuner.training.session import LocalSession
    from tuner.training.trial import run_trial

    torch.set_num_threads(THREADS)
    data = load_dataset(dataset)
    config = {**CASES[case], "head": "linear", "lr": 1e-3, "batch_size": 32, "epochs": epochs, "seed": 0}

    class Clock(LocalSession):
        def __init__(self, out_dir: Path) -> None:
            super().__init__(out_dir)
            self.stamps: list[float] = []

        def report(self, metrics, checkpoint) -> None:
            super().report(metrics, checkpoint)
            self.stamps.append(time.perf_counter())

    while True:
        clock = Clock(_common.scratch_dir("medtune-ompwait-"))
        with contextlib.redirect_stdout(io.StringIO()):
            run_trial(config, data, clock)
        if not forever:
            print("RESULT " + json.dumps({"seconds": (clock.stamps[-1] - clock.stamps[0]) / (epochs - 1)}), flush=True)
            return


def _env(policy: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def arm(case: str, dataset: str, epochs: int, policy: str, neighbour: str) -> float:
    """Seconds per epoch of ``case`` under ``policy``, alone or beside a busy neighbour."""
    command = [sys.executable, __file__, "--case", case, "--dataset", dataset, "--epochs", str(epochs)]
    busy = None
    if neighbour == "busy":
        busy = subprocess.Popen([*command, "--forever"], env=_env(policy), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(5)  # let it load its data and start training
    try:
        done = subprocess.run(command, env=_env(policy), capture_output=True, text=True, check=True, timeout=1800)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return _common.last_json_line(done.stdout)["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # one arm, in a fresh process
    parser.add_argument("--dataset", default="breastmnist", help=argparse.SUPPRESS)
    parser.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        epoch_seconds(args.case, args.dataset, args.epochs, args.forever)
        return
    cases = list(CASES)
    if args.short:
        args.dataset, args.epochs, args.repetitions, cases = _common.small_breastmnist(), 2, 1, cases[:1]
    note(f"omp_wait: {THREADS} torch threads per trial, epochs 2..{args.epochs}, {args.repetitions} A/B/B/A "
         f"repetitions per neighbour; {_common.machine()}")
    for case in cases:
        for neighbour in ("idle", "busy"):
            seconds: dict[str, list[float]] = {"default": [], "PASSIVE": []}
            for _, policy in abba(["default", "PASSIVE"], args.repetitions):
                seconds[policy].append(arm(case, args.dataset, args.epochs, policy, neighbour))
            ratio = median(p / d for p, d in zip(seconds["PASSIVE"], seconds["default"], strict=True))
            note(f"{case}, {neighbour} neighbour: s/epoch default {seconds['default']}, PASSIVE {seconds['PASSIVE']}")
            idle = neighbour == "idle"
            figure(f"omp_wait.passive_over_default.{case}.{neighbour}", ratio, fmt="{:.2f}",
                   what=f"seconds per epoch with OMP_WAIT_POLICY=PASSIVE / with the default, "
                        f"{'alone on the cores' if idle else 'beside a busy neighbour trial'}")


if __name__ == "__main__":
    main()

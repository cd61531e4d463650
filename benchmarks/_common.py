"""Helpers shared by the benchmark scripts.

Every figure a benchmark prints is a ratio of two things measured side by side in the same run (the
machine is shared and noisy, so absolute times mean little). Each figure is one line:

    FIGURE <name> = <value> | goal <goal> | <MET|MISSED|-> | <what it is>

which ``tests/test_benchmarks.py`` looks for, and which BENCHMARKS.md quotes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MEDTUNE_DATA_ROOT", str(REPO.parent / "shared" / "data" / "medmnist"))
# Tune's console output is long; the benchmarks print their own summary.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def figure(name: str, value: float | str, goal: str = "-", met: bool | None = None, what: str = "",
           fmt: str = "{:.3f}") -> str:
    """Print (and return) one figure line."""
    shown = value if isinstance(value, str) else fmt.format(value)
    verdict = "-" if met is None else ("MET" if met else "MISSED")
    line = f"FIGURE {name} = {shown} | goal {goal} | {verdict} | {what}"
    print(line, flush=True)
    return line


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def geometric_mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.exp(np.mean(np.log(values))))


def abba(arms: Sequence[str], repetitions: int) -> list[tuple[int, str]]:
    """A/B/B/A/A/B/...: each repetition runs every arm once, alternating the order so that a drift in
    the machine's load hits both arms alike. Returns (repetition, arm) pairs."""
    order = []
    for rep in range(repetitions):
        arms_now = list(arms) if rep % 2 == 0 else list(reversed(arms))
        order += [(rep, arm) for arm in arms_now]
    return order


def subset_npz(data: Any, path: Path, per_class: dict[str, tuple[int, int]]) -> Path:
    """The first (n_class0, n_class1) images of each split of a real data set, with MedMNIST's keys
    (as tests/conftest.py does), for the short forms."""
    arrays = {}
    for split, (n0, n1) in per_class.items():
        source = data.split(split)
        keep = np.concatenate([np.flatnonzero(source.labels == 0)[:n0], np.flatnonzero(source.labels == 1)[:n1]])
        keep.sort()
        arrays[f"{split}_images"] = source.images[keep]
        arrays[f"{split}_labels"] = source.labels[keep].reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def small_breastmnist(folder: Path, per_class: dict[str, tuple[int, int]] | None = None) -> str:
    """A real-image BreastMNIST subset saved in ``folder``; returns its path."""
    from tuner.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    per_class = per_class or {"train": (32, 64), "val": (15, 25), "test": (15, 25)}
    return str(subset_npz(load_dataset("breastmnist"), folder / "breastsmall.npz", per_class))


def tune_results(experiment_dir: Path) -> list[dict[str, Any]]:
    """Every result row every trial of a finished search reported (its ``result.json`` lines), with
    ``trial_dir`` added, sorted by the time they were reported."""
    rows = []
    for result_file in sorted(Path(experiment_dir).glob("*/result.json")):
        for line in result_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                row["trial_dir"] = result_file.parent.name
                rows.append(row)
    rows.sort(key=lambda r: (r.get("timestamp", 0), r.get("time_total_s", 0)))
    return rows


def run_python(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> tuple[float, str]:
    """Run ``python args...`` in a fresh interpreter; returns (wall seconds, stdout). Raises with the
    output tail if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return wall, proc.stdout


def last_json_line(stdout: str, marker: str = "RESULT ") -> dict[str, Any]:
    """The JSON a sub-run printed after ``marker``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError(f"no {marker!r} line in the sub-run's output:\n{stdout[-2000:]}")


def machine() -> str:
    import platform

    import torch

    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"load average {os.getloadavg()[0]:.1f} at start")

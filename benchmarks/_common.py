"""Helpers shared by the benchmark scripts.

Every figure a benchmark prints is a ratio of two things measured side by side in the same run (the
machine is shared and noisy, so absolute times mean little). Each figure is one line:

    FIGURE <name> = <value> | goal <goal> | <MET|MISSED|-> | <what it is>

which ``tests/test_benchmarks.py`` looks for, and which BENCHMARKS.md quotes.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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


def abba(arms: Sequence[str], repetitions: int) -> list[tuple[int, str]]:
    """A/B/B/A/A/B/...: each repetition runs every arm once, alternating the order so that a drift in
    the machine's load hits both arms alike. Returns (repetition, arm) pairs."""
    order = []
    for rep in range(repetitions):
        arms_now = list(arms) if rep % 2 == 0 else list(reversed(arms))
        order += [(rep, arm) for arm in arms_now]
    return order


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when this process exits: searches and trials write checkpoints of
    100+ MB each, which would otherwise pile up in the temporary folder run after run."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def search_storage(requested: str | None, prefix: str) -> tuple[Path, str]:
    """Where a benchmark's searches go: ``--storage`` if given (kept), else a scratch folder; with
    the words that say which."""
    if requested:
        return Path(requested).resolve(), str(Path(requested).resolve())
    folder = scratch_dir(prefix)
    return folder, f"{folder} (removed at exit; --storage keeps it)"


def small_breastmnist() -> str:
    """A real-image BreastMNIST subset (96 training, 40 validation, 40 test images, as the tests use)
    in a scratch folder; returns its path."""
    from tuner.data import load_dataset, save_npz_subset

    path = scratch_dir("medtune-bench-") / "breastsmall.npz"
    return str(save_npz_subset(load_dataset("breastmnist"), path,
                               {"train": (32, 64), "val": (15, 25), "test": (15, 25)}))


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

"""How long does the analysis of a 1,000-trial search take? Prints the times; not a unit test.

Builds a local MLflow store (sqlite + file artifacts, as ``medtune tune`` keeps in ``--storage``) with
one search of N trials, logged the way ``tuner.tracking`` logs them (one parent run, one child per
trial with its params, per-epoch metrics, tags and ``test_scores.csv``), and the same trials as a
Tune experiment folder. Then times ``load_trials`` from MLflow, the same from the Tune folder, and
the whole report from each.

    python benchmarks/analysis_scale.py                  # 1,000 trials in a temporary folder
    python benchmarks/analysis_scale.py --trials 2000 --dir /tmp/scale --keep

The synthetic study: 8 fine-tuning strategies x 3 backbones x 3 heads, log-uniform learning rates,
5 seeds, 6 epochs, a binary test set of 200 images; AUCs depend on strategy, backbone, head and the
learning rate, plus seed and residual noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, whatever is installed

STRATEGIES = {
    "ft": 0.0,
    "lp": -0.5,
    "g_lf": 0.1,
    "g_fl": -0.1,
    "lp_ft": 0.2,
    "l1_sp": 0.05,
    "l2_sp": 0.0,
    "auto_rgn": 0.1,
}
BACKBONES = {"resnet50": 0.0, "densenet121": 0.1, "vgg19": -0.1}
HEADS = {"linear": -0.2, "conv": 0.0, "convskip": 0.1}
EPOCHS = 6
N_TEST = 200


def synthetic_trials(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (N_TEST // 2))
    seed_effect = rng.normal(0, 0.1, 5)
    for i in range(n):
        strategy = list(STRATEGIES)[i % len(STRATEGIES)]
        backbone = list(BACKBONES)[(i // len(STRATEGIES)) % len(BACKBONES)]
        head = list(HEADS)[(i // 24) % len(HEADS)]
        trial_seed = int(rng.integers(0, 5))
        lr = float(10 ** rng.uniform(-5, -2))
        signal = (
            1.2 + STRATEGIES[strategy] + BACKBONES[backbone] + HEADS[head] - 0.3 * (np.log10(lr) + 3.5) ** 2
        )
        signal += seed_effect[trial_seed]
        p1 = 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(0, 1, N_TEST))))
        scores = pd.DataFrame({"index": np.arange(N_TEST), "label": labels, "score_0": 1 - p1, "score_1": p1})
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(labels, p1))
        acc = float(((p1 > 0.5) == labels).mean())
        epochs_done = EPOCHS if rng.uniform() < 0.4 else int(rng.integers(1, EPOCHS))
        history = []
        for epoch in range(1, epochs_done + 1):
            train_acc, val_acc = 0.55 + 0.06 * epoch, 0.55 + 0.03 * epoch
            train_loss, val_loss = 0.9 - 0.1 * epoch, 0.85 - 0.05 * epoch
            history.append(
                {
                    "epoch": epoch,
                    "lr": lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / EPOCHS)),
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "val_auc": auc - 0.02 + 0.003 * epoch,
                    "best_score": auc + rng.normal(0, 0.01),
                    "best_val_auc": auc,
                    "best_epoch": epoch,
                    "gap_acc": train_acc - val_acc,
                    "gap_loss": val_loss - train_loss,
                    "test_auc": auc,
                    "test_acc": acc,
                    "test_loss": 0.6,
                    "n_params": 2.5e7,
                    "n_trainable_params": 2.5e7,
                }
            )
        config = {
            "backbone": backbone,
            "weights": "imagenet",
            "head": head,
            "strategy": strategy,
            "lr": lr,
            "seed": trial_seed,
            "epochs": EPOCHS,
            "batch_size": 64,
            "optimizer": "adam",
            "kernel_size": None if head == "linear" else 3,
            "metric": "val_auc",
        }
        yield f"{i:08x}", config, history, scores, "completed" if epochs_done == EPOCHS else "stopped_early"


def build(root: Path, n: int, name: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from tuner.tracking import trial_run_name

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=name, tags={"medtune.role": "search"}).info.run_id
    client.log_batch(
        parent,
        params=[
            Param("space", "quick"),
            Param("dataset", "synthmnist"),
            Param("task", "binary"),
            Param("search", "optuna"),
        ],
    )
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "medtune_search.json").write_text(
        json.dumps(
            {
                "parent_run_id": parent,
                "experiment": name,
                "trial_params": {"dataset": "synthmnist"},
                "request": {"space": "quick", "dataset": "synthmnist", "search": "optuna"},
            }
        )
    )
    states = []
    scratch = root / "scratch"
    scratch.mkdir()
    for trial_id, config, history, scores, outcome in synthetic_trials(n):
        run_name = trial_run_name(config)
        trial_dir = folder / f"{trial_id}-{run_name}"
        run = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={
                "mlflow.parentRunId": parent,
                "medtune.trial_id": trial_id,
                "medtune.trial_dir": str(trial_dir),
            },
        )
        run_id = run.info.run_id
        metrics = [Metric(k, float(v), 0, line["epoch"]) for line in history for k, v in line.items()]
        params = [
            Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v))
            for k, v in {**config, "dataset": "synthmnist"}.items()
        ]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=params,
            tags=[RunTag("medtune.outcome", outcome), RunTag("medtune.test_scores", "test_scores.csv")],
        )
        path = scratch / "test_scores.csv"
        scores.to_csv(path, index=False, float_format="%.9g")
        client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status="FINISHED")
        # the same trial as Tune left it
        checkpoint = trial_dir / f"checkpoint_{len(history) - 1:06d}"
        checkpoint.mkdir(parents=True)
        shutil.copy(path, checkpoint / "test_scores.csv")
        (trial_dir / "params.json").write_text(json.dumps(config))
        (trial_dir / "result.json").write_text(
            "".join(
                json.dumps({**line, "trial_id": trial_id, "training_iteration": line["epoch"], "done": False})
                + "\n"
                for line in history
            )
        )
        states.append([json.dumps({"trial_id": trial_id, "status": "TERMINATED"}), "{}"])
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": states}))
    client.set_terminated(parent, status="FINISHED")
    return uri


def analyze(root: Path, name: str, uri: str) -> None:
    start = time.perf_counter()
    import tuner.tracking  # noqa: F401  (torch, Ray, MLflow: imported once, timed apart)
    from analysis import load_trials
    from analysis.report import AnalysisOptions, build_report

    print(f"imports: {time.perf_counter() - start:.1f} s")
    formula = "test_auc ~ C(strategy, Treatment('ft')) + C(backbone) + C(head) + log10_lr"
    options = AnalysisOptions(formula=formula, compare=["strategy", "backbone"])
    for source in ("mlflow", "tune"):
        start = time.perf_counter()
        frame = load_trials(name, uri, root, source=source)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        report = build_report(name, uri, root, root / f"report-{source}", source=source, options=options)
        total = time.perf_counter() - start
        failed = [s.title for s in report.sections if s.status != "ok"]
        print(
            f"{source:6s}: load_trials {loaded:5.1f} s ({len(frame)} rows); load + full report "
            f"{total:5.1f} s; sections not ok: {failed or 'none'}; problems: {report.problems or 'none'}"
        )
    same = all(
        (root / "report-mlflow" / p.name).read_bytes() == p.read_bytes()
        for p in (root / "report-tune").glob("*.csv")
    )
    print(f"MLflow and Tune-folder reports give identical tables: {same}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--dir", help="where to build the store (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store and reports")
    parser.add_argument("--reuse", action="store_true", help="analyze a store that --dir already holds")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="medtune-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    name = f"scale-{args.trials}"
    try:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        if not args.reuse:
            start = time.perf_counter()
            uri = build(root, args.trials, name)
            print(
                f"built {args.trials} trials (MLflow store and Tune folder) in "
                f"{time.perf_counter() - start:.1f} s"
            )

        analyze(root, name, uri)
    finally:
        if args.keep or args.reuse:
            print(f"kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

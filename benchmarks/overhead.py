"""Overhead: one medtune trial under Ray Tune (MLflow logging, per-epoch checkpoints, test scoring) vs.
a bare PyTorch loop doing the same training.

Both arms train ResNet-18 on BreastMNIST through medtune's data pipeline (the same decoded arrays,
transforms, batch size, shuffling generator), with SGD (Nesterov, momentum 0.9) on the same cosine
schedule, one torch thread each (what a search gives a trial with ``--cpus-per-trial 1``):

- ``medtune``: a real ``run_search`` over the ``quick`` space with every value pinned, grid search,
  so exactly one trial: Ray started locally, the trial in a Ray worker, MLflow logging to a fresh
  SQLite store, checkpoints by medtune's default policy (``--checkpoint-every 0 --checkpoint-seconds
  300``: in a trial this short, the best epoch's test scores whenever they change and the best model
  at the end, no full state; ``--checkpoint-every 1`` measures a full state every epoch), the test
  split scored whenever validation AUC improves.
- ``bare``: plain torchvision ``resnet18(num_classes=2)``, a hand-written loop that trains, evaluates
  validation AUC each epoch, keeps the best weights in memory, and scores the test split once at the
  end. No Ray, no checkpoints, no MLflow.
- ``tune-bare``: the same hand-written loop as a Ray Tune function trainable that
  reports an epoch number each epoch, nothing else: it separates what Ray and Tune cost by themselves
  from what medtune's trial adds (checkpoints, test scoring, MLflow).

Each arm runs in a fresh interpreter (imports included), in A/B/B/A order (``--repetitions``, default
3; every figure is the median over repetitions of the ratio within one). Figures:

- end-to-end ratio: wall time of the medtune process / the bare process (a 10-epoch trial);
- per-epoch ratio (wall): the trial's epochs 2..E (Tune's ``time_this_iter_s``) / the bare loop's;
- per-epoch ratio (CPU): CPU seconds of epochs 2..E, the trial's Ray worker / the bare process, and
  all of medtune's processes (worker, driver, Ray's daemons) / the bare process. On a shared machine
  CPU time is what stays comparable between runs minutes apart: a single-threaded process's CPU
  time hardly changes when others load the machine, its wall time does. The medtune driver reads
  the worker's CPU time each time a new line appears in the trial's ``result.json``.
- fixed cost: (medtune wall - its epochs) - (bare wall - its epochs), expressed in bare epochs.

``--profile`` instead runs ``run_trial`` in-process with a ``LocalSession`` under cProfile and prints
what each part of an epoch costs relative to its training pass, and checkpoint saving with vs.
without zip checksums (the fix in tuner/training/checkpoint.py), interleaved.

    python benchmarks/overhead.py            # 10 epochs, 3 repetitions of medtune/tune-bare/bare
    python benchmarks/overhead.py --checkpoint-every 1  # the same with a full state every epoch
    python benchmarks/overhead.py --profile  # where the per-epoch overhead goes
    python benchmarks/overhead.py --short    # CI: 2 epochs on a 96-image subset, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import REPO, abba, figure, last_json_line, median, note, run_python  # noqa: E402

LR, SEED, MOMENTUM = 0.01, 0, 0.9


def bare_arm(args: argparse.Namespace) -> dict:
    """The hand-written loop in this process."""
    import torch

    from tuner.data import load_dataset

    torch.set_num_threads(args.threads)
    return bare_loop(vars(args), load_dataset(args.dataset))


def tune_bare_arm(args: argparse.Namespace) -> dict:
    """The same hand-written loop as a Ray Tune function trainable that reports each epoch (no
    checkpoint, no MLflow, no medtune code around it): what Ray and Tune cost by themselves."""
    import ray
    from ray import tune

    from tuner.data import load_dataset

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    data = load_dataset(args.dataset)
    storage = str(_common.scratch_dir("medtune-overhead-tune-"))
    results = tune.Tuner(tune.with_resources(tune.with_parameters(_bare_trainable, data=data), {"cpu": args.threads}),
                         param_space=vars(args), tune_config=tune.TuneConfig(num_samples=1),
                         run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    result = json.loads(results[0].metrics["bare"])
    ray.shutdown()
    return result


def _bare_trainable(config: dict, data) -> None:
    from ray import tune

    result = bare_loop(config, data, report=lambda epoch: tune.report({"epoch": epoch}))
    tune.report({"epoch": config["epochs"] + 1, "bare": json.dumps(result)})


def bare_loop(args: dict, data, report=None) -> dict:
    """Train, validate each epoch, keep the best weights in memory, score the test split once."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from tuner._torchvision import torchvision
    from tuner.data import ImageDataset, build_transform

    args = argparse.Namespace(**args)
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(num_classes=2)
    transform = build_transform(args.image_size, augment=False)
    generator = torch.Generator().manual_seed(SEED)
    train_set = ImageDataset(data.train, transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                               generator=generator,
                                               drop_last=len(train_set) % args.batch_size == 1)
    val_loader, test_loader = (torch.utils.data.DataLoader(ImageDataset(split, transform),
                                                           batch_size=max(args.batch_size, 128))
                               for split in (data.val, data.test))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def scores(loader):
        model.eval()
        with torch.no_grad():
            probs, labels = zip(*[(torch.softmax(model(x), 1)[:, 1], y) for x, y in loader], strict=True)
        return torch.cat(labels).numpy(), torch.cat(probs).numpy()

    epoch_times, epoch_cpu, best_auc, best_state = [], [], -1.0, None
    for epoch in range(1, args.epochs + 1):
        start, cpu = time.perf_counter(), time.process_time()
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))
        model.train()
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        labels, probs = scores(val_loader)
        auc = roc_auc_score(labels, probs)
        if auc > best_auc:
            best_auc, best_state = auc, {k: v.detach().clone() for k, v in model.state_dict().items()}
        epoch_times.append(time.perf_counter() - start)
        epoch_cpu.append(time.process_time() - cpu)
        if report is not None:
            report(epoch)
    model.load_state_dict(best_state)
    labels, probs = scores(test_loader)
    return {"epoch_times": epoch_times, "epoch_cpu": epoch_cpu, "best_val_auc": best_auc,
            "test_auc": float(roc_auc_score(labels, probs)), "test_acc": float(np.mean((probs >= 0.5) == labels))}


def medtune_arm(args: argparse.Namespace) -> dict:
    """One real search with one trial; returns the trial's per-epoch times and the driver's phases."""
    start = time.perf_counter()
    import ray

    from tuner.search import SearchRequest, run_search

    imported = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_ready = time.perf_counter()
    storage = _common.scratch_dir("medtune-overhead-")
    watcher = _EpochCpu(storage / "overhead")
    watcher.start()
    pins = {"head": "linear", "lr": LR, "seed": SEED, "epochs": args.epochs, "batch_size": args.batch_size,
            "image_size": args.image_size, "momentum": MOMENTUM}
    outcome = run_search(SearchRequest(space="quick", dataset=args.dataset, search="grid", pins=pins,
                                       cpus_per_trial=args.threads, storage=str(storage), experiment="overhead",
                                       checkpoint_every=args.checkpoint_every))
    done = time.perf_counter()
    watcher.stop()
    rows = _common.tune_results(outcome.experiment_dir)
    assert outcome.trials == 1 and outcome.errored == 0 and len(rows) == args.epochs, (outcome, len(rows))
    ray.shutdown()
    # CPU between the first and the last epoch the watcher saw: the epochs after the first mark's, up to the
    # last mark's (when the driver lags, two epochs' lines can land at once: only the span is reliable).
    first, last = (watcher.marks[0], watcher.marks[-1]) if watcher.marks else ((0, 0.0, 0.0), (0, 0.0, 0.0))
    return {"epoch_times": [r["time_this_iter_s"] for r in rows], "cpu_epochs": [first[0], last[0]],
            "worker_cpu": last[1] - first[1], "tree_cpu": last[2] - first[2], "import_s": imported - start,
            "ray_init_s": ray_ready - imported, "search_s": done - ray_ready,
            "test_auc": rows[-1]["test_auc"], "best_val_auc": rows[-1]["best_val_auc"]}


class _EpochCpu(threading.Thread):
    """Each time the trial's result.json gains a line (an epoch reported), record the CPU seconds so far
    of the trial's Ray worker and of this process with all its descendants (driver, Ray daemons,
    workers)."""

    def __init__(self, experiment_dir: Path) -> None:
        super().__init__(daemon=True)
        self.experiment_dir = experiment_dir
        self.marks: list[tuple[int, float, float]] = []  # (lines, worker cpu, tree cpu)
        self._stop_event = threading.Event()
        self._cpu: dict[int, float] = {}  # last CPU seen per pid, so ended processes still count

    def run(self) -> None:
        import psutil

        me, result_file, size, lines = psutil.Process(), None, 0, 0
        while not self._stop_event.wait(0.05):
            if result_file is None:
                found = list(self.experiment_dir.glob("*/result.json"))
                result_file = found[0] if found else None
                continue
            new_size = result_file.stat().st_size
            if new_size == size:
                continue
            size, new_lines = new_size, result_file.read_bytes().count(b"\n")
            if new_lines == lines:
                continue
            lines, worker = new_lines, 0.0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    cpu = times.user + times.system
                    if "ImplicitFunc" in " ".join(proc.cmdline()):
                        worker += cpu
                except psutil.Error:
                    continue
                self._cpu[proc.pid] = cpu
            self.marks.append((lines, worker, sum(self._cpu.values())))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def compare(args: argparse.Namespace) -> None:
    dataset = args.dataset
    if args.short:
        dataset = _common.small_breastmnist()
    arms = ["medtune", "tune-bare", "bare"]
    note(f"overhead: resnet18, {Path(dataset).name}, {args.image_size} px, batch {args.batch_size}, "
         f"{args.epochs} epochs, {args.threads} torch thread(s), {args.repetitions} repetition(s) of "
         f"{'/'.join(arms)}, order reversed every other repetition; {_common.machine()}")
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for rep, arm in abba(arms, args.repetitions):
        wall, stdout = run_python([str(Path(__file__).resolve()), "--arm", arm, "--dataset", dataset,
                                   "--epochs", str(args.epochs), "--image-size", str(args.image_size),
                                   "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                                   "--checkpoint-every", str(args.checkpoint_every)],
                                  env={"OMP_NUM_THREADS": str(args.threads)})
        result = {**last_json_line(stdout), "wall_s": wall, "rep": rep}
        runs[arm].append(result)
        note(f"rep {rep} {arm:9s}: {json.dumps({k: _round(v) for k, v in result.items()})}")

    def steady(run: dict, key: str, span: list[int] | None = None) -> float:
        """Sum over epochs 2..E, or over the epochs after span[0] up to span[1]."""
        first, last = span or (1, args.epochs)
        return sum(run[key][first:last])

    pairs = list(zip(runs["medtune"], runs["bare"], strict=True))
    end_to_end = median(m["wall_s"] / b["wall_s"] for m, b in pairs)
    per_epoch = median(steady(m, "epoch_times") / steady(b, "epoch_times") for m, b in pairs)
    first_epoch = median(m["epoch_times"][0] / b["epoch_times"][0] for m, b in pairs)
    bare_epoch = [median(b["epoch_times"][1:]) for _, b in pairs]
    fixed = median(((m["wall_s"] - sum(m["epoch_times"])) - (b["wall_s"] - sum(b["epoch_times"]))) / e
                   for (m, b), e in zip(pairs, bare_epoch, strict=True))
    ray_init = median(m["ray_init_s"] / e for (m, _), e in zip(pairs, bare_epoch, strict=True))
    epochs = f"epochs 2..{args.epochs}"
    figure("overhead.end_to_end_ratio", end_to_end, "<= 1.05", end_to_end <= 1.05,
           f"wall of a {args.epochs}-epoch medtune trial (Ray start, search, MLflow) / the bare loop's process")
    figure("overhead.per_epoch_ratio", per_epoch, "<= 1.05", per_epoch <= 1.05,
           f"wall of medtune {epochs} (train, val, test scoring, checkpoint, report) / bare {epochs} (train, val)")
    # The watcher may miss the last epoch's line (written as the search ends): compare as many epochs as it saw.
    cpu = [(m, b) for m, b in pairs if m["cpu_epochs"][1] > m["cpu_epochs"][0]]
    if cpu:
        worker_cpu = median(m["worker_cpu"] / steady(b, "epoch_cpu", m["cpu_epochs"]) for m, b in cpu)
        tree_cpu = median(m["tree_cpu"] / steady(b, "epoch_cpu", m["cpu_epochs"]) for m, b in cpu)
        figure("overhead.per_epoch_cpu_ratio_worker", worker_cpu, "<= 1.05", worker_cpu <= 1.05,
               "CPU seconds of the epochs after the first: the trial's Ray worker / the bare process")
        figure("overhead.per_epoch_cpu_ratio_all", tree_cpu, what=f"CPU seconds of {epochs}: all medtune "
               "processes (worker, driver with Tune and MLflow, Ray daemons) / the bare process")
    if "tune-bare" in runs:
        triples = list(zip(runs["medtune"], runs["tune-bare"], runs["bare"], strict=True))
        ray_share = median(steady(t, "epoch_times") / steady(b, "epoch_times") for _, t, b in triples)
        ours = median(steady(m, "epoch_times") / steady(t, "epoch_times") for m, t, _ in triples)
        ray_cpu = median(steady(t, "epoch_cpu") / steady(b, "epoch_cpu") for _, t, b in triples)
        ours_cpu = median(m["worker_cpu"] / steady(t, "epoch_cpu", m["cpu_epochs"])
                          for m, t, _ in triples if m["cpu_epochs"][1] > m["cpu_epochs"][0])
        figure("overhead.per_epoch_ratio_ray_alone", ray_share,
               what=f"wall of {epochs}: the bare loop as a Tune trainable (reports, no checkpoint) / the bare process")
        figure("overhead.per_epoch_ratio_medtune_over_tune", ours, "<= 1.03", ours <= 1.03,
               what=f"wall of {epochs}: medtune's trial / the bare loop as a Tune trainable (medtune's own share; "
                    f"checkpoint policy --checkpoint-every {args.checkpoint_every} --checkpoint-seconds 300)")
        figure("overhead.per_epoch_cpu_ratio_ray_alone", ray_cpu,
               what=f"CPU of {epochs}: the bare loop's Ray worker / the bare process")
        figure("overhead.per_epoch_cpu_ratio_medtune_over_tune", ours_cpu,
               what=f"CPU of {epochs}: medtune's trial worker / the bare loop's Ray worker")
    figure("overhead.first_epoch_ratio", first_epoch, what="medtune epoch 1 (incl. model build) / bare epoch 1")
    figure("overhead.fixed_cost_in_bare_epochs", fixed, fmt="{:.1f}",
           what="(medtune wall - its epochs) - (bare wall - its epochs), in bare epochs: imports, Ray, MLflow start-up")
    figure("overhead.ray_init_in_bare_epochs", ray_init, fmt="{:.1f}", what="ray.init() alone, in bare epochs")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


def profile(args: argparse.Namespace) -> None:
    """run_trial in this process with a LocalSession, each part of the epoch timed; then checkpoint
    saving with and without zip checksums, interleaved."""
    import contextlib
    import io

    import torch

    from tuner.data import load_dataset
    from tuner.training import checkpoint as checkpoint_module
    from tuner.training import trial as trial_module
    from tuner.training.session import LocalSession

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    spent: dict[str, float] = {}

    def timed(name, function, bucket=None):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                key = bucket(*a, **k) if bucket else name
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
        return wrapper

    def split_of(model, loader, *rest):
        return "validation pass" if len(loader.dataset) == len(data.val) else "test scoring"

    patches = {"train_one_epoch": timed("training pass", trial_module.train_one_epoch),
               "evaluate": timed("", trial_module.evaluate, split_of),
               "_prefixed": timed("metrics (sklearn)", trial_module._prefixed),
               "_cpu_state": timed("best-model copy", trial_module._cpu_state),
               "save_checkpoint": timed("checkpoint save", trial_module.save_checkpoint)}
    originals = {name: getattr(trial_module, name) for name in patches}
    session = LocalSession(_common.scratch_dir("medtune-profile-"))
    session.report = timed("checkpoint copy (LocalSession; Tune copies the same files)", session.report)
    config = {"backbone": "resnet18", "weights": "none", "head": "linear", "strategy": "ft", "optimizer": "sgd",
              "lr": LR, "momentum": MOMENTUM, "seed": SEED, "epochs": args.epochs, "batch_size": args.batch_size,
              "image_size": args.image_size, "augment": False}
    for name, patched in patches.items():
        setattr(trial_module, name, patched)
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            trial_module.run_trial(config, data, session)
        total = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(trial_module, name, original)
    train = spent["training pass"]
    note(f"profile: {args.epochs} epochs of run_trial in-process, {total:.1f} s; shares of the training pass's time:")
    keys = {"validation pass": "val_pass", "test scoring": "test_scoring", "metrics (sklearn)": "metrics",
            "best-model copy": "best_copy", "checkpoint save": "checkpoint_save"}
    for name, value in sorted(spent.items(), key=lambda kv: -kv[1]):
        if name != "training pass":
            key = keys.get(name, "checkpoint_copy")
            figure(f"overhead.profile.{key}_fraction", value / train, what=f"{name} / training pass, whole trial")
    other = total - sum(spent.values())
    figure("overhead.profile.other_fraction", other / train, what="the rest of run_trial (model build, loaders, ...)")

    model = trial_module.build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 28, 28)).sum().backward()
    optimizer.step()  # momentum buffers, as in a real checkpoint
    state = trial_module._cpu_state(model)
    with_crc: list[float] = []
    without_crc: list[float] = []
    for _, arm in abba(["crc", "no crc"], 6):
        context = contextlib.nullcontext if arm == "crc" else checkpoint_module._without_crc32
        original = checkpoint_module._without_crc32
        checkpoint_module._without_crc32 = context
        try:
            with tempfile.TemporaryDirectory(prefix="medtune-save-") as folder:
                start = time.perf_counter()
                checkpoint_module.save_checkpoint(Path(folder), model=model, optimizer=optimizer,
                                                  loader_generator=torch.Generator(),
                                                  progress=checkpoint_module.Progress(), best_model=state,
                                                  test_scores=None)
                (with_crc if arm == "crc" else without_crc).append(time.perf_counter() - start)
        finally:
            checkpoint_module._without_crc32 = original
    ratio = median(a / b for a, b in zip(with_crc, without_crc, strict=True))
    figure("overhead.profile.save_with_crc_vs_without", ratio, fmt="{:.2f}",
           what="save_checkpoint (model + SGD momentum + best model) with zip CRC32 / without (the fix)")


def _round(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="CI form: 2 epochs on a small subset, 1 repetition")
    parser.add_argument("--arm", choices=["bare", "tune-bare", "medtune"], help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=3, help="A/B/B/A repetitions (median of the ratios)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="medtune's --checkpoint-every (0, the default policy: no full state in a short trial)")
    parser.add_argument("--json", help="write every run's raw timings here")
    parser.add_argument("--profile", action="store_true", help="in-process breakdown of the per-epoch overhead")
    args = parser.parse_args()
    if args.arm:
        result = {"bare": bare_arm, "tune-bare": tune_bare_arm, "medtune": medtune_arm}[args.arm](args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.profile:
        profile(args)
        return
    if args.short:
        args.epochs, args.repetitions = 2, 1
    compare(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

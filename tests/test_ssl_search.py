"""The VAE study end to end with Ray Tune: a real ``ssl_vs_imagenet`` search on BreastMNIST images (ssl
vs random trunk vs scratch; with no ImageNet file here the arm is skipped with a note), every trial in
MLflow with its overfitting gaps; and ``medtune pretrain --search`` choosing its encoder by validation
ELBO."""

from __future__ import annotations

import json
import time

import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tuner.cli import main
from tuner.models import build_classifier
from tuner.pretrain import make_pretrain_config
from tuner.pretrain.train import train_vae
from tuner.search import SearchRequest, run_search


@pytest.fixture(scope="module")
def encoder(small_data, module_tmp_factory):
    """A ResNet-18 encoder pretrained for one epoch on the real-image subset (28 px)."""
    config = make_pretrain_config({"backbone": "resnet18", "image_size": 28, "latent_dim": 8, "decoder_width": 16,
                                   "epochs": 1, "batch_size": 32})
    snapshots = []
    train_vae(config, small_data, lambda metrics, snapshot: snapshots.append(snapshot))
    return snapshots[0].write(module_tmp_factory.mktemp("encoder"))


def test_ssl_random_trunk_and_scratch_search_logs_every_arm_with_gap_metrics(ray_local, small_npz, encoder,
                                                                             tmp_path, monkeypatch, capsys):
    from search_spaces import ssl_vs_imagenet

    monkeypatch.setenv("MEDTUNE_SSL_ENCODER", str(encoder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # certainly no ImageNet file
    ssl_vs_imagenet._shown.clear()
    started = time.time()
    outcome = run_search(SearchRequest(
        space="ssl_vs_imagenet", dataset=str(small_npz), search="grid", max_epochs=2, storage=str(tmp_path / "r"),
        experiment="ssl-vs-none", pins={"backbone": "resnet18", "image_size": 28}))
    seconds = time.time() - started
    err = capsys.readouterr().err
    assert "the ImageNet arm is skipped" in err and "runs as ssl vs random trunk vs scratch" in err
    assert "resnet18-" in err and ".pth does not exist" in err
    print(f"\nssl_vs_imagenet grid search (3 trials, 2 epochs, 28 px): {seconds:.0f} s")
    assert outcome.trials == 3 and outcome.errored == 0

    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("ssl-vs-none")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == outcome.parent_run_id]
    assert len(children) == 3
    arms = {(r.data.params["weights"], r.data.params["strategy"], r.data.params["unfreeze"]): r for r in children}
    # ssl and the random trunk: the paper's recipe (frozen except the final stage); scratch: everything trains
    assert set(arms) == {(f"ssl:{encoder}", "topk", "1"), ("none", "topk", "1"), ("none", "ft", "None")}
    trainable = {key[1]: arms[key].data.metrics["n_trainable_params"] for key in arms if key[0] == "none"}
    every = sum(p.numel() for p in build_classifier(backbone="resnet18", weights="none", head="mlp",
                                                    num_outputs=2).parameters())
    assert trainable["ft"] == every > trainable["topk"], (trainable, every)
    for run in children:
        params = run.data.params
        assert (params["head"], params["loss"]) == ("mlp", "focal")
        assert float(params["focal_gamma"]) == 2.0 and float(params["focal_alpha"]) == 0.25
        assert run.info.status == "FINISHED"
        for key in ("gap_acc", "gap_loss"):
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == int(run.data.metrics["epoch"]) >= 1, key
    # the ssl arm really started from the encoder: its model's frozen stem is the encoder's stem
    saved = torch.load(encoder, weights_only=True)
    model = build_classifier(backbone="resnet18", weights=f"ssl:{encoder}", head="mlp", num_outputs=2)
    assert torch.equal(model.trunk.conv1.weight, saved["conv1.weight"])


def test_pretrain_search_keeps_the_encoder_with_the_best_validation_elbo(ray_local, small_npz, tmp_path, capsys):
    storage = tmp_path / "results"
    code = main(["pretrain", "--search", "--dataset", str(small_npz), "--backbone", "resnet18", "--image-size", "28",
                 "--decoder-width", "16", "--epochs", "2", "--kl-warmup-epochs", "1", "--batch-size", "32",
                 "--num-samples", "2", "--storage", str(storage), "--experiment", "vae-search"])
    assert code == 0
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vae-search")
    runs = client.search_runs([experiment.experiment_id], max_results=20)
    (parent,) = [r for r in runs if r.data.tags.get("medtune.role") == "pretrain-search"]
    children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    best = min(children, key=lambda r: r.data.metrics["best_val_elbo"])
    for key in ("latent_dim", "beta", "lr"):
        assert parent.data.params[f"best_{key}"] == best.data.params[key]
    for run in children:  # logged by the search's trial logger, with the pretraining layout
        assert len(client.get_metric_history(run.info.run_id, "val_elbo")) == int(run.data.metrics["epoch"])
        assert {"beta", "train_recon", "train_kl", "val_elbo"} <= set(run.data.metrics)
        assert run.data.tags["medtune.role"] == "pretrain" and run.info.status == "FINISHED"
        assert run.data.tags["medtune.outcome"] in ("completed", "stopped_early")
        assert run.info.run_name.split("-", 1)[1].startswith(f"vae-z{run.data.params['latent_dim']}-")
        assert "reconstructions.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "encoder")} == {"encoder/encoder.pt",
                                                                                     "encoder/encoder.json"}
    meta = json.loads((storage / "vae-search" / "encoder.json").read_text())
    assert meta["latent_dim"] == int(best.data.params["latent_dim"])
    assert meta["val_elbo"] == pytest.approx(best.data.metrics["best_val_elbo"])
    out = capsys.readouterr().out
    assert f"weights=ssl:{parent.info.run_id}" in out


def test_pretrain_search_logging_survives_a_dead_tracking_store(tmp_path, capsys):
    """The pretraining search logs through the search's resilient logger: a store that fails pauses
    logging instead of failing the search."""
    from types import SimpleNamespace

    from tuner.pretrain.search import PRETRAIN_RUNS
    from tuner.tracking import MlflowTrialLogger

    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"not a database" * 100)
    logger = MlflowTrialLogger(f"sqlite:///{broken}", "0", "parent", {"dataset": "x"}, layout=PRETRAIN_RUNS)
    trial = SimpleNamespace(trial_id="t1", config={"latent_dim": 8, "beta": 1.0, "lr": 1e-3}, path=str(tmp_path))
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_result(0, [trial], trial, {"epoch": 1, "val_elbo": 1.0})
    assert logger.offline_since is not None
    assert "MLflow logging failed" in capsys.readouterr().err

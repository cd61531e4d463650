"""Stage I (VAE pretraining) and its encoder as stage II's starting weights (``weights=ssl:``): the KL
warm-up schedule, a likelihood that counts each grayscale pixel once, a real pretraining run on
BreastMNIST whose validation ELBO falls, MLflow logging, a bit-identical encoder round trip (ResNet-18
and ConvNeXt-Tiny), frozen stages that stay bit-identical through stage II, and bad input refused
before training."""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tuner.cli import main
from tuner.config import make_trial_config
from tuner.data import build_transform
from tuner.errors import ConfigError
from tuner.models import build_classifier, get_backbone
from tuner.pretrain import VAE, decoder_geometry, kl_beta, make_pretrain_config, vae_terms
from tuner.pretrain import train as pretrain_train
from tuner.pretrain import vae as pretrain_vae
from tuner.pretrain.train import train_vae
from tuner.pretrain.vae import image_channels, vae_batch_terms
from tuner.search import SearchRequest, prepare
from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

EPOCHS, WARMUP, BETA = 3, 2, 1.5
BATCH, N_TRAIN = 64, 546  # BreastMNIST's training split


# --- the schedule and the loss terms ------------------------------------------------------------------

def test_kl_warmup_is_linear_then_flat():
    assert [kl_beta(e, 2.0, 4) for e in range(1, 7)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [kl_beta(e, 1.5, 2) for e in (1, 2, 3)] == [0.75, 1.5, 1.5]
    assert [kl_beta(e, 0.7, 0) for e in (1, 2, 9)] == [0.7, 0.7, 0.7], "kl_warmup_epochs=0: no warm-up"
    assert [kl_beta(e, 3.0, 1) for e in (1, 2)] == [3.0, 3.0]
    assert kl_beta(3, 1.0, 7) == 3 / 7
    with pytest.raises(ValueError):
        kl_beta(0, 1.0, 4)


def test_loss_terms_are_the_bernoulli_nll_and_the_gaussian_kl():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    recon, kl = vae_terms(logits, target, mu, logvar)
    p = torch.sigmoid(logits)
    expected_recon = -(target * p.log() + (1 - target) * (1 - p).log()).sum((1, 2, 3)).mean()
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros(4, 5), torch.ones(4, 5))
    expected_kl = torch.distributions.kl_divergence(posterior, prior).sum(1).mean()
    assert recon.item() == pytest.approx(expected_recon.item(), rel=1e-5)
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-5)


def _bernoulli_nll(logits: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """-sum over every element of log Bernoulli(pixels | sigmoid(logits)), per image, batch mean."""
    p = torch.sigmoid(logits.double())
    x = pixels.double()
    return -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean()


def _vae_on(raw: np.ndarray, size: int = 28) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """An untrained VAE for ``raw``'s channels, the encoder's input of ``raw`` and a fixed noise."""
    torch.manual_seed(0)
    vae = VAE(get_backbone("resnet18"), latent_dim=3, image_size=size, decoder_width=16,
              channels=image_channels(raw)).eval()
    transform = build_transform(size, augment=False)
    return vae, torch.stack([transform(image) for image in raw]), torch.randn(len(raw), 3)


def test_the_loss_on_a_grayscale_image_counts_each_pixel_once():
    raw = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    vae, images, noise = _vae_on(raw)
    assert images.shape == (2, 3, 28, 28), "the encoder sees 3 (identical) channels"
    assert vae.channels == 1
    recon, kl = vae_batch_terms(vae, images, noise=noise)
    logits, mu, logvar = vae(images, noise=noise)
    assert logits.shape == (2, 1, 28, 28), "the decoder reconstructs the one grayscale channel"
    # by hand: one Bernoulli term per pixel of the raw image, H*W terms per image
    expected = _bernoulli_nll(logits[:, 0], torch.from_numpy(raw) / 255.0)
    assert recon.item() == pytest.approx(expected.item(), rel=1e-5)
    # a decoder that says p = 1/2 everywhere costs exactly ln 2 per pixel: 28*28*ln 2, not 3 times that
    for parameter in vae.decoder.out.parameters():
        torch.nn.init.zeros_(parameter)
    recon, _ = vae_batch_terms(vae, images, noise=noise)
    assert recon.item() == pytest.approx(28 * 28 * math.log(2), rel=1e-6)


def test_the_loss_on_a_colour_image_counts_every_channel():
    raw = np.random.default_rng(1).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    vae, images, noise = _vae_on(raw)
    assert vae.channels == 3
    recon, _ = vae_batch_terms(vae, images, noise=noise)
    logits, _, _ = vae(images, noise=noise)
    assert logits.shape == (2, 3, 28, 28)
    expected = _bernoulli_nll(logits, torch.from_numpy(raw).permute(0, 3, 1, 2) / 255.0)
    assert recon.item() == pytest.approx(expected.item(), rel=1e-5)


def test_image_channels_follow_the_data():
    assert image_channels(np.zeros((4, 8, 8), np.uint8)) == 1
    assert image_channels(np.zeros((4, 8, 8, 3), np.uint8)) == 3
    assert image_channels([np.zeros((8, 8), np.uint8), np.zeros((9, 7), np.uint8)]) == 1
    assert image_channels([np.zeros((8, 8), np.uint8), np.zeros((9, 7, 3), np.uint8)]) == 3
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(colour\\) channels, not 2"):
        VAE(get_backbone("resnet18"), latent_dim=3, image_size=28, decoder_width=16, channels=2)


@pytest.mark.parametrize(("size", "geometry"), [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (224, (7, 5)),
                                                (96, (6, 4)), (10, (5, 1))])
def test_decoder_reaches_its_sizes(size, geometry):
    assert decoder_geometry(size) == geometry
    vae = VAE(get_backbone("resnet18"), latent_dim=3, image_size=size, decoder_width=16)
    assert vae.decoder(torch.zeros(2, 3)).shape == (2, 3, size, size)
    gray = VAE(get_backbone("resnet18"), latent_dim=3, image_size=size, decoder_width=16, channels=1)
    assert gray.decoder(torch.zeros(2, 3)).shape == (2, 1, size, size)


@pytest.mark.parametrize(("size", "nearest"), [(30, "28 or 32"), (100, "96 or 112"), (36, "32 or 40"),
                                               (50, "48 or 56")])
def test_image_sizes_the_decoder_cannot_reach_are_refused_with_the_nearest(size, nearest):
    assert decoder_geometry(size) is None
    with pytest.raises(ConfigError, match=f"image_size={size} cannot be reached.*Nearest valid sizes: {nearest}"):
        make_pretrain_config({"backbone": "resnet18", "image_size": size})


@pytest.mark.parametrize(("values", "message"), [
    ({"latent_dim": 0}, "latent_dim=0 is out of range"),
    ({"latent_dim": -3}, "latent_dim=-3 is out of range"),
    ({"latent_dim": 2.5}, "latent_dim=2.5 must be of type int"),
    ({"beta": -1.0}, "beta=-1.0 is out of range"),
    ({"kl_warmup_epochs": -1}, "kl_warmup_epochs=-1 is out of range"),
    ({"backbone": "resnet19"}, "unknown backbone 'resnet19'"),
    ({"backbone": "convnext_tiny", "image_size": 28}, "image_size=28 is too small for convnext_tiny"),
    ({"latnt_dim": 8}, "unknown pretraining parameter 'latnt_dim'"),
])
def test_bad_pretraining_parameters_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        make_pretrain_config(values)


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_tiny"])
def test_encoder_is_the_classifiers_trunk(backbone):
    spec = get_backbone(backbone)
    vae = VAE(spec, latent_dim=4, image_size=32, decoder_width=16)
    trunk = build_classifier(backbone=backbone, weights="none", head="linear", num_outputs=2).trunk
    assert {k: v.shape for k, v in vae.encoder.state_dict().items()} == {k: v.shape for k, v in
                                                                         trunk.state_dict().items()}
    assert vae.mu.in_features == spec.feature_dim and vae.mu.out_features == 4
    logits, mu, logvar = vae.eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 3, 32, 32) and mu.shape == logvar.shape == (2, 4)


# --- a real pretraining run on BreastMNIST, through the CLI ------------------------------------------

@pytest.fixture(scope="module")
def pretrained(module_tmp_factory, breastmnist):
    """``medtune pretrain`` on all 546 BreastMNIST training images, 3 epochs at 28 px, recording the
    beta of every training batch's loss and the channels every reconstruction term was computed on."""
    storage = module_tmp_factory.mktemp("pretrain")
    betas, channels = [], set()
    original, original_terms = pretrain_train.vae_loss, pretrain_vae.vae_terms

    def spy(recon, kl, beta):
        betas.append(beta)
        return original(recon, kl, beta)

    def terms_spy(logits, target, mu, logvar):
        channels.add((logits.shape[1], target.shape[1]))
        return original_terms(logits, target, mu, logvar)

    started = time.time()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrain_train, "vae_loss", spy)
        patch.setattr(pretrain_vae, "vae_terms", terms_spy)
        code = main(["pretrain", "--dataset", "breastmnist", "--backbone", "resnet18", "--image-size", "28",
                     "--latent-dim", "16", "--decoder-width", "32", "--epochs", str(EPOCHS), "--kl-warmup-epochs",
                     str(WARMUP), "--beta", str(BETA), "--batch-size", str(BATCH), "--storage", str(storage),
                     "--experiment", "vae-breast"])
    seconds = time.time() - started
    assert code == 0
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae-breast")
    (run,) = client.search_runs([experiment.experiment_id])
    return {"storage": storage, "uri": uri, "client": client, "run": run, "betas": betas, "seconds": seconds,
            "channels": channels,
            "encoder": storage / "vae-breast" / "encoder.pt"}


def _history(client, run_id, key):
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_pretraining_applies_the_kl_warmup_exactly(pretrained):
    batches = math.ceil(N_TRAIN / BATCH)
    expected = [BETA * min(1.0, e / WARMUP) for e in range(1, EPOCHS + 1)]
    assert expected == [0.75, 1.5, 1.5]
    assert pretrained["betas"] == [b for b in expected for _ in range(batches)]
    client, run_id = pretrained["client"], pretrained["run"].info.run_id
    assert _history(client, run_id, "beta") == expected
    for beta, recon, kl, loss in zip(expected, *(_history(client, run_id, k) for k in
                                                 ("train_recon", "train_kl", "train_loss")), strict=True):
        assert loss == pytest.approx(recon + beta * kl, rel=1e-5)


def test_validation_elbo_falls_on_breastmnist(pretrained):
    client, run_id = pretrained["client"], pretrained["run"].info.run_id
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val_elbo"))
    assert steps == list(range(1, EPOCHS + 1))
    elbo = _history(client, run_id, "val_elbo")
    recon, kl = _history(client, run_id, "val_recon"), _history(client, run_id, "val_kl")
    assert all(e == pytest.approx(r + k, rel=1e-9) for e, r, k in zip(elbo, recon, kl, strict=True))
    print(f"\nBreastMNIST VAE (resnet18, 28 px, latent 16): val ELBO by epoch {[round(e, 1) for e in elbo]}; "
          f"{pretrained['seconds']:.0f} s")
    assert elbo[-1] < elbo[0], f"validation ELBO did not fall: {elbo}"


def test_run_logs_params_curves_reconstructions_and_the_encoder(pretrained):
    client, run = pretrained["client"], pretrained["run"]
    assert run.info.status == "FINISHED" and run.data.tags["medtune.role"] == "pretrain"
    params = run.data.params
    assert params["backbone"] == "resnet18" and params["latent_dim"] == "16" and params["dataset"] == "breastmnist"
    assert params["n_train_images"] == str(N_TRAIN)
    for key in ("train_recon", "train_kl", "train_elbo", "val_recon", "val_kl", "val_elbo", "beta"):
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS, key
    logged = {a.path: a for a in client.list_artifacts(run.info.run_id)}
    assert logged["reconstructions.png"].file_size > 1000
    assert {a.path for a in client.list_artifacts(run.info.run_id, "encoder")} == {"encoder/encoder.pt",
                                                                                  "encoder/encoder.json"}
    meta = json.loads(pretrained["encoder"].with_name("encoder.json").read_text())
    assert (meta["backbone"], meta["image_size"], meta["latent_dim"]) == ("resnet18", 28, 16)
    assert meta["channels"] == 1, "BreastMNIST is grayscale: the decoder reconstructs one channel"
    assert pretrained["channels"] == {(1, 1)}, "every reconstruction term was over the one grayscale channel"
    best_epoch = min(range(EPOCHS), key=lambda i: _history(client, run.info.run_id, "val_elbo")[i]) + 1
    assert meta["best_epoch"] == best_epoch


def test_saved_encoder_loads_into_a_classifier_bit_identical(pretrained, tmp_path, monkeypatch):
    saved = torch.load(pretrained["encoder"], map_location="cpu", weights_only=True)
    model = build_classifier(backbone="resnet18", weights=f"ssl:{pretrained['encoder']}", head="mlp",
                             num_outputs=2)
    trunk = model.trunk.state_dict()
    assert set(trunk) == set(saved)
    assert all(torch.equal(trunk[k], saved[k]) for k in saved), "a trunk tensor differs from the encoder"
    # by MLflow run id, through $MLFLOW_TRACKING_URI, downloaded into the weights cache
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pretrained["uri"])
    monkeypatch.setenv("MEDTUNE_WEIGHTS_DIR", str(tmp_path / "weights"))
    run_id = pretrained["run"].info.run_id
    by_run = build_classifier(backbone="resnet18", weights=f"ssl:{run_id}", head="linear", num_outputs=2)
    assert (tmp_path / "weights" / "ssl" / run_id / "encoder.pt").is_file()
    assert all(torch.equal(by_run.trunk.state_dict()[k], saved[k]) for k in saved)
    # and a folder holding encoder.pt
    by_folder = build_classifier(backbone="resnet18", weights=f"ssl:{pretrained['encoder'].parent}",
                                 head="linear", num_outputs=2)
    assert all(torch.equal(by_folder.trunk.state_dict()[k], saved[k]) for k in saved)


def test_frozen_stages_stay_bit_identical_through_stage_two(pretrained, small_data, tmp_path):
    encoder = torch.load(pretrained["encoder"], map_location="cpu", weights_only=True)
    config = {"backbone": "resnet18", "weights": f"ssl:{pretrained['encoder']}", "head": "mlp", "strategy": "topk",
              "unfreeze": 1, "loss": "focal", "focal_gamma": 2.0, "focal_alpha": 0.25, "optimizer": "adam",
              "lr": 1e-3, "image_size": 28, "batch_size": 32, "epochs": 2, "seed": 1}
    session = LocalSession(tmp_path)
    run_trial(config, small_data, session)
    assert [r["epoch"] for r in session.history] == [1, 2]
    assert all({"gap_acc", "gap_loss"} <= set(r) for r in session.history)
    trained = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    groups = get_backbone("resnet18").layer_groups()
    for index, paths in enumerate(groups.paths):
        keys = [k for k in encoder if any(k.startswith(p + ".") for p in paths)]
        assert keys, groups.names[index]
        same = [torch.equal(trained[f"trunk.{k}"], encoder[k]) for k in keys]
        if index < len(groups) - 1:
            assert all(same), f"frozen group {groups.names[index]} changed"
        else:
            assert not all(same), "the unfrozen last stage did not train"
    assert session.history[-1]["n_trainable_params"] == sum(
        v.numel() for k, v in trained.items() if k.startswith(("trunk.layer4.", "head.")) and v.is_floating_point()
        and "running_" not in k)


# --- ConvNeXt-Tiny (the paper's encoder) -------------------------------------------------------------

def test_convnext_tiny_pretrains_and_loads_bit_identical(small_data, tmp_path):
    config = make_pretrain_config({"backbone": "convnext_tiny", "image_size": 32, "latent_dim": 8,
                                   "decoder_width": 16, "epochs": 1, "batch_size": 32})
    snapshots = []
    history = train_vae(config, small_data, lambda metrics, snapshot: snapshots.append(snapshot))
    assert len(history) == 1 and snapshots[0] is not None and math.isfinite(history[0]["val_elbo"])
    path = snapshots[0].write(tmp_path / "cnx")
    assert (tmp_path / "cnx" / "reconstructions.png").is_file()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_classifier(backbone="convnext_tiny", weights=f"ssl:{path}", head="mlp", num_outputs=2)
    trunk = model.trunk.state_dict()
    assert set(trunk) == set(saved) and all(torch.equal(trunk[k], saved[k]) for k in saved)
    assert any(k.startswith("classifier.0.") for k in saved), "ConvNeXt's final LayerNorm belongs to the trunk"
    with pytest.raises(ConfigError, match="pretrained with backbone 'convnext_tiny'.*requested backbone is 'resnet18'"):
        build_classifier(backbone="resnet18", weights=f"ssl:{path}", head="mlp", num_outputs=2)


# --- bad input, refused before training --------------------------------------------------------------

def _prepare(weights, backbone="resnet18"):
    return prepare(SearchRequest(space="ssl_vs_imagenet", dataset="breastmnist",
                                 pins={"weights": weights, "backbone": backbone, "image_size": 32}))


def test_missing_ssl_reference_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"weights=ssl:/nonexistent/encoder.pt: the SSL encoder "
                                          r"'/nonexistent/encoder.pt' does not exist"):
        _prepare("ssl:/nonexistent/encoder.pt")
    with pytest.raises(ConfigError, match="holds no encoder.pt"):
        _prepare(f"ssl:{tmp_path}")
    with pytest.raises(ConfigError, match="names no SSL encoder"):
        make_trial_config({"backbone": "resnet18", "weights": "ssl:"})
    run_id = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("MEDTUNE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=f"ssl:{run_id} looks like an MLflow run id, but .MLFLOW_TRACKING_URI"):
        _prepare(f"ssl:{run_id}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError, match=f"MLflow run {run_id} does not exist in the tracking store {uri}"):
        _prepare(f"ssl:{run_id}")


def test_encoder_of_another_backbone_is_refused(pretrained, tmp_path):
    with pytest.raises(ConfigError, match="pretrained with backbone 'resnet18'.*requested backbone is 'resnet50'"):
        _prepare(f"ssl:{pretrained['encoder']}", backbone="resnet50")
    # without its encoder.json: the key check names the requested backbone and what does not fit
    bare = tmp_path / "bare.pt"
    shutil.copy(pretrained["encoder"], bare)
    with pytest.raises(ConfigError, match=r"backbone unknown: no bare.json beside it\) does not fit the requested "
                                          r"backbone 'convnext_tiny': \d+ trunk tensors missing"):
        _prepare(f"ssl:{bare}", backbone="convnext_tiny")
    # its json says resnet18, but a tensor was tampered with: the shapes are checked too
    state = torch.load(pretrained["encoder"], weights_only=True)
    state["layer4.1.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "encoder.pt")
    shutil.copy(pretrained["encoder"].with_name("encoder.json"), tmp_path / "encoder.json")
    with pytest.raises(ConfigError, match=r"pretrained with backbone 'resnet18'\) does not fit the requested backbone "
                                          r"'resnet18': 1 with the wrong shape \(e.g. layer4.1.conv2.weight"):
        _prepare(f"ssl:{tmp_path / 'encoder.pt'}")


@pytest.mark.parametrize(("args", "message"), [
    (["--latent-dim", "0"], "latent_dim=0 is out of range"),
    (["--image-size", "30", "--backbone", "resnet18"], "image_size=30 cannot be reached by the VAE decoder"),
    (["--backbone", "resnet19"], "unknown backbone 'resnet19'"),
])
def test_cli_refuses_bad_input_before_training(args, message, tmp_path, capsys):
    storage = tmp_path / "never"
    assert main(["pretrain", "--dataset", "breastmnist", *args, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medtune: error:") and message in err
    assert not storage.exists(), "nothing may be created for refused input"

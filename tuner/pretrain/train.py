"""Stage I's training loop: the VAE on the training split's images (never its labels), the validation
ELBO on the validation split each epoch, and a snapshot of the encoder whenever that improves. The
decoder reconstructs the data's own channels (``image_channels``: 1 for a grayscale data set), so the
ELBO counts each pixel once.

The loop reports through a callback, so the same code runs in-process (``medtune pretrain``, which
logs to MLflow) and as a Ray Tune trial (``medtune pretrain --search``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tuner.data import DatasetSplits, build_transform
from tuner.models import get_backbone
from tuner.pretrain.encoder import save_encoder
from tuner.pretrain.vae import VAE, image_channels, kl_beta, reconstruction_target, vae_batch_terms, vae_loss
from tuner.strategies import cosine_learning_rate

RECONSTRUCTIONS_FILE = "reconstructions.png"
N_RECONSTRUCTIONS = 8
EPOCH_METRICS = ("epoch", "lr", "beta", "train_recon", "train_kl", "train_loss", "train_elbo", "val_recon", "val_kl",
                 "val_loss", "val_elbo", "best_val_elbo", "best_epoch")


class ImagesOnly(torch.utils.data.Dataset):
    """A split's images through ``transform``; its labels are never read."""

    def __init__(self, images: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


@dataclass
class Snapshot:
    """The encoder at the best validation ELBO so far, its description, and sample reconstructions."""

    encoder_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    reconstructions: np.ndarray  # (H, W, 3) uint8: originals above, reconstructions below (gray as RGB)

    def write(self, folder: Path) -> Path:
        """``encoder.pt``, ``encoder.json`` and ``reconstructions.png`` into ``folder``."""
        path = save_encoder(folder, self.encoder_state, self.meta)
        Image.fromarray(self.reconstructions).save(folder / RECONSTRUCTIONS_FILE)
        return path


EpochCallback = Callable[[dict[str, float], Snapshot | None], None]


def train_vae(config: dict[str, Any], data: DatasetSplits, on_epoch: EpochCallback) -> list[dict[str, float]]:
    """Train for ``config["epochs"]`` epochs (``config`` from ``make_pretrain_config``); ``on_epoch``
    gets each epoch's metrics and, when the validation ELBO improved, the new best snapshot."""
    _seed_everything(config["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = get_backbone(config["backbone"])
    channels = image_channels(data.train.images)
    vae = VAE(spec, latent_dim=config["latent_dim"], image_size=config["image_size"],
              decoder_width=config["decoder_width"], channels=channels).to(device)
    size, batch = config["image_size"], config["batch_size"]
    train_set = ImagesOnly(data.train.images, build_transform(size, augment=config["augment"]))
    val_set = ImagesOnly(data.val.images, build_transform(size, augment=False))
    generator = torch.Generator().manual_seed(config["seed"])
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch, shuffle=True, generator=generator,
                                               drop_last=len(train_set) % batch == 1)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=max(batch, 128))
    samples = torch.stack([val_set[i] for i in range(min(N_RECONSTRUCTIONS, len(val_set)))])
    optimizer = torch.optim.Adam(vae.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])

    history: list[dict[str, float]] = []
    best_elbo, best_epoch = float("inf"), 0
    for epoch in range(1, config["epochs"] + 1):
        beta = kl_beta(epoch, config["beta"], config["kl_warmup_epochs"])
        lr = cosine_learning_rate(config["lr"], epoch, config["epochs"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        train = _train_epoch(vae, train_loader, optimizer, beta, device)
        val = _validate(vae, val_loader, config, device)
        improved = val["recon"] + val["kl"] < best_elbo
        if improved:
            best_elbo, best_epoch = val["recon"] + val["kl"], epoch
        metrics = {
            "epoch": epoch, "lr": lr, "beta": beta,
            "train_recon": train["recon"], "train_kl": train["kl"], "train_loss": train["loss"],
            "train_elbo": train["recon"] + train["kl"],
            "val_recon": val["recon"], "val_kl": val["kl"], "val_loss": val["recon"] + beta * val["kl"],
            "val_elbo": val["recon"] + val["kl"], "best_val_elbo": best_elbo, "best_epoch": best_epoch,
        }
        history.append(metrics)
        snapshot = None
        if improved:
            meta = {"backbone": spec.name, "image_size": size, "latent_dim": config["latent_dim"],
                    "dataset": data.name, "best_epoch": epoch, "val_elbo": metrics["val_elbo"],
                    "config": config, "input": "3-channel, ImageNet-normalised (tuner.data.build_transform)",
                    "channels": channels,
                    "reconstruction": f"[0, 1] image in {channels} channel(s), Bernoulli logits"}
            snapshot = Snapshot({k: v.detach().cpu().clone() for k, v in vae.encoder.state_dict().items()},
                                meta, reconstruction_grid(vae, samples, device))
        on_epoch(metrics, snapshot)
    return history


def _train_epoch(vae: VAE, loader, optimizer, beta: float, device: torch.device) -> dict[str, float]:
    vae.train()
    sums, count = {"recon": 0.0, "kl": 0.0, "loss": 0.0}, 0
    for images in loader:
        images = images.to(device)
        recon, kl = vae_batch_terms(vae, images)
        loss = vae_loss(recon, kl, beta)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"VAE training loss became {loss.item()} (recon {recon.item()}, kl "
                                     f"{kl.item()}): lower the learning rate or beta.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(images)
        count += n
        for key, value in (("recon", recon), ("kl", kl), ("loss", loss)):
            sums[key] += value.item() * n
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def _validate(vae: VAE, loader, config: dict[str, Any], device: torch.device) -> dict[str, float]:
    """The validation terms with the same noise every epoch (a fixed generator), so epochs compare
    without sampling noise between them."""
    vae.eval()
    noise_source = torch.Generator().manual_seed(config["seed"] + 1)
    sums, count = {"recon": 0.0, "kl": 0.0}, 0
    for images in loader:
        images = images.to(device)
        noise = torch.randn(len(images), config["latent_dim"], generator=noise_source).to(device)
        recon, kl = vae_batch_terms(vae, images, noise=noise)
        count += len(images)
        sums["recon"] += recon.item() * len(images)
        sums["kl"] += kl.item() * len(images)
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def reconstruction_grid(vae: VAE, images: torch.Tensor, device: torch.device, min_tile: int = 64) -> np.ndarray:
    """Originals (top row) and their reconstructions from the posterior mean (bottom row), uint8 RGB
    (a grayscale reconstruction shown in its 3 identical channels)."""
    was_training = vae.training
    vae.eval()
    mu, _ = vae.encode(images.to(device))
    recon = torch.sigmoid(vae.decoder(mu)).cpu().expand(-1, 3, -1, -1)
    vae.train(was_training)
    originals = reconstruction_target(images.cpu(), vae.channels).expand(-1, 3, -1, -1)
    rows = [torch.cat(list(originals), dim=2), torch.cat(list(recon), dim=2)]
    grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    scale = max(1, -(-min_tile // images.shape[-1]))
    return np.ascontiguousarray(grid.repeat(scale, axis=0).repeat(scale, axis=1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

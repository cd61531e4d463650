"""The VAE of in-domain self-supervised pretraining: a registry backbone's trunk as the encoder, a
``latent_dim`` Gaussian latent, and a decoder of transposed convolutions back to the input size.

**Encoder.** The trunk is built from the registry exactly as ``build_classifier`` builds it (the
torchvision model with its classifier replaced by ``nn.Identity``), so its state dict has the keys a
classifier's trunk has and loads into one unchanged. ``mu`` and ``logvar`` are linear layers on the
trunk's feature vector (``spec.feature_dim`` long).

**Input and output spaces.** The encoder sees exactly what the stage-II classifier will see: the
training pipeline's ``build_transform`` output (3 channels, ImageNet-normalised; a grayscale image is
repeated to 3 channels). The decoder reconstructs the *unnormalised* image in [0, 1] with the data's own
channels: 3 for colour data, 1 for grayscale data (``image_channels``), so that each pixel of a grayscale
image enters the likelihood once and not three times through its three identical copies. It outputs
logits, and the reconstruction term is the Bernoulli negative log-likelihood of the [0, 1] intensities
(binary cross-entropy with logits), summed over channels and pixels: ``H*W`` terms per grayscale image,
``3*H*W`` per colour image. Reconstructions are ``sigmoid(logits)``.

**Decoder geometry.** A linear layer maps z to a ``b x b`` grid of ``decoder_width`` channels; each
of ``k`` transposed convolutions (kernel 4, stride 2, padding 1; then BatchNorm and ReLU) doubles the
grid and halves the channels (never below 16); a 3x3 convolution gives the 1 or 3 output channels. So
``image_size`` must be ``b * 2**k`` with ``b`` in 4..7 and ``k >= 1``: 8, 10, 12, 14, 16, 20, 24, 28,
32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, ... Other sizes are refused with the nearest
valid ones.

**Loss (per image, averaged over the batch).** ``recon`` = summed BCE as above; ``kl`` =
KL(q(z|x) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - exp(logvar)); the training objective at epoch
``e`` is ``recon + beta_e * kl`` with the linear warm-up ``beta_e = beta * min(1, e / W)`` (epochs
1-based, ``W = kl_warmup_epochs``; ``W = 0`` means no warm-up). ``elbo`` denotes the negative ELBO
``recon + kl`` (beta = 1, in nats per image): the quantity validation reports and a search
minimises, comparable across epochs and across beta values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from tuner.errors import ConfigError
from tuner.models.registry import BackboneSpec
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing

DECODER_BASES = (4, 5, 6, 7)  # the side of the decoder's first grid
MIN_DECODER_CHANNELS = 16
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite early in training
IMAGE_CHANNELS = (1, 3)  # grayscale or colour: what ``tuner.data`` decodes
# The encoder's input space: ``build_transform``'s default normalisation, the one stage II applies to
# the classifier's images, so an ``ssl:`` trunk sees images as it did in pretraining.
INPUT_PREPROCESSING: Preprocessing = IMAGENET_PREPROCESSING


def build_trunk(spec: BackboneSpec) -> nn.Module:
    """The trunk exactly as ``tuner.models.classifier.build_classifier`` builds it."""
    trunk = spec.build(weights=None)
    trunk.set_submodule(spec.classifier_attr, nn.Identity())
    return trunk


def decoder_geometry(image_size: int) -> tuple[int, int] | None:
    """``(b, k)`` with ``image_size == b * 2**k``, ``b`` in 4..7 and ``k >= 1``; None if there is none."""
    if not isinstance(image_size, int) or image_size < 1:
        return None
    side, steps = image_size, 0
    while side > max(DECODER_BASES) and side % 2 == 0:
        side, steps = side // 2, steps + 1
    return (side, steps) if side in DECODER_BASES and steps >= 1 else None


def nearest_decodable_sizes(image_size: int) -> tuple[int | None, int]:
    """The largest valid size below ``image_size`` (None if there is none) and the smallest above."""
    below = next((s for s in range(image_size - 1, 0, -1) if decoder_geometry(s)), None)
    above = next(s for s in range(image_size + 1, 2 * image_size + 16) if decoder_geometry(s))
    return below, above


def check_decodable(image_size: int) -> tuple[int, int]:
    """The decoder's ``(b, k)`` for ``image_size``; a size it cannot reach is refused, naming the
    nearest sizes it can (checked with the config, before any data is read)."""
    geometry = decoder_geometry(image_size)
    if geometry is None:
        below, above = nearest_decodable_sizes(max(int(image_size), 1))
        nearest = f"{below} or {above}" if below is not None else str(above)
        raise ConfigError(
            f"image_size={image_size} cannot be reached by the VAE decoder: it starts from a b x b grid "
            f"(b = 4..7) and doubles it, so image_size must be b * 2**k (e.g. 28, 32, 64, 128, 224). "
            f"Nearest valid sizes: {nearest}.")
    return geometry


def image_channels(images: np.ndarray | Sequence[np.ndarray]) -> int:
    """The channels the decoder reconstructs for a split's images: 1 when every image is (H, W)
    grayscale, else 3 (colour, (H, W, 3)). The encoder's 3 input channels of a grayscale image are
    copies of one, and a likelihood over the copies would count each pixel three times."""
    if isinstance(images, np.ndarray):
        return 1 if images.ndim == 3 else 3
    return 1 if all(np.ndim(image) == 2 for image in images) else 3


def reconstruction_target(images: torch.Tensor, channels: int) -> torch.Tensor:
    """The encoder's normalised (N, 3, H, W) input back to the [0, 1] image the decoder reconstructs:
    all 3 channels of colour data, the first of a grayscale image's 3 identical ones (``channels=1``)."""
    mean = torch.tensor(INPUT_PREPROCESSING.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_PREPROCESSING.std, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)[:, :channels]


class Decoder(nn.Module):
    """z to the logits of a ``channels``-channel ``image_size`` image (the geometry in the module
    docstring)."""

    def __init__(self, latent_dim: int, image_size: int, width: int, channels: int = 3) -> None:
        super().__init__()
        if channels not in IMAGE_CHANNELS:
            raise ValueError(f"the decoder reconstructs 1 (grayscale) or 3 (colour) channels, not {channels}")
        self.base, steps = check_decodable(image_size)
        widths = [max(MIN_DECODER_CHANNELS, width >> i) for i in range(steps + 1)]
        self.channels0 = widths[0]
        self.fc = nn.Linear(latent_dim, widths[0] * self.base * self.base)
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            blocks += [nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(widths[-1], channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = functional.relu(self.fc(z)).view(-1, self.channels0, self.base, self.base)
        return self.out(self.up(grid))  # logits of the [0, 1] image


class VAE(nn.Module):
    """``encoder`` is the backbone's trunk; ``forward`` returns (reconstruction logits, mu, logvar).
    ``channels`` is what the decoder reconstructs: ``image_channels`` of the data (1 for grayscale)."""

    def __init__(self, spec: BackboneSpec, *, latent_dim: int, image_size: int, decoder_width: int,
                 channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        self.channels = channels
        self.encoder = build_trunk(spec)
        self.mu = nn.Linear(spec.feature_dim, latent_dim)
        self.logvar = nn.Linear(spec.feature_dim, latent_dim)
        self.decoder = Decoder(latent_dim, image_size, decoder_width, channels)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's ``mu`` and ``logvar`` (clamped, so ``exp`` stays finite early in training)."""
        features = self.encoder(images)
        return self.mu(features), self.logvar(features).clamp(*LOGVAR_RANGE)

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``noise`` (standard normal, shaped like mu) makes the sample reproducible; else it is drawn."""
        mu, logvar = self.encode(images)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def kl_beta(epoch: int, beta: float, kl_warmup_epochs: int) -> float:
    """The KL weight of (1-based) ``epoch``: ``beta * min(1, epoch / kl_warmup_epochs)``; ``beta`` from
    the first epoch when ``kl_warmup_epochs`` is 0."""
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    if kl_warmup_epochs <= 0:
        return float(beta)
    return float(beta) * min(1.0, epoch / kl_warmup_epochs)


def vae_terms(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction NLL (summed BCE on [0, 1] targets) and KL to N(0, I), batch means."""
    recon = functional.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return recon.mean(), kl.mean()


def vae_batch_terms(vae: VAE, images: torch.Tensor, noise: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``vae_terms`` of a batch of the encoder's normalised input, as training and validation compute
    them: the reconstruction is scored against the [0, 1] image in the VAE's ``channels`` (so a
    grayscale pixel is one Bernoulli term). ``noise`` as in ``VAE.forward``."""
    logits, mu, logvar = vae(images, noise=noise)
    return vae_terms(logits, reconstruction_target(images, vae.channels), mu, logvar)


def vae_loss(recon: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """The training objective: ``recon + beta * kl`` (beta from ``kl_beta``)."""
    return recon + beta * kl

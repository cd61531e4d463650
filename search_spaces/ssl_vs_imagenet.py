"""The VAE study (Matas et al., arXiv 2505.16773, "Mitigating Overfitting in Medical Imaging:
Self-Supervised Pretraining vs. ImageNet Transfer Learning"): the same classifier started from an
in-domain self-supervised encoder (``ssl:``), from ImageNet, or from random weights, with the paper's
stage-II recipe; and, as the comparison the paper calls for but does not run, trained from scratch.

The arms, each a (``weights``, ``strategy``) pair:

- ``ssl:<encoder>`` / ``topk`` and ``imagenet`` / ``topk``: the paper's recipe on a pretrained encoder;
- ``none`` / ``topk``, the *random trunk*: the same recipe on a randomly initialised encoder, frozen
  except its final stage. A control, not training from scratch: it measures what the final stage and
  the head learn on random features, so the pretrained arms' coefficients are what pretraining adds;
- ``none`` / ``ft``, *from scratch*: random weights and the whole network trains (no ``unfreeze``).

Stage II (the paper's recipe): ConvNeXt-Tiny, the encoder frozen except its final stage
(``strategy=topk``, ``unfreeze=1``), an MLP head, focal loss with ``focal_gamma`` and ``focal_alpha``
searched, Adam, 50 epochs (the paper trains 30-70; ``--max-epochs`` changes it). Each arm (``ARMS``:
the ``weights`` x ``strategy`` cells above) gets the same number of trials; seeds repeat the chosen
configurations in the confirmation stage (``medtune confirm --seeds N``).
The trial reports the overfitting gaps ``gap_acc`` (train - val accuracy) and ``gap_loss`` (val -
train loss) each epoch.

The ``ssl`` arm's encoder comes from ``medtune pretrain`` (stage I). Name it with
``$MEDTUNE_SSL_ENCODER`` (the ``encoder.pt`` path, its folder, or the MLflow run id), or pin the arms
yourself: ``--set "weights=['ssl:/path/encoder.pt','none']"``. The encoder must have been pretrained
with the study's backbone (``--set backbone=resnet18`` to match a ResNet-18 encoder; its image size
too, e.g. ``--set image_size=32``). The ImageNet arm needs the backbone's ImageNet file in
``$TORCH_HOME/hub/checkpoints/``; when it is absent (an offline machine) the arm is skipped with a
printed note and the study runs as ssl vs random trunk vs scratch. A multi-class data set needs
``--set focal_alpha=None`` (alpha weighs a positive class against a negative one).
"""

from __future__ import annotations

import os
import sys

from search_spaces import Space
from tuner.models import get_backbone
from tuner.models.weights import imagenet_file
from tuner.weight_sources import SSL_PREFIX

SSL_ENCODER_ENV = "MEDTUNE_SSL_ENCODER"

ARMS = ("weights", "strategy")  # weights=none is two arms: the random trunk (topk) and scratch (ft)

# The two arms of random weights, by their strategy, in words.
RANDOM_WEIGHT_ARMS = {"topk": "random trunk", "ft": "scratch"}

# weights=none + strategy=topk (the random trunk) is the reference: each weights coefficient is that
# start against random weights under the same recipe; the ft coefficient is scratch against the random trunk.
ANALYSIS = {
    "formula": "test_auc ~ C(weights, Treatment('none')) + C(strategy, Treatment('topk')) + log10_lr",
    "x": "weights",
    "compare": ["weights", "strategy"],
}

_shown: set[str] = set()


def note(message: str) -> None:
    """Print a note once per process (``define`` runs for every grid point and every sampled trial)."""
    if message not in _shown:
        _shown.add(message)
        print(f"medtune: note: {message}", file=sys.stderr, flush=True)


def weights_arms(backbone: str) -> list[str]:
    """``ssl:<$MEDTUNE_SSL_ENCODER>`` if set, ``imagenet`` if its file is here, and ``none`` (random
    weights: two arms in ``define``, the random trunk and scratch)."""
    arms = []
    encoder = os.environ.get(SSL_ENCODER_ENV, "").strip()
    if encoder:
        arms.append(encoder if encoder.startswith(SSL_PREFIX) else SSL_PREFIX + encoder)
    else:
        note(f"ssl_vs_imagenet: no SSL encoder given, so the ssl arm is skipped. Pretrain one (medtune pretrain "
             f"--backbone {backbone} ...) and set ${SSL_ENCODER_ENV} to its encoder.pt (or MLflow run id), or pass "
             "--set \"weights=['ssl:/path/encoder.pt','none']\".")
    spec = get_backbone(backbone)
    path = imagenet_file(spec) if spec.imagenet_weights is not None else None
    if path is None:
        note(f"ssl_vs_imagenet: the ImageNet arm is skipped: no ImageNet weights exist for {backbone}.")
    elif path.is_file():
        arms.append("imagenet")
    else:
        runs_as = " vs ".join(["ssl"] * bool(encoder) + list(RANDOM_WEIGHT_ARMS.values()))
        note(f"ssl_vs_imagenet: the ImageNet arm is skipped: ImageNet weights for {backbone} are not on this "
             f"machine ({path} does not exist), so the study runs as {runs_as}. To include it, put {path.name} "
             f"(from {spec.imagenet_weights.url}) there, or name the arms yourself with "
             "--set \"weights=[...,'imagenet']\" to have it downloaded.")
    arms.append("none")
    return arms


def define(s: Space) -> dict:
    backbone = s.constant("backbone", "convnext_tiny")
    weights = s.choice("weights", weights_arms(backbone) if "weights" not in s.pins else ["none"])
    # random weights are two arms (the random trunk, scratch); pretrained weights get the paper's recipe
    strategy = (s.choice("strategy", list(RANDOM_WEIGHT_ARMS)) if weights == "none"
                else s.constant("strategy", "topk"))
    s.float("lr", 1e-4, 1e-2, log=True, grid=[1e-3])
    s.float("focal_gamma", 0.0, 5.0, grid=[2.0])
    s.float("focal_alpha", 0.1, 0.9, grid=[0.25])
    s.float("dropout", 0.0, 0.5, grid=[0.2])
    return {
        "unfreeze": 1 if strategy == "topk" else None,  # topk: frozen except the final stage; ft: all trains
        "head": "mlp",
        "loss": "focal",
        "optimizer": "adam",
        "weight_decay": 1e-4,
        "epochs": 50,
        "batch_size": 32,
        "image_size": 64,
        "augment": False,
    }

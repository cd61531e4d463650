"""An ensemble to take away: its members' best-validation weights, configs and preprocessing in one
folder, and the module that averages their class probabilities on raw images.

``export_ensemble`` copies each member trial's ``best_model.pt`` (from the Tune checkpoint whose test
scores are those the analysis read) with the trial's completed config and the preprocessing its
starting weights expect, and writes a manifest (``ensemble.json``). ``load_ensemble`` rebuilds each
member (``weights=none``: the architecture only, then its own saved weights, so neither the starting
weights' file nor a download is needed) and returns an ``EnsembleModel``: raw uint8 images in (as a
data set's split holds them: (H, W) grayscale or (H, W, 3)), each member's own resize and normalisation
applied, class probabilities averaged out, exactly as each trial scored its test split.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tuner.config import make_trial_config
from tuner.data import build_transform
from tuner.data.transforms import ImageTransform
from tuner.errors import ConfigError
from tuner.models import HEADS, build_classifier, get_backbone
from tuner.models.weights import StateDictFile
from tuner.schema import TEST_SCORES_FILE
from tuner.spec import Preprocessing
from tuner.training.checkpoint import BEST_MODEL_FILE
from tuner.training.inputs import applied_preprocessing
from tuner.training.losses import probabilities
from tuner.weight_sources import find_weight_source, preprocessing_for

MANIFEST_FILE = "ensemble.json"
FORMAT = 1


class EnsembleModel(nn.Module):
    """The mean of its members' class probabilities (softmax; per-label sigmoid for multi-label tasks),
    each member seeing the image through its own transform."""

    def __init__(self, members: Sequence[nn.Module], transforms: Sequence[ImageTransform], task: str,
                 names: Sequence[str] = ()) -> None:
        super().__init__()
        if not members or len(members) != len(transforms):
            raise ValueError("an ensemble needs at least one member and one transform per member")
        self.members = nn.ModuleList(members)
        self.transforms = list(transforms)
        self.task = task
        self.names = list(names)

    @torch.no_grad()
    def forward(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, C) mean class probabilities of N raw uint8 images, in eval mode."""
        self.eval()
        device = next(self.parameters()).device
        total = None
        for member, transform in zip(self.members, self.transforms, strict=True):
            batch = torch.stack([transform(np.asarray(image)) for image in images]).to(device)
            probs = probabilities(member(batch).float(), self.task)
            total = probs if total is None else total + probs
        return total / len(self.members)

    def predict_proba(self, images: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """``forward`` over ``images`` in batches, as a float64 (N, C) array."""
        parts = [self(images[start:start + batch_size]).cpu().numpy() for start in range(0, len(images), batch_size)]
        return np.concatenate(parts).astype(np.float64)


def best_weights(trial_dir: Path) -> Path:
    """The ``best_model.pt`` of the model whose test scores the trial ended with: the newest checkpoint's
    scores (what the analysis reads) are the truth, and the weights come from the newest checkpoint that
    holds weights *and* those same scores. A trial stopped (by ASHA) after a scores-only checkpoint kept
    no weights of its best epoch; it is refused, with what to do, rather than exported with other weights."""
    checkpoints = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name, reverse=True)
    if not checkpoints or not (checkpoints[0] / TEST_SCORES_FILE).is_file():
        raise ConfigError(f"trial folder {trial_dir} holds no checkpoint with test scores: the ensemble needs each "
                          "member's Tune folder (run it on the machine and with the --storage the search wrote).")
    scores = (checkpoints[0] / TEST_SCORES_FILE).read_bytes()
    for checkpoint in checkpoints:
        files = checkpoint / BEST_MODEL_FILE, checkpoint / TEST_SCORES_FILE
        if all(f.is_file() for f in files) and files[1].read_bytes() == scores:
            return files[0]
    raise ConfigError(f"trial {trial_dir.name} kept no weights of its best epoch (it was stopped after a checkpoint "
                      "of scores alone), so its model cannot be taken away. Search with checkpoints every epoch "
                      "(medtune tune --checkpoint-every 1), or, for `medtune ensemble`, give a smaller --k.")


def trial_config(trial_dir: Path) -> dict[str, Any]:
    """The trial's config as Tune recorded it (``params.json``), completed with every default."""
    path = trial_dir / "params.json"
    if not path.is_file():
        raise ConfigError(f"trial folder {trial_dir} has no params.json: it is not a Tune trial folder of a search.")
    return make_trial_config(json.loads(path.read_text()))


def member_preprocessing(config: Mapping[str, Any]) -> Preprocessing:
    """What the member's starting weights expect; a file whose recorded preprocessing is gone is refused,
    since guessing would feed the member images unlike those it was trained on."""
    spec = get_backbone(config["backbone"])
    weights = config["weights"]
    if isinstance(find_weight_source(spec, weights), StateDictFile) and not Path(weights).expanduser().is_file():
        raise ConfigError(f"the member started from weights file {weights}, which no longer exists, so the "
                          "preprocessing recorded beside it cannot be read; restore the file (and its .json) there.")
    return preprocessing_for(spec, weights)


def export_ensemble(trial_dirs: Sequence[str | Path], names: Sequence[str], out: str | Path, *, task: str,
                    num_outputs: int, about: Mapping[str, Any] | None = None) -> Path:
    """Write the members' best weights, configs and preprocessing and the manifest into ``out``;
    returns the manifest's path. ``about`` (how the members were chosen, the test figures) goes into
    the manifest as it is."""
    out = Path(out)
    if (out / MANIFEST_FILE).exists():
        raise ConfigError(f"--out {out} already holds an ensemble ({MANIFEST_FILE}); give an empty or new folder.")
    members = []
    for position, (trial_dir, name) in enumerate(zip(trial_dirs, names, strict=True)):
        trial_dir = Path(trial_dir)
        config = trial_config(trial_dir)
        preprocessing = member_preprocessing(config)
        folder = out / f"member_{position}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_weights(trial_dir), folder / BEST_MODEL_FILE)
        members.append({"name": name, "folder": folder.name, "trial_dir": str(trial_dir), "config": config,
                        "preprocessing": asdict(preprocessing)})
    manifest = {"format": FORMAT, "task": task, "num_outputs": num_outputs, "combine": "mean of class probabilities",
                **dict(about or {}), "members": members}
    path = out / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1, default=str))
    return path


def load_ensemble(folder: str | Path, device: str | torch.device = "cpu") -> EnsembleModel:
    """The ``EnsembleModel`` that ``export_ensemble`` wrote into ``folder``."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} holds no {MANIFEST_FILE}: give a folder written by `medtune ensemble --out`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is in format {manifest.get('format')!r}; this medtune reads format {FORMAT}.")
    models, transforms = [], []
    for member in manifest["members"]:
        config = member["config"]
        model = build_classifier(backbone=config["backbone"], weights="none", head=config["head"],
                                 head_params=HEADS.get(config["head"]).own_values(config),
                                 num_outputs=manifest["num_outputs"], dropout=config["dropout"],
                                 layer_groups=config["layer_groups"])
        state = torch.load(folder / member["folder"] / BEST_MODEL_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        recorded = member["preprocessing"]
        preprocessing = Preprocessing(mean=tuple(recorded["mean"]), std=tuple(recorded["std"]),
                                      interpolation=recorded["interpolation"], crop_pct=recorded["crop_pct"],
                                      source=recorded["source"])
        # the resize the member trained with: crop=weights takes it from the weights' crop_pct
        resize_size = applied_preprocessing({"crop": "none", **config}, preprocessing)[1]
        transforms.append(build_transform(config["image_size"], augment=False, resize_size=resize_size,
                                          preprocessing=preprocessing))
        models.append(model.eval())
    return EnsembleModel(models, transforms, manifest["task"], [m["name"] for m in manifest["members"]]).to(device)

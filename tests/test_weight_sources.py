"""Weight sources behind one registry: every form of ``weights`` recognised by its source, an unknown
form refused with the list of forms, each source's preprocessing (torchvision's own for ImageNet), a
source added from a test file alone and run through ``run_trial``, and ``tuner.models`` loading without
the pretraining package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tuner.config import make_trial_config
from tuner.errors import ConfigError
from tuner.models import backbone_names, build_classifier, get_backbone
from tuner.models.weights import (
    WEIGHT_SOURCES,
    WeightSource,
    find_weight_source,
    preprocessing_for,
    register_weight_source,
    weight_forms,
)
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing
from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

RESNET18 = get_backbone("resnet18")


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_importing_models_never_loads_pretrain():
    done = _fresh_python("import sys, tuner.models, tuner.models.weights\n"
                         "loaded = [m for m in sys.modules if m.startswith('tuner.pretrain')]\n"
                         "assert not loaded, loaded\n")
    assert done.returncode == 0, done.stderr[-2000:]


def test_checking_a_config_knows_the_ssl_form_without_importing_pretrain_first():
    """Only ``tuner.config`` is imported: the ssl: source must be registered all the same."""
    done = _fresh_python("from tuner.config import make_trial_config\n"
                         "from tuner.models import get_backbone\n"
                         "from tuner.models.weights import find_weight_source\n"
                         "make_trial_config({'weights': 'ssl:/some/encoder.pt'})\n"
                         "print(find_weight_source(get_backbone('resnet18'), 'ssl:abc').name)\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ssl"]


@pytest.mark.parametrize(("value", "source"), [
    ("none", "none"), ("imagenet", "imagenet"), ("radimagenet", "radimagenet"),
    ("ssl:/runs/encoder.pt", "ssl"), ("ssl:0123456789abcdef0123456789abcdef", "ssl"), ("ssl:folder/", "ssl"),
    ("weights.pt", "file"), ("weights.pth", "file"), ("model.bin", "file"), ("~/weights/trunk", "file"),
    ("/abs/imagenet.pt", "file"),
])
def test_every_form_is_recognised_by_its_source(value, source):
    assert find_weight_source(RESNET18, value).name == source
    assert make_trial_config({"weights": value})["weights"] == value


@pytest.mark.parametrize("value", ["imagenett", "foo", "ssl", "none.ckpt", ""])
def test_a_value_in_no_form_is_refused_with_every_form(value):
    with pytest.raises(ConfigError) as error:
        make_trial_config({"weights": value})
    message = str(error.value)
    assert message.startswith(f"weights={value!r} is in no known form. Use one of:")
    for form in ("none", "imagenet", "radimagenet", "ssl:<encoder file or MLflow run id>",
                 "<path of a state-dict file (.pt / .pth / .bin)>"):
        assert form in message
    assert weight_forms()[-1].startswith("<path of a state-dict file"), "the catch-all form is listed last"


@pytest.mark.parametrize("name", [n for n in backbone_names() if get_backbone(n).imagenet_weights is not None])
def test_imagenet_preprocessing_is_torchvisions_own(name):
    spec = get_backbone(name)
    preset = spec.imagenet_weights.transforms()
    pre = preprocessing_for(spec, "imagenet")
    assert pre.mean == tuple(preset.mean) and pre.std == tuple(preset.std)
    assert pre.interpolation == preset.interpolation.value
    assert pre.crop_pct == preset.crop_size[0] / preset.resize_size[0]
    assert type(spec.imagenet_weights).__name__ in pre.source


def test_interpolation_and_crop_follow_each_backbones_weights():
    """Not one constant for all: EfficientNet-B0 is bicubic, ConvNeXt-Tiny crops 224 of 236."""
    assert preprocessing_for(get_backbone("efficientnet_b0"), "imagenet").interpolation == "bicubic"
    assert preprocessing_for(get_backbone("resnet50"), "imagenet").interpolation == "bilinear"
    assert preprocessing_for(get_backbone("convnext_tiny"), "imagenet").crop_pct == pytest.approx(224 / 236)
    assert preprocessing_for(RESNET18, "imagenet").crop_pct == 0.875


@pytest.mark.parametrize("value", ["none", "radimagenet", "trunk.pt", "ssl:/x/encoder.pt"])
def test_other_sources_keep_the_imagenet_normalisation(value):
    """What every trial has normalised with so far (and what pretraining feeds its encoder)."""
    pre = preprocessing_for(get_backbone("resnet50"), value)
    assert (pre.mean, pre.std, pre.crop_pct) == (IMAGENET_PREPROCESSING.mean, IMAGENET_PREPROCESSING.std, None)


def test_preprocessing_reads_no_weight_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no ImageNet file here
    assert preprocessing_for(RESNET18, "imagenet").mean == (0.485, 0.456, 0.406)
    assert not any(tmp_path.rglob("*.pth"))
    with pytest.raises(ConfigError, match="no ImageNet weights exist for resnet18_small"):
        preprocessing_for(get_backbone("resnet18_small"), "imagenet")


class _Zeros(WeightSource):
    """A throw-away source declared in this file alone: a trunk of zeros."""

    def file(self, spec, value) -> Path | None:
        return None

    def load(self, trunk, spec, value) -> None:
        with torch.no_grad():
            for tensor in trunk.state_dict().values():
                tensor.zero_()

    def preprocessing(self, spec, value) -> Preprocessing:
        return Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), source="test")


@pytest.fixture
def zeros_source():
    source = register_weight_source(_Zeros("zeros", "a trunk of zeros", form="zeros"))
    yield source
    WEIGHT_SOURCES.unregister("zeros")


def test_a_source_registered_from_a_test_file_reaches_the_trunk_through_run_trial(zeros_source, small_data,
                                                                                   tmp_path):
    assert "zeros" in weight_forms()
    assert preprocessing_for(RESNET18, "zeros").source == "test"
    config = {"backbone": "resnet18", "weights": "zeros", "head": "linear", "strategy": "lp", "image_size": 28,
              "epochs": 1, "batch_size": 32, "seed": 0}
    run_trial(config, small_data, LocalSession(tmp_path))
    trained = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)["model"]
    trunk = {k: v for k, v in trained.items() if k.startswith("trunk.") and v.is_floating_point()}
    assert trunk and all(not v.any() for v in trunk.values()), "the frozen trunk is not the source's zeros"
    model = build_classifier(backbone="resnet18", weights="zeros", head="linear", num_outputs=2)
    assert all(not v.any() for v in model.trunk.state_dict().values())


class _ZerosAgain(_Zeros):
    """Claims the value ``zeros`` under another name."""

    def recognises(self, spec, value) -> bool:
        return value == "zeros"


def test_two_sources_claiming_a_value_at_one_priority_is_a_bug(zeros_source):
    register_weight_source(_ZerosAgain("zeros_too", "the same form again", form="zeros"))
    try:
        with pytest.raises(ValueError, match="claimed by the weight sources zeros, zeros_too"):
            find_weight_source(RESNET18, "zeros")
    finally:
        WEIGHT_SOURCES.unregister("zeros_too")
        assert weight_forms().count("zeros") == 1, "forms are listed once"
    assert find_weight_source(RESNET18, "zeros") is zeros_source

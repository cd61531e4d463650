"""Backbones, layer groups, heads, freezing and starting weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.config import make_trial_config
from tuner.errors import ConfigError
from tuner.models import backbone_names, build_classifier, build_head, get_backbone
from tuner.models.weights import imagenet_file, load_trunk_weights
from tuner.strategies import build_strategy


@pytest.mark.parametrize(("name", "grouping"), [(name, grouping) for name in backbone_names()
                                                for grouping in get_backbone(name).groupings])
def test_layer_groups_partition_the_trunk(name, grouping):
    model = build_classifier(backbone=name, weights="none", head="linear", num_outputs=2, layer_groups=grouping)
    grouped = [id(p) for i in range(model.num_groups) for p in model.group_parameters(i)]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in model.trunk.parameters()}, "groups miss trunk parameters"
    for index in range(model.num_groups):
        assert model.group_parameters(index), f"group {index} has no weights"
    size = get_backbone(name).min_image_size
    assert model.eval()(torch.zeros(2, 3, size, size)).shape == (2, 2)


def test_paper_block_counts():
    """The fine-tuning-strategies paper splits ResNet-50 in 6 blocks, DenseNet-121 in 9, VGG-19 in 6."""
    counts = {name: len(get_backbone(name).layer_groups("paper")) for name in ("resnet50", "densenet121", "vgg19")}
    assert counts == {"resnet50": 6, "densenet121": 9, "vgg19": 6}
    with pytest.raises(ConfigError, match="no 'paper' layer grouping"):
        get_backbone("convnext_tiny").layer_groups("paper")


@pytest.mark.parametrize("head", ["conv", "convskip"])
def test_kernel_size_reaches_the_conv_head(head):
    torch.manual_seed(0)
    features = torch.randn(4, 64)
    outputs = {}
    for k in (1, 3, 5, 7):
        module = build_head(head, 64, 2, kernel_size=k, filters=6)
        assert module.conv.weight.shape == (6, 1, k)
        assert module.fc.in_features == 6 * 64
        torch.manual_seed(1)
        outputs[k] = build_head(head, 64, 2, kernel_size=k, filters=6)(features)
    assert all(not torch.allclose(outputs[1], outputs[k]) for k in (3, 5, 7))


def test_kernel_size_from_config_reaches_the_model():
    for k in (3, 9):
        config = make_trial_config({"backbone": "resnet18", "weights": "none", "head": "convskip",
                                    "kernel_size": k, "filters": 2, "dropout": 0.3})
        model = build_classifier(backbone="resnet18", weights="none", head="convskip", num_outputs=2,
                                 dropout=config["dropout"],
                                 head_params={"kernel_size": config["kernel_size"], "filters": config["filters"]})
        assert model.head.conv.weight.shape == (2, 1, k)
        assert model.head.dropout.p == 0.3


def test_convskip_is_conv_path_plus_linear_skip():
    head = build_head("convskip", 32, 3, kernel_size=3, filters=4).eval()
    features = torch.randn(5, 32)
    conv_only = head.fc(torch.relu(head.conv(features.unsqueeze(1))).flatten(1))
    assert torch.allclose(head(features), conv_only + head.skip(features), atol=1e-6)


def test_mlp_hidden_ratio_and_dropout_reach_the_head():
    head = build_head("mlp", 100, 2, hidden_ratio=0.25, dropout=0.4)
    assert head[0].out_features == 25 and head[2].p == 0.4
    assert build_head("linear", 100, 2, dropout=0.2)[0].p == 0.2


def _step(model: nn.Module) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    model.train()
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 0, 1]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("k", range(0, 6))
def test_unfreeze_top_k_trains_exactly_those_groups(k):
    torch.manual_seed(k)
    model = build_classifier(backbone="resnet18", weights="none", head="linear", num_outputs=2)
    config = make_trial_config({"backbone": "resnet18", "weights": "none", "strategy": "topk", "unfreeze": k})
    groups = build_strategy(config, model.num_groups).trainable_groups(model.num_groups, epoch=1)
    model.set_trainable_groups(groups)
    assert set(groups) == set(range(model.num_groups - k, model.num_groups))
    for index in range(model.num_groups):
        assert all(p.requires_grad == (index in groups) for p in model.group_parameters(index))
    assert all(p.requires_grad for p in model.head.parameters())

    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    _step(model)
    after = model.state_dict()
    for index, paths in enumerate(model.layer_groups.paths):
        names = [n for n in before if any(n.startswith(f"trunk.{path}.") for path in paths)]
        weights = [n for n in names if "running" not in n and "num_batches" not in n]
        stats = [n for n in names if "running_mean" in n]
        if index in groups:
            assert any(not torch.equal(before[n], after[n]) for n in weights), f"group {index} did not train"
            assert any(not torch.equal(before[n], after[n]) for n in stats), f"group {index} BN stats frozen"
        else:  # frozen: weights and BatchNorm statistics bit-identical
            assert all(torch.equal(before[n], after[n]) for n in names), f"frozen group {index} changed"
    head_names = [n for n in before if n.startswith("head.")]
    assert any(not torch.equal(before[n], after[n]) for n in head_names)


def test_unfreeze_beyond_groups_is_refused():
    with pytest.raises(ConfigError, match="resnet18 has 5 layer groups"):
        make_trial_config({"backbone": "resnet18", "strategy": "topk", "unfreeze": 6})


def test_state_dict_file_with_radimagenet_keys_loads_every_tensor(tmp_path):
    spec = get_backbone("resnet50")
    source = spec.build(weights=None)
    source.fc = nn.Identity()
    renamed = {}
    for key, value in source.state_dict().items():
        for foreign, ours in spec.foreign_prefixes.items():
            if key.startswith(ours):
                key = foreign + key[len(ours):]
                break
        renamed[key] = value
    assert any(k.startswith("backbone.7.") for k in renamed)
    path = tmp_path / "ResNet50.pt"
    torch.save(renamed, path)
    model = build_classifier(backbone="resnet50", weights=str(path), head="linear", num_outputs=2)
    expected = source.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in model.trunk.state_dict().items())


def test_weights_file_that_does_not_fit_is_refused(tmp_path):
    spec = get_backbone("resnet18")
    trunk = spec.build(weights=None)
    trunk.fc = nn.Identity()
    partial = {k: v for k, v in trunk.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="trunk tensors missing"):
        load_trunk_weights(trunk, spec, str(tmp_path / "partial.pt"))
    other = get_backbone("resnet50").build(weights=None).state_dict()
    torch.save(other, tmp_path / "resnet50.pt")
    with pytest.raises(ConfigError, match="wrong shape"):
        load_trunk_weights(trunk, spec, str(tmp_path / "resnet50.pt"))


def test_missing_imagenet_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_file(get_backbone("resnet18")) == expected
    with pytest.raises(ConfigError) as error:
        build_classifier(backbone="resnet18", weights="imagenet", head="linear", num_outputs=2)
    assert "resnet18-f37072fd.pth" in str(error.value) and str(expected.parent) in str(error.value)


def test_imagenet_file_in_torch_home_is_used(tmp_path, monkeypatch):
    """A file placed where torchvision caches its weights is picked up unchanged."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_backbone("resnet18")
    torch.manual_seed(7)
    reference = spec.build(weights=None)
    path = imagenet_file(spec)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_classifier(backbone="resnet18", weights="imagenet", head="conv", num_outputs=2)
    expected = reference.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in model.trunk.state_dict().items())


def test_radimagenet_missing_file_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=str(tmp_path / "radimagenet" / "ResNet50.pt")):
        build_classifier(backbone="resnet50", weights="radimagenet", head="linear", num_outputs=2)
    with pytest.raises(ConfigError, match="no weights for resnet18"):
        build_classifier(backbone="resnet18", weights="radimagenet", head="linear", num_outputs=2)


def test_small_input_resnets_keep_the_resolution_of_28px_images():
    """MedMNIST's 28 px ResNet: a 3x3 stride-1 stem and no max-pool, so layer1 sees 28x28 maps (torchvision's
    stem leaves 7x7) and layer4 4x4 (instead of 1x1)."""
    sizes = {}
    for name in ("resnet18", "resnet18_small", "resnet50_small"):
        model = build_classifier(backbone=name, weights="none", head="conv", num_outputs=2,
                                 head_params={"kernel_size": 3})
        seen = {}
        for layer in ("layer1", "layer4"):
            model.trunk.get_submodule(layer).register_forward_hook(
                lambda _module, _inputs, output, layer=layer, seen=seen: seen.__setitem__(layer, output.shape[-2:]))
        assert model.eval()(torch.zeros(2, 3, 28, 28)).shape == (2, 2)
        sizes[name] = seen
        if name.endswith("_small"):
            assert model.trunk.conv1.kernel_size == (3, 3) and model.trunk.conv1.stride == (1, 1)
            assert isinstance(model.trunk.maxpool, nn.Identity)
    sizes = {name: {layer: tuple(size) for layer, size in seen.items()} for name, seen in sizes.items()}
    assert sizes["resnet18"] == {"layer1": (7, 7), "layer4": (1, 1)}
    assert sizes["resnet18_small"] == sizes["resnet50_small"] == {"layer1": (28, 28), "layer4": (4, 4)}


def test_small_input_resnets_refuse_imagenet_and_radimagenet_weights():
    with pytest.raises(ConfigError, match="no ImageNet weights exist for resnet18_small.*resnet18 for ImageNet"):
        build_classifier(backbone="resnet18_small", weights="imagenet", head="linear", num_outputs=2)
    with pytest.raises(ConfigError, match="RadImageNet publishes no weights for resnet50_small"):
        build_classifier(backbone="resnet50_small", weights="radimagenet", head="linear", num_outputs=2)

"""Every file a search will read is opened on the driver before Ray starts: weight files and SSL
encoders are loaded once (``weights_only=True``) and fitted to the trunk with the trial's own code, a
manifest's images are decoded, and the tracking URI's scheme is checked. A broken file is refused with
one line, and no code from a file ever runs."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import ray_never_started
from tuner.errors import ConfigError
from tuner.models import get_backbone
from tuner.search import SearchRequest, prepare, run_search


class _Payload:
    """Pickles as "call Path.touch(marker)": loading it with pickle enabled would create the marker."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _trunk_state(backbone: str) -> dict[str, torch.Tensor]:
    spec = get_backbone(backbone)
    trunk = spec.build(weights=None)
    trunk.set_submodule(spec.classifier_attr, nn.Identity())
    return trunk.state_dict()


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    return _trunk_state("resnet18")


def _request(small_npz, weights: str, storage) -> SearchRequest:
    return SearchRequest(space="quick", dataset=str(small_npz), pins={"weights": weights}, storage=str(storage))


def _refused(request: SearchRequest, match: str) -> str:
    """``run_search`` refuses ``request`` with a one-line ConfigError, before Ray starts."""
    with ray_never_started(), pytest.raises(ConfigError, match=match) as refused:
        run_search(request)
    assert "\n" not in str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize("form", ["{}", "ssl:{}"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(form, small_npz, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    message = _refused(_request(small_npz, form.format(path), tmp_path / "storage"),
                       r"it holds pickled code, which is never run: .*GLOBAL")
    assert str(path) in message and "weights_only=False" not in message and "safe_globals" not in message
    assert not marker.exists()
    # The payload is live: loading the file the unsafe way would have created the marker.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_truncated_weight_file_is_refused(small_npz, tmp_path, resnet18_state):
    whole = tmp_path / "whole.pt"
    torch.save(resnet18_state, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    message = _refused(_request(small_npz, str(cut), tmp_path / "s"), "cannot load weights file .*cut.pt")
    assert "state dict saved with torch.save" in message


@pytest.mark.parametrize("content", [[torch.zeros(3)], torch.zeros(3, 3), {"conv1.weight": "not a tensor"}],
                         ids=["list", "tensor", "strings"])
def test_a_file_that_is_not_a_state_dict_is_refused(content, small_npz, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    _refused(_request(small_npz, str(path), tmp_path / "s"), "does not hold a state dict")


def test_a_state_dict_of_another_architecture_is_refused(small_npz, tmp_path):
    path = tmp_path / "small.pt"
    torch.save(_trunk_state("resnet18_small"), path)  # same key names, other widths
    _refused(_request(small_npz, str(path), tmp_path / "s"), "does not fit backbone resnet18: .*wrong shape")
    path = tmp_path / "partial.pt"
    state = _trunk_state("resnet18")
    del state["layer4.1.conv2.weight"]
    torch.save(state, path)
    _refused(_request(small_npz, str(path), tmp_path / "s"), "1 trunk tensors missing .*layer4.1.conv2.weight")


def test_a_fitting_file_passes_and_is_read_once(small_npz, tmp_path, resnet18_state, monkeypatch):
    path = tmp_path / "good.pt"
    torch.save(resnet18_state, path)
    request = _request(small_npz, str(path), tmp_path / "s")
    space, configs = prepare(request)
    assert {c["weights"] for c in configs} == {str(path)}
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    prepare(request)
    assert loads == [], "an unchanged file is fitted once per driver"
    torch.save({k: v + 0 for k, v in resnet18_state.items()}, path)  # rewritten: read again
    prepare(request)
    assert len(loads) == 1


def test_manifests_are_decoded_on_the_driver(small_npz, tmp_path):
    images = np.load(small_npz)["train_images"][:24]
    rows = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": i % 2, "split": ("train", "val", "test")[i % 3]})
    (tmp_path / "3.png").write_bytes((tmp_path / "3.png").read_bytes()[:40])  # truncated
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    request = SearchRequest(space="quick", dataset=str(tmp_path / "manifest.csv"), storage=str(tmp_path / "s"))
    _refused(request, "3.png")


@pytest.mark.parametrize("uri", ["htp://127.0.0.1:5000", "sqlite3:///x.db", "s3://bucket/mlruns"])
def test_an_unknown_tracking_scheme_is_refused_with_the_supported_ones(uri, small_npz, tmp_path, monkeypatch):
    request = SearchRequest(space="quick", dataset=str(small_npz), storage=str(tmp_path / "s"), tracking_uri=uri)
    _refused(request, "is unknown.*Supported: file, sqlite, postgresql, mysql, mssql, http, https, databricks")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the environment's URI is checked as well
    _refused(SearchRequest(space="quick", dataset=str(small_npz), storage=str(tmp_path / "s")), "is unknown")

"""CSV manifests: single- and multi-label, given or made splits, patients never in two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuner.data import load_dataset
from tuner.errors import ConfigError


@pytest.fixture
def image_dir(tmp_path, breastmnist):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(120):
        Image.fromarray(breastmnist.train.images[i]).save(folder / f"{i}.png")
    return folder


def test_single_label_manifest_with_patients_is_split_by_patient(tmp_path, image_dir, breastmnist):
    labels = np.where(breastmnist.train.labels[:120] == 1, "benign", "malignant")
    table = pd.DataFrame({"path": [f"images/{i}.png" for i in range(120)], "label": labels,
                          "patient_id": [f"p{i // 3}" for i in range(120)]})  # 3 images per patient
    table.to_csv(tmp_path / "manifest.csv", index=False)
    data = load_dataset(str(tmp_path / "manifest.csv"))
    assert data.task == "binary" and data.class_names == ("benign", "malignant")
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 120 and 80 <= sizes[0] <= 100
    # every image landed with its patient: map images back to rows by their bytes
    row_of = {breastmnist.train.images[i].tobytes(): i for i in range(120)}
    patients = {name: {table["patient_id"][row_of[img.tobytes()]] for img in data.split(name).images}
                for name in ("train", "val", "test")}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])


def test_multilabel_manifest(tmp_path, image_dir, breastmnist):
    y = breastmnist.train.labels[:120]
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"path": [f"images/{i}.png" for i in range(120)], "benign": y, "malignant": 1 - y,
                          "artifact": rng.integers(0, 2, 120)})
    table.to_csv(tmp_path / "multi.csv", index=False)
    data = load_dataset(str(tmp_path / "multi.csv"))
    assert data.task == "multilabel" and data.class_names == ("benign", "malignant", "artifact")
    assert data.train.labels.shape[1] == 3 and set(np.unique(data.train.labels)) == {0.0, 1.0}


def test_given_splits_are_used(tmp_path, image_dir, breastmnist):
    split = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    table = pd.DataFrame({"path": [f"images/{i}.png" for i in range(120)], "label": breastmnist.train.labels[:120],
                          "split": split})
    table.to_csv(tmp_path / "given.csv", index=False)
    data = load_dataset(str(tmp_path / "given.csv"))
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert np.array_equal(data.test.images[0], breastmnist.train.images[100])


def test_refusals(tmp_path, image_dir, breastmnist):
    paths = [f"images/{i}.png" for i in range(120)]
    y = breastmnist.train.labels[:120]
    pd.DataFrame({"path": paths[:-1] + ["images/missing.png"], "label": y}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ConfigError, match="1 image file.* do not exist.*missing.png"):
        load_dataset(str(tmp_path / "a.csv"))
    pd.DataFrame({"path": paths, "a": y, "b": y * 2}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ConfigError, match="'b' hold other values"):
        load_dataset(str(tmp_path / "b.csv"))
    split = ["train"] * 80 + ["val"] * 20 + ["test"] * 20
    patients = [f"p{i}" for i in range(119)] + ["p0"]  # p0: first image in train, last in test
    pd.DataFrame({"path": paths, "label": y, "split": split, "patient_id": patients}).to_csv(
        tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match="patient\\(s\\) p0 appear in more than one split"):
        load_dataset(str(tmp_path / "c.csv"))

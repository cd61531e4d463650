"""Data sources: the real MedMNIST file, image folders, transforms, and refusals of bad data."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from tuner.data import ImageDataset, build_transform, load_dataset
from tuner.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tuner.errors import ConfigError


def test_breastmnist_official_split(breastmnist):
    assert breastmnist.task == "binary"
    assert (len(breastmnist.train), len(breastmnist.val), len(breastmnist.test)) == (546, 78, 156)
    assert np.bincount(breastmnist.train.labels).tolist() == [147, 399]
    assert np.bincount(breastmnist.test.labels).tolist() == [42, 114]
    assert breastmnist.train.images.shape == (546, 28, 28) and breastmnist.train.images.dtype == np.uint8


def test_missing_medmnist_file_names_file_and_folder(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_dataset("pneumoniamnist", data_root=tmp_path)
    assert str(tmp_path / "pneumoniamnist.npz") in str(error.value)
    assert "--data-root" in str(error.value)


def test_npz_without_expected_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match="lacks the keys .*train_images"):
        load_dataset(str(path))


def test_corrupt_npz(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match="corrupt"):
        load_dataset(str(path))
    assert not zipfile.is_zipfile(path)


def test_split_with_one_class_is_refused(tmp_path, breastmnist):
    arrays = {}
    for split in ("train", "val", "test"):
        source = breastmnist.split(split)
        arrays[f"{split}_images"] = source.images[:20]
        labels = source.labels[:20].copy()
        if split == "val":
            labels[:] = 1
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    path = tmp_path / "oneclass.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match="val split contains only one class"):
        load_dataset(str(path))


def _write_folder(root, breastmnist, per_class=40):
    for label, name in enumerate(("malignant", "benign")):
        (root / name).mkdir(parents=True)
        indices = np.flatnonzero(breastmnist.train.labels == label)[:per_class]
        for i in indices:
            Image.fromarray(breastmnist.train.images[i]).save(root / name / f"{i}.png")
    return root


def test_image_folder_stratified_seeded_split(tmp_path, breastmnist):
    root = _write_folder(tmp_path / "breast", breastmnist)
    first, second = load_dataset(str(root)), load_dataset(str(root))
    assert first.class_names == ("benign", "malignant")
    assert (len(first.train), len(first.val), len(first.test)) == (60, 12, 8)
    for split in ("train", "val", "test"):
        counts = np.bincount(first.split(split).labels)
        assert counts[0] == counts[1], f"{split} is not stratified: {counts}"
        assert np.array_equal(first.split(split).labels, second.split(split).labels)
        for a, b in zip(first.split(split).images, second.split(split).images, strict=True):
            assert np.array_equal(a, b)
    # decoded pixels are the original ones
    originals = {img.tobytes() for img in breastmnist.train.images}
    assert all(img.tobytes() in originals for img in first.train.images)


def test_corrupt_image_is_named(tmp_path, breastmnist):
    root = _write_folder(tmp_path / "breast", breastmnist, per_class=12)
    bad = root / "benign" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ConfigError, match="broken.png"):
        load_dataset(str(root))


def test_transform_grayscale_resize_normalise(breastmnist):
    image = breastmnist.train.images[0]
    tensor = build_transform(64, augment=False)(image)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    raw = torch.stack([(tensor[c] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) for c in range(3)])
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[1], raw[2], atol=1e-6)
    same_size = build_transform(28, augment=False)(image)
    expected = (torch.tensor(image, dtype=torch.float32) / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert torch.allclose(same_size[1], expected, atol=1e-6)


def test_augmentation_only_when_asked(breastmnist):
    image = breastmnist.train.images[3]
    torch.manual_seed(0)
    plain = [build_transform(28, augment=False)(image) for _ in range(3)]
    augmented = [build_transform(28, augment=True)(image) for _ in range(3)]
    assert all(torch.equal(plain[0], p) for p in plain)
    assert not torch.equal(augmented[0], augmented[1])


def test_dataset_yields_label(breastmnist):
    dataset = ImageDataset(breastmnist.test, build_transform(32, augment=False))
    image, label = dataset[5]
    assert image.shape == (3, 32, 32) and label == int(breastmnist.test.labels[5])

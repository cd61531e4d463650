"""Data sources: the real MedMNIST file, image folders (both layouts, patient IDs), transforms, and
refusals of bad data."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from tuner.data import ImageDataset, PatientLeakWarning, build_transform, load_dataset
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


# --- image folder layouts and patient IDs -------------------------------------------------------------
# Generated tiny PNGs whose first two pixels encode a code (the patient, or the image), so every decoded
# image can be traced back to its file.


def _png(path, code: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8), 7, np.uint8)
    pixels[0, 0], pixels[0, 1] = divmod(code, 256)
    Image.fromarray(pixels).save(path)


def _code(image: np.ndarray) -> int:
    return int(image[0, 0]) * 256 + int(image[0, 1])


def write_patient_folder(root, patients: int = 40):
    """``root/<class>/P<id>_<k>.png``: each patient has 1-5 images, all of one class; every image
    encodes its patient's number."""
    rng = np.random.default_rng(0)
    for patient in range(patients):
        label = ("benign", "malignant")[patient % 2]
        for k in range(int(rng.integers(1, 6))):
            _png(root / label / f"P{patient:03d}_{k}.png", patient)
    return root


def _patients_per_split(data) -> dict[str, set[int]]:
    return {name: {_code(img) for img in data.split(name).images} for name in ("train", "val", "test")}


def test_folder_patient_regex_puts_no_patient_in_two_splits(tmp_path):
    root = write_patient_folder(tmp_path / "patients")
    total = sum(1 for _ in root.rglob("*.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatientLeakWarning)  # with patient IDs there is nothing to warn about
        data = load_dataset(str(root), patient_regex=r"^(P\d+)_")
    seen = _patients_per_split(data)
    assert sum(len(data.split(name)) for name in ("train", "val", "test")) == total
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert seen["train"] | seen["val"] | seen["test"] == set(range(40))
    # the patient IDs travel with the images (k-fold needs them)
    for name in ("train", "val", "test"):
        split = data.split(name)
        assert [f"P{_code(img):03d}" for img in split.images] == split.groups.tolist()
    # the same folder split per image does put patients in two splits: the regex is what prevents it
    with pytest.warns(PatientLeakWarning):
        ungrouped = _patients_per_split(load_dataset(str(root)))
    assert ungrouped["train"] & (ungrouped["val"] | ungrouped["test"])


def test_patient_regex_named_group_wins_over_group_one(tmp_path):
    root = write_patient_folder(tmp_path / "patients")
    data = load_dataset(str(root), patient_regex=r"^(P)(?P<patient>\d+)_")  # group 1 is "P" for everyone
    assert len(set(data.train.groups) | set(data.val.groups) | set(data.test.groups)) == 40
    seen = _patients_per_split(data)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"])


def test_folder_split_without_patient_ids_warns_once(tmp_path):
    root = write_patient_folder(tmp_path / "patients")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset(str(root))
    leaks = [w for w in caught if issubclass(w.category, PatientLeakWarning)]
    assert len(leaks) == 1
    assert "one patient may be in two splits" in str(leaks[0].message) and "--patient-regex" in str(leaks[0].message)


def test_patient_regex_refusals(tmp_path, small_npz):
    root = write_patient_folder(tmp_path / "patients")
    with pytest.raises(ConfigError, match="--patient-regex '\\(P' is not a valid regular expression"):
        load_dataset(str(root), patient_regex="(P")
    _png(root / "benign" / "scan7.png", 1)
    with pytest.raises(ConfigError, match="finds no patient ID in 1 file name.*scan7.png"):
        load_dataset(str(root), patient_regex=r"^(P\d+)_")
    with pytest.raises(ConfigError, match="applies to image folders only"):
        load_dataset(str(small_npz), patient_regex=r"^(P\d+)_")


def _write_split_layout(root, counts: dict[str, int], classes=("benign", "malignant")) -> dict[str, set[int]]:
    """``root/<split>/<class>/<n>.png`` with ``counts[split]`` images per class; returns each split
    folder's image codes (unique across the folder)."""
    codes: dict[str, set[int]] = {}
    code = 0
    for split, per_class in counts.items():
        codes[split] = set()
        for name in classes:
            for _ in range(per_class):
                _png(root / split / name / f"{code}.png", code)
                codes[split].add(code)
                code += 1
    return codes


def test_train_val_test_folders_are_the_splits_and_classes_are_inside(tmp_path):
    root = tmp_path / "given"
    codes = _write_split_layout(root, {"Train": 12, "VAL": 5, "test": 4})  # split names in any case
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatientLeakWarning)  # nothing was split by medtune
        data = load_dataset(str(root))
    assert data.class_names == ("benign", "malignant") and data.task == "binary"
    assert (len(data.train), len(data.val), len(data.test)) == (24, 10, 8)
    for name, folder in (("train", "Train"), ("val", "VAL"), ("test", "test")):
        split = data.split(name)
        assert {_code(img) for img in split.images} == codes[folder]
        assert np.bincount(split.labels).tolist() == [len(split) // 2] * 2
    # labels follow the class folder, not the split folder
    benign = {int(p.stem) for p in (root / "test" / "benign").iterdir()}
    assert all((label == 0) == (_code(img) in benign) for img, label in zip(data.test.images, data.test.labels,
                                                                            strict=True))


def test_train_valid_folders_carve_test_from_train(tmp_path):
    root = tmp_path / "kaggle"
    codes = _write_split_layout(root, {"train": 34, "valid": 6})
    with pytest.warns(PatientLeakWarning, match="the test split"):
        data = load_dataset(str(root))
    assert {_code(img) for img in data.val.images} == codes["valid"]  # the given val stays as given
    train, test = ({_code(img) for img in data.split(name).images} for name in ("train", "test"))
    assert train | test == codes["train"] and not train & test
    assert len(test) == 8 and np.bincount(data.test.labels).tolist() == [4, 4]  # 2 of 17 parts, stratified


def test_split_folders_with_patients_carve_val_grouped_and_refuse_a_leak(tmp_path):
    root = tmp_path / "grouped"
    write_patient_folder(root / "train")
    write_patient_folder(root / "test", patients=10)  # patients 0-9 again: in train and test
    with pytest.raises(ConfigError, match="patient\\(s\\) P000, P001.* appear in more than one split"):
        load_dataset(str(root), patient_regex=r"^(P\d+)_")
    for path in (root / "test").rglob("*.png"):
        path.rename(path.with_name("Q" + path.name[1:]))
    data = load_dataset(str(root), patient_regex=r"^([PQ]\d+)_")
    assert set(data.test.groups) == {f"Q{i:03d}" for i in range(10)}
    assert not set(data.train.groups) & set(data.val.groups) and len(data.val) > 0


def test_folder_layout_refusals(tmp_path):
    mixed = tmp_path / "mixed"
    _write_split_layout(mixed, {"train": 3, "val": 2})
    _png(mixed / "benign" / "1.png", 1)
    with pytest.raises(ConfigError, match="mixes split folders \\(train, val\\) with other folders \\(benign\\)"):
        load_dataset(str(mixed))
    extra_class = tmp_path / "extra"
    _write_split_layout(extra_class, {"train": 3, "val": 2})
    _png(extra_class / "val" / "cyst" / "1.png", 1)
    with pytest.raises(ConfigError, match="val folder .* class folder\\(s\\) cyst that train lacks"):
        load_dataset(str(extra_class))
    no_train = tmp_path / "notrain"
    _write_split_layout(no_train, {"val": 3, "test": 2})
    with pytest.raises(ConfigError, match="no train folder"):
        load_dataset(str(no_train))
    inverted = tmp_path / "inverted"
    for name in ("benign", "malignant"):
        _png(inverted / name / "train" / "1.png", 1)
        _png(inverted / name / "test" / "2.png", 2)
    with pytest.raises(ConfigError, match="holds split folders \\(test, train\\)"):
        load_dataset(str(inverted))


def test_folders_below_a_class_folder_are_not_classes(tmp_path):
    root = tmp_path / "nested"
    for code in range(40):
        _png(root / ("benign" if code % 2 else "malignant") / f"scan{code % 3}" / f"{code}.png", code)
    with pytest.warns(PatientLeakWarning):
        data = load_dataset(str(root))
    assert data.class_names == ("benign", "malignant")
    assert sum(len(data.split(name)) for name in ("train", "val", "test")) == 40

"""Data-set integrity, checked once on the driver by ``load_dataset``: each refusal is proven by a crafted
``.npz``, manifest or image folder that fails exactly that check; each warning by one that has exactly
that finding; unusual but valid image files (palette, 16-bit, RGBA, CMYK, LA) are converted, not refused;
and the real BreastMNIST passes, with the one train/test copy it really holds reported."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuner.data import DataIntegrityWarning, load_dataset
from tuner.errors import ConfigError

N = 20  # images per split in the crafted files: the first 20 of each BreastMNIST split hold both classes


def _arrays(breastmnist) -> dict[str, np.ndarray]:
    """A valid MedMNIST-style archive's arrays: real BreastMNIST images, no copies between splits."""
    arrays = {}
    for split in ("train", "val", "test"):
        source = breastmnist.split(split)
        arrays[f"{split}_images"] = source.images[:N].copy()
        arrays[f"{split}_labels"] = source.labels[:N].reshape(-1, 1).astype(np.uint8)
    return arrays


def _save(tmp_path, arrays, name="crafted"):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


def test_real_breastmnist_passes_and_its_one_train_test_copy_is_reported():
    """BreastMNIST really holds one test image that is byte-for-byte a training image (test 76 and
    train 115), and with the other label: a warning with the count, never a refusal."""
    with pytest.warns(DataIntegrityWarning, match="1 test image.s. are exact copies of train images"):
        data = load_dataset("breastmnist")
    assert (len(data.train), len(data.val), len(data.test)) == (546, 78, 156)
    assert len(data.data_warnings) == 1
    assert "possible leakage: 1 test image(s) are exact copies of train images (1 of them with a different label)" \
        in data.data_warnings[0]
    assert np.array_equal(data.test.images[76], data.train.images[115])


def test_a_clean_crafted_file_has_no_warning(tmp_path, breastmnist):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataIntegrityWarning)
        data = load_dataset(_save(tmp_path, _arrays(breastmnist)))
    assert data.data_warnings == ()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_and_labels_of_unequal_length_are_refused(tmp_path, breastmnist, split):
    arrays = _arrays(breastmnist)
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:-1]
    with pytest.raises(ConfigError, match=f"the {split} split has 20 images but 19 labels; every image needs"):
        load_dataset(_save(tmp_path, arrays))


def test_unequal_length_is_refused_for_a_multilabel_file_too(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    for split in ("train", "val", "test"):
        labels = arrays.pop(f"{split}_labels").reshape(-1)
        arrays[f"{split}_labels"] = np.stack([labels, 1 - labels], axis=1)  # two 0/1 label columns
    arrays["val_labels"] = arrays["val_labels"][:15]
    with pytest.raises(ConfigError, match="the val split has 20 images but 15 labels"):
        load_dataset(_save(tmp_path, arrays))


def test_a_class_that_train_never_has_is_refused(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    arrays["test_labels"][:3] = 2  # class 2 only in test: the model can never learn it
    with pytest.raises(ConfigError, match="the test split has class.es. '2' that the train split never has"):
        load_dataset(_save(tmp_path, arrays))


def test_a_manifest_class_only_in_val_is_refused(tmp_path, breastmnist):
    rows = []
    for index in range(12):
        split = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
        label = ["benign", "malignant"][index % 2] if index != 7 else "normal"
        Image.fromarray(breastmnist.train.images[index]).save(tmp_path / f"{index}.png")
        rows.append({"path": f"{index}.png", "label": label, "split": split[index]})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(ConfigError, match="the val split has class.es. 'normal' that the train split never has"):
        load_dataset(str(tmp_path / "manifest.csv"))


def test_a_class_with_no_image_anywhere_is_a_warning(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] = np.where(arrays[f"{split}_labels"] == 1, 2, 0).astype(np.uint8)  # no class 1
    with pytest.warns(DataIntegrityWarning, match="class.es. '1' have no image in any split"):
        data = load_dataset(_save(tmp_path, arrays))
    assert data.num_classes == 3


@pytest.mark.parametrize(("images", "message"), [
    (np.full((N, 28, 28), np.nan, np.float32), "20 image.s. hold NaN or infinite values"),
    (np.full((N, 28, 28), 300, np.int16), "holds values 300..300: images are whole numbers 0..255"),
    (np.full((N, 28, 28), -1, np.int64), "holds values -1..-1"),
    (np.full((N, 28, 28), 2.5, np.float64), "holds values 2.5..2.5"),
    (np.zeros((N, 28, 28), bool), "has dtype bool"),
    (np.zeros((N, 3, 28, 28), np.uint8), "channels first"),
    (np.zeros((N, 28, 28, 4), np.uint8), r"has shape \(20, 28, 28, 4\)"),
])
def test_images_a_model_cannot_take_are_refused(tmp_path, breastmnist, images, message):
    arrays = _arrays(breastmnist)
    arrays["val_images"] = images
    with pytest.raises(ConfigError, match=f"'val_images'.*{message}"):
        load_dataset(_save(tmp_path, arrays))


def test_images_in_other_dtypes_are_converted_losslessly(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    originals = {split: arrays[f"{split}_images"].copy() for split in ("train", "val", "test")}
    arrays["train_images"] = originals["train"].astype(np.int64)  # whole numbers 0..255
    arrays["val_images"] = originals["val"].astype(np.float32) / 255  # floats within [0, 1]
    arrays["test_images"] = originals["test"][..., None]  # (N, H, W, 1)
    data = load_dataset(_save(tmp_path, arrays))
    for split in ("train", "val", "test"):
        assert data.split(split).images.dtype == np.uint8
        assert np.array_equal(data.split(split).images, originals[split])


@pytest.mark.parametrize("bad", [0.5, np.nan])
def test_labels_that_are_not_whole_numbers_are_refused(tmp_path, breastmnist, bad):
    arrays = _arrays(breastmnist)
    arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
    arrays["train_labels"][4] = bad
    with pytest.raises(ConfigError, match="'train_labels' holds 1 label.s. that are not whole numbers"):
        load_dataset(_save(tmp_path, arrays))


def test_copies_between_splits_are_counted_as_possible_leakage(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    arrays["val_images"][:3] = arrays["train_images"][5:8]  # 3 val images are train images
    arrays["val_labels"][:3] = arrays["train_labels"][5:8]
    arrays["test_images"][10] = arrays["train_images"][0]  # 1 test image is a train image ...
    arrays["test_labels"][10] = 1 - arrays["train_labels"][0]  # ... with the other label
    arrays["test_images"][11:13] = arrays["val_images"][15:17]  # 2 test images are val images
    arrays["test_labels"][11:13] = arrays["val_labels"][15:17]
    with pytest.warns(DataIntegrityWarning) as caught:
        data = load_dataset(_save(tmp_path, arrays))
    assert list(data.data_warnings) == [
        "possible leakage: 3 val image(s) are exact copies of train images, so val scores are optimistic. "
        "Remove the copies from one of the splits.",
        "possible leakage: 1 test image(s) are exact copies of train images (1 of them with a different label), "
        "so test scores are optimistic. Remove the copies from one of the splits.",
        "possible leakage: 2 test image(s) are exact copies of val images, so test scores are optimistic. "
        "Remove the copies from one of the splits.",
    ]
    assert [str(w.message) for w in caught if w.category is DataIntegrityWarning] == [
        f"data set 'crafted': {line}" for line in data.data_warnings]


def _given_split_folder(root, images_of):
    """root/<split>/<class>/<i>.png, from ``images_of(split, class, i)`` (an array, or a PIL image)."""
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            for index in range(2):
                image = images_of(split, label, index)
                path = root / split / label / f"{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path)


def test_a_split_with_several_image_shapes_is_a_warning_naming_them(tmp_path):
    rng = np.random.default_rng(0)

    def image(split, label, index):
        shape = (30, 20) if (split, label, index) == ("train", "b", 1) else (28, 28)
        return rng.integers(0, 256, shape, dtype=np.uint8)

    _given_split_folder(tmp_path / "shapes", image)
    with pytest.warns(DataIntegrityWarning, match=r"the train split holds images of 2 shapes \(28x28: 3, 30x20: 1\)"):
        data = load_dataset(str(tmp_path / "shapes"))
    assert len(data.data_warnings) == 1


def test_splits_of_different_shapes_are_a_warning(tmp_path, breastmnist):
    arrays = _arrays(breastmnist)
    arrays["test_images"] = np.repeat(np.repeat(arrays["test_images"], 2, axis=1), 2, axis=2)  # 56 x 56
    with pytest.warns(DataIntegrityWarning, match="different shapes .train 28x28, val 28x28, test 56x56"):
        load_dataset(_save(tmp_path, arrays))


def test_unusual_image_modes_are_converted_and_accepted(tmp_path):
    """Palette (with and without transparency), 16-bit, RGBA, CMYK, LA and 1-bit files all load, as
    the uint8 arrays a model takes, with the values their modes mean; none is refused, and the only
    warning is medtune's own about the split mixing grayscale and colour shapes."""
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    colour = np.stack([gray, 255 - gray, np.full_like(gray, 7)], axis=-1)
    palette = Image.fromarray(colour).quantize(colors=16)
    transparent = Image.fromarray(colour[::-1]).quantize(colors=16)
    transparent.info["transparency"] = 0
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)  # 0..65520: full 16 bits
    deep[0, 0], deep[0, 1] = 65535, 32768
    cmyk = Image.fromarray(colour[:, ::-1]).convert("CMYK")
    files = {
        ("train", "a", 0): palette, ("train", "a", 1): Image.fromarray(np.dstack([colour, gray])),
        ("train", "b", 0): Image.fromarray(deep), ("train", "b", 1): Image.fromarray(np.dstack([gray, gray])),
        ("val", "a", 0): transparent, ("val", "b", 0): Image.fromarray(gray > 100),
    }

    def image(split, label, index):  # each plain grayscale image distinct: no copies between splits
        return files.get((split, label, index), Image.fromarray(gray + 1 + 2 * index + 4 * (label == "b")
                                                                + 8 * ("train", "val", "test").index(split)))

    root = tmp_path / "modes"
    _given_split_folder(root, image)
    cmyk.save(root / "test" / "a" / "cmyk.tiff")
    assert Image.open(root / "train" / "b" / "0.png").mode == "I;16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Pillow's palette-transparency warning would be caught here
        data = load_dataset(str(root))
    assert [w.category for w in caught] == [DataIntegrityWarning] * len(data.data_warnings)
    assert [line.split(" (")[0] for line in data.data_warnings] == [
        f"the {split} split holds images of 2 shapes" for split in ("train", "val", "test")]
    train = dict(zip(["a0", "a1", "b0", "b1"], data.train.images, strict=True))
    assert all(image.dtype == np.uint8 for split in ("train", "val", "test") for image in data.split(split).images)
    assert np.array_equal(train["a0"], np.asarray(palette.convert("RGB")))
    assert np.array_equal(train["a1"], colour)  # RGBA: the alpha channel is dropped
    assert train["b0"].shape == (8, 8)
    # 16-bit: scaled from 0..65535 to 0..255 (Pillow's own conversion would clip everything above 255)
    assert train["b0"][0, 0] == 255 and train["b0"][0, 1] == 128 and train["b0"][0, 2] == round(2 * 1040 * 255 / 65535)
    assert np.array_equal(train["b1"], gray)  # LA: grayscale, the alpha channel dropped
    assert np.array_equal(data.val.images[0], np.asarray(transparent.convert("RGBA").convert("RGB")))
    assert set(np.unique(data.val.images[2]).tolist()) == {0, 255}  # 1-bit
    cmyk_index = [i for i, label in enumerate(data.test.labels) if label == 0][-1]  # sorted: 0, 1, cmyk
    assert np.array_equal(data.test.images[cmyk_index], np.asarray(cmyk.convert("RGB")))


def test_twelve_bit_scans_in_sixteen_bit_files_use_the_full_range(tmp_path):
    rng = np.random.default_rng(1)

    def image(split, label, index):
        scan = rng.integers(0, 4096, (8, 8)).astype(np.uint16)
        scan[0, 0] = 4095 if (split, label, index) == ("train", "a", 0) else scan[0, 0]
        return Image.fromarray(scan)

    _given_split_folder(tmp_path / "twelve", image)
    data = load_dataset(str(tmp_path / "twelve"))
    assert data.train.images[0][0, 0] == 255  # 4095 is the top of 12 bits: one factor, 255 / 4095, for all
    raw = np.asarray(Image.open(tmp_path / "twelve" / "val" / "a" / "0.png"))
    assert np.array_equal(data.val.images[0], np.rint(raw.astype(np.float64) * 255 / 4095).astype(np.uint8))


@pytest.mark.slow  # a real Ray search (about a minute here); its short form: the load_dataset tests above
def test_a_search_says_possible_leakage_at_start_and_logs_it_on_its_parent_run(ray_local, tmp_path, breastmnist,
                                                                                capsys):
    """The warning is checked once, on the driver, said in the search's start output (before the trials)
    and kept as the parent MLflow run's ``data_warnings`` param; the search still runs."""
    from mlflow.tracking import MlflowClient

    from tuner.search import SearchRequest, run_search

    arrays = _arrays(breastmnist)
    arrays["test_images"][:2] = arrays["train_images"][:2]
    arrays["test_labels"][:2] = arrays["train_labels"][:2]
    outcome = run_search(SearchRequest(space="quick", dataset=_save(tmp_path, arrays, "leaky"), num_samples=1,
                                       max_epochs=1, pins={"head": "linear"}, storage=str(tmp_path / "results"),
                                       experiment="leaky"))
    assert outcome.completed == 1
    out = capsys.readouterr().out
    said = ("medtune: warning: data set 'leaky': possible leakage: 2 test image(s) are exact copies of train images, "
            "so test scores are optimistic.")
    assert out.index("medtune: search 'leaky'") < out.index(said)  # in the start output
    params = MlflowClient(outcome.tracking_uri).get_run(outcome.parent_run_id).data.params
    assert json.loads(params["data_warnings"]) == [said.split("'leaky': ")[1] + " Remove the copies from one of "
                                                   "the splits."]

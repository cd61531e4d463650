"""The input pipeline (``tuner.data.batches``, ``tuner.training.inputs``): images prepared once per trial
give the per-image transform's pixels bit for bit, unaugmented loaders give the old batches, and the
batched augmentation is torchvision's ``RandomAffine`` (the same warp for the same parameters, the same
distribution of parameters), drawn from the loader's generator so that a resumed trial is exact."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from tests.sessions import straight_and_resumed
from tuner._torchvision import torchvision
from tuner.config import make_trial_config
from tuner.data import DatasetSplits, ImageDataset, Split, batches, build_transform
from tuner.data.batches import AffineParams, BatchTransform, PreparedImages, affine_batch, draw_affine, prepare_split
from tuner.data.transforms import AUGMENT_ROTATION_DEG, AUGMENT_SHEAR_DEG, AUGMENT_SHIFT
from tuner.spec import IMAGENET_PREPROCESSING, Preprocessing
from tuner.training import inputs
from tuner.training.inputs import build_loaders
from tuner.training.session import LocalSession
from tuner.training.trial import run_trial

v2 = torchvision.transforms.v2
HALF = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation="bicubic")


def _colour_split(n: int = 6) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (n, 30, 26, 3), dtype=np.uint8), np.arange(n) % 2)


def _ragged_split() -> Split:
    rng = np.random.default_rng(1)
    return Split([rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((30, 40), (28, 28), (50, 33))],
                 np.array([0, 1, 0]))


@pytest.mark.parametrize(("size", "resize", "preprocessing"), [(28, None, IMAGENET_PREPROCESSING),
                                                               (64, None, HALF), (24, 32, IMAGENET_PREPROCESSING)])
def test_prepared_pixels_are_the_per_image_transforms(small_data, size, resize, preprocessing):
    old = build_transform(size, augment=False, resize_size=resize, preprocessing=preprocessing)
    for split in (small_data.val, _colour_split(), _ragged_split()):
        prepared = PreparedImages(split, prepare_split(split, size, resize, preprocessing.interpolation),
                                  BatchTransform(preprocessing, augment=False))
        assert prepared.prepared.images.dtype == torch.uint8
        assert prepared.prepared.images.shape[1] == (3 if split.images[0].ndim == 3 else 1)  # grayscale: 1 channel
        for index in range(len(split)):
            assert torch.equal(prepared[index][0], old(split.images[index]))


def test_unaugmented_loaders_give_the_old_batches(small_data):
    """Against the per-image pipeline's loaders (ImageDataset + build_transform, shuffled by the same
    seeded generator): the same batches, in the same order, for two epochs."""
    config = make_trial_config({"image_size": 40, "batch_size": 16, "weights": "none"})
    new = build_loaders(small_data, config, HALF, torch.Generator().manual_seed(5), torch.device("cpu"))
    transform = build_transform(40, augment=False, preprocessing=HALF)
    old_train = torch.utils.data.DataLoader(ImageDataset(small_data.train, transform), batch_size=16, shuffle=True,
                                            generator=torch.Generator().manual_seed(5))
    old_val = torch.utils.data.DataLoader(ImageDataset(small_data.val, transform), batch_size=128)
    for _ in range(2):
        for (new_images, new_labels), (old_images, old_labels) in zip(new[0], old_train, strict=True):
            assert torch.equal(new_images, old_images) and torch.equal(new_labels, old_labels)
    for (new_images, new_labels), (old_images, old_labels) in zip(new[1], old_val, strict=True):
        assert torch.equal(new_images, old_images) and torch.equal(new_labels, old_labels)


def test_batched_warp_is_torchvisions_affine():
    images = torch.randint(0, 256, (24, 1, 48, 40), dtype=torch.uint8)
    params = draw_affine(24, 48, 40, torch.Generator().manual_seed(1))
    warped = affine_batch(images.float(), params)
    for i in range(24):
        expected = v2.functional.affine(images[i], angle=float(params.angle[i]), scale=1.0,
                                        translate=[int(params.tx[i]), int(params.ty[i])],
                                        shear=[float(params.shear[i]), 0.0], fill=0,
                                        interpolation=v2.InterpolationMode.NEAREST)
        assert torch.equal(warped[i], expected.float())
    identity = AffineParams(*(torch.zeros(2, dtype=torch.float64) for _ in range(4)))
    assert torch.equal(affine_batch(images[:2].float(), identity), images[:2].float())


def test_augmentation_parameters_are_distributed_as_torchvisions():
    """20,000 draws each: ours (per image, from a generator) against torchvision's RandomAffine as the
    per-image transform configures it (from the global stream). Same family: no scale, no y-shear, no
    flips; whole-pixel shifts within 10% of the side; each parameter's distribution the same (KS)."""
    n, height, width = 20_000, 128, 96
    ours = draw_affine(n, height, width, torch.Generator().manual_seed(0))
    affine = v2.RandomAffine(degrees=AUGMENT_ROTATION_DEG, translate=(AUGMENT_SHIFT, AUGMENT_SHIFT),
                             shear=AUGMENT_SHEAR_DEG)
    image = torch.zeros(1, height, width)
    torch.manual_seed(0)
    theirs = [affine.make_params([image]) for _ in range(n)]
    assert {p["scale"] for p in theirs} == {1.0} and {p["shear"][1] for p in theirs} == {0.0}
    columns = {"angle": (ours.angle, [p["angle"] for p in theirs]),
               "tx": (ours.tx, [p["translate"][0] for p in theirs]),
               "ty": (ours.ty, [p["translate"][1] for p in theirs]),
               "shear": (ours.shear, [p["shear"][0] for p in theirs])}
    for name, (mine, reference) in columns.items():
        mine, reference = mine.numpy(), np.array(reference, dtype=float)
        assert ks_2samp(mine, reference).pvalue > 1e-3, name
        assert mine.min() >= reference.min() - 1 and mine.max() <= reference.max() + 1, name
    for name, limit in (("tx", width), ("ty", height)):
        mine = columns[name][0]
        assert torch.equal(mine, mine.round()) and mine.abs().max() <= round(AUGMENT_SHIFT * limit)
        assert set(np.unique(mine.numpy())) == set(np.unique(columns[name][1])), name  # the same pixel shifts
    # drawn per image, independently: neighbouring images' angles are uncorrelated
    assert abs(np.corrcoef(ours.angle[:-1].numpy(), ours.angle[1:].numpy())[0, 1]) < 0.03


def test_augmentation_draws_from_the_loader_generator(small_data):
    config = make_trial_config({"image_size": 32, "batch_size": 16, "weights": "none", "augment": True})

    def first_batch(seed: int) -> torch.Tensor:
        loaders = build_loaders(small_data, config, HALF, torch.Generator().manual_seed(seed), torch.device("cpu"))
        return next(iter(loaders[0]))[0]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    one, again, other = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    assert torch.equal(one, again) and not torch.equal(one, other)
    assert loaders_are_augmented(small_data, config)


def loaders_are_augmented(data: DatasetSplits, config: dict) -> bool:
    """No image of the first training batch is any unaugmented training image (each was warped)."""
    loaders = build_loaders(data, config, HALF, torch.Generator().manual_seed(1), torch.device("cpu"))
    batch = next(iter(loaders[0]))[0].flatten(1)
    plain = torch.stack([loaders[0].dataset[i][0] for i in range(len(data.train))]).flatten(1)
    return bool(torch.cdist(batch, plain).min(dim=1).values.min() > 1e-3)


def test_an_augmented_trial_resumes_exactly(tiny_data, tmp_path):
    config = {"backbone": "resnet18", "weights": "none", "image_size": 28, "batch_size": 16, "epochs": 2,
              "augment": True, "seed": 4}
    with contextlib.redirect_stdout(io.StringIO()):
        straight, resumed = straight_and_resumed(config, tiny_data, tmp_path, crash_after=1)
    assert [r["epoch"] for r in resumed.history] == [2] and resumed.history[0] == straight.history[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_pipeline_runs_on_cuda(small_data):
    """On a GPU: the batches are made on the device, unaugmented ones equal the CPU's."""
    config = make_trial_config({"image_size": 64, "batch_size": 16, "weights": "none"})
    cuda = build_loaders(small_data, config, HALF, torch.Generator().manual_seed(0), torch.device("cuda"))
    cpu = build_loaders(small_data, config, HALF, torch.Generator().manual_seed(0), torch.device("cpu"))
    (gpu_images, gpu_labels), (cpu_images, _) = next(iter(cuda[1])), next(iter(cpu[1]))
    assert gpu_images.is_cuda and gpu_labels.is_cuda
    assert torch.allclose(gpu_images.cpu(), cpu_images, atol=1e-6)
    augmented = build_loaders(small_data, {**config, "augment": True}, HALF, torch.Generator().manual_seed(0),
                              torch.device("cuda"))
    assert next(iter(augmented[0]))[0].is_cuda


def test_a_split_at_the_target_size_is_the_trials_without_a_copy(tiny_data, tmp_path, monkeypatch):
    """A split already at ``image_size`` is prepared without a copy, so the trials on a node share Ray's
    one copy of it. Through the trial: on read-only arrays (what the object store hands a worker) it
    trains, on the data's own memory, to the numbers a private writable copy gives."""
    colour = Split(np.random.default_rng(2).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8), np.arange(4) % 2)
    for split in (tiny_data.train, colour):
        assert np.shares_memory(prepare_split(split, 28, None, "bilinear").images.numpy(), split.images)
        assert np.shares_memory(prepare_split(split, 28, 28, "bilinear").images.numpy(), split.images)
        assert not np.shares_memory(prepare_split(split, 32, None, "bilinear").images.numpy(), split.images)

    def read_only(split: Split) -> Split:
        images = split.images.copy()
        images.setflags(write=False)
        return dataclasses.replace(split, images=images)

    shared = dataclasses.replace(tiny_data, train=read_only(tiny_data.train), val=read_only(tiny_data.val),
                                 test=read_only(tiny_data.test))
    prepared: list[tuple[Split, torch.Tensor]] = []

    def recording(split, *args):
        result = batches.prepare_split(split, *args)
        prepared.append((split, result.images))
        return result

    monkeypatch.setattr(inputs, "prepare_split", recording)
    config = {"backbone": "resnet18", "weights": "none", "image_size": 28, "batch_size": 16, "epochs": 1,
              "augment": True, "seed": 3}
    runs = []
    for name, data in (("shared", shared), ("copy", tiny_data)):
        session = LocalSession(tmp_path / name)
        with contextlib.redirect_stdout(io.StringIO()):
            run_trial(config, data, session)
        runs.append({k: session.history[0][k] for k in ("train_loss", "val_auc", "test_auc")})
    assert len(prepared) == 6 and all(np.shares_memory(images.numpy(), split.images) for split, images in prepared)
    assert runs[0] == runs[1]

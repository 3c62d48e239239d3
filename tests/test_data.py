"""Embedded datasets and the on-disk loaders."""
import numpy as np
import pytest
import torch

from survey_lib.data import (DIGITS_MEAN, DIGITS_STD, DatasetNotFoundError, DigitsDataset, LFWSubset,
                             PhotoCrops, digits_split, load_photo, load_torchvision_dataset, make_loader)


def test_digits_split_is_fixed_and_stratified():
    s = digits_split()
    assert len(s.x_train) == 1257 and len(s.x_val) == 180 and len(s.x_test) == 360
    assert s.x_train.shape[1:] == (8, 8) and 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    counts = np.bincount(s.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 360 / 10 per class, +-1
    s2 = digits_split()
    assert np.array_equal(s.y_test, s2.y_test) and np.array_equal(s.x_test, s2.x_test)
    # the stated normalisation constants are the training split's statistics
    assert s.x_train.mean() == pytest.approx(DIGITS_MEAN, abs=1e-3)
    assert s.x_train.std() == pytest.approx(DIGITS_STD, abs=1e-3)


def test_digits_dataset_resize_rule_and_augmentation():
    raw = DigitsDataset(train=False, img_size=8)
    s = digits_split()
    torch.testing.assert_close(DigitsDataset.denormalize(raw.images[:, 0]), torch.from_numpy(s.x_test), atol=1e-5, rtol=0)
    up = DigitsDataset(train=False, img_size=32)
    assert up[0][0].shape == (1, 32, 32) and isinstance(up[0][1], int)
    # bilinear upsampling preserves the mean intensity of the image (up to border effects)
    assert abs(DigitsDataset.denormalize(up.images).mean() - DigitsDataset.denormalize(raw.images).mean()) < 0.01
    aug = DigitsDataset(train=True, img_size=32, augment=True)
    torch.manual_seed(0)
    a, b = aug[0][0], aug[0][0]
    assert not torch.equal(a, b)  # random shifts
    assert DigitsDataset(train=True, in_chans=3)[0][0].shape == (3, 32, 32)


def test_label_fraction_is_stratified():
    ds = DigitsDataset(train=True, label_fraction=0.1)
    assert abs(len(ds) - 126) <= 1
    assert torch.bincount(ds.targets, minlength=10).min() >= 12
    with pytest.raises(ValueError, match="label_fraction"):
        DigitsDataset(label_fraction=0.0)


def test_photos_and_lfw_are_offline_and_sized():
    img = load_photo("astronaut", size=64)
    assert img.shape == (3, 64, 64) and 0.0 <= img.min() and img.max() <= 1.0
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("lena")
    crops = PhotoCrops(img_size=24, length=10)
    x1, y1 = crops[3]
    x2, y2 = crops[3]
    assert x1.shape == (3, 24, 24) and torch.equal(x1, x2) and y1 == y2  # deterministic per index
    lfw_tr, lfw_te = LFWSubset(train=True), LFWSubset(train=False)
    assert len(lfw_tr) == 125 and len(lfw_te) == 50
    assert lfw_te.targets.sum() == 25  # stratified: half faces


def test_missing_dataset_root_names_the_expected_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "cifar-10-batches-py")):
        load_torchvision_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        load_torchvision_dataset("flowers102", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_torchvision_dataset("imagenet", root=tmp_path)


def test_cifar10_loads_from_a_local_folder(tmp_path, monkeypatch):
    """The real torchvision loader on a tiny CIFAR-10 folder written here (same file format)."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    import torchvision.datasets.cifar as tv_cifar

    # skip torchvision's md5 checks of the official files; everything else is the real loader
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    ds = load_torchvision_dataset("cifar10", root=tmp_path, train=False)
    assert len(ds) == 4 and ds[0][0].size == (32, 32)


def test_make_loader_is_reproducible():
    ds = DigitsDataset(train=False, img_size=8)
    order = lambda: torch.cat([y for _, y in make_loader(ds, 50, shuffle=True, seed=3)])  # noqa: E731
    assert torch.equal(order(), order())

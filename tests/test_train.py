"""The training loop: learning, determinism, atomic checkpoints, exact resume, clear errors."""
import os

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from survey_lib.data import DigitsDataset
from survey_lib.recipes.vit import vit_for_profile
from survey_lib.train import (CheckpointMismatchError, TrainConfig, cosine_lr, fit, load_checkpoint,
                              save_checkpoint, seed_everything)


def _small_digits():
    ds = DigitsDataset(train=True, img_size=16, augment=True)
    ds.images, ds.targets = ds.images[:192], ds.targets[:192]
    return ds


def _model(seed=0, **kw):
    seed_everything(seed)
    return vit_for_profile("smoke", img_size=16, **kw)


CFG = dict(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=1, progress=False, label_smoothing=0.1)


def test_same_seed_same_losses_and_it_learns():
    ds = _small_digits()
    h1 = fit(_model(), ds, config=TrainConfig(**CFG))
    h2 = fit(_model(), ds, config=TrainConfig(**CFG))
    assert h1.step_losses == h2.step_losses  # bit-identical on CPU
    h3 = fit(_model(), ds, config=TrainConfig(**{**CFG, "seed": 1}))
    assert h3.step_losses != h1.step_losses
    assert len(h1.rows) == 3 and {"train_loss", "train_acc", "lr", "seconds"} <= set(h1.rows[0])
    assert h1.rows[-1]["train_loss"] < h1.rows[0]["train_loss"]


def test_resume_continues_exactly(tmp_path):
    ds, val = _small_digits(), DigitsDataset(train=False, img_size=16)
    full = fit(_model(), ds, val, TrainConfig(**CFG))
    # interrupt a run after its first epoch (the second evaluation raises), then resume it
    ckpt2 = tmp_path / "interrupted.pt"

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def stop_after_first_epoch(model):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop
        return {}

    with pytest.raises(Stop):
        fit(_model(), ds, None, TrainConfig(**{**CFG, "checkpoint_path": str(ckpt2)}), eval_fn=stop_after_first_epoch)
    assert load_checkpoint(ckpt2)["epoch"] == 1
    # a differently initialised model: everything must come from the checkpoint
    resumed = fit(_model(seed=123), ds, val, TrainConfig(**{**CFG, "checkpoint_path": str(ckpt2)}))
    assert resumed.step_losses == full.step_losses
    assert [r["train_loss"] for r in resumed.rows] == [r["train_loss"] for r in full.rows]


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    ds = _small_digits()
    ckpt = tmp_path / "a.pt"
    fit(_model(), ds, config=TrainConfig(**{**CFG, "epochs": 1, "checkpoint_path": str(ckpt)}))
    other = vit_for_profile("smoke", img_size=16, embed_dim=64)
    with pytest.raises(CheckpointMismatchError, match="different architecture.*embed"):
        fit(other, ds, config=TrainConfig(**{**CFG, "checkpoint_path": str(ckpt)}))
    with pytest.raises(CheckpointMismatchError, match="class"):
        load_checkpoint(ckpt, nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"x": 2})
    monkeypatch.undo()
    assert torch.load(path)["x"] == 1  # the old checkpoint survives a failed write
    assert os.listdir(tmp_path) == ["c.pt"]  # and no temporary file is left behind


def test_cosine_schedule():
    lrs = [cosine_lr(s, 100, 10, 1.0, 0.0) for s in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


def test_non_finite_loss_and_empty_data_raise():
    ds = TensorDataset(torch.randn(8, 1, 16, 16), torch.zeros(8, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="lower lr"):
        fit(_model(), ds, config=TrainConfig(epochs=1, batch_size=4, progress=False),
            step_fn=lambda m, b: __import__("survey_lib.train", fromlist=["StepOutput"]).StepOutput(m(b[0]).sum() * float("nan")))
    with pytest.raises(ValueError, match="no batch"):
        fit(_model(), TensorDataset(torch.randn(2, 1, 16, 16), torch.zeros(2, dtype=torch.long)),
            config=TrainConfig(epochs=1, batch_size=4, drop_last=True, progress=False))

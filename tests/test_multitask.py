"""The multi-task self-distillation framework of the thesis (S4): rotation labels, the masked view,
the supervised-only gradient, the loss switches, the semi-supervised labels, and clear errors."""
import copy

import pytest
import torch
import torch.nn.functional as F

from survey_lib.data import DigitsDataset
from survey_lib.models.vit import VisionTransformer
from survey_lib.objectives.dino import DINO, DINOLoss
from survey_lib.objectives.multitask import UNLABELLED, MultiTaskDINO, build_multitask, multitask_step
from survey_lib.data import (LabelledUnlabelledBatches, MultiTaskViews, PartiallyLabelled, fixed_steps_loader,
                             labelled_indices, labelled_unlabelled_loader, mask_rectangle, random_rotation,
                             rotate_quarter_turns, sample_mask_boxes)
from survey_lib.recipes.base import RunContext
from survey_lib.recipes.multitask import train_multitask
from survey_lib.train import TrainConfig, fit

TINY_VIT = dict(img_size=16, patch_size=8, in_chans=1, num_classes=0, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0)
HEAD = dict(out_dim=8, use_bn=False, hidden_dim=16, bottleneck_dim=8)


def tiny_model(epochs=2, n_local=2, **switches) -> MultiTaskDINO:
    torch.manual_seed(0)
    return build_multitask(VisionTransformer(**TINY_VIT), 16, 10, epochs, n_local_crops=n_local, **HEAD, **switches)


def asymmetric_images(B=32, C=1, H=16, W=16, seed=0):
    """Images with no rotational symmetry (distinct random pixels), so every quarter turn is distinguishable."""
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))


def plain_views(n_local=2, **kw) -> MultiTaskViews:
    """Views without photometric noise and with full-size global crops: a global view is the image, turned."""
    kw = {**dict(global_size=16, local_size=8, n_local_crops=n_local, global_scale=(1.0, 1.0), color_jitter=0.0,
                 blur_sigma=None, solarize_prob=0.0), **kw}
    return MultiTaskViews(**kw)


def batch_for(views: MultiTaskViews, B=8, labels=None, seed=0):
    torch.manual_seed(seed)
    imgs = asymmetric_images(B, seed=seed)
    y = torch.arange(B) % 10 if labels is None else torch.as_tensor(labels)
    return views.collate(list(zip(imgs, y.tolist())))


# ---------------------------------------------------------------------------------------------
# rotation labels
# ---------------------------------------------------------------------------------------------
def test_rotation_labels_match_the_applied_rotation():
    x = asymmetric_images(64)
    rotated, labels = random_rotation(x, prob=0.75, generator=torch.Generator().manual_seed(1))
    assert labels.shape == (64,) and labels.dtype == torch.long
    assert set(labels.tolist()) == {0, 1, 2, 3}
    for i in range(64):
        k = int(labels[i])
        assert torch.equal(rotated[i], torch.rot90(x[i], k, dims=(-2, -1)))  # label k = k quarter turns CCW
        for other in set(range(4)) - {k}:  # and no other turn gives that image
            assert not torch.equal(rotated[i], torch.rot90(x[i], other, dims=(-2, -1)))
    # 90 degrees counter-clockwise, written out: the top row becomes the left column, read bottom-up
    img = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert rotate_quarter_turns(img, torch.tensor([1]))[0, 0].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
    upright, zeros = random_rotation(x, prob=0.0)
    assert torch.equal(upright, x) and not zeros.any()
    _, always = random_rotation(x, prob=1.0)
    assert (always > 0).all()


def test_rotation_labels_are_uniform_over_four_turns():
    _, labels = random_rotation(torch.zeros(8000, 1, 4, 4), prob=0.75, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(labels, minlength=4).float() / 8000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)


def test_views_rotation_labels_match_the_views():
    views = plain_views()
    imgs = asymmetric_images(16)
    out = views(imgs)
    assert out["rotations"].shape == (3, 16) and len(out["views"]) == 3 + 2
    for j in range(2):  # global views: the whole image, turned by its label
        for i in range(16):
            assert torch.allclose(out["views"][j][i], torch.rot90(imgs[i], int(out["rotations"][j, i]), dims=(-2, -1)), atol=1e-5)
    for i in range(16):  # the masked view, turned back, is the image outside the rectangle and 0 inside
        back = torch.rot90(out["views"][2][i], -int(out["rotations"][2, i]), dims=(-2, -1))
        m = out["mask"][i]
        assert torch.allclose(back[:, ~m], imgs[i][:, ~m], atol=1e-5)
        assert torch.all(back[:, m] == 0.0)
    assert all(v.shape == (16, 1, 8, 8) for v in out["views"][3:])  # local views: upright, smaller


# ---------------------------------------------------------------------------------------------
# the masked view
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [(0.4, 0.6), (0.1, 0.2), (0.7, 0.9)])
@pytest.mark.parametrize("hw", [(32, 32), (16, 16), (24, 40)])
def test_masked_view_masks_the_requested_fraction(scale, hw):
    H, W = hw
    x = torch.randn(400, 2, H, W, generator=torch.Generator().manual_seed(0))
    masked, mask = mask_rectangle(x, scale=scale, fill=-7.0, generator=torch.Generator().manual_seed(1))
    frac = mask.float().mean(dim=(1, 2))  # (B,) fraction of the view covered
    assert frac.min() >= scale[0] - 1e-9 and frac.max() <= scale[1] + 1e-9, (frac.min(), frac.max())
    assert abs(float(frac.mean()) - sum(scale) / 2) < 0.03  # uniform over the range
    assert frac.std() > 0  # the fraction varies
    m = mask[:, None].expand_as(x)
    assert torch.all(masked[m] == -7.0) and torch.equal(masked[~m], x[~m])
    rows, cols = mask.any(2), mask.any(1)  # one rectangle: the mask is the outer product of its rows and columns
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])


def test_a_single_mask_scale_is_met_to_one_pixel_column():
    _, mask = mask_rectangle(torch.zeros(200, 1, 32, 32), scale=0.5)
    frac = mask.float().mean(dim=(1, 2))
    assert (frac - 0.5).abs().max() <= 1 / 32


def test_views_mask_the_requested_fraction_of_the_masked_view():
    views = MultiTaskViews(global_size=16, local_size=8, n_local_crops=1, mask_scale=(0.5, 0.6))
    out = views(asymmetric_images(64))
    frac = out["mask"].float().mean(dim=(1, 2))
    assert frac.min() >= 0.5 and frac.max() <= 0.6
    no_mask = MultiTaskViews(global_size=16, local_size=8, n_local_crops=1, masked_view=False)(asymmetric_images(4))
    assert no_mask["mask"] is None and len(no_mask["views"]) == 3 and no_mask["rotations"].shape == (2, 4)


def test_mask_boxes_stay_inside_the_image():
    boxes = sample_mask_boxes(500, 20, 30, (0.3, 0.6), generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 20).all() and (left + w <= 30).all()


# ---------------------------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------------------------
def _grads(module):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("supervised_views,rotate_prob", [("upright", 0.75), ("all", 0.75), ("upright", 0.0)])
def test_supervised_only_gradient_equals_the_plain_supervised_loss(supervised_views, rotate_prob):
    model = tiny_model(use_dino=False, use_rotation=False, supervised_views=supervised_views, label_smoothing=0.1)
    backbone, head = copy.deepcopy(model.student.backbone), copy.deepcopy(model.extra_heads["supervised"])
    views = plain_views(global_scale=(0.4, 1.0), rotate_prob=rotate_prob)
    labels = torch.tensor([3, UNLABELLED, 1, 7, UNLABELLED, 0, 9, 2, 5, 5, 4, 8])
    batch = batch_for(views, B=12, labels=labels, seed=3)

    out = multitask_step(model, batch)
    out.loss.backward()
    assert set(model.loss_weights) == {"supervised"}

    # the plain supervised loss: a classifier (backbone + linear head) on the labelled global views
    x = torch.cat(batch["views"][:3])  # (3B, C, H, W): g1, g2, masked view
    y = batch["labels"].repeat(3)
    keep = y != UNLABELLED
    if supervised_views == "upright":
        keep &= batch["rotations"].reshape(-1) == 0
    plain = 2.5 * F.cross_entropy(head(backbone.embed(x[keep])), y[keep], label_smoothing=0.1)
    plain.backward()
    assert torch.allclose(out.loss, plain, atol=1e-6)
    ours, ref = _grads(model.student.backbone), _grads(backbone)
    for n in ref:
        assert torch.allclose(ours[n], ref[n], atol=1e-6), n
    for n, g in _grads(model.extra_heads["supervised"]).items():
        assert torch.allclose(g, dict(head.named_parameters())[n].grad, atol=1e-6), n
    assert all(p.grad is None for p in model.student.head.parameters())  # the DINO head got nothing
    assert all(p.grad is None for p in model.teacher.parameters())


def test_distillation_term_is_dinos_loss():
    model = tiny_model(use_supervised=False, use_rotation=False)
    dino = DINO(copy.deepcopy(model.student.backbone), copy.deepcopy(model.student.head), copy.deepcopy(model.loss))
    dino.teacher.load_state_dict(model.teacher.state_dict())
    batch = batch_for(MultiTaskViews(global_size=16, local_size=8, n_local_crops=2), B=6)
    ours = model(batch["views"], batch["labels"], batch["rotations"])
    ref = dino(batch["views"])
    assert model.loss.n_global_crops == 3 and model.loss.ncrops == 5  # the teacher sees g1, g2 and the masked view
    assert torch.allclose(ours.loss, ref.loss) and torch.allclose(ours.losses["dino"], ref.losses["dino"])
    assert torch.allclose(model.loss.center, dino.loss.center)  # the same centre update (side effect)


def test_each_switch_controls_its_loss_and_head():
    batch = batch_for(MultiTaskViews(global_size=16, local_size=8, n_local_crops=2), B=6)
    for switches, names in [({}, {"dino", "supervised", "rotation"}),
                            (dict(use_dino=False), {"supervised", "rotation"}),
                            (dict(use_supervised=False), {"dino", "rotation"}),
                            (dict(use_rotation=False), {"dino", "supervised"}),
                            (dict(use_dino=False, use_supervised=False), {"rotation"})]:
        model = tiny_model(**switches)
        out = model(batch["views"], batch["labels"], batch["rotations"])
        assert set(out.losses) == names and set(model.losses_on) == names
        assert set(model.extra_heads) == names - {"dino"}
        expected = sum({"dino": 1.0, "supervised": 2.5, "rotation": 1.0}[k] * out.losses[k] for k in names)
        assert torch.allclose(out.loss, expected)
        assert {f"loss_{k}" for k in names} <= set(out.metrics)
    model = tiny_model(use_dino=False, use_supervised=False)
    out = model(batch["views"], batch["labels"], batch["rotations"])
    rotation_ce = F.cross_entropy(model.extra_heads["rotation"](out.student_feats), batch["rotations"].reshape(-1))
    assert torch.allclose(out.loss, rotation_ce)  # the rotation head sees the 3 global-sized views, crop-major


def test_unlabelled_images_feed_no_supervised_gradient():
    model = tiny_model(use_dino=False, use_rotation=False)
    batch = batch_for(plain_views(), B=6, labels=[UNLABELLED] * 6)
    out = multitask_step(model, batch)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert out.metrics["sup_views"] == 0.0


def test_fit_trains_the_framework_and_updates_the_teacher():
    model = tiny_model(epochs=2)
    t0 = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    digits = DigitsDataset(train=True, img_size=16)
    data = PartiallyLabelled(torch.utils.data.Subset(digits, range(48)), labelled=range(0, 48, 4))
    views = MultiTaskViews(global_size=16, local_size=8, n_local_crops=2, mean=[0.3054], std=[0.3761], inputs_normalized=True)
    loader = fixed_steps_loader(data, batch_size=16, samples_per_epoch=32, seed=0, collate_fn=views.collate)
    hist = fit(model, loader, config=TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0, progress=False),
               step_fn=multitask_step)
    assert len(hist.rows) == 2 and len(hist.step_losses) == 4
    assert {"loss_dino", "loss_supervised", "loss_rotation", "rot_acc", "teacher_entropy"} <= set(hist.rows[-1])
    assert any(not torch.equal(t0[k], v) for k, v in model.teacher.state_dict().items())
    assert model.classify(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    assert model.predict_rotation(torch.zeros(3, 1, 16, 16)).shape == (3, 4)


# ---------------------------------------------------------------------------------------------
# labelled subsets
# ---------------------------------------------------------------------------------------------
def test_labelled_indices_are_the_digits_label_fraction_subset():
    full = DigitsDataset(train=True, img_size=8)
    for f in (0.05, 0.1, 0.25):
        idx = labelled_indices(full.targets, f)
        sub = DigitsDataset(train=True, img_size=8, label_fraction=f)
        assert torch.equal(full.targets[idx], sub.targets) and torch.equal(full.images[idx], sub.images)
        assert abs(len(idx) - f * len(full)) <= 1
    assert len(labelled_indices(full.targets, 1.0)) == len(full)
    semi = PartiallyLabelled(full, labelled_indices(full.targets, 0.1))
    labels = [semi[i][1] for i in range(len(semi))]
    assert sum(y != UNLABELLED for y in labels) == len(labelled_indices(full.targets, 0.1))


def test_fixed_steps_loader_gives_the_same_steps_whatever_the_data_size():
    small, large = torch.utils.data.TensorDataset(torch.zeros(72, 1)), torch.utils.data.TensorDataset(torch.zeros(1437, 1))
    assert len(fixed_steps_loader(small, 64, 1437)) == len(fixed_steps_loader(large, 64, 1437)) == 23
    seen = [int(i) for i in fixed_steps_loader(torch.utils.data.TensorDataset(torch.arange(10)), 5, 20).sampler]
    assert sorted(seen) == sorted(list(range(10)) * 2)  # two full passes, no image favoured


def test_labelled_plus_unlabelled_batches_hold_a_fixed_number_of_labels():
    n, lab = 100, list(range(0, 100, 10))  # 10% labelled: images 0, 10, ..., 90
    base = torch.utils.data.TensorDataset(torch.arange(n).float()[:, None], torch.arange(n) % 7)
    loader = labelled_unlabelled_loader(base, lab, n_labelled=8, n_unlabelled=16, samples_per_epoch=64, seed=3)
    assert len(loader) == len(fixed_steps_loader(base, 8, 64)) == 8  # the small-data setting's steps at batch 8
    seen_unlabelled, first = [], []
    for x, y in loader:
        first.append(x)
        assert x.shape == (24, 1)
        assert (y[:8] != UNLABELLED).all() and (y[8:] == UNLABELLED).all()
        assert set(int(i) for i in x[:8, 0]) <= set(lab)  # the labelled stream draws only labelled images...
        assert torch.equal(y[:8], x[:8, 0].long() % 7)  # ...with their own labels
        seen_unlabelled += [int(i) for i in x[8:, 0]]
    assert sorted(seen_unlabelled[:100]) == list(range(100))  # the unlabelled stream: one pass over every image
    # seeded: the same seed, the same batches; another seed, other batches
    again = [b[0] for b in labelled_unlabelled_loader(base, lab, 8, 16, 64, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(again, first))
    other = [b[0] for b in labelled_unlabelled_loader(base, lab, 8, 16, 64, seed=4)]
    assert not all(torch.equal(a, b) for a, b in zip(again, other))
    # one pool of all images (the setting before the repair): about fraction * batch labels per batch
    semi = PartiallyLabelled(base, lab)
    per_batch = [int((y != UNLABELLED).sum()) for _, y in fixed_steps_loader(semi, 24, 2400, seed=0)]
    assert abs(sum(per_batch) / len(per_batch) - 2.4) < 0.5
    for bad in (dict(labelled=[]), dict(labelled=[100]), dict(n_labelled=0), dict(n_unlabelled=-1), dict(steps=0)):
        kw = {**dict(labelled=lab, n_base=n, n_labelled=8, n_unlabelled=16, steps=4), **bad}
        with pytest.raises(ValueError):
            LabelledUnlabelledBatches(**kw)


def test_the_semi_supervised_recipe_feeds_the_supervised_loss_every_step():
    from survey_lib.recipes.multitask import RECIPE, multitask_overrides
    cfg = RECIPE.config("smoke", multitask_overrides(label_fraction=0.1, setting="semi_supervised"))
    data = RECIPE.data(cfg, 0)
    batch = next(iter(data.train))
    bs = cfg["train"]["batch_size"]
    assert batch["labels"].shape == (2 * bs,) and int((batch["labels"] != UNLABELLED).sum()) == bs
    cfg = RECIPE.config("smoke", multitask_overrides(label_fraction=0.1, setting="semi_supervised", semi_batches="one_pool"))
    labels = torch.cat([b["labels"] for b in RECIPE.data(cfg, 0).train])
    assert labels.shape == (cfg["samples_per_epoch"],) and 0 < int((labels != UNLABELLED).sum()) < len(labels) / 4
    with pytest.raises(ValueError, match="semi_batches"):
        train_multitask("smoke", setting="semi_supervised", semi_batches="two_pools")


def test_teacher_entropy_ratio_is_one_for_a_uniform_teacher_and_absent_without_distillation():
    import math
    from survey_lib.recipes.multitask import UNIFORM_TEACHER, teacher_entropy_ratio
    from survey_lib.train import History
    h = History(rows=[{"teacher_entropy": 1.0}, {"teacher_entropy": math.log(512)}], step_losses=[])
    assert teacher_entropy_ratio(h, 512) == pytest.approx(1.0) and teacher_entropy_ratio(h, 512) >= UNIFORM_TEACHER
    h = History(rows=[{"teacher_entropy": math.log(512)}, {"teacher_entropy": 0.5 * math.log(512)}], step_losses=[])
    assert teacher_entropy_ratio(h, 512) == pytest.approx(0.5)
    assert teacher_entropy_ratio(History(rows=[{"train_loss": 1.0}], step_losses=[]), 512) is None
    from survey_lib.recipes.multitask import RECIPE, multitask_overrides
    r = RECIPE.run("smoke", 0, overrides=multitask_overrides(label_fraction=0.5), progress=False, cache=False)
    assert r.metrics["teacher_entropy_ratio"] == pytest.approx(teacher_entropy_ratio(r.history, r.config["head"]["out_dim"]))
    assert 0 < r.metrics["teacher_entropy_ratio"] <= 1.0 + 1e-6
    r = RECIPE.run("smoke", 0, overrides=multitask_overrides(label_fraction=0.5, losses=("supervised",)), progress=False,
                   cache=False)
    assert "teacher_entropy_ratio" not in r.metrics


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_clear_errors():
    x = torch.zeros(2, 1, 16, 16)
    for bad in [(0.0, 0.5), (0.4, 1.0), (0.6, 0.4), 1.2, -0.1, (0.5, 1.5)]:
        with pytest.raises(ValueError, match="mask_scale"):
            mask_rectangle(x, scale=bad)
        with pytest.raises(ValueError, match="mask_scale"):
            MultiTaskViews(global_size=16, local_size=8, mask_scale=bad)
    with pytest.raises(ValueError, match="mask_scale"):
        train_multitask("smoke", mask_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="all three losses"):
        tiny_model(use_dino=False, use_supervised=False, use_rotation=False)
    with pytest.raises(ValueError, match="all three losses"):
        train_multitask("smoke", losses=())
    for f in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\]"):
            labelled_indices([0, 1] * 10, f)
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            train_multitask("smoke", label_fraction=f)
    with pytest.raises(ValueError, match="rotate_prob"):
        random_rotation(x, prob=1.5)
    with pytest.raises(ValueError, match="rotate_prob"):
        MultiTaskViews(rotate_prob=-0.2)
    with pytest.raises(ValueError, match="square"):
        rotate_quarter_turns(torch.zeros(2, 1, 8, 6), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown loss"):
        tiny_model(weights={"contrastive": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        tiny_model(weights={"supervised": -1.0})
    with pytest.raises(ValueError, match="supervised_views"):
        tiny_model(supervised_views="rotated")
    with pytest.raises(ValueError, match="num_classes"):
        MultiTaskDINO(VisionTransformer(**TINY_VIT), 16, 0, torch.nn.Identity(), DINOLoss(8, 5, 0.04, 0.04, 0, 1, n_global_crops=3))
    with pytest.raises(ValueError, match="setting"):
        train_multitask("smoke", setting="transductive")
    with pytest.raises(ValueError, match="unknown losses"):
        train_multitask("smoke", losses=("dino", "jigsaw"))
    with pytest.raises(ValueError, match="profile"):
        train_multitask("laptop")
    model = tiny_model()
    batch = batch_for(MultiTaskViews(global_size=16, local_size=8, n_local_crops=2), B=4)
    with pytest.raises(ValueError, match="labels must have shape"):
        model(batch["views"], torch.zeros(3, dtype=torch.long), batch["rotations"])
    with pytest.raises(ValueError, match="rotations must have shape"):
        model(batch["views"], batch["labels"], torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        model(batch["views"], torch.tensor([0, 1, 10, 2]), batch["rotations"])
    with pytest.raises(ValueError, match="no supervised head"):
        tiny_model(use_supervised=False).classify(torch.zeros(1, 1, 16, 16))


def test_the_small_data_benchmark_prints_runs_table_and_verdict(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "small_data_study.py"
    spec = importlib.util.spec_from_file_location("small_data_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--profile", "smoke", "--seeds", "0,1", "--fractions", "0.5", "--methods", "supervised,multitask"])
    out = capsys.readouterr().out
    assert out.count("seed 0:") == 2 and out.count("seed 1:") == 2 and "teacher" in out
    assert "50% framework - baseline:" in out and "over 2 seeds" in out
    with pytest.raises(SystemExit):
        mod.main(["--profile", "smoke", "--methods", "fixmatch"])


# ---------------------------------------------------------------------------------------------
# fine-tuning the framework's encoder (multitask_finetune)
# ---------------------------------------------------------------------------------------------
def test_finetuning_starts_from_the_framework_students_weights():
    from survey_lib.recipes.multitask import RECIPE, multitask_overrides
    from survey_lib.recipes.multitask_finetune import FINETUNE_RECIPE
    framework = RECIPE.run("smoke", 0, overrides=multitask_overrides(label_fraction=0.5), progress=False)
    cfg = FINETUNE_RECIPE.config("smoke", {"study": {"label_fraction": 0.5}})
    data = FINETUNE_RECIPE.data(cfg, 0)
    FINETUNE_RECIPE.prepare(cfg, data, RunContext("smoke", 0, None, True, False))
    assert data.extras["framework_cache"] == "hit"          # the framework run of the same fraction and seed
    model = FINETUNE_RECIPE.build(cfg, data)
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    backbone = framework.model.student.backbone.eval()
    with torch.no_grad():                                    # before any fine-tuning step: the same features
        assert torch.allclose(model.eval().embed(x), backbone.embed(x), atol=1e-6)
    scratch = FINETUNE_RECIPE.build(FINETUNE_RECIPE.config("smoke", {"init": "scratch"}), data)
    with torch.no_grad():
        assert not torch.allclose(scratch.eval().embed(x), backbone.embed(x), atol=1e-3)


def test_finetuning_from_scratch_is_the_supervised_baseline():
    from survey_lib.recipes.multitask import train_supervised_baseline
    from survey_lib.recipes.multitask_finetune import train_multitask_finetune
    base = train_supervised_baseline("smoke", seed=1, label_fraction=0.5, progress=False)
    scratch = train_multitask_finetune("smoke", seed=1, label_fraction=0.5, init="scratch", progress=False)
    assert scratch.metrics["test_acc"] == base.metrics["test_acc"] and scratch.metrics["knn_acc"] == base.metrics["knn_acc"]
    for (k, a), (_, b) in zip(scratch.model.state_dict().items(), base.model.state_dict().items()):
        assert torch.equal(a, b), k
    tuned = train_multitask_finetune("smoke", seed=1, label_fraction=0.5, progress=False)
    assert set(tuned.metrics) >= {"test_acc", "knn_acc", "framework_seconds", "framework_test_acc"}


def test_finetuning_clear_errors():
    from survey_lib.recipes.multitask_finetune import load_framework_encoder, train_multitask_finetune
    with pytest.raises(ValueError, match="init must be one of"):
        train_multitask_finetune("smoke", init="imagenet", progress=False)
    with pytest.raises(ValueError, match="does not fit this classifier"):
        load_framework_encoder(VisionTransformer(**{**TINY_VIT, "num_classes": 10}),
                               VisionTransformer(**{**TINY_VIT, "embed_dim": 2 * TINY_VIT["embed_dim"]}))

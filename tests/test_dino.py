"""DINO (Caron et al. 2021, arXiv:2104.14294): the loss against the paper's equation, the centre and
teacher EMAs against their formulas, the stop-gradient, the schedules, multi-crop, and the errors."""
import math

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from survey_lib.models.vit import VisionTransformer
from survey_lib.objectives import dino as D
from survey_lib.objectives.dino import (DINO, DINOHead, DINOLoss, MultiCropWrapper, collapse_metrics,
                                        dino_step, teacher_momentum)
from survey_lib.data import BatchMultiCrop, MultiCropDataset, MultiCropTransform

TINY_VIT = dict(img_size=16, patch_size=8, in_chans=1, num_classes=0, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0)


def tiny_dino(n_local=2, epochs=2, teacher_update="step", use_bn=False, momentum=0.9) -> DINO:
    torch.manual_seed(0)
    net = VisionTransformer(**TINY_VIT)
    head = DINOHead(16, 8, use_bn=use_bn, hidden_dim=16, bottleneck_dim=8)
    loss = DINOLoss(8, 2 + n_local, 0.04, 0.04, 0, epochs)
    return DINO(net, head, loss, momentum_teacher=momentum, teacher_update=teacher_update)


def crops_for(B=4, n_local=2):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(B, 1, 16, 16, generator=g) for _ in range(2)] + \
           [torch.randn(B, 1, 8, 8, generator=g) for _ in range(n_local)]


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
def paper_loss(student, teacher, center, ncrops, n_global, tau_s, tau_t):
    """Eq. 1-3 written out with Python loops and math.exp / math.log, averaged over pairs and samples."""
    B = student.shape[0] // ncrops
    K = student.shape[1]
    total, terms = 0.0, 0
    for i in range(n_global):
        for v in range(ncrops):
            if v == i:
                continue
            for b in range(B):
                t = [(float(teacher[i * B + b, k]) - float(center[0, k])) / tau_t for k in range(K)]
                zt = sum(math.exp(a) for a in t)
                s = [float(student[v * B + b, k]) / tau_s for k in range(K)]
                zs = sum(math.exp(a) for a in s)
                total += -sum(math.exp(t[k]) / zt * math.log(math.exp(s[k]) / zs) for k in range(K))
            terms += 1
    return total / (terms * B)


def test_loss_equals_the_papers_equation_on_hand_made_logits():
    K, B, ncrops = 5, 3, 4
    student = torch.tensor([[0.1 * ((7 * r + 3 * k) % 11) - 0.5 for k in range(K)] for r in range(ncrops * B)],
                           dtype=torch.float64)
    teacher = torch.tensor([[0.2 * ((5 * r + 2 * k) % 7) - 0.6 for k in range(K)] for r in range(2 * B)],
                           dtype=torch.float64)
    loss_fn = DINOLoss(K, ncrops, 0.04, 0.04, 0, 10, student_temp=0.1).double()
    loss_fn.center.copy_(torch.tensor([[0.05, -0.1, 0.0, 0.2, 0.01]]))
    expected = paper_loss(student, teacher, loss_fn.center, ncrops, 2, 0.1, 0.04)
    got = loss_fn(student, teacher, epoch=0)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_source_sign_variant_is_the_negated_loss_and_switches_change_the_target():
    torch.manual_seed(0)
    s, t = torch.randn(12, 6), torch.randn(6, 6)
    dino = DINOLoss(6, 4, 0.04, 0.04, 0, 5).eval()
    dino.center.fill_(0.3)
    wrong = DINOLoss(6, 4, 0.04, 0.04, 0, 5, variant="source_sign").eval()
    wrong.center.fill_(0.3)
    assert torch.allclose(wrong(s, t), -dino(s, t))
    no_center = DINOLoss(6, 4, 0.04, 0.04, 0, 5, centering=False).eval()
    no_center.center.fill_(5.0)  # tracked but not used
    zero_center = DINOLoss(6, 4, 0.04, 0.04, 0, 5).eval()
    assert torch.allclose(no_center(s, t), zero_center(s, t))
    no_sharp = DINOLoss(6, 4, 0.04, 0.04, 0, 5, sharpening=False).eval()
    assert no_sharp.teacher_temperature(0) == no_sharp.student_temp
    assert paper_loss(s, t, no_sharp.center, 4, 2, 0.1, 0.1) == pytest.approx(no_sharp(s, t).item(), rel=1e-5)


def test_loss_uses_the_warmed_up_teacher_temperature_of_its_epoch():
    torch.manual_seed(5)
    s, t = torch.randn(12, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    loss_fn = DINOLoss(6, 4, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3,
                       nepochs=5).double().eval()
    for epoch, tau_t in [(0, 0.04), (1, 0.055), (2, 0.07), (4, 0.07)]:
        expected = paper_loss(s, t, loss_fn.center, 4, 2, 0.1, tau_t)
        assert loss_fn(s, t, epoch=epoch).item() == pytest.approx(expected, rel=1e-10)


def test_center_update_is_the_ema_of_the_raw_teacher_batch_mean():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(4, 5)
    loss_fn = DINOLoss(5, 4, 0.04, 0.04, 0, 5, center_momentum=0.9)
    c0 = torch.randn(1, 5)
    loss_fn.center.copy_(c0)
    loss_fn(s, t)
    assert torch.allclose(loss_fn.center, 0.9 * c0 + 0.1 * t.mean(0, keepdim=True))
    # eval mode: no side effect
    loss_fn.eval()
    before = loss_fn.center.clone()
    loss_fn(s, t)
    assert torch.equal(loss_fn.center, before)
    assert "center" in loss_fn.state_dict()


def test_center_all_reduce_only_under_torch_distributed(monkeypatch):
    import torch.distributed as dist

    def boom(*a, **k):
        raise AssertionError("all_reduce called in a single process")

    monkeypatch.setattr(dist, "all_reduce", boom)
    t = torch.randn(4, 5)
    loss_fn = DINOLoss(5, 4, 0.04, 0.04, 0, 5, center_momentum=0.0)
    loss_fn(torch.randn(8, 5), t)  # not initialised: must not call all_reduce
    assert torch.allclose(loss_fn.center, t.mean(0, keepdim=True))
    # pretend two processes with the same batch: the reduced mean must be the same
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda x: x.mul_(2))
    loss_fn.center.zero_()
    loss_fn(torch.randn(8, 5), t)
    assert torch.allclose(loss_fn.center, t.mean(0, keepdim=True), atol=1e-6)


def test_teacher_temperature_schedule():
    loss_fn = DINOLoss(4, 4, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3, nepochs=6)
    got = [loss_fn.teacher_temperature(e) for e in range(6)]
    assert got == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07, 0.07])
    assert loss_fn.teacher_temperature(100) == pytest.approx(0.07)  # past the end: the last value
    assert DINOLoss(4, 4, 0.04, 0.07, 0, 3).teacher_temperature(0) == pytest.approx(0.07)  # no warm-up


def test_collapse_metrics_limits():
    K = 8
    uniform = [torch.full((3, K), 1.0 / K)] * 2
    m = collapse_metrics(torch.zeros(12, K), uniform, 4, 0.1)
    assert m["teacher_entropy"] == pytest.approx(math.log(K), rel=1e-5)
    assert m["kl"] == pytest.approx(0.0, abs=1e-5)  # a uniform student copies a uniform teacher
    one_hot = [torch.eye(K)[torch.zeros(3, dtype=torch.long)]] * 2
    m = collapse_metrics(torch.zeros(12, K), one_hot, 4, 0.1)
    assert m["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert m["teacher_marginal_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert m["kl"] == pytest.approx(math.log(K), rel=1e-5)


def test_collapse_metrics_match_their_formulas():
    torch.manual_seed(6)
    K, B, ncrops, tau_s = 7, 5, 4, 0.1
    student = torch.randn(ncrops * B, K, dtype=torch.float64)
    teacher_probs = [torch.softmax(torch.randn(B, K, dtype=torch.float64) / 0.3, -1) for _ in range(2)]
    m = collapse_metrics(student, teacher_probs, ncrops, tau_s)
    log_ps = torch.log_softmax(student / tau_s, -1).chunk(ncrops)
    ent = sum(-(q * q.log()).sum(-1).mean() for q in teacher_probs) / 2
    kls = [(q * (q.log() - log_ps[v])).sum(-1).mean() for i, q in enumerate(teacher_probs) for v in range(ncrops) if v != i]
    marginal = torch.cat(teacher_probs).mean(0)
    assert m["teacher_entropy"] == pytest.approx(float(ent), rel=1e-6)
    assert m["kl"] == pytest.approx(float(sum(kls) / len(kls)), rel=1e-6)
    assert m["teacher_marginal_entropy"] == pytest.approx(float(-(marginal * marginal.log()).sum()), rel=1e-6)


def test_knn_is_dinos_temperature_weighted_vote():
    from survey_lib.evaluate import knn_classify

    # One very close neighbour of class 0 against two farther ones of class 1 (cosines 0.99, 0.5, 0.5):
    # DINO's weights exp(s / 0.07) let the close one win; near-equal weights (large T) give the majority.
    train = torch.tensor([[0.99, (1 - 0.99 ** 2) ** 0.5], [0.5, 0.75 ** 0.5], [0.5, -(0.75 ** 0.5)], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query, q_label = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert knn_classify(train, labels, query, q_label, k=3, temperature=0.07) == 1.0
    assert knn_classify(train, labels, query, q_label, k=3, temperature=100.0) == 0.0
    # Against a direct implementation on random features: top-k cosines, sum of exp(s / T) per class.
    g = torch.Generator().manual_seed(7)
    tr, te = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    y_tr, y_te = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (25,), generator=g)
    correct = 0
    for x, y in zip(te, y_te):
        sims = [float(torch.dot(x, w) / (x.norm() * w.norm())) for w in tr]
        top = sorted(range(60), key=lambda n: -sims[n])[:10]
        votes = [sum(math.exp(sims[n] / 0.07) for n in top if y_tr[n] == c) for c in range(4)]
        correct += int(max(range(4), key=lambda c: votes[c]) == int(y))
    assert knn_classify(tr, y_tr, te, y_te, k=10, temperature=0.07) == pytest.approx(correct / 25)


# ---------------------------------------------------------------------------------------------
# head, wrapper, teacher
# ---------------------------------------------------------------------------------------------
def test_head_weight_norm_and_normalised_bottleneck():
    torch.manual_seed(0)
    head = DINOHead(16, 10, use_bn=True, hidden_dim=32, bottleneck_dim=8).eval()
    W = head.last_layer.weight  # (K, bottleneck), recomputed by the parametrization
    assert torch.allclose(W.norm(dim=1), torch.ones(10), atol=1e-6)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    z = head.forward_bottleneck(torch.randn(5, 16))
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-6)
    assert head(torch.randn(5, 16)).abs().max() <= 1.0 + 1e-5  # logits are cosines
    free = DINOHead(16, 10, norm_last_layer=False, hidden_dim=32, bottleneck_dim=8)
    assert free.last_layer.parametrizations.weight.original0.requires_grad
    assert any(isinstance(m, nn.BatchNorm1d) for m in head.modules())


def test_multicrop_wrapper_groups_sizes_without_changing_results():
    torch.manual_seed(0)
    wrapper = MultiCropWrapper(VisionTransformer(**TINY_VIT), DINOHead(16, 8, hidden_dim=16, bottleneck_dim=8)).eval()
    crops = crops_for(B=3)
    feats, logits = wrapper(crops)
    assert feats.shape == (4 * 3, 16) and logits.shape == (4 * 3, 8)
    one_by_one = torch.cat([wrapper.backbone.embed(c) for c in crops])
    assert torch.allclose(feats, one_by_one, atol=1e-5)


def test_teacher_receives_no_gradient_and_starts_as_a_copy():
    model = tiny_dino(use_bn=True)
    for ps, pt in zip(model.student.parameters(), model.teacher.parameters()):
        assert torch.equal(ps, pt)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    out = dino_step(model, [crops_for(), torch.zeros(4)])
    out.loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert out.loss.requires_grad
    grads = [p.grad for p in model.student.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert {"teacher_entropy", "teacher_marginal_entropy", "kl"} <= set(out.metrics)


def test_optimiser_steps_never_touch_the_teacher():
    """With momentum 1 the EMA keeps the teacher fixed: AdamW (weight decay included) must not move it."""
    from survey_lib.train import TrainConfig, fit

    torch.manual_seed(0)
    net = VisionTransformer(**TINY_VIT)
    model = DINO(net, DINOHead(16, 8, use_bn=True, hidden_dim=16, bottleneck_dim=8),
                 DINOLoss(8, 4, 0.04, 0.04, 0, 2), momentum_teacher=1.0, final_momentum_teacher=1.0)
    teacher0 = {k: v.clone() for k, v in model.teacher.state_dict().items() if "running" not in k and "num_batches" not in k}
    student0 = [p.clone() for p in model.student.parameters()]
    aug = BatchMultiCrop(global_size=16, local_size=8, n_local_crops=2, blur_sigma=None)
    data = [(torch.rand(1, 16, 16), 0) for _ in range(16)]
    loader = torch.utils.data.DataLoader(data, batch_size=8, collate_fn=aug.collate)
    fit(model, loader, config=TrainConfig(epochs=2, batch_size=8, weight_decay=0.5, progress=False), step_fn=dino_step)
    after = model.teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in teacher0.items())
    assert any(not torch.equal(a, b) for a, b in zip(student0, model.student.parameters()))


def test_teacher_momentum_schedule():
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx((0.996 + 1.0) / 2)
    assert teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)
    ms = [teacher_momentum(s, 100, 0.9) for s in range(101)]
    assert all(a <= b for a, b in zip(ms, ms[1:]))


def test_ema_update_formula_every_step():
    model = tiny_dino(momentum=0.9)
    with torch.no_grad():  # make the student differ from the teacher
        for p in model.student.parameters():
            p.add_(torch.randn_like(p))
    t0 = [p.clone() for p in model.teacher.parameters()]
    s = [p.clone() for p in model.student.parameters()]
    model.on_train_step_end(3, 10)
    m = teacher_momentum(3, 10, 0.9)
    for a, b, pt in zip(t0, s, model.teacher.parameters()):
        assert torch.allclose(pt, m * a + (1 - m) * b, atol=1e-6)
    assert int(model.step_count) == 4 and model.epoch == 0  # 10 steps over 2 epochs: step 4 is epoch 0


def test_per_epoch_teacher_update_waits_for_the_end_of_the_epoch():
    model = tiny_dino(epochs=2, teacher_update="epoch", momentum=0.5)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in model.teacher.parameters()]
    for step in range(4):  # total 10 steps, 5 per epoch: steps 0..3 do not touch the teacher
        model.on_train_step_end(step, 10)
    assert all(torch.equal(a, b) for a, b in zip(t0, model.teacher.parameters()))
    model.on_train_step_end(4, 10)
    m = teacher_momentum(4, 10, 0.5)
    for a, ps, pt in zip(t0, model.student.parameters(), model.teacher.parameters()):
        assert torch.allclose(pt, m * a + (1 - m) * ps, atol=1e-6)
    assert model.epoch == 1


def test_fit_runs_and_logs_collapse_diagnostics_per_epoch():
    from survey_lib.train import TrainConfig, fit

    model = tiny_dino(epochs=2)
    aug = BatchMultiCrop(global_size=16, local_size=8, n_local_crops=2, blur_sigma=None)
    data = [(torch.rand(1, 16, 16), i % 3) for i in range(16)]
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, collate_fn=aug.collate,
                                         generator=torch.Generator().manual_seed(0))
    c0 = model.loss.center.clone()
    h = fit(model, loader, config=TrainConfig(epochs=2, batch_size=8, progress=False), step_fn=dino_step)
    assert len(h.rows) == 2 and {"teacher_entropy", "kl", "train_loss"} <= set(h.rows[0])
    assert int(model.step_count) == 4 and not torch.equal(model.loss.center, c0)


# ---------------------------------------------------------------------------------------------
# multi-crop
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MultiCropTransform, BatchMultiCrop])
def test_multicrop_shapes_and_order(cls):
    torch.manual_seed(0)
    t = cls(global_size=32, local_size=16, n_local_crops=3, mean=[0.5], std=[0.25])
    crops = t(torch.rand(1, 32, 32))
    assert [tuple(c.shape) for c in crops] == [(1, 32, 32)] * 2 + [(1, 16, 16)] * 3
    assert t.ncrops == 5
    rgb = cls(global_size=24, local_size=8, n_local_crops=1, flip=True)(torch.rand(3, 40, 40))
    assert [tuple(c.shape) for c in rgb] == [(3, 24, 24), (3, 24, 24), (3, 8, 8)]
    assert all(0.0 <= float(c.min()) and float(c.max()) <= 1.0 for c in rgb)  # no normalisation: [0, 1]


def test_multicrop_dataset_and_batched_collate_give_the_same_structure():
    base = [(torch.rand(1, 32, 32), i) for i in range(6)]
    ds = MultiCropDataset(base, MultiCropTransform(n_local_crops=2))
    a = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    aug = BatchMultiCrop(n_local_crops=2)
    b = next(iter(torch.utils.data.DataLoader(base, batch_size=3, collate_fn=aug.collate)))
    for x in (a, b):
        crops, labels = x
        assert [tuple(c.shape) for c in crops] == [(3, 1, 32, 32)] * 2 + [(3, 1, 16, 16)] * 2
        assert labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("cls", [MultiCropTransform, BatchMultiCrop])
def test_full_scale_crops_without_photometric_ops_are_the_image(cls):
    img = torch.rand(1, 32, 32)
    t = cls(global_size=32, local_size=32, n_local_crops=1, global_scale=(1.0, 1.0), local_scale=(1.0, 1.0),
            color_jitter=0.0, blur_sigma=None, solarize_prob=0.0, mean=[0.3], std=[0.2], inputs_normalized=True)
    normed = (img - 0.3) / 0.2
    for c in t(normed):
        assert torch.allclose(c, normed, atol=1e-5)


def test_batched_resized_crop_matches_torchvision_when_enlarging():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 20, 24)
    boxes = torch.tensor([[2, 3, 10, 12], [0, 0, 16, 16], [5, 1, 7, 9]])
    y = BatchMultiCrop.resized_crop(x, boxes, 16)
    for k in range(3):
        i, j, h, w = boxes[k].tolist()
        ref = TF.resized_crop(x[k], i, j, h, w, [16, 16], antialias=True)
        assert torch.allclose(y[k], ref, atol=1e-5)


def test_batched_boxes_follow_the_scale_range():
    torch.manual_seed(0)
    boxes = BatchMultiCrop.sample_boxes(2000, 32, 32, (0.1, 0.4))
    area = (boxes[:, 2] * boxes[:, 3]).float() / 1024
    assert area.min() >= 0.07 and area.max() <= 0.45  # rounding of h and w widens the range slightly
    assert (boxes[:, 0] + boxes[:, 2] <= 32).all() and (boxes[:, 1] + boxes[:, 3] <= 32).all()
    assert (boxes[:, :2] >= 0).all()


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_clear_errors():
    with pytest.raises(ValueError, match="at least 2 global crops"):
        MultiCropTransform(n_global_crops=1)
    with pytest.raises(ValueError, match="at least 2 global crops"):
        DINOLoss(8, 4, 0.04, 0.04, 0, 5, n_global_crops=1)
    with pytest.raises(ValueError, match="n_local_crops"):
        MultiCropTransform(n_local_crops=-1)
    with pytest.raises(ValueError, match="local_scale"):
        MultiCropTransform(local_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="needs mean and std"):
        MultiCropTransform(inputs_normalized=True)
    with pytest.raises(ValueError, match="one \\(C, H, W\\) image"):
        MultiCropTransform()(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="ncrops=1"):
        DINOLoss(8, 1, 0.04, 0.04, 0, 5)
    with pytest.raises(ValueError, match="variant"):
        DINOLoss(8, 4, 0.04, 0.04, 0, 5, variant="plus")
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs"):
        DINOLoss(8, 4, 0.04, 0.07, 10, 5)
    loss_fn = DINOLoss(8, 4, 0.04, 0.04, 0, 5)
    with pytest.raises(ValueError, match="teacher sees the global crops only"):
        loss_fn(torch.randn(16, 8), torch.randn(16, 8))
    with pytest.raises(ValueError, match="not a multiple of ncrops"):
        loss_fn(torch.randn(10, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="out_dim=8"):
        loss_fn(torch.randn(16, 7), torch.randn(8, 7))
    with pytest.raises(ValueError, match="nlayers"):
        DINOHead(8, 8, nlayers=0)
    model = tiny_dino()
    with pytest.raises(ValueError, match="got 3 crops"):
        model(crops_for()[:3])
    with pytest.raises(ValueError, match="whole number"):
        model.on_train_step_end(0, 7)
    with pytest.raises(ValueError, match="teacher_update"):
        DINO(VisionTransformer(**TINY_VIT), DINOHead(16, 8), DINOLoss(8, 4, 0.04, 0.04, 0, 2), teacher_update="never")




# ---------------------------------------------------------------------------------------------
# the recipes on MNIST-5k, the study (survey_lib.recipes.dino_study)
# ---------------------------------------------------------------------------------------------
def test_mnist_multicrop_shapes_and_its_own_normalisation():
    from survey_lib.data import MNIST5K_MEAN, MNIST5K_STD, MNIST5k
    from survey_lib.recipes.dino import CONFIGS, multicrop

    crops = CONFIGS["cpu"]["crops"]
    assert CONFIGS["cpu"]["data"]["dataset"] == "mnist5k" and CONFIGS["smoke"]["data"]["dataset"] == "digits"
    img, _ = MNIST5k("train")[0]  # normalised with MNIST-5k's statistics
    torch.manual_seed(0)
    views = multicrop("mnist5k", crops)(img[None])
    g, s, n = crops["global_size"], crops["local_size"], crops["n_local_crops"]
    assert [tuple(v.shape) for v in views] == [(1, 1, g, g)] * 2 + [(1, 1, s, s)] * n
    # crops stay within MNIST-5k's normalised range: black (the background value) to white
    bg, white = (0.0 - MNIST5K_MEAN) / MNIST5K_STD, (1.0 - MNIST5K_MEAN) / MNIST5K_STD
    assert all(float(v.min()) >= bg - 1e-4 and float(v.max()) <= white + 1e-4 for v in views)
    assert min(float(v.min()) for v in views) == pytest.approx(bg, abs=1e-4)  # some background is in view
    # whole-image crops without photometric operations give the image back: un-normalised and normalised alike
    ident = multicrop("mnist5k", {**crops, "global_scale": (1.0, 1.0), "local_scale": (1.0, 1.0), "local_size": g}, batched=False)
    for v in ident(img):
        assert torch.allclose(v, img, atol=1e-4)
    # the digits' statistics would shift every pixel: the normalisation really is MNIST-5k's
    wrong = multicrop("digits", {**crops, "global_scale": (1.0, 1.0), "local_scale": (1.0, 1.0), "local_size": g}, batched=False)
    assert not torch.allclose(wrong(img)[0], img, atol=1e-2)
    with pytest.raises(ValueError, match="unknown dataset"):
        multicrop("cifar", crops)


def test_every_study_variant_switches_exactly_its_option():
    from survey_lib.models.nat import NAT
    from survey_lib.recipes.dino_study import ABLATIONS, STUDY_SEEDS, VARIANTS, initial_model

    models = {name: initial_model("smoke", 0, name) for name in VARIANTS}
    full = models["dino_vit"]
    assert (full.loss.centering, full.loss.sharpening, full.loss.variant, full.teacher_update) == (True, True, "dino", "step")
    assert not models["dino_no_centering"].loss.centering
    assert not models["dino_no_sharpening"].loss.sharpening
    assert models["dino_no_sharpening"].loss.teacher_temperature(0) == models["dino_no_sharpening"].loss.student_temp
    assert models["dino_source_sign"].loss.variant == "source_sign"
    assert models["dino_epoch_teacher"].teacher_update == "epoch"
    assert isinstance(models["dino_nat"].student.backbone, NAT) and isinstance(full.student.backbone, VisionTransformer)
    for name in ABLATIONS:  # everything else is the full method's: the same initial weights
        m = models[name]
        assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), m.state_dict().values())), name
        others = [(m.loss.centering, full.loss.centering), (m.loss.sharpening, full.loss.sharpening),
                  (m.loss.variant, full.loss.variant), (m.teacher_update, full.teacher_update)]
        assert sum(a != b for a, b in others) == 1, name
        assert len(STUDY_SEEDS[name]) >= 2
    assert len(STUDY_SEEDS["dino_vit"]) >= 3
    with pytest.raises(ValueError, match="unknown variant"):
        initial_model("smoke", 0, "dino_no_teacher")


def test_the_random_control_is_the_run_of_the_same_seed_before_training(monkeypatch):
    import survey_lib.recipes.base as base
    from survey_lib.recipes.dino import RECIPE
    from survey_lib.recipes.dino_study import initial_model
    from survey_lib.train import History

    seen = {}

    def no_training(model, *args, **kwargs):  # record the weights the run starts from, train nothing
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return History(rows=[{"epoch": 1, "seconds": 0.0, "train_loss": 0.0, "teacher_entropy": 1.0}])

    monkeypatch.setattr(base, "fit", no_training)
    RECIPE.run("smoke", seed=3, cache=False, progress=False)
    control = initial_model("smoke", 3).state_dict()
    assert seen["state"].keys() == control.keys()
    assert all(torch.equal(seen["state"][k], v) for k, v in control.items())
    other = initial_model("smoke", 4).state_dict()
    assert not all(torch.equal(seen["state"][k], v) for k, v in other.items())  # another seed, other weights


def test_collapse_state_reads_the_entropy_against_log_k():
    from survey_lib.recipes.dino_study import collapse_state

    K = 512
    assert collapse_state(0.05 * math.log(K), K) == "one prototype"
    assert collapse_state(0.95 * math.log(K), K) == "uniform"
    assert collapse_state(0.5 * math.log(K), K) == "no"
    with pytest.raises(ValueError, match="out_dim"):
        collapse_state(1.0, 1)


class _FixedAttention(nn.Module):
    """A stand-in ViT whose last-layer CLS attention is given (h, N) weights for every image."""

    def __init__(self, weights, patch_size):
        super().__init__()
        self.w = weights
        self.patch_embed = type("P", (), {"patch_size": (patch_size, patch_size)})()

    def get_last_selfattention(self, x):
        h, N = self.w.shape
        out = torch.zeros(x.shape[0], h, 1 + N, 1 + N)
        out[:, :, 0, 1:] = self.w
        return out


def test_stroke_attention_is_the_attention_mass_on_stroke_pixels():
    from survey_lib.recipes.dino_study import stroke_attention

    pixels = torch.zeros(2, 1, 8, 8)
    pixels[:, :, :4, :4] = 1.0        # the stroke fills patch 0 (of 4 patches of 4 x 4): a quarter of the image
    pixels[1, :, 4:6, 4:8] = 1.0      # image 1: half of patch 3 too
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0],    # head 0: only patch 0
                      [0.25, 0.25, 0.25, 0.25],  # head 1: uniform
                      [0.0, 1.0, 0.0, 0.0]])    # head 2: only an empty patch
    out = stroke_attention(_FixedAttention(w, 4), pixels, pixels)
    assert torch.allclose(out["share"], torch.tensor([0.25, 0.375]))
    assert torch.allclose(out["mass"], torch.tensor([[1.0, 0.25, 0.0], [1.0, 0.375, 0.0]]))
    assert torch.allclose(out["ratio"][:, 1], torch.ones(2))  # a uniform head: ratio 1
    assert torch.allclose(out["ratio"][0], torch.tensor([4.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="same images"):
        stroke_attention(_FixedAttention(w, 4), pixels, pixels[:1])
    with pytest.raises(ValueError, match="do not tile"):
        stroke_attention(_FixedAttention(w, 3), pixels, pixels)


def test_thermal_like_rendering_and_its_errors():
    from survey_lib.recipes.dino_study import thermal_like

    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    t = thermal_like(x, noise=0.0)
    assert t.shape == x.shape and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])  # colour is gone
    assert torch.allclose(thermal_like(x, noise=0.0, invert=True), 1 - t)
    assert torch.equal(thermal_like(x, seed=1), thermal_like(x, seed=1))
    with pytest.raises(ValueError, match="colour images"):
        thermal_like(torch.rand(1, 16, 16))


def test_thermal_pairs_reads_a_local_folder_and_names_what_is_missing(tmp_path):
    from PIL import Image

    from survey_lib.data import DatasetNotFoundError
    from survey_lib.recipes.dino_study import ThermalPairs

    with pytest.raises(DatasetNotFoundError, match="rgb/<class>"):
        ThermalPairs(tmp_path / "nothing")
    rng = torch.Generator().manual_seed(0)
    for cls, names in (("car", ["a", "b"]), ("person", ["c"])):
        for side, mode in (("rgb", "RGB"), ("thermal", "L")):
            (tmp_path / side / cls).mkdir(parents=True)
            for n in names:
                arr = (torch.rand(20, 30, 3 if mode == "RGB" else 1, generator=rng) * 255).byte().squeeze(-1).numpy()
                Image.fromarray(arr, mode=mode).save(tmp_path / side / cls / f"{n}.png")
    Image.fromarray((torch.zeros(20, 30, 3)).byte().numpy()).save(tmp_path / "rgb" / "car" / "lonely.png")
    ds = ThermalPairs(tmp_path, img_size=16)
    assert len(ds) == 3 and ds.unpaired == 1 and ds.classes == ["car", "person"]
    rgb, thermal, label = ds[2]
    assert rgb.shape == thermal.shape == (3, 16, 16) and label == 1
    assert torch.equal(thermal[0], thermal[1]) and 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0


def test_study_pairs_seeds_and_computes_its_verdicts():
    from survey_lib.recipes.base import RecipeResult, SeedsResult
    from survey_lib.recipes.dino_study import DinoStudy, study_verdicts
    from survey_lib.train import History

    def runs(name, knn, seeds):
        res = [RecipeResult(name, "cpu", s, {}, nn.Identity(), History(rows=[{"epoch": 1, "seconds": 2.0}]),
                            {"knn_acc": k, "linear_acc": k, "val_knn_acc": k, "val_linear_acc": k, "teacher_entropy": 3.0})
               for s, k in zip(seeds, knn)]
        return SeedsResult(name, "cpu", list(seeds), res)

    ctl = {"raw_pixels": {"knn_acc": 0.9, "linear_acc": 0.9, "seeds": []},
           "random_vit": {"knn_acc": [0.5, 0.52, 0.51], "linear_acc": [0.6, 0.6, 0.6], "seeds": [0, 1, 2]}}
    study = DinoStudy("cpu", {"dino_vit": runs("dino", [0.8, 0.82, 0.81], [0, 1, 2]),
                              "dino_no_centering": runs("dino", [0.3, 0.35], [0, 1])}, {"val": ctl, "test": ctl}, 512)
    a, b, seeds = study.paired("dino_vit", "dino_no_centering")
    assert (a, b, seeds) == ([0.8, 0.82], [0.3, 0.35], [0, 1])
    assert study.paired("dino_vit", "raw_pixels")[1] == [0.9, 0.9, 0.9]
    verdicts = {(v["a"], v["b"]): v for v in study_verdicts(study)}
    assert verdicts[("dino_vit", "random_vit")]["verdict"] == "holds"
    assert verdicts[("dino_vit", "raw_pixels")]["verdict"] == "does not hold"
    assert verdicts[("dino_vit", "dino_no_centering")]["seeds"] == [0, 1]
    assert ("dino_nat", "random_nat") not in verdicts  # a row the study did not run gives no verdict
    table = study.table()
    assert table.loc["dino_no_centering", "n_seeds"] == 2 and table.loc["dino_vit", "knn_acc"] == pytest.approx(0.81)
    assert {r[0] for r in study.rows()} == {"dino_vit", "dino_no_centering", "raw_pixels", "random_vit"}
    with pytest.raises(KeyError, match="unknown method"):
        study.values("dino_swin")


def test_crossmodal_verdict_needs_every_test_to_go_the_claims_way():
    import numpy as np

    from survey_lib.recipes.dino_study import crossmodal_verdict

    n = 200
    right, half = np.ones(n, bool), np.arange(n) % 2 == 0
    base = {"correct": {"DINO teacher": {"colour": right, "thermal-like": right},
                        "random ViT": {"thermal-like": half}, "raw pixels": {"thermal-like": half}},
            "same": [0.90, 0.85, 0.92, 0.88], "other": [0.10, 0.20, 0.05, 0.15, 0.12, 0.08],
            "same_random": [0.30, 0.40, 0.20, 0.35]}
    assert crossmodal_verdict(base)["verdict"] == "holds"
    dropped = {**base, "correct": {**base["correct"], "DINO teacher": {"colour": right, "thermal-like": half}}}
    assert crossmodal_verdict(dropped)["verdict"] == "does not hold"  # a significant loss from colour to thermal-like
    pixels_win = {**base, "correct": {**base["correct"], "DINO teacher": {"colour": half, "thermal-like": half},
                                      "raw pixels": {"thermal-like": right}}}
    assert crossmodal_verdict(pixels_win)["verdict"] == "does not hold"  # a control beats DINO
    like_random = {**base, "same_random": [0.89, 0.86, 0.91, 0.88]}
    out = crossmodal_verdict(like_random)
    assert out["attention"]["verdict"] == "holds" and out["verdict"] == "cannot tell"  # agreement an untrained net has too

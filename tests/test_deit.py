"""DeiT: the distilled ViT against timm's ``VisionTransformerDistilled`` on the same weights, and the
distillation objective (Touvron et al. 2021, arXiv:2012.12877, Eq. 2-3) against direct formulas."""
import pytest
import torch
import torch.nn.functional as F
from parity import load_into, perturbed
from torch import nn

from survey_lib.models.deit import DistilledVisionTransformer, timm_kwargs, timm_state_dict
from survey_lib.recipes.deit import deit_for_profile
from survey_lib.recipes.vit import vit_for_profile
from survey_lib.objectives.distillation import DistillationLoss, deit_step
from survey_lib.evaluate import agreement_eval_fn, teacher_agreement
from survey_lib.recipes.teacher import cnn_teacher

TOL = 1e-5
CFG = dict(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=2,
           mlp_ratio=2.0, drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)


def _pair():
    """Our distilled ViT and timm's, holding the same weights (no dropout, no drop path)."""
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(0)
    ours = perturbed(DistilledVisionTransformer(**CFG), scale=1.0)  # tokens and heads far from their init
    theirs = load_into(VisionTransformerDistilled(**timm_kwargs(ours), drop_rate=0.0, drop_path_rate=0.0),
                       timm_state_dict(ours))
    return ours, theirs


class _LinearTeacher(nn.Module):
    """A tiny teacher with BatchNorm (to detect train-mode use) and a ``num_classes`` attribute."""

    def __init__(self, num_classes: int = 10, in_features: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm1d(in_features)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(self.bn(x.flatten(1)))  # (B, K)


# ---------------------------------------------------------------------------------------------
# the model against timm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distilled_training", [True, False])
def test_matches_timm_in_train_and_eval_modes(distilled_training):
    ours, theirs = _pair()
    ours.set_distilled_training(distilled_training)
    theirs.set_distilled_training(distilled_training)
    x = torch.randn(3, 1, 32, 32)

    ours.eval(), theirs.eval()
    a, b = ours(x), theirs(x)
    assert isinstance(a, torch.Tensor) and a.shape == (3, 10)
    torch.testing.assert_close(a, b, atol=TOL, rtol=0)

    ours.train(), theirs.train()
    a, b = ours(x), theirs(x)
    if distilled_training:  # the pair (cls_logits, dist_logits), as in DeiT's training
        assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == 2
        torch.testing.assert_close(a[0], b[0], atol=TOL, rtol=0)
        torch.testing.assert_close(a[1], b[1], atol=TOL, rtol=0)
        # eval mode's output is the average of the two heads
        ours.eval()
        torch.testing.assert_close(ours(x), (a[0] + a[1]) / 2, atol=TOL, rtol=0)
    else:  # timm's default: the average even while training
        assert isinstance(a, torch.Tensor)
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_default_flag_is_deit_semantics_and_differs_from_timm_default():
    ours, theirs = _pair()
    assert ours.distilled_training is True and theirs.distilled_training is False
    ours.train()
    assert isinstance(ours(torch.randn(2, 1, 32, 32)), tuple)


def test_features_embed_and_gradients_match_timm():
    ours, theirs = _pair()
    ours.eval(), theirs.eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x), atol=TOL, rtol=0)
    torch.testing.assert_close(ours.embed(x), theirs.forward_head(theirs.forward_features(x), pre_logits=True),
                               atol=TOL, rtol=0)
    # the same loss gives the same gradients on the new parameters
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    for name in ("dist_token", "pos_embed", "head_dist.weight", "cls_token"):
        g1 = dict(ours.named_parameters())[name].grad
        g2 = dict(theirs.named_parameters())[name].grad
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_attention_maps_have_two_prefix_tokens_in_timm_order():
    ours, theirs = _pair()
    ours.eval()
    x = torch.randn(2, 1, 32, 32)
    maps = ours.get_attention_maps(x)
    N = (32 // 8) ** 2
    assert len(maps) == CFG["depth"] and maps[0].shape == (2, CFG["num_heads"], 2 + N, 2 + N)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, CFG["num_heads"], 2 + N))
    # first block's attention recomputed from timm's token sequence (cls, dist, patches) + pos_embed
    with torch.no_grad():
        tok = theirs._pos_embed(theirs.patch_embed(x))  # (B, 2 + N, D)
        blk = theirs.blocks[0]
        B, n, D = tok.shape
        qkv = blk.attn.qkv(blk.norm1(tok)).reshape(B, n, 3, CFG["num_heads"], D // CFG["num_heads"])  # (B, N, 3, h, d_head)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # (B, h, N, d_head) each
        ref = (q @ k.transpose(-2, -1) * blk.attn.scale).softmax(-1)
    torch.testing.assert_close(maps[0], ref, atol=TOL, rtol=0)


def test_structure_and_parameter_count():
    m, v = deit_for_profile("cpu"), vit_for_profile("cpu")
    D, K = m.embed_dim, m.num_classes
    assert m.num_prefix_tokens == 2 and m.pos_embed.shape == (1, 2 + m.patch_embed.num_patches, D)
    extra = sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in v.parameters())
    assert extra == D + D + D * K + K  # dist_token, its pos_embed row, head_dist
    assert {"dist_token", "cls_token", "pos_embed"} <= m.no_weight_decay()
    sim = m.cls_dist_similarity(torch.randn(4, 1, 32, 32))
    assert sim.shape == (m.config["depth"] + 1,) and sim.abs().max() <= 1 + 1e-6
    # position 0 is input-independent: the two learned tokens plus their position embeddings
    z0 = torch.cat([m.cls_token + m.pos_embed[:, :1], m.dist_token + m.pos_embed[:, 1:2]], dim=1)[0]  # (2, D)
    assert sim[0].item() == pytest.approx(F.cosine_similarity(z0[0], z0[1], dim=0).item(), abs=1e-5)


def test_same_seed_gives_the_plain_vit_weights_plus_new_ones():
    """A controlled comparison: every parameter shared with the plain ViT starts identical."""
    torch.manual_seed(3)
    v = vit_for_profile("smoke")
    torch.manual_seed(3)
    m = deit_for_profile("smoke")
    sd_v, sd_m = v.state_dict(), m.state_dict()
    for k, t in sd_v.items():
        if k == "pos_embed":  # rows: class token, [new distillation row], patches
            assert torch.equal(sd_m[k][:, :1], t[:, :1]) and torch.equal(sd_m[k][:, 2:], t[:, 1:])
        else:
            assert torch.equal(sd_m[k], t), k
    assert set(sd_m) - set(sd_v) == {"dist_token", "head_dist.weight", "head_dist.bias"}


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="global_pool must be 'token' or 'avg'"):
        DistilledVisionTransformer(**{**CFG, "global_pool": "max"})
    with pytest.raises(ValueError, match="class_token=True"):
        DistilledVisionTransformer(**{**CFG, "class_token": False})
    with pytest.raises(ValueError, match="unknown profile"):
        deit_for_profile("gpu")
    with pytest.raises(ValueError, match="unknown profile"):
        cnn_teacher("gpu")


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------
def _batch(B=6, K=10):
    torch.manual_seed(1)
    x = torch.randn(B, 1, 4, 4)
    y = torch.randint(0, K, (B,))
    z_cls = torch.randn(B, K, requires_grad=True)
    z_dist = torch.randn(B, K, requires_grad=True)
    return x, y, z_cls, z_dist


def test_soft_with_alpha_0_and_tau_1_is_plain_cross_entropy():
    x, y, z_cls, z_dist = _batch()
    loss = DistillationLoss(nn.CrossEntropyLoss(), _LinearTeacher(), "soft", alpha=0.0, tau=1.0)
    torch.testing.assert_close(loss(x, z_cls, y), F.cross_entropy(z_cls, y))
    torch.testing.assert_close(loss(x, (z_cls, z_dist), y), F.cross_entropy(z_cls, y))


@pytest.mark.parametrize("alpha,tau", [(0.1, 3.0), (0.5, 1.0), (1.0, 2.0)])
def test_soft_matches_the_direct_formula(alpha, tau):
    x, y, z_cls, z_dist = _batch()
    teacher = _LinearTeacher()
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=alpha, tau=tau)
    with torch.no_grad():
        z_t = teacher.eval()(x)
    p_t = torch.softmax(z_t / tau, -1)
    p_s = torch.softmax(z_dist / tau, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()  # per-sample KL(p_t || p_s), batch mean
    expected = (1 - alpha) * F.cross_entropy(z_cls, y) + alpha * tau**2 * kl
    torch.testing.assert_close(loss(x, (z_cls, z_dist), y), expected, atol=1e-6, rtol=1e-5)
    # DeiT's code normalises by numel = B * K instead: ours is K times larger
    deit_kl = F.kl_div(F.log_softmax(z_dist / tau, -1), F.log_softmax(z_t / tau, -1), reduction="sum",
                       log_target=True) / z_dist.numel()
    torch.testing.assert_close(kl, deit_kl * z_dist.shape[-1], atol=1e-6, rtol=1e-5)


def test_hard_is_half_label_ce_plus_half_teacher_argmax_ce():
    x, y, z_cls, z_dist = _batch()
    teacher = _LinearTeacher()
    with torch.no_grad():
        y_t = teacher.eval()(x).argmax(-1)
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard")  # default alpha 0.5 = Eq. 3
    expected = 0.5 * F.cross_entropy(z_cls, y) + 0.5 * F.cross_entropy(z_dist, y_t)
    torch.testing.assert_close(loss(x, (z_cls, z_dist), y), expected)
    # alpha = 1: pure cross-entropy against the teacher's argmax
    only_teacher = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", alpha=1.0)
    torch.testing.assert_close(only_teacher(x, (z_cls, z_dist), y), F.cross_entropy(z_dist, y_t))
    # a plain student (one output) gets both terms on the same logits
    torch.testing.assert_close(loss(x, z_cls, y), 0.5 * F.cross_entropy(z_cls, y) + 0.5 * F.cross_entropy(z_cls, y_t))


def test_none_uses_the_class_output_only_and_never_runs_the_teacher():
    class Exploding(nn.Module):
        def forward(self, x):
            raise AssertionError("the teacher must not run for distillation_type='none'")

    x, y, z_cls, z_dist = _batch()
    loss = DistillationLoss(nn.CrossEntropyLoss(label_smoothing=0.1), Exploding(), "none")
    torch.testing.assert_close(loss(x, (z_cls, z_dist), y), F.cross_entropy(z_cls, y, label_smoothing=0.1))
    assert DistillationLoss(nn.CrossEntropyLoss(), None, "none")(x, z_cls, y).requires_grad


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_teacher_gets_no_gradient_and_keeps_its_batchnorm_statistics(kind):
    teacher = _LinearTeacher()
    teacher.train()
    stats = teacher.bn.running_mean.clone(), teacher.bn.running_var.clone()
    student = nn.Linear(16, 20)
    loss_fn = DistillationLoss(nn.CrossEntropyLoss(), teacher, kind, alpha=0.5, tau=2.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    loss_fn.train()  # also switches the registered teacher to train mode; the loss must undo it
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 10, (8,))
    out = student(x.flatten(1))
    loss = loss_fn(x, (out[:, :10], out[:, 10:]), y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    torch.testing.assert_close(teacher.bn.running_mean, stats[0])
    torch.testing.assert_close(teacher.bn.running_var, stats[1])
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_class_count_mismatch_is_a_clear_error():
    x, y, z_cls, z_dist = _batch(K=10)
    with pytest.raises(ValueError, match="teacher predicts 7 classes but the student predicts 10"):
        DistillationLoss(nn.CrossEntropyLoss(), _LinearTeacher(num_classes=7), "hard", num_classes=10)
    loss = DistillationLoss(nn.CrossEntropyLoss(), _LinearTeacher(num_classes=7), "soft")
    with pytest.raises(ValueError, match="teacher predicts 7 classes but the student predicts 10"):
        loss(x, (z_cls, z_dist), y)
    # a timm teacher is checked at construction through its num_classes attribute
    with pytest.raises(ValueError, match="num_classes=10"):
        DistillationLoss(nn.CrossEntropyLoss(), cnn_teacher("smoke", num_classes=100), "hard", num_classes=10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(distillation_type="medium"), "distillation_type must be one of"),
        (dict(distillation_type="soft", alpha=-0.1), r"must be in \[0, 1\]"),
        (dict(distillation_type="hard", alpha=1.5), r"must be in \[0, 1\]"),
        (dict(distillation_type="soft", tau=0.0), "must be > 0"),
        (dict(distillation_type="soft", tau=-1.0), "must be > 0"),
    ],
)
def test_bad_loss_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationLoss(nn.CrossEntropyLoss(), _LinearTeacher(), **kwargs)


def test_missing_teacher_and_malformed_outputs():
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "hard")
    x, y, z_cls, z_dist = _batch()
    loss = DistillationLoss(nn.CrossEntropyLoss(), _LinearTeacher(), "hard")
    with pytest.raises(ValueError, match="pair"):
        loss(x, (z_cls, z_dist, z_cls), y)


# ---------------------------------------------------------------------------------------------
# training step and agreement
# ---------------------------------------------------------------------------------------------
def test_deit_step_trains_the_student_and_leaves_the_teacher_untouched():
    from survey_lib.data import DigitsDataset
    from survey_lib.train import TrainConfig, fit

    train_set = DigitsDataset(train=True, label_fraction=0.1)  # 143 images
    test_set = DigitsDataset(train=False)
    torch.manual_seed(0)
    teacher = cnn_teacher("smoke")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = deit_for_profile("smoke")
    criterion = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", num_classes=10)
    hist = fit(student, train_set, None, TrainConfig(epochs=1, batch_size=64, progress=False),
               step_fn=deit_step(criterion), eval_fn=agreement_eval_fn(test_set, teacher))
    row = hist.last
    assert {"train_loss", "base_loss", "distill_loss", "teacher_agree", "val_acc", "val_agree"} <= set(row)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert teacher_agreement(teacher, teacher, test_set) == 1.0
    assert 0.0 <= teacher_agreement(student, teacher, test_set) <= 1.0




# ---------------------------------------------------------------------------------------------
# average pooling: the plain MNIST ViT's read-out plus DeiT's distillation token
# ---------------------------------------------------------------------------------------------
AVG = dict(CFG, global_pool="avg")


def test_avg_pooling_reads_the_patch_mean_for_head_and_the_distillation_token_for_head_dist():
    torch.manual_seed(0)
    m = perturbed(DistilledVisionTransformer(**AVG), scale=1.0)
    m.eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        z = m.forward_features(x)  # (B, 2 + N, D); the final norm is fc_norm, after pooling
        y_cls = m.head(m.fc_norm(z[:, 2:].mean(1)))
        y_dist = m.head_dist(m.fc_norm(z[:, 1]))
        torch.testing.assert_close(m(x), (y_cls + y_dist) / 2, atol=TOL, rtol=0)
        m.train()
        a_cls, a_dist = m(x)  # no dropout in CFG: training mode computes the same heads
        torch.testing.assert_close(a_cls, y_cls, atol=TOL, rtol=0)
        torch.testing.assert_close(a_dist, y_dist, atol=TOL, rtol=0)
        # the class side reads the patches only: replacing the unused class token's final state changes nothing
        z2 = z.clone()
        z2[:, 0] = 100.0
        m.eval()
        torch.testing.assert_close(m.forward_head(z2), m.forward_head(z), atol=TOL, rtol=0)
        z2[:, 1] = 100.0  # ... but the distillation token's does
        assert not torch.allclose(m.forward_head(z2), m.forward_head(z))


def test_avg_student_is_the_avg_vit_plus_the_distillation_token():
    """The cpu student: every weight shared with the cpu ViT starts identical from the same seed, and
    the new parameters are the token, its position row and head_dist (its fc_norm is the ViT's)."""
    from survey_lib.models.vit import VisionTransformer
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.deit import RECIPE

    cfg = RECIPE.config("cpu")
    assert cfg["model"] == get_recipe("vit").config("cpu")["model"] and cfg["model"]["global_pool"] == "avg"
    torch.manual_seed(5)
    v = VisionTransformer(**cfg["model"])
    torch.manual_seed(5)
    m = RECIPE.build(cfg, None)
    sd_v, sd_m = v.state_dict(), m.state_dict()
    assert set(sd_m) - set(sd_v) == {"dist_token", "head_dist.weight", "head_dist.bias"}
    for k, t in sd_v.items():
        if k == "pos_embed":
            assert torch.equal(sd_m[k][:, :1], t[:, :1]) and torch.equal(sd_m[k][:, 2:], t[:, 1:])
        else:
            assert torch.equal(sd_m[k], t), k


def test_avg_token_similarity_compares_the_patch_mean_with_the_distillation_token():
    torch.manual_seed(0)
    m = perturbed(DistilledVisionTransformer(**AVG), scale=1.0).eval()
    x = torch.randn(4, 1, 32, 32)
    t = m.readouts_through_depth(x)  # (L + 1, B, 2, D)
    assert t.shape == (AVG["depth"] + 1, 4, 2, AVG["embed_dim"])
    z0 = m.prepare_tokens(x)
    torch.testing.assert_close(t[0, :, 0], z0[:, 2:].mean(1))
    torch.testing.assert_close(t[0, :, 1], z0[:, 1])
    expected = F.cosine_similarity(t[:, :, 0], t[:, :, 1], dim=-1).mean(1)
    torch.testing.assert_close(m.cls_dist_similarity(x), expected)
    # with 'token' pooling the class side is the class token itself
    tok = perturbed(DistilledVisionTransformer(**CFG), scale=1.0).eval()
    torch.testing.assert_close(tok.readouts_through_depth(x), tok.prefix_tokens_through_depth(x))


# ---------------------------------------------------------------------------------------------
# few labels: the masked supervised term, DeiT's KL normalisation, the step's accuracy
# ---------------------------------------------------------------------------------------------
from survey_lib.objectives.distillation import UNLABELLED, MaskedCrossEntropy  # noqa: E402


def test_masked_ce_is_the_cross_entropy_of_the_labelled_images_only():
    torch.manual_seed(2)
    z = torch.randn(8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    hidden = y.clone()
    hidden[[1, 4, 5]] = UNLABELLED
    keep = hidden != UNLABELLED
    ce = MaskedCrossEntropy(label_smoothing=0.1)
    torch.testing.assert_close(ce(z, hidden), F.cross_entropy(z[keep], y[keep], label_smoothing=0.1))
    torch.testing.assert_close(ce(z, y), F.cross_entropy(z, y, label_smoothing=0.1))  # all labelled: plain CE
    # the unlabelled rows get no gradient
    ce(z, hidden).backward()
    assert z.grad[~keep].abs().sum() == 0 and z.grad[keep].abs().sum() > 0


def test_masked_ce_of_a_batch_without_labels_is_zero_with_a_graph():
    z = torch.randn(4, 10, requires_grad=True)
    loss = MaskedCrossEntropy(0.1)(z, torch.full((4,), UNLABELLED))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() == 0
    # inside DistillationLoss: the distillation term still trains the student on that batch
    teacher = _LinearTeacher()
    x = torch.randn(4, 1, 4, 4)
    z_cls, z_dist = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10, requires_grad=True)
    parts = DistillationLoss(MaskedCrossEntropy(0.1), teacher, "hard").terms(x, (z_cls, z_dist), torch.full((4,), -1))
    assert torch.isfinite(parts["loss"]) and parts["base_loss"] == 0.0
    parts["loss"].backward()
    assert z_cls.grad.abs().sum() == 0 and z_dist.grad.abs().sum() > 0


def test_masked_ce_refuses_bad_labels_and_smoothing():
    z = torch.randn(3, 10)
    with pytest.raises(ValueError, match=r"-1 \(unlabelled\) or a class in \[0, 10\)"):
        MaskedCrossEntropy()(z, torch.tensor([0, 10, 2]))
    with pytest.raises(ValueError, match=r"-1 \(unlabelled\) or a class"):
        MaskedCrossEntropy()(z, torch.tensor([0, -2, 2]))
    with pytest.raises(ValueError, match=r"logits \(B, K\) and labels \(B,\)"):
        MaskedCrossEntropy()(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        MaskedCrossEntropy(1.0)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_deit_kl_reduction_is_the_sum_over_batch_and_classes_over_b_times_k(tau):
    x, y, z_cls, z_dist = _batch(B=6, K=10)
    teacher = _LinearTeacher()
    with torch.no_grad():
        z_t = teacher.eval()(x)
    p_t, log_p_s = torch.softmax(z_t / tau, -1), torch.log_softmax(z_dist / tau, -1)
    summed = (p_t * (p_t.log() - log_p_s)).sum()  # over the batch and the classes
    B, K = z_dist.shape
    for alpha in (0.1, 1.0):
        loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=alpha, tau=tau, kl_reduction="deit")
        expected = (1 - alpha) * F.cross_entropy(z_cls, y) + alpha * tau ** 2 * summed / (B * K)
        torch.testing.assert_close(loss(x, (z_cls, z_dist), y), expected, atol=1e-6, rtol=1e-5)
    deit = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=1.0, tau=tau, kl_reduction="deit")
    ours = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=1.0, tau=tau)
    torch.testing.assert_close(deit(x, (z_cls, z_dist), y), ours(x, (z_cls, z_dist), y) / K, atol=1e-7, rtol=1e-5)
    with pytest.raises(ValueError, match="kl_reduction must be one of"):
        DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", kl_reduction="sum")


def test_deit_step_counts_the_training_accuracy_over_labelled_images_only():
    teacher = _LinearTeacher()

    class Student(nn.Module):
        def forward(self, x):
            z = torch.zeros(x.shape[0], 10)
            z[:, 3] = 1.0  # always predicts 3
            return z.requires_grad_()

    y = torch.tensor([3, UNLABELLED, 3, UNLABELLED, 0, UNLABELLED])
    out = deit_step(DistillationLoss(MaskedCrossEntropy(), teacher, "hard"))(Student(), (torch.randn(6, 1, 4, 4), y))
    assert out.targets.tolist() == [3, 3, 0] and out.logits.shape == (3, 10)
    assert out.metrics["labelled"] == pytest.approx(0.5)
    acc = float((out.logits.argmax(-1) == out.targets).float().mean())
    assert acc == pytest.approx(2 / 3)  # the unlabelled images would have counted as wrong


# ---------------------------------------------------------------------------------------------
# the recipe: transfer set, teacher, budget
# ---------------------------------------------------------------------------------------------
from survey_lib.recipes.compare import compared_overrides, compared_recipe  # noqa: E402
from survey_lib.recipes.deit import RECIPE as DEIT, labelled_subset, teacher_overrides, transfer_set  # noqa: E402
from survey_lib.recipes.deit_study import VARIANTS, distillation_study, distillation_verdicts, variant_run  # noqa: E402


@pytest.mark.parametrize("dataset,img_size", [("digits", 32), ("mnist5k", 28)])
def test_transfer_set_has_every_image_and_exactly_the_labels_of_the_fraction(dataset, img_size):
    from survey_lib.data import classification_dataset

    full = classification_dataset(dataset, "train", img_size=img_size)
    few = classification_dataset(dataset, "train", img_size=img_size, label_fraction=0.1)
    ts = transfer_set(dataset, 0.1, img_size=img_size, augment=False)
    assert len(ts) == len(full) and len(ts.labelled) == len(few)
    idx = sorted(ts.labelled)
    torch.testing.assert_close(full.images[idx], few.images, atol=0, rtol=0)  # the same images ...
    assert torch.equal(torch.as_tensor(full.targets)[idx], torch.as_tensor(few.targets))  # ... and labels
    labels = torch.tensor([ts[i][1] for i in range(len(ts))])
    assert int((labels != UNLABELLED).sum()) == len(few)
    assert torch.equal(labels[idx], torch.as_tensor(few.targets))
    for i in range(len(ts)):  # every image is there, in the full split's order
        if i % 97 == 0:
            assert torch.equal(ts[i][0], full[i][0])
    assert len(transfer_set(dataset, 1.0, img_size=img_size).labelled) == len(full)


def test_labelled_subset_refuses_a_set_that_is_not_a_subset():
    from survey_lib.data import classification_dataset

    full = classification_dataset("digits", "train", img_size=32)
    with pytest.raises(ValueError, match="were found, in order"):
        labelled_subset(full, classification_dataset("digits", "val", img_size=32))


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
def test_the_teacher_is_the_comparisons_resnet(profile):
    """The same resolved configuration as the comparison's ResNet (hence the same cache key) for
    every profile and fraction; under cpu, teacher.MNIST_CONFIG with the ViT's data and recipe."""
    from survey_lib.recipes.teacher import MNIST_CONFIG, RECIPE as TEACHER

    resnet = compared_recipe("resnet")
    assert resnet is TEACHER
    for f in (0.05, 0.1, 0.25, 0.5, 1.0):
        assert teacher_overrides(profile, f) == compared_overrides("resnet", profile, f), f
        assert TEACHER.config(profile, teacher_overrides(profile, f)) == resnet.config(profile, compared_overrides("resnet", profile, f))
    if profile == "cpu":
        cfg = TEACHER.config("cpu", teacher_overrides("cpu"))
        assert {k: cfg[k] for k in MNIST_CONFIG} == MNIST_CONFIG
        student = DEIT.config("cpu")
        assert cfg["data"] == {k: v for k, v in student["data"].items() if k not in ("transfer_set", "epoch_size")}
        assert cfg["train"] == student["train"]
        assert TEACHER.config("cpu", teacher_overrides("cpu", 0.1))["train"]["epochs"] == 475
    with pytest.raises(ValueError, match=r"lies in \(0, 1\]"):
        teacher_overrides(profile, 0.0)


def test_a_deit_run_caches_its_teacher_under_the_comparisons_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    run = DEIT.run("smoke", seed=0, progress=False, overrides={"teacher_fraction": 0.5, "train": {"epochs": 1}})
    assert run.extras["teacher_cache"] == "stored"
    again = compared_recipe("resnet").run("smoke", seed=0, progress=False, overrides=compared_overrides("resnet", "smoke", 0.5))
    assert again.extras["cache"] == "hit"  # the comparison reads the teacher the DeiT run trained
    assert again.metrics["test_acc"] == run.metrics["teacher_acc"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
def test_the_students_recipe_is_the_vits(profile):
    from survey_lib.recipes import get_recipe

    vit, deit = get_recipe("vit").config(profile), DEIT.config(profile)
    assert deit["model"] == vit["model"] and deit["train"] == vit["train"]
    assert {k: v for k, v in deit["data"].items() if k not in ("transfer_set", "epoch_size")} == vit["data"]


def test_study_variants_and_their_configurations():
    from survey_lib.recipes import get_recipe

    assert set(VARIANTS) == {"cnn_teacher", "deit_none", "deit_soft", "deit_hard", "cnn_teacher_f010", "deit_none_f010",
                             "deit_soft_f010", "deit_soft_deitkl_f010", "deit_hard_f010", "deit_soft_t010_f010",
                             "deit_hard_t010_f010", "deit_none_long_f010", "deit_hard_long_f010"}
    cfg = lambda name: (lambda r, ov: r.config("cpu", ov))(*variant_run(name, "cpu"))  # noqa: E731
    vit = get_recipe("vit")
    # the labels-only rows are the ViT's runs: the vit recipe's own cpu configuration, and the comparison's vit_f010
    assert variant_run("deit_none", "cpu")[0] is vit and cfg("deit_none") == vit.config("cpu")
    assert cfg("deit_none_f010") == vit.config("cpu", compared_overrides("vit", "cpu", 0.1))
    assert variant_run("cnn_teacher_f010", "cpu")[0] is compared_recipe("resnet")
    few_vit = cfg("deit_none_f010")
    for name in ("deit_soft_f010", "deit_hard_f010", "deit_soft_deitkl_f010", "deit_soft_t010_f010", "deit_hard_t010_f010"):
        c = cfg(name)
        assert c["train"] == few_vit["train"] and c["train"]["epochs"] == 475 and c["train"]["eval_every"] == 4
        assert c["data"]["transfer_set"] and c["data"]["label_fraction"] == 0.1 and c["data"]["epoch_size"] == "labelled"
        assert c["distillation"] == VARIANTS[name].distillation and c["kl_reduction"] == VARIANTS[name].kl_reduction
        assert c["teacher_fraction"] == VARIANTS[name].teacher_fraction
    for name in ("deit_soft", "deit_hard"):
        c = cfg(name)
        assert c["train"] == vit.config("cpu")["train"] and not c["data"]["transfer_set"] and c["teacher_fraction"] == 1.0
    with pytest.raises(ValueError, match="unknown variant"):
        variant_run("deit_medium", "cpu")


def test_the_long_schedule_at_10_percent_labels_takes_the_all_labels_runs_steps():
    """``schedule="images"``: the labels-only ViT and the hard student at a tenth of the labels take
    the steps and warm-up steps of the ViT's run on all 3,500 labels (150 epochs x 110 steps)."""
    import math

    full = variant_run("deit_none", "cpu")
    full_cfg = full[0].config("cpu", full[1])["train"]
    full_steps = full_cfg["epochs"] * math.ceil(3500 / full_cfg["batch_size"])
    for name in ("deit_none_long_f010", "deit_hard_long_f010"):
        r, ov = variant_run(name, "cpu")
        c = r.config("cpu", ov)
        steps_per_epoch = math.ceil(350 / c["train"]["batch_size"])
        assert c["train"]["epochs"] * steps_per_epoch == full_steps == 16500
        assert c["train"]["warmup_epochs"] * steps_per_epoch == full_cfg["warmup_epochs"] * math.ceil(3500 / full_cfg["batch_size"])
        assert c["data"]["label_fraction"] == 0.1
    hard, short = (r.config("cpu", ov) for r, ov in (variant_run(n, "cpu") for n in ("deit_hard_long_f010", "deit_hard_f010")))
    assert {k: v for k, v in hard.items() if k != "train"} == {k: v for k, v in short.items() if k != "train"}


def test_equal_steps_at_10_percent_labels():
    """The distilled student on the 3,500-image transfer set takes the optimiser steps of the ViT on
    the 350 labelled images: 11 per epoch, 475 epochs."""
    import math

    r, ov = variant_run("deit_hard_f010", "cpu")
    c = r.config("cpu", ov)
    data = r.data(c, 0)
    assert len(data.train.dataset) == 3500 and data.extras["labelled_images"] == 350
    vit_r, vit_ov = variant_run("deit_none_f010", "cpu")
    vit_train = vit_r.data(vit_r.config("cpu", vit_ov), 0).train
    assert len(vit_train) == 350
    assert len(data.train) == math.ceil(len(vit_train) / c["train"]["batch_size"]) == 11
    assert sum(1 for _ in data.train) == 11
    with pytest.raises(ValueError, match="epoch_size must be None, 'labelled' or a positive integer"):
        r.data(r.config("smoke", {"data": {"epoch_size": "all"}}), 0)


def test_the_study_runs_under_smoke_with_a_transfer_set():
    study = distillation_study("smoke", seeds=(0,), variants=["deit_hard_f010"], progress=False)
    from survey_lib.data import classification_dataset

    run = study["deit_hard_f010"].results[0]
    assert run.config["data"]["transfer_set"]
    assert run.extras["labelled_images"] == len(classification_dataset("digits", "train", label_fraction=0.1))
    rows = run.history.rows
    assert len(rows) == run.config["train"]["epochs"]
    assert all(0.0 < r["labelled"] < 0.5 for r in rows)  # about 10% of each batch is labelled
    assert 0.0 <= run.metrics["test_acc"] <= 1.0 and "val_agree" in rows[-1]


class _Runs:
    """A stand-in for SeedsResult: seeds and per-seed test accuracies."""

    def __init__(self, values, seeds=(0, 1, 2)):
        self.seeds, self._values = list(seeds), list(values)

    def values(self, metric):
        return list(self._values)


def test_verdicts_compute_the_two_pooled_std_claim():
    study = {"deit_none_f010": _Runs([0.900, 0.910, 0.905]),
             "deit_hard_f010": _Runs([0.950, 0.962, 0.953]),   # far ahead: holds, and by more than 2 pooled std
             "deit_soft_f010": _Runs([0.9045, 0.9148, 0.9091])}  # a small consistent gain: holds, not by 2 std
    v = {r["a"]: r for r in distillation_verdicts(study) if r["b"] == "deit_none_f010"}
    assert v["deit_hard_f010"]["verdict"] == "holds" and v["deit_hard_f010"]["two_std"]
    assert v["deit_hard_f010"]["verdict_two_std"] == "holds"
    assert v["deit_soft_f010"]["verdict"] == "holds" and not v["deit_soft_f010"]["two_std"]
    assert v["deit_soft_f010"]["verdict_two_std"] == "cannot tell"
    hard_vs_soft = [r for r in distillation_verdicts(study) if (r["a"], r["b"]) == ("deit_hard_f010", "deit_soft_f010")]
    assert len(hard_vs_soft) == 1 and hard_vs_soft[0]["diff"] > 0
    assert not [r for r in distillation_verdicts(study) if r["a"] == "deit_hard"]  # absent variants are skipped
    with pytest.raises(ValueError, match="different seeds"):
        distillation_verdicts({"deit_none_f010": _Runs([0.9] * 3), "deit_hard_f010": _Runs([0.9] * 3, seeds=(3, 4, 5))})


# ---------------------------------------------------------------------------------------------
# the study's figures
# ---------------------------------------------------------------------------------------------
def test_study_figures_draw_every_variant_and_refuse_bad_input():
    import pandas as pd

    from survey_lib.viz.compare import model_color
    from survey_lib.viz.deit import plot_study, plot_study_curves, variant_color

    rows = [{"name": n, "label": VARIANTS[n].label, "student": VARIANTS[n].student, "seed": s, "test_acc": 0.9 + 0.01 * s}
            for n in ("cnn_teacher", "deit_none", "deit_hard") for s in (0, 1, 2)]
    frame = pd.DataFrame(rows)
    fig = plot_study(frame, [["cnn_teacher", "deit_none"], ["deit_hard"]], ["a", "b"])
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["ViT, labels only", "CNN teacher (all labels)"]
    lo, hi = fig.axes[1].get_xlim()
    assert lo <= 88 and hi == 100  # 2 points below the lowest seed, to 100: nothing exaggerated
    assert variant_color("teacher") == model_color("resnet") and variant_color("vit") == model_color("vit")
    with pytest.raises(ValueError, match="holds no run"):
        plot_study(frame, [["deit_soft"]], ["a"])
    with pytest.raises(ValueError, match="titles"):
        plot_study(frame, [["deit_hard"]], ["a", "b"])
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_study(frame.drop(columns="label"), [["deit_hard"]], ["a"])
    curves = pd.DataFrame([{"name": "deit_hard", "seed": 0, "epoch": e, "val_acc": 0.5 + 0.1 * e} for e in (1, 2, 3, 4)])
    with pytest.raises(ValueError, match="no curve"):
        plot_study_curves(curves, ["deit_none"], {}, {})
    fig = plot_study_curves(curves, ["deit_hard"], {"deit_hard": "DeiT hard"}, {"deit_hard": "deit"})
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "DeiT hard"
    # eight variants of one colour: every line told apart by its style or its marker
    many = [f"v{i}" for i in range(8)]
    curves8 = pd.concat([curves.assign(name=n) for n in many])
    fig = plot_study_curves(curves8, many, {n: n for n in many}, {n: "deit" for n in many}, xlabel="steps / 11")
    looks = {(str(line._unscaled_dash_pattern), str(line.get_marker())) for line in fig.axes[0].get_lines()}
    assert len(looks) == 8 and fig.axes[0].get_xlabel() == "steps / 11"


def test_the_deit_runs_cache_key_does_not_hash_the_comparison_or_the_study():
    """An edit to the comparison's module or to the study must not retrain the students."""
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.cache import code_modules

    hashed = code_modules(tuple(get_recipe("deit").code_roots()))
    assert "survey_lib.recipes.compare" not in hashed and "survey_lib.recipes.deit_study" not in hashed
    assert {"survey_lib.recipes.deit", "survey_lib.recipes.teacher", "survey_lib.objectives.distillation",
            "survey_lib.models.deit", "survey_lib.data.splits"} <= set(hashed)

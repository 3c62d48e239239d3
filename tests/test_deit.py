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
    with pytest.raises(ValueError, match="global_pool must be 'token'"):
        DistilledVisionTransformer(**{**CFG, "global_pool": "avg"})
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



"""CLIP and SimCLR: the losses against open_clip and against hand-written formulas, the towers,
the tokenizer offline, the caption data, zero-shot and retrieval helpers, and every bad input; our
CLIP against open_clip's CLIP on shared weights (both conversions), the same training from the same
start, and the initialisation of every parameter."""
import copy
import math
import socket

import pytest
import torch
import torch.nn.functional as F

from survey_lib.data import (HELDOUT_TEMPLATES, TRAIN_TEMPLATES, CaptionedDigits, TwoViews, check_templates,
                             fill_template)
from survey_lib.evaluate import retrieval_recall, zero_shot_weights, encode_captions
from survey_lib.data import DigitsDataset, simclr_augment
from survey_lib.models.clip import CLIP, TextTransformer
from survey_lib.data import CaptionTokenizer
from survey_lib.recipes.clip import clip_for_profile, open_clip_for_profile
from survey_lib.models.clip import INIT_LOGIT_SCALE, scale_from_log
from survey_lib.objectives.infonce import (ClipLoss, NTXentLoss, ReviewEq5Loss, SimCLR, clip_step,
                                           infonce_review_eq5, simclr_step)
from survey_lib.train import TrainConfig, fit, param_groups
from survey_lib.models.clip import (OPEN_CLIP_OPTIONS, OPEN_CLIP_TEXT_OPTIONS, OPEN_CLIP_VISION_OPTIONS,
                                    build_open_clip, from_open_clip_state_dict, open_clip_config, open_clip_key_map,
                                    open_clip_state_dict, to_open_clip)
from survey_lib.recipes.clip import open_clip_param_groups

import open_clip  # noqa: E402  the reference library: without it the run fails
from parity import assert_same_outputs, load_into, perturbed  # noqa: E402


def _features(B=8, E=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, E, generator=g), dim=-1)
    txt = F.normalize(torch.randn(B, E, generator=g), dim=-1)
    return img, txt


# ---------------------------------------------------------------------------------------------
# ClipLoss == open_clip.loss.ClipLoss, forward and backward
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("B", [1, 5, 32])
def test_clip_loss_equals_open_clip_forward_and_backward(B):
    img0, txt0 = _features(B)
    results = []
    for loss_fn in (ClipLoss(), open_clip.loss.ClipLoss()):
        img, txt = img0.clone().requires_grad_(), txt0.clone().requires_grad_()
        log_scale = torch.tensor(INIT_LOGIT_SCALE, requires_grad=True)
        loss = loss_fn(img, txt, log_scale.exp())
        loss.backward()
        results.append((loss.detach(), img.grad, txt.grad, log_scale.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_clip_loss_equals_open_clip_through_open_clip_model():
    """Same features and scale from a real (tiny, random) open_clip CLIP: equal loss and equal
    gradients on every parameter of the model. In float64: in float32 the summation order alone
    moves the (large, ~10) embedding gradients by a few 1e-6."""
    torch.manual_seed(0)
    model = open_clip_for_profile("smoke").double()
    images = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    tokens = CaptionTokenizer(16)([fill_template(TRAIN_TEMPLATES[k % 8], k) for k in range(6)])
    grads = []
    for loss_fn in (ClipLoss(), open_clip.loss.ClipLoss()):
        model.zero_grad()
        img, txt, scale = model(images, tokens)
        loss = loss_fn(img, txt, scale)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-6, rtol=0)
    assert grads[0][1].keys() == grads[1][1].keys() and "logit_scale" in grads[0][1]
    for n in grads[0][1]:
        torch.testing.assert_close(grads[0][1][n], grads[1][1][n], atol=1e-6, rtol=0, msg=n)


def test_clip_loss_is_the_review_eq4():
    """L = -1/(2N) sum_i [log softmax_j(s(v_i,t_j)/tau)_i + log softmax_j(s(v_j,t_i)/tau)_i], by hand."""
    img, txt = _features(4, 3, seed=1)
    tau = 0.07
    s = (img @ txt.T).tolist()
    N = 4
    total = 0.0
    for i in range(N):
        total += math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[i][j] / tau) for j in range(N)))
        total += math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[j][i] / tau) for j in range(N)))
    expected = -total / (2 * N)
    assert ClipLoss()(img, txt, 1 / tau).item() == pytest.approx(expected, abs=1e-5)
    parts = ClipLoss()(img, txt, 1 / tau, output_dict=True)
    assert parts["contrastive_loss"].item() == pytest.approx((parts["loss_i2t"] + parts["loss_t2i"]).item() / 2)


def test_clip_loss_normalize_option():
    img, txt = _features(5)
    assert torch.allclose(ClipLoss(normalize=True)(3 * img, 0.5 * txt, 10.0), ClipLoss()(img, txt, 10.0), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the temperature: stored as a log, exponentiated once, clamped at ln 100
# ---------------------------------------------------------------------------------------------
def test_logit_scale_init_clamp_and_gradient():
    model = clip_for_profile("smoke")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert scale_from_log(model.logit_scale).item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)  # exp(7) = 1097 > 100
    x = torch.randn(3, 1, 32, 32)
    tokens = CaptionTokenizer(16)(["a 1.", "a 2.", "a 3."])
    img, txt, scale = model(x, tokens)
    assert scale.item() == pytest.approx(100.0, rel=1e-6)
    ClipLoss()(img, txt, scale).backward()
    assert model.logit_scale.grad.item() == 0.0  # above the cap the temperature gets no gradient
    # the training step clamps the stored parameter itself, as open_clip's loop does
    clip_step()(model, (x, tokens))
    assert model.logit_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)


def test_features_are_normalised_and_shaped():
    model = clip_for_profile("smoke")
    tokens = CaptionTokenizer(16)(["a handwritten 7.", "the number three."])
    img, txt, scale = model(torch.randn(2, 1, 32, 32), tokens)
    assert img.shape == txt.shape == (2, 32) and scale.ndim == 0
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))


# ---------------------------------------------------------------------------------------------
# NT-Xent
# ---------------------------------------------------------------------------------------------
def test_ntxent_hand_computable_two_pairs():
    """N = 2 images, 2-D unit features with known cosines.

    a = (1, 0), a' = (0.6, 0.8), b = (0, 1), b' = (-0.6, 0.8). Cosines: s(a,a') = 0.6, s(a,b) = 0,
    s(a,b') = -0.6, s(a',b) = 0.8, s(a',b') = 0.28, s(b,b') = 0.8. Each of the 4 anchors has one
    positive and 2N - 2 = 2 negatives.
    """
    tau = 0.5
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # a, b
    z_b = torch.tensor([[0.6, 0.8], [-0.6, 0.8]])  # a', b'
    e = lambda s: math.exp(s / tau)  # noqa: E731
    l_a = -math.log(e(0.6) / (e(0.6) + e(0.0) + e(-0.6)))  # anchor a: positive a', negatives b, b'
    l_b = -math.log(e(0.8) / (e(0.8) + e(0.0) + e(0.8)))  # anchor b: positive b', negatives a, a'
    l_a2 = -math.log(e(0.6) / (e(0.6) + e(0.8) + e(0.28)))  # anchor a': positive a, negatives b, b'
    l_b2 = -math.log(e(0.8) / (e(0.8) + e(-0.6) + e(0.28)))  # anchor b': positive b, negatives a, a'
    expected = (l_a + l_b + l_a2 + l_b2) / 4
    assert NTXentLoss(temperature=tau)(z_a, z_b).item() == pytest.approx(expected, abs=1e-6)
    # the review's Eq. 5: anchors a and b only, negatives from the same view only
    eq5 = (-math.log(e(0.6) / (e(0.6) + e(0.0))) - math.log(e(0.8) / (e(0.8) + e(0.0)))) / 2
    assert infonce_review_eq5(z_a, z_b, temperature=tau).item() == pytest.approx(eq5, abs=1e-6)
    assert abs(eq5 - expected) > 0.1


def test_review_eq5_loss_is_the_symmetrised_eq5_and_misses_the_other_views_negatives():
    """ReviewEq5Loss = mean of Eq. 5 with each view as anchor. Each anchor's denominator is a subset
    of NT-Xent's (the other view's negatives are missing), so for N > 1 the loss is strictly smaller;
    with N = 1 neither has a negative and both are 0."""
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    loss = ReviewEq5Loss(0.3)(z_a, z_b)
    expected = (infonce_review_eq5(z_a, z_b, 0.3) + infonce_review_eq5(z_b, z_a, 0.3)) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert ReviewEq5Loss(0.3)(z_a, z_b).item() < NTXentLoss(0.3)(z_a, z_b).item()  # fewer terms in each denominator
    one = torch.tensor([[1.0, 0.0]])
    assert ReviewEq5Loss(0.5)(one, one).item() == pytest.approx(0.0, abs=1e-6)
    assert NTXentLoss(0.5)(one, one).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        ReviewEq5Loss(0.0)


def test_ntxent_matches_loop_formula_and_is_scale_invariant():
    g = torch.Generator().manual_seed(3)
    N, tau = 5, 0.2
    z_a, z_b = torch.randn(N, 7, generator=g), torch.randn(N, 7, generator=g)
    z = F.normalize(torch.cat([z_a, z_b]), dim=-1)
    s = (z @ z.T).tolist()
    total = 0.0
    for i in range(2 * N):
        pos = (i + N) % (2 * N)
        total += -math.log(math.exp(s[i][pos] / tau) / sum(math.exp(s[i][k] / tau) for k in range(2 * N) if k != i))
    loss = NTXentLoss(tau)(z_a, z_b)
    assert loss.item() == pytest.approx(total / (2 * N), abs=1e-5)
    assert NTXentLoss(tau)(4 * z_a, 0.1 * z_b).item() == pytest.approx(loss.item(), abs=1e-5)  # cosine


def test_ntxent_gradients_finite_for_identical_views():
    z = torch.randn(4, 8, requires_grad=True)
    NTXentLoss(0.1)(z, z).backward()  # masked diagonal is -inf: no NaN may leak into the gradient
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------------------------------
# the text tower
# ---------------------------------------------------------------------------------------------
def test_text_tower_is_causal_and_pools_the_eot_token():
    torch.manual_seed(0)
    tower = TextTransformer(vocab_size=100, context_length=8, width=16, depth=2, num_heads=2, eot_token_id=99)
    tower.eval()
    tokens = torch.tensor([[1, 5, 6, 99, 0, 0, 0, 0]])
    changed = tokens.clone()
    changed[0, 5] = 42  # after the EOT token: padding content
    feats, feats2 = tower.forward_features(tokens), tower.forward_features(changed)
    torch.testing.assert_close(feats[:, :5], feats2[:, :5])  # positions <= 4 never see position 5
    torch.testing.assert_close(tower(tokens), tower(changed))
    torch.testing.assert_close(tower(tokens), feats[:, 3])  # pooled at the EOT position
    edited = tokens.clone()
    edited[0, 1] = 7
    assert not torch.allclose(tower(tokens), tower(edited))  # the EOT feature sees the whole caption
    maps = tower.get_attention_maps(tokens)
    assert len(maps) == 2 and torch.all(maps[0][0, :, 0, 1:] == 0)  # token 0 attends only to itself


def test_text_tower_errors():
    tower = TextTransformer(vocab_size=100, context_length=8, width=16, depth=1, num_heads=2, eot_token_id=99)
    with pytest.raises(ValueError, match="exceed context_length 8"):
        tower(torch.full((1, 9), 99))
    with pytest.raises(ValueError, match="end-of-text token"):
        tower(torch.tensor([[1, 2, 3]]))


# ---------------------------------------------------------------------------------------------
# tokenizer: open_clip's vocabulary, offline
# ---------------------------------------------------------------------------------------------
def test_tokenizer_works_offline(monkeypatch):
    import open_clip.tokenizer as oct
    from survey_lib.data import captions as clip_module

    def no_network(*args, **kwargs):
        raise AssertionError("the tokenizer tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    clip_module._simple_tokenizer.cache_clear()  # build it again with the network blocked
    tok = CaptionTokenizer(context_length=16)
    out = tok(["a photo of the digit seven.", "a handwritten 7."])
    assert out.shape == (2, 16) and out.dtype == torch.int64
    assert tok.vocab_size == 49408 and (out[:, 0] == tok.sot_token_id).all()
    torch.testing.assert_close(out, oct.tokenize(["a photo of the digit seven.", "a handwritten 7."], context_length=16))
    assert tok.decode(out[1]) == "a handwritten 7 ."
    long = tok(["one " * 40])
    assert long[0, -1] == tok.eot_token_id  # truncated, still ends with the end token


def test_tokenizer_errors():
    tok = CaptionTokenizer(16)
    with pytest.raises(ValueError, match="empty caption list"):
        tok([])
    with pytest.raises(ValueError, match="must be strings"):
        tok(["ok", 3])
    with pytest.raises(ValueError, match="context_length must be >= 3"):
        CaptionTokenizer(2)


# ---------------------------------------------------------------------------------------------
# bad inputs: mismatched batches, empty caption lists
# ---------------------------------------------------------------------------------------------
def test_mismatched_batch_sizes_raise():
    img, txt = _features(4)
    with pytest.raises(ValueError, match="batch sizes differ: 4 images vs 3 texts"):
        ClipLoss()(img, txt[:3], 10.0)
    with pytest.raises(ValueError, match="feature widths differ"):
        ClipLoss()(img, txt[:, :5], 10.0)
    with pytest.raises(ValueError, match="batch sizes differ: 4 first views vs 2 second views"):
        NTXentLoss()(img, txt[:2])
    with pytest.raises(ValueError, match="batch sizes differ"):
        infonce_review_eq5(img, txt[:2])
    with pytest.raises(ValueError, match="empty batch"):
        ClipLoss()(img[:0], txt[:0], 10.0)
    model = clip_for_profile("smoke")
    with pytest.raises(ValueError, match="3 images vs 2 captions"):
        model(torch.randn(3, 1, 32, 32), CaptionTokenizer(16)(["a 1.", "a 2."]))
    with pytest.raises(ValueError, match="batch sizes differ: 4 images vs 3 texts"):
        retrieval_recall(img, txt[:3])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(0.0)


def test_empty_or_bad_templates_raise():
    model = clip_for_profile("smoke")
    tok = CaptionTokenizer(16)
    with pytest.raises(ValueError, match="empty template list"):
        zero_shot_weights(model, tok, [])
    with pytest.raises(ValueError, match="empty template list"):
        CaptionedDigits(templates=[], tokenizer=tok)
    with pytest.raises(ValueError, match=r"must contain \{name\}"):
        check_templates(["a photo of a digit."])
    with pytest.raises(ValueError, match=r"no other placeholder"):
        check_templates(["a {colour} {name}."])
    with pytest.raises(ValueError, match="empty caption list"):
        encode_captions(model, tok, [])


def test_retrieval_recall_by_hand():
    # 3 images (labels 0, 1, 1) and 2 texts (labels 0, 1) on the unit circle
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = retrieval_recall(img, txt, torch.tensor([0, 1, 1]), torch.tensor([0, 1]), ks=(1, 2))
    assert r["i2t_R@1"] == pytest.approx(2 / 3)  # image 2 is closer to text 0 (class 0)
    assert r["i2t_R@2"] == 1.0 and r["t2i_R@1"] == 1.0 and r["t2i_R@2"] == 1.0
    with pytest.raises(ValueError, match="exceeds the number of candidates"):
        retrieval_recall(img, txt, torch.tensor([0, 1, 1]), torch.tensor([0, 1]), ks=(1, 5))
    with pytest.raises(ValueError, match="pass both"):
        retrieval_recall(img, txt, torch.tensor([0, 1, 1]))
    assert retrieval_recall(txt, txt, ks=(1,))["i2t_R@1"] == 1.0  # instance level: the diagonal


# ---------------------------------------------------------------------------------------------
# data and zero-shot
# ---------------------------------------------------------------------------------------------
def test_captioned_digits_and_templates():
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    assert fill_template("a handwritten {digit}.", 7) == "a handwritten 7."
    assert fill_template("a photo of the digit {name}.", 7) == "a photo of the digit seven."
    tok = CaptionTokenizer(16)
    ds = CaptionedDigits(train=False, tokenizer=tok)
    img, tokens, y = ds[0]
    assert img.shape == (1, 32, 32) and tokens.shape == (16,) and len(ds) == 360
    assert tok.decode(tokens).replace(" .", ".") in {fill_template(t, y) for t in TRAIN_TEMPLATES}
    assert ds.tokens.shape == (10, len(TRAIN_TEMPLATES), 16)


@pytest.mark.parametrize("split, n", [("train", 3500), ("val", 500), ("test", 1000)])
def test_captioned_mnist5k_pairs_labels_and_split_sizes(split, n):
    """MNIST-5k with captions: the split sizes of MNIST5k, 28 x 28 images (3 channels on request) equal
    to MNIST5k's, and every caption a training-template caption of the image's own label."""
    from survey_lib.data import MNIST5k

    tok = CaptionTokenizer(16)
    ds = CaptionedDigits(dataset="mnist5k", split=split, tokenizer=tok)
    base = MNIST5k(split)
    assert len(ds) == n and torch.equal(ds.targets, base.targets)
    allowed = {k: {fill_template(t, k) for t in TRAIN_TEMPLATES} for k in range(10)}
    torch.manual_seed(0)
    seen = set()
    for i in range(0, n, n // 40):
        img, tokens, y = ds[i]
        assert img.shape == (1, 28, 28) and tokens.shape == (16,) and tokens.dtype == torch.int64
        assert y == int(base.targets[i]) and torch.equal(img, base[i][0])
        text = tok.decode(tokens).replace(" .", ".")
        assert text in allowed[y]
        seen.add(text)
    assert len(seen) > 10  # the template is drawn per read, not fixed per image
    three = CaptionedDigits(dataset="mnist5k", split=split, tokenizer=tok, in_chans=3)
    img3 = three[0][0]
    assert img3.shape == (3, 28, 28) and torch.equal(img3[0], img3[2]) and torch.equal(img3[:1], base[0][0])


def test_captioned_mnist5k_templates_held_out_and_splits_disjoint():
    """No training caption is a held-out caption (the zero-shot protocol), the template of item i is
    drawn from the training templates only, and the three splits share no image."""
    from survey_lib.data import mnist5k_split

    tok = CaptionTokenizer(16)
    ds = CaptionedDigits(dataset="mnist5k", split="train", tokenizer=tok)
    train_caps = {ds.caption(k, t) for k in range(10) for t in range(len(ds.templates))}
    held_caps = {fill_template(t, k) for k in range(10) for t in HELDOUT_TEMPLATES}
    assert not train_caps & held_caps and len(train_caps) == 10 * len(TRAIN_TEMPLATES)
    held_tokens = {tuple(r.tolist()) for r in tok(sorted(held_caps))}
    assert not {tuple(r.tolist()) for r in ds.tokens.reshape(-1, 16)} & held_tokens
    s = mnist5k_split()
    assert not (set(s.train) & set(s.val) or set(s.train) & set(s.test) or set(s.val) & set(s.test))
    heldout = CaptionedDigits(dataset="mnist5k", split="val", templates=HELDOUT_TEMPLATES, tokenizer=tok)
    assert {heldout.caption(k, t) for k in range(10) for t in range(len(HELDOUT_TEMPLATES))} == held_caps


def test_captioned_images_wraps_any_labelled_dataset_and_rejects_bad_ones():
    from survey_lib.data import CaptionedImages, MNIST5k

    tok = CaptionTokenizer(16)
    base = MNIST5k("val")
    ds = CaptionedImages(base, HELDOUT_TEMPLATES[:1], tok)
    img, tokens, y = ds[3]
    assert torch.equal(img, base[3][0]) and tok.decode(tokens).replace(" .", ".") == fill_template(HELDOUT_TEMPLATES[0], y)
    with pytest.raises(ValueError, match="has no `targets`"):
        CaptionedImages([(torch.zeros(1, 2, 2), 0)], tokenizer=tok)
    base.targets = base.targets.clone()
    base.targets[0] = 12
    with pytest.raises(ValueError, match=r"labels must lie in range\(10\)"):
        CaptionedImages(base, tokenizer=tok)
    with pytest.raises(ValueError, match="unknown dataset"):
        CaptionedDigits(dataset="cifar", tokenizer=tok)


def test_zero_shot_weights_are_a_normalised_template_mean():
    torch.manual_seed(0)
    model, tok = clip_for_profile("smoke"), CaptionTokenizer(16)
    w = zero_shot_weights(model, tok, HELDOUT_TEMPLATES[:2])
    one = encode_captions(model, tok, [fill_template(HELDOUT_TEMPLATES[0], 3)])[0]
    two = encode_captions(model, tok, [fill_template(HELDOUT_TEMPLATES[1], 3)])[0]
    torch.testing.assert_close(w[3], F.normalize(one + two, dim=0), atol=1e-6, rtol=0)
    assert w.shape == (10, 32)


# ---------------------------------------------------------------------------------------------
# training through survey_lib.train.fit
# ---------------------------------------------------------------------------------------------
def _subset(ds, n):
    return torch.utils.data.Subset(ds, list(range(n)))


def test_open_clip_model_trains_through_fit():
    model = open_clip_for_profile("smoke")
    ds = _subset(CaptionedDigits(train=True, in_chans=3), 64)
    h = fit(model, ds, config=TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_epochs=0, progress=False),
            step_fn=clip_step())
    losses = h.series("train_loss")
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert "inv_tau" in h.rows[-1] and "loss_i2t" in h.rows[-1]


def test_our_clip_trains_through_fit():
    model = clip_for_profile("smoke")
    ds = _subset(CaptionedDigits(train=True), 64)
    h = fit(model, ds, config=TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_epochs=0, progress=False),
            step_fn=clip_step())
    losses = h.series("train_loss")
    assert losses[-1] < losses[0]


def test_simclr_two_views_and_step():
    from survey_lib.recipes.vit import vit_for_profile

    base = DigitsDataset(train=False)
    views = TwoViews(base)
    (a, b), y = views[0]
    assert a.shape == b.shape == (1, 32, 32) and not torch.equal(a, b) and y == int(base.targets[0])
    model = SimCLR(vit_for_profile("smoke", num_classes=0), feature_dim=32, proj_dim=16)
    h = fit(model, _subset(views, 32), config=TrainConfig(epochs=1, batch_size=16, progress=False),
            step_fn=simclr_step(NTXentLoss(0.2)))
    assert math.isfinite(h.rows[-1]["train_loss"])
    assert model.embed(a[None]).shape == (1, 32)


class _OracleCLIP(torch.nn.Module):
    """A stand-in CLIP that embeds an image of class k and any caption of class k as the same
    one-hot vector: a correct zero-shot evaluation must score it 100%, and 0% if it is lied to."""

    def __init__(self, tokenizer, templates, shift=0):
        super().__init__()
        self.caption_class = {}
        for k in range(10):
            for row in tokenizer([fill_template(t, k) for t in templates]):
                self.caption_class[tuple(row.tolist())] = k
        self.shift = shift

    def encode_text(self, tokens):
        ks = torch.tensor([self.caption_class[tuple(r.tolist())] for r in tokens])
        return F.one_hot(ks, 10).float()  # (B, 10)

    def encode_image(self, images):
        ks = (images[:, 0, 0, 0].round().long() + self.shift) % 10  # the class is written in the pixels
        return F.one_hot(ks, 10).float()  # (B, 10)


def test_zero_shot_accuracy_scores_an_oracle_and_a_liar():
    from survey_lib.evaluate import zero_shot_accuracy

    tok = CaptionTokenizer(16)
    labels = torch.arange(40) % 10
    images = labels.float()[:, None, None, None].expand(-1, 1, 4, 4).clone()  # image i is filled with its label
    ds = torch.utils.data.TensorDataset(images, labels)
    assert zero_shot_accuracy(_OracleCLIP(tok, HELDOUT_TEMPLATES), tok, ds, HELDOUT_TEMPLATES) == 1.0
    assert zero_shot_accuracy(_OracleCLIP(tok, HELDOUT_TEMPLATES, shift=1), tok, ds, HELDOUT_TEMPLATES) == 0.0
    # class k's ensembled weight is the one-hot of k, whatever the number of templates
    w = zero_shot_weights(_OracleCLIP(tok, HELDOUT_TEMPLATES), tok, HELDOUT_TEMPLATES)
    torch.testing.assert_close(w, torch.eye(10))


# ---------------------------------------------------------------------------------------------
# our CLIP == open_clip's CLIP: conversion both ways, same training from the same start
# ---------------------------------------------------------------------------------------------
_VISION = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
_TEXT = dict(context_length=16, width=32, depth=2, num_heads=2, mlp_ratio=2.0)

#: Our CLIP built three ways, each with the open_clip config of open_clip_config():
#: "open_clip": every open_clip choice (the twin: the conversion is a renaming);
#: "ours": today's architecture (avg pooling with LayerNorm after it, no ln_pre, patch bias, eps 1e-6,
#: first-EOT pooling, clamped scale), expressed in open_clip through its config fields;
#: "mixed": LayerScale, QuickGELU in both towers, ln_pre, avg pooling with LayerNorm before it.
_CASES = {
    "open_clip": dict(vision_cfg={**_VISION, **OPEN_CLIP_VISION_OPTIONS}, text_cfg={**_TEXT, **OPEN_CLIP_TEXT_OPTIONS},
                      **OPEN_CLIP_OPTIONS),
    "ours": dict(vision_cfg={**_VISION, "global_pool": "avg"}, text_cfg=_TEXT),
    "mixed": dict(vision_cfg={**_VISION, "global_pool": "avg", "fc_norm": False, "pre_norm": True, "init_values": 0.1,
                              "act_layer": "quick_gelu"}, text_cfg={**_TEXT, "act_layer": "quick_gelu"}),
}


def _captions(n=8):
    """Real captions of every template, tokenised by CLIP's BPE (different lengths, so different EOT positions)."""
    return CaptionTokenizer(16)([fill_template(TRAIN_TEMPLATES[k % len(TRAIN_TEMPLATES)], k % 10) for k in range(n)])


def _assert_same_clip(ours, theirs, atol=1e-5):
    """Image features, text features and logit scale of both models on random images and real captions,
    forward; image-feature gradients with respect to the images too."""
    ours.eval()
    theirs.eval()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = _captions()
    assert_same_outputs(ours.encode_image, theirs.encode_image, [images], atol=atol)
    assert_same_outputs(ours.encode_image, theirs.encode_image, [images], atol=atol, backward=True)
    assert_same_outputs(ours.encode_text, theirs.encode_text, [tokens], atol=atol)
    with torch.no_grad():
        for a, b in zip(ours(images, tokens), theirs(images, tokens)):
            torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_open_clip_initial_weights_in_ours_give_open_clips_features(case):
    """open_clip's own initial weights, converted by from_open_clip_state_dict, loaded strictly into ours."""
    torch.manual_seed(0)
    ours = CLIP(embed_dim=24, **_CASES[case])
    theirs = build_open_clip(**open_clip_config(ours))
    ours.load_state_dict(from_open_clip_state_dict(theirs.state_dict(), ours), strict=True)
    _assert_same_clip(ours, theirs)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_our_perturbed_weights_in_open_clip_give_our_features(case):
    """Our weights plus noise (no zero bias or unit gain left to hide a wrong mapping), converted by
    open_clip_state_dict (the patch bias of "ours" folded into the position embedding), loaded strictly."""
    torch.manual_seed(0)
    ours = perturbed(CLIP(embed_dim=24, **_CASES[case]))
    theirs = load_into(build_open_clip(**open_clip_config(ours)), open_clip_state_dict(ours))
    _assert_same_clip(ours, theirs)
    _assert_same_clip(ours, to_open_clip(ours))
    # and back: open_clip's keys map onto ours one-to-one
    back = CLIP(embed_dim=24, **_CASES[case])
    back.load_state_dict(from_open_clip_state_dict(theirs.state_dict(), back), strict=True)
    _assert_same_clip(back, theirs)


@pytest.mark.parametrize("edit", ["text LayerNorm eps 1e-6", "quick_gelu", "LayerNorm after pooling"])
def test_parity_breaks_when_one_open_clip_field_is_wrong(edit):
    """The parity above has teeth: the same weights in an open_clip model with one field changed differ.
    (Ours: the twin with mean pooling after the LayerNorm, open_clip's ``pool_type='avg'``.)"""
    torch.manual_seed(0)
    ours = CLIP(embed_dim=24, vision_cfg={**_CASES["open_clip"]["vision_cfg"], "global_pool": "avg", "fc_norm": False},
                text_cfg=_CASES["open_clip"]["text_cfg"], **OPEN_CLIP_OPTIONS).eval()
    cfg = copy.deepcopy(open_clip_config(ours))
    assert cfg["vision_cfg"]["final_ln_after_pool"] is False and not cfg["quick_gelu"]
    if edit == "quick_gelu":
        cfg["quick_gelu"] = True
    elif edit == "LayerNorm after pooling":
        cfg["vision_cfg"]["final_ln_after_pool"] = True
    else:
        cfg["text_cfg"]["norm_kwargs"] = {"eps": 1e-6}
    theirs = load_into(build_open_clip(**cfg).eval(), open_clip_state_dict(ours))
    images, tokens = torch.randn(8, 3, 32, 32), _captions()
    with torch.no_grad():
        gap = max(float((a - b).abs().max()) for a, b in zip(ours(images, tokens), theirs(images, tokens)))
    assert gap > 1e-4, f"{edit}: the models should differ, max gap {gap:.1e}"


def test_argmax_pooling_equals_eot_pooling_on_clip_tokens():
    """open_clip pools the largest token id; we pool the first EOT. With CLIP's tokenizer EOT = 49407 is the
    largest id of every row, so the two pick the same position (and the same feature)."""
    tokens = _captions(16)
    torch.manual_seed(0)
    eot = TextTransformer(context_length=16, width=32, depth=1, num_heads=2).eval()
    argmax = TextTransformer(context_length=16, width=32, depth=1, num_heads=2, pool_type="argmax").eval()
    argmax.load_state_dict(eot.state_dict())
    assert torch.equal(eot.eot_positions(tokens), argmax.eot_positions(tokens))
    torch.testing.assert_close(eot(tokens), argmax(tokens), atol=0, rtol=0)
    no_eot = tokens.clone()
    no_eot[no_eot == 49407] = 0
    assert argmax(no_eot).shape == (16, 32)  # argmax pools whatever is largest; eot refuses
    with pytest.raises(ValueError, match="end-of-text token"):
        eot(no_eot)


def test_default_options_are_todays_model():
    """The new options default to the model as it was: no ln_pre, a patch bias, eps 1e-6, timm's init,
    first-EOT pooling, zero text biases, the clamped scale; open_clip's model needs all of them switched.
    (The clip recipe switches some of them on: ``ADOPTED_CHOICES``; the class's defaults stay.)"""
    from survey_lib.recipes.clip import CLIP_MODELS

    m = CLIP(**CLIP_MODELS["smoke"])
    assert isinstance(m.visual.norm_pre, torch.nn.Identity) and m.visual.patch_embed.proj.bias is not None
    assert {mod.eps for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)} == {1e-6}
    assert m.text.pool_type == "eot" and m.max_logit_scale == pytest.approx(math.log(100))
    assert all(float(b.detach().abs().max()) == 0 for n, b in m.text.named_parameters()
               if n.endswith("bias") and "norm" not in n and "ln_" not in n)  # every Linear bias of the text tower
    assert m.visual.cls_token.abs().max() < 1e-4  # N(0, 1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        open_clip_config(m)  # the presets see 1 grey channel, open_clip's conv1 takes 3


def test_conversion_refuses_what_open_clip_cannot_express():
    with pytest.raises(ValueError, match="in_proj_bias"):
        open_clip_state_dict(CLIP(embed_dim=24, vision_cfg={**_VISION, "qkv_bias": False}, text_cfg=_TEXT))
    with pytest.raises(ValueError, match="dropout"):
        open_clip_config(CLIP(embed_dim=24, vision_cfg={**_VISION, "drop_path_rate": 0.1}, text_cfg=_TEXT))
    with pytest.raises(ValueError, match="quick_gelu"):
        open_clip_config(CLIP(embed_dim=24, vision_cfg={**_VISION, "act_layer": "quick_gelu"}, text_cfg=_TEXT))
    twin = CLIP(embed_dim=24, **_CASES["open_clip"])
    no_ln_pre = CLIP(embed_dim=24, vision_cfg={**_VISION, **OPEN_CLIP_VISION_OPTIONS, "pre_norm": False},
                     text_cfg=_TEXT)
    with pytest.raises(ValueError, match="pre_norm=True"):
        from_open_clip_state_dict(to_open_clip(twin).state_dict(), no_ln_pre)
    with pytest.raises(ValueError, match="act_layer must be one of"):
        TextTransformer(act_layer="relu")
    with pytest.raises(ValueError, match="block_init must be one of"):
        CLIP(vision_cfg={**_VISION, "block_init": "jax"})


def _init_std(t):
    return float(t.float().std()) if t.numel() > 1 else float(t)


def _init_differences(ours, seed=1):
    """open_clip keys whose initial spread differs between ``ours`` and a freshly initialised open_clip
    model of the same config (std ratio outside [0.75, 1.33], or one of them constant and the other not);
    constant tensors (LayerNorm gains, zero biases, the logit scale) must be equal."""
    torch.manual_seed(seed)
    theirs = build_open_clip(**open_clip_config(ours)).state_dict()
    mine = open_clip_state_dict(ours)
    different = set()
    for k, b in theirs.items():
        a = mine[k]
        sa, sb = _init_std(a), _init_std(b)
        if b.numel() > 1 and sb == 0:
            if not torch.equal(a, b):
                different.add(k)
        elif a.numel() == 1:
            assert sa == pytest.approx(sb), k
        elif sa == 0 or not 0.75 < sa / sb < 1.33:
            different.add(k)
    return different


def test_open_clip_options_initialise_every_parameter_like_open_clip():
    """Ours with OPEN_CLIP_*_OPTIONS draws every parameter from open_clip's distribution (same spread,
    same constants), checked on a 64-wide model (>= 64 samples per tensor)."""
    torch.manual_seed(0)
    vision = {**_VISION, "embed_dim": 64, **OPEN_CLIP_VISION_OPTIONS}
    ours = CLIP(embed_dim=32, vision_cfg=vision, text_cfg={**_TEXT, "width": 64, **OPEN_CLIP_TEXT_OPTIONS})
    assert _init_differences(ours) == set()


def test_default_init_differs_from_open_clip_where_documented():
    """Our default init against open_clip's, parameter by parameter: the class and position embeddings of
    the image tower, every Linear of the image blocks (timm's 0.02 vs PyTorch's defaults, whose MLP biases
    are not zero), and the MLP biases of the text tower. Nothing else (the text tower's weights, the
    projections, the embeddings of the text tower, the patch convolution, the norms, the temperature)."""
    torch.manual_seed(0)
    ours = CLIP(embed_dim=32, vision_cfg={**_VISION, "embed_dim": 64, "depth": 1, "patch_bias": False},
                text_cfg={**_TEXT, "width": 64, "depth": 1})
    v, t = "visual.transformer.resblocks.0.", "transformer.resblocks.0."
    assert _init_differences(ours) == {
        "visual.class_embedding", "visual.positional_embedding",
        v + "attn.in_proj_weight", v + "attn.out_proj.weight", v + "mlp.c_fc.weight", v + "mlp.c_fc.bias",
        v + "mlp.c_proj.weight", v + "mlp.c_proj.bias",
        t + "mlp.c_fc.bias", t + "mlp.c_proj.bias",
    }


#: "open_clip": open_clip's initial weights into our twin; "ours": our initial weights (today's architecture
#: but without the patch bias, which open_clip can only hold folded into the position embedding: the same
#: function, another parametrisation, so another training) into open_clip's model of that function.
_TRAIN_CASES = {
    "open_clip": dict(vision_cfg={**_VISION, "depth": 1, **OPEN_CLIP_VISION_OPTIONS},
                      text_cfg={**_TEXT, "depth": 1, **OPEN_CLIP_TEXT_OPTIONS}, **OPEN_CLIP_OPTIONS),
    "ours": dict(vision_cfg={**_VISION, "depth": 1, "global_pool": "avg", "patch_bias": False},
                 text_cfg={**_TEXT, "depth": 1}),
}


def _decayed(model, groups):
    named = {id(p): n for n, p in model.named_parameters()}
    return {named[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}


@pytest.mark.parametrize("case", sorted(_TRAIN_CASES))
def test_same_start_gives_same_training(case):
    """Both models from the same weights, trained by ``fit`` with ``clip_step`` on the same 8 batches of 16
    (CaptionedDigits, 3 channels; fit seeds the data order and the captions' templates): the same step
    losses, the same weights and the same features after the 8 steps.

    The two see the same optimisation with fit's own AdamW grouping, checked first: fit decays the
    same parameters of both (ours skips ``pos_embed``, ``cls_token``, ``positional_embedding`` through
    ``no_weight_decay()``; open_clip's ``no_weight_decay()`` skips its position embeddings and its
    class embedding is 1-D), so no plain-optimiser fallback is needed. Gradient clipping (1.0) sees the
    same global norm, and ``clip_step`` clamps both ``logit_scale`` s alike.

    After training the weights agree except the key slice of the attention biases: softmax is blind to
    a bias added to every key, so its gradient is 0 up to float rounding, and Adam turns that noise
    into updates of about lr; it changes no output.
    """
    torch.manual_seed(0)
    ours = CLIP(embed_dim=32, **_TRAIN_CASES[case])
    theirs = build_open_clip(**open_clip_config(ours))
    if case == "open_clip":
        ours.load_state_dict(from_open_clip_state_dict(theirs.state_dict(), ours), strict=True)
    else:
        theirs.load_state_dict(open_clip_state_dict(ours), strict=True)
    key_map = open_clip_key_map(ours)
    assert {key_map[n] for n in _decayed(ours, param_groups(ours, 0.1))} == _decayed(theirs, param_groups(theirs, 0.1))

    data = _subset(CaptionedDigits(train=True, in_chans=3), 128)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, warmup_epochs=0, weight_decay=0.1, clip_grad=1.0, seed=0,
                      progress=False)
    h_ours = fit(ours, data, config=cfg, step_fn=clip_step())
    h_theirs = fit(theirs, data, config=cfg, step_fn=clip_step())
    assert len(h_ours.step_losses) == 8 and h_ours.step_losses[-1] < h_ours.step_losses[0]
    torch.testing.assert_close(torch.tensor(h_ours.step_losses), torch.tensor(h_theirs.step_losses),
                               atol=1e-5, rtol=1e-5)

    mine, ref = open_clip_state_dict(ours), theirs.state_dict()
    for k in ref:
        a, b = mine[k], ref[k]
        if k.endswith("attn.in_proj_bias"):
            D = a.shape[0] // 3
            a, b = torch.cat([a[:D], a[2 * D:]]), torch.cat([b[:D], b[2 * D:]])  # Q and V biases; K's is free
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=k)
    _assert_same_clip(ours, theirs)


def test_open_clip_param_groups_decay_position_embeddings_in_both_models():
    """open_clip_train's rule (decay every >= 2-D weight but the temperature) splits ours and open_clip's
    alike, and unlike fit's grouping it decays the position embeddings of both towers."""
    ours = CLIP(embed_dim=24, **_CASES["open_clip"])
    theirs = to_open_clip(ours)
    key_map = open_clip_key_map(ours)
    decayed_ours = _decayed(ours, open_clip_param_groups(ours, 0.2))
    assert {key_map[n] for n in decayed_ours} == _decayed(theirs, open_clip_param_groups(theirs, 0.2))
    assert {"visual.pos_embed", "text.positional_embedding", "text.token_embedding.weight"} <= decayed_ours
    assert not {"visual.cls_token", "logit_scale"} & decayed_ours
    assert decayed_ours - _decayed(ours, param_groups(ours, 0.2)) == {"visual.pos_embed", "text.positional_embedding"}


# ---------------------------------------------------------------------------------------------
# the clip / open_clip_clip recipes and the ablation of open_clip's choices
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_all_of_open_clips_model_choices_make_open_clips_model(profile):
    """Every model choice of the ablation together (:data:`MODEL_CHOICES` plus the choices equal by
    construction) gives exactly the open_clip configuration that the open_clip_clip recipe trains."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.clip import ALL_MODEL, OPEN_CLIP_CONFIGS, ablation_overrides

    cfg = get_recipe("clip").config(profile, ablation_overrides()[ALL_MODEL])
    ours = open_clip_config(CLIP(**cfg["model"]))
    theirs = OPEN_CLIP_CONFIGS[profile]["model"]
    assert ours["embed_dim"] == theirs["embed_dim"] and not ours["quick_gelu"]
    assert CLIPVisionCfg(**ours["vision_cfg"]) == CLIPVisionCfg(**theirs["vision_cfg"])
    assert CLIPTextCfg(**ours["text_cfg"]) == CLIPTextCfg(**theirs["text_cfg"])
    assert cfg["data"] == OPEN_CLIP_CONFIGS[profile]["data"]  # 3 channels, same dataset and augmentation
    assert cfg["train"] == OPEN_CLIP_CONFIGS[profile]["train"] and cfg["optim"] == OPEN_CLIP_CONFIGS[profile]["optim"]


def test_every_ablation_row_changes_only_its_own_switches():
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.base import merge_config
    from survey_lib.recipes.clip import OPEN_CLIP_CHOICES, OURS, ablation_baseline, ablation_overrides

    recipe = get_recipe("clip")
    base = recipe.config("cpu", ablation_baseline())
    rows = ablation_overrides()
    assert recipe.config("cpu", rows[OURS]) == base
    for name, choice in OPEN_CLIP_CHOICES.items():
        cfg = recipe.config("cpu", rows[name])
        assert cfg != base and cfg == merge_config(base, choice), name
    with pytest.raises(ValueError, match="unknown ablation rows"):
        ablation_overrides(["no such choice"])


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
def test_the_recipe_is_the_original_plus_exactly_the_adopted_choices(profile):
    """The ablation's reference row is our original recipe whatever the recipe adopts, and the recipe
    differs from it by the adopted choices and nothing else (the notebook prints that difference)."""
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.base import merge_config
    from survey_lib.recipes.clip import (ADOPTED_CHOICES, CONFIGS, MODEL_CHOICES, OPEN_CLIP_CHOICES,
                                         OPEN_CLIP_CONFIGS, ORIGINAL_CONFIGS, ablation_baseline)

    recipe = get_recipe("clip")
    assert recipe.config(profile, ablation_baseline()) == ORIGINAL_CONFIGS[profile]
    assert ADOPTED_CHOICES and set(ADOPTED_CHOICES) <= set(MODEL_CHOICES)
    adopted = ORIGINAL_CONFIGS[profile]
    for name in ADOPTED_CHOICES:
        assert merge_config(adopted, OPEN_CLIP_CHOICES[name]) != adopted, name  # each one changes something
        adopted = merge_config(adopted, OPEN_CLIP_CHOICES[name])
    assert CONFIGS[profile] == adopted
    # open_clip's recipe keeps the original training sections, so adopting never changes its runs
    assert OPEN_CLIP_CONFIGS[profile]["train"] == ORIGINAL_CONFIGS[profile]["train"]
    assert OPEN_CLIP_CONFIGS[profile]["optim"] == ORIGINAL_CONFIGS[profile]["optim"]


def test_every_ablation_row_trains_the_ablations_budget_not_the_recipes(monkeypatch):
    """Under cpu the ablation's 39 runs train ABLATION_TRAIN's epochs whatever the recipes' schedule
    (so a longer final schedule never invalidates them); under smoke the recipes' own."""
    from survey_lib.recipes.clip import (ABLATION_TRAIN, OPEN_CLIP, OPEN_CLIP_RECIPE, RECIPE, ablation_budget,
                                         ablation_overrides, run_ablation)

    trained = []

    class Done:  # what RecipeResult gives run_ablation
        metrics, seconds = {"val_acc": 0.5}, 1.0

    def fake_run(recipe):
        def run(profile, seed=0, overrides=None, **kwargs):
            trained.append((recipe.name, recipe.config(profile, overrides)["train"]["epochs"]))
            return Done()
        return run

    monkeypatch.setattr(RECIPE, "run", fake_run(RECIPE))
    monkeypatch.setattr(OPEN_CLIP_RECIPE, "run", fake_run(OPEN_CLIP_RECIPE))
    for profile in ("cpu", "smoke"):
        trained.clear()
        run_ablation(profile, seeds=(0, 1, 2))
        want = ABLATION_TRAIN[profile].get("epochs", RECIPE.config(profile)["train"]["epochs"])
        assert len(trained) == 3 * len(ablation_overrides()) and {e for _, e in trained} == {want}
        assert ("open_clip_clip", want) in trained
    assert RECIPE.config("cpu")["train"]["epochs"] != ABLATION_TRAIN["cpu"]["epochs"]  # the point of the budget
    assert ablation_budget("smoke") == {} and OPEN_CLIP in ablation_overrides()
    with pytest.raises(ValueError, match="unknown profile"):
        ablation_budget("laptop")


def test_clip_optimizer_follows_the_optim_section():
    from survey_lib.recipes import get_recipe
    from survey_lib.recipes.clip import clip_optimizer

    recipe = get_recipe("clip")
    model = clip_for_profile("smoke")
    opt = clip_optimizer(recipe.config("smoke"), model)
    assert opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.9, 0.999)
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in param_groups(model, 0.1)]
    cfg = recipe.config("smoke", {"optim": {"param_groups": "open_clip", "eps": 1e-6}, "train": {"betas": (0.9, 0.98)}})
    opt = clip_optimizer(cfg, model)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.defaults["eps"] == 1e-6 and opt.defaults["betas"] == (0.9, 0.98)
    assert id(model.visual.pos_embed) in decayed and id(model.text.positional_embedding) in decayed
    with pytest.raises(ValueError, match="param_groups must be"):
        clip_optimizer(recipe.config("smoke", {"optim": {"param_groups": "timm"}}), model)


def test_ablation_runs_compares_on_validation_and_test_metrics_read_the_test_split(monkeypatch, tmp_path):
    from survey_lib.recipes.clip import OPEN_CLIP, OURS, run_ablation, test_metrics

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SURVEY_PROGRESS", "0")
    rows = run_ablation("smoke", seeds=(0, 1, 2), names=[OURS, "ln_pre", OPEN_CLIP])
    assert [r["name"] for r in rows] == [OURS, "ln_pre", OPEN_CLIP]
    for r in rows:
        assert len(r["values"]) == 3 and r["n_seeds"] == 3
        assert r["values"] == [res.metrics["val_acc"] for res in r["results"]]
        assert all(res.history.rows[-1]["val_acc"] == res.metrics["val_acc"] for res in r["results"])
        assert "test_acc" not in r["results"][0].metrics  # training and choosing never read the test split
    ln_pre = rows[1]
    assert ln_pre["diff"] == pytest.approx(ln_pre["mean"] - rows[0]["mean"]) and ln_pre["verdict"] in (
        "holds", "does not hold", "cannot tell")
    assert rows[2]["results"][0].model.visual.conv1.in_channels == 3
    again = run_ablation("smoke", seeds=(0,), names=[OPEN_CLIP])  # from the cache; no reference, no comparison
    assert again[0]["results"][0].extras["cache"] == "hit" and "diff" not in again[0]
    final = test_metrics(rows[2]["results"][0])
    assert set(final) == {"test_acc", "test_i2t_R@1", "test_i2t_R@5", "test_t2i_R@1", "test_t2i_R@5"}
    assert 0.0 <= final["test_acc"] <= 1.0


# ---------------------------------------------------------------------------------------------
# the simclr recipe: its floors, its losses, its views
# ---------------------------------------------------------------------------------------------
class _StopBeforeTraining(Exception):
    pass


def test_simclr_random_init_floor_is_the_runs_starting_point(monkeypatch):
    """knn_baselines' "random_init" encoder must be exactly the weights the seed's SimCLR run starts
    from, so that SimCLR minus random_init is what training added."""
    import survey_lib.recipes.base as base
    from survey_lib.recipes.simclr import RECIPE, initial_model

    seen = {}

    def capture(model, *args, **kwargs):
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        raise _StopBeforeTraining

    monkeypatch.setattr(base, "fit", capture)
    with pytest.raises(_StopBeforeTraining):
        RECIPE.run("smoke", seed=3, cache=False, progress=False)
    start = initial_model("smoke", 3).state_dict()
    assert seen["state"].keys() == start.keys()
    assert all(torch.equal(seen["state"][k], start[k]) for k in start)
    other = initial_model("smoke", 4).state_dict()
    assert not torch.equal(other["backbone.pos_embed"], start["backbone.pos_embed"])


def test_simclr_knn_baselines_on_the_digits():
    from survey_lib.recipes.simclr import knn_baselines

    floors = knn_baselines("smoke", seeds=(0, 1), split="val")
    assert floors["seeds"] == [0, 1] and len(floors["random_init"]) == 2
    assert floors["raw_pixels"] > 0.9  # k-NN on the digits' pixels is a strong baseline
    assert all(0.0 <= v <= 1.0 for v in floors["random_init"]) and floors["random_init"][0] != floors["random_init"][1]
    with pytest.raises(ValueError, match="split"):
        knn_baselines("smoke", seeds=(0,), split="train")


def test_simclr_recipe_trains_with_either_loss_and_rejects_others():
    from survey_lib.recipes.simclr import RECIPE

    overrides = {"loss": "review_eq5", "train": {"epochs": 1}}
    run = RECIPE.run("smoke", seed=0, overrides=overrides, cache=False, progress=False)
    assert math.isfinite(run.history.rows[-1]["train_loss"]) and 0.0 <= run.metrics["knn_acc"] <= 1.0
    with pytest.raises(ValueError, match="unknown SimCLR loss"):
        RECIPE.run("smoke", seed=0, overrides={"loss": "triplet"}, cache=False, progress=False)


def test_simclr_views_fill_with_the_datasets_background():
    from survey_lib.data import MNIST5K_MEAN, MNIST5K_STD, background_value

    assert background_value("mnist5k") == pytest.approx(-MNIST5K_MEAN / MNIST5K_STD)
    with pytest.raises(ValueError, match="unknown dataset"):
        background_value("cifar")
    bg = background_value("mnist5k")
    blank = torch.full((1, 28, 28), bg)
    torch.manual_seed(0)
    view = simclr_augment(img_size=28, crop_scale=(0.3, 1.0), degrees=30.0, translate=0.25, erase_p=1.0, background=bg)(blank)
    torch.testing.assert_close(view, blank)  # a blank image stays blank: every fill is the background
    with pytest.raises(ValueError, match="crop_scale"):
        simclr_augment(crop_scale=(0.0, 1.0))

"""MAE (He et al. 2022, arXiv:2111.06377): masking, patch order, the masked-patch loss, norm_pix_loss,
the fixed 2-D sin-cos embedding, the encoder seeing only visible patches, and every error message."""
import math

import pytest
import torch

from survey_lib.layers import patchify, unpatchify
from survey_lib.models.mae import MaskedAutoencoderViT, get_2d_sincos_pos_embed, num_visible, random_masking
from survey_lib.recipes.mae import MAE_MODELS, mae_for_profile, mae_train_config
from survey_lib.objectives.mae import (MAELoss, average_patch_baseline, mae_step, masked_mse, mean_patch_baseline,
                                       patch_targets, reconstruct)


def tiny_mae(**kw):
    cfg = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
               decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    cfg.update(kw)
    torch.manual_seed(0)
    return MaskedAutoencoderViT(**cfg)


# --------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,ratio,expected", [
    (64, 0.75, 16),   # the digits preset
    (196, 0.75, 49),  # ViT-B/16 on 224 px, the paper's setting
    (6, 0.25, 5),     # 4.5 -> 5: an exact half rounds UP (not Python's round-half-to-even, which gives 4)
    (10, 0.9, 1),     # 10 * (1 - 0.9) = 0.9999999999999998: int() would give 0, rounding gives 1
    (16, 0.5, 8),
    (50, 0.33, 34),   # 33.5 -> 34
])
def test_num_visible_is_rounded_half_up(N, ratio, expected):
    assert num_visible(N, ratio) == expected == math.floor(N * (1 - ratio) + 0.5)


@pytest.mark.parametrize("N,ratio", [(64, 0.75), (16, 0.5), (6, 0.25), (10, 0.9), (49, 0.6)])
def test_random_masking_keeps_exactly_round_N_visible_per_sample(N, ratio):
    B, D = 32, 3
    x = torch.randn(B, N, D)
    x_vis, mask, ids_restore, ids_keep = random_masking(x, ratio, torch.Generator().manual_seed(1))
    keep = num_visible(N, ratio)
    assert x_vis.shape == (B, keep, D) and ids_keep.shape == (B, keep) and ids_restore.shape == (B, N)
    assert mask.shape == (B, N)
    assert torch.equal((mask == 0).sum(1), torch.full((B,), keep))  # exactly `keep` zeros per sample
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # The visible tokens are the rows of x at ids_keep, and the mask is 0 exactly there.
    for b in range(B):
        assert torch.equal(x_vis[b], x[b, ids_keep[b]])
        assert torch.equal(torch.nonzero(mask[b] == 0).flatten(), ids_keep[b].sort().values)


def test_masks_differ_between_samples_and_are_reproducible():
    x = torch.randn(16, 64, 8)
    _, mask, _, _ = random_masking(x, 0.75, torch.Generator().manual_seed(0))
    assert len({tuple(m.tolist()) for m in mask}) == 16  # every sample has its own mask
    _, mask2, _, _ = random_masking(x, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2)
    # Every position is removed with probability 0.75: over many samples the frequency is close.
    _, big, _, _ = random_masking(torch.zeros(4000, 16, 1), 0.75, torch.Generator().manual_seed(3))
    assert (big.mean(0) - 0.75).abs().max() < 0.04


def test_ids_restore_undoes_the_shuffle():
    B, N, D = 8, 20, 5
    x = torch.randn(B, N, D)
    x_vis, mask, ids_restore, ids_keep = random_masking(x, 0.6, torch.Generator().manual_seed(2))
    ids_shuffle = ids_restore.argsort(dim=1)  # ids_restore is the inverse permutation of the shuffle
    assert torch.equal(ids_shuffle[:, : ids_keep.shape[1]], ids_keep)
    shuffled = x.gather(1, ids_shuffle.unsqueeze(-1).expand(-1, -1, D))  # (B, N, D)
    assert torch.equal(shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, D)), x)
    # The decoder's recipe: [visible tokens, fillers] gathered by ids_restore puts every visible token
    # back at its grid position and a filler at every removed one.
    filler = torch.zeros(B, N - x_vis.shape[1], D)
    full = torch.cat([x_vis, filler], 1).gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, D))
    assert torch.equal(full, x * (1 - mask).unsqueeze(-1))


# --------------------------------------------------------------------------------------------
# patch order
# --------------------------------------------------------------------------------------------
def test_unpatchify_inverts_patchify_and_order_is_row_major_pqc():
    x = torch.randn(3, 3, 16, 12)
    p = patchify(x, 4)  # (3, 12, 48)
    assert torch.equal(unpatchify(p, 4, (4, 3), 3), x)
    # token n = i * gw + j; element (p*P + q)*C + c = img[c, i*P + p, j*P + q]
    b, i, j, pp, q, c = 1, 2, 1, 3, 0, 2
    assert p[b, i * 3 + j, (pp * 4 + q) * 3 + c] == x[b, c, i * 4 + pp, j * 4 + q]


def test_prediction_is_in_patchify_order():
    """Overfit one image with a fixed mask: the model's own prediction of the removed patches, put
    back with ``unpatchify``, is that image (pred, targets and unpatchify share one patch order);
    read in any other order (here: transposed) it is not."""
    model = tiny_mae(norm_pix_loss=False)
    torch.manual_seed(0)
    img = torch.randn(1, 1, 16, 16)  # no symmetry a wrong order could hide behind
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        pred, mask = model(img, 0.5, torch.Generator().manual_seed(0))
        loss = MAELoss(4)(img, pred, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pred, mask = model(img, 0.5, torch.Generator().manual_seed(0))
    assert pred.shape == (1, 16, 16) and mask.sum() == 8
    recon = unpatchify(pred, 4, (4, 4), 1)  # (1, 1, 16, 16)
    removed = unpatchify(mask[..., None].expand(-1, -1, 16), 4, (4, 4), 1).bool()  # removed pixels
    err = (recon - img)[removed].pow(2).mean()
    assert err < 1e-3 * img[removed].var()
    assert (recon.transpose(2, 3) - img)[removed].pow(2).mean() > 0.5 * img[removed].var()


# --------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_ignores_visible_patches(norm_pix_loss):
    torch.manual_seed(0)
    imgs = torch.randn(4, 1, 16, 16)
    mask = torch.zeros(4, 16)
    mask[:, [0, 3, 5, 6, 9, 10, 11, 15]] = 1
    loss_fn = MAELoss(4, norm_pix_loss)
    pred = torch.randn(4, 16, 16, requires_grad=True)
    loss = loss_fn(imgs, pred, mask)
    loss.backward()
    visible = mask == 0
    assert torch.equal(pred.grad[visible], torch.zeros_like(pred.grad[visible]))  # exactly zero
    assert (pred.grad[~visible].abs().sum(-1) > 0).all()
    changed = pred.detach().clone()
    changed[visible] = 1e3 * torch.randn_like(changed[visible])
    assert float(loss_fn(imgs, changed, mask)) == float(loss.detach())


def test_loss_is_mean_over_masked_patches_of_per_pixel_mse():
    torch.manual_seed(1)
    pred, target = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float)
    rows = [((pred[b, n] - target[b, n]) ** 2).mean() for b in range(2) for n in range(5) if mask[b, n]]
    assert torch.allclose(masked_mse(pred, target, mask), torch.stack(rows).mean())


def test_norm_pix_loss_matches_direct_formula():
    torch.manual_seed(2)
    imgs = torch.rand(2, 3, 8, 8)
    imgs[0, :, :4, :4] = 0.5  # a flat patch: variance 0, target all zeros
    target = patch_targets(imgs, 4, norm_pix_loss=True)  # (2, 4, 48)
    for b in range(2):
        for n, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            patch = imgs[b, :, 4 * i: 4 * i + 4, 4 * j: 4 * j + 4].permute(1, 2, 0).reshape(-1).double()  # (p, q, c)
            L = patch.numel()
            mean = patch.sum() / L
            var = ((patch - mean) ** 2).sum() / (L - 1)  # unbiased, as torch.var and MAE
            direct = (patch - mean) / math.sqrt(var + 1e-6)  # epsilon inside the square root
            assert torch.allclose(target[b, n].double(), direct, atol=1e-5)
    assert torch.equal(target[0, 0], torch.zeros(48))
    mask = torch.ones(2, 4)
    pred = torch.randn(2, 4, 48)
    assert torch.allclose(MAELoss(4, True)(imgs, pred, mask), ((pred - target) ** 2).mean())


def test_mean_patch_baseline_is_within_patch_variance():
    torch.manual_seed(3)
    imgs = torch.randn(3, 1, 8, 8)
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)
    var = patchify(imgs, 4).var(-1, unbiased=False)  # (3, 4)
    assert torch.allclose(mean_patch_baseline(imgs, mask, 4), (var * mask).sum() / mask.sum())
    assert 0.9 < float(mean_patch_baseline(imgs, mask, 4, norm_pix_loss=True)) < 1.0  # (L-1)/L * var/(var+eps)


def test_average_patch_baseline_predicts_the_reference_mean_patch():
    torch.manual_seed(4)
    ref, imgs = torch.randn(10, 1, 8, 8), torch.randn(3, 1, 8, 8)
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)
    avg = patchify(ref, 4).mean(0)  # (4, 16): average patch at each grid position
    per_patch = ((patchify(imgs, 4) - avg) ** 2).mean(-1)  # (3, 4)
    assert torch.allclose(average_patch_baseline(imgs, mask, 4, ref), (per_patch * mask).sum() / mask.sum())
    assert average_patch_baseline(imgs, mask, 4, ref) > mean_patch_baseline(imgs, mask, 4)


# --------------------------------------------------------------------------------------------
# fixed 2-D sin-cos position embedding
# --------------------------------------------------------------------------------------------
def test_sincos_values_and_translation_invariance():
    D, gh, gw = 16, 3, 5
    pe = get_2d_sincos_pos_embed(D, (gh, gw))
    assert pe.shape == (gh * gw, D)
    i, j = 2, 3
    omega = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    expected = torch.cat([torch.sin(i * omega), torch.cos(i * omega), torch.sin(j * omega), torch.cos(j * omega)])
    assert torch.allclose(pe[i * gw + j].double(), expected, atol=1e-6)
    # The dot product depends only on the 2-D offset.
    grid = pe.reshape(gh, gw, D)
    assert torch.allclose(grid[0, 0] @ grid[1, 2], grid[1, 1] @ grid[2, 3], atol=1e-5)
    assert torch.allclose(grid[2, 4] @ grid[2, 4], torch.tensor(D / 2.0))
    with_cls = get_2d_sincos_pos_embed(D, (gh, gw), cls_token=True)
    assert with_cls.shape == (1 + gh * gw, D) and torch.equal(with_cls[0], torch.zeros(D))


def test_position_embeddings_are_fixed_during_training():
    model = tiny_mae()
    assert "decoder_pos_embed" in dict(model.named_buffers())
    assert not model.encoder.pos_embed.requires_grad
    before_dec, before_enc = model.decoder_pos_embed.clone(), model.encoder.pos_embed.detach().clone()
    assert torch.equal(before_dec[0], get_2d_sincos_pos_embed(16, 4, cls_token=True))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        imgs = torch.randn(4, 1, 16, 16)
        pred, mask = model(imgs)
        loss = MAELoss(4)(imgs, pred, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.decoder_pos_embed, before_dec) and torch.equal(model.encoder.pos_embed, before_enc)
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
def test_weight_init_options():
    mae_init, vit_init = tiny_mae(embed_dim=64, num_heads=4), tiny_mae(embed_dim=64, num_heads=4, weight_init="vit")
    fc1 = lambda m: m.encoder.blocks[0].mlp.fc1.weight  # noqa: E731  (128, 64)
    assert abs(fc1(vit_init).std().item() - 0.02) < 0.003  # timm's truncated normal
    assert abs(fc1(mae_init).std().item() - (2 / (64 + 128)) ** 0.5) < 0.01  # Xavier-uniform
    for m in (mae_init, vit_init):  # the fixed sin-cos embedding survives either initialisation
        assert torch.equal(m.encoder.pos_embed[0], get_2d_sincos_pos_embed(64, 4, cls_token=True))


def test_encoder_sees_only_visible_patches():
    model = tiny_mae().eval()
    seen = []
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    imgs = torch.randn(3, 1, 16, 16)
    latent, mask, _ = model.forward_encoder(imgs, 0.75, torch.Generator().manual_seed(0))
    assert seen == [torch.Size([3, 1 + 4, 16])] and latent.shape == (3, 5, 16)
    # Changing the pixels of removed patches does not change the encoder's output.
    noisy = unpatchify(patchify(imgs, 4) + 5 * mask.unsqueeze(-1) * torch.randn(3, 16, 16), 4, (4, 4), 1)
    latent2, mask2, _ = model.forward_encoder(noisy, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2) and torch.allclose(latent, latent2, atol=1e-6)
    # ... while changing a visible patch does.
    vis = int((mask[0] == 0).nonzero()[0])
    bumped = patchify(imgs, 4)
    bumped[0, vis] += 1.0
    latent3, _, _ = model.forward_encoder(unpatchify(bumped, 4, (4, 4), 1), 0.75, torch.Generator().manual_seed(0))
    assert not torch.allclose(latent[0], latent3[0])


def test_forward_shapes_and_embed_of_full_image():
    model = tiny_mae(norm_pix_loss=True)
    imgs = torch.randn(2, 1, 16, 16)
    pred, mask = model(imgs)
    assert pred.shape == (2, 16, 16) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [12, 12]
    model.eval()
    tokens = model.encoder.forward_features(imgs)  # (2, 17, 16)
    assert torch.allclose(model.embed(imgs), tokens[:, 1:].mean(1))
    assert torch.allclose(model.embed(imgs, pool="token"), tokens[:, 0])
    rec = reconstruct(model, imgs, 0.5)
    assert rec["loss"].ndim == 0
    assert rec["pasted"].shape == imgs.shape
    keep = (rec["mask"] == 0).unsqueeze(-1)
    assert torch.allclose(patchify(rec["pasted"], 4)[keep.expand(-1, -1, 16)],
                          patchify(imgs, 4)[keep.expand(-1, -1, 16)])
    assert torch.isnan(rec["masked"]).any()


def test_profiles_build_and_train_a_few_steps():
    from survey_lib.data import DigitsDataset
    from survey_lib.train import fit

    for profile in MAE_MODELS:
        assert isinstance(mae_for_profile(profile), MaskedAutoencoderViT)
    torch.manual_seed(0)
    model = mae_for_profile("smoke")
    data = torch.utils.data.Subset(DigitsDataset(train=True), range(128))
    h = fit(model, data, config=mae_train_config("smoke", epochs=8, batch_size=32, lr=3e-3, progress=False),
            step_fn=mae_step())
    assert h.rows[-1]["masked_fraction"] == 0.75
    assert h.rows[-1]["train_loss"] < h.rows[0]["train_loss"]


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_mask_ratio_outside_open_interval_raises(ratio):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        random_masking(torch.randn(2, 16, 4), ratio)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        tiny_mae()(torch.randn(2, 1, 16, 16), ratio)


def test_mask_ratio_leaving_no_visible_patch_raises():
    with pytest.raises(ValueError, match="leaves no visible patch out of N=16"):
        random_masking(torch.randn(2, 16, 4), 0.97)  # 16 * 0.03 = 0.48 -> 0
    with pytest.raises(ValueError, match="leaves no visible patch"):
        tiny_mae()(torch.randn(2, 1, 16, 16), 0.97)
    random_masking(torch.randn(2, 16, 4), 0.96)  # 0.64 -> 1 visible patch is fine


def test_mask_ratio_masking_nothing_raises():
    with pytest.raises(ValueError, match="masks no patch"):
        random_masking(torch.randn(2, 16, 4), 0.01)  # 15.84 -> 16 visible


def test_other_errors():
    with pytest.raises(ValueError, match="tokens \\(B, N, D\\)"):
        random_masking(torch.randn(16, 4), 0.5)
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(18, 4)
    with pytest.raises(ValueError, match="decoder_embed_dim must be divisible by 4"):
        tiny_mae(decoder_embed_dim=18, decoder_num_heads=2)
    with pytest.raises(ValueError, match="global_pool"):
        tiny_mae(global_pool="max")
    with pytest.raises(ValueError, match="weight_init must be"):
        tiny_mae(weight_init="xavier")
    with pytest.raises(ValueError, match="pool must be"):
        tiny_mae().embed(torch.randn(1, 1, 16, 16), pool="max")
    with pytest.raises(ValueError, match="unknown profile"):
        mae_for_profile("gpu")
    with pytest.raises(ValueError, match="unknown profile"):
        mae_train_config("gpu")
    with pytest.raises(ValueError, match="removes no patch"):
        masked_mse(torch.randn(1, 4, 2), torch.randn(1, 4, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="must be"):
        masked_mse(torch.randn(1, 4, 2), torch.randn(1, 4, 3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="expects \\(16, 16\\) images"):
        tiny_mae()(torch.randn(1, 1, 20, 20))


# ---------------------------------------------------------------------------------------------
# mae_finetune: the pre-trained encoder as a classifier, or the same ViT from scratch
# ---------------------------------------------------------------------------------------------
class _StopBeforeTraining(Exception):
    pass


def _start_of_finetuning(monkeypatch, overrides):
    """The classifier's weights when the fine-tuning run starts, and the run's data extras."""
    import survey_lib.recipes.base as base
    from survey_lib.recipes.mae import FINETUNE_RECIPE

    seen = {}
    real_fit = base.fit

    def capture(model, *args, **kwargs):
        if isinstance(model, MaskedAutoencoderViT):  # the pre-training run: train it for real
            return real_fit(model, *args, **kwargs)
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        raise _StopBeforeTraining

    monkeypatch.setattr(base, "fit", capture)
    with pytest.raises(_StopBeforeTraining):
        FINETUNE_RECIPE.run("smoke", seed=1, overrides=overrides, cache=False, progress=False)
    return seen["state"]


def test_finetuning_starts_from_the_pretrained_encoder_and_scratch_does_not(monkeypatch, tmp_path):
    from survey_lib.recipes.mae import RECIPE as MAE

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path))
    start = _start_of_finetuning(monkeypatch, {"init": "mae"})
    encoder = MAE.run("smoke", seed=1, progress=False).model.encoder.state_dict()  # the cached pre-training run
    copied = [k for k in encoder if not k.startswith("norm.")]
    assert copied and all(torch.equal(start[k], encoder[k]) for k in copied)
    scratch = _start_of_finetuning(monkeypatch, {"init": "scratch"})
    assert not torch.equal(scratch["blocks.0.attn.qkv.weight"], encoder["blocks.0.attn.qkv.weight"])
    assert torch.equal(scratch["head.weight"], start["head.weight"])  # same seed, same fresh head either way


def test_load_mae_encoder_reports_what_it_left_and_refuses_another_architecture():
    from survey_lib.models.vit import VisionTransformer
    from survey_lib.recipes.mae import load_mae_encoder

    mae = MaskedAutoencoderViT(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                               decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    clf = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2,
                            global_pool="avg")
    report = load_mae_encoder(clf, mae)
    assert report["dropped"] == ["norm.bias", "norm.weight"]
    assert set(report["missing"]) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    torch.testing.assert_close(clf.pos_embed, mae.encoder.pos_embed)  # MAE's sin-cos table comes along
    deeper = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=3, num_heads=2,
                               global_pool="avg")
    with pytest.raises(ValueError, match="does not fit"):
        load_mae_encoder(deeper, mae)


def test_finetune_init_must_be_mae_or_scratch():
    from survey_lib.recipes.mae import FINETUNE_RECIPE

    with pytest.raises(ValueError, match="init must be"):
        FINETUNE_RECIPE.run("smoke", seed=0, overrides={"init": "supervised"}, cache=False, progress=False)


def test_finetune_study_pairs_each_fraction_and_init_on_the_same_seeds(monkeypatch, tmp_path):
    from survey_lib.recipes.mae import FINETUNE_ROWS, finetune_study, fraction_tag

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path))
    study = finetune_study("smoke", seeds=(0, 1), fractions=(0.1, 0.2), progress=False)
    assert set(study) == {(i, f) for i in FINETUNE_ROWS for f in (0.1, 0.2)}
    for (init, f), runs in study.items():
        assert runs.seeds == [0, 1] and all(r.config["init"] == init for r in runs.results)
        assert all(r.config["data"]["label_fraction"] == f for r in runs.results)
    assert study[("mae", 0.1)].results[0].metrics["train_images"] < study[("mae", 0.2)].results[0].metrics["train_images"]
    assert [fraction_tag(f) for f in (0.01, 0.1, 1.0)] == ["f001", "f010", "f100"]
    with pytest.raises(ValueError, match="label fraction"):
        finetune_study("smoke", seeds=(0,), fractions=(0.0,))


def test_finetune_study_takes_the_epochs_of_a_fraction_and_only_the_inits_asked(monkeypatch, tmp_path):
    from survey_lib.recipes import mae as mae_recipes

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path))
    monkeypatch.setitem(mae_recipes.FINETUNE_EPOCHS, "smoke", {1.0: 1})
    study = mae_recipes.finetune_study("smoke", seeds=(0,), fractions=(0.5, 1.0), progress=False, inits=("scratch",))
    assert set(study) == {("scratch", 0.5), ("scratch", 1.0)}
    default = mae_recipes.FINETUNE_RECIPE.config("smoke")["train"]["epochs"]
    assert default != 1 and len(study[("scratch", 0.5)].results[0].history.rows) == default
    assert study[("scratch", 1.0)].results[0].config["train"]["epochs"] == 1
    assert len(study[("scratch", 1.0)].results[0].history.rows) == 1
    with pytest.raises(ValueError, match="unknown init"):
        mae_recipes.finetune_study("smoke", seeds=(0,), fractions=(0.5,), inits=("imagenet",))


def test_mask_ratio_study_pretrains_and_fine_tunes_at_each_ratio(monkeypatch, tmp_path):
    from survey_lib.recipes.mae import mask_ratio_study

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path))
    study = mask_ratio_study("smoke", seeds=(0,), ratios=(0.5, 0.9), fraction=0.5, progress=False)
    assert sorted(study) == [0.5, 0.9]
    for r, runs in study.items():
        pre, ft = runs["pretrain"].results[0], runs["finetune"].results[0]
        assert pre.config["model"]["mask_ratio"] == r and pre.model.mask_ratio == r
        assert ft.config["pretrain"]["model"]["mask_ratio"] == r and ft.config["init"] == "mae"
        assert ft.extras["pretrain_cache"] == "hit"                 # fine-tuned from the very MAE of that ratio
        assert set(pre.metrics) >= {"test_acc", "knn_acc"} and "test_acc" in ft.metrics
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask ratios"):
            mask_ratio_study("smoke", seeds=(0,), ratios=(bad,))


def test_the_mae_benchmark_prints_the_fine_tuning_table_and_the_sweep(capsys, monkeypatch, tmp_path):
    import importlib.util
    from pathlib import Path
    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path))
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "mae_finetune.py"
    spec = importlib.util.spec_from_file_location("mae_finetune_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--profile", "smoke", "--seeds", "0,1", "--fractions", "0.5", "--mask-ratios", "0.5"])
    out = capsys.readouterr().out
    assert "mae_finetune_f050" in out and "scratch_f050" in out and "f050: MAE - scratch" in out
    assert "mask 50%: linear probe" in out and "fine-tuned at 10%" in out

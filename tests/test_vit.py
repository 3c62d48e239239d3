"""Our ViT against timm's on the same weights, attention maps, interpolation, errors."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from parity import assert_same_outputs, load_into, perturbed

from survey_lib.models.vit import VisionTransformer, resample_pos_embed, timm_kwargs, timm_state_dict
from survey_lib.recipes.vit import vit_for_profile

CFG = dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=48, depth=3, num_heads=3)


@pytest.mark.parametrize("extra", [dict(), dict(global_pool="avg"), dict(init_values=0.1, qkv_bias=False),
                                   dict(in_chans=3, patch_size=8, img_size=(32, 48), qk_norm=True),
                                   # CLIP's image tower (survey_lib.models.clip): ln_pre, no patch bias, LayerNorm
                                   # before the mean, PyTorch's eps, QuickGELU; and the CLS token normalised after pooling
                                   dict(pre_norm=True, patch_bias=False, global_pool="avg", fc_norm=False, norm_eps=1e-5,
                                        act_layer="quick_gelu", block_init="open_clip"),
                                   dict(fc_norm=True, cls_token_init="open_clip", pos_embed_init="open_clip")])
def test_logits_equal_timm_on_same_weights(extra):
    torch.manual_seed(0)
    ours = perturbed(VisionTransformer(**{**CFG, **extra})).eval()
    ref = load_into(TimmViT(**timm_kwargs(ours)).eval(), timm_state_dict(ours))
    img = extra.get("img_size", 32)
    h, w = (img, img) if isinstance(img, int) else img
    x = torch.randn(4, extra.get("in_chans", 1), h, w)
    assert_same_outputs(ours, ref, [x])
    assert_same_outputs(ours.forward_features, ref.forward_features, [x])
    assert_same_outputs(ours, ref, [x], backward=True)


def test_timm_kwargs_refuse_a_patch_bias_timm_cannot_hold():
    """timm ties the patch-embedding bias to pre_norm (bias = not pre_norm)."""
    with pytest.raises(ValueError, match="patch-embedding bias exactly when pre_norm is False"):
        timm_kwargs(VisionTransformer(**CFG, patch_bias=False))


def test_state_dict_keys_are_timms():
    ours = VisionTransformer(**CFG)
    ref = TimmViT(**timm_kwargs(ours))
    assert set(timm_state_dict(ours)) == set(ref.state_dict())


def test_attention_maps_shapes_and_consistency():
    torch.manual_seed(0)
    m = VisionTransformer(**CFG).eval()
    x = torch.randn(2, 1, 32, 32)
    maps = m.get_attention_maps(x)
    assert len(maps) == 3 and all(a.shape == (2, 3, 65, 65) for a in maps)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 3, 65))
    torch.testing.assert_close(m.get_last_selfattention(x), maps[-1])
    # the explicit path computes the same features as the fused one
    tokens = m.prepare_tokens(x)
    for blk in m.blocks:
        tokens = blk(tokens, return_attention=True)[0]
    torch.testing.assert_close(m.norm(tokens), m.forward_features(x), atol=1e-5, rtol=1e-5)


def test_other_input_sizes_interpolate_the_position_embedding():
    m = VisionTransformer(**CFG).eval()
    assert m(torch.randn(2, 1, 48, 40)).shape == (2, 10)
    assert m.forward_features(torch.randn(1, 1, 16, 16)).shape == (1, 1 + 16, 48)
    # same grid -> unchanged; interpolation keeps the prefix token
    pe = m.pos_embed
    assert resample_pos_embed(pe, (8, 8), (8, 8)) is pe
    new = resample_pos_embed(pe, (4, 4), (8, 8))
    assert new.shape == (1, 17, 48) and torch.equal(new[:, 0], pe[:, 0])


def test_embed_and_gradients_flow():
    m = vit_for_profile("smoke")
    x = torch.randn(3, 1, 32, 32)
    assert m.embed(x).shape == (3, m.embed_dim)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        VisionTransformer(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="embed_dim 50 is not divisible by num_heads 4"):
        VisionTransformer(embed_dim=50, num_heads=4, depth=1)
    with pytest.raises(ValueError, match="global_pool"):
        VisionTransformer(global_pool="max", depth=1)
    with pytest.raises(ValueError, match="unknown profile"):
        vit_for_profile("huge")
    m = vit_for_profile("smoke")
    with pytest.raises(ValueError, match="not divisible by patch_size 8"):
        m(torch.randn(1, 1, 36, 32))

"""Our Swin against timm's on the same weights, the shifted-window mask, windows, attention maps, errors."""
import pytest
import torch
from parity import perturbed
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.swin_transformer import WindowAttention as TimmWindowAttention

from survey_lib.models.swin import (PatchMerging, SwinTransformer, SwinTransformerBlock,
                                    WindowAttention, from_timm_state_dict, relative_position_index,
                                    shifted_window_mask, timm_kwargs, timm_state_dict,
                                    window_attention_to_grid, window_partition, window_reverse)
from survey_lib.recipes.swin import SWIN_MODELS, swin_for_profile

# Three stages on a 16x16 patch grid: 16 windows (shifted), 4 windows (shifted), 1 global window.
CFG = dict(img_size=32, patch_size=2, in_chans=1, num_classes=10, embed_dim=16, depths=(2, 2, 1),
           num_heads=(2, 2, 4), window_size=4, mlp_ratio=2.0, drop_path_rate=0.0)


def _pair(cfg):
    ours = perturbed(SwinTransformer(**cfg)).eval()
    ref = TimmSwin(**timm_kwargs(ours)).eval()
    ref.load_state_dict(timm_state_dict(ours), strict=True)
    return ours, ref


@pytest.mark.parametrize("extra", [
    dict(),
    dict(qkv_bias=False, window_size=2, depths=(1, 2, 2)),
    dict(in_chans=3, img_size=(32, 48), patch_size=4, window_size=2, depths=(2, 2), num_heads=(2, 4)),  # grid 8x12
    dict(num_classes=0),
])
def test_logits_equal_timm_on_same_weights(extra):
    ours, ref = _pair({**CFG, **extra})
    img = extra.get("img_size", 32)
    h, w = (img, img) if isinstance(img, int) else img
    x = torch.randn(3, extra.get("in_chans", 1), h, w)
    # inference: grad off (SDPA path) and grad on (explicit path) both match timm's logits
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_gradients_equal_timm():
    ours, ref = _pair(CFG)
    x = torch.randn(2, 1, 32, 32)
    y = torch.tensor([3, 7])
    for m in (ours, ref):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    theirs = dict(ref.named_parameters())
    for name, p in timm_state_dict_named_grads(ours).items():
        torch.testing.assert_close(p, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def timm_state_dict_named_grads(model):
    return {k: v for k, v in zip(timm_state_dict(model), (p.grad for p in model.state_dict(keep_vars=True).values()))}


def test_state_dict_keys_and_round_trip():
    ours = SwinTransformer(**CFG)
    ref = TimmSwin(**timm_kwargs(ours))
    assert set(timm_state_dict(ours)) == set(ref.state_dict())
    assert "layers.1.downsample.reduction.weight" in ref.state_dict()  # merging at the start of stage 1
    back = SwinTransformer(**CFG)
    back.load_state_dict(from_timm_state_dict(ref.state_dict()), strict=True)
    # buffers are rebuilt from the config, not stored (non-persistent, as in timm)
    assert not any("attn_mask" in k or "relative_position_index" in k for k in ours.state_dict())


def test_shifted_window_mask_equals_timms_buffer():
    ours, ref = _pair({**CFG, "depths": (2, 2, 2)})
    checked = 0
    for i, stage in enumerate(ours.layers):
        for j, blk in enumerate(stage.blocks):
            theirs = ref.layers[i].blocks[j]
            assert blk.window_size == tuple(theirs.window_size) and blk.shift_size == tuple(theirs.shift_size)
            assert torch.equal(blk.attn.relative_position_index, theirs.attn.relative_position_index)
            if theirs.attn_mask is None:
                assert blk.attn_mask is None
            else:
                assert torch.equal(blk.attn_mask, theirs.attn_mask)
                checked += 1
    assert checked == 2  # the shifted blocks of stages 0 and 1; stage 2 is one window, no shift
    # the standalone function, a non-square grid and window
    block = SwinTransformerBlock(8, (8, 12), 2, window_size=(4, 6), shift_size=(2, 3))
    tb = __import__("timm").models.swin_transformer.SwinTransformerBlock(8, (8, 12), 2, window_size=(4, 6), shift_size=(2, 3))
    assert torch.equal(block.attn_mask, tb.attn_mask)
    assert torch.equal(shifted_window_mask((8, 12), (4, 6), (2, 3)), tb.attn_mask)


def test_mask_blocks_exactly_the_wrapped_pairs():
    mask = shifted_window_mask(8, 4, 2)  # (4, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()  # top-left window: all its tokens were neighbours before the roll
    # bottom-right window mixes 4 regions of 2x2 tokens: each token may see 4 of 16
    assert ((mask[3] == 0).sum(-1) == 4).all()
    assert ((mask[1] == 0).sum(-1) == 8).all() and ((mask[2] == 0).sum(-1) == 8).all()
    assert torch.equal(mask, mask.transpose(1, 2))


def test_window_partition_round_trip():
    x = torch.randn(2, 8, 12, 5)
    w = window_partition(x, (4, 3))
    assert w.shape == (2 * 2 * 4, 4, 3, 5)
    assert torch.equal(w[1], x[0, 0:4, 3:6])  # window 1 = first window row, second column
    assert torch.equal(w[8], x[1, 0:4, 0:3])  # image 1 starts after image 0's 8 windows
    assert torch.equal(window_reverse(w, (4, 3), 8, 12), x)
    sq = torch.randn(3, 8, 8, 4)
    assert torch.equal(window_reverse(window_partition(sq, 4), 4, 8, 8), sq)


def test_relative_position_index_matches_timm():
    for ws in [(4, 4), (2, 3), (7, 7)]:
        a = TimmWindowAttention(8, 2, window_size=ws)
        assert torch.equal(relative_position_index(ws), a.relative_position_index)


def test_window_attention_equals_timm_and_paths_agree():
    torch.manual_seed(0)
    ours = perturbed(WindowAttention(16, 4, 2))
    ref = TimmWindowAttention(16, 2, window_size=4)
    ref.load_state_dict(ours.state_dict())
    mask = shifted_window_mask(8, 4, 2)
    x = torch.randn(2 * 4, 16, 16, requires_grad=True)
    with torch.no_grad():  # SDPA path
        torch.testing.assert_close(ours(x, mask), ref(x, mask), atol=1e-5, rtol=0)
    out, attn = ours(x, mask, return_attention=True)  # explicit path
    torch.testing.assert_close(out, ref(x, mask), atol=1e-5, rtol=0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(8, 2, 16))
    # fused and explicit agree forward and backward (bias frozen, so SDPA runs with grad on)
    ours.relative_position_bias_table.requires_grad_(False)
    assert ours.use_fused(x)
    g_fused = torch.autograd.grad(ours(x, mask).square().sum(), x)[0]
    g_expl = torch.autograd.grad(ours(x, mask, return_attention=True)[0].square().sum(), x)[0]
    torch.testing.assert_close(g_fused, g_expl, atol=1e-5, rtol=1e-4)


def test_attention_maps_sum_to_one_and_respect_the_mask():
    torch.manual_seed(0)
    m = SwinTransformer(**CFG).eval()
    x = torch.randn(2, 1, 32, 32)
    maps = m.get_attention_maps(x)
    blocks = m.blocks()
    assert len(maps) == len(blocks) == 5
    assert [tuple(a.shape) for a in maps] == [(2, 16, 2, 16, 16)] * 2 + [(2, 4, 2, 16, 16)] * 2 + [(2, 1, 4, 16, 16)]
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
    # in a shifted block, masked pairs get (numerically) zero weight
    blocked = blocks[1].attn_mask < 0  # (nW, N, N)
    assert maps[1].permute(0, 2, 1, 3, 4)[:, :, blocked].max() < 1e-30
    # the maps come from the same computation as the forward pass
    tokens = m._embed_tokens(x)
    for stage in m.layers:
        tokens = stage(tokens, return_attention=True)[0]
    torch.testing.assert_close(m.norm(tokens), m.forward_features(x), atol=1e-5, rtol=1e-5)
    # mapped back to the grid, a query's row stays inside its (wrapped) window and sums to 1
    grid = window_attention_to_grid(maps[1][0], blocks[1], (15, 15))  # bottom-right corner token
    assert grid.shape == (2, 16, 16)
    torch.testing.assert_close(grid.sum((1, 2)), torch.ones(2))
    support = (grid[0] > 1e-30).nonzero().tolist()  # masked keys get exp(-100) ~ 1e-44
    assert {tuple(p) for p in support} == {(r, c) for r in (14, 15) for c in (14, 15)}  # a 2x2 corner region


def test_embed_and_presets():
    for profile in SWIN_MODELS:
        m = swin_for_profile(profile).eval()
        x = torch.randn(1, 1, 32, 32)
        with torch.no_grad():
            assert m(x).shape == (1, 10)
            assert m.embed(x).shape == (1, m.num_features)
    assert "relative_position_bias_table" in SwinTransformer(**CFG).no_weight_decay()
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        swin_for_profile("gpu")


def test_patch_merging_order_matches_timm():
    from timm.models.swin_transformer import PatchMerging as TimmPM

    torch.manual_seed(0)
    ours, ref = PatchMerging(3), TimmPM(3)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 6, 3)
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.raises(ValueError, match="even token grid"):
        ours(torch.randn(1, 5, 6, 3))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_error_grid_not_divisible_by_window():
    # 32 px / patch 2 = 16x16 grid; 16 is not a multiple of 6 -> say which windows work
    with pytest.raises(ValueError, match=r"stage 0's 16x16 feature grid is not divisible by window_size \(6, 6\).*e\.g\. one of \[2, 4, 8, 16\]"):
        SwinTransformer(**{**CFG, "window_size": 6})
    with pytest.raises(ValueError, match=r"not divisible into 4x4 windows; use a window_size dividing"):
        window_partition(torch.randn(1, 6, 8, 3), 4)
    with pytest.raises(ValueError, match=r"the 6x6 feature grid is not divisible by window_size \(4, 4\)"):
        SwinTransformerBlock(8, 6, 2, window_size=4)


def test_error_embed_dim_not_divisible_by_num_heads():
    with pytest.raises(ValueError, match=r"stage 1 width 32 \(embed_dim 16 \* 2\*\*1\) is not divisible by num_heads\[1\]=3"):
        SwinTransformer(**{**CFG, "num_heads": (2, 3, 4)})
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 4"):
        WindowAttention(10, 4, 4)
    with pytest.raises(ValueError, match="one entry per stage"):
        SwinTransformer(**{**CFG, "num_heads": (2, 4)})


def test_error_odd_grid_cannot_merge_and_wrong_input_size():
    with pytest.raises(ValueError, match="stage 2 cannot merge 2x2 patches: stage 1's grid 3x3 is odd"):
        SwinTransformer(**{**CFG, "img_size": 24, "patch_size": 4, "window_size": 3})
    m = SwinTransformer(**CFG)
    with pytest.raises(ValueError, match=r"built for 32x32 images .* img_size=\(64, 64\)"):
        m(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="shift_size"):
        shifted_window_mask(8, 4, 4)
    with pytest.raises(ValueError, match="expects N=16 tokens per window"):
        WindowAttention(8, 4, 2)(torch.randn(2, 9, 8))
    with pytest.raises(ValueError, match="does not fit"):
        WindowAttention(8, 4, 2)(torch.randn(6, 16, 8), mask=shifted_window_mask(8, 4, 2))


def test_without_shifted_windows_no_token_sees_past_its_window():
    """Table 4's "w/o shifting": with W-MSA in every block, two blocks of a stage never mix windows;
    the shifted model's second block does."""
    torch.manual_seed(0)
    shifted = SwinTransformer(**CFG).eval()
    flat = SwinTransformer(**{**CFG, "shifted_windows": False}).eval()
    flat.load_state_dict(shifted.state_dict(), strict=False)  # the same weights; only the masks differ
    assert all(b.shift_size == (0, 0) and b.attn_mask is None for st in flat.layers for b in st.blocks)
    assert shifted.layers[0].blocks[1].shift_size == (2, 2)
    x = torch.randn(1, 1, 32, 32)
    x2 = x.clone()
    x2[..., :8, :8] += 1.0  # the first 4 x 4-token window of the 16 x 16 grid (patch 2)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[:4, :4] = False
    with torch.no_grad():
        def change(model):
            a, b = (model.layers[0](model._embed_tokens(v)) for v in (x, x2))
            return (a - b).abs().amax(dim=-1)[0]  # (16, 16)
        assert change(flat)[outside].max() == 0 and change(flat)[~outside].min() > 0
        assert change(shifted)[outside].max() > 1e-4
    with pytest.raises(ValueError, match="always shifts"):
        timm_kwargs(flat)

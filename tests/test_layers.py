"""Building blocks: patch order, patch embedding, the two attention paths, drop path, blocks."""
import pytest
import torch
import torch.nn.functional as F

from survey_lib.layers import Attention, Block, DropPath, LayerScale, Mlp, PatchEmbed, patchify, unpatchify


def test_patchify_order_is_p_q_c():
    B, C, H, W, P = 2, 3, 8, 12, 4
    x = torch.randn(B, C, H, W)
    p = patchify(x, P)
    assert p.shape == (B, (H // P) * (W // P), P * P * C)
    gw = W // P
    for n in (0, 1, gw, 5):
        i, j = divmod(n, gw)
        for pi, qi, c in ((0, 0, 0), (1, 2, 1), (3, 3, 2)):
            assert p[1, n, (pi * P + qi) * C + c] == x[1, c, i * P + pi, j * P + qi]


@pytest.mark.parametrize("shape,P", [((2, 1, 32, 32), 4), ((1, 3, 8, 12), 4), ((3, 2, 6, 6), (2, 3))])
def test_unpatchify_inverts_patchify(shape, P):
    x = torch.randn(shape)
    grid = (shape[2] // (P if isinstance(P, int) else P[0]), shape[3] // (P if isinstance(P, int) else P[1]))
    assert torch.equal(unpatchify(patchify(x, P), P, grid_size=grid, in_chans=shape[1]), x)


def test_patchify_errors_say_what_to_do():
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        patchify(torch.randn(1, 1, 30, 32), 4)
    with pytest.raises(ValueError, match="square grid"):
        unpatchify(torch.randn(1, 6, 16), 4)


def test_patch_embed_is_a_linear_map_of_patches():
    pe = PatchEmbed(img_size=16, patch_size=4, in_chans=3, embed_dim=8)
    x = torch.randn(2, 3, 16, 16)
    W = pe.proj.weight.permute(0, 2, 3, 1).reshape(8, -1)  # (D, P*P*C) in (p, q, c) order
    expected = patchify(x, 4) @ W.T + pe.proj.bias
    torch.testing.assert_close(pe(x), expected, atol=1e-5, rtol=1e-5)


def test_patch_embed_errors():
    with pytest.raises(ValueError, match="image height 30 is not divisible by patch_size 4"):
        PatchEmbed(img_size=30, patch_size=4)
    pe = PatchEmbed(img_size=32, patch_size=4, in_chans=1, embed_dim=8)
    with pytest.raises(ValueError, match=r"expects \(B, 1, H, W\)"):
        pe(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="width 30 is not divisible"):
        pe(torch.randn(1, 1, 32, 30))


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 4"):
        Attention(10, num_heads=4)


def _explicit_reference(attn: Attention, x, mask=None):
    """Textbook multi-head attention written independently of the module's code."""
    B, N, D = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).split(D, dim=-1)
    q, k, v = (t.reshape(B, N, h, D // h).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / (D // h) ** 0.5
    if mask is not None:
        s = s + mask
    w = torch.softmax(s, -1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B, N, D)), w


@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_and_explicit_attention_agree_forward_and_backward(with_mask):
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4)
    x = torch.randn(3, 17, 32, requires_grad=True)
    mask = torch.randn(1, 4, 17, 17) if with_mask else None
    y1 = attn(x, attn_mask=mask)
    g1 = torch.autograd.grad(y1.square().sum(), [x] + list(attn.parameters()))
    y2, w = attn(x, return_attention=True, attn_mask=mask)
    g2 = torch.autograd.grad(y2.square().sum(), [x] + list(attn.parameters()))
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    y3, w3 = _explicit_reference(attn, x, mask)
    torch.testing.assert_close(y2, y3, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, w3, atol=1e-6, rtol=1e-5)
    assert w.shape == (3, 4, 17, 17)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 17))


def test_returned_weights_are_pre_dropout():
    attn = Attention(16, num_heads=2, attn_drop=0.5).train()
    _, w = attn(torch.randn(2, 5, 16), return_attention=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))


def test_drop_path_keeps_the_expectation_and_is_identity_in_eval():
    dp = DropPath(0.25)
    x = torch.ones(20000, 4)
    dp.train()
    y = dp(x)
    kept = (y[:, 0] != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.02
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
    assert abs(y.mean().item() - 1.0) < 0.03
    dp.eval()
    assert torch.equal(dp(x), x)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    blk = Block(16, num_heads=2, mlp_ratio=2.0, init_values=0.5).eval()
    x = torch.randn(2, 5, 16)
    y1 = x + blk.ls1(blk.attn(blk.norm1(x)))
    expected = y1 + blk.ls2(blk.mlp(blk.norm2(y1)))
    torch.testing.assert_close(blk(x), expected)
    out, w = blk(x, return_attention=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 2, 5, 5)
    assert isinstance(blk.ls1, LayerScale) and torch.allclose(blk.ls1.gamma, torch.full((16,), 0.5))


def test_mlp_is_linear_gelu_linear():
    m = Mlp(8, 16)
    x = torch.randn(3, 8)
    torch.testing.assert_close(m(x), m.fc2(F.gelu(m.fc1(x))))

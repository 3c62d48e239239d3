"""Neighbourhood attention (survey_lib.models.nat) against natten, dense attention and its definition;
the NAT model; and the cost-study helpers of survey_lib.evaluate."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from survey_lib.cost import PeakMemory, attention_cost_study, fit_growth_exponent, peak_memory
from survey_lib.models.nat import (NAT, NeighborhoodAttention2D, attention_to_dense, na2d,
                                   neighborhood_attention_2d, neighborhood_mask, sasa_attention_2d)
from survey_lib.recipes.nat import nat_for_profile

import natten  # noqa: E402,F401  the reference library: without it the run fails (``make install`` builds it)

#: natten 0.21.7 runs neighbourhood attention on CPU forward only; the gradient comparison runs on CUDA.
natten_backward = pytest.mark.skipif(not torch.cuda.is_available(), reason="natten 0.21.7 has no backward on CPU")


def qkv(B=2, H=8, W=8, heads=2, d=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, W, heads, d, generator=g, dtype=dtype) for _ in range(3)]


def natten_na2d(q, k, v, kernel_size, dilation=1):
    import natten.functional

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # natten's CPU path warns that flex attention is not compiled
        return natten.functional.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation)


def dense_masked_attention(q, k, v, kernel_size, dilation=1, rpb=None):
    """Textbook attention over all N tokens with -inf outside each query's neighbourhood, and the
    NAT bias rpb[h, (key_row - query_row)/d + k - 1, (key_col - query_col)/d + k - 1] inside it."""
    B, H, W, h, d = q.shape
    N = H * W
    mask = neighborhood_mask(H, W, kernel_size, dilation)  # (N, N)
    qf, kf, vf = (t.permute(0, 3, 1, 2, 4).reshape(B, h, N, d) for t in (q, k, v))
    logits = (qf * d**-0.5) @ kf.transpose(-1, -2)  # (B, h, N, N)
    if rpb is not None:
        r = torch.arange(N) // W
        c = torch.arange(N) % W
        dr = torch.div(r[None, :] - r[:, None], dilation, rounding_mode="floor") + kernel_size - 1
        dc = torch.div(c[None, :] - c[:, None], dilation, rounding_mode="floor") + kernel_size - 1
        inside = mask
        bias = rpb[:, dr.clamp(0, 2 * kernel_size - 2), dc.clamp(0, 2 * kernel_size - 2)]  # (h, N, N)
        logits = logits + torch.where(inside, bias, torch.zeros_like(bias))
    logits = logits.masked_fill(~mask, float("-inf"))
    out = logits.softmax(-1) @ vf  # (B, h, N, d)
    return out.reshape(B, h, H, W, d).permute(0, 2, 3, 1, 4)


# ---------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
def test_matches_natten_forward(kernel_size, dilation):
    for grid in [(15, 15), (14, 19)]:  # square and non-square; 15 and 19 are not multiples of 2
        q, k, v = qkv(H=grid[0], W=grid[1], heads=2, d=8, seed=kernel_size + dilation)
        ref = natten_na2d(q, k, v, kernel_size, dilation)
        for method in ("tiled", "gather"):
            with torch.no_grad():
                ours = neighborhood_attention_2d(q, k, v, kernel_size, dilation, method=method)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@natten_backward
def test_matches_natten_backward_on_cuda():
    q, k, v = (t.cuda() for t in qkv(H=15, W=15))
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    import natten.functional

    neighborhood_attention_2d(*ours, 5, 2).square().sum().backward()
    natten.functional.na2d(*ref, kernel_size=5, dilation=2).square().sum().backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)


def test_dispatcher_natten_backend_equals_torch_backend():
    q, k, v = qkv(H=10, W=12)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = na2d(q, k, v, 5, 2, backend="natten")
        b = na2d(q, k, v, 5, 2, backend="torch")
        c = na2d(q, k, v, 5, 2, backend="auto")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, a)


def test_auto_backend_picks_natten_exactly_where_it_can_run(monkeypatch):
    """Issue: natten where it can run (CPU: forward only), the pure-PyTorch path otherwise."""
    import survey_lib.models.nat_fast as nat_mod

    calls = []
    real = nat_mod._natten()

    class Spy:
        @staticmethod
        def na2d(*args, **kwargs):
            calls.append(kwargs["kernel_size"])
            return real.na2d(*args, **kwargs)

    monkeypatch.setattr(nat_mod, "_natten", lambda: Spy)
    q, k, v = qkv(H=9, W=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():  # CPU forward without grad: natten
            out = na2d(q, k, v, 3)
        assert calls == [(3, 3)]
        torch.testing.assert_close(out, neighborhood_attention_2d(q, k, v, 3), atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # a bias (natten has none), an odd head_dim, or backend="torch": ours
            na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5))
            q6 = torch.randn(1, 9, 11, 2, 6)
            na2d(q6, q6, q6, 3)
            na2d(q, k, v, 3, backend="torch")
        assert len(calls) == 1
        qg = q.clone().requires_grad_()  # a gradient is needed: natten has no CPU backward, so ours
        na2d(qg, k, v, 3).sum().backward()
        assert len(calls) == 1 and qg.grad is not None
        # the module without bias follows the same rule: natten in no-grad inference only
        m = NeighborhoodAttention2D(16, 2, kernel_size=3, rel_pos_bias=False).eval()
        x = torch.randn(1, 9, 11, 16)
        with torch.no_grad():
            y_natten = m(x)
        assert len(calls) == 2
        torch.testing.assert_close(y_natten, m(x), atol=1e-5, rtol=1e-5)  # grad on: ours
        assert len(calls) == 2


def test_module_matches_natten_module_with_same_weights():
    import natten

    ours = NeighborhoodAttention2D(24, 3, kernel_size=5, dilation=2, rel_pos_bias=False).eval()
    theirs = natten.NeighborhoodAttention2D(24, 3, kernel_size=5, dilation=2).eval()
    theirs.load_state_dict(ours.state_dict())  # same names: qkv, proj
    x = torch.randn(2, 11, 13, 24)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid,kernel", [((7, 7), 7), ((5, 7), (5, 7))])
def test_kernel_equal_to_grid_is_full_self_attention(grid, kernel):
    q, k, v = qkv(H=grid[0], W=grid[1], dtype=torch.float64)
    ours = neighborhood_attention_2d(q, k, v, kernel)
    B, H, W, h, d = q.shape
    ref = F.scaled_dot_product_attention(*(t.permute(0, 3, 1, 2, 4).reshape(B, h, H * W, d) for t in (q, k, v)))
    torch.testing.assert_close(ours, ref.reshape(B, h, H, W, d).permute(0, 2, 3, 1, 4))


@pytest.mark.parametrize("method", ["tiled", "gather"])
@pytest.mark.parametrize("kernel_size,dilation,grid", [(3, 1, (10, 7)), (5, 1, (12, 12)), (3, 2, (9, 11)), (5, 2, (11, 10))])
def test_forward_and_backward_match_dense_masked_attention(kernel_size, dilation, grid, method):
    q, k, v = (t.requires_grad_() for t in qkv(H=grid[0], W=grid[1], heads=2, d=4, dtype=torch.float64))
    rpb = torch.randn(2, 2 * kernel_size - 1, 2 * kernel_size - 1, dtype=torch.float64, requires_grad=True)
    ours = neighborhood_attention_2d(q, k, v, kernel_size, dilation, rpb=rpb, method=method)
    ref = dense_masked_attention(q, k, v, kernel_size, dilation, rpb=rpb)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    grads_ours = torch.autograd.grad(ours, (q, k, v, rpb), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v, rpb), g)
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b)


def test_attention_weights_are_the_dense_rows():
    q, k, v = qkv(H=9, W=10, dtype=torch.float64)
    out, attn = neighborhood_attention_2d(q, k, v, 3, 2, return_attention=True)
    assert attn.shape == (2, 9, 10, 2, 9)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 9, 10, 2, dtype=torch.float64))
    dense = attention_to_dense(attn, 3, 2)  # (B, h, N, N)
    vf = v.permute(0, 3, 1, 2, 4).reshape(2, 2, 90, 8)
    torch.testing.assert_close((dense @ vf).reshape(2, 2, 9, 10, 8).permute(0, 2, 3, 1, 4), out)
    _, attn_g = neighborhood_attention_2d(q, k, v, 3, 2, return_attention=True, method="gather")
    torch.testing.assert_close(attn, attn_g)


def test_every_query_sees_exactly_k_squared_keys_in_its_dilation_group():
    H, W, k, d = 11, 9, 3, 2
    mask = neighborhood_mask(H, W, k, d)
    assert (mask.sum(1) == k * k).all()
    r, c = torch.arange(H * W) // W, torch.arange(H * W) % W
    same_group = ((r[:, None] - r[None, :]) % d == 0) & ((c[:, None] - c[None, :]) % d == 0)
    assert not (mask & ~same_group).any()
    # the corner's window is shifted inward: the top-left 3 x 3 of its group
    corner = mask[0].reshape(H, W).nonzero().tolist()
    assert corner == [[i, j] for i in (0, 2, 4) for j in (0, 2, 4)]


@pytest.mark.parametrize("padding", ["zeros", "mask"])
def test_sasa_differs_from_na_at_corners_and_agrees_inside(padding):
    q, k, v = qkv(H=9, W=9, dtype=torch.float64)
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)
    na = neighborhood_attention_2d(q, k, v, 3, rpb=rpb)
    sasa = sasa_attention_2d(q, k, v, 3, rpb=rpb, padding=padding)
    torch.testing.assert_close(sasa[:, 1:-1, 1:-1], na[:, 1:-1, 1:-1])
    for i, j in [(0, 0), (0, 8), (8, 0), (8, 8)]:
        assert (sasa[:, i, j] - na[:, i, j]).abs().max() > 1e-3
    real = neighborhood_mask(9, 9, 3, kind="sasa").sum(1).reshape(9, 9)
    assert real[0, 0] == 4 and real[0, 4] == 6 and real[4, 4] == 9  # the corner sees (k//2 + 1)^2 pixels


def test_sasa_zero_padding_spends_attention_on_padding():
    q, k, v = qkv(H=6, W=6, dtype=torch.float64)
    _, attn = sasa_attention_2d(q, k, v, 3, return_attention=True)  # zeros
    dense = attention_to_dense(attn, 3, kind="sasa")
    assert dense[:, :, 0].sum(-1).max() < 1.0 - 1e-6  # the corner's mass on padding is lost
    torch.testing.assert_close(dense[:, :, 14].sum(-1), torch.ones(2, 2, dtype=torch.float64))  # interior


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_error_even_kernel():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="kernel_size 4 is even.*odd kernel_size such as 3 or 5"):
        neighborhood_attention_2d(q, k, v, 4)
    with pytest.raises(ValueError, match="even"):
        sasa_attention_2d(q, k, v, 2)
    with pytest.raises(ValueError, match="odd"):
        NeighborhoodAttention2D(16, 2, kernel_size=6)


def test_error_kernel_larger_than_grid():
    q, k, v = qkv(H=6, W=8)
    with pytest.raises(ValueError, match="kernel_size 7 is larger than the token grid height 6.*kernel_size <= 5"):
        neighborhood_attention_2d(q, k, v, 7)


def test_error_dilated_kernel_larger_than_grid():
    q, k, v = qkv(H=8, W=8)
    with pytest.raises(ValueError, match=r"dilation 3 x kernel_size 3 = 9 exceeds the token grid height 8.*dilation <= 2"):
        neighborhood_attention_2d(q, k, v, 3, 3)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        neighborhood_attention_2d(q, k, v, 3, 0)


def test_error_bad_inputs():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"\(B, H, W, heads, head_dim\)"):
        neighborhood_attention_2d(q.flatten(1, 2), k, v, 3)
    with pytest.raises(ValueError, match="same shape"):
        neighborhood_attention_2d(q, k[:, :4], v, 3)
    with pytest.raises(ValueError, match=r"rpb must have shape \(heads, 2k-1, 2k-1\) = \(2, 5, 5\)"):
        neighborhood_attention_2d(q, k, v, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="backend must be"):
        na2d(q, k, v, 3, backend="cuda")
    with pytest.raises(ValueError, match="padding must be"):
        sasa_attention_2d(q, k, v, 3, padding="reflect")
    with pytest.raises(ValueError, match="method must be"):
        neighborhood_attention_2d(q, k, v, 3, method="fast")


def test_error_natten_backend_cannot_train_on_cpu():
    q, k, v = (t.requires_grad_() for t in qkv())
    with pytest.raises(ValueError, match="no backward on CPU"):
        na2d(q, k, v, 3, backend="natten")
    with pytest.raises(ValueError, match="no relative position bias"):
        with torch.no_grad():
            na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5), backend="natten")
    q24 = torch.randn(1, 8, 8, 2, 24)
    with pytest.raises(ValueError, match="power of two"), torch.no_grad():
        na2d(q24, q24, q24, 3, backend="natten")


def test_error_model_configs():
    with pytest.raises(ValueError, match="kernel_size 7 is larger than the token grid"):
        NAT(img_size=32, in_chans=1, num_classes=10, embed_dim=16, depths=(1, 1), num_heads=(1, 2), kernel_size=7)
    with pytest.raises(ValueError, match="exceeds the token grid"):
        NAT(img_size=32, in_chans=1, embed_dim=16, depths=(1,), num_heads=1, kernel_size=5, dilations=((2,),))
    with pytest.raises(ValueError, match="dilations of level 0 has 1 entries but depths"):
        NAT(img_size=32, in_chans=1, embed_dim=16, depths=(2,), num_heads=1, kernel_size=3, dilations=((1,),))
    with pytest.raises(ValueError, match="num_heads has 3 entries"):
        NAT(img_size=32, in_chans=1, embed_dim=16, depths=(1, 1), num_heads=(1, 2, 4), kernel_size=3)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        NeighborhoodAttention2D(10, 3)
    with pytest.raises(ValueError, match="unknown profile"):
        nat_for_profile("gpu")


# ---------------------------------------------------------------------------------------------
# Modules and model
# ---------------------------------------------------------------------------------------------
def test_module_shrinks_window_on_small_grids_to_global_attention():
    m = NeighborhoodAttention2D(8, 2, kernel_size=5).double()
    x = torch.randn(1, 4, 3, 8, dtype=torch.float64)  # smaller than 5 x 5: whole grid along both axes
    assert m.window(4, 3) == ((4, 3), (1, 1))
    y, attn = m(x, return_attention=True)
    B, H, W, C = x.shape
    q, k, v = m.qkv(x).reshape(B, H * W, 3, 2, 4).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
    r, c = torch.arange(H * W) // W, torch.arange(H * W) % W
    bias = m.rpb[:, r[None, :] - r[:, None] + 4, c[None, :] - c[:, None] + 4]  # (h, N, N)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, d)
    ref = m.proj(ref.transpose(1, 2).reshape(B, H, W, C))
    torch.testing.assert_close(y, ref)


def test_nat_shapes_gradients_and_attention_maps():
    torch.manual_seed(0)
    model = nat_for_profile("cpu")
    x = torch.randn(3, 1, 32, 32)
    logits = model(x)
    assert logits.shape == (3, 10)
    assert model.embed(x).shape == (3, model.num_features)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    maps = model.get_attention_maps(x)
    assert [tuple(m.shape) for m in maps] == [(3, 8, 8, 3, 9)] * 2 + [(3, 4, 4, 6, 9)] * 2
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 8, 8, 3))
    assert model.embed(torch.randn(2, 1, 16, 16)).shape == (2, model.num_features)  # DINO local crops
    assert "rpb" in model.no_weight_decay()


# ---------------------------------------------------------------------------------------------
# Cost-study helpers
# ---------------------------------------------------------------------------------------------
def test_fit_growth_exponent_on_synthetic_data():
    tokens = [64, 256, 1024, 4096]
    assert fit_growth_exponent(tokens, [3.0 * t**2 for t in tokens]) == pytest.approx(2.0)
    assert fit_growth_exponent(tokens, [5.0 * t + 0.0 for t in tokens]) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    noisy = [7.0 * t**1.5 * math.exp(0.05 * float(torch.randn(1, generator=g))) for t in tokens]
    assert fit_growth_exponent(tokens, noisy) == pytest.approx(1.5, abs=0.1)
    with pytest.raises(ValueError, match="positive"):
        fit_growth_exponent([1, 2], [1, 0])
    with pytest.raises(ValueError, match="equal length"):
        fit_growth_exponent([1, 2, 3], [1, 2])


def test_peak_memory_counts_live_tensors_not_views_or_inputs():
    x = torch.ones(1000)  # 4,000 bytes, created outside: not counted

    def fn():
        a = x * 2  # 4,000 live
        b = a + 1  # 8,000 live (the peak)
        del a  # 4,000
        c = b.view(10, 100)  # a view: nothing new
        return c

    assert peak_memory(fn) == 8000
    assert peak_memory(lambda: x.view(10, 100)) == 0
    with PeakMemory() as t:
        y = torch.empty(250)
    assert t.peak_bytes == 1000 and t.live_bytes == 1000
    del y


def test_attention_cost_study_small():
    df = attention_cost_study(grid_sizes=(8, 16), dim=16, num_heads=2, window_size=8, kernel_size=3, repeats=1)
    assert set(df.columns) >= {"mechanism", "grid", "tokens", "pass", "ms", "peak_mem_bytes", "attn_bytes"}
    assert len(df) == 4 * 2 * 2
    g = df[(df.mechanism == "global") & (df["pass"] == "forward")].set_index("grid")
    assert (g.peak_mem_bytes >= g.attn_bytes).all()  # the N x N matrix is really there
    na = df[(df.mechanism == "neighborhood") & (df["pass"] == "forward")].set_index("grid")
    assert g.peak_mem_bytes[16] / g.peak_mem_bytes[8] > 8  # ~16x for 4x the tokens
    assert na.peak_mem_bytes[16] / na.peak_mem_bytes[8] < 6  # ~4x
    with pytest.raises(ValueError, match="multiple of window_size"):
        attention_cost_study(grid_sizes=(12,), window_size=8)


def test_nat_blocks_of_the_cpu_preset_match_natten():
    """Every attention layer of the trained-size model, bias off, equals natten's on the same q, k, v."""
    torch.manual_seed(0)
    model = nat_for_profile("cpu", rel_pos_bias=False).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        t = model.patch_embed(x)
        for blocks, down in zip(model.levels, model.downsamples):
            for blk in blocks:
                a = blk.attn
                B, H, W, C = t.shape
                q, k, v = a.qkv(blk.norm1(t)).reshape(B, H, W, 3, a.num_heads, a.head_dim).unbind(3)
                ours = neighborhood_attention_2d(q, k, v, a.kernel_size, a.dilation)
                torch.testing.assert_close(ours, natten_na2d(q, k, v, a.kernel_size, a.dilation), atol=1e-5, rtol=1e-5)
                t = blk(t)
            t = down(t)

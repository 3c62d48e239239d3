"""The figures of the Swin and NAT lessons (03, 04): per-seed validation curves
(``survey_lib.viz.seeds``), window attention and the relative position bias (``viz.swin``), and
neighbourhood attention (``viz.nat``): what they draw, their colour bars, a slide-fit size, and the
errors on bad input."""
import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from survey_lib.models.nat import NAT  # noqa: E402
from survey_lib.models.swin import SwinTransformer, window_attention_to_grid  # noqa: E402
from survey_lib.train import History  # noqa: E402
from survey_lib.viz import nat as NV  # noqa: E402
from survey_lib.viz import swin as SV  # noqa: E402
from survey_lib.viz.compare import MODEL_COLORS, curves_frame  # noqa: E402
from survey_lib.viz.seeds import SEED_STYLES, plot_seed_curves  # noqa: E402

MIN_SIDE = 300  # tests/test_figures.py: each side of a committed figure at least this many pixels


def saved_size(fig, dpi=120):
    """Pixel size of ``fig`` saved as ``Reporter.save`` saves it (dpi 120, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.size


def fake_study(epochs=6):
    """{(model, 1.0): runs} with three seeds whose validation accuracy rises to a seed-dependent level."""
    def run(seed, top):
        rows = [{"epoch": e, "seconds": 1.0, "val_acc": top * e / epochs} for e in range(1, epochs + 1)]
        return SimpleNamespace(seed=seed, history=History(rows=rows), metrics={"test_acc": top})

    return {(m, 1.0): SimpleNamespace(results=[run(s, base + 0.01 * s) for s in (0, 1, 2)])
            for m, base in (("vit", 0.90), ("swin", 0.95))}


def test_seed_curves_draw_every_seed_in_its_model_colour_and_zoom_on_the_last_epochs():
    curves = curves_frame(fake_study(epochs=6))
    fig = plot_seed_curves(curves, ("vit", "swin"), zoom_from=4)
    full, zoom = fig.axes[:2]
    assert len(full.get_lines()) == 6 and len(zoom.get_lines()) == 6       # 2 models x 3 seeds, both panels
    assert [ln.get_color() for ln in full.get_lines()] == [MODEL_COLORS["vit"]] * 3 + [MODEL_COLORS["swin"]] * 3
    assert [ln.get_linestyle() for ln in full.get_lines()[:3]] == [matplotlib.lines.Line2D([], [], ls=s).get_linestyle()
                                                                   for s in SEED_STYLES[:3]]
    assert full.get_ylim() == (0.0, 100.0)                                  # the whole axis: nothing exaggerated
    assert all(min(ln.get_xdata()) == 4 for ln in zoom.get_lines())          # the zoom starts where asked
    last_swin_seed2 = zoom.get_lines()[-1].get_ydata()[-1]
    assert last_swin_seed2 == pytest.approx(97.0)                           # percent, the seed's own value
    lo, hi = zoom.get_ylim()
    assert lo <= 100 * 0.90 * 4 / 6 and hi >= 97.0 and hi <= 100.0          # spans the zoomed values, caps at 100
    w, h = saved_size(fig)
    assert w >= MIN_SIDE and h >= MIN_SIDE
    plt.close(fig)


def test_seed_curves_default_zoom_keeps_two_epochs_of_a_short_run():
    fig = plot_seed_curves(curves_frame(fake_study(epochs=2)))
    assert all(len(ln.get_xdata()) == 2 for ln in fig.axes[1].get_lines())
    plt.close(fig)


def test_seed_curves_refuse_bad_frames():
    curves = curves_frame(fake_study())
    with pytest.raises(ValueError, match="curves_frame"):
        plot_seed_curves(pd.DataFrame({"model": ["vit"], "epoch": [1]}))
    with pytest.raises(ValueError, match="no rows"):
        plot_seed_curves(curves.iloc[:0])
    with pytest.raises(ValueError, match=r"no run of \['nat'\]"):
        plot_seed_curves(curves, ("vit", "nat"))
    with pytest.raises(ValueError, match=r"zoom_from must be an epoch of the runs, in \[1, 6\]"):
        plot_seed_curves(curves, zoom_from=7)


@pytest.fixture(scope="module")
def small_swin():
    torch.manual_seed(0)
    model = SwinTransformer(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=16, depths=(2, 1),
                            num_heads=(2, 4), window_size=7).eval()
    x = torch.randn(2, 1, 28, 28)
    return model, x, model.get_attention_maps(x)


def test_window_attention_has_one_colour_scale_with_its_colour_bar(small_swin):
    model, x, maps = small_swin
    query = (12, 15)
    fig = SV.plot_window_attention(x[0], model, [m[0] for m in maps], query=query)
    panels, cbar = fig.axes[1:len(maps) + 1], fig.axes[-1]
    assert len(fig.axes) == len(maps) + 2                                   # input, one per block, the colour bar
    assert "attention weight" in cbar.get_ylabel()
    # every block's overlay on one scale, from 0 to the largest weight the query gives any key
    top = max(float(window_attention_to_grid(m[0], blk, (query[0] // (28 // blk.input_resolution[0]),
                                                          query[1] // (28 // blk.input_resolution[1]))).mean(0).max())
              for m, blk in zip(maps, model.blocks()))
    clims = [ax.get_images()[-1].get_clim() for ax in panels]
    assert len(clims) == len(maps) and all(clim == pytest.approx((0.0, top)) for clim in clims)
    w, h = saved_size(fig)
    assert w >= MIN_SIDE and h >= MIN_SIDE
    plt.close(fig)


def test_window_attention_refuses_bad_input(small_swin):
    model, x, maps = small_swin
    one = [m[0] for m in maps]
    with pytest.raises(ValueError, match="maps has 2 entries but the model has 3 blocks"):
        SV.plot_window_attention(x[0], model, one[:2], query=(0, 0))
    with pytest.raises(ValueError, match=r"block ids \[5\] out of range"):
        SV.plot_window_attention(x[0], model, one, query=(0, 0), block_ids=[0, 5])
    with pytest.raises(ValueError, match="outside the 28x28 image"):
        SV.plot_window_attention(x[0], model, one, query=(28, 3))


def test_relative_position_bias_is_slide_fit_symmetric_and_has_a_colour_bar(small_swin):
    model, _, _ = small_swin
    attn = model.layers[0].blocks[0].attn
    fig = SV.plot_relative_position_bias(attn)
    heads = attn.relative_position_bias_table.shape[1]
    assert len(fig.axes) == heads + 1
    lim = float(attn.relative_position_bias_table.detach().abs().max())
    assert all(ax.get_images()[0].get_clim() == pytest.approx((-lim, lim)) for ax in fig.axes[:heads])
    assert fig.axes[0].get_images()[0].get_array().shape == (13, 13)         # (2M - 1) x (2M - 1) offsets, M = 7
    w, h = saved_size(fig)
    assert w >= MIN_SIDE and h >= MIN_SIDE                                  # was 530 x 290: too small for a slide
    plt.close(fig)


@pytest.fixture(scope="module")
def small_nat():
    torch.manual_seed(0)
    model = NAT(img_size=28, in_chans=1, num_classes=10, embed_dim=16, depths=(2, 1), num_heads=(2, 4), kernel_size=3,
                dilations=((1, 2), (1,))).eval()
    img = torch.randn(1, 28, 28)
    return model, img, model.get_attention_maps(img[None])


@pytest.mark.parametrize("block, dilation", [(0, 1), (1, 2)])
def test_neighborhood_attention_draws_each_window_on_one_scale(small_nat, block, dilation):
    model, img, maps = small_nat
    kernel, dil = model.levels[0][block].attn.window(7, 7)
    assert dil == (dilation, dilation)
    queries = ((0, 0), (3, 3))
    fig = NV.plot_neighborhood_attention(img, maps[block][0], kernel, dil, queries=queries)
    heads = maps[block].shape[3]
    assert len(fig.axes) == len(queries) * (heads + 1) + 1                  # panels and one colour bar
    assert "attention weight" in fig.axes[-1].get_ylabel()
    overlays = [ax.get_images()[-1] for r in range(len(queries)) for ax in fig.axes[r * (heads + 1) + 1:(r + 1) * (heads + 1)]]
    assert len({im.get_clim() for im in overlays}) == 1 and overlays[0].get_clim()[0] == 0.0
    for im in overlays:  # each query attends to exactly k*k tokens of 4 x 4 pixels on the 28 px image
        heat = np.asarray(im.get_array())
        assert heat.shape == (28, 28) and int((heat > 0).sum()) == 9 * 16
        assert heat.sum() / 16 == pytest.approx(1.0, abs=1e-5)              # the weights of one query sum to 1
    w, h = saved_size(fig)
    assert w >= MIN_SIDE and h >= MIN_SIDE
    plt.close(fig)


def test_neighborhood_attention_refuses_bad_input(small_nat):
    model, img, maps = small_nat
    with pytest.raises(ValueError, match=r"\(H, W, heads, k\*k\)"):
        NV.plot_neighborhood_attention(img, maps[0], 3, 1)                  # a batch, not one image
    with pytest.raises(ValueError, match=r"queries \[\(7, 0\)\] lie outside the 7x7 token grid"):
        NV.plot_neighborhood_attention(img, maps[0][0], 3, 1, queries=((0, 0), (7, 0)))

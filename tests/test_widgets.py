"""The attention explorer: each widget change redraws exactly the attention row it names.

The callbacks are driven through the ipywidgets API (setting ``.value`` fires the observers, as a
slider drag in JupyterLab does); the drawn arrays are read back from the matplotlib artists.
"""
import numpy as np
import pytest
import torch

from survey_lib.recipes.vit import vit_for_profile
from survey_lib.train import seed_everything
from survey_lib.viz import attention_rollout
from survey_lib.widgets import AttentionExplorer, AttentionSource

import ipywidgets  # noqa: E402,F401  a dependency of the explorer: without it the run fails


@pytest.fixture(scope="module")
def vit_and_images():
    seed_everything(0)
    model = vit_for_profile("smoke", img_size=32, patch_size=8, depth=2, num_heads=2).eval()  # 4x4 grid, 1 CLS
    images = torch.randn(3, 1, 32, 32)
    return model, images


def _drawn(explorer, name):
    return np.asarray(explorer.heat[name].get_array())


def _expected_row(maps, layer, b, head, token, prefix, gh, gw):
    return maps[layer][b, head, token, prefix:].reshape(gh, gw).numpy()


def test_vit_adapter_and_initial_state(vit_and_images):
    model, images = vit_and_images
    ex = AttentionExplorer(model, images)
    assert ex.source.grid_size == (4, 4) and ex.source.num_prefix_tokens == 1
    ref = model.get_attention_maps(images)
    assert len(ex.maps) == 2 and all(torch.equal(a, b) for a, b in zip(ex.maps, ref))
    assert (ex.layer.value, ex.head.value, ex.query.value) == (1, 0, 0)  # starts at the last layer
    assert (ex.layer.max, ex.head.max, ex.query.max) == (1, 1, 15)
    np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 1, 0, 0, 1, 1, 4, 4))
    assert ex.view.value[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # displays as the widget box
    assert "attention-explorer" in ex.widget._dom_classes


def test_query_slider_redraws_that_query_row(vit_and_images):
    model, images = vit_and_images
    ex = AttentionExplorer(model, images)
    png, caption = ex.view.value, ex.caption.value
    ex.query.value = 9  # patch (row 2, column 1) = token 10
    np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 1, 0, 0, 10, 1, 4, 4))
    assert not np.array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 1, 0, 0, 1, 1, 4, 4))
    assert ex.view.value != png and "query patch 9 (row 2, column 1) = token 10" in ex.caption.value != caption
    assert ex.boxes["query"].get_xy() == (1 * 8 - 0.5, 2 * 8 - 0.5)  # the outline follows the query


def test_layer_head_and_image_redraw_query_cls_and_rollout(vit_and_images):
    model, images = vit_and_images
    ex = AttentionExplorer(model, images)
    ex.query.value = 5
    ex.layer.value = 0
    ex.head.value = 1
    ex.image.value = 2
    np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 0, 2, 1, 6, 1, 4, 4))
    np.testing.assert_array_equal(_drawn(ex, "cls"), _expected_row(ex.maps, 0, 2, 1, 0, 1, 4, 4))
    roll1 = attention_rollout(ex.maps[:1])[2, 0, 1:].reshape(4, 4).numpy()
    np.testing.assert_allclose(_drawn(ex, "rollout"), roll1, rtol=1e-6)
    ex.layer.value = 1  # rollout now goes through both layers
    roll2 = attention_rollout(ex.maps)[2, 0, 1:].reshape(4, 4).numpy()
    np.testing.assert_allclose(_drawn(ex, "rollout"), roll2, rtol=1e-6)
    assert not np.allclose(roll1, roll2)
    # the image panel shows image 2 (min-max scaled for display)
    shown = np.asarray(ex.background["image"].get_array())
    x = images[2, 0].numpy()
    np.testing.assert_allclose(shown, (x - x.min()) / (x.max() - x.min() + 1e-8), atol=1e-6)
    ex.select(image=0, layer=1, head=0, query=15)
    np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 1, 0, 0, 16, 1, 4, 4))


def test_any_model_through_the_adapter_without_class_token():
    """A model without prefix tokens (Swin/NAT-like): CLS panel = mean over queries, rollout of the query."""
    gh, gw, h, L = 3, 2, 2, 3
    torch.manual_seed(0)
    fixed = [torch.softmax(torch.randn(2, h, gh * gw, gh * gw), -1) for _ in range(L)]
    calls = []

    def attention_fn(x):
        calls.append(tuple(x.shape))
        return fixed

    src = AttentionSource(attention_fn, grid_size=(gh, gw), num_prefix_tokens=0, name="toy")
    ex = AttentionExplorer(src, torch.zeros(2, 3, 12, 8), titles=["a", "b"])
    assert calls == [(2, 3, 12, 8)]  # maps are computed once
    ex.image.value = 1
    ex.layer.value = 1
    ex.query.value = 4
    np.testing.assert_array_equal(_drawn(ex, "query"), fixed[1][1, 0, 4].reshape(gh, gw).numpy())
    np.testing.assert_allclose(_drawn(ex, "cls"), fixed[1][1, 0].mean(0).reshape(gh, gw).numpy())
    np.testing.assert_allclose(_drawn(ex, "rollout"), attention_rollout(fixed[:2])[1, 4].reshape(gh, gw).numpy(), rtol=1e-6)
    assert ex.image.options[1] == ("1: b", 1) and "<b>toy</b>" in ex.caption.value


def test_a_click_on_a_patch_selects_it(vit_and_images):
    model, images = vit_and_images
    ex = AttentionExplorer(model, images)
    height = ex.figure.get_size_inches()[1] * ex.figure.dpi
    for panel, (i, j) in (("rollout", (3, 2)), ("image", (0, 1)), ("cls", (2, 3))):
        x, y = ex.axes[panel].transData.transform((j * 8 + 3.5, i * 8 + 3.5))  # a patch centre, in display pixels
        ex._on_click({"type": "click", "dataX": x, "dataY": height - y})  # ipyevents: PNG pixels, origin top left
        assert ex.query.value == i * 4 + j, panel
        np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, 1, 0, 0, 1 + i * 4 + j, 1, 4, 4))
    ex._on_click({"type": "click", "dataX": 1.0, "dataY": 1.0})  # the margin: no patch, nothing changes
    assert ex.query.value == 2 * 4 + 3


def test_deit_has_two_prefix_tokens():
    from survey_lib.recipes.deit import deit_for_profile

    seed_everything(0)
    model = deit_for_profile("smoke").eval()
    ex = AttentionExplorer(model, torch.randn(1, 1, 32, 32))
    assert ex.source.num_prefix_tokens == 2
    gh, gw = ex.source.grid_size
    ex.query.value = 1
    np.testing.assert_array_equal(_drawn(ex, "query"), _expected_row(ex.maps, ex.layer.value, 0, 0, 3, 2, gh, gw))


def test_bad_inputs_are_explained(vit_and_images):
    model, images = vit_and_images
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*images\[None\]"):
        AttentionExplorer(model, images[0])
    with pytest.raises(TypeError, match="no get_attention_maps.*AttentionSource"):
        AttentionExplorer(torch.nn.Linear(2, 2), images)
    wrong = AttentionSource(model.get_attention_maps, grid_size=(3, 3), num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"expected \(B=3, h, N=10, N=10\) for a 3x3 grid.*one stage"):
        AttentionExplorer(wrong, images)
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        AttentionExplorer(model, images, titles=["a", "b"])
    with pytest.raises(ValueError, match="display_images has 1 images but images has 3"):
        AttentionExplorer(model, images, display_images=images[:1])
    with pytest.raises(ValueError, match="returned no layer"):
        AttentionExplorer(AttentionSource(lambda x: [], (4, 4)), images)


# ---------------------------------------------------------------------------------------------
# Swin, NAT and DINO through their adapters (the explorer in notebooks 03, 04 and 07)
# ---------------------------------------------------------------------------------------------
def test_swin_stage_adapter_places_every_window_row_at_its_image_position():
    from survey_lib.recipes.swin import swin_for_profile
    from survey_lib.models.swin import window_attention_to_grid

    seed_everything(0)
    swin = swin_for_profile("smoke").eval()  # 8x8 grid, 4x4 windows; stage 1: W-MSA then SW-MSA (shift 2)
    images = torch.randn(2, 1, 32, 32)
    src = AttentionSource.from_swin(swin, stage=0)
    assert src.grid_size == (8, 8) and src.num_prefix_tokens == 0
    ex = AttentionExplorer(swin, images)  # as_attention_source picks from_swin for a SwinTransformer
    assert len(ex.maps) == 2 and ex.maps[0].shape == (2, 2, 64, 64)
    raw = swin.get_attention_maps(images)
    blocks = swin.blocks()
    assert blocks[1].shift_size == (2, 2)
    for layer in (0, 1):
        torch.testing.assert_close(ex.maps[layer].sum(-1), torch.ones(2, 2, 64))  # every row is a distribution
        assert int((ex.maps[layer][0, 0] > 0).sum(-1).max()) == 16  # a query sees one 4x4 window
    for layer, b, head, (r, c) in ((0, 1, 1, (5, 2)), (1, 0, 0, (3, 4)), (1, 1, 1, (7, 7)), (1, 0, 1, (0, 0))):
        ex.select(image=b, layer=layer, head=head, query=r * 8 + c)
        expected = window_attention_to_grid(raw[layer][b], blocks[layer], (r, c))[head]  # (8, 8), image coordinates
        np.testing.assert_allclose(_drawn(ex, "query"), expected.numpy(), rtol=1e-6, atol=1e-7)
    # the shifted block's window of query (3, 4) straddles the unshifted 4x4 borders: rows 2..5, columns 2..5
    ex.select(image=0, layer=1, head=0, query=3 * 8 + 4)
    support = np.argwhere(_drawn(ex, "query") > 0)
    assert support[:, 0].min() == 2 and support[:, 0].max() == 5 and support[:, 1].min() == 2 and support[:, 1].max() == 5
    with pytest.raises(ValueError, match="stage 5 out of range: the model has 2 stages"):
        AttentionSource.from_swin(swin, stage=5)
    with pytest.raises(TypeError, match="not survey_lib's SwinTransformer"):
        AttentionSource.from_swin(torch.nn.Linear(2, 2))


def test_nat_level_adapter_uses_each_blocks_kernel_and_dilation():
    from survey_lib.models.nat import attention_to_dense, neighborhood_mask
    from survey_lib.recipes.nat import nat_for_profile

    seed_everything(0)
    nat = nat_for_profile("cpu").eval()  # level 1: an NA block (dilation 1), then a DiNA block (dilation 2), 8x8
    images = torch.randn(2, 1, 32, 32)
    ex = AttentionExplorer(nat, images)
    assert ex.source.grid_size == (8, 8) and ex.source.num_prefix_tokens == 0 and len(ex.maps) == 2
    raw = nat.get_attention_maps(images)
    for layer, dilation in ((0, 1), (1, 2)):
        assert nat.levels[0][layer].attn.window(8, 8) == ((3, 3), (dilation, dilation))
        torch.testing.assert_close(ex.maps[layer], attention_to_dense(raw[layer], 3, dilation))
        support = ex.maps[layer][0, 0] > 0  # (N, N): exactly the neighbourhoods, nothing outside
        assert torch.equal(support, neighborhood_mask(8, 8, 3, dilation))
    ex.select(image=1, layer=1, head=2, query=9)  # token (1, 1) in the dilated block
    np.testing.assert_array_equal(_drawn(ex, "query"), ex.maps[1][1, 2, 9].reshape(8, 8).numpy())
    assert np.count_nonzero(_drawn(ex, "query")) == 9
    lvl2 = AttentionSource.from_nat(nat, level=1)
    assert lvl2.grid_size == (4, 4) and [a.shape for a in lvl2.attention_fn(images)] == [(2, 6, 16, 16)] * 2
    with pytest.raises(ValueError, match="level 2 out of range"):
        AttentionSource.from_nat(nat, level=2)


def test_a_dino_wrapper_is_explored_through_its_teacher_backbone():
    from survey_lib.models.vit import VisionTransformer
    from survey_lib.recipes.dino import DINO_CONFIGS
    from survey_lib.objectives.dino import build_dino

    dc = DINO_CONFIGS["smoke"]
    seed_everything(0)
    dino = build_dino(VisionTransformer(**dc["vit"]), dc["vit"]["embed_dim"], 2, n_local_crops=dc["crops"]["n_local_crops"],
                      momentum_teacher=dc["momentum_teacher"], **dc["head"], **dc["loss"]).eval()
    with torch.no_grad():  # make the teacher differ from the student, as after training
        for p in dino.teacher.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(2, 1, dc["vit"]["img_size"], dc["vit"]["img_size"])
    ex = AttentionExplorer(dino, images)
    ref = dino.teacher.backbone.get_attention_maps(images)
    assert all(torch.equal(a, b) for a, b in zip(ex.maps, ref))
    assert not torch.equal(ex.maps[-1], dino.student.backbone.get_attention_maps(images)[-1])
    ex.query.value = 3
    np.testing.assert_array_equal(_drawn(ex, "cls"), _expected_row(ex.maps, ex.layer.value, 0, 0, 0, 1, *ex.source.grid_size))

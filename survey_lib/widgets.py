"""Interactive attention explorer for JupyterLab (ipywidgets).

Pick an image, a layer, a head and a query patch (a slider, or a click on the image) and see, side by
side: the image with the query patch outlined, what that query attends to, what the class token
attends to, and the attention rollout of the class token through the layers up to the chosen one.

Sources:
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", arXiv:2010.11929, Fig. 6-7 (attention
    of one token, per layer and head).
    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
    arXiv:2104.14294, Fig. 1/3 (CLS attention per head of the last layer).
    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", arXiv:2005.00928, Sec. 3
    (rollout, :func:`survey_lib.viz.attention_rollout`).

Any model works through a small adapter, :class:`AttentionSource`: a callable ``images -> list of
(B, h, N, N)`` post-softmax maps (first layer first), the patch grid ``(gh, gw)`` and the number of
prefix tokens before the patches (1 for a CLS token, 2 with DeiT's distillation token, 0 for a
model without one), so that ``N = prefix + gh * gw``. :meth:`AttentionSource.from_vit` builds it for
anything with ``get_attention_maps`` and a ``patch_embed`` (our ViT, DeiT, a DINO backbone). A model
with local attention scatters one stage's weights into ``(B, h, N, N)`` with zeros outside each
window and passes that stage's grid: :meth:`AttentionSource.from_swin` does it for a stage of our Swin
(windows of the rolled grid mapped back to image positions), :meth:`AttentionSource.from_nat` for a
level of our NAT (through :func:`survey_lib.models.nat.attention_to_dense`). A DINO wrapper is
explored through its teacher's backbone (:func:`as_attention_source`).

Deviations: the maps are computed once for the given images (a few images at a time, as in the
papers' figures); the figure is drawn with matplotlib's Agg backend and shown as a PNG in an
``ipywidgets.Image``, so it renders in JupyterLab, VS Code, papermill and nbconvert alike; clicks
on the image need the optional ``ipyevents`` package (the sliders always work).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .viz import _to_display, attention_rollout

__all__ = ["AttentionSource", "AttentionExplorer", "as_attention_source"]


@dataclass
class AttentionSource:
    """What the explorer needs from a model.

    Attributes:
        attention_fn: ``images (B, C, H, W) -> list of L tensors (B, h, N, N)``, post-softmax
            attention weights, first layer first; row i is what token i attends to.
        grid_size: ``(gh, gw)`` patch grid of the images given to the explorer.
        num_prefix_tokens: tokens before the patches (CLS, distillation); the patch at grid
            position (i, j) is token ``num_prefix_tokens + i * gw + j`` (row-major, as ``patchify``).
        name: shown in the caption.
    """

    attention_fn: Callable[[torch.Tensor], Sequence[torch.Tensor]]
    grid_size: Tuple[int, int]
    num_prefix_tokens: int = 1
    name: str = "model"

    @classmethod
    def from_vit(cls, model: torch.nn.Module, img_size: Optional[Tuple[int, int]] = None,
                 name: Optional[str] = None) -> "AttentionSource":
        """Adapter for a model with ``get_attention_maps(x)`` and ``patch_embed`` (ViT, DeiT, DINO backbone).

        Args:
            model: e.g. :class:`survey_lib.models.vit.VisionTransformer` (or ``dino.teacher.backbone``).
            img_size: (H, W) of the images if they differ from the model's (the grid follows them).

        Raises:
            TypeError: the model has no ``get_attention_maps`` or no ``patch_embed``.
        """
        if not hasattr(model, "get_attention_maps") or not hasattr(model, "patch_embed"):
            raise TypeError(f"{type(model).__name__} has no get_attention_maps/patch_embed; wrap it yourself: "
                            "AttentionSource(attention_fn=images -> [(B, h, N, N), ...], grid_size=(gh, gw), "
                            "num_prefix_tokens=...)")
        pe = model.patch_embed
        grid = tuple(pe.dynamic_grid_size(tuple(img_size))) if img_size is not None else tuple(pe.grid_size)
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        return cls(model.get_attention_maps, (int(grid[0]), int(grid[1])), prefix, name or type(model).__name__)

    @classmethod
    def from_swin(cls, model: torch.nn.Module, stage: int = 0, name: Optional[str] = None) -> "AttentionSource":
        """Adapter for one stage of :class:`survey_lib.models.swin.SwinTransformer` (window attention).

        Each block's per-window weights (B, nW, h, M*M, M*M) are scattered into a dense (B, h, N, N)
        over the stage's H x W token grid (N = H*W, row-major, no prefix token), zero outside the
        query's window. A shifted block's windows live on the grid rolled by ``-shift``: token
        (ti, tj) of window (wi, wj) sits at rolled position (wi*M + ti, wj*M + tj), which is image
        position ((wi*M + ti + shift_h) mod H, (wj*M + tj + shift_w) mod W), for queries and keys
        alike. So the explorer's query patch is always an image position, and in a shifted block
        its window visibly straddles the borders of the unshifted windows.

        Args:
            model: our SwinTransformer; the images must have its ``img_size`` (its masks are fixed).
            stage: which stage (0 = the first, finest grid).

        Raises:
            TypeError: not a model with Swin stages (``layers[i].blocks``) and ``get_attention_maps``.
            ValueError: ``stage`` out of range.
        """
        if not hasattr(model, "get_attention_maps") or not hasattr(model, "layers"):
            raise TypeError(f"{type(model).__name__} is not survey_lib's SwinTransformer (no layers/get_attention_maps)")
        stages = list(model.layers)
        if not 0 <= stage < len(stages):
            raise ValueError(f"stage {stage} out of range: the model has {len(stages)} stages (0..{len(stages) - 1})")
        first = sum(len(s.blocks) for s in stages[:stage])
        blocks = list(stages[stage].blocks)
        H, W = blocks[0].input_resolution
        index = [_swin_window_index(b) for b in blocks]  # per block (nW, M*M) flat image positions

        def attention_fn(images: torch.Tensor) -> List[torch.Tensor]:
            maps = model.get_attention_maps(images)[first:first + len(blocks)]  # per block (B, nW, h, M*M, M*M)
            out = []
            for a, idx in zip(maps, index):
                B, _, h, _, _ = a.shape
                dense = a.new_zeros(B, h, H * W, H * W)  # (B, h, N, N)
                dense[:, :, idx[:, :, None], idx[:, None, :]] = a.permute(0, 2, 1, 3, 4)  # (B, h, nW, M*M, M*M)
                out.append(dense)
            return out

        return cls(attention_fn, (int(H), int(W)), 0, name or f"{type(model).__name__}, stage {stage + 1}")

    @classmethod
    def from_nat(cls, model: torch.nn.Module, level: int = 0, img_size: Optional[Tuple[int, int]] = None,
                 name: Optional[str] = None) -> "AttentionSource":
        """Adapter for one level of :class:`survey_lib.models.nat.NAT` (neighbourhood attention).

        Each block's window weights (B, H_l, W_l, h, k*k) become a dense (B, h, N, N) through
        :func:`survey_lib.models.nat.attention_to_dense`, with the (kernel, dilation) the block
        really used on that grid (``attn.window(H_l, W_l)``; DiNA blocks have dilation > 1).

        Args:
            model: our NAT.  level: which level (0 = the first, finest grid).
            img_size: (H, W) of the images (default: the model's ``img_size``); the tokenizer halves
                it twice (rounding up), each downsampler once more.

        Raises:
            TypeError: not a model with NAT levels (``levels``) and ``get_attention_maps``.
            ValueError: ``level`` out of range.
        """
        import math

        from .models.nat import attention_to_dense

        if not hasattr(model, "get_attention_maps") or not hasattr(model, "levels"):
            raise TypeError(f"{type(model).__name__} is not survey_lib's NAT (no levels/get_attention_maps)")
        levels = list(model.levels)
        if not 0 <= level < len(levels):
            raise ValueError(f"level {level} out of range: the model has {len(levels)} levels (0..{len(levels) - 1})")
        if img_size is None:
            side = int(model.config["img_size"])
            img_size = (side, side)
        grid = [math.ceil(math.ceil(v / 2) / 2) for v in img_size]  # ConvTokenizer: two stride-2 convolutions
        for _ in range(level):
            grid = [math.ceil(g / 2) for g in grid]  # each ConvDownsampler: one stride-2 convolution
        first = sum(len(lv) for lv in levels[:level])
        blocks = list(levels[level])

        def attention_fn(images: torch.Tensor) -> List[torch.Tensor]:
            maps = model.get_attention_maps(images)[first:first + len(blocks)]  # per block (B, H_l, W_l, h, k*k)
            out = []
            for a, blk in zip(maps, blocks):
                kernel, dilation = blk.attn.window(a.shape[1], a.shape[2])
                out.append(attention_to_dense(a, kernel, dilation))  # (B, h, N, N)
            return out

        return cls(attention_fn, (int(grid[0]), int(grid[1])), 0, name or f"{type(model).__name__}, level {level + 1}")


def _swin_window_index(block) -> torch.Tensor:
    """Flat image position (row-major over the block's grid) of every token of every window.

    Shapes: returns (nW, M_h * M_w) int64, windows and their tokens in ``window_partition`` order
    on the (rolled, if the block is shifted) grid.
    """
    H, W = block.input_resolution
    mh, mw = block.window_size
    sh, sw = block.shift_size
    wi, wj = torch.meshgrid(torch.arange(H // mh), torch.arange(W // mw), indexing="ij")  # (H/M, W/M) window grid
    ti, tj = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")  # (M, M) inside a window
    rows = (wi.reshape(-1, 1) * mh + ti.reshape(1, -1) + sh) % H  # (nW, M*M): image row of each window token
    cols = (wj.reshape(-1, 1) * mw + tj.reshape(1, -1) + sw) % W  # (nW, M*M): image column
    return rows * W + cols  # (nW, M*M)


def as_attention_source(obj: Union[AttentionSource, torch.nn.Module], img_size: Optional[Tuple[int, int]] = None) -> AttentionSource:
    """An :class:`AttentionSource` for ``obj``: itself if it is one; for a DINO wrapper (it has
    ``teacher.backbone``) its teacher's backbone; a Swin (first stage) or a NAT (first level) through
    :meth:`~AttentionSource.from_swin` / :meth:`~AttentionSource.from_nat`; anything else through
    :meth:`AttentionSource.from_vit`. Pass an explicit adapter for another stage or level."""
    if isinstance(obj, AttentionSource):
        return obj
    teacher = getattr(obj, "teacher", None)
    if teacher is not None and hasattr(teacher, "backbone"):  # survey_lib.objectives.dino.DINO
        obj = teacher.backbone
    from .models.nat import NAT
    from .models.swin import SwinTransformer

    if isinstance(obj, SwinTransformer):
        return AttentionSource.from_swin(obj)
    if isinstance(obj, NAT):
        return AttentionSource.from_nat(obj, img_size=img_size)
    return AttentionSource.from_vit(obj, img_size)


class AttentionExplorer:
    """Sliders (image, layer, head, query patch) over a model's attention maps, drawn as one figure.

    Args:
        source: an :class:`AttentionSource`, or a model with ``get_attention_maps`` (ViT-like).
        images: the model inputs (B, C, H, W).
        display_images: what to draw (e.g. de-normalised images), default ``images``.
        titles: one label per image (e.g. its class), used by the image selector.
        dpi: resolution of the drawn figure.

    Attributes:
        maps: list of L tensors (B, h, N, N), computed once.
        image, layer, head, query: the ipywidgets (``IntSlider`` s; ``image`` is a ``Dropdown`` with titles).
        view: ``ipywidgets.Image`` showing the figure (PNG); clicks on it select the query patch
            when ``ipyevents`` is installed.
        caption: ``ipywidgets.HTML`` describing the current selection.
        heat: ``{"query", "cls", "rollout"}`` -> the matplotlib ``AxesImage`` of each map; its
            ``get_array()`` is the (gh, gw) map drawn.
        widget: the ``VBox`` holding everything (the explorer displays as this box).

    Shapes:
        ``query_map()``, ``cls_map()``, ``rollout_map()``: (gh, gw) for the current selection.

    Raises:
        ValueError: ``images`` is not 4-D, the maps are not (B, h, N, N) with ``N = prefix + gh*gw``,
            or ``display_images``/``titles`` do not match the batch.
    """

    def __init__(self, source: Union[AttentionSource, torch.nn.Module], images: torch.Tensor,
                 display_images: Optional[torch.Tensor] = None, titles: Optional[Sequence[str]] = None,
                 dpi: int = 80) -> None:
        import ipywidgets as W

        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}; add a batch "
                             f"dimension with images[None]")
        self.source = as_attention_source(source, tuple(images.shape[-2:]))
        self.images = images
        self.display_images = images if display_images is None else display_images
        if self.display_images.shape[0] != images.shape[0]:
            raise ValueError(f"display_images has {self.display_images.shape[0]} images but images has {images.shape[0]}")
        if titles is not None and len(titles) != images.shape[0]:
            raise ValueError(f"{len(titles)} titles for {images.shape[0]} images")
        self.titles = list(titles) if titles is not None else None
        with torch.no_grad():
            self.maps: List[torch.Tensor] = [a.detach().float().cpu() for a in self.source.attention_fn(images)]
        self._check_maps()
        self.gh, self.gw = self.source.grid_size
        self.prefix = self.source.num_prefix_tokens
        self._rollouts: Dict[int, torch.Tensor] = {}

        B, L = images.shape[0], len(self.maps)
        style = {"description_width": "80px"}
        wide = W.Layout(width="320px")
        if self.titles:
            self.image = W.Dropdown(options=[(f"{i}: {t}", i) for i, t in enumerate(self.titles)], value=0,
                                    description="image", style=style, layout=wide)
        else:
            self.image = W.IntSlider(0, 0, B - 1, description="image", style=style, layout=wide)
        self.layer = W.IntSlider(L - 1, 0, L - 1, description="layer", style=style, layout=wide)
        self.head = W.IntSlider(0, 0, self.maps[L - 1].shape[1] - 1, description="head", style=style, layout=wide)
        self.query = W.IntSlider(0, 0, self.gh * self.gw - 1, description="query patch", style=style, layout=wide)
        self.caption = W.HTML()
        self.view = W.Image(format="png")
        for w in (self.image, self.layer, self.head, self.query):
            w.add_class(f"attention-explorer-{w.description.replace(' ', '-')}")
        self.view.add_class("attention-explorer-view")
        self.caption.add_class("attention-explorer-caption")
        self.widget = W.VBox([W.HBox([self.image, self.layer]), W.HBox([self.head, self.query]), self.caption, self.view])
        self.widget.add_class("attention-explorer")

        self._build_figure(dpi)
        self._events = None
        try:  # optional: clicks on the figure pick the query patch
            from ipyevents import Event

            self._events = Event(source=self.view, watched_events=["click"])
            self._events.on_dom_event(self._on_click)
        except ImportError:
            pass
        for w in (self.image, self.layer, self.head, self.query):
            w.observe(self._on_change, names="value")
        self.redraw()

    # -- data ------------------------------------------------------------------------------------
    def _check_maps(self) -> None:
        gh, gw = self.source.grid_size
        n = self.source.num_prefix_tokens + gh * gw
        if not self.maps:
            raise ValueError("the attention function returned no layer")
        for i, a in enumerate(self.maps):
            if a.ndim != 4 or a.shape[0] != self.images.shape[0] or a.shape[-1] != n or a.shape[-2] != n:
                raise ValueError(
                    f"layer {i}: attention of shape {tuple(a.shape)}, expected (B={self.images.shape[0]}, h, N={n}, N={n}) "
                    f"for a {gh}x{gw} grid and {self.source.num_prefix_tokens} prefix token(s); for a hierarchical "
                    f"model (Swin, NAT) pass the maps of one stage and that stage's grid")

    @property
    def query_token(self) -> int:
        """Token index of the selected query patch (prefix tokens come first)."""
        return self.prefix + int(self.query.value)

    def query_map(self) -> torch.Tensor:
        """What the selected query patch attends to (layer, head). Shapes: (gh, gw)."""
        a = self.maps[self.layer.value][self.image.value, self.head.value]  # (N, N)
        return a[self.query_token, self.prefix:].reshape(self.gh, self.gw)  # (gh, gw)

    def cls_map(self) -> torch.Tensor:
        """What the class token attends to (layer, head); without prefix tokens, the mean over all
        queries (how much attention each patch receives). Shapes: (gh, gw)."""
        a = self.maps[self.layer.value][self.image.value, self.head.value]  # (N, N)
        row = a[0, self.prefix:] if self.prefix else a.mean(0)
        return row.reshape(self.gh, self.gw)  # (gh, gw)

    def rollout_map(self) -> torch.Tensor:
        """Rollout (mean over heads) through layers 1..layer of the class token, or of the query
        patch when there is no prefix token. Shapes: (gh, gw)."""
        depth = self.layer.value + 1
        if depth not in self._rollouts:
            self._rollouts[depth] = attention_rollout(self.maps[:depth])  # (B, N, N)
        r = self._rollouts[depth][self.image.value]  # (N, N)
        row = r[0] if self.prefix else r[self.query_token]
        return row[self.prefix:].reshape(self.gh, self.gw)  # (gh, gw)

    # -- drawing ---------------------------------------------------------------------------------
    def _build_figure(self, dpi: int) -> None:
        """One figure, four panels; later updates only change the artists' data."""
        self.figure = Figure(figsize=(10.0, 2.9), dpi=dpi)
        FigureCanvasAgg(self.figure)
        axes = self.figure.subplots(1, 4)
        self.figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.06)
        self.axes = dict(zip(("image", "query", "cls", "rollout"), axes))
        img = _to_display(self.display_images[0])
        H, W = img.shape[:2]
        self._patch_hw = (H / self.gh, W / self.gw)
        extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # data coordinates = image pixels, for every panel
        self.background: Dict[str, object] = {}
        self.heat: Dict[str, object] = {}
        self.boxes: Dict[str, Rectangle] = {}
        for name, ax in self.axes.items():
            self.background[name] = ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=extent)
            if name != "image":
                self.heat[name] = ax.imshow(np.zeros((self.gh, self.gw)), cmap="inferno", alpha=0.6,
                                            extent=extent, interpolation="nearest", vmin=0, vmax=1)
            ph, pw = self._patch_hw
            self.boxes[name] = ax.add_patch(Rectangle((-0.5, -0.5), pw, ph, fill=False, edgecolor="cyan", linewidth=2))
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
            ax.set_axis_off()

    def redraw(self) -> None:
        """Update every panel and the caption from the widgets' values, and render the PNG."""
        b, layer, head, q = self.image.value, self.layer.value, self.head.value, int(self.query.value)
        n_heads = self.maps[layer].shape[1]
        if self.head.max != n_heads - 1:  # layers of one stage usually share h, but need not
            self.head.max = n_heads - 1
            head = self.head.value
        img = _to_display(self.display_images[b])
        for artist in self.background.values():
            artist.set_data(img)
        maps = {"query": self.query_map(), "cls": self.cls_map(), "rollout": self.rollout_map()}
        for name, m in maps.items():
            arr = m.numpy()
            self.heat[name].set_data(arr)
            self.heat[name].set_clim(0.0, max(float(arr.max()), 1e-8))
        i, j = divmod(q, self.gw)
        ph, pw = self._patch_hw
        for box in self.boxes.values():
            box.set_xy((j * pw - 0.5, i * ph - 0.5))
        label = self.titles[b] if self.titles else f"image {b}"
        self.axes["image"].set_title(f"{label}: query patch {q}", fontsize=9)
        self.axes["query"].set_title(f"query {q}, layer {layer + 1}, head {head}", fontsize=9)
        self.axes["cls"].set_title(f"CLS, layer {layer + 1}, head {head}" if self.prefix
                                   else f"mean over queries, layer {layer + 1}, head {head}", fontsize=9)
        self.axes["rollout"].set_title(f"rollout of {'CLS' if self.prefix else f'query {q}'}, layers 1-{layer + 1}",
                                       fontsize=9)
        self.caption.value = (f"<b>{self.source.name}</b>: image {b}, layer {layer + 1}/{len(self.maps)}, "
                              f"head {head}/{n_heads - 1}, query patch {q} (row {i}, column {j}) = token "
                              f"{self.query_token}; the query attends most to patch "
                              f"{int(maps['query'].argmax())} ({float(maps['query'].max()):.2f})")
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.figure.dpi)
        self.view.value = buf.getvalue()

    def _on_change(self, change=None) -> None:
        self.redraw()

    # -- clicks ----------------------------------------------------------------------------------
    def patch_at(self, x_px: float, y_px: float) -> Optional[int]:
        """The patch under pixel (x_px, y_px) of the drawn PNG (origin top left), or None off the panels."""
        height = self.figure.get_size_inches()[1] * self.figure.dpi
        x_disp, y_disp = x_px, height - y_px  # matplotlib's display origin is bottom left
        for ax in self.axes.values():
            if ax.bbox.contains(x_disp, y_disp):
                xd, yd = ax.transData.inverted().transform((x_disp, y_disp))  # image pixels
                ph, pw = self._patch_hw
                i = min(max(int((yd + 0.5) // ph), 0), self.gh - 1)
                j = min(max(int((xd + 0.5) // pw), 0), self.gw - 1)
                return i * self.gw + j
        return None

    def _on_click(self, event: dict) -> None:
        """ipyevents handler: ``dataX``/``dataY`` are pixel coordinates in the PNG."""
        if event.get("type") != "click" or "dataX" not in event:
            return
        patch = self.patch_at(float(event["dataX"]), float(event["dataY"]))
        if patch is not None:
            self.query.value = patch  # triggers redraw through the slider's observer

    # -- display ---------------------------------------------------------------------------------
    def select(self, image: Optional[int] = None, layer: Optional[int] = None, head: Optional[int] = None,
               query: Optional[int] = None) -> "AttentionExplorer":
        """Set several widgets at once (each change redraws); returns self."""
        for w, v in ((self.image, image), (self.layer, layer), (self.head, head), (self.query, query)):
            if v is not None:
                w.value = v
        return self

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

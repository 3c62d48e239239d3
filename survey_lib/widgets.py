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
    (rollout, :func:`survey_lib.viz.attention.attention_rollout`).

Any model works through a small adapter, :class:`AttentionSource`: a callable ``images -> list of
(B, h, N, N)`` post-softmax maps (first layer first), the patch grid ``(gh, gw)`` and the number of
prefix tokens before the patches (1 for a CLS token, 2 with DeiT's distillation token, 0 for a
model without one), so that ``N = prefix + gh * gw``. :meth:`AttentionSource.from_model` builds it
from the attention-map contract every model of the package has (``get_attention_maps(x,
dense=True)`` and ``attention_layout()``, see :class:`survey_lib.layers.AttentionLayout`): ViT,
DeiT, one stage of Swin (windows mapped back to image positions), one level of NAT. The widget
never reaches into a model's blocks. A DINO wrapper is explored through its teacher's backbone
(:func:`as_attention_source`). This module is UI only.

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

from .viz.attention import attention_rollout
from .viz.common import _to_display

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
    def from_model(cls, model: torch.nn.Module, stage: int = 0, img_size: Optional[Tuple[int, int]] = None,
                   name: Optional[str] = None, kind: str = "stage") -> "AttentionSource":
        """Adapter for any model with the attention-map contract (ViT, DeiT, Swin, NAT, a DINO backbone).

        The contract (:class:`survey_lib.layers.AttentionLayout`): ``model.get_attention_maps(x,
        dense=True)`` gives one (B, h, N, N) map per block in image positions (windows and
        neighbourhoods scattered into it, zero outside them) and ``model.attention_layout(img_size)``
        says, per block, its stage, its token grid and its prefix tokens. The explorer shows the
        blocks of one stage (a ViT has one; Swin's stages and NAT's levels differ in grid).

        Args:
            model: e.g. :class:`survey_lib.models.vit.VisionTransformer` (or ``dino.teacher.backbone``).
            stage: which stage (0 = the first, finest grid).
            img_size: (H, W) of the images if they differ from the model's (the grid follows them).
            kind: what a stage is called in messages (``"stage"``, ``"level"``).

        Raises:
            TypeError: the model has no ``get_attention_maps`` or ``attention_layout``.
            ValueError: ``stage`` out of range, or an ``img_size`` the model cannot take.
        """
        if not hasattr(model, "get_attention_maps") or not hasattr(model, "attention_layout"):
            raise TypeError(f"{type(model).__name__} has no get_attention_maps/attention_layout; wrap it yourself: "
                            "AttentionSource(attention_fn=images -> [(B, h, N, N), ...], grid_size=(gh, gw), "
                            "num_prefix_tokens=...)")
        layout = model.attention_layout(tuple(img_size) if img_size is not None else None)
        n_stages = 1 + max(entry.stage for entry in layout)
        if not 0 <= stage < n_stages:
            raise ValueError(f"{kind} {stage} out of range: the model has {n_stages} {kind}s (0..{n_stages - 1})")
        picked = [i for i, entry in enumerate(layout) if entry.stage == stage]
        first = layout[picked[0]]

        def attention_fn(images: torch.Tensor) -> List[torch.Tensor]:
            maps = model.get_attention_maps(images, dense=True)  # one (B, h, N, N) per block
            return [maps[i] for i in picked]

        grid = (int(first.grid_size[0]), int(first.grid_size[1]))
        label = name or (type(model).__name__ if n_stages == 1 else f"{type(model).__name__}, {kind} {stage + 1}")
        return cls(attention_fn, grid, int(first.num_prefix_tokens), label)

    @classmethod
    def from_vit(cls, model: torch.nn.Module, img_size: Optional[Tuple[int, int]] = None,
                 name: Optional[str] = None) -> "AttentionSource":
        """:meth:`from_model` for a single-stage model (ViT, DeiT, a DINO backbone)."""
        return cls.from_model(model, 0, img_size, name)

    @classmethod
    def from_swin(cls, model: torch.nn.Module, stage: int = 0, name: Optional[str] = None) -> "AttentionSource":
        """:meth:`from_model` for one stage of :class:`survey_lib.models.swin.SwinTransformer`.

        A shifted block's windows live on the grid rolled by ``-shift``; the dense maps put every
        window token back at its image position, so the explorer's query patch is always an image
        position, and in a shifted block its window visibly straddles the unshifted windows' borders.

        Raises:
            TypeError: not a model with Swin stages (``layers``) and the attention-map contract.
            ValueError: ``stage`` out of range.
        """
        if not hasattr(model, "layers") or not hasattr(model, "attention_layout"):
            raise TypeError(f"{type(model).__name__} is not survey_lib's SwinTransformer (no layers/get_attention_maps)")
        return cls.from_model(model, stage, None, name)

    @classmethod
    def from_nat(cls, model: torch.nn.Module, level: int = 0, img_size: Optional[Tuple[int, int]] = None,
                 name: Optional[str] = None) -> "AttentionSource":
        """:meth:`from_model` for one level of :class:`survey_lib.models.nat.NAT` (each block's
        neighbourhood, with the kernel and dilation it really used, scattered into a dense map).

        Raises:
            TypeError: not a model with NAT levels (``levels``) and the attention-map contract.
            ValueError: ``level`` out of range.
        """
        if not hasattr(model, "levels") or not hasattr(model, "attention_layout"):
            raise TypeError(f"{type(model).__name__} is not survey_lib's NAT (no levels/get_attention_maps)")
        return cls.from_model(model, level, img_size, name, kind="level")


def as_attention_source(obj: Union[AttentionSource, torch.nn.Module], img_size: Optional[Tuple[int, int]] = None) -> AttentionSource:
    """An :class:`AttentionSource` for ``obj``: itself if it is one; for a DINO wrapper (it has
    ``teacher.backbone``) its teacher's backbone; any model with the attention-map contract through
    :meth:`AttentionSource.from_model` (its first stage). Pass an explicit adapter for another stage."""
    if isinstance(obj, AttentionSource):
        return obj
    teacher = getattr(obj, "teacher", None)
    if teacher is not None and hasattr(teacher, "backbone"):  # survey_lib.objectives.dino.DINO
        obj = teacher.backbone
    return AttentionSource.from_model(obj, 0, img_size)


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

"""Drawers: what turns the one tensor the loop optimises into the image CLIP scores.

A drawer owns its parameter tensor (its shape, its start, its valid range) and renders it to an
image (1, 3, H, W) in [0, 1], differentiably. Everything else is shared: the loop, the cutouts,
the prompts and regularisers, the outputs and the saved state (which holds the drawer's tensor).

    vqgan   a VQGAN latent through the decoder (the default; the only one that needs a VQGAN)
    pixel   a grid of flat cells, optionally snapped to a hard palette
    fft     an image parameterised by its Fourier spectrum, in a decorrelated colour space
    lines   cubic Bezier strokes on a paper colour

A drawer is one file. Its class declares its name, its --lr default, its own settings (a nested
`Fields` class, written as pixgen.settings writes its own, with pixgen.declare.setting) and its
capabilities, which callers ask instead of comparing names; `from_settings` builds the run's
drawer. pixgen.settings gathers the registered drawers' settings into Settings (so the flags,
--help, YAML, --set, batch lines, the web form, run.json and the PNG's metadata all see them), and
its validation asks the drawers' capabilities and their own `check`.

A new built-in drawer is a file here and its line in BUILT_IN. Code outside pixgen registers one
with `register_drawer(cls)` (in-process: the library, a notebook, a test), or names it in the
`pixgen.drawers` entry-point group of its package, which is read when pixgen.settings is first
imported, so its flags are on the command line too:

    [project.entry-points."pixgen.drawers"]
    flat = "mypackage.flat:FlatDrawer"

This package and the drawer files import torch only once a drawer draws (pixgen.lazy), so that
their declarations are read without it: `pixgen --help` does not import torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixgen.errors import PixgenError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

log = logging.getLogger("pixgen")

# The built-in drawers, "module:class", in the order --help lists them.
BUILT_IN = (
    "pixgen.drawers.vqgan:VQGANDrawer",
    "pixgen.drawers.pixel:PixelDrawer",
    "pixgen.drawers.fft:FFTDrawer",
    "pixgen.drawers.lines:LinesDrawer",
)
ENTRY_POINTS = "pixgen.drawers"  # the entry-point group of outside drawers


class Drawer:
    """The interface the loop and the starts draw through. `size` is the image's (height, width).

    Each drawer's class declares `name` (its --drawer value), `summary` (its words in the --drawer
    help), `lr` (its --lr default), `Fields` (its own settings, named for it: pixel_size, strokes),
    and what it can do (the capabilities below), and builds the run's drawer (`from_settings`)."""

    name = "drawer"
    summary = ""
    lr = 0.05
    needs_vqgan = False  # it draws through a VQGAN decoder: the run loads one
    takes_codes = False  # its tensor is a VQGAN latent: --init prior and --init-draws N work
    can_halve = False  # the progressive schedule halves its tensor
    can_zoom = False  # the zoom video mode re-encodes its image
    local_cells = False  # each cell of its tensor draws its own patch of pixels: speck_guard holds cells back
    min_side = 1  # the smallest width and height it draws (the VQGAN's: its factor, see size_factor)
    size: tuple[int, int] = (0, 0)

    class Fields:
        """Its own settings: annotated fields declared with pixgen.declare.setting (none here)."""

    @classmethod
    def from_settings(cls, settings, decoder, device: torch.device) -> Drawer:
        """The run's drawer, from its resolved settings (size already a multiple of `size_factor`)
        and the VQGAN decoder (None unless `needs_vqgan`)."""
        raise NotImplementedError

    @classmethod
    def size_factor(cls, decoder) -> tuple[int, int]:
        """What the image's width and height must be multiples of."""
        return 1, 1

    @classmethod
    def check(cls, settings, need: Callable[[bool, str, str], None]) -> None:
        """Refuse bad values of its own settings that their declared ranges cannot say (called
        whichever drawer the run uses, as the ranges are): `need(ok, key, why)`."""

    @classmethod
    def work_floats(cls, settings, width: int, height: int) -> int:
        """About how many float32 values one render and its backward hold at `width` x `height`,
        beyond the image itself: the memory estimate adds them (pixgen.runtime.memory)."""
        return 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "title" not in vars(cls):
            cls.title = f"the {cls.name} drawer"

    title = "the drawer"  # the drawer in words, for status lines ("the pixel drawer")

    def start(self, generator: torch.Generator) -> Tensor:
        """A random starting tensor, drawn on the CPU from `generator` (the same on any device)."""
        raise NotImplementedError

    @property
    def fit_ready(self) -> bool:
        """Whether `fit` can run without loading anything first (see `prepare_fit`)."""
        return True

    def prepare_fit(self) -> None:
        """Load what `fit` needs (the VQGAN's encoder); the caller announces it first."""

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """A starting tensor that draws (about) `image`, (1, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def fit_many(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """Starting tensors for a batch of images (N, 3, H, W), as the composed start takes them."""
        return [self.fit(image[None], generator) for image in images]

    def halve(self, params: Tensor) -> Tensor:
        """The tensor at half resolution (only where `can_halve`)."""
        raise NotImplementedError(f"{self.title} cannot be halved")

    def zoom(self, params: Tensor, scale: float, shift, rotate: float, specks=None) -> Tensor:
        """The tensor of the drawn image after one zoom/pan movement (only where `can_zoom`); with
        `specks` (a picture (3, H, W) -> how many specks it carries: the speck guard's test), one
        whose picture carries as few as the drawer can find."""
        raise NotImplementedError(f"{self.title} cannot zoom")

    def render(self, params: Tensor) -> Tensor:
        """The tensor -> the image (1, 3, H, W) in [0, 1], with gradient."""
        raise NotImplementedError

    def clamp_(self, params: Tensor) -> None:
        """Bring the tensor back into its valid range after an optimiser step (in place)."""

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The (height, width) of the image a tensor of `shape` draws."""
        return self.size

    def cells_under(self, pixels: Tensor, shape: tuple[int, ...]) -> Tensor:
        """(1, 1, rows, cols) bool: the cells of a tensor of `shape` (..., rows, cols) that draw any of
        the `pixels` (H, W) bool of its image (only where `local_cells`: a grid of cells, each of
        which draws its own patch of the image)."""
        import torch.nn.functional as F

        return F.adaptive_max_pool2d(pixels[None, None].float(), tuple(shape[-2:])) > 0

    def extras(self, params: Tensor) -> dict[str, bytes]:
        """Files written beside final.png at the end of a run (name -> contents)."""
        return {}


def declared_settings(cls: type[Drawer]) -> dict[str, tuple[str, Any]]:
    """A drawer's own settings, name -> (type as text, its setting() field), in declared order
    (its class's own `Fields`: a subclass of a drawer does not declare its parent's again)."""
    fields = vars(cls).get("Fields")
    if fields is None:
        return {}
    kinds = vars(fields).get("__annotations__", {})
    return {
        key: (kind if isinstance(kind, str) else _type_text(kind), vars(fields)[key]) for key, kind in kinds.items()
    }


def _type_text(kind) -> str:
    """An annotation as `from __future__ import annotations` writes it (int, list[int] | None)."""
    return kind.__name__ if type(kind) is type else str(kind)


_drawers: dict[str, type[Drawer]] = {}
_listeners: list[Callable[[], None]] = []  # told of every change (pixgen.settings rebuilds Settings)


def drawer_classes() -> dict[str, type[Drawer]]:
    """Every registered drawer, name -> class: the built-in ones, those of the `pixgen.drawers`
    entry points, then those given to `register_drawer`."""
    if not _drawers:
        for spec in BUILT_IN:
            module, name = spec.split(":")
            _add(getattr(importlib.import_module(module), name))
        _add_entry_points()
    return dict(_drawers)


def _add_entry_points() -> None:
    """The drawers other packages declare (a broken one is left out, with a warning)."""
    if not _group_named():
        return
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        try:
            _add(point.load())
        except Exception as e:  # any error of someone else's module: pixgen still runs
            log.warning("drawer %s (%s) left out: %s", point.name, point.value, e)


def _group_named() -> bool:
    """Whether an installed distribution's entry_points.txt (beside its metadata on sys.path, where
    importlib.metadata reads it) names the group: a millisecond, where importing importlib.metadata
    and reading every distribution would add some 25 ms to `pixgen --help`."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    text = Path(entry or ".", name, "entry_points.txt").read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if f"[{ENTRY_POINTS}]" in text:
                    return True
    return False


def _add(cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Drawer)) or not cls.name:
        raise PixgenError(f"a drawer is a subclass of pixgen.drawers.Drawer with a name, got {cls!r}")
    if _drawers.get(cls.name, cls) is not cls:
        raise PixgenError(f"drawer {cls.name!r} is registered already ({_drawers[cls.name].__module__})")
    _drawers[cls.name] = cls


def register_drawer(cls: type[Drawer]) -> type[Drawer]:
    """Add a drawer: `--drawer NAME` and its settings work from now on, in this process (a class
    decorator too). Flags are made when pixgen.cli.app is imported: for them, use the entry points."""
    drawer_classes()
    _add(cls)
    for listener in _listeners:
        listener()
    return cls


def unregister_drawer(name: str) -> None:
    """Take a registered drawer away again (a test's cleanup)."""
    drawer_classes()
    if _drawers.pop(name, None) is not None:
        for listener in _listeners:
            listener()


def on_drawers_changed(listener: Callable[[], None]) -> None:
    """Call `listener()` after every register_drawer and unregister_drawer."""
    _listeners.append(listener)


def drawer_class(name: str) -> type[Drawer]:
    """The class of drawer `name`, whose attributes say what it can do."""
    classes = drawer_classes()
    if name not in classes:
        raise PixgenError(f"setting 'drawer': unknown value {name!r} (choose from {', '.join(classes)})")
    return classes[name]

"""A module imported on its first use, so that a file can name torch at its top and still be read
without importing it (the drawers: their settings are read for `pixgen --help`)."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module `name`, imported (once, through the ordinary import system) when one
    of its attributes is first read: ``torch = LazyModule("torch")``. Unlike importlib's
    LazyLoader it leaves sys.modules alone, so every other ``import torch`` is the usual one."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def _load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str):
        if attr in ("_name", "_module"):  # not set yet (a copy being made): never recurse
            raise AttributeError(attr)
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module is not None else ''}>"

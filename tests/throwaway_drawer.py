"""A drawer defined outside pixgen, for tests/test_drawer_plugin.py: one flat colour over the whole
image, times its own setting, flat_gain. It is the whole of what a new drawer needs."""

from __future__ import annotations

from pixgen.declare import DRAWER, setting
from pixgen.drawers import Drawer
from pixgen.lazy import LazyModule

torch = LazyModule("torch")


class FlatDrawer(Drawer):
    name = "flat"
    summary = "one flat colour"
    lr = 0.02

    class Fields:
        flat_gain: float = setting(1.0, "flat: the colour is multiplied by this.", lo=0, hi=4, panel=DRAWER)

    @classmethod
    def from_settings(cls, settings, decoder, device) -> FlatDrawer:
        return cls((settings.height, settings.width), settings.flat_gain, device)

    def __init__(self, size, gain, device):
        self.size, self.gain, self.device = size, gain, device

    def start(self, generator):
        return torch.rand(1, 3, 1, 1, generator=generator).to(self.device)

    def fit(self, image, generator):
        return (image.float().mean((2, 3), keepdim=True) / self.gain).clamp(0, 1).to(self.device)

    def render(self, params):
        return (params * self.gain).clamp(0, 1).expand(1, 3, *self.size)

    def clamp_(self, params) -> None:
        with torch.no_grad():
            params.clamp_(0, 1)

"""pixgen: text-to-image with VQGAN+CLIP.

The public API is `generate(settings) -> Result` and `Settings`. Importing pixgen does not
import torch; the heavy modules load when `generate` is first called.
"""

from pixgen._version import __version__
from pixgen.errors import PixgenError

__all__ = ["__version__", "PixgenError", "Settings", "load_settings", "generate", "Result"]


def __getattr__(name):
    # lazily, so that `python -m pixgen` sets its signal handlers before anything heavy loads
    if name in ("Settings", "load_settings"):
        from pixgen import settings

        return getattr(settings, name)
    if name in ("generate", "Result"):
        from pixgen import api

        return getattr(api, name)
    raise AttributeError(name)

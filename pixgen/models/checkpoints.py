"""Safe checkpoint reading: ``torch.load(weights_only=True)`` and nothing else.

Lightning checkpoints often pickle a few harmless objects (callback classes, hyper-parameter
namespaces) that ``weights_only`` refuses. For globals from a short list of known training
libraries, we substitute inert placeholder classes that only record their arguments, so no
code from the file ever runs. Any other global (``os.system``, ``builtins.eval``, ...) is
refused with a clear error.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from pixgen.errors import PixgenError

# Modules whose pickled objects appear in real training checkpoints. Their names become inert
# placeholders; the real code is never imported or called.
_BENIGN_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "taming.",
    "main.",
    "numpy.",
    "collections.",
    "argparse.",
    "pathlib.",
    "typing.",
    "enum.",
    "torch.",
)
_BENIGN_BUILTINS = {
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.object",
}


class _Inert:
    """Stands in for an unpickled object: records what it was given, does nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self._pixgen_name}>"


def _placeholder(name: str) -> type:
    module, _, qual = name.rpartition(".")
    return type(qual, (_Inert,), {"__module__": module, "_pixgen_name": name})


def load_torch_file(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a torch.save file without executing any code from it; returns the top-level dict."""
    path = Path(path)
    if not path.is_file():
        raise PixgenError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise PixgenError(f"{what} {path} is empty (0 bytes); the download may have failed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        pass  # it pickles objects besides tensors: see which, below
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise PixgenError(f"{what} {path} is not a readable torch checkpoint ({_first_line(e)})") from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:
        raise PixgenError(f"{what} {path} is not a readable torch checkpoint ({_first_line(e)})") from None
    unsafe = [n for n in names if not (n.startswith(_BENIGN_PREFIXES) or n in _BENIGN_BUILTINS)]
    if unsafe:
        raise PixgenError(
            f"refusing to load {what} {path}: it would call {unsafe[0]!r}, which is not allowed "
            "in a weights file (it may carry malicious code)"
        )
    with torch.serialization.safe_globals([(_placeholder(n), n) for n in names]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise PixgenError(f"{what} {path} could not be read safely ({_first_line(e)})") from None


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict:
    """The state dict of tensors in a torch checkpoint (a Lightning ``state_dict`` entry, or the
    top-level dict itself), read as `load_torch_file` does; anything else is a PixgenError."""
    ckpt = load_torch_file(path, what)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not any(torch.is_tensor(v) for v in sd.values()):
        raise PixgenError(f"{what} {path} holds no state_dict of tensors")
    return sd


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__

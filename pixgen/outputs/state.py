"""The resumable state of a run, as safetensors (tensors only, never pickle)."""

from __future__ import annotations

from pathlib import Path

import torch

from pixgen import weights_io
from pixgen.errors import PixgenError


def save_state(path: Path, state: dict[str, torch.Tensor], planned: int) -> None:
    """Write the loop state atomically (temporary file, then rename)."""
    weights_io.write(path, state, {"planned_steps": str(planned)})


def load_state(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise PixgenError(f"no saved state in {Path(path).parent} (state.safetensors is missing): nothing to resume")
    return weights_io.read(path, "saved state")[1]

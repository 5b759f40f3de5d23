"""The resumable state of a run, as safetensors (tensors only, never pickle)."""

from __future__ import annotations

from pathlib import Path

import torch

from pixgen.errors import PixgenError


def save_state(path: Path, state: dict[str, torch.Tensor], planned: int) -> None:
    """Write the loop state atomically (temporary file, then rename)."""
    from safetensors.torch import save

    from pixgen.outputs import atomic_write

    data = save({k: v.contiguous() for k, v in state.items()}, metadata={"planned_steps": str(planned)})
    atomic_write(path, data)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise PixgenError(f"no saved state in {Path(path).parent} (state.safetensors is missing): nothing to resume")
    try:
        return load_file(str(path))
    except Exception as e:
        raise PixgenError(f"{path} is unreadable: {str(e).splitlines()[0]}") from None

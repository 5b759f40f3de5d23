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


# The state file's schema: each tensor the loop reads, its dtype and its number of dimensions.
STATE_TENSORS = {
    "z": (None, None),
    "step": (torch.int64, 0),
    "lr_state": (torch.float64, 1),
    "generator": (torch.uint8, 1),  # CPU generators' states (the run's stream, torch's global one)
    "torch_rng": (torch.uint8, 1),
}
LATENT_COPIES = ("kept_z", "ema_z", "speck_clean")  # saved beside z, of its shape


def check_state(state: dict[str, torch.Tensor], shapes: set[tuple[int, ...]], planned: int, path: Path) -> None:
    """Check a loaded state against the run about to take it, before anything is loaded: the
    tensors the loop reads are there, of their kinds; the latent (and its kept copies and the
    optimiser's moments) has the shape of this run's drawer tensor (one of `shapes`: the
    progressive schedule has two); the step is within the `planned` steps. A state of another
    drawer or size is one PixgenError line."""

    def bad(what: str):
        raise PixgenError(f"{path}: {what}")

    for key, (dtype, dims) in STATE_TENSORS.items():
        if key not in state:
            bad(f"no {key!r} tensor: not a pixgen run state")
        if dtype is not None and (state[key].dtype != dtype or state[key].dim() != dims):
            bad(f"{key!r} is a {state[key].dim()}-d {state[key].dtype} tensor, not a {dims}-d {dtype}")
    if state["lr_state"].numel() != 3:
        bad("'lr_state' must hold 3 numbers")
    z = state["z"]
    if not z.is_floating_point() or tuple(z.shape) not in shapes:
        want = " or ".join(str(list(s)) for s in sorted(shapes))
        bad(
            f"the saved latent is {list(z.shape)} ({z.dtype}), but this run's drawer tensor is {want}: "
            "the state is of another drawer or size"
        )
    for key, value in state.items():
        if key == "z" or key in LATENT_COPIES or (key.startswith("opt.") and key != "opt.step"):
            if value.shape != z.shape:
                bad(f"{key!r} is {list(value.shape)}, not the latent's {list(z.shape)}")
            if value.is_floating_point() and not torch.isfinite(value).all():
                bad(f"{key!r} holds non-finite numbers (nan or inf): the state is damaged")
    seen = state.get("speck_seen")  # the speck guard's cells under specks: one per cell of the latent
    if seen is not None and (seen.dtype != torch.bool or tuple(seen.shape) != (1, 1, *z.shape[-2:])):
        want = [1, 1, *z.shape[-2:]]
        bad(f"'speck_seen' is a {list(seen.shape)} {seen.dtype} tensor, not a {want} bool")
    if "speck_clean" in state and seen is None:
        bad("the speck guard's memory is incomplete: 'speck_clean' without 'speck_seen'")
    size = torch.Generator().get_state().numel()
    for key in ("generator", "torch_rng"):
        if state[key].numel() != size:
            bad(f"{key!r} is not a random generator's state")
    step = int(state["step"])
    if not 0 <= step <= planned:
        bad(f"its step {step} is outside the run's 0..{planned} steps")

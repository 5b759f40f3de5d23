"""What a run's pixels depend on beyond its settings: the device, the torch version, the CPU's
vector instructions and the thread count (floating-point sums in another order give other
pixels). Recorded in run.json and every PNG; `pixgen reproduce` compares them with this machine."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("pixgen")


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels use here (e.g. AVX2, AVX512, NO AVX)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an older or unusual build
        return "unknown"


def environment(device: torch.device | str) -> dict:
    """The device, thread count, torch version and CPU capability of a run on `device`."""
    device = torch.device(device)
    env = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": cpu_capability(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _device_type(name) -> str | None:
    """ "cuda" of "cuda:3"; None for a device this torch does not know (a foreign record)."""
    try:
        return torch.device(str(name)).type
    except (RuntimeError, ValueError):
        return None


def differences(recorded: dict, now: dict) -> list[str]:
    """What differs between a recorded environment and this one, in words ([] when all match).
    The CPU capability counts only on the CPU; a missing record counts as a difference."""
    if not recorded:
        return ["the image records no device, torch version or thread count"]
    out = []
    if _device_type(recorded.get("device")) != torch.device(now["device"]).type:
        out.append(f"device {recorded.get('device')} -> {now['device']}")
    elif recorded.get("gpu", now.get("gpu")) != now.get("gpu"):
        out.append(f"GPU {recorded.get('gpu')} -> {now.get('gpu')}")
    if recorded.get("torch") != now["torch"]:
        out.append(f"torch {recorded.get('torch')} -> {now['torch']}")
    if now["device"] == "cpu" and recorded.get("cpu_capability", "?") != now["cpu_capability"]:
        out.append(f"CPU {recorded.get('cpu_capability')} -> {now['cpu_capability']}")
    if recorded.get("threads") != now["threads"]:
        out.append(f"{recorded.get('threads')} threads -> {now['threads']}")
    return out


def warn_if_not_reproducible(recorded: dict, device: torch.device | str, threads: int) -> list[str]:
    """One warning line when the run about to reproduce an image cannot match its environment."""
    now = dict(environment(device), threads=threads or torch.get_num_threads())
    diffs = differences(recorded, now)
    if diffs:
        log.warning("cannot match the original run (%s): the pixels may differ", "; ".join(diffs))
    return diffs

"""Device selection: CUDA, then Apple MPS, then CPU, unless the user forces one."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA if available, else MPS, else CPU), or an explicit ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available",
                         "use --device auto or --device cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device 'mps' was requested but Apple MPS is not available",
                             "use --device auto or --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise InputError(f"unknown device {device!r}", "use auto, cpu, cuda or mps") from err


def describe_device(device: torch.device) -> str:
    """Human-readable device name for the UI (e.g. 'GPU: NVIDIA A100' or 'CPU (2 threads)')."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' * (n != 1)})"

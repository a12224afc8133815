"""Choosing where the engine computes: CUDA when present, else Apple's MPS, else the CPU."""

from __future__ import annotations

import torch

from metastudio.errors import MetaStudioError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA, then MPS, then CPU; other names are checked to exist."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MetaStudioError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MetaStudioError("device 'cuda' was asked for, but no CUDA GPU is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MetaStudioError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MetaStudioError("device 'mps' was asked for, but Apple's MPS is not available here")
    return device


def describe_device(device: torch.device) -> str:
    """A short human-readable name: ``CPU (2 threads)``, ``NVIDIA H100 80GB HBM3``, ``Apple GPU (MPS)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


def configure_for_speed(device: torch.device) -> None:
    """Process-wide settings that make training faster without changing results materially."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

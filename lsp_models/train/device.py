"""Where training runs: the device, and joining the torchrun process group."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from lsp_prep.errors import InputError


def pick_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` names: ``auto`` is CUDA when available, else CPU.
    InputError for an unknown name or an absent GPU. Only picks: joining a process group
    is :func:`join_process_group`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda given but no CUDA GPU is available")
    return device


def join_process_group(device: torch.device) -> torch.device:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; return this process's device
    (``cuda:LOCAL_RANK`` when ``device`` is CUDA). A no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device

"""A short name for a denoiser's architecture, shared by TaoCache calibrations and TeaCache coefficients."""

from __future__ import annotations

import hashlib
import json

import torch

from .compat import unwrap_module


def fingerprint(module: torch.nn.Module) -> str:
    """12 hex digits of a hash of the module's class and its public diffusers config, else its parameter
    shapes. Equal for models of identical architecture, whatever their weights."""
    module = unwrap_module(module)
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "items"):
        public = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
        text = json.dumps(public, sort_keys=True, default=str)
    else:
        text = json.dumps([(n, list(p.shape)) for n, p in module.named_parameters()])
    return hashlib.sha256(f"{type(module).__name__}:{text}".encode()).hexdigest()[:12]

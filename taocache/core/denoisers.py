"""Where a pipeline's denoisers are: the one lookup every cache, the benchmark and the tools use.

A diffusers pipeline keeps its denoiser as ``transformer`` (Wan2.2 also ``transformer_2``, the low-noise
expert) or ``unet``; a bare ``torch.nn.Module`` is taken as the denoiser itself.
"""

from __future__ import annotations

import torch

from .compat import unwrap_module

DENOISER_COMPONENTS = ("transformer", "transformer_2", "unet")
TRANSFORMER_COMPONENTS = ("transformer", "transformer_2")

SUPPORTED = (
    "a diffusers DiffusionPipeline (its transformer, transformer_2 and unet are hooked) or a torch.nn.Module "
    "denoiser whose forward returns a tensor, a tuple or an output with .sample"
)


def _is_pipeline(target) -> bool:
    from diffusers import DiffusionPipeline

    return isinstance(target, DiffusionPipeline)


def denoisers_of(target, components=DENOISER_COMPONENTS) -> list[tuple[str, torch.nn.Module]]:
    """``[(component name, unwrapped module)]`` of a pipeline's denoisers among ``components``, or
    ``[("denoiser", target)]`` for a module. TypeError for anything else, or a pipeline without one."""
    if _is_pipeline(target):
        found = [(name, getattr(target, name, None)) for name in components]
        found = [(name, unwrap_module(m)) for name, m in found if isinstance(m, torch.nn.Module)]
        if not found:
            raise TypeError(
                f"{type(target).__name__} has no denoiser component ({', '.join(components)}); "
                "pass the denoiser module itself"
            )
        return found
    if isinstance(target, torch.nn.Module):
        return [("denoiser", unwrap_module(target))]
    raise TypeError(f"taocache supports {SUPPORTED}; got {type(target).__name__}")


def transformers_of(target) -> list[tuple[str, torch.nn.Module]]:
    """The transformers of a pipeline (Wan2.2 has two) or a transformer module: what block caches hook.

    TypeError for a pipeline without a transformer (a UNet pipeline)."""
    if _is_pipeline(target):
        try:
            return denoisers_of(target, TRANSFORMER_COMPONENTS)
        except TypeError:
            raise TypeError(
                f"{type(target).__name__} has no {' or '.join(TRANSFORMER_COMPONENTS)} component: this cache "
                "works on a transformer's block stack"
            ) from None
    found = denoisers_of(target)
    return [("transformer", found[0][1])]


def pipeline_of(target):
    """``target`` when it is a pipeline, else None (a bare denoiser has no scheduler to read)."""
    return target if _is_pipeline(target) else None


def scheduler_name(pipe) -> str | None:
    scheduler = getattr(pipe, "scheduler", None)
    return type(scheduler).__name__ if scheduler is not None else None

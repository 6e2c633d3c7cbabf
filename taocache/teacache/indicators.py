"""The indicators TeaCache watches at the entrance of the block stack, and the relative change it measures.

Each function gets the model, the first block, the first block's call arguments and the transformer's call
arguments, and returns the indicator tensor (see docs/teacache.md for what each is on each model).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.parallel import sum_over


def _modulated_input(model, block, args: dict, call: dict) -> torch.Tensor:
    """The first block's normalised input after its timestep shift and scale, as the block computes it."""
    hidden = args["hidden_states"]
    name = type(block).__name__
    if name == "WanTransformerBlock":
        temb = args["temb"]
        if temb.ndim == 4:  # per-token conditioning (Wan2.2 TI2V): batch, tokens, 6, dim
            table = block.scale_shift_table.unsqueeze(0) + temb.float()
            shift, scale = table[:, :, 0], table[:, :, 1]
        else:  # batch, 6, dim
            table = block.scale_shift_table + temb.float()
            shift, scale = table[:, 0:1], table[:, 1:2]
        return block.norm1(hidden.float()) * (1 + scale) + shift
    if getattr(block, "norm_type", None) == "ada_norm_single":  # Latte, PixArt, OpenSora-Plan
        table = block.scale_shift_table[None] + args["timestep"].reshape(hidden.shape[0], 6, -1)
        shift, scale = table[:, 0:1], table[:, 1:2]
        return block.norm1(hidden) * (1 + scale) + shift
    if name == "CogVideoXBlock":
        return block.norm1(hidden, args["encoder_hidden_states"], args["temb"])[0]
    raise ValueError(
        f"TeaCache does not know how {name} modulates its input; use indicator='block_input' or "
        "'timestep_conditioning' for this model"
    )


def _timestep_conditioning(model, block, args: dict, call: dict) -> torch.Tensor:
    """The timestep conditioning the first block receives (Wan: the projected ``e0``; Latte: adaLN-single)."""
    for name in ("temb", "timestep"):
        if isinstance(args.get(name), torch.Tensor):
            return args[name]
    raise ValueError(
        f"the first block ({type(block).__name__}) receives no timestep conditioning ('temb' or 'timestep'); "
        "use indicator='block_input'"
    )


def _time_embedding(model, block, args: dict, call: dict) -> torch.Tensor:
    """Wan's time embedding before the projection to the blocks' six modulations (TeaCache4Wan2.1's ``e``)."""
    embedder = getattr(model, "condition_embedder", None)
    timestep = call.get("timestep")
    if embedder is None or not hasattr(embedder, "time_embedder") or not isinstance(timestep, torch.Tensor):
        raise ValueError(
            f"indicator='time_embedding' is only defined for Wan transformers, not "
            f"{type(model).__name__}; use 'modulated_input' or 'block_input'"
        )
    projected = embedder.timesteps_proj(timestep.flatten())
    dtype = next(embedder.time_embedder.parameters()).dtype
    return embedder.time_embedder(projected.to(dtype))


def _block_input(model, block, args: dict, call: dict) -> torch.Tensor:
    """The first block's hidden states: a generic indicator for any transformer (fit coefficients for it)."""
    return args["hidden_states"]


INDICATOR_FUNCTIONS = {
    "modulated_input": _modulated_input,
    "timestep_conditioning": _timestep_conditioning,
    "time_embedding": _time_embedding,
    "block_input": _block_input,
}
#: Transformers whose first block's modulation ``modulated_input`` knows; others default to ``block_input``.
MODULATED_INPUT_MODELS = ("WanTransformer3DModel", "LatteTransformer3DModel", "CogVideoXTransformer3DModel")


def per_sample_rel_l1(current: torch.Tensor, previous: torch.Tensor, num_samples: int, group=None) -> np.ndarray:
    """Relative L1 change ``mean|a - b| / mean|b|`` of each sample (rows are grouped sample-major).

    With ``group`` (the context-parallel ranks, each holding a shard of the sequence) the sums of ``|a - b|``
    and ``|b|`` are added over the ranks before the division: every rank gets the change of the whole tensor,
    the single process's value, and so makes the same decision.
    """
    rows = num_samples if current.ndim and current.shape[0] % num_samples == 0 else 1
    if group is not None:
        a = current.detach().double().reshape(rows, -1)
        b = previous.detach().double().reshape(rows, -1)
        sums = sum_over(torch.stack([(a - b).abs().sum(dim=1), b.abs().sum(dim=1)]), group)
        return (sums[0] / sums[1].clamp_min(1e-12)).cpu().numpy()
    a = current.detach().float().reshape(rows, -1)
    b = previous.detach().float().reshape(rows, -1)
    change = (a - b).abs().mean(dim=1) / b.abs().mean(dim=1).clamp_min(1e-12)
    return change.cpu().numpy().astype(np.float64)

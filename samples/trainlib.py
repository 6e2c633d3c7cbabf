"""Shared pieces of the embedded models' training scripts: resumable loops, EMA, caption encoding."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.shadow.parameters()), [p.detach() for p in module.parameters()], 1 - d)


def encode_captions(tokenizer, text_encoder, captions: list[str], max_length: int, masked: bool) -> torch.Tensor:
    """Caption embeddings exactly as the target pipeline builds them at inference.

    ``masked=True`` is ``WanPipeline``: attention mask on, padding positions set to zero. ``masked=False`` is
    ``StableDiffusionPipeline``: no mask, the padding tokens' hidden states kept. Training on one and sampling
    with the other feeds the denoiser conditioning it never saw.
    """
    tok = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
    if not masked:
        return text_encoder(ids).last_hidden_state
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)


def build_components(build, arch: dict, args) -> tuple[dict, dict]:
    """The pipeline's untrained components from ``build(words, seed, **arch)`` on ``args.device``.

    ``args.arch`` (JSON) overrides entries of ``arch``; with ``args.vae_from`` the autoencoder is the trained
    one of that pipeline folder instead (its stage is then skipped). Returns the components and the arch used.
    """
    from taocache.world import vocabulary

    args.device = pick_device(args.device)
    arch = {**arch, **json.loads(args.arch)} if args.arch else dict(arch)
    components = build(vocabulary(), seed=args.seed, **arch)
    if args.vae_from:
        vae = components["vae"]
        components["vae"] = type(vae).from_pretrained(Path(args.vae_from) / "vae", torch_dtype=torch.float32)
        args.vae_steps = 0
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.to(args.device)
    return components, arch


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class StopRequest:
    """Turns SIGTERM (``timeout``, a job scheduler) into a clean stop after the current step."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        print("stop requested: finishing the current step", flush=True)
        self.requested = True


STOP = StopRequest()


def train_loop(name, modules, optimizer, loss_fn, steps, ckpt_dir: Path, every=200, scheduler=None, ema=None):
    """Run ``loss_fn(step)`` for ``steps`` steps, checkpointing to ``ckpt_dir`` so an interrupted run resumes.

    Returns the number of steps done, fewer than ``steps`` when a stop was requested (checkpoint saved).
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{name}.pt"
    start = 0
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.shadow.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        start = state["step"]
        print(f"[{name}] resuming at step {start}")
    if start >= steps or STOP.requested:
        return start

    def save(step):
        state = {
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema": ema.shadow.state_dict() if ema is not None else None,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "step": step,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    for m in modules.values():
        m.train()
    bar = tqdm(range(start, steps), desc=name, initial=start, total=steps, mininterval=10)
    smooth = None
    t0 = time.time()
    for step in bar:
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for m in modules.values():
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(next(iter(modules.values())), step)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        if (step + 1) % every == 0 or step + 1 == steps or STOP.requested:
            save(step + 1)
        if STOP.requested:
            break
    done = step + 1
    print(f"[{name}] {done - start} steps in {time.time() - t0:.0f} s, loss {smooth:.4f}")
    for m in modules.values():
        m.eval()
    return done

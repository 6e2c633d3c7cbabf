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
    arch = {**arch, **args.arch} if args.arch else dict(arch)
    components = build(vocabulary(), seed=args.seed, **arch)
    if args.vae_from:
        vae = components["vae"]
        components["vae"] = type(vae).from_pretrained(Path(args.vae_from) / "vae", torch_dtype=torch.float32)
        args.vae_steps = 0
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.to(args.device)
    return components, arch


class NumpyGenerator:
    """``get_state``/``set_state`` of a numpy Generator, as ``torch.Generator`` has them."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, state) -> None:
        self.rng.bit_generator.state = state


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class StopRequest:
    """Turns SIGTERM (``timeout``, a job scheduler) into a clean stop after the current step, once a training
    script asks for it (importing this module changes nothing)."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        print("stop requested: finishing the current step", flush=True)
        self.requested = True


STOP = StopRequest()


def check_args(parser, args, arch: dict, counts: tuple) -> None:
    """Refuse, before any work, what would fail or silently train the wrong thing: counts below 1, a learning
    rate that is not positive, an ``--arch`` that is not a JSON table of known keys, a ``--vae-from`` folder
    without an autoencoder, an unknown device. ``args.arch`` becomes the parsed table."""
    for name in counts:
        value = getattr(args, name.lstrip("-").replace("-", "_"))
        if value < 1:
            parser.error(f"{name} {value} must be at least 1")
    if args.vae_steps < 0 or (args.vae_steps == 0 and args.vae_from is None):
        parser.error(f"--vae-steps {args.vae_steps}: the autoencoder needs steps, or --vae-from a trained one")
    if not args.lr > 0 or args.threads < 1:
        parser.error("--lr must be > 0 and --threads at least 1")
    if args.arch:
        try:
            args.arch = json.loads(args.arch)
        except json.JSONDecodeError as err:
            parser.error(f"--arch is not JSON ({err}); e.g. '{{\"{next(iter(arch))}\": ...}}'")
        if not isinstance(args.arch, dict) or set(args.arch) - set(arch):
            parser.error(f"--arch must be a JSON table of some of these keys: {', '.join(arch)}")
    if args.vae_from is not None and not (args.vae_from / "vae" / "config.json").is_file():
        parser.error(f"--vae-from {args.vae_from} is not a model folder with a vae/ (config.json)")
    try:
        pick_device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device}: {err}")


def train_loop(name, modules, optimizer, loss_fn, steps, ckpt_dir: Path, every=200, scheduler=None, ema=None,
               generators: dict | None = None, settings: dict | None = None):
    """Run ``loss_fn(step)`` for ``steps`` steps, checkpointing to ``ckpt_dir`` so an interrupted run resumes.

    ``generators`` (name -> object with ``get_state``/``set_state``) are the batch samplers' random states,
    kept in the checkpoint so a resumed run draws the batches an uninterrupted one would. ``settings`` are
    stored too: a checkpoint made with other settings is refused rather than silently continued.
    Returns the number of steps done, fewer than ``steps`` when a stop was requested (checkpoint saved).
    """
    STOP.install()
    generators = generators or {}
    settings = json.loads(json.dumps(settings or {}, default=str))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{name}.pt"
    start = 0
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        stored = state.get("settings")
        if stored is not None and stored != settings:
            changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            raise SystemExit(
                f"{path} was made with other settings ({', '.join(changed)}); use another --checkpoints folder "
                "for these, or delete it to start again"
            )
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.shadow.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key, generator in generators.items():
            if key in state.get("generators", {}):
                generator.set_state(state["generators"][key])
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
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "generators": {k: g.get_state() for k, g in generators.items()},
            "settings": settings,
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

"""Shared pieces of the embedded models' training scripts: resumable loops, EMA, caption encoding."""

from __future__ import annotations

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


def ema_of(module: torch.nn.Module, decay: float = 0.999):
    """diffusers' ``EMAModel`` over a module's parameters, with its usual warm-up ((1 + n) / (10 + n))."""
    from diffusers.training_utils import EMAModel

    return EMAModel(module.parameters(), decay=decay, foreach=True)


def subject_weight(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weight of a batch in [-1, 1] (channels on dim 1): ten on the subject, one elsewhere.

    The subject is found by its chroma (the world's backgrounds are colourless); its pixels are few and carry
    everything the captions talk about.
    """
    rgb = (x + 1) / 2
    chroma = rgb.amax(dim=1, keepdim=True) - rgb.amin(dim=1, keepdim=True)
    return 1.0 + 9.0 * (chroma > 0.1).float()


def latent_weight(pixels: torch.Tensor, factor: int, temporal: int = 1) -> torch.Tensor:
    """Loss weight on the latent grid of a batch in [-1, 1]: four where a latent cell touches the subject, one
    elsewhere. A video's latent frame 0 holds frame 0 and each later one the next ``temporal`` frames, as in a
    causal video autoencoder. The weighting changes no per-element optimum, only where the model's capacity
    goes: to the few cells the captions talk about."""
    mask = (subject_weight(pixels) > 1).float()
    if pixels.dim() == 5:  # (B, 1, F, H, W)
        first, rest = mask[:, :, :1], mask[:, :, 1:]
        if rest.shape[2]:
            rest = torch.nn.functional.max_pool3d(rest, (temporal, 1, 1))
        mask = torch.cat([first, rest], dim=2)
        mask = torch.nn.functional.max_pool3d(mask, (1, factor, factor))
    else:
        mask = torch.nn.functional.max_pool2d(mask, factor)
    return 1.0 + 3.0 * mask


def encode_captions(tokenizer, text_encoder, captions: list[str], max_length: int, masked: bool) -> torch.Tensor:
    """Caption embeddings exactly as the target pipeline builds them at inference, ``max_length`` tokens long.

    ``masked=True`` is ``WanPipeline``: attention mask on, padding positions set to zero. The encoder runs on
    the longest caption only and the zeros are appended after it: with the mask on, the padding changes
    nothing else, so this equals the pipeline's encoding at its default of 512 tokens at a fraction of the
    cost. ``masked=False`` is ``StableDiffusionPipeline``: no mask, the padding tokens' hidden states kept.
    Training on one and sampling with the other feeds the denoiser conditioning it never saw.
    """
    device = next(text_encoder.parameters()).device
    if not masked:
        tok = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        return text_encoder(tok.input_ids.to(device)).last_hidden_state
    tok = tokenizer(captions, padding="longest", max_length=max_length, truncation=True, return_tensors="pt")
    ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.pad(hidden, (0, 0, 0, max_length - hidden.shape[1]))


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


def device_name(device: torch.device) -> str:
    """What trained a model, for its training.json: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({name})"


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
               generators: dict | None = None, settings: dict | None = None, bf16: bool = False):
    """Run ``loss_fn(step)`` for ``steps`` steps, checkpointing to ``ckpt_dir`` so an interrupted run resumes.

    ``generators`` (name -> object with ``get_state``/``set_state``) are the batch samplers' random states,
    kept in the checkpoint so a resumed run draws the batches an uninterrupted one would. ``settings`` are
    stored too: a checkpoint made with other settings is refused rather than silently continued.
    ``bf16`` runs ``loss_fn`` under bfloat16 autocast (the weights and the optimiser stay in float32).
    Returns the number of steps done, fewer than ``steps`` when a stop was requested (checkpoint saved), and
    the wall-clock seconds spent on them over every resumed run.
    """
    STOP.install()
    generators = generators or {}
    settings = json.loads(json.dumps(settings or {}, default=str))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{name}.pt"
    start, seconds = 0, 0.0
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
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key, generator in generators.items():
            if key in state.get("generators", {}):
                generator.set_state(state["generators"][key])
        start, seconds = state["step"], state.get("seconds", 0.0)
        print(f"[{name}] resuming at step {start}")
    if start >= steps or STOP.requested:
        return start, seconds

    def save(step):
        state = {
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "generators": {k: g.get_state() for k, g in generators.items()},
            "settings": settings,
            "step": step,
            "seconds": seconds + time.time() - t0,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    for m in modules.values():
        m.train()
    bar = tqdm(range(start, steps), desc=name, initial=start, total=steps, mininterval=10)
    smooth = None
    t0 = time.time()
    device_type = next(next(iter(modules.values())).parameters()).device.type
    for step in bar:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for m in modules.values():
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.step(next(iter(modules.values())).parameters())
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
    return done, seconds + time.time() - t0

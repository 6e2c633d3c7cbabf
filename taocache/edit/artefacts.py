"""On-disk cache of the expensive editing artefacts (optimised embedding, inverted noise, null embeddings).

Text optimisation and null-text inversion cost hundreds of model calls; sampling one edit costs one pass.
Keeping the artefacts, keyed by everything they depend on (the image's pixels as the model sees them, the
prompt, the model's identity and the settings of the stage), makes a sweep over alpha and S, or a second run,
pay only for sampling. Files are safetensors, written to a temporary name and renamed, so an interrupted run
never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..core.data import user_cache_dir
from ..results import atomic_path

logger = logging.getLogger(__name__)

def default_cache_dir() -> Path:
    """Where artefacts go unless a cache directory is given: ``$TAOCACHE_EDIT_CACHE``, else the user cache's
    ``edit`` folder (``~/.cache/taocache/edit``)."""
    env = os.environ.get("TAOCACHE_EDIT_CACHE")
    return Path(env).expanduser() if env else user_cache_dir("edit")


def image_digest(image: np.ndarray) -> str:
    """Hash of an (H, W, 3) image's pixels as the model receives them (8-bit), independent of file format."""
    pixels = np.ascontiguousarray(np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8))
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


@torch.no_grad()
def model_identity(pipe) -> str:
    """Hash of the pipeline's configuration and weights (one pass of sums over every parameter).

    A folder name is not enough: retraining a model in place, or two models built in code, must not share
    artefacts.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str).encode())
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        digest.update(json.dumps(_config_dict(module), sort_keys=True, default=str).encode())
        for key, tensor in module.state_dict().items():
            values = tensor.detach().double()
            stats = (
                key,
                tuple(tensor.shape),
                str(tensor.dtype),
                values.sum().item(),
                values.abs().sum().item(),
            )
            digest.update(repr(stats).encode())
    return digest.hexdigest()


def _config_dict(module) -> dict:
    config = getattr(module, "config", None)
    if config is None:
        return {}
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def artefact_key(kind: str, **parts) -> str:
    """A stable hash of ``kind`` and its ``parts`` (strings, numbers)."""
    text = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ArtefactCache:
    """A folder of ``<kind>-<key>.safetensors`` files; ``directory=None`` disables it (nothing read or kept)."""

    def __init__(self, directory: str | os.PathLike | None = "default"):
        if directory == "default":
            directory = default_cache_dir()
        self.directory = Path(directory).expanduser() if directory is not None else None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def path(self, kind: str, key: str) -> Path:
        return self.directory / f"{kind}-{key}.safetensors"

    def load(self, kind: str, key: str, shapes: dict[str, tuple | None] | None = None) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent, unreadable, or not what ``shapes`` expects (names, and
        shapes where given) or not finite; those are logged and treated as absent, so they are recomputed."""
        if not self.enabled:
            return None
        path = self.path(kind, key)
        if not path.is_file():
            self.misses += 1
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except (OSError, SafetensorError) as err:  # a damaged file is recomputed, not fatal
            logger.warning("ignoring unreadable cached artefact %s (%s)", path, err)
            self.misses += 1
            return None
        problem = _mismatch(tensors, shapes or {})
        if problem:
            logger.warning("ignoring damaged cached artefact %s (%s); it is computed again", path, problem)
            self.misses += 1
            return None
        self.hits += 1
        logger.info("reusing cached %s %s", kind, path.name)
        return tensors

    def save(
        self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None
    ) -> None:
        """Store ``tensors`` whole (a temporary file, then a rename)."""
        if not self.enabled:
            return
        from safetensors.torch import save_file

        try:
            with atomic_path(self.path(kind, key)) as temporary:
                contiguous = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
                save_file(contiguous, temporary, metadata={k: str(v) for k, v in (metadata or {}).items()})
        except OSError as err:  # the edit itself is done: go on without keeping the artefact
            logger.warning(
                "cannot keep the %s artefact in the cache folder %s (%s); continuing without it (choose another "
                "folder with --cache-dir, or --no-cache)",
                kind,
                self.directory,
                err,
            )


def _mismatch(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple | None]) -> str | None:
    """What is wrong with cached ``tensors`` against the expected names and shapes, or None."""
    for name, shape in shapes.items():
        tensor = tensors.get(name)
        if tensor is None:
            return f"no tensor {name!r}"
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            return f"{name!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"
        if not bool(torch.isfinite(tensor).all()):
            return f"{name!r} holds values that are not finite"
    return None

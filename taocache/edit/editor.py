"""The non-rigid editor: prepare an image once (text optimisation, inversion), then sample any edit.

    editor = NonRigidEditor(pipe)
    prepared = editor.prepare(image, source="a small red circle on the left ...", target="... on the right ...")
    result = editor.edit(prepared, alpha=0.6, steps_source=10)

Preparing is the expensive part and is cached on disk (:mod:`.artefacts`); an edit is one sampling pass, so a
sweep over alpha and S costs one pass per setting.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .artefacts import ArtefactCache, artefact_key, image_digest, model_identity
from .config import EditConfig
from .inputs import check_model_image, check_prompt
from .inversion import Inversion, ddim_pivots, invert
from .latents import decode_latent, encode_image, encode_text
from .null_text import VERSION as NULL_TEXT_VERSION
from .sampling import blend, inject_and_sample
from .schedulers import editing_schedulers
from .text_optimization import optimize_text_embedding

logger = logging.getLogger(__name__)


@dataclass
class PreparedImage:
    """Everything an edit of one image needs, and what preparing it cost."""

    image: np.ndarray
    source: str
    target: str
    config: EditConfig
    latent: torch.Tensor
    source_embedding: torch.Tensor
    target_embedding: torch.Tensor
    optimised_embedding: torch.Tensor
    inversion: Inversion
    seconds: dict = field(default_factory=dict)
    from_cache: dict = field(default_factory=dict)


@dataclass
class Edit:
    """One sampled result: the image, its settings, and the sampling time (and cache statistics, if cached)."""

    image: np.ndarray
    alpha: float
    steps_source: int
    seconds: float
    cache: dict = field(default_factory=dict)


class NonRigidEditor:
    """Edits real images with a Stable Diffusion pipeline: text optimisation, inversion, then sampling with the
    edited text injected after the first ``steps_source`` steps (docs/editing.md).

    Args:
        pipe: A ``StableDiffusionPipeline`` (a UNet and a text encoder).
        config: The settings (default ``EditConfig()``, the published ones).
        cache_dir: Folder of the artefact cache that keeps optimised embeddings and inversions ("default":
            ``~/.cache/taocache/edit``; None: no cache).
        progress: Show progress bars.

    Example::

        editor = NonRigidEditor(pipe, default_config("tiny-t2i"))
        prepared = editor.prepare(image, "a small red circle on the left", "a small red circle on the right")
        edit = editor.edit(prepared)                                  # edit.image: (H, W, 3) in [0, 1]
        faster = editor.edit(prepared, cache_config=taocache.TaoCacheConfig())   # sampling with TaoCache
    """

    def __init__(self, pipe, config: EditConfig | None = None, cache_dir="default", progress: bool = True):
        self.pipe = pipe
        self.config = config or EditConfig()
        self.cache = ArtefactCache(cache_dir)
        self.progress = progress
        self._identity = None
        self._empty = None
        self._pivots = (None, None)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = model_identity(self.pipe)
        return self._identity

    def schedulers(self, config: EditConfig | None = None):
        return editing_schedulers(self.pipe, (config or self.config).num_steps)

    def empty_embedding(self) -> torch.Tensor:
        if self._empty is None:
            self._empty = encode_text(self.pipe, "")
        return self._empty

    # ------------------------------------------------------------------------------------------ preparing

    def prepare(
        self, image: np.ndarray, source: str, target: str, config: EditConfig | None = None
    ) -> PreparedImage:
        """Encode, optimise the target text and invert ``image``: the expensive part, done once per image.

        Args:
            image: An (H, W, 3) float array in [0, 1] at the model's size (``inputs.fit_to_model`` makes one).
            source: A prompt describing the image.
            target: A prompt describing the wanted result.
            config: Settings for this image (default: the editor's).

        Returns:
            A :class:`PreparedImage`, with what each stage cost and whether it came from the artefact cache.
        """
        config = config or self.config
        source, target = check_prompt("source", source), check_prompt("target", target)
        image = np.asarray(image, dtype=np.float32)
        check_model_image(self.pipe, image)
        digest = image_digest(image)
        seconds, from_cache = {}, {}
        latent = encode_image(self.pipe, image)
        source_embedding = encode_text(self.pipe, source)
        target_embedding = encode_text(self.pipe, target)

        start = time.perf_counter()
        optimised, from_cache["text"] = self._optimised_embedding(
            digest, latent, target, target_embedding, config
        )
        seconds["text_optimisation"] = time.perf_counter() - start

        start = time.perf_counter()
        inversion, from_cache["inversion"] = self._inversion(digest, latent, source, source_embedding, config)
        seconds["inversion"] = time.perf_counter() - start
        return PreparedImage(
            image,
            source,
            target,
            config,
            latent,
            source_embedding,
            target_embedding,
            optimised,
            inversion,
            seconds,
            from_cache,
        )

    def _optimised_embedding(self, digest, latent, target, target_embedding, config):
        key = artefact_key(
            "text",
            image=digest,
            target=target,
            model=self.identity,
            steps=config.text_steps,
            lr=config.text_lr,
            seed=config.seed,
        )
        stored = self.cache.load("text", key, {"optimised_embedding": tuple(target_embedding.shape)})
        if stored is not None:
            return stored["optimised_embedding"].to(latent.device), True
        optimised = optimize_text_embedding(
            self.pipe, latent, target_embedding, config.text_steps, config.text_lr, config.seed, self.progress
        )
        self.cache.save(
            "text", key, {"optimised_embedding": optimised}, {"target": target, "steps": config.text_steps}
        )
        return optimised, False

    def invert(self, prepared: PreparedImage, inversion: str) -> PreparedImage:
        """``prepared`` with its inversion redone (or read from the cache) by another ``inversion`` method."""
        config = prepared.config.with_values(inversion=inversion)
        digest = image_digest(prepared.image)
        found, _ = self._inversion(
            digest, prepared.latent, prepared.source, prepared.source_embedding, config
        )
        return replace(prepared, config=config, inversion=found)

    def _inversion(self, digest, latent, source, source_embedding, config):
        settings = {"method": config.inversion, "steps": config.num_steps, "guidance": config.guidance_scale}
        if config.inversion == "null-text":
            settings.update(
                inner=config.null_inner_steps,
                lr=config.null_lr,
                stop=config.null_early_stop,
                version=NULL_TEXT_VERSION,
            )
        key = artefact_key("inversion", image=digest, source=source, model=self.identity, **settings)
        stored = self.cache.load("inversion", key, {"noise": tuple(latent.shape), "null_embeddings": None})
        if stored is not None:
            noise, nulls = stored["noise"].to(latent.device), stored["null_embeddings"].to(latent.device)
            return Inversion(config.inversion, noise, nulls), True
        sampler, inverter = self.schedulers(config)
        pivots_key = (digest, source, config.num_steps)
        if self._pivots[0] != pivots_key:  # the methods share one DDIM inversion of the same image and prompt
            self._pivots = (pivots_key, ddim_pivots(self.pipe, inverter, latent, source_embedding))
        inversion = invert(
            self.pipe,
            sampler,
            inverter,
            latent,
            source_embedding,
            self.empty_embedding(),
            config.inversion,
            config.guidance_scale,
            config.null_inner_steps,
            config.null_lr,
            config.null_early_stop,
            self.progress,
            pivots=self._pivots[1],
        )
        self.cache.save(
            "inversion",
            key,
            {"noise": inversion.noise, "null_embeddings": inversion.null_embeddings},
            {"source": source, **settings},
        )
        return inversion, False

    # -------------------------------------------------------------------------------------------- editing

    def edit(
        self,
        prepared: PreparedImage,
        alpha: float | None = None,
        steps_source: int | None = None,
        cache_config=None,
    ) -> Edit:
        """Sample one edit of a prepared image.

        Args:
            prepared: What :meth:`prepare` returned.
            alpha: Weight of the target prompt in the injected text (default: the prepared config's).
            steps_source: Steps sampled on the source prompt before the injection (default: the config's).
            cache_config: A TaoCache config to sample with (None: no cache); inversion never runs cached.

        Returns:
            An :class:`Edit`: the image, its settings, the sampling time and the cache's statistics.
        """
        config = prepared.config.with_values(alpha=alpha, steps_source=steps_source)
        sampler, _ = self.schedulers(config)
        edit_embedding = blend(prepared.target_embedding, prepared.optimised_embedding, config.alpha)
        report: dict = {}
        start = time.perf_counter()
        latent = inject_and_sample(
            self.pipe,
            sampler,
            prepared.inversion,
            prepared.source_embedding,
            edit_embedding,
            config.steps_source,
            config.guidance_scale,
            cache_config=cache_config,
            cache_report=report,
        )
        seconds = time.perf_counter() - start
        return Edit(decode_latent(self.pipe, latent), config.alpha, config.steps_source, seconds, report)

    def reconstruct(self, prepared: PreparedImage) -> np.ndarray:
        """The input as the inversion reproduces it: every step conditioned on the source prompt."""
        return self.edit(prepared, steps_source=prepared.config.num_steps).image

    def sweep(self, prepared: PreparedImage, alphas, steps_sources, cache_config=None) -> list[Edit]:
        """One edit per (steps_source, alpha) pair, in that nesting order."""
        return [self.edit(prepared, a, s, cache_config) for s in steps_sources for a in alphas]

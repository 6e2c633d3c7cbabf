"""Fidelity of a result against a reference: PSNR and SSIM (scikit-image), LPIPS (the ``lpips`` package) and
ColorVideoVDP (``cvvdp``, in :mod:`.perceptual`).

Convention, as in the published harnesses: pixels are RGB floats in [0, 1]; a video is scored frame by
frame and the per-frame values are averaged. PSNR of two identical frames is infinite and reported so.
LPIPS needs its backbone's pretrained weights (AlexNet by default, from torchvision's cache); where they are
absent it is reported as unavailable with the reason, never computed with an untrained network.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.frames import as_frames

logger = logging.getLogger(__name__)


def _pair(result, reference) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_frames(result), as_frames(reference)
    if a.shape != b.shape:
        raise ValueError(f"result {a.shape} and reference {b.shape} differ in shape")
    return a, b


def psnr(result, reference) -> float:
    """Mean over frames of the PSNR in dB (data range 1); ``inf`` when every frame is identical."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pair(result, reference)
    values = []
    for x, y in zip(a, b):
        values.append(math.inf if np.array_equal(x, y) else peak_signal_noise_ratio(y, x, data_range=1.0))
    return float(np.mean(values))


def ssim(result, reference) -> float:
    """Mean over frames of the SSIM (scikit-image defaults, 7x7 window, colour channels averaged)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(result, reference)
    return float(np.mean([structural_similarity(y, x, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)]))


def quality_row(result, reference, lpips: LPIPS | None = None, cvvdp=None) -> dict:
    """PSNR, SSIM, LPIPS and ColorVideoVDP (JOD) of ``result`` against ``reference``: the row every evaluation
    records. LPIPS and CVVDP are None when no scorer is given or it is unavailable; ``cvvdp`` is a
    :class:`~.perceptual.VideoVDP` (it knows the clip's frame rate)."""
    score = lpips(result, reference) if lpips is not None and getattr(lpips, "available", True) else None
    jod = cvvdp(result, reference) if cvvdp is not None and cvvdp.available else None
    return {"psnr": psnr(result, reference), "ssim": ssim(result, reference), "lpips": score, "cvvdp": jod}


# ------------------------------------------------------------------------------------------------ LPIPS

_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


@dataclass
class LPIPS:
    """An LPIPS scorer, or the reason it is unavailable (``model is None``)."""

    net: str
    model: object = None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, result, reference) -> float | None:
        """Mean over frames of the LPIPS distance; ``None`` when unavailable."""
        if self.model is None:
            return None
        import torch

        a, b = _pair(result, reference)
        to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() * 2 - 1
        with torch.no_grad():
            return float(self.model(to_t(a), to_t(b)).mean())


def load_lpips(net: str = "alex", backbone=None) -> LPIPS:
    """LPIPS with ``net`` ('alex', 'vgg', 'squeeze') if its pretrained backbone is in torchvision's cache.

    ``backbone`` replaces the pretrained check (tests pass a randomly initialised network to exercise the code
    path; such numbers are not LPIPS and must never be reported as such).
    """
    if net not in _BACKBONE_FILES:
        raise ValueError(f"LPIPS net={net!r} must be one of {sorted(_BACKBONE_FILES)}")
    import torch

    weights = Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[net]
    if backbone is None and not weights.is_file():
        reason = f"LPIPS unavailable: the pretrained {net} backbone is not in {weights.parent} (no download here)"
        logger.warning(reason)
        return LPIPS(net, None, reason)
    import lpips

    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=backbone is not None, verbose=False).eval()
    if backbone is not None:
        model.net = backbone
    return LPIPS(net, model, "")

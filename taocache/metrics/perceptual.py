"""A full-reference perceptual video metric that runs offline: ColorVideoVDP (``cvvdp``), base metric.

ColorVideoVDP (Mantiuk et al., "ColorVideoVDP: A visual difference predictor for image, video and display
distortions", SIGGRAPH 2024) models how visible the differences between a test and a reference video are on a
given display and viewing geometry, over space, time and colour, and pools them into JOD units
(just-objectionable differences): 10 is no visible difference, one JOD less means about 75% of observers would
prefer the reference. The base metric's parameters ship in the ``cvvdp`` wheel (``pycvvdp/vvdp_data``), and
that folder is passed explicitly so a ``CVVDP_PATH`` in the environment cannot substitute others; only the
"ML" variants download weights, and they are not used.

Viewing conditions (the score depends on them, so they are fixed and stored with the scores):

* photometry: cvvdp's ``standard_fhd``, a 24-inch Full HD SDR office monitor (200 cd/m^2, 1000:1, sRGB,
  250 lux), on which someone reads the report; the project's pixels are sRGB values in [0, 1];
* geometry: that monitor from 0.6 m (37.8 pixels per degree), each clip pixel drawn 2x2 (``MAGNIFICATION``)
  as the report's panels show a 64x64 clip at 128x128, so the metric sees 18.9 clip pixels per degree;
* time: the clip's own frame rate; a single frame is scored in cvvdp's image mode.

Cost: about 0.1 s of CPU per 9x64x64 clip on one thread, built once per process (0.1 s); a record keeps the
time its score took (``cvvdp_s``).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..core.frames import as_frames

#: cvvdp display model (photometry) used for every score.
DISPLAY = "standard_fhd"
#: Screen pixels per clip pixel, each way (the report shows 64x64 clips at 128x128).
MAGNIFICATION = 2.0
#: Score of two identical inputs.
MAX_JOD = 10.0


def _data_dir() -> str:
    import pycvvdp

    return os.path.join(os.path.dirname(pycvvdp.__file__), "vvdp_data")


def _check_magnification(magnification) -> float:
    if isinstance(magnification, bool) or not isinstance(magnification, (int, float)) or not (
        math.isfinite(magnification) and magnification > 0
    ):
        raise ValueError(f"magnification must be a positive number, got {magnification!r}")
    return float(magnification)


@functools.lru_cache(maxsize=8)
def _metric(display: str, magnification: float):
    """One cvvdp instance per viewing condition (building it reads the parameter files)."""
    import pycvvdp
    import torch

    screen = pycvvdp.vvdp_display_geometry.load(display, [_data_dir()])
    geometry = pycvvdp.vvdp_display_geometry(screen.resolution, ppd=screen.get_ppd() / magnification)
    return pycvvdp.cvvdp(display_name=display, display_geometry=geometry, config_paths=[_data_dir()],
                         device=torch.device("cpu"), quiet=True)


def describe(magnification: float = MAGNIFICATION, display: str = DISPLAY) -> str:
    """cvvdp's one-line description of the metric and viewing conditions (parameter version, pixels per
    degree, luminances, display): JODs are comparable only where it matches."""
    return _metric(display, _check_magnification(magnification)).get_info_string().strip('"')


def video_quality(result, reference, fps: float | None = None, *, magnification: float = MAGNIFICATION,
                  display: str = DISPLAY) -> float:
    """ColorVideoVDP of ``result`` against ``reference`` in JOD (higher is better, 10 = identical).

    Inputs as every metric here takes them (``as_frames``: (F, H, W, 3) or (H, W, 3), floats in [0, 1] or
    uint8), of the same shape and at least 8x8 pixels. ``fps`` is required for clips of more than one frame.
    """
    a, b = as_frames(result), as_frames(reference)
    if a.shape != b.shape:
        raise ValueError(f"result {a.shape} and reference {b.shape} differ in shape")
    if min(a.shape[1:3]) < 8:  # cvvdp's pyramid would have a single band: no frequency analysis
        raise ValueError(f"frames must be at least 8x8 pixels for ColorVideoVDP, got {a.shape[1]}x{a.shape[2]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the frames contain NaN or infinite values")
    if a.shape[0] > 1 and (
        fps is None or isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0)
    ):
        raise ValueError(f"fps must be a positive number for a clip of {a.shape[0]} frames, got {fps!r}")
    rate = float(fps) if a.shape[0] > 1 else 0.0  # 0 selects cvvdp's image mode
    import torch

    metric = _metric(display, _check_magnification(magnification))
    with torch.no_grad():
        jod, _ = metric.predict(a.astype(np.float32), b.astype(np.float32), dim_order="FHWC",
                                frames_per_second=rate)
    return float(jod)


@dataclass
class VideoVDP:
    """ColorVideoVDP at one frame rate, or the reason it is unavailable (``cvvdp`` not installed)."""

    fps: float
    magnification: float = MAGNIFICATION
    display: str = DISPLAY
    reason: str = ""
    seconds: float = 0.0  # time the last score took

    @property
    def available(self) -> bool:
        return not self.reason

    def describe(self) -> str | None:
        return describe(self.magnification, self.display) if self.available else None

    def __call__(self, result, reference) -> float | None:
        if not self.available:
            return None
        start = time.perf_counter()
        score = video_quality(result, reference, self.fps, magnification=self.magnification, display=self.display)
        self.seconds = time.perf_counter() - start
        return score


def load_cvvdp(fps: float, magnification: float = MAGNIFICATION, display: str = DISPLAY) -> VideoVDP:
    """A ColorVideoVDP scorer for clips at ``fps``; unavailable, with the reason, when cvvdp is missing."""
    try:
        import pycvvdp  # noqa: F401 - only whether it is there
    except ImportError as err:
        return VideoVDP(fps, magnification, display, reason=f"ColorVideoVDP unavailable: cvvdp is not installed ({err})")
    return VideoVDP(fps, _check_magnification(magnification), display)

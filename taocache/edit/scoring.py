"""Scoring an edit without a learned judge.

Four questions, each answered by the world's analytic reader (``taocache.world``):

- *success*: is the asked attribute (position for a move, size for a resize) read back from the edit;
- *caption kept*: are colour, shape, the attribute not asked to change and the background's tone as before;
- *subject kept*: is it the same subject (``compare_identity``: shade and stripes, which the caption does not
  say), wherever it now is;
- *background kept*: PSNR of the background outside the input's, the edit's and the asked subject's regions
  at least :data:`BACKGROUND_PSNR_KEPT` dB (``background_fidelity``).

An edit that does all four is *all kept*; a model that redraws the target caption from another seed passes
the first two but not the last two.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..metrics import load_lpips, quality_row
from ..world import agreement, read_image, render
from ..world.identity import background_fidelity, compare_identity, subject_region
from .cases import EditCase

#: Background PSNR (dB, outside every subject region) from which the background counts as kept: above the usual
#: "visually identical" level; a redraw from another seed (another grey, other waves) does not reach it.
BACKGROUND_PSNR_KEPT = 30.0

#: The flags an edit is scored on; ``all_kept`` is their conjunction.
FLAGS = ("changed", "caption_kept", "subject_kept", "background_kept")

_LPIPS = None


def lpips_scorer():
    """The LPIPS scorer, loaded once (it reports itself unavailable when its backbone weights are absent)."""
    global _LPIPS
    if _LPIPS is None:
        _LPIPS = load_lpips()
    return _LPIPS


def fidelity(result: np.ndarray, reference: np.ndarray) -> dict:
    """PSNR, SSIM and LPIPS (None when unavailable) of ``result`` against ``reference``."""
    return quality_row(result, reference, lpips_scorer())


def score_edit(case: EditCase, result: np.ndarray, image: np.ndarray) -> dict:
    """Preservation against the input, the analytic reading of the result and the four flags."""
    result = np.clip(np.asarray(result, dtype=np.float32), 0.0, 1.0)
    reading = read_image(result)
    asked = agreement(case.target, reading)
    changed_attribute = "position" if case.kind == "move" else "size"
    kept_attribute = "size" if case.kind == "move" else "position"
    identity = bool(asked["colour"] and asked["shape"])
    others_kept = bool(asked[kept_attribute] and asked["background"])
    subject = compare_identity(image, result)
    wanted = render(case.target, seed=case.seed)  # where the asked subject would be: excluded too
    exclude = subject_region(image) | subject_region(result) | subject_region(wanted)
    background = background_fidelity(image, result, exclude)
    flags = {
        "changed": bool(asked[changed_attribute]),
        "caption_kept": identity and others_kept,
        "subject_kept": bool(subject is not None and subject.kept),
        "background_kept": background["psnr"] is not None and background["psnr"] >= BACKGROUND_PSNR_KEPT,
    }
    return {
        **fidelity(result, image),
        "background_psnr": background["psnr"],
        "background_ssim": background["ssim"],
        "subject": subject.as_dict() if subject is not None else None,
        "reading": dataclasses.asdict(reading),
        "identity": identity,
        "others_kept": others_kept,
        **flags,
        "all_kept": all(flags.values()),
    }

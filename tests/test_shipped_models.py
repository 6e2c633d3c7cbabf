"""The embedded models as a plain diffusers user meets them: loaded with no dtype argument and called with
the pipeline's defaults apart from size and steps (WanPipeline's 512-token captions included)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from taocache.world import scenes_of
from taocache.world.scorer import agreement, read_image, read_video

MODELS = Path(__file__).resolve().parents[1] / "samples" / "models"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(MODELS / name)  # no dtype
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_both_models_load_in_float32_and_fit_the_size_budget():
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total <= 40 * 2**20, f"the embedded models take {total / 2**20:.1f} MiB, more than 40"
    for name in ("tiny-t2v", "tiny-t2i"):
        pipe = _load(name)
        dtypes = {p.dtype for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()}
        assert dtypes == {torch.float32}, f"{name} loads with {dtypes}"


@pytest.mark.slow
@pytest.mark.parametrize("video", [True, False])
def test_a_default_call_draws_what_the_caption_asks(video):
    """Four test captions at 50 steps: the strict scorer reads every captioned attribute in at least 3."""
    pipe = _load("tiny-t2v" if video else "tiny-t2i")
    scenes = scenes_of("test", video)[::12][:4]
    kept = 0
    for scene in scenes:
        generator = torch.Generator().manual_seed(0)
        if video:
            pixels = pipe(scene.caption, height=64, width=64, num_frames=9, num_inference_steps=50,
                          output_type="np", generator=generator).frames[0]
            reading = read_video(np.asarray(pixels))
        else:
            pixels = pipe(scene.caption, height=64, width=64, num_inference_steps=50, output_type="np",
                          generator=generator).images[0]
            reading = read_image(np.asarray(pixels))
        kept += all(agreement(scene, reading).values())
    assert kept >= 3, f"{kept} of {len(scenes)} samples drew what their captions ask"

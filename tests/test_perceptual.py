"""ColorVideoVDP (cvvdp) as the perceptual video metric: what it ranks, its errors, that it runs offline from
the wheel's own parameters, and its place in the quality row."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from taocache.metrics import load_cvvdp, quality_row
from taocache.metrics.perceptual import MAX_JOD, describe, video_quality

pytest.importorskip("pycvvdp", reason="cvvdp is a dependency of taocache; install it to run these tests")
FPS = 16


def scene(colour=(0.9, 0.2, 0.1), start=(20, 16), frames=9, size=64) -> np.ndarray:
    """A smooth test clip: a coloured disc moving right over a soft gradient, (F, H, W, 3) in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    background = np.stack([0.2 + 0.3 * x, 0.3 + 0.2 * y, 0.5 - 0.2 * x], axis=-1)
    clip = np.repeat(background[None], frames, axis=0).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    for f in range(frames):
        clip[f][(yy - start[0]) ** 2 + (xx - start[1] - 2 * f) ** 2 <= 8**2] = colour
    return clip


def noisy(clip, sigma, seed=0):
    return np.clip(clip + np.random.default_rng(seed).normal(0, sigma, clip.shape), 0, 1)


@pytest.fixture(scope="module")
def reference(one_thread):
    return scene()


def test_identical_scores_the_maximum_and_more_noise_scores_lower(reference):
    assert video_quality(reference, reference.copy(), FPS) == pytest.approx(MAX_JOD, abs=1e-6)
    assert video_quality(reference[0], reference[0].copy()) == pytest.approx(MAX_JOD, abs=1e-6)
    scores = [video_quality(noisy(reference, s), reference, FPS) for s in (0.005, 0.02, 0.08)]
    assert MAX_JOD > scores[0] > scores[1] > scores[2], scores


def test_shape_or_colour_error_scores_below_tiny_noise(reference):
    tiny = video_quality(noisy(reference, 0.003), reference, FPS)
    wrong_colour = video_quality(scene(colour=(0.1, 0.3, 0.9)), reference, FPS)
    wrong_place = video_quality(scene(start=(40, 30)), reference, FPS)
    assert wrong_colour < tiny - 1 and wrong_place < tiny - 1, (tiny, wrong_colour, wrong_place)


def test_deterministic_and_uint8_agrees_with_floats(reference):
    test = noisy(reference, 0.03)
    assert video_quality(test, reference, FPS) == video_quality(test, reference, FPS)
    as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)
    assert video_quality(as_uint8(test), as_uint8(reference), FPS) == pytest.approx(
        video_quality(np.round(test * 255) / 255, np.round(reference * 255) / 255, FPS), abs=1e-4
    )


def test_larger_magnification_makes_fine_noise_more_visible(reference):
    test = noisy(reference, 0.03)
    assert video_quality(test, reference, FPS, magnification=4) < video_quality(test, reference, FPS)


@pytest.mark.parametrize(
    "result, fps, message",
    [
        (np.zeros((9, 32, 32, 3)), FPS, "differ in shape"),
        (np.zeros((9, 4, 4, 3)), FPS, "at least 8x8"),
        (np.full((9, 64, 64, 3), np.nan), FPS, "NaN"),
        (None, None, "fps must be a positive number"),
        (None, -1, "fps must be a positive number"),
    ],
)
def test_bad_inputs_raise_clear_errors(reference, result, fps, message):
    result = reference if result is None else result
    other = reference if result.shape == reference.shape else np.zeros_like(result)
    other = reference if "differ" in message else other
    with pytest.raises(ValueError, match=message):
        video_quality(result, other, fps)
    with pytest.raises(ValueError, match="magnification must be a positive"):
        video_quality(reference, reference, FPS, magnification=0)


def test_description_names_version_geometry_and_display():
    text = describe()
    assert "ColorVideoVDP v0.5.7" in text and "18.92 [pix/deg]" in text and "standard_fhd" in text


def test_quality_row_has_a_cvvdp_column(reference):
    test = noisy(reference, 0.02)
    scorer = load_cvvdp(FPS)
    row = quality_row(test, reference, cvvdp=scorer)
    assert row["cvvdp"] == video_quality(test, reference, FPS) and scorer.seconds > 0
    assert quality_row(test, reference)["cvvdp"] is None
    missing = type(scorer)(FPS, reason="ColorVideoVDP unavailable: test")
    assert quality_row(test, reference, cvvdp=missing)["cvvdp"] is None and missing.describe() is None


PROBE = r"""
import json, os, sys
opened, network = [], []
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.append(os.path.abspath(args[0]))
    elif event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
        network.append(event)
sys.addaudithook(hook)
import numpy as np, torch, pycvvdp
torch.set_num_threads(1)
from taocache.metrics.perceptual import video_quality
clip = np.random.default_rng(0).random((9, 64, 64, 3))
score = video_quality(np.clip(clip + 0.05, 0, 1), clip, 16)
root = os.path.dirname(pycvvdp.__file__)
data = [p for p in opened if p.startswith(root) and not p.endswith((".py", ".pyc"))]
print(json.dumps({"score": score, "network": network, "data": data}))
"""


def test_runs_offline_reading_only_packaged_parameters(tmp_path):
    """A fresh process with the hub offline and no proxy: no network call, parameters from the wheel only."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_HUB_OFFLINE="1", CVVDP_PATH=str(tmp_path), OMP_NUM_THREADS="1")
    (tmp_path / "cvvdp_parameters.json").write_text("{}")  # must be ignored: the wheel's data is pinned
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["network"] == []
    assert 0 < report["score"] < MAX_JOD
    assert report["data"] and all(os.sep + "vvdp_data" + os.sep in p for p in report["data"]), report["data"]
    assert any(p.endswith("cvvdp_parameters.json") for p in report["data"])

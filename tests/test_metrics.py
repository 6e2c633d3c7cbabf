import math

import numpy as np
import pytest
import torch

from taocache.metrics import as_frames, format_rate, load_lpips, psnr, rate_interval, ssim


def test_psnr_matches_the_definition_and_averages_frames():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 16, 16, 3))
    out = np.clip(ref + 0.01, 0, 1)
    expected = np.mean([10 * np.log10(1 / np.mean((o - r) ** 2)) for o, r in zip(out, ref)])
    assert psnr(out, ref) == pytest.approx(expected, rel=1e-9)
    assert psnr(ref, ref) == math.inf


def test_ssim_identical_is_one_and_drops_with_noise():
    rng = np.random.default_rng(1)
    ref = rng.random((32, 32, 3))
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(np.clip(ref + rng.normal(0, 0.2, ref.shape), 0, 1), ref) < 0.9


def test_inputs_are_normalised_and_checked():
    img = np.full((8, 8, 3), 255, dtype=np.uint8)
    assert as_frames(img).shape == (1, 8, 8, 3) and as_frames(img).max() == 1.0
    assert as_frames(torch.zeros(2, 8, 8, 3)).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((8, 8, 3)), np.zeros((9, 8, 3)))
    with pytest.raises(ValueError, match="expected an"):
        as_frames(np.zeros((8, 8)))


def test_lpips_is_unavailable_without_pretrained_backbone(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metric = load_lpips("alex")
    assert not metric.available and "not in" in metric.reason
    assert metric(np.zeros((8, 8, 3)), np.zeros((8, 8, 3))) is None
    with pytest.raises(ValueError, match="net="):
        load_lpips("resnet")


def test_lpips_code_path_with_an_injected_backbone(monkeypatch, tmp_path):
    # A random backbone only exercises the code path; such a number is not LPIPS.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import lpips

    torch.manual_seed(0)
    metric = load_lpips("alex", backbone=lpips.pn.alexnet(pretrained=False, requires_grad=False))
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 64, 64, 3)), rng.random((2, 64, 64, 3))
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metric(a, b) > 0


def test_rate_interval_is_the_wilson_interval():
    z, n, k = 1.959964, 24, 18
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = rate_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-5) and high == pytest.approx(centre + half, abs=1e-5)
    assert rate_interval(24, 24)[1] == pytest.approx(1.0) and rate_interval(0, 24)[0] == pytest.approx(0.0)
    wide, narrow = rate_interval(18, 24), rate_interval(180, 240)  # more samples, a tighter interval
    assert narrow[0] > wide[0] and narrow[1] < wide[1]
    assert format_rate(0.75, (low, high)) == "75% (55-88%)"
    for bad in ((5, 0), (-1, 4), (5, 4)):
        with pytest.raises(ValueError):
            rate_interval(*bad)

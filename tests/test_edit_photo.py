"""A real photo end to end: any size and aspect in, the edit back at that size, on a Stable Diffusion-layout
folder built here; float16 on CUDA and float32 on the CPU."""

import numpy as np
import pytest
import torch
from edit_settings import QUICK, SOURCE, TARGET
from PIL import Image

from taocache.cli import main

torch.set_num_threads(1)


def test_a_photo_of_any_size_is_edited_and_comes_back_at_its_size(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    photo = np.uint8(rng.integers(0, 256, (8, 15, 3))).repeat(8, axis=0).repeat(8, axis=1)  # 120 x 64, blocky
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    original = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    output = tmp_path / "edited.png"
    args = ["edit", str(tmp_path / "photo.jpg"), "--source", SOURCE, "--target", TARGET, "--output", str(output),
            "--model", str(model_dir), "--no-cache", *QUICK]
    assert main(args) == 0
    edited = np.asarray(Image.open(output))
    assert edited.shape == original.shape  # the input's size and aspect, not the model's 64x64
    left = (120 - 64) // 2  # the model saw the centred 64x64 crop; the sides are the photo's own pixels
    np.testing.assert_array_equal(edited[:, :left], original[:, :left])
    np.testing.assert_array_equal(edited[:, left + 64:], original[:, left + 64:])
    assert np.abs(edited[:, left:left + 64].astype(int) - original[:, left:left + 64]).mean() > 1


def test_the_model_runs_in_float16_on_cuda_and_float32_on_cpu(monkeypatch):
    from taocache.cli.edit import device_and_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_and_dtype(None) == ("cpu", torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_and_dtype(None) == ("cuda", torch.float16)
    assert device_and_dtype("cpu") == ("cpu", torch.float32)
    assert device_and_dtype("cuda:1") == ("cuda:1", torch.float16)
    with pytest.raises(ValueError, match="device"):
        device_and_dtype("toaster")

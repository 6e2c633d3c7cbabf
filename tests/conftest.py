"""Shared test settings: never reach a hub, keep runs deterministic."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (its timings and results do not depend on the machine's cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def wan():
    """A tiny random-weight WanPipeline (one torch thread, no progress bars), shared by a test module."""
    from taocache.testing import tiny_wan_pipeline

    torch.set_num_threads(1)
    pipe = tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A Stable Diffusion-layout folder (model_index.json and one folder per component) of the tiny random
    image pipeline, built once for the editing tests."""
    from taocache.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("sd-layout")
    tiny_sd_pipeline().save_pretrained(folder)
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
    return folder

import json

import pytest
import torch

from taocache.recipes import Recipe, find_recipe, list_recipes, load_pipeline, with_call
from taocache.testing import tiny_wan_pipeline


def test_every_shipped_recipe_loads_and_names_its_setting():
    recipes = {r.name: r for r in list_recipes()}
    for name in ("tiny-t2v", "tiny-t2i", "wan2.1-t2v-1.3b", "latte-1", "opensora-plan-v1.1.0", "sd-1.4", "sd-1.5"):
        assert name in recipes
    wan = recipes["wan2.1-t2v-1.3b"]
    assert wan.call_kwargs()["num_frames"] == 81 and wan.scheduler["flow_shift"] == 8.0
    assert recipes["tiny-t2v"].call_kwargs(num_inference_steps=20, height=None)["num_inference_steps"] == 20
    assert recipes["tiny-t2v"].call_kwargs(height=None)["height"] == 64


def test_defaults_and_lookup_forms(tmp_path):
    assert find_recipe(None, "video").name == "tiny-t2v"
    assert find_recipe(None, "image").name == "tiny-t2i"
    assert find_recipe("latte-1").pipeline == "LattePipeline"
    hub = find_recipe("someone/some-model")
    assert hub.model == "someone/some-model" and hub.call == {}
    with pytest.raises(FileNotFoundError, match="unknown model"):
        find_recipe("no-such-recipe")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        find_recipe(str(tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n")
    with pytest.raises(ValueError, match="lacks"):
        find_recipe(str(bad))
    bad.write_text("name = [\n")
    with pytest.raises(ValueError, match="cannot read recipe"):
        find_recipe(str(bad))


def test_recipe_validation():
    with pytest.raises(ValueError, match="kind="):
        Recipe(name="x", model="y", pipeline="WanPipeline", kind="audio")
    with pytest.raises(ValueError, match="dtype="):
        Recipe(name="x", model="y", pipeline="WanPipeline", dtype="int8")


def test_external_recipe_explains_the_module_path():
    with pytest.raises(ValueError, match="taocache.enable"):
        load_pipeline("opensora-plan-v1.1.0")


def test_load_pipeline_from_a_local_folder_with_a_recipe_file(tmp_path):
    folder = tmp_path / "tiny-wan"
    tiny_wan_pipeline().save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    recipe_file = tmp_path / "mine.toml"
    recipe_file.write_text(
        f'name = "mine"\nmodel = "{folder}"\npipeline = "WanPipeline"\n'
        "[call]\nheight = 32\nwidth = 32\nnum_frames = 5\nnum_inference_steps = 3\nmax_sequence_length = 16\n"
        '[scheduler]\nflow_shift = 5.0\n'
    )
    pipe, recipe = load_pipeline(str(recipe_file))
    assert pipe.scheduler.config.flow_shift == 5.0
    assert pipe.transformer.dtype == torch.float32
    out = pipe("a small red circle moves left on a dark background", output_type="np",
               generator=torch.Generator().manual_seed(0), **with_call(recipe, guidance_scale=1.0).call)
    assert out.frames.shape == (1, 5, 32, 32, 3)
    pipe2, recipe2 = load_pipeline(str(folder))
    assert recipe2.name == "tiny-wan" and recipe2.kind == "video"
    assert recipe2.model == str(folder.resolve())  # where it came from, whatever the working folder

    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text(recipe_file.read_text().replace("[scheduler]", "[schedular]"))
    with pytest.raises(ValueError, match="unknown key"):
        load_pipeline(str(misspelt))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(recipe_file.read_text().replace("flow_shift = 5.0", 'class = "NoSuchScheduler"'))
    with pytest.raises(ValueError, match="not a diffusers scheduler"):
        load_pipeline(str(unknown))


def test_editing_samples_each_image_model_at_its_recipe_guidance():
    """Edits are sampled at the guidance the model draws with (tiny-t2i's squares bend at 7.5)."""
    from taocache.edit.config import MODEL_DEFAULTS, EditConfig, default_config

    for name in ("tiny-t2i", "sd-1.4", "sd-1.5"):
        recipe = find_recipe(name, "image")
        assert default_config(name).guidance_scale == recipe.call["guidance_scale"], name
    assert set(MODEL_DEFAULTS) <= {r.name for r in list_recipes()}
    assert default_config("unknown-model") == EditConfig()

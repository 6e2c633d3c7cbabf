"""Fitting TeaCache's rescaling polynomial: the pairs, the fit, the file and the `fit-teacache` command."""

import json

import numpy as np
import pytest
import torch

from taocache.teacache import TeaCacheConfig, TeaCacheRecord, apply_teacache, remove_teacache, teacache_stats
from taocache.teacache.fit import (
    change_pairs,
    coefficient_file_content,
    fit_polynomial,
    fit_teacache,
    write_coefficient_file,
)

CALL = {
    "height": 32,
    "width": 32,
    "num_frames": 9,
    "guidance_scale": 5.0,
    "max_sequence_length": 16,
    "num_inference_steps": 8,
}
PROMPTS = [
    "a large red circle moves left on a dark background",
    "a small blue square moves up on a light background",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def record(step, indicator, output, residual=None, context="cond"):
    return TeaCacheRecord(context, step, len(indicator or [0]), True, indicator, output, residual)


def test_change_pairs_leave_out_the_warmup_and_incomplete_steps():
    records = [
        record(0, None, None),
        record(1, [0.1, 0.2], [1.0, 2.0], [5.0, 6.0]),
        record(2, [0.3, 0.4], [3.0, 4.0], [7.0, 8.0]),
        record(3, [0.5], None),
    ]
    x, y = change_pairs(records, "output", warmup_steps=1)
    np.testing.assert_allclose(x, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(y, [1.0, 2.0, 3.0, 4.0])
    x, y = change_pairs(records, "residual", warmup_steps=2)
    np.testing.assert_allclose(x, [0.3, 0.4])
    np.testing.assert_allclose(y, [7.0, 8.0])
    with pytest.raises(ValueError, match="target"):
        change_pairs(records, "latents")


def test_fit_polynomial_recovers_a_known_polynomial():
    x = np.linspace(0.01, 0.3, 40)
    coefficients, r2, rmse = fit_polynomial(x, np.polyval([20.0, -3.0, 0.5], x), degree=2)
    np.testing.assert_allclose(coefficients, [20.0, -3.0, 0.5], rtol=1e-6, atol=1e-9)
    assert r2 == pytest.approx(1.0) and rmse < 1e-9
    with pytest.raises(ValueError, match="degree-4"):
        fit_polynomial(x[:4], x[:4], degree=4)
    repeated = np.repeat(x[:3], 4)  # twelve points, three places: both guidance branches share the indicator
    with pytest.raises(ValueError, match="3 distinct"):
        fit_polynomial(repeated, repeated, degree=4)


def test_fit_on_full_runs_gives_a_file_teacache_loads(wan, tmp_path):
    fit = fit_teacache(wan, PROMPTS, CALL, degree=4, batch_size=2)
    # 2 prompts x 2 guidance branches x the 3 of 8 steps after the default warm-up of 5
    assert fit.num_points == 12 and fit.warmup_steps == 5
    assert fit.indicator == "modulated_input" and fit.target == "residual" and fit.step_counts == [8]
    assert len(fit.coefficients) == 5 and all(np.isfinite(fit.coefficients))
    assert fit.r2 <= 1.0 and 0 < fit.indicator_range[0] <= fit.indicator_range[1]

    path = tmp_path / "tiny-teacache.json"
    content = coefficient_file_content(fit, wan, CALL, model="tiny", num_prompts=len(PROMPTS))
    write_coefficient_file(path, content)
    stored = json.loads(path.read_text())
    assert stored["transformer_class"] == "WanTransformer3DModel"
    assert stored["scheduler"] == "UniPCMultistepScheduler" and stored["num_inference_steps"] == [8]
    with pytest.raises(FileExistsError):
        write_coefficient_file(path, content)

    config = TeaCacheConfig.from_file(path, rel_l1_thresh=0.2)
    assert config.warmup_steps == 5
    assert list(config.coefficients) == pytest.approx(fit.coefficients)
    apply_teacache(wan.transformer, config)
    try:
        frames = wan(PROMPTS[0], generator=torch.Generator().manual_seed(0), output_type="np", **CALL).frames
        assert np.isfinite(frames).all() and set(teacache_stats(wan.transformer)) == {"cond", "uncond"}
    finally:
        remove_teacache(wan.transformer)


def test_fit_teacache_command_writes_and_refuses_to_overwrite(wan, tmp_path, capsys):
    from taocache.cli import main

    folder = tmp_path / "tiny-wan"
    wan.save_pretrained(folder)
    recipe = tmp_path / "tiny-wan.toml"
    recipe.write_text(
        f'name = "tiny-wan"\nmodel = "{folder}"\npipeline = "WanPipeline"\nkind = "video"\n\n[call]\n'
        + "".join(f"{k} = {v}\n" for k, v in CALL.items())
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    output = tmp_path / "fitted.json"
    argv = [
        "fit-teacache",
        "--model",
        str(recipe),
        "--prompts-file",
        str(prompts),
        "--steps",
        "4",
        "6",
        "--warmup",
        "1",
        "--degree",
        "3",
        "--output",
        str(output),
    ]
    assert main(argv) == 0
    config = TeaCacheConfig.from_file(output)
    assert len(config.coefficients) == 4 and json.loads(output.read_text())["num_inference_steps"] == [4, 6]
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["fit-teacache", "--model", str(recipe), "--prompts-file", str(tmp_path / "none.txt")]) == 2

"""Quality-budget tuning and cache configuration files, on a tiny random Wan pipeline."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import taocache
from taocache import tuning as tune_module
from taocache.cli import main
from taocache.configs import load_configs, save_configs
from taocache.teacache import ModelMatch, TeaCacheConfig, teacache_stats
from taocache.tuning import Candidate, Targets, tune

CALL = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 8, "guidance_scale": 5.0,
        "max_sequence_length": 16}
SEARCH = ["a large red circle moves left on a dark background", "a small blue square moves up on a light background"]
CHECK = ["a large green triangle moves down on a dark background", "a small yellow circle moves right on a light background"]


def _small_grid(monkeypatch, budgets=(0.05, 50.0)):
    """A grid of two TaoCache settings and one stacked one, with raw-change TeaCache coefficients."""
    monkeypatch.setattr(
        tune_module, "TAOCACHE_GRID", {"error_budget": budgets, "max_consecutive": (3,), "start_fraction": (0.2,)}
    )
    monkeypatch.setattr(
        tune_module, "STACKED_TAOCACHE_GRID", {"error_budget": (50.0,), "max_consecutive": (3,), "start_fraction": (0.2,)}
    )
    monkeypatch.setattr(tune_module, "TEACACHE_THRESHOLDS", (0.5,))
    monkeypatch.setattr(tune_module, "_teacache_base", lambda pipe: TeaCacheConfig(coefficients=[1.0, 0.0]))


@pytest.fixture
def small_grid(monkeypatch):
    _small_grid(monkeypatch)


@pytest.fixture(scope="module")
def loose(wan):
    """One search with a loose target, shared by the tests that read it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _small_grid(monkeypatch)
        return tune(wan, SEARCH, CHECK, target_psnr=1.0, call_kwargs=CALL, progress=False)


def run(pipe, prompt, seed):
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **CALL).frames[0]


def test_targets_need_one_sensible_value():
    with pytest.raises(ValueError, match="at least one target"):
        Targets()
    with pytest.raises(ValueError, match="target_ssim"):
        Targets(ssim=1.5)
    assert Targets(psnr=30).met({"psnr": 31.0, "ssim": 0.5}) and not Targets(psnr=30).met({"psnr": 29.0, "ssim": 1})


def test_loose_target_picks_the_cheapest_candidate_and_checks_it(wan, loose):
    assert len(loose.candidates) == 3 and any(len(c.configs) == 2 for c in loose.candidates)
    assert loose.chosen is min(loose.candidates, key=lambda c: c.cost)
    assert loose.chosen.cost < 1.0 and loose.chosen.speedup > 1.0
    assert [row["prompt"] for row in loose.check] == CHECK and loose.check_pass_rate == 1.0
    for candidate in loose.candidates:  # the worst case is the minimum over the search prompts
        assert candidate.worst["psnr"] == min(row["psnr"] for row in candidate.per_prompt)
    assert not taocache.api.active_caches(wan)  # nothing left on the pipeline


def test_stacked_cost_counts_teacache_skips(loose):
    stacked = next(c for c in loose.candidates if len(c.configs) == 2)
    alone = next(c for c in loose.candidates if len(c.configs) == 1 and c.configs[0].error_budget == 50.0)
    assert stacked.cost < alone.cost  # TeaCache skipped some of the calls TaoCache computed


def test_a_target_only_the_plain_pipeline_meets_chooses_nothing(wan, monkeypatch):
    _small_grid(monkeypatch, budgets=(1e-9, 50.0))
    cautious = tune(wan, SEARCH[:1], [], target_psnr=400.0, call_kwargs=CALL, progress=False, stack=False)
    skipped_nothing = [c for c in cautious.candidates if c.cost == 1.0]
    assert skipped_nothing and cautious.chosen is None  # meeting it by skipping nothing is no configuration
    with pytest.raises(ValueError, match="margin_db"):
        tune(wan, SEARCH[:1], [], target_psnr=20.0, call_kwargs=CALL, progress=False, margin_db=float("nan"))
    _small_grid(monkeypatch, budgets=(50.0,))
    result = tune(wan, SEARCH[:1], CHECK, target_psnr=400.0, call_kwargs=CALL, progress=False, stack=False)
    assert result.chosen is None and result.check == []
    with pytest.raises(ValueError, match="no configuration met"):
        result.configs


def test_default_grid_tries_both_predictors_and_calibrates_on_fifty_steps(loose):
    names = [c.name for c in tune_module.default_candidates(None, None, stack=False)]
    assert any("predictor=reuse" in n for n in names) and any("predictor=geometric" in n for n in names)
    assert loose.chosen.configs[-1].calibration.steps == 50  # for the 8-step call, resampled


def test_saved_configuration_reproduces_the_chosen_run(wan, loose, tmp_path):
    path = loose.save(tmp_path / "tuned.json")
    data = json.loads(path.read_text())
    assert data["tuned"]["targets"] == {"psnr": 1.0} and data["tuned"]["check"]["prompts"] == 2
    assert (tmp_path / "tuned.calibration.json").is_file()
    with pytest.raises(FileExistsError):
        loose.save(path)
    taocache.enable(wan, loose.configs)
    try:
        expected = run(wan, CHECK[0], 5)
    finally:
        taocache.disable(wan)
    taocache.enable(wan, str(path))
    try:
        np.testing.assert_array_equal(run(wan, CHECK[0], 5), expected)
    finally:
        taocache.disable(wan)


def test_bad_requests_are_refused_before_any_run(wan):
    with pytest.raises(ValueError, match="overlap"):
        tune(wan, SEARCH, SEARCH[:1], target_psnr=20, call_kwargs=CALL, progress=False)
    with pytest.raises(ValueError, match="LPIPS"):
        tune(wan, SEARCH, CHECK, target_lpips=0.1, call_kwargs=CALL, progress=False)
    with pytest.raises(ValueError, match="search_prompts is empty"):
        tune(wan, [], CHECK, target_psnr=20, call_kwargs=CALL, progress=False)
    taocache.enable(wan)
    try:
        with pytest.raises(ValueError, match="already enabled"):
            tune(wan, SEARCH, CHECK, target_psnr=20, call_kwargs=CALL, progress=False)
    finally:
        taocache.disable(wan)


def test_config_file_round_trip_with_teacache_binding(wan, tmp_path):
    match = ModelMatch("WanTransformer3DModel", {"num_layers": 2}, source="test")
    configs = [
        TeaCacheConfig(rel_l1_thresh=0.2, coefficients=[1.0, 0.0], model_match=match),
        taocache.TaoCacheConfig(error_budget=0.3, max_consecutive=2),
    ]
    path = save_configs(tmp_path / "c.json", configs)
    loaded = load_configs(path)
    assert [type(c) for c in loaded] == [TeaCacheConfig, taocache.TaoCacheConfig]
    assert loaded[0].model_match == match and loaded[0].coefficients == (1.0, 0.0)
    assert loaded[1].error_budget == 0.3 and loaded[1].max_consecutive == 2
    assert loaded[1].weigh_by_step is True


def test_a_calibration_path_given_relative_to_the_working_folder_survives_the_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cal.json").write_text("{}")
    path = save_configs("out/tuned.json", taocache.TaoCacheConfig(calibration="cal.json"))
    (loaded,) = load_configs(path)
    assert Path(loaded.calibration).resolve() == (tmp_path / "cal.json").resolve()


def test_config_file_written_before_step_weighting_keeps_it_off(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"format": "taocache.cache-config", "version": 1, "caches": '
                    '[{"type": "TaoCacheConfig", "predictor": "linear", "error_budget": 0.4}]}')
    (config,) = load_configs(path)
    assert config.weigh_by_step is False and config.predictor == "linear"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a taocache cache configuration"),
        ('{"format": "taocache.cache-config", "version": 9, "caches": []}', "version 9"),
        ('{"format": "taocache.cache-config", "version": 1, "caches": [{"type": "Magic"}]}', "Magic"),
        ('{"format": "taocache.cache-config", "version": 1, "caches": [{"type": "TaoCacheConfig", "speed": 2}]}',
         "speed"),
        ('{"format": "taocache.cache-config", "version": 1, "caches": []}', "lists no caches"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_configs(path)
    with pytest.raises(FileNotFoundError, match="taocache tune"):
        load_configs(tmp_path / "missing.json")


def test_tune_command_writes_a_file_enable_accepts(wan, small_grid, tmp_path, capsys):
    wan.save_pretrained(tmp_path / "tiny")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        f'name = "tiny-test"\nmodel = "{tmp_path / "tiny"}"\npipeline = "WanPipeline"\nkind = "video"\n'
        "[call]\nheight = 32\nwidth = 32\nnum_frames = 5\nnum_inference_steps = 8\nguidance_scale = 5.0\n"
        "max_sequence_length = 16\n"
    )
    output = tmp_path / "tuned.json"
    args = ["tune", "--model", str(recipe), "--target-psnr", "1", "--search-prompts", "1", "--check-prompts", "2",
            "--output", str(output)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "held-out check: target met on 2 of 2 prompts" in text and output.is_file()
    assert main(args) != 0  # refuses to overwrite without --force
    assert isinstance(load_configs(output)[-1], taocache.TaoCacheConfig)
    assert main(["tune", "--model", str(recipe), "--output", str(tmp_path / "x.json")]) != 0  # no target


def test_teacache_config_is_exported_and_stackable_in_any_import_order(wan):
    assert taocache.TeaCacheConfig is TeaCacheConfig
    taocache.enable(wan, [taocache.TeaCacheConfig(rel_l1_thresh=0.3, coefficients=[1.0, 0.0]), taocache.TaoCacheConfig()])
    try:
        run(wan, SEARCH[0], 0)
        assert sum(c["computed"] for c in teacache_stats(wan.transformer).values()) > 0
        combined = taocache.stats(wan)  # one record: TaoCache's, and what TeaCache did inside it
        assert combined.stacked["TeaCache"]["transformer"] == teacache_stats(wan.transformer)
        assert "TeaCache (stacked)" in str(combined) and combined.as_dict()["stacked"] == combined.stacked
    finally:
        taocache.disable(wan)


def test_candidate_speedup_is_the_inverse_cost():
    assert Candidate("x", [], cost=0.5).speedup == 2.0


def test_pyramid_attention_broadcast_stacks_through_enable(wan):
    from diffusers import PyramidAttentionBroadcastConfig

    reference = run(wan, SEARCH[0], 0)
    pab = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(0, 1000),
        current_timestep_callback=lambda: wan.current_timestep,
    )
    taocache.enable(wan, [pab, taocache.TaoCacheConfig()])
    try:
        assert wan.transformer._diffusers_hook._hook_order[-1] == "taocache"  # TaoCache stays outermost
        cached = run(wan, SEARCH[0], 0)
        assert not np.array_equal(cached, reference) and np.isfinite(cached).all()
        assert taocache.stats(wan).stacked["PyramidAttentionBroadcast"] == {"transformer": "on"}
    finally:
        taocache.disable(wan)
    assert wan.transformer._cache_config is None
    np.testing.assert_array_equal(run(wan, SEARCH[0], 0), reference)


def test_a_diffusers_cache_enabled_by_hand_survives_disable(wan):
    from diffusers import FirstBlockCacheConfig

    wan.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    try:
        taocache.enable(wan)
        taocache.disable(wan)
        assert isinstance(wan.transformer._cache_config, FirstBlockCacheConfig)
    finally:
        wan.transformer.disable_cache()

"""Without a pipeline: sweep and prompt files, the sharding of jobs over processes, the probe."""

import pytest

from taocache.bench.records import append_record, merge_shards, read_records, shard_jobs, shard_path
from taocache.bench.sweep import load_sweep, read_prompts, spread, world_prompts


def test_shipped_sweeps_load(tmp_path):
    for name in ("default", "smoke", "t2v-20", "t2v-50"):
        sweep = load_sweep(name)
        assert sweep.methods and all(m.name != "full" for m in sweep.methods)
    t2v20 = load_sweep("t2v-20")
    assert t2v20.call == {"num_inference_steps": 20}
    assert {m.series for m in t2v20.methods} >= {"steps", "taocache", "taocache-linear", "magcache"}


def test_grid_expands_and_selection_filters(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[method]]\nname = "magcache"\ngrid = { threshold = [0.1, 0.2], max_skip_steps = [2, 3] }\n'
        '[[method]]\nname = "steps"\nsettings = [{ steps = 4 }]\n'
    )
    sweep = load_sweep(path)
    assert len(sweep.methods) == 5
    assert {m.settings["threshold"] for m in sweep.methods if m.name == "magcache"} == {0.1, 0.2}
    assert [m.label for m in sweep.select(["steps"]).methods] == ["steps steps=4"]
    with pytest.raises(ValueError, match="not in sweep"):
        sweep.select(["pab"])


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[method]]\nname = "nope"\n', "unknown method"),
        ('[[method]]\nname = "fbcache"\nsettings = [{ thresh = 1 }]\n', "no setting"),
        ('[[method]]\nname = "full"\n', "reference"),
        ("[[method]]\nsettings = []\n", "no name"),
        ("methods = 1\n", "unknown top-level"),
        ('description = "x"\n', "no \\[\\[method\\]\\]"),
        ("[[method]\n", "not valid TOML"),
        ('[run]\nnum_promts = 2\n[[method]]\nname = "steps"\n', "unknown \\[run\\] key"),
        ('[run]\nrepeats = "3"\n[[method]]\nname = "steps"\n', "repeats"),
        ('[run]\nseeds = 5\n[[method]]\nname = "steps"\n', "seeds"),
        ('[[method]]\nname = "steps"\nsettings = 5\n', "list of tables"),
        ("[[method]]\nname = 3\n", "no name"),
    ],
)
def test_bad_sweeps_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sweep(path)


def test_missing_sweep_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="smoke"):
        load_sweep("no-such-sweep")


def test_prompt_files_and_spread(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# comment\nfirst prompt\n\nsecond prompt\n")
    assert read_prompts(path) == ["first prompt", "second prompt"]
    assert read_prompts("world-test-video") == world_prompts("video")
    from taocache.world import scenes_of

    for kind, video in (("video", True), ("image", False)):
        for name in ("tune", "test"):
            assert read_prompts(f"world-{name}-{kind}") == [s.caption for s in scenes_of(name, video)]
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread([1, 2], 5) == [1, 2]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_sharding_covers_every_job_once():
    jobs = list(range(11))
    shards = [shard_jobs(jobs, i, 3) for i in range(3)]
    assert sorted(job for shard in shards for job in shard) == jobs
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError):
        shard_jobs(jobs, 3, 3)


def test_merge_moves_shard_records_into_one_file(tmp_path):
    results = tmp_path / "results.jsonl"
    append_record(results, {"type": "run", "key": "a", "method": "steps", "status": "ok"})
    append_record(shard_path(results, 0), {"type": "session", "key": "s0"})
    append_record(shard_path(results, 0), {"type": "run", "key": "b", "method": "steps", "status": "ok"})
    append_record(shard_path(results, 1), {"type": "session", "key": "s1"})
    append_record(shard_path(results, 1), {"type": "run", "key": "c", "method": "steps", "status": "ok"})
    append_record(shard_path(results, 1), {"type": "run", "key": "a", "method": "steps", "status": "ok"})  # already merged
    assert merge_shards(results) == 4
    keys = [r["key"] for r in read_records(results)]
    assert sorted(keys) == ["a", "b", "c", "s0", "s1"]
    assert not list(tmp_path.glob("*.shard-*"))
    assert merge_shards(results) == 0


def test_probe_counts_work_and_finds_steps_without_a_step_callback():
    import torch
    from diffusers import DiffusionPipeline

    from taocache.bench.probe import DenoiserProbe

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(4, 6)
            self.outer = torch.nn.Linear(6, 4)

        def forward(self, x, timestep=None, skip=False):
            return x if skip else self.outer(self.inner(x))

    class Pipe(DiffusionPipeline):  # no callback_on_step_end: steps are told apart by the timestep
        def __init__(self):
            super().__init__()
            self.register_modules(transformer=Denoiser())

        def __call__(self, steps):
            x = torch.zeros(3, 4)
            for t in range(steps, 0, -1):
                for branch in range(2):
                    self.transformer(x, timestep=torch.tensor([float(t)]), skip=branch == 1 and t % 2 == 0)

    pipe = Pipe()
    probe = DenoiserProbe(pipe, count_work=True)
    assert probe.call_kwargs() == {}
    with probe.attached():
        pipe(4)
    trace = probe.finish()
    full = 2 * (3 * (4 * 6) + 3 * (6 * 4))  # a multiply and an add per row and weight, per linear layer
    assert trace.calls == 8 and trace.step_flops == [[full, 0], [full, full], [full, 0], [full, full]]
    assert trace.loop_seconds > 0 and len(trace.step_seconds) == 4
    with probe.attached():
        pass
    assert not pipe.transformer._forward_hooks and not pipe.transformer.inner._forward_hooks


def test_the_work_count_includes_attention():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from taocache.bench.probe import flop_counter

    q = torch.randn(1, 2, 16, 8)
    with flop_counter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * 2 * (16 * 16 * 8) * 2  # two batched matrix products of 2 heads
    with FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert plain.get_total_flops() <= counter.get_total_flops()

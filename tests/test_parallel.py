"""The context-parallel helpers in a single process: each is a no-op there, and the set-up refuses degrees
that do not fit with the reason (the two-process runs are in tests/test_context_parallel.py)."""

import pytest
import torch

from taocache.core import parallel


def test_single_process_helpers_do_nothing_collective():
    assert not parallel.distributed() and parallel.is_first_rank()
    assert parallel.context_parallel_group(torch.nn.Linear(2, 2)) is None
    assert parallel.first_rank_value({"a": 1}) == {"a": 1}
    parallel.check_same_on_every_rank([1, 2], "numbers")
    assert parallel.on_first_rank(lambda: "written", "write") == "written"
    with pytest.raises(OSError, match="full"):
        parallel.on_first_rank(lambda: (_ for _ in ()).throw(OSError("disk full")), "write")
    total = torch.ones(3)
    assert parallel.sum_over(total, None) is total and total.tolist() == [1, 1, 1]


def test_a_lone_process_gets_its_usual_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel.start_from_environment() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not torch.distributed.is_initialized()


def test_degrees_must_fit_the_processes(wan):
    with pytest.raises(ValueError, match=r"Ulysses degree 2 x ring degree 1 must equal the number of processes \(1\)"):
        parallel.enable_context_parallel(wan, ulysses_degree=2)
    with pytest.raises(ValueError, match="must equal"):
        parallel.enable_context_parallel(wan, ulysses_degree=0)


def test_rel_l1_is_the_same_with_and_without_a_group_of_one():
    """The reduced form (sums added over the ranks, then divided) is the mean form's value."""
    from taocache.teacache.indicators import per_sample_rel_l1

    current, previous = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    plain = per_sample_rel_l1(current, previous, 2)
    if not torch.distributed.is_gloo_available():
        pytest.skip("needs the gloo backend for a group of one")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        reduced = per_sample_rel_l1(current, previous, 2, torch.distributed.group.WORLD)
    finally:
        torch.distributed.destroy_process_group()
    assert reduced == pytest.approx(plain, rel=1e-6)


def test_diffusers_caches_under_context_parallelism_are_warned_about(caplog, monkeypatch):
    from types import SimpleNamespace

    from diffusers import FirstBlockCacheConfig

    import taocache
    from taocache.testing import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    mesh = SimpleNamespace(context_parallel_config=SimpleNamespace(_flattened_mesh=object()))
    monkeypatch.setattr(pipe.transformer, "_parallel_config", mesh, raising=False)
    with caplog.at_level("WARNING", logger="taocache"):
        taocache.enable(pipe, [FirstBlockCacheConfig(threshold=0.1)])
    taocache.disable(pipe)
    assert "FirstBlockCache under context parallelism is not supported" in caplog.text

"""Every cache under diffusers' context parallelism: two CPU processes over gloo, Ulysses degree 2, the tiny
Wan pipeline, against the same runs in one process (tests/context_parallel_runs.py makes them all).

A rank deciding differently from the others would hang or corrupt the video, so the ranks vote on every
decision as it is made. TeaCache decides from a shard of the sequence on each rank: the split case puts its
threshold between the two ranks' own changes, where only the sum over the ranks keeps them together; with
that sum taken out the same case must split them (the negative control).
"""

import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)

import context_parallel_runs as runs

from taocache.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
CACHES = ("taocache", "teacache", "stack")
#: Frames of the parallel cached run against the single-process cached run (values in [0, 1]). Measured:
#: bitwise equal (infinite PSNR). The margin admits rounding-level differences of other CPUs and BLAS builds
#: (a float32 difference of 1e-6 is 120 dB) and nothing a different decision causes: one more predicted or
#: skipped step moves these frames by 60 to 80 dB.
MIN_PSNR_DB = 100.0
#: Seconds the two ranks may take together (about 30 s on an idle laptop CPU).
DEADLINE_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def measured():
    """(rank 0's results, rank 1's, the single process's); the ranks run while this process makes its own."""
    with tempfile.TemporaryDirectory(prefix="taocache-cp-") as tmp:
        workdir = Path(tmp)
        (workdir / "single").mkdir()
        env = {
            **os.environ,
            "TAOCACHE_CALIBRATION_DIR": str(workdir / "calibrations"),  # none found: TaoCache calibrates itself
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(runs.ULYSSES),
        }
        script = str(Path(runs.__file__).resolve())
        ranks = [
            subprocess.Popen(
                [sys.executable, script, str(workdir)],
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(runs.ULYSSES)
        ]
        try:
            with mock.patch.dict(os.environ, {"TAOCACHE_CALIBRATION_DIR": env["TAOCACHE_CALIBRATION_DIR"]}):
                threads = torch.get_num_threads()
                try:
                    single = runs.run_all(runs.build_pipeline(), None, workdir / "single")
                finally:
                    torch.set_num_threads(threads)
            logs = [p.communicate(timeout=DEADLINE_S)[0] for p in ranks]
        finally:
            for p in ranks:
                if p.poll() is None:
                    p.kill()
        for r, (p, log) in enumerate(zip(ranks, logs)):
            assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
        ranks = [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(runs.ULYSSES)]
        yield ranks[0], ranks[1], single


@pytest.mark.parametrize("name", CACHES)
def test_ranks_make_the_same_decisions_as_the_single_process(measured, name):
    first, second, single = (m[name] for m in measured)
    assert first["error"] is None and second["error"] is None, (first["error"], second["error"])
    assert first["decisions"] == second["decisions"] == single["decisions"]
    letters = "".join(first["decisions"].values())
    assert "C" in letters  # and it cached something, or the comparison says nothing:
    if name in ("taocache", "stack"):
        assert "P" in letters, first["decisions"]
    if name in ("teacache", "stack"):
        assert "S" in letters, first["decisions"]


@pytest.mark.parametrize("name", ("none", *CACHES))
def test_frames_are_identical_across_ranks_and_match_the_single_process(measured, name):
    first, second, single = (m[name]["frames"] for m in measured)
    assert np.array_equal(first, second)
    assert psnr(first, single) >= MIN_PSNR_DB, psnr(first, single)


def test_teacache_decides_on_the_whole_sequence(measured):
    """The change each rank decides on is the single process's, not its own shard's."""
    first, second, single = (m["measured"]["log"] for m in measured)
    assert len(first) == len(second) == len(single) == 2 * runs.STEPS
    for a, b, s in zip(first, second, single):
        assert a["change"] == b["change"]
        if s["change"] is not None:
            assert math.isclose(a["change"], s["change"], rel_tol=1e-5), (a, s)
    assert any(a["local_change"] != b["local_change"] for a, b in zip(first, second) if a["local_change"])


def test_the_sum_over_ranks_keeps_ranks_together_where_their_shards_split_them(measured):
    split = measured[0]["split"]
    low, high = sorted(split["local_changes"])
    assert low < split["threshold"] < high, "the ranks' own changes are equal: the case splits nothing"
    for rank in measured[:2]:
        assert rank["split"]["reduced"]["error"] is None, rank["split"]["reduced"]["error"]
    assert measured[0]["split"]["reduced"]["decisions"] == measured[1]["split"]["reduced"]["decisions"]
    # negative control: without the sum the same case splits the ranks at that very step
    for rank in measured[:2]:
        error = rank["split"]["unreduced"]["error"] or ""
        assert error.startswith("ranks disagree at TeaCache cond step 1"), error


def test_caches_enabled_before_parallelism_decide_alike(measured):
    for rank in measured[:2]:
        first, usual = rank["enabled_first"], rank["stack"]
        assert first["error"] is None, first["error"]
        assert first["decisions"] == usual["decisions"]
        assert np.array_equal(first["frames"], usual["frames"])


def test_automatic_calibration_is_the_same_on_every_rank(measured):
    digests = {m["taocache"]["calibration"] for m in measured}
    assert len(digests) == 1 and None not in digests


def test_calibrate_writes_once_the_same_content_on_every_rank(measured):
    first, second, single = (m["calibrate"] for m in measured)
    assert (first["writes"], second["writes"]) == (1, 0)
    assert first["content"] == second["content"]  # creation time included: rank 0's
    assert first["file"] == second["file"]  # both read back the one file
    assert first["source"] == second["source"]
    assert first["statistics"] == second["statistics"] == single["statistics"]
    assert measured[0]["stack"]["calibration"] == first["statistics"]


def test_a_configuration_file_is_written_once_and_read_by_every_rank(measured):
    first, second, _ = (m["save_configs"] for m in measured)
    assert (first["writes"], second["writes"]) == (1, 0)  # the calibration beside it, by rank 0
    assert first["files"] == second["files"] == ["configs.calibration.json", "configs.json"]
    assert first["loaded"] == second["loaded"] == ["TeaCacheConfig", "TaoCacheConfig"]


@pytest.mark.slow
def test_the_calibrate_command_under_torchrun(tmp_path):
    """`taocache calibrate --ulysses-degree 2` on two processes writes once the single process's statistics."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TAOCACHE_CALIBRATION_DIR": str(tmp_path / "calibrations"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = ["-m", "taocache.cli", "calibrate", "--steps", "6", "--num-prompts", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    parallel = subprocess.run(
        [*torchrun, *command, "--ulysses-degree", "2", "--output", str(tmp_path / "parallel.json")],
        env=env, capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    assert parallel.stdout.count("written to") == 1, parallel.stdout  # rank 0 alone writes and prints
    single = subprocess.run(
        [sys.executable, *command, "--output", str(tmp_path / "single.json")],
        env=env, capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    contents = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("parallel", "single")]
    for content in contents:
        del content["created"]
    assert contents[0] == contents[1]

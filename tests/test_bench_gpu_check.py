"""eval/gpu_check.py in its tiny CPU mode: the loop runs, TaoCache keeps the fixed pattern, figures add up."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "gpu_check.py"


def test_tiny_mode_times_full_and_fixed_pattern(tmp_path, capsys):
    import taocache

    if not hasattr(taocache, "enable"):
        pytest.skip("the TaoCache hook is not in this build")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figures.json"
    assert module.main(["--tiny", "--steps", "10", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    # start step ceil(0.2 * 10) = 2, then predicted / computed in turn, the final step computed
    assert figures["pattern"] == "CCPCPCPCPC"
    assert figures["calls"] == 20 and figures["computed"] == 2 * figures["pattern"].count("C")
    assert figures["ideal_speedup"] == pytest.approx(20 / figures["computed"])
    assert len(figures["full_step_s"]) == len(figures["taocache_step_s"]) == 10
    assert "speed-up: measured" in capsys.readouterr().out

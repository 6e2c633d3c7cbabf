"""Recording a TaoCache calibration: the delta statistics of full runs, accumulated per guidance branch,
step, gap and horizon across calls and samples (see :mod:`.calibration` for what they mean)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from .calibration import DEFAULT_HORIZON, FIELDS, TINY, DenoiserCalibration, round_statistic


class CalibrationRecorder:
    """Accumulates the delta statistics from full runs, per guidance branch, across calls and samples."""

    def __init__(self, horizon: int = DEFAULT_HORIZON):
        if not isinstance(horizon, int) or not 1 <= horizon <= 8:
            raise ValueError(f"horizon={horizon!r} must be an integer in [1, 8]")
        self.horizon = horizon
        # (branch, step, gap, horizon) -> running sums [n, cos, cos^2, ratio, ratio^2, gain, gain^2]
        self._sums: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(7))
        self._windows: dict[str, dict[int, torch.Tensor]] = {}
        self.timesteps: dict[int, float] = {}
        self.samples: int = 0
        self._call_samples: dict[str, int] = {}

    def observe(
        self,
        context: str,
        step: int,
        timestep: float | None,
        output: torch.Tensor,
        branches: list[tuple[str, slice]],
    ) -> None:
        """Add the statistics of every (gap, horizon) ending at ``step`` for one computed output."""
        window = self._windows.setdefault(context, {})
        flat = output.detach().flatten(1).float()
        for m in range(1, self.horizon + 1):
            last = window.get(step - m)
            if last is None:
                continue
            target_delta = flat - last
            for g in range(1, self.horizon + 2):
                before = window.get(step - m - g)
                if before is None:
                    continue
                self._add(target_delta, last - before, step, g, m, branches)
        window[step] = flat
        for old in [s for s in window if s < step - 2 * self.horizon - 1]:
            del window[old]
        if timestep is not None:
            self.timesteps.setdefault(step, float(timestep))
        rows = max(len(range(flat.shape[0])[r]) for _, r in branches) if branches else flat.shape[0]
        self._call_samples[context] = rows

    def _add(self, target: torch.Tensor, delta: torch.Tensor, step: int, g: int, m: int, branches) -> None:
        target_norm = target.norm(dim=1)
        delta_norm = delta.norm(dim=1)
        cos = (target * delta).sum(dim=1) / (target_norm * delta_norm).clamp_min(TINY)
        ratio = target_norm / delta_norm.clamp_min(TINY)
        valid = (delta_norm > TINY).tolist()
        cos, ratio = cos.tolist(), ratio.tolist()
        for branch, rows in branches:
            for s in range(len(valid))[rows]:
                if not valid[s]:
                    continue
                gain = ratio[s] * cos[s]
                self._sums[(branch, step, g, m)] += (
                    1,
                    cos[s],
                    cos[s] ** 2,
                    ratio[s],
                    ratio[s] ** 2,
                    gain,
                    gain**2,
                )

    def end_call(self) -> None:
        """Forget the outputs of the call that just ended (its statistics are kept)."""
        if self._call_samples:
            self.samples += max(self._call_samples.values())
        self._call_samples.clear()
        self._windows.clear()

    @property
    def has_data(self) -> bool:
        return bool(self._sums)

    def num_steps(self) -> int:
        return max(self.timesteps) + 1 if self.timesteps else 0

    def schedule(self, steps: int) -> list[float]:
        """The timesteps the recorded calls received (counting down where a call gave none)."""
        return [self.timesteps.get(i, float(steps - i)) for i in range(steps)]

    def build(self, denoiser: str, fp: str, steps: int) -> DenoiserCalibration:
        """Means and spreads per (branch, gap, horizon), as lists over ``steps`` steps."""
        branches: dict[str, dict[tuple[int, int], dict[str, list]]] = {}
        for (branch, step, g, m), s in self._sums.items():
            if step >= steps:
                continue
            tables = branches.setdefault(branch, {}).setdefault((g, m), {f: [None] * steps for f in FIELDS})
            n = s[0]
            for k, name in enumerate(("cos", "ratio", "gain")):
                mean = s[1 + 2 * k] / n
                std = math.sqrt(max(s[2 + 2 * k] / n - mean**2, 0.0))
                tables[f"{name}_mean"][step] = round_statistic(mean)
                tables[f"{name}_std"][step] = round_statistic(std)
        return DenoiserCalibration(denoiser, fp, branches)

"""What TaoCache did during one pipeline call: calls made, computed and predicted, per guidance branch."""

from __future__ import annotations

from dataclasses import dataclass, field

COMPUTED = "C"
PREDICTED = "P"
NOT_CALLED = "."


@dataclass
class BranchStats:
    """One guidance branch of one denoiser: its calls and the decision taken at each step.

    ``decisions`` has one character per step index: ``C`` computed, ``P`` predicted, ``.`` not called
    (for example the steps a Wan2.2 ``transformer_2`` leaves to ``transformer``).
    """

    calls: int = 0
    computed: int = 0
    predicted: int = 0
    decisions: str = ""

    def add(self, step: int, decision: str) -> None:
        self.calls += 1
        if decision == PREDICTED:
            self.predicted += 1
        else:
            self.computed += 1
        if step >= len(self.decisions):
            self.decisions += NOT_CALLED * (step + 1 - len(self.decisions))
        self.decisions = self.decisions[:step] + decision + self.decisions[step + 1:]


@dataclass
class CacheStats:
    """The record of the most recent call of a hooked pipeline or denoiser.

    ``branches`` is keyed by guidance branch (``cond``, ``uncond``, or ``uncond+cond`` when both travel in
    one batched call), prefixed by the component name (``transformer_2/cond``) when a pipeline has more
    than one denoiser. ``notes`` says where the calibration came from and anything unusual in the call.
    ``stacked`` holds what caches stacked under TaoCache report, by name (TeaCache: computed and skipped
    calls per component and branch since it was enabled).
    """

    branches: dict[str, BranchStats] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stacked: dict[str, dict] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(b.calls for b in self.branches.values())

    @property
    def computed(self) -> int:
        return sum(b.computed for b in self.branches.values())

    @property
    def predicted(self) -> int:
        return sum(b.predicted for b in self.branches.values())

    @property
    def ideal_speedup(self) -> float:
        """Calls over computed calls: the speed-up if the denoiser were the only cost and the hook free."""
        return self.calls / self.computed if self.computed else 1.0

    def as_dict(self) -> dict:
        return {
            "calls": self.calls,
            "computed": self.computed,
            "predicted": self.predicted,
            "ideal_speedup": round(self.ideal_speedup, 4),
            "branches": {
                name: {"calls": b.calls, "computed": b.computed, "predicted": b.predicted, "decisions": b.decisions}
                for name, b in self.branches.items()
            },
            "notes": list(self.notes),
            "stacked": dict(self.stacked),
        }

    def __str__(self) -> str:
        lines = [
            (
                f"TaoCache: {self.calls} denoiser calls, {self.computed} computed, {self.predicted} predicted "
                f"(ideal speed-up {self.ideal_speedup:.2f}x)"
            )
        ]
        width = max((len(name) for name in self.branches), default=0)
        for name, b in self.branches.items():
            lines.append(f"  {name:<{width}}  {b.computed:>4} computed {b.predicted:>4} predicted  {b.decisions}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.extend(f"{name} (stacked): {value}" for name, value in self.stacked.items())
        return "\n".join(lines)


def merge(records: dict[str, CacheStats]) -> CacheStats:
    """One record from several denoisers' records; branch names get the component prefix when there are many."""
    if len(records) == 1:
        return next(iter(records.values()))
    merged = CacheStats()
    for component, record in records.items():
        for name, branch in record.branches.items():
            merged.branches[f"{component}/{name}"] = branch
        merged.notes.extend(f"{component}: {note}" for note in record.notes)
    return merged

"""What the editing evaluation edits: held-out scenes of the sample world, each asked to move or to change size,
and the settings of one evaluation run.

Each case renders a scene (of the test split, a caption the embedded model never saw in training; or of the
tune split, for choosing settings) and asks for the same shape elsewhere (move) or at the other size (resize).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from ..world import Scene, scenes_of
from ..world.scenes import POSITIONS, SIZES, SPLITS
from .config import EditConfig

METHOD = "non-rigid"
CACHED = "non-rigid+taocache"
BASELINES = ("ddim-target", "sdedit", "masactrl")
#: Renders scored like edits, read beside them: the target caption drawn with the input's seed (what an edit
#: that keeps everything would give: every flag should pass) and with another seed (a perfect redraw that keeps
#: nothing of the instance: the chance level of the subject and background flags).
REFERENCES = ("reference/same-seed", "reference/redraw")
REDRAW_SEED_OFFSET = 100_000
INVERSION_CHECKS = ("null-text", "negative-prompt", "ddim")
RECONSTRUCTIONS = ("reconstruction/vae",) + tuple(f"reconstruction/{m}" for m in INVERSION_CHECKS)
#: Targets the evaluation checks (see docs/editing.md).
TARGETS = {"reconstruction_psnr": 32.0, "min_cases": 48, "all_kept": 0.85, "background_psnr": 30.0}


@dataclass(frozen=True)
class EditCase:
    """One held-out edit: render ``source`` with ``seed`` and ask for ``target`` (differs in one attribute)."""

    case_id: str
    kind: str  # "move" or "resize"
    source: Scene
    target: Scene
    seed: int


KINDS = ("move", "resize")


def build_cases(count: int, seed: int = 0, scenes: str = "test", kinds=KINDS) -> list[EditCase]:
    """``count`` cases alternating over ``kinds`` from distinct still scenes of the ``scenes`` split, in a fixed
    order. The test split is the evaluation; the tune split is for choosing settings without it."""
    if count < 1:
        raise ValueError(f"cases={count} must be at least 1")
    if scenes not in SPLITS:
        raise ValueError(f"split={scenes!r} must be one of {', '.join(SPLITS)}")
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds={kinds!r} must be a non-empty selection of {', '.join(KINDS)}")
    pool = list(scenes_of(scenes, video=False))
    rng = random.Random(seed)
    rng.shuffle(pool)
    prefix = "" if scenes == "test" else f"{scenes}-"
    cases = []
    for i, scene in enumerate(pool * (1 + count // len(pool))):
        if len(cases) == count:
            break
        kind = kinds[i % len(kinds)]
        if kind == "move":
            others = sorted(p for p in POSITIONS if p != scene.position)
            target = dataclasses.replace(scene, position=rng.choice(others))
        else:
            target = dataclasses.replace(scene, size=next(s for s in SIZES if s != scene.size))
        cases.append(EditCase(f"{prefix}{i:03d}-{kind}", kind, scene, target, seed=1000 + i))
    return cases


@dataclass
class EvalSettings:
    """What one evaluation run does (kept beside the records so that a resumed run cannot mix settings)."""

    cases: int = 48
    config: EditConfig = dataclasses.field(default_factory=EditConfig)
    sweep_alpha: tuple = ()
    sweep_steps_source: tuple = ()
    taocache: bool = False
    seed: int = 0
    split: str = "test"
    kinds: tuple = KINDS
    #: method -> the settings tried on every case, the first being the one reported (None: the defaults of
    #: ``methods.default_settings``, one each; the tuning step passes a grid, the test run the tuned choice).
    methods: dict | None = None
    reconstructions: bool = True

    def __post_init__(self):
        if self.config.steps_source >= self.config.num_steps:
            raise ValueError(
                f"steps_source={self.config.steps_source} leaves none of the {self.config.num_steps} steps to "
                "edit; evaluate with steps_source below num_steps"
            )
        for alpha in self.sweep_alpha:  # sweep values are checked like the config's own
            self.config.with_values(alpha=alpha)
        for steps in self.sweep_steps_source:
            self.config.with_values(steps_source=steps)
        from .methods import check_setting, default_settings

        methods = self.methods if self.methods is not None else {
            m: [s] for m, s in default_settings(self.config).items()}
        if not methods or any(not settings for settings in methods.values()):
            raise ValueError(f"methods={methods!r} must give each method at least one setting")
        self.methods = {m: [check_setting(m, dict(s), self.config) for s in settings]
                        for m, settings in methods.items()}

    def main_setting(self, method: str) -> dict | None:
        """The setting reported for ``method`` (None when it is not run)."""
        return self.methods[method][0] if method in self.methods else None

    def runs(self) -> list[tuple[str, dict, bool]]:
        """(method, setting, is a sweep point) of every edit made per case; the method's alpha x S sweep last."""
        runs = [(m, s, False) for m, settings in self.methods.items() for s in settings]
        if METHOD in self.methods:
            main = self.main_setting(METHOD)
            for steps in self.sweep_steps_source or (main["steps_source"],):
                for alpha in self.sweep_alpha:
                    setting = {"steps_source": steps, "alpha": alpha}
                    if all(setting != s for m, s, _ in runs if m == METHOD):
                        runs.append((METHOD, setting, True))
        return runs

    def cases_to_run(self) -> list[EditCase]:
        return build_cases(self.cases, self.seed, self.split, self.kinds)

    def as_dict(self, model: str, identity: str = "") -> dict:
        return {
            "model": model,
            "model_identity": identity,
            "cases": self.cases,
            "config": dataclasses.asdict(self.config),
            "sweep_alpha": list(self.sweep_alpha),
            "sweep_steps_source": list(self.sweep_steps_source),
            "taocache": self.taocache,
            "seed": self.seed,
            "split": self.split,
            "kinds": list(self.kinds),
            "methods": self.methods,
            "reconstructions": self.reconstructions,
        }

"""The robustness study: train on clean features, evaluate on perturbed ones, at the paper's intensities.

The question a practitioner asks before trusting attribution on images from the web: does it survive
JPEG, resizing, blur and cropping? The paper's code answers it with test-time perturbations (one at a
time, at five intensities, on validation, test and unknown images only) and with training-time random
perturbations. Here:

- each (perturbation, intensity) is a view (:func:`attrib.extract.views.paper_view`), extracted for the
  evaluation rows of the study only (:mod:`attrib.extract.rows_for`), found in the cache when it exists;
- every view is one study (:func:`attrib.probe.study.run_study`) trained on the training feature set and
  evaluated on the view (``eval_fs``), with its own results folder ``OUT/runs/<train>/<condition>/``, so an
  interrupted study resumes and a rerun computes nothing twice;
- the clean condition (no perturbation) is a study too: the dashed line of the plot;
- ``--train-view paper-train-aug`` adds the same studies trained on augmented features (one of the
  paper's four training perturbations per image), so the table shows what augmentation buys.

``OUT/robustness.json`` is the index of those runs (which training and evaluation feature set each
used); :mod:`attrib.probe.robustness_report` turns it into ``robustness.csv``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from attrib import atomic
from attrib.data.splits import SplitSource
from attrib.errors import AttribError
from attrib.jsonio import dumps
from attrib.output_paths import make_folder

if TYPE_CHECKING:
    from attrib.extract.rows_for import Provided
    from attrib.extract.runner import RunConfig
    from attrib.probe.study import StudyConfig
    from attrib.store import FeatureSet

INDEX = "robustness.json"
RUNS = "runs"
CLEAN = "clean"  # the name of the clean condition, and of the clean-trained runs
NONE = "none"  # the clean condition's perturbation and view
INTENSITIES = (1, 2, 3, 4, 5)


class RobustnessError(AttribError, ValueError):
    """A robustness option that cannot be satisfied; the message names the option and the valid values."""


@dataclass(frozen=True)
class Condition:
    """What the evaluation images went through: one perturbation at one intensity (1..5), or none."""

    perturbation: str = NONE
    intensity: int = 0

    @property
    def clean(self) -> bool:
        return self.perturbation == NONE

    @property
    def view(self) -> str:
        """The view spec (``jpeg:26``, ``shortside:352``, ...; ``none`` for the clean condition)."""
        from attrib.extract.views import paper_view

        return NONE if self.clean else paper_view(self.perturbation, self.intensity)

    @property
    def name(self) -> str:
        return CLEAN if self.clean else f"{self.perturbation}-{self.intensity}"


def parse_perturbations(spec: str) -> list[str]:
    """``--perturb``: ``all`` or a comma-separated list of the paper's perturbations, in the order given."""
    from attrib.extract.views import PAPER_INTENSITIES

    names = list(PAPER_INTENSITIES) if spec.strip() == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    bad = [n for n in names if n not in PAPER_INTENSITIES]
    if bad or not names:
        raise RobustnessError(f"--perturb {spec!r}: {', '.join(bad) or 'nothing'} is not a perturbation; use all or "
                              f"a comma-separated list of {', '.join(PAPER_INTENSITIES)}")
    return list(dict.fromkeys(names))


def parse_intensities(spec: str) -> list[int]:
    """``--intensities``: ``all``, ``N``, ``A-B`` or ``A,B,C`` among the paper's levels 1..5, sorted."""
    if spec.strip() == "all":
        return list(INTENSITIES)
    out: list[int] = []
    for tok in (t.strip() for t in spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
        if not m or lo > hi or lo not in INTENSITIES or hi not in INTENSITIES:
            raise RobustnessError(f"--intensities {spec!r}: {tok!r} is not a level; use all, N, A-B or A,B,C with "
                                  "levels 1 to 5 (the paper's five intensities)")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def conditions(perturbations: list[str], intensities: list[int]) -> list[Condition]:
    """The clean condition first, then every (perturbation, intensity)."""
    return [Condition()] + [Condition(p, i) for p in perturbations for i in intensities]


# ----------------------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """The feature sets of a robustness study: one per training condition, one per evaluation condition."""

    train: dict[str, "FeatureSet"]  # "clean", or the training view's spec -> its feature set
    evals: dict[Condition, "FeatureSet"]
    extracted: list["FeatureSet"] = field(default_factory=list)
    images_extracted: int = 0


def prepare(clean: "FeatureSet", source_for: Callable[["FeatureSet"], SplitSource], seeds: int,
            conds: list[Condition], cache: str | os.PathLike, train_view: str | None = None,
            preprocess: str | None = None, run: "RunConfig | None" = None, extract: bool = True,
            log: Callable[[str], None] = lambda msg: None) -> Plan:
    """Find (or extract) every feature set the study needs.

    ``source_for(fs)``: the split source a study draws its rows from on ``fs`` (the probe's options).
    The training view covers ``clean``'s whole image list (training rows are drawn from the training
    set's list); each evaluation view covers the validation and test rows of every training set's
    splits for seeds ``0..seeds-1``. ``preprocess``: of the evaluation features (default: ``clean``'s);
    the clean condition is evaluated on ``clean`` itself when that is the same.
    """
    from attrib.extract.rows_for import eval_rows_targets, provide, whole_set_target
    from attrib.extract.views import View

    plan = Plan({CLEAN: clean}, {})
    if train_view:
        view = View.parse(train_view)
        if not view:
            raise RobustnessError("--train-view none is the clean training features; name a view, e.g. "
                                  "paper-train-aug")
        got = provide(cache, clean, [whole_set_target(clean, view)], run, extract, log)
        _count(plan, got)
        plan.train[view.spec] = got.sets[0]
    # every training set holds clean's image list (whole_set_target), so their rows index the same list
    sources = [source_for(fs) for fs in plan.train.values()]
    pp = preprocess or clean.manifest.preprocess_name
    need = [c for c in conds if not (c.clean and pp == clean.manifest.preprocess_name)]
    targets = eval_rows_targets(clean, sources, seeds, [View.parse(c.view) for c in need], pp) if need else []
    got = provide(cache, clean, targets, run, extract, log)
    _count(plan, got)
    found = dict(zip(need, got.sets))
    plan.evals = {c: found.get(c, clean) for c in conds}
    return plan


def _count(plan: Plan, got: "Provided") -> None:
    plan.extracted.extend(got.extracted)
    plan.images_extracted += got.images_extracted


# ------------------------------------------------------------------------------------------ the runs
@dataclass
class RobustnessRun:
    out: Path
    index: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    skipped_done: int = 0
    errors: list[str] = field(default_factory=list)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", name)


def run_robustness(plan: Plan, config_for: Callable[["FeatureSet"], "StudyConfig"], out_dir: str | os.PathLike,
                   progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> RobustnessRun:
    """One study per (training set, evaluation condition) into ``OUT/runs/<train>/<condition>/``, and the
    index ``OUT/robustness.json``. ``config_for(train_fs)``: the study's configuration on that set."""
    from attrib.probe.study import run_study

    out = make_folder(out_dir, "--out", RobustnessError)
    res = RobustnessRun(out)
    for train_name, train_fs in plan.train.items():
        cfg = config_for(train_fs)
        for cond, eval_fs in plan.evals.items():
            folder = Path(RUNS) / _slug(train_name) / cond.name
            same = eval_fs.path.resolve() == train_fs.path.resolve()
            log(f"study: train {train_name}, evaluate {cond.name} ({cond.view})")
            study = run_study(train_fs, cfg, out / folder, progress=progress, log=log,
                              eval_fs=None if same else eval_fs)
            res.written += study.written
            res.skipped_done += study.skipped_done
            res.errors.extend(f"{train_name}/{cond.name}: {e}" for e in study.errors)
            res.index.append({
                "train": train_name, "train_features": train_fs.id, "perturbation": cond.perturbation,
                "intensity": cond.intensity, "view": cond.view, "condition": cond.name,
                "eval_features": eval_fs.id, "results": folder.as_posix(),
                "label": train_fs.label or eval_fs.label})
    atomic.write_text(out / INDEX, dumps({"runs": res.index}, indent=1) + "\n")
    return res


__all__ = ["Condition", "Plan", "RobustnessError", "RobustnessRun", "conditions", "parse_intensities",
           "parse_perturbations", "prepare", "run_robustness", "INDEX", "RUNS", "CLEAN"]

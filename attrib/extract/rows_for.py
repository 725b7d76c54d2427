"""Extract only what a study needs: a view of the evaluation rows of a clean feature set, not of the dataset.

Why: a robustness study trains on clean features and evaluates on perturbed ones (the paper: one
perturbation, five intensities, applied to validation, test and unknown images only). Extracting each
perturbed view of the whole dataset would cost 20 x GenImage's 2.7M images; the study reads only the
validation and test rows (known and unknown) of its splits, which are known before anything runs: the
split source draws them from the clean feature set's image list with the probe's sampling protocol
(:mod:`attrib.data.sampling`: by seed, with per-class caps) or reads them from the paper's split files
(:mod:`attrib.data.pose`). So a perturbed test set costs its test rows.

Such a feature set is an ordinary one whose image list is those rows (so its own identity hash), with the
clean feature set's dataset name (images are matched across feature sets by dataset and path) and
backbone, and a ``rows_for`` record in its manifest (which clean feature set, splits, seeds and split
sources), so ``attrib cache find --rows-from`` finds it and nothing else mistakes it for a whole set. A
training view (``paper-train-aug``) is extracted for the clean feature set's whole image list instead:
training rows are drawn from the training feature set's own list, so it must be the same list.

Finding an existing feature set needs no model: the target's identity (image list, view, preprocessing,
backbone) is compared with the manifests in the cache, so a rerun of a study loads no backbone at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from attrib.data.catalog import ImageList
from attrib.data.splits import SplitSource
from attrib.errors import AttribError
from attrib.extract.views import View
from attrib.manifest import OPTION_FIELDS, SAME_BACKBONE, Manifest
from attrib.probe.evalrows import EVAL_PARTS  # the parts of a split a study reads from its evaluation features
from attrib.store import FeatureSet, identity_hash, list_feature_sets

if TYPE_CHECKING:  # torch is imported only when something is extracted
    from attrib.extract.backbone import Backbone
    from attrib.extract.runner import RunConfig


class RowsForError(AttribError, ValueError):
    """The rows or views a study needs cannot be had as asked; the message says what to run instead."""


def study_rows(sources: Iterable[SplitSource], seeds: int, parts: Iterable[str] = EVAL_PARTS) -> np.ndarray:
    """Sorted unique rows of ``parts`` over every split of ``sources`` and seeds ``0..seeds-1``: what a
    study with ``--seeds seeds`` reads there (sampled splits draw other rows for each seed)."""
    if seeds < 1:
        raise RowsForError(f"--seeds must be at least 1, got {seeds}")
    parts = tuple(parts)
    chunks = [np.zeros(0, np.int64)]
    for source in sources:
        for name in source.names():
            for seed in range(seeds):
                rows = source.rows(name, seed)
                chunks.extend(np.asarray(getattr(rows, p), np.int64) for p in parts)
    return np.unique(np.concatenate(chunks))


@dataclass(frozen=True)
class Target:
    """A feature set a study needs: the clean feature set's backbone on ``images``, seen through ``view``
    and prepared by ``preprocess`` (a name of :data:`attrib.manifest.PREPROCESSES`)."""

    images: ImageList
    dataset: str
    view: View
    preprocess: str
    extra: dict[str, Any] = field(default_factory=dict)  # manifest fields: what chose the image list

    def describe(self) -> str:
        return f"view {self.view.spec} of {len(self.images)} images ({self.dataset}, preprocess {self.preprocess})"


def eval_rows_target(clean: FeatureSet, sources: Iterable[SplitSource], seeds: int, view: View,
                     preprocess: str | None = None) -> Target:
    """The evaluation rows (:data:`EVAL_PARTS`) of ``sources`` x ``seeds`` on ``clean``'s image list,
    seen through ``view``: its own feature set, recorded as ``rows_for`` in its manifest."""
    return eval_rows_targets(clean, sources, seeds, [view], preprocess)[0]


def eval_rows_targets(clean: FeatureSet, sources: Iterable[SplitSource], seeds: int, views: Iterable[View],
                      preprocess: str | None = None) -> list[Target]:
    """:func:`eval_rows_target` for each of ``views``; the rows and their image list are drawn once (on
    GenImage that is seconds, and a robustness study asks for a dozen views of the same rows)."""
    sources = list(sources)
    rows = study_rows(sources, seeds)
    if not len(rows):
        raise RowsForError(f"the splits select no validation or test rows of {clean.id}")
    m = clean.manifest
    splits = {name: source.describe(name) for source in sources for name in source.names()}
    record = {"features": clean.id, "feature_hash": identity_hash(m), "splits": splits, "seeds": int(seeds),
              "parts": list(EVAL_PARTS), "n_rows": int(len(rows))}
    images = clean.images.take(rows.tolist())
    return [Target(images, str(m.dataset), view, preprocess or m.preprocess_name,
                   {"dataset_kind": m.kind, "rows_for": record}) for view in views]


def whole_set_target(clean: FeatureSet, view: View, preprocess: str | None = None) -> Target:
    """``clean``'s whole image list through ``view``: exactly the feature set `attrib features` with the
    clean set's options and ``--view`` makes (same dataset name and image-list options)."""
    m = clean.manifest
    record = m.to_json()
    extra = {k: record[k] for k in OPTION_FIELDS if k in record and k != "requested"}
    return Target(clean.images, str(m.dataset), view, preprocess or m.preprocess_name, extra)


def find_target(cache: str | os.PathLike, clean: Manifest, target: Target,
                listed: list[FeatureSet] | None = None) -> FeatureSet | None:
    """The newest complete feature set under ``cache`` holding ``target``, or None; no model is loaded.
    ``listed``: the cache's feature sets, newest first, when the caller already listed them."""
    sha = target.images.sha256()
    for fs in list_feature_sets(cache) if listed is None else listed:
        m = fs.manifest
        if (m.images_sha256 == sha and m.view == target.view.spec and m.preprocess_name == target.preprocess
                and not m.mismatches(clean, SAME_BACKBONE) and fs.complete):
            return fs
    return None


def clean_backbone(clean: Manifest, preprocess: str) -> "Backbone":
    """Load the backbone ``clean``'s features came from, with ``preprocess``; fail naming what differs."""
    from attrib.extract.backbone import load_backbone
    from attrib.predict import pretrained_for

    if clean.checkpoint and not os.path.isfile(clean.checkpoint):
        raise RowsForError(f"the clean features were extracted with the checkpoint {clean.checkpoint}, which is "
                           "not on this machine: put it back at that path to extract views of them")
    backbone = load_backbone(str(clean.model), pretrained_for(clean), preprocess)
    diffs = Manifest.from_backbone(backbone.spec).mismatches(clean, SAME_BACKBONE, "this backbone has",
                                                             "the clean features have")
    if diffs:
        raise RowsForError("the backbone loaded for the views is not the clean features' one:\n  - " +
                           "\n  - ".join(diffs))
    return backbone


@dataclass
class Provided:
    """What :func:`provide` returns: one feature set per target, and which of them it extracted."""

    sets: list[FeatureSet]
    extracted: list[FeatureSet] = field(default_factory=list)
    images_extracted: int = 0
    seconds: float = 0.0


def provide(cache: str | os.PathLike, clean: FeatureSet, targets: list[Target], run: "RunConfig | None" = None,
            extract: bool = True, log: Callable[[str], None] = lambda msg: None) -> Provided:
    """Every target's feature set: found in ``cache``, else extracted there (``extract``), else an error
    listing the missing ones. The backbone is loaded once per preprocessing, only if something is missing."""
    listed = list_feature_sets(cache)
    found = [find_target(cache, clean.manifest, t, listed) for t in targets]
    missing = [t for t, fs in zip(targets, found) if fs is None]
    if missing and not extract:
        raise RowsForError(f"--no-extract: {len(missing)} of {len(targets)} feature sets are not in {cache}/:\n  - " +
                           "\n  - ".join(t.describe() for t in missing) +
                           "\nRun without --no-extract to extract them (or pass the --cache that holds them).")
    out = Provided([])
    backbones: dict[str, "Backbone"] = {}
    for t, fs in zip(targets, found):
        if fs is None:
            fs = _extract(cache, clean, t, backbones, run, out)
            log(f"extracted {t.describe()}: {fs.path}")
        out.sets.append(fs)
    return out


def _extract(cache: str | os.PathLike, clean: FeatureSet, t: Target, backbones: dict[str, "Backbone"],
             run: "RunConfig | None", out: Provided) -> FeatureSet:
    from attrib.extract.runner import RunConfig, extract

    if t.preprocess not in backbones:
        backbones[t.preprocess] = clean_backbone(clean.manifest, t.preprocess)
    summary = extract(t.images, backbones[t.preprocess], cache, t.dataset, t.view, run or RunConfig(),
                      manifest_extra=t.extra)
    if summary.shards_left:
        raise RowsForError(f"{summary.feature_set.path}: {summary.shards_left} shards still missing (other ranks?); "
                           "rerun to finish them")
    out.extracted.append(summary.feature_set)
    out.images_extracted += summary.images
    out.seconds += summary.seconds
    return summary.feature_set


__all__ = ["EVAL_PARTS", "RowsForError", "Target", "Provided", "study_rows", "eval_rows_target", "eval_rows_targets",
           "whole_set_target", "find_target", "clean_backbone", "provide"]

"""Train on one feature set, evaluate on another (``attrib probe --features A --eval-features V``).

Why: the paper trains on features of bicubic-resized images and evaluates on bilinear ones; a robustness
study trains on clean images and tests on a perturbed view (``jpeg:75``), whose feature set may hold only
the validation and test images. So a study's split rows are drawn from the *training* image list, and
its validation and test rows (known and unknown) are read from the evaluation feature set, found there by
image (:func:`attrib.union.image_keys`: dataset and path). The two must be features of the same backbone
(:data:`attrib.manifest.SAME_BACKBONE`: model, weights, QuickGELU); preprocessing and view may differ.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, TypeVar

import numpy as np

from attrib.data.splits import SplitRows
from attrib.manifest import SAME_BACKBONE
from attrib.probe.options import StudyError
from attrib.union import image_keys, parts_of, row_of_key

if TYPE_CHECKING:
    from attrib.store import FeatureSet
    from attrib.union import FeatureUnion

EVAL_PARTS = ("val", "test", "val_unknown", "test_unknown")
SHOW = 20  # how many missing images an error lists
K = TypeVar("K")


class EvalFeatureError(StudyError):
    """The evaluation features cannot serve this study (another backbone, images missing or failed)."""


def feature_ids(fs: "FeatureSet | FeatureUnion") -> list[str]:
    """The ids of the feature sets ``fs`` reads (result lines record them as ``features`` / ``eval_features``)."""
    return [p.id for p in parts_of(fs)]


def check_same_backbone(train: "FeatureSet | FeatureUnion", evaluation: "FeatureSet | FeatureUnion") -> None:
    """Refuse evaluation features of another backbone: the head would read vectors of another space."""
    diffs = train.manifest.mismatches(evaluation.manifest, SAME_BACKBONE, ours="--features has",
                                      theirs="--eval-features has")
    if diffs:
        raise EvalFeatureError(
            f"--eval-features {evaluation.id} was not extracted by the backbone of --features {train.id}:\n  - " +
            "\n  - ".join(diffs) + "\nTraining and evaluation features must come from the same model and weights "
            "(only --preprocess and --view may differ); extract the evaluation images with the same --model and "
            "--pretrained.")


class EvalRows:
    """Where a study reads its validation and test rows: rows of ``train`` mapped to rows of ``evaluation``.

    ``map(rows_of)`` gives each (split, seed)'s rows with ``val``, ``test``, ``val_unknown`` and
    ``test_unknown`` as rows of the evaluation feature set (training rows and every label unchanged); an
    image the evaluation set lacks, or holds as failed to decode, is listed (the first 20 and the count)
    in one error for the whole study, before anything is fitted.
    """

    def __init__(self, train: "FeatureSet | FeatureUnion", evaluation: "FeatureSet | FeatureUnion"):
        check_same_backbone(train, evaluation)
        self.train, self.fs = train, evaluation
        self._ok, self._errors = evaluation.status()

    def map(self, rows_of: Mapping[K, SplitRows]) -> dict[K, SplitRows]:
        needed = np.unique(np.concatenate([np.zeros(0, np.int64)] + [
            getattr(rows, part) for rows in rows_of.values() for part in EVAL_PARTS]))
        to_eval = np.full(self.train.n_images, -1, dtype=np.int64)
        problems = []
        for row, key in zip(needed.tolist(), image_keys(self.train, needed)):
            found = row_of_key(self.fs, key)
            if found is None:
                problems.append(f"{self.train.images.paths[row]}: not in it")
            elif not self._ok[found]:
                problems.append(f"{self.train.images.paths[row]}: failed to decode there ({self._errors[found]})")
            else:
                to_eval[row] = found
        if problems:
            self._refuse(problems)
        return {k: dataclasses.replace(rows, **{part: to_eval[getattr(rows, part)] for part in EVAL_PARTS})
                for k, rows in rows_of.items()}

    def _refuse(self, problems: list[str]) -> None:
        more = f"\n  ... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
        datasets = {m.dataset for m in (self.train.manifest, self.fs.manifest)}
        hint = (f" (images are matched by dataset and path, and the datasets are named "
                f"{self.train.manifest.dataset!r} and {self.fs.manifest.dataset!r})" if len(datasets) > 1 else "")
        raise EvalFeatureError(
            f"--eval-features {self.fs.id}: {len(problems)} image(s) the splits validate or test on cannot be read "
            f"from it{hint}:\n  " + "\n  ".join(problems[:SHOW]) + more +
            "\nExtract the evaluation features from an image list holding every validation and test image of these "
            "splits (e.g. the same `attrib features` options as --features, with another --preprocess or --view).")


__all__ = ["EvalRows", "EvalFeatureError", "check_same_backbone", "feature_ids", "EVAL_PARTS"]

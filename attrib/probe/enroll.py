"""Add a known generator to a saved head from a handful of its images (``attrib enroll``).

Why not retrain: an analyst who has identified a new generator has a few of its images, not the
study's cache, and the deployed head must keep answering for every generator it knew. So the new head
is the old one with one more class, fitted without looking at the old images again where the head
allows it:

- k-NN heads (``knn``, ``knn-paper``) and the nearest-class-mean head (``ncm``) are extended in place:
  the new images join the neighbour bank, or their mean joins the class means. The old classes' state
  is untouched, and the result equals a head fitted from scratch on old + new training features.
- every other head (the logistic probe, the Gaussian head) is refitted, with its saved hyperparameters,
  on the old training features kept in the head's ``train.npz`` plus the new images' features. A head
  saved before ``train.npz`` existed cannot be refitted and is refused (re-save it with this attrib).
- scores likewise: those computed from the head's outputs (MSP, max-logit, energy, GEN) follow the new
  head; the k-NN and NCM scores are extended; ViM, Mahalanobis and RMDS are refitted.

Validation: the new head's rejection threshold is again the score accepting ``tpr`` (95%, the saved
head's own) of the known validation images, now the old classes' stored validation features plus
the new generator's *held-out* images (``holdout``, 20% by default, at least one): those are not used
for fitting. A head saved before ``train.npz`` existed has no stored validation features; its
threshold then rests on its eight self-check vectors plus the held-out images, and says so.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attrib.choices import DEFAULT_TPR  # what study.DEFAULT_TPR is (a test keeps them equal)
from attrib.errors import AttribError
from attrib.probe.geometry import cosine_class_means, l2_normalize
from attrib.probe.heads import HEADS, KNNHead, NCMHead, ProbeHead
from attrib.probe.persist import UNKNOWN, SavedHead, check_head_folder, load_training, save_head, saved_info
from attrib.probe.scorers import SCORERS, KNNScore, NCMScore, OpenSetScorer

OUT_OPTION = "--out"
DEFAULT_HOLDOUT = 0.2


class EnrollError(AttribError, ValueError):
    """The head or the images cannot be enrolled as asked; the message says why and what to do."""


# ------------------------------------------------------------------------------ what can be extended
def _head_extends(cls: type) -> bool:
    return issubclass(cls, (KNNHead, NCMHead))


def _scorer_extends(cls: type) -> bool:
    """A score with no state of its own (it reads the head's outputs), or one that only adds a class."""
    return cls.fit is OpenSetScorer.fit or issubclass(cls, (KNNScore, NCMScore))


def needs_training(head_name: str, score_name: str) -> bool:
    """Whether adding a class to this (head, score) refits it, and so needs the old training features."""
    return not (_head_extends(HEADS[head_name]) and _scorer_extends(SCORERS[score_name]))


def enrolment_data(head_name: str, score_name: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                   y_val: np.ndarray) -> dict[str, np.ndarray]:
    """What ``--save-head`` keeps in ``train.npz`` for a later enrolment: the known validation features
    always (the threshold is recomputed on them), the training features only when
    :func:`needs_training` (a k-NN bank or class means already hold what extending them needs)."""
    data = {"val.X": X_val, "val.y": y_val}
    if needs_training(head_name, score_name):
        data.update({"train.X": X_train, "train.y": y_train})
    return data


# ---------------------------------------------------------------------------------- adding a class
def _params(est: Any) -> dict[str, Any]:
    return {k: v for k, v in est.get_params(deep=False).items() if k != "head"}


def _extend_head(head: ProbeHead, X: np.ndarray, label: int) -> ProbeHead:
    new = type(head)(**_params(head))
    new.classes_ = np.append(head.classes_, label)
    new.n_features_in_ = head.n_features_in_
    index = len(head.classes_)  # the new class's column: after every old one
    if isinstance(head, KNNHead):
        new.bank_ = np.vstack([head.bank_, l2_normalize(X.astype(np.float32))])
        new.labels_ = np.append(head.labels_, np.full(len(X), index)).astype(np.int64)
        new.k_ = int(min(new.k, len(new.bank_)))
    else:
        new.means_ = np.vstack([head.means_, cosine_class_means(X, np.zeros(len(X), dtype=np.int64), 1)])
    return new


def _extend_scorer(scorer: OpenSetScorer, head: ProbeHead, X: np.ndarray) -> OpenSetScorer:
    new = type(scorer)(head=head, **_params(scorer))
    if isinstance(scorer, KNNScore):
        new.n_features_in_ = scorer.n_features_in_
        new.bank_ = np.vstack([scorer.bank_, l2_normalize(X.astype(np.float32))])
        new.k_ = int(min(new.k, len(new.bank_)))
    elif isinstance(scorer, NCMScore):
        new.n_features_in_ = scorer.n_features_in_
        new.means_ = np.vstack([scorer.means_, cosine_class_means(X, np.zeros(len(X), dtype=np.int64), 1)])
    return new.fit() if type(scorer).fit is OpenSetScorer.fit else new


def _require_training(saved: SavedHead, training: dict[str, np.ndarray] | None) -> None:
    if training is None or "train.X" not in training:
        raise EnrollError(f"{saved.path}: a {saved.head_name} head with the {saved.score_name} score is refitted to "
                          "add a class, which needs its training features, and this head was saved without them "
                          "(by an attrib older than `attrib enroll`): re-save it with this version (`attrib probe "
                          "... --save-head DIR`), or enrol into a knn / ncm head")


def new_label(classes: np.ndarray, source: str) -> Any:
    """The new class's label: after every old one, so that old labels and columns stay where they were
    (integer labels, as `--save-head` writes: the next integer; text labels: the source name, which
    must then sort after the old ones)."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "iu":
        return int(classes.max()) + 1
    last = str(sorted(classes.tolist())[-1])
    if str(source) <= last:
        raise EnrollError(f"this head's class labels are text and {source!r} does not sort after {last!r}: "
                          "enrolment keeps every old class in its column, so the new label must come last")
    return str(source)


def add_class(saved: SavedHead, X_new: np.ndarray, training: dict[str, np.ndarray] | None,
              source: str = "new") -> tuple[ProbeHead, OpenSetScorer, Any, str]:
    """(head, scorer, new class label, how: ``extended`` or ``refitted``) with one class more, fitted on
    ``X_new``; old classes keep their labels and columns. ``training``: the head's ``train.npz``."""
    head, scorer = saved.head, saved.scorer
    label = new_label(head.classes_, source)
    refit = needs_training(saved.head_name, saved.score_name)
    if refit:
        _require_training(saved, training)
        X_all = np.vstack([training["train.X"], X_new]).astype(np.float32)
        y_all = np.append(training["train.y"], [label] * len(X_new))
    if _head_extends(type(head)):
        new_head = _extend_head(head, X_new, label)
    else:
        new_head = type(head)(**_params(head)).fit(X_all, y_all)
    if _scorer_extends(type(scorer)):
        new_scorer = _extend_scorer(scorer, new_head, X_new)
    else:
        new_scorer = type(scorer)(head=new_head, **_params(scorer)).fit(X_all, y_all)
    return new_head, new_scorer, label, "refitted" if refit else "extended"


_NOT_LOADED: Any = object()  # enroll_features reads train.npz itself


def check_holdout(holdout: float) -> None:
    if not 0 <= holdout < 1:
        raise EnrollError(f"--holdout {holdout}: use a fraction in [0, 1)")


def holdout_rows(n: int, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fitting rows, held-out rows) of ``n`` images: ``holdout`` of them (rounded, at least one when
    ``holdout > 0``) drawn at random with ``seed``, and at least one left for fitting."""
    check_holdout(holdout)
    n_out = 0 if holdout == 0 else max(1, int(round(holdout * n)))
    if n - n_out < 1:
        raise EnrollError(f"{n} image(s) are too few to hold {n_out} out for validation and fit the new class on "
                          "the rest: give more images (5 or more is a sensible minimum) or --holdout 0")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_out:]), np.sort(order[:n_out])


# --------------------------------------------------------------------------------- the whole command
def _accuracy(pred: np.ndarray, truth: Sequence[str]) -> float | None:
    return float(np.mean(pred == np.asarray(truth, dtype=object))) if len(truth) else None


def enroll_features(saved: SavedHead, source: str, X: np.ndarray, out: str | os.PathLike, *, images: Sequence[str],
                    holdout: float = DEFAULT_HOLDOUT, seed: int = 0, force: bool = False,
                    extra: dict[str, Any] | None = None, training: Any = _NOT_LOADED) -> dict[str, Any]:
    """Save ``saved`` + the class ``source`` (features ``X`` of ``images``, one row each) to ``out``.

    Returns the enrolment record, also appended to ``enrolments`` in the new ``head.json``. ``training``:
    the head's training arrays when the caller has read them already (:func:`check_enrolment`).
    """
    from attrib.probe.metrics import threshold_at_tpr

    check_source(saved, source)
    check_head_folder(out, force, OUT_OPTION)
    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(images):
        raise EnrollError(f"{len(X)} feature rows for {len(images)} images")
    fit_rows, val_rows = holdout_rows(len(X), holdout, seed)
    if training is _NOT_LOADED:
        training = load_training(saved)
    if saved.check_X is None:
        raise EnrollError("enrol into a head loaded with load_head (its self-check vectors are needed)")
    head, scorer, label, how = add_class(saved, X[fit_rows], training, source)
    classes = (*saved.classes, source)
    names = dict(zip(np.asarray(head.classes_).tolist(), classes))
    predict = lambda est, Z: np.array([names[c] for c in est.predict(Z).tolist()], dtype=object)  # noqa: E731

    if training is not None:
        X_old, y_old, old_from = training["val.X"], training["val.y"], "stored validation features"
        truth_old = [names[c] for c in y_old.tolist()]
    else:  # a head saved before train.npz existed: no labelled validation features, no accuracy
        X_old, y_old, old_from = saved.check_X, None, "self-check vectors only"
        truth_old = []
    X_val = np.vstack([X_old, X[val_rows]])
    scores = np.asarray(scorer.score_samples(X_val), dtype=np.float64)
    tpr = float(saved.info.get("tpr", DEFAULT_TPR))
    threshold = threshold_at_tpr(scores, tpr)
    s_old, s_new = scores[:len(X_old)], scores[len(X_old):]
    pred_new = predict(head, X[val_rows]) if len(val_rows) else np.array([], dtype=object)
    record = {
        "source": source, "label": label, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "from_head": str(saved.path) if saved.path else None, "from_json_sha256": saved.info.get("json_sha256"),
        "n_images": len(images), "images": list(map(str, images)),
        "fit_images": [str(images[i]) for i in fit_rows], "holdout_images": [str(images[i]) for i in val_rows],
        "method": how, "holdout": holdout, "seed": seed, "tpr": tpr,
        "threshold_before": saved.threshold, "threshold": threshold,
        "validation": {
            "old_classes_from": old_from, "n_old": int(len(X_old)), "n_new": int(len(val_rows)),
            "old_accuracy_before": _accuracy(saved.predict(X_old), truth_old),
            "old_accuracy_after": _accuracy(predict(head, X_old), truth_old),
            "old_accepted": float(np.mean(s_old >= threshold)) if len(s_old) else None,
            "new_accuracy": _accuracy(pred_new, [source] * len(val_rows)),
            "new_accepted": float(np.mean(s_new >= threshold)) if len(s_new) else None,
        },
        **(extra or {}),
    }
    info = saved_info(saved)
    info["enrolments"] = [*info.get("enrolments", []), record]
    new_training = None if training is None else _grown_training(training, X_val, label, X[fit_rows], len(val_rows))
    check_X = np.vstack([saved.check_X, X[fit_rows][:4]])
    save_head(out, head, scorer, head_name=saved.head_name, score_name=saved.score_name, classes=classes,
              layer=saved.layer, threshold=threshold, feature_set=saved.feature_set, manifest=saved.manifest,
              check_X=check_X, info=info, force=force, training=new_training, option=OUT_OPTION)
    return record


def _grown_training(training: dict[str, np.ndarray], X_val: np.ndarray, label: Any, X_fit: np.ndarray,
                    n_new_val: int) -> dict[str, np.ndarray]:
    """The new head's train.npz: the old arrays with the new class's rows (``X_val`` already holds both), so
    that the next enrolment starts from everything this one knew."""
    out = {"val.X": X_val, "val.y": np.append(training["val.y"], [label] * n_new_val)}
    if "train.X" in training:
        out.update({"train.X": np.vstack([training["train.X"], X_fit]),
                    "train.y": np.append(training["train.y"], [label] * len(X_fit))})
    return out


def check_source(saved: SavedHead, source: str) -> None:
    """Refuse a source name the new head could not tell apart (before any extraction)."""
    if not source or source.strip() != source or "\t" in source or "\n" in source:
        raise EnrollError(f"--source {source!r}: give the generator's name (no surrounding spaces, tabs or newlines)")
    if source == UNKNOWN:
        raise EnrollError(f"--source {UNKNOWN!r} is the decision for rejected images; name the generator")
    if source in saved.classes:
        raise EnrollError(f"--source {source!r} is already a class of {saved.path} ({', '.join(saved.classes)}); "
                          "enrolment adds a new generator (to retrain an old one, re-save the head from a study)")


def check_enrolment(saved: SavedHead, source: str, out: str | os.PathLike, force: bool = False) -> Any:
    """Everything that can be refused before the images are extracted. Returns the training arrays when
    checking them meant reading ``train.npz`` (a head refitted to add a class), for
    :func:`enroll_features` to reuse rather than read again."""
    check_source(saved, source)
    check_head_folder(out, force, OUT_OPTION)
    if needs_training(saved.head_name, saved.score_name):
        training = load_training(saved)
        _require_training(saved, training)
        return training
    return _NOT_LOADED


def enroll(saved: SavedHead, source: str, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
           cache: str | os.PathLike = "cache", holdout: float = DEFAULT_HOLDOUT, seed: int = 0, force: bool = False,
           pretrained: str | None = None, config: Any = None,
           log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """``attrib enroll``: extract ``inputs`` exactly as `attrib predict` does, then :func:`enroll_features`."""
    from attrib.predict import extract_like_head

    training = check_enrolment(saved, source, out, force)
    check_holdout(holdout)
    fs = extract_like_head(saved, inputs, cache, pretrained=pretrained, config=config)
    ok, errors = fs.status()
    good = np.flatnonzero(ok)
    failed = [f"{fs.images.paths[r]}: {errors[r]}" for r in np.flatnonzero(~ok)]
    for line in failed:
        log(f"skipped (unreadable): {line}")
    if not len(good):
        raise EnrollError("none of the images could be read (see above)")
    paths = [str(Path(fs.images.root) / fs.images.paths[r]) for r in good]
    return enroll_features(saved, source, saved.features(fs, good), out, images=paths, holdout=holdout, seed=seed,
                           force=force, extra={"feature_set": fs.id, "failed": failed}, training=training)


__all__ = ["DEFAULT_HOLDOUT", "EnrollError", "add_class", "check_enrolment", "enroll", "enroll_features",
           "enrolment_data", "holdout_rows", "needs_training"]

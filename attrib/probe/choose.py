"""Choosing the head to keep (``attrib probe --save-head``) from known generators only, and saving it.

Why apart from the study: the study measures every candidate on test data; the head a user keeps must be
chosen without looking at test data or at any unknown generator. With several candidates (layers, heads,
scores) the choice uses a *pseudo-open set*: each known generator in turn is hidden from training and
plays the unknown (:func:`attrib.probe.protocol.pseudo_open_set_oscr`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from attrib.data.splits import Split, SplitRows
from attrib.jsonio import to_jsonable
from attrib.probe.evalrows import EvalRows, feature_ids
from attrib.probe.featcache import FeatureCache, feature_cache
from attrib.probe.heads import HEADS
from attrib.probe.enroll import enrolment_data
from attrib.probe.options import StudyError, layer_name, parse_layer_name, shots_name
from attrib.probe.persist import check_head_folder
from attrib.probe.protocol import Selection, best_index, fit_candidates, path_values, select_clean
from attrib.probe.scorers import SCORERS
from attrib.probe.job import counted_warnings, rows_digest, shots_subset
from attrib.probe.study import StudyConfig, stderr_log
from attrib.store import FeatureSet


def check_save_head(cfg: StudyConfig, folder: str | os.PathLike, force: bool = False) -> None:
    """Refuse what :func:`save_chosen_head` could not do (several splits, a folder that cannot be
    written): the command line calls it before the study, which may take hours, not after."""
    names = cfg.splits.names()
    if len(names) != 1:
        raise StudyError(f"--save-head: a saved head knows the classes of one split; name it with --splits "
                         f"(this study has splits {', '.join(names)})")
    check_head_folder(folder, force)


def save_chosen_head(fs: FeatureSet, cfg: StudyConfig, folder: str | os.PathLike, progress: bool = False,
                     log: Callable[[str], None] = stderr_log, eval_fs: FeatureSet | None = None,
                     force: bool = False) -> dict[str, Any]:
    """Choose a (layer, head, score) under the clean protocol, fit it, and save it to ``folder``.

    Known-class data only, on the study's single split, seed 0, and its largest shots value:

    - each head's path value: the clean rule (validation accuracy, then log-loss);
    - among several layers / heads / scores: the highest *pseudo-open-set* validation OSCR (each known
      generator in turn hidden from training and used as the unknown; see
      :func:`attrib.probe.protocol.pseudo_open_set_oscr`), ties broken by validation accuracy, then
      log-loss, then the order given. With a single candidate nothing is compared.
    - the rejection threshold: the score accepting ``cfg.tpr`` (95%) of the known validation images.

    Beside the head, ``train.npz`` keeps what `attrib enroll` needs to add a generator later: the known
    validation features (for the new threshold) and, when the head or score must be refitted to take a
    new class (:func:`attrib.probe.enroll.enrolment_data`), the training features.

    With evaluation features (``eval_fs``), the head is trained on ``fs`` and everything validation data
    decides (the hyperparameter, the choice, the threshold) is measured on ``eval_fs``: the head is
    calibrated on those features, so it is saved as a head of ``eval_fs`` (its manifest says how `attrib
    predict` must extract new images: ``eval_fs``'s preprocessing and view).

    Returns a summary of the choice (also stored in ``head.json``).
    """
    from attrib.probe.persist import save_head
    from attrib.probe.protocol import pseudo_folds

    cfg.validate()
    check_save_head(cfg, folder, force)
    if cfg.protocol != "clean":
        log("--save-head always chooses under the clean protocol (no unknown generator is looked at)")
    known = _known_data(fs, cfg, eval_fs, log)
    pairs, _ = cfg.pairs()
    if not pairs:
        raise StudyError("--save-head: no (head, score) pair is supported: choose other --heads / --scores")
    n_cand = len(cfg.layers) * len(pairs)
    folds = pseudo_folds(known.y_tr) if n_cand > 1 else []
    if n_cand > 1 and not folds:
        log("--save-head: fewer than two known generators, so no pseudo-unknown can be held out; choosing "
            "by validation accuracy only (name one --scores to choose the score yourself)")
    blocks = list(dict.fromkeys(b for layer in cfg.layers for b in layer))
    ev, y_tr = known.ev, known.y_tr
    evaluated = np.concatenate([ev.val, ev.val_unknown])
    with feature_cache(fs, known.tr_rows, blocks, progress, eval_fs=eval_fs, eval_rows=evaluated,
                       scratch=cfg.scratch) as cache:
        table, fitted = _candidates(cache, cfg, pairs, known.tr_rows, y_tr, ev.val, known.rows.y_val, folds)
        keys = [(e.get("pseudo_oscr", 0.0), e["val_accuracy"], -e["val_logloss"]) for e in table]
        best = table[best_index(keys)]
        layer = parse_layer_name(best["layer"])
        sel = fitted[(layer, best["head"])]
        X_tr, X_va = cache.take(layer, known.tr_rows), cache.take_eval(layer, ev.val)
        score_params = cfg.estimator_params()[1].get(best["score"], {})  # --param
        scorer = SCORERS[best["score"]](head=sel.head, **score_params).fit(X_tr, y_tr)
        X_vu = cache.take_eval(layer, ev.val_unknown) if len(ev.val_unknown) else None
        threshold, validation = _threshold(scorer, X_va, X_vu, cfg.tpr)
        criterion = ("pseudo_open_set_oscr" if folds else "val_accuracy") if n_cand > 1 else "given"
        summary = to_jsonable({
            "protocol": "clean", "layer": best["layer"], "head": best["head"], "score": best["score"],
            "hparams": sel.hparams, "selection": sel.summary(), "threshold": threshold, "tpr": cfg.tpr,
            **known.describe(), "validation": {"accuracy": sel.val["val_accuracy"], **validation},
            "features": feature_ids(fs), "eval_features": feature_ids(known.target),
            "choice": {"criterion": criterion, "pseudo_unknown": [known.split.classes[g] for g in folds],
                       "candidates": table},
        })
        save_head(folder, sel.head, scorer, head_name=best["head"], score_name=best["score"],
                  classes=[known.split.classes[c] for c in np.asarray(sel.head.classes_).tolist()], layer=layer,
                  threshold=threshold, feature_set=known.target.id, manifest=known.target.manifest,
                  check_X=X_va[:8],
                  info={k: v for k, v in summary.items() if k not in ("threshold", "layer", "head", "score")},
                  force=force, training=enrolment_data(best["head"], best["score"], X_tr, y_tr, X_va,
                                                       known.rows.y_val))
    return summary


@dataclass
class _Known:
    """The known-class images a saved head is chosen on: the study's single split, seed 0, its largest shots."""

    split: Split          # the known and unknown generators
    rows: SplitRows       # its rows (train / val / test, with labels)
    ev: SplitRows         # the same rows in the features validation data is read from
    target: FeatureSet    # those features: ``fs``, or the evaluation features
    shots: int | None
    seed: int
    tr_rows: np.ndarray   # the training rows after the shots cap
    y_tr: np.ndarray

    def describe(self) -> dict[str, Any]:
        """Its fields in ``head.json``."""
        sp = self.split
        return {"split": {"name": sp.name, "known": list(sp.known), "unknown": list(sp.unknown),
                          "rows": rows_digest(self.rows)},
                "shots": shots_name(self.shots), "seed": self.seed, "n_train": int(len(self.tr_rows))}


def _known_data(fs: FeatureSet, cfg: StudyConfig, eval_fs: FeatureSet | None,
                log: Callable[[str], None]) -> _Known:
    sp = cfg.splits.split(cfg.splits.names()[0])
    shots = None if None in cfg.shots else max(cfg.shots)
    seed = 0
    rows = cfg.splits.rows(sp.name, seed)
    ev = rows if eval_fs is None else EvalRows(fs, eval_fs).map({0: rows})[0]
    if eval_fs is not None:
        log(f"--save-head: trained on {fs.id}; hyperparameter, choice and threshold from the validation images of "
            f"{eval_fs.id}, so the head is saved for features extracted like {eval_fs.id}")
    keep = shots_subset(rows.y_train, shots, seed)
    return _Known(sp, rows, ev, fs if eval_fs is None else eval_fs, shots, seed, rows.train[keep],
                  rows.y_train[keep])


def _threshold(scorer: Any, X_val: np.ndarray, X_val_unknown: np.ndarray | None,
               tpr: float) -> tuple[float, dict[str, Any]]:
    """The score accepting ``tpr`` of the known validation images, and how it does on validation data
    (on unknown generators, when the split has some: reported for information, never used to choose)."""
    from attrib.probe.metrics import auroc, threshold_at_tpr

    s_val = scorer.score_samples(X_val)
    threshold = threshold_at_tpr(s_val, tpr)
    validation = {"tpr": float(np.mean(s_val >= threshold)), "n_known": int(len(X_val))}
    if X_val_unknown is not None:
        s_vu = scorer.score_samples(X_val_unknown)
        validation.update(unknown_rejected=float(np.mean(s_vu < threshold)), auroc=auroc(s_val, s_vu),
                          n_unknown=int(len(X_val_unknown)))
    return threshold, validation


def _candidates(cache: FeatureCache, cfg: StudyConfig, pairs: list[tuple[str, str]], tr_rows: np.ndarray,
                y_tr: np.ndarray, va_rows: np.ndarray, y_va: np.ndarray, folds: list
                ) -> tuple[list[dict[str, Any]], dict[tuple, Selection]]:
    """Every (layer, head, score) candidate with what the choice compares, and each (layer, head)'s
    selected fit: (table in the order given, {(layer, head): selection}). ``va_rows`` are rows of the
    validation features (:meth:`FeatureCache.take_eval`)."""
    from sklearn.base import clone

    from attrib.probe.protocol import pseudo_open_set_oscr

    table, fitted = [], {}
    head_params, score_params = cfg.estimator_params()  # --param
    for layer in cfg.layers:
        X_tr, X_va = cache.take(layer, tr_rows), cache.take_eval(layer, va_rows)
        for head_name in dict.fromkeys(h for h, _ in pairs):
            head_cls = HEADS[head_name]
            with counted_warnings() as caught:
                sel = select_clean(fit_candidates(head_cls, X_tr, y_tr, X_va, y_va, path_values(head_cls, cfg.grid),
                                                  by_accuracy=True, **head_params.get(head_name, {})),
                                   head_cls.path_param)
            fitted[(layer, head_name)] = sel
            score_names = [s for h, s in pairs if h == head_name]
            pseudo_oscr = {}
            if folds:
                with counted_warnings() as caught_folds:
                    scorers = {s: (lambda hd, s=s: SCORERS[s](head=hd, **score_params.get(s, {}))) for s in score_names}
                    pseudo_oscr = pseudo_open_set_oscr(lambda head=sel.head: clone(head), scorers,
                                                       X_tr, y_tr, X_va, y_va, folds)
                caught += caught_folds
            for score_name in score_names:
                entry = {"layer": layer_name(layer), "head": head_name, "score": score_name,
                         "hparams": sel.hparams, "val_accuracy": sel.val["val_accuracy"],
                         "val_logloss": sel.val["val_logloss"]}
                if folds:
                    entry["pseudo_oscr"] = pseudo_oscr[score_name]
                entry["warnings"] = dict(caught)
                table.append(entry)
    return table, fitted

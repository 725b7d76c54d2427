"""Hyperparameters of heads and open-set scorers set from the command line: ``--param NAME.KEY=VALUE``.

Why: every head and scorer is a scikit-learn-style estimator whose hyperparameters are its ``__init__``
parameters, with defaults chosen for attrib (e.g. Ledoit-Wolf shrinkage for Mahalanobis and RMDS). A
published definition often uses another value (the plain pooled covariance, ``shrinkage=0``), and
comparing the two must not need code. ``NAME`` is a head or scorer registry name (``--heads`` /
``--scores``), ``KEY`` one of its ``__init__`` parameters; anything else is refused with the valid keys.

A head's path hyperparameter (``C`` of ``logreg``, ``k`` of ``knn``) is not set here: model selection
chooses it from a path, which ``--grid`` sets. A name that is both a head and a scorer (``knn``) sets the
key on each of the two that the study runs and that has it; ``--param knn.k=20`` with ``--scores knn``
is the k-NN *score*'s k, since the k-NN *head*'s k is its path.

Parsing needs only the standard library (the command line checks the grammar before loading
scikit-learn); :func:`resolve_params` gets the registries from the study.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from attrib.probe.options import StudyError

PARAM_USAGE = "use NAME.KEY=VALUE, e.g. mahalanobis.shrinkage=0, knn.k=20 or gauss.shrinkage=0.1"
Setting = tuple[str, str, Any]  # (registry name, __init__ parameter, value)


def parse_value(text: str) -> Any:
    """``20`` -> 20, ``0.1`` / ``1e-3`` -> float, ``true`` / ``false`` -> bool, ``none`` / ``null`` -> None,
    anything else -> the string itself (``auto``). Case-insensitive words; an int stays an int, since some
    parameters (k) refuse floats."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    try:
        return float(t)
    except ValueError:
        return t


def parse_param(spec: str) -> Setting:
    """``mahalanobis.shrinkage=0`` -> ``("mahalanobis", "shrinkage", 0)``."""
    target, sep, value = str(spec).partition("=")
    name, dot, key = target.strip().rpartition(".")
    if not sep or not dot or not name.strip() or not key.strip() or not value.strip():
        raise StudyError(f"--param {spec!r}: {PARAM_USAGE}")
    return name.strip(), key.strip(), parse_value(value)


def setting_name(name: str, key: str) -> str:
    """How lines and tables write a setting: ``NAME.KEY``."""
    return f"{name}.{key}"


def init_params(cls: type) -> list[str]:
    """The ``__init__`` parameters of an estimator class, as scikit-learn's ``get_params`` lists them."""
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def settable(cls: type, kind: str) -> list[str]:
    """Keys ``--param`` may set on a head (``kind="head"``: not its path hyperparameter) or a scorer
    (``"score"``: not the head it reads)."""
    skip = {getattr(cls, "path_param", None)} if kind == "head" else {"head"}
    return [k for k in init_params(cls) if k not in skip]


def resolve_params(settings: Iterable[Setting], heads: Sequence[str], scores: Sequence[str],
                   head_registry: Mapping[str, type], scorer_registry: Mapping[str, type],
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(head_params, score_params)``: for each head / score name of the study, the ``--param`` values
    that apply to it. A later setting of the same NAME.KEY overrides an earlier one.

    Refused, naming the fix: a NAME that is neither a head nor a scorer; one the study does not run (a
    silently unused setting would be mistaken for a result); a KEY that no head or scorer of that name
    takes (the valid keys are listed), or that is a head's path hyperparameter (use ``--grid``).
    """
    head_params: dict[str, dict[str, Any]] = {}
    score_params: dict[str, dict[str, Any]] = {}
    for name, key, value in settings:
        spec = f"--param {setting_name(name, key)}={value}"
        if name not in head_registry and name not in scorer_registry:
            raise StudyError(f"{spec}: {name!r} is neither a head ({', '.join(head_registry)}) nor a score "
                             f"({', '.join(scorer_registry)})")
        targets = [(kind, registry[name], out) for kind, chosen, registry, out in (
            ("head", heads, head_registry, head_params), ("score", scores, scorer_registry, score_params))
            if name in chosen and name in registry]
        if not targets:
            raise StudyError(f"{spec}: {name} is not among --heads ({', '.join(heads)}) or --scores "
                             f"({', '.join(scores)}); add it there, or drop the setting")
        applied = False
        for kind, cls, out in targets:
            if key in settable(cls, kind):
                out.setdefault(name, {})[key] = value
                applied = True
        if not applied:
            raise StudyError(f"{spec}: " + "; ".join(_valid_keys(name, kind, cls) for kind, cls, _ in targets))
    return head_params, score_params


def _valid_keys(name: str, kind: str, cls: type) -> str:
    keys = settable(cls, kind)
    text = f"the {kind} {name} ({cls.__name__}) takes {', '.join(keys) if keys else 'no parameter'}"
    path = getattr(cls, "path_param", None) if kind == "head" else None
    if path:
        text += f" ({path} is its path, chosen by model selection: set its values with --grid {path}=V1,V2,...)"
    return text


def line_params(head: str, score: str, head_params: Mapping[str, Mapping[str, Any]],
                score_params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The settings a (head, score) line ran with, ``{"NAME.KEY": value}`` (empty: every default)."""
    out = {setting_name(head, k): v for k, v in head_params.get(head, {}).items()}
    out.update({setting_name(score, k): v for k, v in score_params.get(score, {}).items()})
    return dict(sorted(out.items()))


def params_key(params: Mapping[str, Any] | None) -> str:
    """The part of a result line's key that its settings make (``""`` for none, so lines of every
    default, and those written before ``--param`` existed, keep their key)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":")) if params else ""


def params_label(params: Mapping[str, Any] | None) -> str:
    """``knn.k=20, mahalanobis.shrinkage=0`` (empty string for none), as tables show them."""
    return ", ".join(f"{k}={_text(v)}" for k, v in sorted((params or {}).items()))


def _text(v: Any) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

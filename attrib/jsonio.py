"""attrib's one JSON encoder: how Python and numpy values become the JSON that attrib writes.

Every JSON document attrib writes (``results.jsonl`` lines, ``head.json``) is strict JSON (RFC 8259):
no ``NaN``, ``Infinity`` or ``-Infinity`` tokens, which Python's :mod:`json` would write by default and
other readers (jq, JavaScript, many JSON libraries) reject. :func:`dumps` refuses them.

The rule for numbers JSON cannot hold (NaN, +inf, -inf):

- **By default they become** ``null``, read as "no value": a metric that is undefined for a run (AUROC
  of a split without unknown generators) is ``null`` in its result line, and readers that need a
  number turn ``null`` back into NaN (:mod:`attrib.probe.report`).
- **Where a value must come back bit for bit** (``exact=True``: the learned state of a saved head,
  :mod:`attrib.probe.persist`), a non-finite float becomes ``{"__float__": "nan"}`` (``"inf"``,
  ``"-inf"``), which :func:`tagged_float` turns back into the float.

numpy scalars become Python numbers, arrays and tuples become lists, and dictionary keys become strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

FLOAT_TAG = "__float__"


def scalar(value: Any, exact: bool = False) -> Any:
    """The JSON form of one number, string, bool or None (numpy scalars included), by the rule above.

    Raises TypeError for anything else (containers, arrays, other objects): the caller decides what
    those become.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT_TAG: repr(value)} if exact else None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a {type(value).__name__} is not a JSON scalar")


def tagged_float(value: dict[str, Any]) -> float:
    """The float written as ``{"__float__": ...}`` by ``scalar(..., exact=True)``."""
    return float(value[FLOAT_TAG])


def to_jsonable(x: Any) -> Any:
    """Plain JSON data: numpy to Python, tuples and arrays to lists, keys to str, NaN/inf to ``null``;
    any other object is written as its ``str()`` (e.g. a path)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    try:
        return scalar(x)
    except TypeError:
        return str(x)


def dumps(doc: Any, **kwargs: Any) -> str:
    """``json.dumps`` of data already made JSON-ready (:func:`to_jsonable`), refusing NaN and inf
    (ValueError): one left in the data is a bug or a value that must not be saved, never a silent
    ``NaN`` token in a file."""
    return json.dumps(doc, allow_nan=False, **kwargs)


def canonical(doc: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces): what checksums are computed over."""
    return dumps(doc, sort_keys=True, separators=(",", ":")).encode()
